"""One owner per decision: the method, model and data set registries, and the state of a run folder."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from adapt import methods, models, train
from adapt.config import ExperimentConfig, allowed_values
from adapt.data import base as data_base
from adapt.data.base import DatasetInfo, ImageDataset
from adapt.data.datasets import _REGISTERED, load_dataset, register_dataset
from adapt.experiments.configs import get_config
from adapt.policies import FixedPrecisionPolicy, Float32Policy, PrecisionPolicy
from adapt.records import (CHECKPOINT, COMPLETED, FAILED, FINISHED, INTERRUPTED, RECORD, RUNNING, STATUSES,
                           atomic_write_json, run_state)

FLOAT = "smoke/float32/alexnet_cifar/digits"


class HalfPolicy(FixedPrecisionPolicy):
    """A made-up method: the fixed policy at one format, with one option of its own."""

    name = "half"

    def __init__(self, word_length: int = 8, log_interval: int = 10):
        super().__init__(word_length, word_length // 2, log_interval=log_interval)


@pytest.fixture
def registered():
    """Register HalfPolicy as ``half`` for one test, and take it out again."""
    methods.register_method("half", HalfPolicy)
    yield
    methods.METHODS.pop("half", None)


def test_the_built_in_methods_are_registered():
    assert {k: v.__name__ for k, v in methods.METHODS.items()} == {
        "float32": "Float32Policy", "fixed": "FixedPrecisionPolicy", "adapt": "AdaptPolicy", "muppet": "MuppetPolicy"}
    assert allowed_values()["method"] == tuple(methods.METHODS)
    assert isinstance(methods.make_policy(get_config(FLOAT)), Float32Policy)


def test_a_registered_method_validates_takes_its_options_and_trains(registered, tmp_path):
    assert allowed_values()["policy"]["half"] == ("word_length", "log_interval")
    config = get_config(FLOAT, method="half", policy={"word_length": 6}, epochs=1, subset=200, batch_size=50)
    policy = methods.make_policy(config)
    assert isinstance(policy, HalfPolicy) and (policy.format.word_length, policy.format.fractional_length) == (6, 3)
    record = train.run(config, out_dir=tmp_path, device="cpu")
    assert record["status"] == COMPLETED and record["config"]["method"] == "half"
    assert set(record["traces"]["tensors"]["word_length"][0]) == {6}
    with pytest.raises(ValueError, match="unknown option 'fractional_length'"):
        get_config(FLOAT, method="half", policy={"fractional_length": 3})


def test_unknown_and_taken_method_names_are_refused(registered):
    with pytest.raises(ValueError, match="config field 'method' must be one of .*'half'"):
        get_config(FLOAT, method="halves")
    with pytest.raises(ValueError, match="unknown method 'halff' .did you mean 'half'"):
        methods.policy_class("halff")
    with pytest.raises(ValueError, match="registered already"):
        methods.register_method("half", FixedPrecisionPolicy)
    methods.register_method("half", HalfPolicy)  # the same class again is no change
    with pytest.raises(ValueError, match="without '/'"):
        methods.register_method("a/b", HalfPolicy)
    with pytest.raises(TypeError, match="PrecisionPolicy"):
        methods.register_method("plain", object)


def test_a_policy_object_trains_without_registration(tmp_path):
    config = get_config(FLOAT, epochs=1, subset=200, batch_size=50)
    record = train.run(config, out_dir=tmp_path, device="cpu", policy=HalfPolicy(word_length=4))
    assert record["policy_class"] == "test_registries.HalfPolicy" or record["policy_class"].endswith(".HalfPolicy")
    assert set(record["traces"]["tensors"]["word_length"][0]) == {4}


def test_option_values_are_checked_when_the_config_is_made():
    with pytest.raises(ValueError, match=r"min_lookback \(1000\) must be <= max_lookback"):
        get_config("smoke/adapt/alexnet_cifar/digits", policy={"min_lookback": 1000})
    with pytest.raises(ValueError, match="push_up_strategy must be one of"):
        get_config("smoke/adapt/alexnet_cifar/digits", policy={"push_up_strategy": "bogus"})


def test_a_registered_model_and_data_set_train(tmp_path):
    class Tiny(nn.Module):
        def __init__(self, num_classes=2, init="paper"):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = nn.AvgPool2d(8)
            self.fc = nn.Linear(4, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.conv(x)), 1))

    def load(seed):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(64) % 2
        images = (torch.rand(64, 1, 8, 8, generator=g) * 100).to(torch.uint8) + (labels * 120).to(torch.uint8).view(-1, 1, 1, 1)
        ds = ImageDataset(images, labels, ["dark", "bright"], "twotone")
        return ds, ds.subset(torch.arange(32).numpy())

    models.register_model("tiny_twotone", Tiny)
    register_dataset(DatasetInfo("twotone", 2, True, "test data"), load, normalization=((0.5,), (0.25,)))
    try:
        with pytest.raises(ValueError, match="registered already"):
            register_dataset(DatasetInfo("twotone", 2, True, "again"), load)
        with pytest.raises(ValueError, match="registered already"):
            models.register_model("tiny_twotone", lambda **kw: Tiny())
        train_ds, test_ds = load_dataset("twotone", seed=3)
        assert len(train_ds) == 64 and len(test_ds) == 32
        config = ExperimentConfig(name="custom/float32/tiny_twotone/twotone", model="tiny_twotone", dataset="twotone",
                                  method="float32", epochs=2, batch_size=16, lr=0.1, protocol="holdout", augment=False)
        record = train.run(config, out_dir=tmp_path, device="cpu")
        assert record["status"] == COMPLETED and record["final"]["final_test_acc"] > 0.9
    finally:
        models.MODELS.pop("tiny_twotone", None)
        data_base.DATASETS.pop("twotone", None)
        data_base.NORMALIZATION.pop("twotone", None)
        _REGISTERED.pop("twotone", None)


# ----------------------------------------------------------------------------- the state of a run folder
def write(folder, status, config, epochs=1, checkpoint=False):
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / RECORD, {"schema": "adapt.run/1", "status": status, "config": config,
                                        "epochs": [{"epoch": k} for k in range(epochs)]})
    if checkpoint:
        (folder / CHECKPOINT).write_bytes(b"x")


def test_run_state_decides_every_case(tmp_path):
    cfg = get_config(FLOAT).to_dict()
    other = get_config(FLOAT, seed=7).to_dict()
    assert run_state(tmp_path / "none", cfg).kind == "new"
    cases = {
        "done": (COMPLETED, cfg, False, "finished"),
        "diverged": ("diverged", cfg, True, "finished"),
        "killed": (RUNNING, cfg, True, "resumable"),
        "cut": (INTERRUPTED, cfg, True, "resumable"),
        "failed-early": (FAILED, cfg, False, "restart"),
        "other": (COMPLETED, other, True, "stale"),
    }
    for name, (status, config, ckpt, kind) in cases.items():
        write(tmp_path / name, status, config, checkpoint=ckpt)
        state = run_state(tmp_path / name, cfg)
        assert state.kind == kind, name
        assert state.status == status
    assert run_state(tmp_path / "other", None).kind == "finished"  # any config
    (tmp_path / "only-ckpt").mkdir()
    (tmp_path / "only-ckpt" / CHECKPOINT).write_bytes(b"x")
    assert run_state(tmp_path / "only-ckpt", cfg).kind == "resumable"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / RECORD).write_text('{"schema": "adapt.run/1", "status": "comp')
    bad = run_state(tmp_path / "bad", cfg)
    assert bad.kind == "corrupt" and "not valid JSON" in bad.message
    assert (tmp_path / "bad" / RECORD).exists()  # read only: nothing set aside
    # a tuple in the config compares equal to the list a record holds
    assert run_state(tmp_path / "done", json.loads(json.dumps(cfg))).kind == "finished"


def test_the_status_words_are_defined_once():
    assert set(FINISHED) < set(STATUSES) and len(set(STATUSES)) == 5
    from adapt.analysis.tables import STATUSES as table_order
    assert set(table_order) == set(STATUSES)


def test_the_base_policy_reads_its_options_from_the_constructor():
    class P(PrecisionPolicy):
        config_fields = ("seed",)

        def __init__(self, a=1, b="x", seed=0, **kwargs):
            self.a, self.b, self.seed = a, b, seed

    assert P.option_names() == ("a", "b")
    p = P.from_config(get_config(FLOAT, seed=4).replace(policy={}))
    assert (p.a, p.b, p.seed) == (1, "x", 4)


# ----------------------------------------------------------------------------- the decomposition's options
def test_float32_with_normalized_gradients_takes_unit_steps(tmp_path):
    """Float32Policy(normalize_gradients=True): every gradient divided by its norm before plain SGD."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    policy = Float32Policy(normalize_gradients=True)
    policy.setup(model, None, get_config(FLOAT))
    model(torch.randn(5, 4)).square().sum().backward()
    raw = [p.grad.clone() for p in model.parameters()]
    policy.before_step(0, 1.0)
    for g, p in zip(raw, model.parameters()):
        assert torch.allclose(p.grad, g / g.norm()) and p.grad.norm().item() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="normalize_gradients must be True or False"):
        Float32Policy(normalize_gradients="yes")


