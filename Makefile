# adapt: set-up and tests (GNU make).  `make help` lists the targets.
#
# On a fresh machine:  make setup  (optional)  then  make test.

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
.PHONY: help setup test unit clean

help: ## list the targets
	@echo "adapt: make targets"
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'
	@echo "variables: PYTHON=$(PYTHON) (interpreter that creates $(VENV)), TESTS=$(TESTS), PYTEST_ARGS=$(PYTEST_ARGS)"

setup: $(STAMP) ## create .venv with the pinned torch stack and install adapt (editable, with test and notebook extras)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH_PINS)
	$(PIP) install -e ".[test,notebooks]" $(TORCH_PINS)
	touch $@

test: unit ## run the whole test suite (runs setup first when .venv is missing or stale)

# pytest exits 5 when it collects no test: that is a failure here, never a pass.
unit: $(STAMP) ## run the pytest suite only
	@$(PY) -m pytest $(TESTS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		echo "make: no tests ran: pytest collected no tests from '$(TESTS)' (exit 5); failing" >&2; \
		exit 1; \
	fi; \
	exit $$rc

clean: ## remove caches and build leftovers (keeps .venv, data/ and results/)
	rm -rf .pytest_cache .hypothesis build dist *.egg-info
	find . \( -path ./.git -o -path ./.venv -o -path ./data -o -path ./results \) -prune -o \
		\( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 -r rm -rf
