# adapt: set-up and tests (GNU make).  `make help` lists the targets.
#
# On a fresh machine:  make reproduce  (sets up .venv/, retrains and checks the mnist5k runs)  and  make test.

SHELL := /bin/bash

PYTHON ?= python3
VENV = .venv
PY = $(VENV)/bin/python
PIP = $(PY) -m pip

# The exact torch stack this package is tested with; pyproject.toml holds the
# ranges it accepts. tests/test_environment.py checks that these pins,
# environment.yml and pyproject.toml agree.
TORCH_PINS = torch==2.14.1 torchvision==0.29.1

# What `make test` hands to pytest (override for a subset: make test TESTS=tests/test_quant.py).
TESTS ?= tests
PYTEST_ARGS ?=

# Written after a successful install; re-made when the dependencies change.
STAMP = $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup test unit notebooks-test reproduce grid figures notebooks clean

# Threads per training process in `make reproduce` and `make grid`.  The committed records were trained
# with one (their `environment.thread_env` says so); a record is bit-exact only at the thread count that
# made it (docs/reproducibility.md), and on a small or shared CPU one thread per process is also the
# fastest (docs/running.md).
THREADS ?= 1
TRAIN_ENV = OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) NUMBA_NUM_THREADS=$(THREADS)

# Which grid `make grid` and `make figures` work on: smoke (digits, CPU, minutes), mnist5k (LeNet-5 on
# 5,000 real MNIST images, CPU, minutes), quick (a CIFAR subset, about an hour on a laptop CPU), paper
# (the official CIFAR protocol, a GPU) or sdm (the SDM paper's MNIST, Fashion-MNIST and EMNIST configs,
# a GPU).
PROFILE ?= smoke
ANALYSIS = notebooks/00-overview.ipynb notebooks/20-results.ipynb notebooks/21-figures.ipynb

help: ## list the targets
	@echo "adapt: make targets"
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'
	@echo "variables: PYTHON=$(PYTHON) (interpreter that creates $(VENV)), TESTS=$(TESTS), PYTEST_ARGS=$(PYTEST_ARGS), THREADS=$(THREADS) (per training process)"

setup: $(STAMP) ## create .venv with the pinned torch stack and install adapt (editable, with test and notebook extras)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH_PINS)
	$(PIP) install -e ".[test,notebooks]" $(TORCH_PINS)
	touch $@

test: unit notebooks-test ## run the unit tests, execute every notebook with papermill, check them with nbval (runs setup first)