def test_adapt_without_switching_keeps_its_initial_formats(tmp_path):
    base = get_config("smoke/adapt/alexnet_cifar/digits", epochs=1, subset=300, batch_size=32)
    base = base.replace(policy={**base.policy, "min_lookback": 2, "max_lookback": 4})  # switches within the epoch
    frozen = base.replace(policy={**base.policy, "switching": False, "initial_word_length": 16,
                                  "initial_fractional_length": 8})
    record = train.run(frozen, out_dir=tmp_path / "frozen", device="cpu")
    assert record["traces"]["switches"] == [] and record["policy"]["switching"] is False
    assert set(map(tuple, record["policy"]["final_formats"].values())) == {(16, 8)}
    wl = record["traces"]["tensors"]["word_length"]
    assert all(set(row) == {16} for row in wl)
    switching = train.run(base, out_dir=tmp_path / "switching", device="cpu")
    assert switching["traces"]["switches"], "the same run with switching makes switches"


def test_adapt_starts_at_the_given_formats_per_tensor(tmp_path):
    base = get_config("smoke/adapt/alexnet_cifar/digits", epochs=1, subset=300, batch_size=32)
    probe = train.run(base.replace(policy={**base.policy, "switching": False}), out_dir=tmp_path / "probe",
                      device="cpu")
    names = list(probe["policy"]["final_formats"])
    formats = {}
    for k, n in enumerate(names):  # a bias takes the format of the weight before it (bias_format="preceding")
        formats[n] = list(formats[names[k - 1]]) if n.endswith(".bias") else [10 + k % 5, 4 + k % 3]
    held = base.replace(policy={**base.policy, "switching": False, "initial_formats": formats})
    record = train.run(held, out_dir=tmp_path / "held", device="cpu")
    assert record["policy"]["final_formats"] == formats
    assert record["traces"]["tensors"]["word_length"][-1] == [formats[n][0] for n in names]
    with pytest.raises(ValueError, match="initial_formats must name every parameter tensor"):
        train.run(base.replace(policy={**base.policy, "initial_formats": {names[0]: [8, 4]}}),
                  out_dir=tmp_path / "partial", device="cpu")


