"""Results tables (adapt.tables) on hand-made records with hand-checked numbers."""
import math

import numpy as np
import pandas as pd
import pytest

from adapt import tables as T
from adapt.results import SCHEMA


def rec(method, acc=None, model="alexnet_cifar", dataset="digits", variant="reference", seed=0, fold=0,
        status="completed", epochs_acc=(0.5, 0.95)):
    """A record in the adapt.run/1 layout; ``acc`` is the final test accuracy (fraction)."""
    name = f"smoke/{method}/{model}/{dataset}"
    cfg = {"name": name, "model": model, "dataset": dataset, "method": "float32" if method.startswith("float32")
           else method, "variant": variant, "profile": "smoke", "seed": seed, "fold": fold, "protocol": "kfold",
           "epochs": len(epochs_acc), "batch_size": 32, "accumulation_steps": 1, "momentum": 0.9,
           "target_accuracy": 0.9, "policy": {}}
    epochs = [{"epoch": i, "val_acc": a, "test_acc": a, "steps": 10 * (i + 1)} for i, a in enumerate(epochs_acc)]
    final = {} if acc is None else {"epochs_run": len(epochs), "final_test_acc": acc, "best_test_acc": acc}
    return {"schema": SCHEMA, "name": name, "status": status, "config": cfg, "environment": {},
            "epochs": epochs if acc is not None else [], "traces": {}, "final": final, "policy": {},
            "wall_time_s": 1.0, "started": "2026-01-01T00:00:00+00:00", "finished": None, "message": ""}


def sample_records():
    return [
        # AdaPT's float32 baseline, AlexNet: 3 completed folds + a diverged and a failed one
        rec("float32", 0.80, fold=0), rec("float32", 0.90, fold=1), rec("float32", 0.85, fold=2),
        rec("float32", 0.10, fold=3, status="diverged"), rec("float32", None, fold=4, status="failed"),
        rec("float32-muppet", 0.70),
        rec("muppet", None, seed=0, status="failed"), rec("muppet", None, seed=1, status="failed"),
        rec("adapt", 0.86, seed=0), rec("adapt", 0.88, seed=1),
        rec("adapt", 0.84, variant="corrected"),
        # ResNet-20: one run each
        rec("float32", 0.81, model="resnet20"), rec("adapt", 0.80, model="resnet20"),
    ]


# Cost-model figures by (model, method, variant, seed) for the fake run_figures.
FIGS = {
    ("alexnet_cifar", "adapt", "reference", 0): dict(train_speedup=1.2, train_speedup_iso=math.inf,
                                                     inference_speedup=2.0, model_size=0.5),
    ("alexnet_cifar", "adapt", "reference", 1): dict(train_speedup=1.4, train_speedup_iso=math.inf,
                                                     inference_speedup=3.0, model_size=0.6),
    ("alexnet_cifar", "adapt", "corrected", 0): dict(train_speedup=9.0, train_speedup_iso=9.0,
                                                     inference_speedup=9.0, model_size=0.9),
    ("resnet20", "adapt", "reference", 0): dict(train_speedup=1.1, train_speedup_iso=4.0,
                                                inference_speedup=2.0, model_size=0.45),
}
EXTRA = dict(memory_footprint=1.5, final_sparsity=0.1, avg_sparsity=0.05, overhead_share=0.01,
             speedup_vs_muppet_baseline=2.0, iso_reached=True)


@pytest.fixture
def fake_figures(monkeypatch):
    calls = []

    def fake(record, variant):
        cfg = record["config"]
        calls.append(record)
        assert record["status"] == "completed", "only completed runs are priced"
        base = dict(train_speedup=1.0, train_speedup_iso=1.0, inference_speedup=1.0, model_size=1.0)
        base = FIGS.get((cfg["model"], T.run_method(record), cfg["variant"], cfg["seed"]), base)
        return {**EXTRA, **base}

    monkeypatch.setattr(T, "_run_figures", fake)
    return calls


def row(frame, **kw):
    sel = frame
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"{kw}: {len(sel)} rows"
    return sel.iloc[0]


