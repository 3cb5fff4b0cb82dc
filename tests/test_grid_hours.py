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
    rc = hours.main(["--profile", "smoke", "--device", "cpu", "--match", "smoke/float32/alexnet_cifar",
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