def test_decomposition_points_change_one_thing_per_arm(tmp_path):
    from adapt.experiments import decomposition as D

    with pytest.raises(ValueError, match="arm held-final needs the finished reference AdaPT run of seed 0"):
        D.decomposition_points(labels=["held-final"], grid_root=tmp_path)
    assert D.decomposition_points(labels=["held-final"], grid_root=tmp_path, missing="skip") == []
    with pytest.raises(ValueError, match=r"arms \['nope'\] are not arms"):
        D.decomposition_points(labels=["nope"], grid_root=tmp_path)
    pts = D.decomposition_points(seeds=(0, 3), grid_root=tmp_path, missing="skip")
    by = {(a.label, p.seed): p for a, p in pts}
    base = by[("adapt", 0)].config()
    assert by[("adapt", 0)].run_id == "adapt-lenet5-mnist5k-reference-s0-f0"  # the grid's own point
    assert base.softmax_output and base.in_place_inputs  # the released model and layers
    diff = lambda label: {k: v for k, v in by[(label, 0)].config().to_dict().items() if base.to_dict()[k] != v}
    assert diff("adapt-logits") == {"softmax_output": False}
    assert diff("adapt-no-in-place") == {"in_place_inputs": False}
    assert diff("max_lookback=50") == {"policy": {**base.policy, "max_lookback": 50}}
    assert diff("fixed-16/8") == {"policy": {**base.policy, "switching": False, "initial_word_length": 16,
                                             "initial_fractional_length": 8}}
    opt = by[("float32-adapt-optimizer", 3)].config()
    assert (opt.method, opt.policy, opt.in_place_inputs, opt.seed) == ("float32", {"normalize_gradients": True}, False, 3)
    assert (opt.lr, opt.epochs, opt.l1_decay) == (base.lr, base.epochs, base.l1_decay)  # AdaPT's optimizer, no quantization
    assert len({p.run_id for _, p in pts}) == len(pts)