# ----------------------------------------------------------------------------- accuracy
def test_accuracy_table_means_std_best_and_statuses():
    acc = T.accuracy_table(sample_records())
    assert list(acc[["model", "method", "variant"]].itertuples(index=False, name=None)) == [
        ("alexnet_cifar", "float32", "reference"), ("alexnet_cifar", "float32-muppet", "reference"),
        ("alexnet_cifar", "muppet", "reference"), ("alexnet_cifar", "adapt", "reference"),
        ("alexnet_cifar", "adapt", "corrected"), ("resnet20", "float32", "reference"),
        ("resnet20", "adapt", "reference")]
    f = row(acc, model="alexnet_cifar", method="float32")
    # completed 80, 90, 85: mean 85, sample std (ddof=1) sqrt((25 + 25 + 0) / 2) = 5, best 90;
    # the diverged run's 10 % and the failed run enter neither
    assert (f.runs, f.completed, f.diverged, f.failed, f.other) == (5, 3, 1, 1, 0)
    assert f.acc_mean_pct == pytest.approx(85.0)
    assert f.acc_std_pct == pytest.approx(5.0)
    assert f.acc_best_pct == pytest.approx(90.0)
    assert f.accuracy == "85.00 ± 5.00 (1 diverged, 1 failed)"
    m = row(acc, method="float32-muppet")  # one run: no std
    assert m.acc_mean_pct == pytest.approx(70.0) and np.isnan(m.acc_std_pct) and m.accuracy == "70.00"
    mu = row(acc, method="muppet")  # nothing completed: the status is shown, not a number
    assert (mu.completed, mu.failed) == (0, 2) and np.isnan(mu.acc_mean_pct) and mu.accuracy == "failed (2)"
    a = row(acc, model="alexnet_cifar", method="adapt", variant="reference")
    assert a.acc_mean_pct == pytest.approx(87.0) and a.acc_std_pct == pytest.approx(math.sqrt(2.0))
    assert a.acc_best_pct == pytest.approx(88.0)
    assert row(acc, method="adapt", variant="corrected").acc_mean_pct == pytest.approx(84.0)


def test_runs_frame_keeps_float32_baselines_apart_and_reports_interrupted_runs():
    recs = [rec("float32", 0.9), rec("float32-muppet", 0.8), rec("adapt", None, status="interrupted")]
    runs = T.runs_frame(recs)
    assert list(runs["method"]) == ["float32", "float32-muppet", "adapt"]
    assert list(runs["status"]) == ["completed", "completed", "interrupted"]
    acc = T.accuracy_table(recs)
    a = row(acc, method="adapt")
    assert (a.other, a.accuracy) == (1, "incomplete")


# ----------------------------------------------------------------------------- speedups
def test_speedup_table_means_over_completed_runs(fake_figures):
    sp = T.speedup_table(sample_records(), "reference")
    a = row(sp, model="alexnet_cifar", method="adapt", variant="reference")
    assert (a.cost_model, a.runs, a.priced) == ("reference", 2, 2)
    assert a.train_speedup == pytest.approx(1.3)
    assert a.inference_speedup == pytest.approx(2.5)
    assert a.model_size == pytest.approx(0.55)
    assert a.train_speedup_iso == math.inf  # the released iso rule's division by zero propagates
    assert a.memory_footprint == pytest.approx(1.5) and a.iso_reached == pytest.approx(1.0)
    f = row(sp, model="alexnet_cifar", method="float32")
    assert (f.runs, f.priced) == (5, 3)  # the diverged and failed runs are not priced
    mu = row(sp, method="muppet")
    assert mu.priced == 0 and np.isnan(mu.train_speedup)
    assert all(r["status"] == "completed" for r in fake_figures)


def test_speedup_table_with_the_real_cost_model_on_float32_records():
    """A float32 run has speedups and size 1; iso: target 0.9 first reached at epoch index 1 of 2."""
    recs = [rec("float32", 0.95, seed=0), rec("float32", 0.95, seed=1)]
    ref = row(T.speedup_table(recs, "reference"), method="float32")
    assert (ref.priced, ref.train_speedup, ref.inference_speedup, ref.model_size) == (2, 1.0, 1.0, 1.0)
    assert ref.train_speedup_iso == pytest.approx(2.0)  # released: SU / (index / len) = 1 / (1/2)
    assert ref.memory_footprint == pytest.approx(3.0)   # released: 1 + 2 * size ratio
    cor = row(T.speedup_table(recs, "corrected"), method="float32")
    assert cor.train_speedup_iso == pytest.approx(1.0) and cor.memory_footprint == pytest.approx(1.0)


def test_a_record_the_cost_model_cannot_price_stays_visible():
    recs = [rec("adapt", 0.9)]  # an AdaPT record without a tensor trace
    figs = T.figures_frame(recs, "reference")
    assert len(figs) == 1 and "trace" in figs.loc[0, "error"] and np.isnan(figs.loc[0, "train_speedup"])
    sp = row(T.speedup_table(recs, "reference", figures=figs), method="adapt")
    assert (sp.runs, sp.priced) == (1, 0)


