"""The training loop (adapt.train), configs (adapt.experiments.configs) and run records (adapt.records)."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from adapt import records as results
from adapt.experiments.configs import CONFIGS, config_names, get_config
from adapt.config import ExperimentConfig
from adapt.data.loader import DeviceLoader
from adapt.models import build_model
from adapt.analysis.tables import runs_frame
from adapt.train import evaluate, pick_device, prepare_data, run

# Small and fast: digits, 2 epochs, float32 or fixed 8/4.
TINY = dict(epochs=2, batch_size=64, eval_batch_size=500)


def tiny(name, **changes):
    return get_config(name, **{**TINY, **changes})


def metrics(record):
    """Per-epoch numbers without wall-clock times."""
    return [{k: v for k, v in e.items() if k != "time_s"} for e in record["epochs"]]


def test_float32_path_is_bit_identical_to_a_plain_training_loop():
    """The loop with the float32 policy equals a hand-written SGD loop over the same batches."""
    cfg = tiny("smoke/float32/alexnet_cifar/digits", scheduler="none", l1_decay=1e-4, accumulation_steps=2)
    record = run(cfg, device="cpu")
    train, val, test, classes = prepare_data(cfg, "cpu")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, classes, cfg.init)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = DeviceLoader(train, cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed)
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        batches = list(loader)
        for i, (x, y) in enumerate(batches):
            if i % 2 == 0:
                opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y) + 1e-4 * sum(p.abs().sum() for p in model.parameters())
            (loss / 2).backward()
            if i % 2 == 1 or i == len(batches) - 1:
                opt.step()
    test_loss, test_acc = evaluate(model, test, 500)
    assert record["epochs"][-1]["test_loss"] == test_loss
    assert record["epochs"][-1]["test_acc"] == test_acc


def test_same_seed_same_record_and_seed_matters():
    cfg = tiny("smoke/fixed/alexnet_cifar/digits")
    a, b = run(cfg, device="cpu"), run(cfg, device="cpu")
    assert metrics(a) == metrics(b)
    assert a["traces"] == b["traces"]
    c = run(cfg.replace(seed=1), device="cpu")
    assert metrics(c) != metrics(a)


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    cfg = tiny("smoke/fixed/resnet20/digits", epochs=3, scheduler="plateau", plateau_patience=1, subset=400)
    whole = run(cfg, out_dir=tmp_path / "whole", device="cpu")
    part = run(cfg, out_dir=tmp_path / "cut", device="cpu", epoch_limit=1)
    assert part["status"] == "interrupted" and len(part["epochs"]) == 1
    on_disk = results.load_record(tmp_path / "cut" / "record.json")
    assert on_disk["status"] == "interrupted"
    assert (tmp_path / "cut" / "checkpoint.pt").exists()
    # the checkpoint holds only plain data: it loads with weights_only=True
    torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    resumed = run(cfg, out_dir=tmp_path / "cut", device="cpu")
    assert resumed["status"] == "completed"
    assert metrics(resumed) == metrics(whole)
    assert resumed["traces"] == whole["traces"]
    # a finished run is not recomputed
    again = run(cfg, out_dir=tmp_path / "cut", device="cpu")
    assert again["finished"] == resumed["finished"]
    # a different config in the same place is refused
    with pytest.raises(ValueError, match="another config"):
        run(cfg.replace(seed=5), out_dir=tmp_path / "cut", device="cpu")


def test_divergence_is_recorded(tmp_path):
    cfg = tiny("smoke/float32/alexnet_cifar/digits", lr=1e12, momentum=0.0, scheduler="none", epochs=3)
    record = run(cfg, out_dir=tmp_path, device="cpu")
    assert record["status"] == "diverged"
    assert "non-finite" in record["message"]
    assert results.load_record(tmp_path / "record.json")["status"] == "diverged"


def test_failure_is_recorded_then_raised(tmp_path, monkeypatch):
    import adapt.train as train_module

    cfg = tiny("smoke/float32/alexnet_cifar/digits", epochs=1)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(train_module, "evaluate", broken)
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg, out_dir=tmp_path, device="cpu")
    record = results.load_record(tmp_path / "record.json")
    assert record["status"] == "failed" and "boom" in record["message"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["alexnet_cifar", "resnet20"])
def test_float32_smoke_run_learns_digits(model):
    """Chance is 0.10 on 10 balanced classes; the smoke profile reaches > 0.8 on these seeds.
    The bar 0.5 is five times chance and far below what the runs reach, so it does not flake,
    yet a broken loop (no learning, wrong labels, lost gradients) cannot pass it."""
    record = run(get_config(f"smoke/float32/{model}/digits"), device="cpu")
    assert record["status"] == "completed"
    assert record["final"]["final_test_acc"] > 0.5
    assert record["environment"]["torch"] == torch.__version__


def test_record_layout_and_json(tmp_path):
    cfg = tiny("smoke/fixed/alexnet_cifar/digits", epochs=1)
    record = run(cfg, out_dir=tmp_path, device="cpu")
    on_disk = json.loads((tmp_path / "record.json").read_text())
    assert on_disk["schema"] == results.SCHEMA
    assert on_disk["config"] == cfg.to_dict()
    assert ExperimentConfig.from_dict(on_disk["config"]) == cfg
    assert set(on_disk["epochs"][0]) >= {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                                         "test_loss", "test_acc", "time_s"}
    assert on_disk["traces"]["tensors"]["names"][0] == "features.conv1.weight"
    frame = runs_frame([on_disk])
    assert frame.loc[0, "test_acc_pct"] == 100 * record["final"]["final_test_acc"]


def test_atomic_write_leaves_old_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    results.atomic_write_json(path, {"a": 1})

    def crash(fd):
        raise OSError("disk died mid-write")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="mid-write"):
        results.atomic_write_json(path, {"a": 2, "big": list(range(1000))})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind
    with pytest.raises(OSError):
        results.atomic_save({"x": torch.zeros(3)}, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_non_finite_numbers_survive_json(tmp_path):
    results.atomic_write_json(tmp_path / "x.json", {"v": [float("nan"), float("inf"), 1.5]})
    assert json.loads((tmp_path / "x.json").read_text())["v"] == ["nan", "inf", 1.5]


def test_load_record_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not an adapt run record"):
        results.load_record(tmp_path / "x.json")


def test_config_registry_and_errors():
    assert set(config_names("smoke")) <= set(CONFIGS)
    with pytest.raises(ValueError, match="valid names: .*smoke/float32/alexnet_cifar/digits"):
        get_config("smoke/nope")
    with pytest.raises(ValueError, match="'epochs'"):
        get_config("smoke/float32/alexnet_cifar/digits", epochs=0)
    with pytest.raises(ValueError, match="unknown config field"):
        get_config("smoke/float32/alexnet_cifar/digits", epoch=3)
    with pytest.raises(ValueError, match="'method'"):
        ExperimentConfig(method="sgd")
    with pytest.raises(ValueError, match="'fold'"):
        ExperimentConfig(fold=10, n_folds=10)
    with pytest.raises(ValueError, match="'lr'"):
        ExperimentConfig(lr=-1)
    with pytest.raises(TypeError, match="ExperimentConfig"):
        run({"name": "x"})


def test_official_hyperparameters_in_registry():
    """Values from docs/method.md §1.6 (AdaPT) and §2.3 (MuPPET)."""
    a = get_config("paper/adapt/alexnet_cifar/cifar10")
    assert (a.epochs, a.batch_size, a.accumulation_steps, a.lr, a.momentum) == (100, 512, 4, 0.1, 0.9)
    assert (a.weight_decay, a.l1_decay, a.scheduler, a.plateau_patience, a.plateau_threshold) == (1e-8, 1e-4, "plateau", 10, 1e-6)
    assert (a.protocol, a.n_folds, a.target_accuracy) == ("kfold", 10, 0.731)
    assert a.policy["results_buffer"] == 4 and a.policy["lookback_momentum"] == 0.33
    assert get_config("paper/adapt/resnet20/cifar100").accumulation_steps == 2
    assert get_config("paper/adapt/alexnet_cifar/cifar100").policy["max_lookback"] == 150
    m = get_config("paper/muppet/resnet20/cifar10")
    assert (m.epochs, m.batch_size, m.lr, m.weight_decay, m.protocol, m.val_fraction) == (150, 128, 0.1, 1e-4, "holdout", 0.2)
    assert list(m.policy["schedule"]) == [8, 12, 14, 16, 32] and m.policy["min_lr"] == 1e-3
    b = get_config("paper/float32-muppet/alexnet_cifar/cifar10")
    assert (b.scheduler, b.step_milestones, b.lr) == ("step", (50, 100), 0.01)


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
