"""The training-level ablation (adapt.experiments.ablation, adapt.analysis.tables.ablation, adapt.analysis.plots.ablation)."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from adapt.experiments import ablation as A
from adapt.heuristic import VARIANT_OPTIONS, AdaptPolicy
from adapt.records import SCHEMA
from adapt.analysis.tables import ablation as TA

REF, COR = VARIANT_OPTIONS["reference"], VARIANT_OPTIONS["corrected"]
#: A run of about a second: 200 digits (10-fold split: 20 per class), one epoch.
TINY = {"epochs": 1, "subset": 200, "test_subset": 100, "batch_size": 64}


def test_rows_are_reference_each_option_alone_and_corrected():
    rows = A.ablation_rows()
    assert [r.label for r in rows] == ["reference", *REF, "corrected"]
    assert rows[0].flipped == {} and rows[-1].flipped == {} and rows[-1].variant == "corrected"
    for r in rows[1:-1]:
        assert r.variant == "reference" and r.flipped == {r.label: COR[r.label]} and r.option == r.label


def test_each_point_flips_exactly_one_option_as_the_policy_resolves_it():
    """The policy built from each point's config (what training runs) has exactly the row's option
    corrected and every other option at its reference value."""
    points = A.ablation_points(seeds=(0, 1, 2))
    assert len(points) == 3 * (len(REF) + 2)
    assert len({p.run_id for _, p in points}) == len(points)
    for row, point in points:
        cfg = point.config()
        policy = AdaptPolicy.from_config(cfg)
        resolved = {k: getattr(policy, k) for k in REF}
        if row.label == "corrected":
            assert resolved == COR
        else:
            expected = dict(REF, **({row.label: COR[row.label]} if row.label != "reference" else {}))
            assert resolved == expected, row.label
            differ = [k for k in REF if resolved[k] != REF[k]]
            assert differ == ([] if row.label == "reference" else [row.label])
        assert A.row_of(cfg) == A.row_of(json.loads(json.dumps(cfg.to_dict()))) == row.label
        # one lr and one set of every other field for all rows
        assert cfg.lr == A.ablation_points(seeds=(0,))[0][1].config().lr


def test_overrides_apply_to_every_row_and_rows_filter():
    pts = A.ablation_points(seeds=(0,), overrides={"lr": 0.01, "epochs": 2}, rows=["reference", "kl"])
    assert [r.label for r, _ in pts] == ["reference", "kl"]
    assert all(p.config().lr == 0.01 and p.config().epochs == 2 and p.is_custom for _, p in pts)
    assert pts[1][1].config().policy["kl"] == "corrected"


@pytest.mark.parametrize("kwargs, match", [
    (dict(overrides={"policy": {"kl": "corrected"}}), "sets \\['kl'\\]"),
    (dict(overrides={"seed": 3}), "seed"),
    (dict(seeds=()), "seeds"),
    (dict(seeds=(0, -1)), "seeds"),
    (dict(rows=["nope"]), "nope"),
    (dict(config_name="smoke/float32/alexnet_cifar/digits"), "method 'float32'"),
    (dict(config_name="smoke/adapt/nothing/digits"), "unknown config"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.ablation_points(**kwargs)


def test_row_of_mixed_and_unknown_settings():
    assert A.row_of({"variant": "reference", "policy": {"kl": "corrected", "fl_probe": "mid"}}) == "other"
    assert A.row_of({"variant": "corrected", "policy": {"kl": "reference"}}) == "other"
    # True is not 1, False is not 0.0: normalize_gradients and kl_threshold stay apart
    assert not A._same(True, 1) and not A._same(False, 0.0) and A._same(0, 0.0)
    with pytest.raises(ValueError, match="variant"):
        A.effective_options({"variant": "weird"})


# ----------------------------------------------------------------------------- aggregation
def _record(point, acc, wl, status="completed"):
    cfg = json.loads(json.dumps(point.config().to_dict()))
    return {"schema": SCHEMA, "name": cfg["name"], "run_id": point.run_id, "status": status, "config": cfg,
            "environment": {}, "epochs": [{"epoch": 0, "test_acc": acc, "adapt_mean_weight_wl": wl}],
            "traces": {}, "final": {"final_test_acc": acc}, "policy": {}, "wall_time_s": 1.0,
            "started": "2026-01-01T00:00:00+00:00", "finished": None, "message": ""}


def test_table_mean_and_std_equal_numpy_on_hand_made_records():
    rng = np.random.default_rng(0)
    pts = A.ablation_points(seeds=(0, 1, 2), rows=["reference", "normalize_gradients", "corrected"])
    records, figs = [], []
    for k, (row, p) in enumerate(pts):
        status = "diverged" if (row.label == "corrected" and p.seed == 2) else "completed"
        records.append(_record(p, float(rng.uniform(0.3, 0.9)), float(rng.integers(8, 24)), status))
        figs.append({"run_id": p.run_id, "train_speedup": 1 + k / 10, "inference_speedup": 2 + k / 7,
                     "model_size": 0.4 + k / 50})
    runs = TA.ablation_runs(records, figures=pd.DataFrame(figs))
    table = TA.ablation_table(runs)
    assert list(table.index) == ["reference", "normalize_gradients", "corrected"]
    assert table.loc["normalize_gradients", "option"] == "normalize_gradients"
    assert table.loc["normalize_gradients", "value"] == "False"
    fig_by_id = {f["run_id"]: f for f in figs}
    for label in table.index:
        mine = [(r, p) for (row, p), r in zip(pts, records) if row.label == label and r["status"] == "completed"]
        values = {"test_acc_pct": [100 * r["final"]["final_test_acc"] for r, _ in mine],
                  "mean_weight_wl": [r["epochs"][-1]["adapt_mean_weight_wl"] for r, _ in mine],
                  **{m: [fig_by_id[p.run_id][m] for _, p in mine]
                     for m in ("train_speedup", "inference_speedup", "model_size")}}
        assert table.loc[label, "runs"] == 3 and table.loc[label, "completed"] == len(mine)
        for m, v in values.items():
            assert table.loc[label, f"{m}_mean"] == pytest.approx(np.mean(v))
            assert table.loc[label, f"{m}_std"] == pytest.approx(np.std(v, ddof=1))
    assert len([1 for r in records if r["status"] != "completed"]) == 1 and table.loc["corrected", "completed"] == 2
    assert table.loc["corrected", "acc_delta"] == pytest.approx(
        table.loc["corrected", "test_acc_pct_mean"] - table.loc["reference", "test_acc_pct_mean"])
    view = TA.ablation_view(table)
    m, s = table.loc["reference", "test_acc_pct_mean"], table.loc["reference", "test_acc_pct_std"]
    assert view.loc["reference", "final test acc (%)"] == f"{m:.1f} ± {s:.1f}"
    assert view.loc["corrected", "runs"] == "2/3"


def test_one_run_has_no_std_and_the_figure_draws_every_row():
    from adapt.analysis.plots.ablation import ablation_figure

    pts = A.ablation_points(seeds=(0,), rows=["reference", "kl"])
    records = [_record(p, 0.5 + 0.1 * i, 12.0) for i, (_, p) in enumerate(pts)]
    figs = pd.DataFrame([{"run_id": p.run_id, "train_speedup": 1.2, "inference_speedup": 2.0, "model_size": 0.5}
                         for _, p in pts])
    runs = TA.ablation_runs(records, figures=figs)
    table = TA.ablation_table(runs)
    assert math.isnan(table.loc["kl", "test_acc_pct_std"])
    assert table.loc["kl", "acc_delta"] == pytest.approx(10.0)
    assert TA.ablation_view(table).loc["kl", "final test acc (%)"] == "60.0"
    fig = ablation_figure(table, runs)
    assert len(fig.axes) == len(TA.ABLATION_METRICS)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["reference", "+ kl"]
    with pytest.raises(ValueError, match="not columns"):
        ablation_figure(table, metrics=["nope"])


# ----------------------------------------------------------------------------- running and loading
def test_run_then_load_skips_finished_and_flags_stale(tmp_path):
    pts = A.ablation_points(seeds=(0,), rows=["reference", "bias_format"],
                            overrides=TINY)
    frame = A.run_ablation(pts, results_root=tmp_path, verbose=False)
    assert list(frame["status"]) == ["completed", "completed"] and list(frame["action"]) == ["ran", "ran"]
    assert (tmp_path / "ablation" / "smoke" / pts[1][1].run_id / "record.json").exists()
    again = A.run_ablation(pts, results_root=tmp_path, verbose=False)
    assert list(again["action"]) == ["skipped", "skipped"]
    records, status = A.load_ablation(pts, tmp_path)
    assert list(status["status"]) == ["completed", "completed"] and len(records) == 2
    assert list(status["row"]) == ["reference", "bias_format"]
    assert [A.row_of(r["config"]) for r in records] == ["reference", "bias_format"]
    # a record of another config in a point's folder is stale and left out; a missing one is missing
    path = tmp_path / status.loc[1, "path"]
    rec = json.loads(path.read_text())
    rec["config"]["lr"] = 1.0
    path.write_text(json.dumps(rec))
    more = pts + A.ablation_points(seeds=(1,), rows=["reference"], overrides=TINY)
    records, status = A.load_ablation(more, tmp_path)
    assert list(status["status"]) == ["completed", "stale", "missing"] and len(records) == 1