# pytest exits 5 when it collects no test: that is a failure here, never a pass.
unit: $(STAMP) ## run the pytest suite only
	@$(PY) -m pytest $(TESTS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		echo "make: no tests ran: pytest collected no tests from '$(TESTS)' (exit 5); failing" >&2; \
		exit 1; \
	fi; \
	exit $$rc

# Every notebook at its defaults (the smoke profile) with papermill into notebooks/executed/ (ignored),
# failing on any error; then nbval re-runs the committed notebooks and compares the cells marked
# NBVAL_CHECK_OUTPUT (deterministic tables: quantizer, cost model, heuristic rules).  Both write their
# figures into notebooks/executed/figures/ (ignored; $ADAPT_FIGURES, absolute because the kernels run in
# notebooks/), so a test run never rewrites the committed figures/.
notebooks-test: $(STAMP) ## execute all notebooks (papermill) and check their committed outputs (nbval)
	ADAPT_FIGURES=$(CURDIR)/notebooks/executed/figures $(PY) tools/notebooks.py run --out notebooks/executed
	$(PY) tools/notebooks.py check
	@ADAPT_FIGURES=$(CURDIR)/notebooks/executed/figures $(PY) -m pytest -p no:cacheprovider --nbval-lax \
		--nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/[0-9][0-9]-*.ipynb; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: nbval collected no notebooks (exit 5); failing" >&2; exit 1; fi; \
	exit $$rc

# reproduce: retrain one seed of every method of the mnist5k grid (real MNIST, offline, CPU) into
# reproduced/ (ignored by git), compare each new record with the committed one and print a verdict per
# run (adapt reproduce), then draw the tables and figures of those runs into reproduced/.  FORCE=1
# retrains runs already finished in reproduced/.  The committed results/ are only read.
REPRODUCED = reproduced
reproduce: $(STAMP) ## retrain the mnist5k runs (seed 0 of each method) into reproduced/, compare them with the committed records, draw their tables and figures
	$(TRAIN_ENV) $(PY) -m adapt reproduce mnist5k --results $(REPRODUCED) $(if $(FORCE),--force,)
	ADAPT_RESULTS=$(CURDIR)/$(REPRODUCED) ADAPT_FIGURES=$(CURDIR)/$(REPRODUCED)/figures \
		$(PY) tools/notebooks.py run $(ANALYSIS) notebooks/22-sdm.ipynb --out $(REPRODUCED)/notebooks -p profile mnist5k
	@echo "your runs: $(REPRODUCED)/mnist5k/, their tables: $(REPRODUCED)/mnist5k/tables/, figures: $(REPRODUCED)/figures/, notebooks: $(REPRODUCED)/notebooks/"

# grid: train the PROFILE grid into results/<profile>/ (finished points are skipped, interrupted ones
# resume; FORCE=1 retrains finished ones) through papermill, then draw its tables and figures.  The
# smoke and mnist5k grids run on a CPU in minutes; quick needs CIFAR (a download) and an hour; paper
# and sdm a GPU (docs/running.md).  PROFILE=smoke also reruns notebook 30's ablation.
grid: $(STAMP) ## train the PROFILE grid into results/ (FORCE=1 retrains finished points), then draw its tables and figures
	$(TRAIN_ENV) $(PY) -m adapt grid $(PROFILE) --results results $(if $(FORCE),--force,)
	$(MAKE) --no-print-directory figures PROFILE=$(PROFILE)
ifeq ($(PROFILE),smoke)
	$(TRAIN_ENV) $(PY) tools/notebooks.py run notebooks/30-ablation.ipynb $(if $(FORCE),-p retrain true,)
endif

# smoke also re-executes the teaching notebooks 01 and 02, whose figures the README lists too
# (02 trains a float32 AlexNet for 3 epochs on digits: about half a minute), 22 (the SDM
# additions, from the mnist5k records) and 40 (the verdict: mnist5k, smoke, decomposition, cross-check).  Other profiles write their tables and executed notebooks
# to results/<profile>/; mnist5k also its figures (results/mnist5k/figures/), so that figures/
# holds only what the README lists.
figures: $(STAMP) ## regenerate the tables and figures of PROFILE from existing records (no training)
ifeq ($(PROFILE),smoke)
	$(PY) tools/notebooks.py run notebooks/01-fixed-point-quantization.ipynb notebooks/02-precision-heuristic.ipynb \
		$(ANALYSIS) notebooks/22-sdm.ipynb notebooks/40-replication.ipynb
	$(PY) tools/update_readme.py
else ifeq ($(PROFILE),mnist5k)
	$(PY) tools/notebooks.py run $(ANALYSIS) --out results/mnist5k/notebooks -p profile mnist5k \
		-p figures_dir results/mnist5k/figures
else
	$(PY) tools/notebooks.py run $(ANALYSIS) --out results/$(PROFILE)/notebooks -p profile $(PROFILE)
endif

notebooks: $(STAMP) ## re-execute every notebook in place at its defaults and clean its metadata (maintainers)
	$(PY) tools/notebooks.py run

clean: ## remove caches and build leftovers (keeps .venv, data/ and results/)
	rm -rf .pytest_cache .hypothesis build dist *.egg-info
	find . \( -path ./.git -o -path ./.venv -o -path ./data -o -path ./results \) -prune -o \
		\( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 -r rm -rf
