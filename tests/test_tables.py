"""Results tables (adapt.analysis.tables) on hand-made records with hand-checked numbers."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from adapt.analysis import tables as T
from adapt.records import SCHEMA


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

    monkeypatch.setattr(T.frames, "_run_figures", fake)  # figures_frame looks it up in adapt.analysis.tables.frames
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
    assert ref.memory_footprint == pytest.approx(3.0)   # released: 1 + 2 * size ratio
    assert ref.iso_reached == 1.0
    cor = row(T.speedup_table(recs, "corrected"), method="float32")
    assert cor.train_speedup_iso == pytest.approx(1.0) and cor.memory_footprint == pytest.approx(1.0)


@pytest.mark.parametrize("variant", ["reference", "corrected"])
@pytest.mark.parametrize("epochs_acc", [(0.5, 0.95), (0.5, 0.6, 0.95), (0.95, 0.96), (0.5, 0.6)])
def test_a_float32_baseline_has_iso_speedup_one_against_itself(variant, epochs_acc):
    """The released iso formula SU / (k / n) gave a float32 run n / k against itself (1.33 for ResNet-20 smoke)."""
    from adapt.costmodel import run_figures

    recs = [rec("float32", 0.95, epochs_acc=epochs_acc), rec("float32-muppet", 0.95, epochs_acc=epochs_acc)]
    raw = run_figures(recs[0], variant)["train_speedup_iso"]
    if variant == "reference" and epochs_acc == (0.5, 0.6, 0.95):
        assert raw == pytest.approx(1.5)  # what the table reported before: 3 epochs / reached at index 2
    figs = T.figures_frame(recs, variant)
    assert list(figs["train_speedup_iso"]) == [1.0, 1.0]
    sp = T.speedup_table(recs, variant, figures=figs)
    assert (sp["train_speedup_iso"] == 1.0).all() and (sp["train_speedup"] == 1.0).all()


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
    assert (head["pairs"].drop("mean_word_length") == 2).all()
    assert head.loc["mean_word_length", "pairs"] == 0  # these records have no tensor trace
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


# ----------------------------------------------------------------------------- grid records vs the others
def grid_rec(point, acc, epochs_acc=(0.5, 0.95)):
    """A completed record of a real grid point (its config from the registry), or of a custom point."""
    r = rec(point.method, acc, model=point.model, dataset=point.dataset, variant=point.variant, seed=point.seed,
            fold=point.fold, epochs_acc=epochs_acc)
    r["config"] = json.loads(json.dumps(point.config().to_dict()))
    r["name"] = point.config_name
    return r


def test_a_custom_run_of_a_grid_point_does_not_change_the_grid_tables(fake_figures):
    from adapt.experiments import grid as G

    point = G.GridPoint("smoke/adapt/resnet20/digits", "reference", 0, 0)
    custom = G.GridPoint("smoke/adapt/resnet20/digits", "reference", 0, 0, {"epochs": 1})
    assert custom.run_id.startswith(point.run_id + "-x")
    grid_record, custom_record = grid_rec(point, 0.80), grid_rec(custom, 0.20, epochs_acc=(0.2,))
    base = grid_rec(G.GridPoint("smoke/float32/resnet20/digits"), 0.90)
    records = [base, grid_record, custom_record]

    acc = row(T.accuracy_table(records, profile="smoke"), method="adapt")
    assert (acc.runs, acc.completed) == (1, 1) and acc.acc_mean_pct == pytest.approx(80.0)
    polluted = row(T.accuracy_table(records), method="adapt")  # profile=None: the records as given
    assert polluted.runs == 2 and polluted.acc_mean_pct == pytest.approx(50.0)

    runs = T.runs_frame(records, profile="smoke")
    assert list(runs["run_id"]) == ["float32-resnet20-digits-reference-s0-f0", point.run_id]
    sp = row(T.speedup_table(records, "reference", profile="smoke"), method="adapt")
    assert (sp.runs, sp.priced) == (1, 1)
    # a figures frame of all the records is narrowed to the reported runs
    sp = row(T.speedup_table(records, "reference", figures=T.figures_frame(records), profile="smoke"), method="adapt")
    assert (sp.runs, sp.priced) == (1, 1)
    head = T.headline_table(records, profile="smoke").set_index("metric")
    assert head.loc["acc_diff_pp", "this_run"] == pytest.approx(80.0 - 90.0)
    nums = T.readme_numbers(records, profile="smoke")
    assert nums["runs"] == 2 and nums["accuracy.resnet20.digits.adapt.reference.mean_pct"] == pytest.approx(80.0)

    others = T.other_runs_table([custom_record], "smoke")
    assert list(others["run_id"]) == [custom.run_id] and "epochs=1" in others.loc[0, "reason"]
    assert T.other_runs_note([custom_record, custom_record], "smoke") == "2 custom runs are not in these tables:"
    assert T.other_runs_note([custom_record], "smoke") == "1 custom run is not in these tables:"
    off_grid = grid_rec(G.GridPoint("smoke/adapt/resnet20/digits", seed=7), 0.5)
    assert T.other_runs_note([custom_record, off_grid], "smoke") == \
        "2 runs are not in these tables (1 custom run, 1 off-grid point):"
    assert "seed 7" in T.other_run_reason(off_grid, "smoke")


def test_load_profile_splits_skips_and_summarizes(tmp_path):
    from adapt.experiments import grid as G
    from adapt.records import atomic_write_json

    point = G.GridPoint("smoke/adapt/resnet20/digits")
    custom = G.GridPoint("smoke/adapt/resnet20/digits", overrides={"epochs": 1})
    root = tmp_path / "res"
    atomic_write_json(root / "smoke" / point.run_id / "record.json", grid_rec(point, 0.8))
    atomic_write_json(root / "smoke" / custom.run_id / "record.json", grid_rec(custom, 0.2))
    (root / "smoke" / "broken").mkdir()
    (root / "smoke" / "broken" / "record.json").write_text('{"schema": "adapt.run/1", "na')
    with pytest.warns(RuntimeWarning, match="broken"):
        data = T.load_profile("smoke", root)
    assert [r["config"]["epochs"] for r in data.records] == [8]
    assert [T.run_id(r) for r in data.others] == [custom.run_id]
    assert len(data.skipped) == 1 and "broken" in data.skipped[0]
    text = data.summary()
    assert "1 grid record of the 'smoke' profile" in text and "1 custom run is not in these tables:" in text
    assert str(root / "smoke" / "broken" / "record.json") in text
    empty = T.load_profile("quick", root)  # no folder: nothing, said so
    assert empty.records == [] and "no grid records" in empty.summary() and "no completed runs" in empty.summary()


def test_tables_of_a_profile_without_completed_runs_list_the_failures():
    from adapt.experiments import grid as G

    message = "DatasetNotAvailable: CIFAR-10 is not available offline"
    records = [G.failure_record(p.config(), message) for p in G.grid("quick")]
    acc = T.accuracy_table(records, profile="quick")
    assert len(acc) == 16 and (acc["accuracy"] == "failed").all() and acc["acc_mean_pct"].isna().all()
    sp = T.speedup_table(records, "reference", profile="quick")
    assert (sp["priced"] == 0).all() and sp["train_speedup"].isna().all()
    assert T.headline_table(records, profile="quick")["this_run"].isna().all()
    fails = T.failures_table(records, profile="quick")
    assert len(fails) == 16 and (fails["message"] == message).all() and (fails["status"] == "failed").all()
    block = T.readme_block(records, "quick")
    assert "**No completed runs.**" in block and message in block and "16 failed" in block
    assert "n/a" in T.headline_note(T.headline_table(records))
    assert "No completed run" in T.iso_note(T.figures_frame(records))
    assert T.epochs_note(records) == "**Epochs.** No run completed."
    empty = T.readme_block([], "quick")
    assert "0 runs" in empty and "**No runs.**" in empty
    for frame in (T.accuracy_table([]), T.speedup_table([]), T.failures_table([]), T.protocol_table([]),
                  T.other_runs_table([])):
        assert frame.empty


def test_generated_prose_states_the_table_values(fake_figures):
    recs = sample_records()
    head = T.headline_table(recs)
    note = T.headline_note(head)
    assert "training speedup 1.20 (paper: v4 1.27, SDM 1.31)" in note
    assert "accuracy difference +0.50 pp mean over runs and -1.50 pp best run" in note
    assert "model size 0.50 of float32 (paper: v4 0.52, SDM ≤ 0.51)" in note
    assert "0.50 pp more accurate on average" in note
    assert T.epochs_note(recs).startswith("**Epochs trained** (completed runs): float32 2, float32-muppet 2")
