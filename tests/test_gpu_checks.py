"""benchmarks/gpu_checks.sh: the dry run on CPU goes through every step (Triton's interpreter, tiny sizes) and
writes every output; a missing package, a machine without CUDA and a spent time budget fail fast and say so."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_checks.sh"
STEPS = ("tests", "quantizer", "train_step", "paper_hours", "sdm_hours")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run(out: Path, *args, timeout=600, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, **env}
    full.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *args, str(out)], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_dry_run_goes_through_every_step_and_writes_every_output(tmp_path):
    pytest.importorskip("triton", reason="the dry run's quantizer step runs the Triton kernels in the interpreter")
    done = run(tmp_path / "out", "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    summary = (out / "summary.txt").read_text()
    for step in STEPS:
        assert f"{step}: passed in " in summary, summary
        assert (out / f"{step}.txt").stat().st_size > 0
    env = (out / "env.txt").read_text()
    assert "mode: dry run" in env and f"torch: {torch.__version__}" in env and "source:" in env
    rows = json.loads((out / "quantizer.json").read_text())["rows"]
    assert any(r["measurement"].startswith("Triton fixed_point(8,4) stochastic") for r in rows)
    modes = {r["mode"] for r in json.loads((out / "train_step.json").read_text())}
    assert modes == {"float32", "adapt"}
    for grid, config in (("paper", "paper/float32/resnet20/cifar10"), ("sdm", "sdm/muppet/lenet5/mnist")):
        hours = json.loads((out / f"{grid}_hours.json").read_text())
        assert hours["complete"] and [r["config"] for r in hours["rows"]] == [config]
        assert hours["rows"][0]["epochs_timed"] == 1 and hours["rows"][0]["epochs_run"] == 2


def test_missing_packages_fail_before_any_step(tmp_path):
    """An interpreter without site-packages (a bare machine's python3 without torch): exit 2, the names missing."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    done = run(tmp_path / "out", "--dry-run", timeout=120, PYTHON=str(python))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "lacks: torch numpy numba pytest" in done.stderr
    assert not any((tmp_path / "out" / f"{step}.txt").exists() for step in STEPS)
    assert "preflight FAILED" in (tmp_path / "out" / "summary.txt").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_no_cuda_device_fails_before_any_step(tmp_path):
    pytest.importorskip("triton")
    pytest.importorskip("pytest")
    done = run(tmp_path / "out", timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sees no CUDA device" in done.stderr


def test_a_spent_budget_runs_no_step_and_fails(tmp_path):
    """Every step is capped by what is left of GPU_CHECKS_BUDGET; a step that would get under 15 s is not run
    and the script exits 1."""
    done = run(tmp_path / "out", "--dry-run", timeout=120, GPU_CHECKS_BUDGET="10")
    assert done.returncode == 1, done.stdout + done.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    for step in STEPS:
        assert f"== {step}: not run, the budget of 10 s is spent" in summary, summary
