"""benchmarks/train_step.py: every mode builds from the paper configs and steps as the loop does (a tiny
CPU dry run; the timings themselves are the benchmark's business, never a test's)."""
from __future__ import annotations

import pytest
import torch

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("train_step")


def test_every_mode_runs_and_the_table_has_its_ratio(bench, capsys):
    rows = bench.main(["--device", "cpu", "--batch", "4", "--accumulation", "2", "--rounds", "1",
                       "--models", "alexnet_cifar", "--system-malloc"])
    assert [r["mode"] for r in rows] == list(bench.MODES)
    assert all(r["time_ratio_vs_float32"] > 0 for r in rows) and rows[0]["time_ratio_vs_float32"] == 1.0
    out = capsys.readouterr().out
    assert "system malloc (--system-malloc)" in out
    assert "<= 1.15" in out.split("adapt", 1)[1].splitlines()[0]  # the CPU target is printed for AdaPT


def test_the_muppet_mode_quantizes_with_dynamic_fixed_point(bench):
    runner = bench._Runner("alexnet_cifar", "muppet", torch.device("cpu"), 1)
    assert runner.policy.bits == 8
    before = [qp.master.clone() for qp in runner.qmodel.params.values()]
    runner.step(bench._batches(4, 1, torch.device("cpu")))
    after = [qp.master for qp in runner.qmodel.params.values()]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the step updated the masters
    weight = next(iter(runner.qmodel.params.values()))
    assert type(weight.weight_format).__name__ == "DynamicFixedPoint"
