"""The replication verdict's statistics, claims rule and mechanism quantities (adapt.analysis.verdict),
checked against scipy, hand-computed values and the released PushUp rule."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from adapt.analysis import verdict as V
from adapt.analysis.tables.report import reading_note
from adapt.heuristic import push_up


def test_t_interval_is_scipys():
    x = [96.1, 96.9, 97.3, 96.4, 97.0]
    mean, lo, hi, n = V.t_interval(x)
    ref = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert (mean, n) == (pytest.approx(np.mean(x)), 5) and (lo, hi) == (pytest.approx(ref[0]), pytest.approx(ref[1]))
    assert V.t_interval([97.0])[1:3] == (pytest.approx(math.nan, nan_ok=True),) * 2
    assert V.t_interval([1.0, 1.0, 1.0])[1:3] == (1.0, 1.0)
    assert V.t_interval([None, math.nan, 2.0, 4.0])[0] == 3.0  # undefined values are skipped


def test_welch_interval_is_scipys():
    a, b = [96.1, 96.9, 97.3, 96.4, 97.0], [97.2, 97.5, 96.8, 97.9, 97.1, 97.4]
    d, lo, hi = V.welch_interval(a, b)
    res = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(np.mean(a) - np.mean(b)) and (lo, hi) == (pytest.approx(res.low), pytest.approx(res.high))
    assert math.isnan(V.welch_interval([1.0], b)[1])


@pytest.mark.parametrize("claim,low,high,favourable,mean,expected", [
    (1.31, 0.90, 0.95, "higher", 0.92, "does not hold"),
    (1.31, 1.35, 1.50, "higher", 1.40, "holds"),
    (1.31, 1.20, 1.40, "higher", 1.30, "inconclusive"),
    (0.51, 0.60, 0.75, "lower", 0.70, "does not hold"),
    (0.51, 0.30, 0.45, "lower", 0.40, "holds"),
    (0.74, math.nan, math.nan, "higher", -0.4, "no interval (one seed)"),  # one seed: no verdict
    (4.76, math.nan, math.nan, "higher", math.nan, "not testable here"),
    (None, 0.0, 0.1, "higher", 0.05, "no number claimed"),
])
def test_the_verdict_rule(claim, low, high, favourable, mean, expected):
    assert V._verdict(claim, low, high, favourable, mean) == expected


@pytest.mark.parametrize("lb,c", [(25, 1.0), (27, 1.22), (60, 1.22), (150, 1.0), (8, 1.0), (5, 1.0)])
def test_the_fractional_length_ceiling_is_where_push_up_stops(lb, c):
    """Above FL* the released PushUp (max strategy, which adds s2 when s2 >= s1) adds no fractional bit from s2."""
    fl_star = int(V.settled_fractional_length(lb, c, results_buffer=8))
    gd = c * math.sqrt(lb)
    t = math.log(gd) - 1
    if t <= 0:
        assert fl_star == 0
        return
    assert fl_star == min(math.ceil(32 * t * t), 24)
    if fl_star < 24:
        # at FL*, s2 = 0, so the min strategy adds nothing to FL
        assert push_up(32, fl_star, gd, "min", 0)[1] == fl_star
        # one below it, s2 = 1 and FL grows
        assert push_up(32, fl_star - 1, gd, "min", 0)[1] == fl_star


def test_released_speedup_never_reaches_two():
    wl = np.arange(1, 33)
    su = V.released_speedup(wl)
    assert (su < 2).all() and su[-1] == 1.0
    assert V.released_speedup(17) == pytest.approx(64 / 49)


def test_switch_balance_on_hand_made_events():
    events = pd.DataFrame([
        {"arm": "a", "step": 1, "gd": 6.0, "gd_over_sqrt_lb": 1.2, "old_wl": 20, "old_fl": 12, "down_wl": 16,
         "down_fl": 10, "new_wl": 21, "new_fl": 13},
        {"arm": "a", "step": 2, "gd": 2.0, "gd_over_sqrt_lb": 0.4, "old_wl": 21, "old_fl": 13, "down_wl": 21,
         "down_fl": 13, "new_wl": 22, "new_fl": 14},
    ])
    b = V.switch_balance(events).set_index("arm").loc["a"]
    assert b["switches"] == 2 and b["share_gd_above_e"] == 0.5 and b["gd_over_sqrt_lb"] == pytest.approx(0.8)
    assert (b["push_down_wl"], b["push_up_wl"], b["net_wl"]) == (pytest.approx(-2.0), pytest.approx(3.0), pytest.approx(1.0))
    assert (b["push_down_fl"], b["push_up_fl"]) == (pytest.approx(-1.0), pytest.approx(2.0))


def record(method, acc_per_epoch, seed=0, variant="reference", dataset="mnist5k", policy=None, lr=0.1, epochs=None):
    epochs = [{"epoch": k, "test_acc": a, "val_acc": a, "train_loss": 0.1, "steps": 10 * (k + 1)}
              for k, a in enumerate(acc_per_epoch)]
    name = f"mnist5k/{method}/lenet5/{dataset}"
    cfg = {"name": name, "model": "lenet5", "dataset": dataset, "method": method, "variant": variant, "seed": seed,
           "fold": 0, "profile": "mnist5k", "lr": lr, "scheduler": "step" if method == "adapt" else "plateau",
           "l1_decay": 1e-4 if method == "adapt" else 1e-8, "epochs": epochs or len(acc_per_epoch),
           "policy": policy or {}, "target_accuracy": 0.99}
    return {"schema": "adapt.run/1", "name": name, "status": "completed", "config": cfg, "epochs": epochs,
            "final": {"epochs_run": len(epochs), "final_test_acc": acc_per_epoch[-1], "best_test_acc": max(acc_per_epoch)},
            "traces": {}, "policy": {}}


def test_differences_at_the_final_and_at_equal_epochs():
    f = [record("float32", [0.90, 0.95, 0.96], seed=s) for s in range(3)]
    a = [record("adapt", [0.80, 0.90, 0.97, 0.98], seed=s) for s in range(3)]
    d = V.difference_table(f + a, "adapt (reference)", "float32", epochs=(3,))
    assert d.loc[0, "diff_pp"] == pytest.approx(98 - 96) and d.loc[0, "comparison"].startswith("final epoch (4 vs 3")
    assert d.loc[1, "diff_pp"] == pytest.approx(97 - 96)
    seeds = V.seed_table(f + a).set_index("arm")
    assert seeds.loc["adapt (reference)", "seeds"] == 3 and seeds.loc["float32", "best_acc_pct"] == pytest.approx(96)


def test_the_reading_note_says_how_far_training_got_and_what_a_seed_is_worth():
    f = record("float32", [0.90, 0.91, 0.92, 0.95], lr=0.1)
    a = record("adapt", [0.95, 0.955, 0.956, 0.957], lr=0.1, policy={"normalize_gradients": True})
    text = reading_note([f, a])
    assert "1 of the 2 completed runs still gained more than 1 pp" in text
    assert "every gradient divided by its norm" in text and "step vs plateau schedule" in text
    se = 100 * math.sqrt(0.9 * 0.1 / 1000)
    assert f"about {se:.1f} pp" in text and "1,000 test images" in text


@pytest.mark.parametrize("low, high, expected", [(-2.0, -0.5, "below"), (0.5, 2.0, "above"), (-1.0, 1.0, "contains"),
                                                 (math.nan, math.nan, "no interval")])
def test_interval_reading(low, high, expected):
    assert V.interval_reading(low, high) == expected


def test_arm_table_differences_against_the_baseline_and_the_second_reference(monkeypatch):
    # word length and speedup read from the hand-made records, so that the table's statistics are checked alone
    monkeypatch.setattr(V, "mean_word_length", lambda r: r["wl"])
    monkeypatch.setattr(V, "run_figures", lambda r, variant: {"train_speedup": 64 / (r["wl"] + 32)})
    recs = []
    for arm, accs, wl in (("base", [0.95, 0.96, 0.97], 32), ("mid", [0.90, 0.91, 0.92], 32), ("q", [0.91, 0.92, 0.93], 16)):
        for s, a in enumerate(accs):
            recs.append({**record("adapt", [a], seed=s), "arm": arm, "wl": wl})
    t = V.arm_table(recs, ["q", "mid", "absent"], baseline="base", versus="mid").set_index("arm")
    assert list(t.index) == ["q", "mid"]  # an arm without records is left out
    assert t.loc["q", "test_acc_pct"] == pytest.approx(92) and t.loc["q", "vs_baseline_pp"] == pytest.approx(-4)
    assert t.loc["q", "vs_versus_pp"] == pytest.approx(1)
    d, lo, hi = V.welch_interval([91, 92, 93], [95, 96, 97])
    assert (t.loc["q", "vs_baseline_pp_low"], t.loc["q", "vs_baseline_pp_high"]) == pytest.approx((lo, hi))
    assert t.loc["q", "mean_weight_wl"] == 16 and t.loc["q", "train_speedup"] == pytest.approx(64 / 48)
    assert V.interval_reading(t.loc["q", "vs_baseline_pp_low"], t.loc["q", "vs_baseline_pp_high"]) == "below"
    assert V.interval_reading(t.loc["q", "vs_versus_pp_low"], t.loc["q", "vs_versus_pp_high"]) == "contains"


def test_crosscheck_table_over_seeds():
    runs = [{"arm": "released", "seed": s, "final_test_acc": a, "final_mean_weight_wl": w,
             "median_gd_over_sqrt_lookback": g} for s, (a, w, g) in enumerate([(0.9, 20, 1.0), (0.8, 22, 1.2), (0.7, 24, None)])]
    runs.append({"arm": "reference", "seed": 0, "final_test_acc": 0.95, "final_mean_weight_wl": 21,
                 "median_gd_over_sqrt_lookback": 1.1})
    t = V.crosscheck_table({"runs": runs}).set_index("arm")
    m, lo, hi, n = V.t_interval([90, 80, 70])
    assert t.loc["released", "seeds"] == 3 and t.loc["released", "test_acc_pct"] == pytest.approx(80)
    assert (t.loc["released", "test_acc_pct_low"], t.loc["released", "test_acc_pct_high"]) == pytest.approx((lo, hi))
    assert t.loc["released", "mean_weight_wl"] == 22 and t.loc["released", "median_gd_over_sqrt_lookback"] == pytest.approx(1.1)
    assert t.loc["reference", "seeds"] == 1 and math.isnan(t.loc["reference", "test_acc_pct_low"])


def test_the_why_line_names_each_part_with_its_interval(monkeypatch):
    monkeypatch.setattr(V, "mean_word_length", lambda r: 20.0)
    monkeypatch.setattr(V, "run_figures", lambda r, variant: {"train_speedup": 1.0})
    recs = []
    for arm, accs in (("float32", [0.95, 0.96, 0.97]), ("float32-adapt-optimizer", [0.84, 0.85, 0.86]),
                      ("adapt", [0.84, 0.86, 0.88]), ("adapt-logits", [0.95, 0.96, 0.97])):
        recs += [{**record("adapt", [a], seed=s), "arm": arm} for s, a in enumerate(accs)]
    line = V.why_line(recs)
    d = V.welch_interval([84, 85, 86], [95, 96, 97])
    assert f"is {V.format_interval(*d, 2, True)} pp (below 0) from the float32 baseline" in line
    d = V.welch_interval([84, 86, 88], [84, 85, 86])
    assert f"add {V.format_interval(*d, 2, True)} pp (not separable from 0)" in line
    assert "3 seeds per arm" in line and "returns logits is +0.00" in line
    assert V.why_line([r for r in recs if r["arm"] != "adapt-logits"]) == ""  # an arm missing: no sentence
    assert V.why_line(recs) in V.verdict_block([], [], recs) and "Where the accuracy" not in V.verdict_block([], [])
    # with the grid's float32 LeNet-5 with logits, the logits arms are compared with it
    grid = [record("float32", [a], seed=s, variant="corrected") for s, a in enumerate([0.96, 0.97, 0.98])]
    grid += [record("adapt", [a], seed=s, variant="corrected") for s, a in enumerate([0.97, 0.975, 0.98])]
    line = V.why_line(recs, grid)
    d = V.welch_interval([95, 96, 97], [96, 97, 98])
    assert f"against float32 on that LeNet-5: the reference AdaPT is {V.format_interval(*d, 2, True)} pp" in line
    d = V.welch_interval([97, 97.5, 98], [96, 97, 98])
    assert f"the corrected AdaPT {V.format_interval(*d, 2, True)} pp (not separable from 0)." in line