# ----------------------------------------------------------------------------- headline
def test_adapt_vs_float32_and_headline_deltas(fake_figures):
    recs = sample_records()
    pairs = T.adapt_vs_float32(recs)
    a = row(pairs, model="alexnet_cifar")
    assert a.acc_diff_pp == pytest.approx(87.0 - 85.0) and a.acc_diff_best_pp == pytest.approx(88.0 - 90.0)
    r = row(pairs, model="resnet20")
    assert r.acc_diff_pp == pytest.approx(80.0 - 81.0) and r.train_speedup == pytest.approx(1.1)

    head = T.headline_table(recs).set_index("metric")
    # means over the two model x data set pairs
    assert head.loc["train_speedup", "this_run"] == pytest.approx((1.3 + 1.1) / 2)
    assert head.loc["train_speedup", "delta_v4"] == pytest.approx(1.2 - 1.27)
    assert head.loc["train_speedup", "delta_sdm"] == pytest.approx(1.2 - 1.31)
    assert head.loc["acc_diff_pp", "this_run"] == pytest.approx((2.0 - 1.0) / 2)
    assert head.loc["acc_diff_pp", "delta_v4"] == pytest.approx(0.5 - 0.98)
    assert head.loc["acc_diff_pp", "delta_sdm"] == pytest.approx(0.5 - 0.74)
    assert head.loc["acc_diff_best_pp", "this_run"] == pytest.approx((-2.0 - 1.0) / 2)
    assert head.loc["inference_speedup", "this_run"] == pytest.approx((2.5 + 2.0) / 2)
    assert head.loc["inference_speedup", "delta_v4"] == pytest.approx(2.25 - 2.33)
    assert head.loc["model_size", "this_run"] == pytest.approx((0.55 + 0.45) / 2)
    assert head.loc["model_size", "delta_sdm"] == pytest.approx(0.5 - 0.51)
    # iso: not claimed by v4; AlexNet's mean is +inf, so the average is too
    assert np.isnan(head.loc["train_speedup_iso", "paper_v4"]) and np.isnan(head.loc["train_speedup_iso", "delta_v4"])
    assert head.loc["train_speedup_iso", "paper_sdm"] == 4.76 and head.loc["train_speedup_iso", "this_run"] == math.inf
    assert (head["pairs"] == 2).all()
    # the corrected heuristic variant is its own comparison
    cor = T.headline_table(recs, adapt_variant="corrected").set_index("metric")
    assert cor.loc["train_speedup", "this_run"] == pytest.approx(9.0) and cor.loc["train_speedup", "pairs"] == 1
    assert cor.loc["acc_diff_pp", "this_run"] == pytest.approx(84.0 - 85.0)


def test_paper_claims_are_the_abstracts_numbers():
    v4, sdm = T.PAPER_CLAIMS["v4"]["metrics"], T.PAPER_CLAIMS["sdm"]["metrics"]
    assert {k: v4[k]["value"] for k in v4} == {"train_speedup": 1.27, "train_speedup_iso": None,
                                              "acc_diff_pp": 0.98, "inference_speedup": 2.33, "model_size": 0.52}
    assert {k: sdm[k]["value"] for k in sdm} == {"train_speedup": 1.31, "train_speedup_iso": 4.76,
                                                "acc_diff_pp": 0.74, "inference_speedup": 2.28, "model_size": 0.51}
    assert "0.98%" in v4["acc_diff_pp"]["wording"] and "percentage points" in v4["acc_diff_pp"]["note"]
    assert sdm["model_size"]["bound"] == "<=" and "51%" in sdm["model_size"]["wording"]
    for tag in ("v4", "sdm"):
        assert T.PAPER_CLAIMS[tag]["source"] and T.PAPER_CLAIMS[tag]["tag"]


# ----------------------------------------------------------------------------- markdown and README
def test_to_markdown_format():
    df = pd.DataFrame({"model": ["alexnet", "res|net"], "acc": [85.0, np.nan], "n": [3, 1],
                       "su": [math.inf, 1.23456]})
    assert T.to_markdown(df) == "\n".join([
        "| model    |   acc |   n |   su |",
        "| -------- | ----: | --: | ---: |",
        "| alexnet  | 85.00 |   3 |  inf |",
        "| res\\|net |   n/a |   1 | 1.23 |",
    ])
    out = T.to_markdown(df[["model", "su"]], floatfmt={"su": ".3f"}, na_rep="-", index=True)
    assert out.splitlines()[0] == "| index | model    |    su |"
    assert out.splitlines()[3] == "|     1 | res\\|net | 1.235 |"


def test_readme_numbers_match_the_tables(fake_figures):
    recs = sample_records()
    nums = T.readme_numbers(recs)
    assert nums["runs"] == 13 and nums["runs.failed"] == 3 and nums["runs.diverged"] == 1
    assert nums["accuracy.alexnet_cifar.digits.float32.reference.mean_pct"] == pytest.approx(85.0)
    assert nums["accuracy.alexnet_cifar.digits.float32.reference.best_pct"] == pytest.approx(90.0)
    assert nums["headline.reference.train_speedup"] == pytest.approx(1.2)
    assert nums["headline.reference.acc_diff_pp"] == pytest.approx(0.5)
    assert nums["speedup.reference.alexnet_cifar.digits.adapt.reference.model_size"] == pytest.approx(0.55)
    assert "headline.corrected.inference_speedup" in nums
    assert T.format_value(nums["headline.reference.train_speedup"]) == "1.20"
