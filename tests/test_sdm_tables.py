"""The headline table's per-paper averages (v4: CIFAR; SDM: CIFAR + EMNIST + LeNet-5/MNIST) and the
mnist5k results beside the official target accuracies, on the committed mnist5k records."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from adapt.analysis import tables
from adapt.analysis.tables.headline import OFFICIAL_TARGETS, PAPER_CLAIMS, headline_table, target_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def records():
    data = tables.load_profile("mnist5k", ROOT / "results")
    if not data.records:
        pytest.skip("no committed mnist5k records")
    return data.records


def test_target_table_states_the_data_sizes(records):
    t = target_table(records).set_index(["method", "variant"])
    assert t.loc[("adapt", "reference"), "official_target_pct"] == pytest.approx(98.3)
    assert t.loc[("float32", "reference"), "official_target_pct"] == pytest.approx(98.0)
    assert t.loc[("muppet", "reference"), "official_target_pct"] != t.loc[("muppet", "reference"), "official_target_pct"]  # NaN: none
    assert t.loc[("adapt", "reference"), "train_images"] == 3600  # 9/10 of 4,000
    assert t.loc[("muppet", "reference"), "train_images"] == 3200  # 80 % of 4,000
    assert OFFICIAL_TARGETS[("lenet5", "mnist")]["train_images"] == 54_000
    assert (t["official_train_images"] == 54_000).all()
    row = t.loc[("adapt", "reference")]
    assert row["diff_best_pp"] == pytest.approx(row["acc_best_pct"] - 98.3)


def test_headline_averages_each_papers_set(records):
    head = headline_table(records).set_index("metric")
    # mnist5k is in neither paper's set
    assert (head["pairs_v4"] == 0).all() and (head["pairs_sdm"] == 0).all() and head["this_run_sdm"].isna().all()
    # no AdaPT run reaches mnist5k's target: no iso-accuracy speedup (n/a), every other metric from the one pair
    assert (head["pairs"].drop("train_speedup_iso") == 1).all() and head.loc["train_speedup_iso", "pairs"] == 0
    # the same records relabelled as LeNet-5/MNIST enter the SDM average, not the v4 one
    relabelled = copy.deepcopy(records)
    for r in relabelled:
        r["config"]["dataset"] = "mnist"
    h = headline_table(relabelled).set_index("metric")  # (no profile filter: the run ids say mnist5k)
    assert (h["pairs_sdm"].drop("train_speedup_iso") == 1).all() and (h["pairs_v4"] == 0).all()
    assert h.loc["train_speedup", "this_run_sdm"] == pytest.approx(h.loc["train_speedup", "this_run"])
    assert math.isnan(h.loc["train_speedup", "this_run_v4"])
    assert ("lenet5", "mnist") in PAPER_CLAIMS["sdm"]["pairs"] and ("lenet5", "mnist") not in PAPER_CLAIMS["v4"]["pairs"]
    assert set(PAPER_CLAIMS["v4"]["pairs"]) < set(PAPER_CLAIMS["sdm"]["pairs"])
