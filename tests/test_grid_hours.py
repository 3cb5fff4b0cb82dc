"""benchmarks/grid_hours.py: the device-hours estimate of a grid counts every point once and times
epochs on data of the real shapes (the GPU measurement itself needs a GPU; here a CPU dry run)."""
from __future__ import annotations

import json
import re

import pytest

from adapt.experiments.configs import PROFILES
from adapt.data.base import DATASETS
from adapt.data.datasets import load_dataset
from adapt.experiments.grid import grid
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def hours():
    return load_benchmark("grid_hours")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_grid_point_is_counted_once(hours, profile):
    configs = hours.distinct_configs(profile)
    assert sum(runs for _, runs, _ in configs) == len(grid(profile))
    names = [(config.name, point.variant) for config, _, point in configs]
    assert len(names) == len(set(names))


def test_shapes_agree_with_the_data_registry(hours):
    for name, (n_train, n_test, channels, classes) in hours.SHAPES.items():
        assert DATASETS[name].num_classes == classes
        # The descriptions state the sizes ("50,000 train / 10,000 test").
        text = DATASETS[name].description.replace(",", "")
        assert f"{n_train} train / {n_test} test" in text, name
    train, test = load_dataset("digits")  # an offline one: compare with the real tensors
    assert (len(train), len(test), train.images.shape[1]) == hours.SHAPES["digits"][:3]


def test_random_data_is_balanced_and_shaped(hours):
    train, test = hours.random_dataset("emnist", max_train=940)
    assert tuple(train.images.shape) == (940, 1, 32, 32)
    counts = train.class_counts()
    assert int(counts.max()) - int(counts.min()) <= 1


def test_a_cpu_dry_run_prints_the_table_and_writes_json(hours, tmp_path, capsys):
    out = tmp_path / "h.json"
    rc = hours.main(["--profile", "smoke", "--device", "cpu", "--match", "smoke/float32/alexnet_cifar", "--epochs", "1",
                     "--max-train", "200", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    row, = data["rows"]
    assert row["runs"] == 2 and data["estimated"] is True  # seeds 0 and 1
    assert row["hours"] == pytest.approx(row["epoch_s"] * row["epochs"] * 2 / 3600)
    assert row["epoch_s"] == pytest.approx(row["epoch_s_measured"] * row["train_images_full"] / row["train_images_timed"])
    assert re.search(r"\| smoke/float32/alexnet_cifar/digits \| reference \| 2 \|", text)


def test_no_match_is_an_error(hours, capsys):
    assert hours.main(["--profile", "smoke", "--device", "cpu", "--match", "no-such-config"]) == 2
    assert "no-such-config" in capsys.readouterr().err


def test_the_sizes_splits_give_the_protocols_sizes_without_scikit_learn(hours):
    from sklearn.model_selection import StratifiedKFold, train_test_split

    train, _ = hours.random_dataset("cifar100", max_train=3_000)
    y = train.labels.numpy()
    for fold in (0, 3, 9):
        tr, va = hours.kfold_sizes_split(y, n_splits=10, fold=fold)
        assert sorted(tr.tolist() + va.tolist()) == list(range(len(y)))  # a partition
        ref_tr, ref_va = list(StratifiedKFold(10, shuffle=True, random_state=0).split(y, y))[fold]
        assert abs(len(va) - len(ref_va)) <= 100  # within one image per class of the stratified fold
    tr, va = hours.holdout_sizes_split(y, val_fraction=0.2)
    ref_tr, ref_va = train_test_split(y, test_size=0.2, stratify=y, random_state=0)
    assert (len(tr), len(va)) == (len(ref_tr), len(ref_va))


def test_epochs_after_the_first_are_timed_and_switches_inside_them_counted(hours, monkeypatch):
    """Hand-made record: epoch times 9, 2 and 4 s, 10 steps per epoch, AdaPT switches at steps 4, 10 and 25:
    the epoch takes (2 + 4) / 2 = 3 s and two switches fall in the timed epochs (steps 10..29)."""
    from adapt.experiments.configs import get_config

    seen = {}

    def fake_run(config, out_dir=None, device=None, epoch_limit=None, resume=True):
        seen["epoch_limit"] = epoch_limit
        epochs = [{"time_s": t, "steps": 10 * (k + 1)} for k, t in enumerate((9.0, 2.0, 4.0))][:epoch_limit]
        return {"status": "interrupted", "epochs": epochs,
                "traces": {"switches": [{"step": s} for s in (4, 10, 25)]}}

    monkeypatch.setattr(hours.train, "run", fake_run)
    config = get_config("smoke/adapt/alexnet_cifar/digits")
    t = hours.time_epochs(config, "cpu", epochs=3)
    assert seen["epoch_limit"] == 3
    assert (t["epoch_s_measured"], t["epochs_timed"], t["steps_per_epoch"], t["switches_timed"]) == (3.0, 2, 10, 2)
    assert t["first_epoch_s"] == 9.0 and t["epoch_s"] == 3.0  # the full data set: no scaling
    one = hours.time_epochs(config, "cpu", epochs=1)  # a single epoch is timed itself, every switch in it
    assert (one["epoch_s_measured"], one["switches_timed"]) == (9.0, 3)
    assert hours.time_epochs(get_config("smoke/float32/alexnet_cifar/digits"), "cpu")["switches_timed"] is None


def test_a_spent_time_budget_leaves_an_incomplete_table_and_exit_3(hours, monkeypatch, tmp_path, capsys):
    import time as time_module

    def slow(config, device, max_train=None, epochs=2):
        time_module.sleep(0.2)
        return {"epoch_s_measured": 1.0, "epochs_run": 2, "epochs_timed": 1, "steps_per_epoch": 3, "switches_timed": None,
                "first_epoch_s": 2.0, "train_images_timed": 10, "train_images_full": 10, "epoch_s": 1.0}

    monkeypatch.setattr(hours, "time_epochs", slow)
    out = tmp_path / "h.json"
    rc = hours.main(["--profile", "smoke", "--device", "cpu", "--match", r"^smoke/float32/", "--time-budget", "0.1",
                     "--json", str(out)])
    assert rc == 3
    data = json.loads(out.read_text())
    assert data["complete"] is False and len(data["rows"]) == 1 and data["configurations"] == 2
    assert "INCOMPLETE: 1 of 2 configurations" in capsys.readouterr().out
