"""Tests for adapt.experiments.configs: every field validated at construction (through get_config and
ExperimentConfig), the allowed names read from the code that consumes them, and the
registry's round trip through JSON."""
from __future__ import annotations

import inspect
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapt.experiments.configs import CONFIGS, get_config
from adapt.config import ExperimentConfig, allowed_values

ADAPT = "smoke/adapt/alexnet_cifar/digits"
MUPPET = "smoke/muppet/alexnet_cifar/digits"
FIXED = "smoke/fixed/alexnet_cifar/digits"
FLOAT = "smoke/float32/alexnet_cifar/digits"

# (config name, overrides, the field the message must name, what the message must contain)
BAD = [
    (ADAPT, dict(model="vgg16"), "model", ["'vgg16'", "alexnet_cifar", "resnet20"]),
    (ADAPT, dict(dataset="svhn"), "dataset", ["'svhn'", "cifar10", "digits", "mnist5k"]),
    (ADAPT, dict(policy={"bogus": 1}), "policy", ["{'bogus': 1}", "unknown option 'bogus'", "min_lookback"]),
    (MUPPET, dict(policy={"bogus": 1}), "policy", ["{'bogus': 1}", "unknown option 'bogus'", "fp32_epochs_per_lr"]),
    (FIXED, dict(policy={"bogus": 1}), "policy", ["{'bogus': 1}", "'bogus'", "word_length"]),
    (FLOAT, dict(policy={"bogus": 1}), "policy", ["{'bogus': 1}", "unknown option 'bogus'", "normalize_gradients"]),
    (ADAPT, dict(policy={"seed": 1}), "policy", ["'seed'"]),  # from_config passes config.seed itself
    (ADAPT, dict(policy={"variant": "corrected"}), "policy", ["'variant'"]),
    (ADAPT, dict(policy={1: 2}), "policy", ["{1: 2}", "strings"]),
    (ADAPT, dict(policy=[("min_lookback", 3)]), "policy", ["[('min_lookback', 3)]", "dict"]),
    (MUPPET, dict(policy={"min_lr": object()}), "policy", ["min_lr", "JSON"]),
    (ADAPT, dict(momentum=5.0), "momentum", ["5.0", "[0, 1)"]),
    (ADAPT, dict(momentum=1.0), "momentum", ["1.0", "[0, 1)"]),
    (ADAPT, dict(momentum=-0.1), "momentum", ["-0.1"]),
    (ADAPT, dict(lr=float("inf")), "lr", ["inf", "finite"]),
    (ADAPT, dict(lr=float("nan")), "lr", ["nan"]),
    (ADAPT, dict(lr=0), "lr", ["got 0", "> 0"]),
    (ADAPT, dict(lr="0.1"), "lr", ["'0.1'"]),
    (ADAPT, dict(lr=True), "lr", ["True"]),
    (ADAPT, dict(weight_decay=-1e-4), "weight_decay", ["-0.0001", ">= 0"]),
    (ADAPT, dict(weight_decay=float("inf")), "weight_decay", ["inf"]),
    (ADAPT, dict(l1_decay=-1.0), "l1_decay", ["-1.0", ">= 0"]),
    (ADAPT, dict(plateau_threshold=float("-inf")), "plateau_threshold", ["-inf"]),
    (ADAPT, dict(plateau_factor=1.0), "plateau_factor", ["1.0", "(0, 1)"]),
    (ADAPT, dict(step_gamma=float("nan")), "step_gamma", ["nan"]),
    (ADAPT, dict(val_fraction="0.2"), "val_fraction", ["'0.2'"]),
    (ADAPT, dict(target_accuracy=float("nan")), "target_accuracy", ["nan"]),
    (ADAPT, dict(target_accuracy=1.5), "target_accuracy", ["1.5", "(0, 1]"]),
    (ADAPT, dict(seed=-3), "seed", ["-3", "[0, 4294967295]"]),
    (ADAPT, dict(seed=2**32), "seed", ["4294967296", "[0, 4294967295]"]),  # sklearn's splits take no more
    (ADAPT, dict(seed="0"), "seed", ["'0'"]),
    (ADAPT, dict(seed=1.0), "seed", ["1.0"]),
    (ADAPT, dict(seed=True), "seed", ["True"]),
    (ADAPT, dict(epochs=0), "epochs", ["got 0", "positive integer"]),
    (ADAPT, dict(epochs=2.5), "epochs", ["2.5"]),
    (ADAPT, dict(batch_size="32"), "batch_size", ["'32'"]),
    (ADAPT, dict(eval_batch_size=False), "eval_batch_size", ["False"]),
    (ADAPT, dict(accumulation_steps=0), "accumulation_steps", ["got 0"]),
    (ADAPT, dict(n_folds=1), "n_folds", ["got 1", "'kfold'"]),
    (ADAPT, dict(fold=True), "fold", ["True"]),
    (ADAPT, dict(subset=0), "subset", ["got 0"]),
    (ADAPT, dict(test_subset="100"), "test_subset", ["'100'"]),
    (ADAPT, dict(nesterov=1), "nesterov", ["got 1", "bool"]),
    (ADAPT, dict(nesterov=True, momentum=0.0), "nesterov", ["True", "momentum 0.0"]),
    (ADAPT, dict(augment="yes"), "augment", ["'yes'", "bool"]),
    (ADAPT, dict(step_milestones=(100, 50)), "step_milestones", ["(100, 50)", "non-decreasing"]),
    (ADAPT, dict(step_milestones=(0, 5)), "step_milestones", ["(0, 5)", ">= 1"]),
    (ADAPT, dict(step_milestones=50), "step_milestones", ["got 50"]),
    (ADAPT, dict(step_milestones=(5.0,)), "step_milestones", ["(5.0,)"]),
    (ADAPT, dict(name=None), "name", ["None", "string"]),
    (ADAPT, dict(name=""), "name", ["''"]),
    (ADAPT, dict(profile=3), "profile", ["got 3"]),
    (ADAPT, dict(variant="fixed"), "variant", ["'fixed'", "reference"]),
    (ADAPT, dict(init="xavier"), "init", ["'xavier'", "paper"]),
    (ADAPT, dict(method="sgd"), "method", ["'sgd'", "muppet"]),
    (ADAPT, dict(model=["resnet20"]), "model", ["['resnet20']"]),
]


def _ids(case):
    return f"{case[2]}={case[1][case[2]] if case[2] in case[1] else case[1]!r}"


@pytest.mark.parametrize("name,overrides,field_name,parts", BAD, ids=[_ids(c) for c in BAD])
def test_bad_value_rejected_through_get_config(name, overrides, field_name, parts):
    with pytest.raises(ValueError) as err:
        if "name" in overrides:  # get_config's own first parameter: replace() sets the field
            get_config(name).replace(**overrides)
        else:
            get_config(name, **overrides)
    msg = str(err.value)
    assert msg.startswith(f"config field {field_name!r} must be "), msg
    for part in parts:
        assert part in msg, (part, msg)


@pytest.mark.parametrize("name,overrides,field_name,parts", BAD, ids=[_ids(c) for c in BAD])
def test_bad_value_rejected_through_the_constructor(name, overrides, field_name, parts):
    fields = {**CONFIGS[name].__dict__, **overrides}
    with pytest.raises(ValueError) as err:
        ExperimentConfig(**fields)
    msg = str(err.value)
    assert f"config field {field_name!r}" in msg
    for part in parts:
        assert part in msg, (part, msg)


def test_close_match_is_suggested_and_allowed_keys_listed():
    with pytest.raises(ValueError) as err:
        get_config(ADAPT, policy={"min_lookbak": 3, "zzz": 1})
    msg = str(err.value)
    assert "unknown options 'min_lookbak' (did you mean 'min_lookback'?), 'zzz'" in msg
    assert msg.endswith("'zzz'")  # no suggestion for a key close to nothing
    for key in allowed_values()["policy"]["adapt"]:
        assert key in msg
    with pytest.raises(ValueError, match=r"'shedule' \(did you mean 'schedule'\?\)"):
        ExperimentConfig(method="muppet", policy={"shedule": [8, 32]})


def test_valid_policy_options_of_each_method_are_accepted():
    assert get_config(ADAPT, policy={"kl": "corrected", "switch_at": "epoch", "fl_floor": 2}).policy["fl_floor"] == 2
    assert get_config(FIXED, policy={"bits": 8}).policy == {"bits": 8}
    assert get_config(MUPPET, policy={"static_schedule": "adapt-paper-alexnet"}).policy
    assert ExperimentConfig(method="float32", policy={}).policy == {}
    assert get_config(ADAPT, dataset="synthetic", model="resnet20").dataset == "synthetic"  # benchmarks use it
    assert get_config(ADAPT, step_milestones=[5, 5, 8]).step_milestones == [5, 5, 8]  # a JSON override


# ------------------------------------------------------------------ the allowed names come from the code
def test_allowed_names_match_the_modules():
    from adapt import heuristic, models, muppet, policies
    from adapt.data.base import DATASETS

    allowed = allowed_values()
    assert allowed["model"] == tuple(models.MODELS)
    assert allowed["dataset"] == tuple(DATASETS)
    assert allowed["init"] == models.INITS and allowed["variant"] == heuristic.VARIANTS
    opts = allowed["policy"]
    assert opts["float32"] == ("normalize_gradients",)
    assert opts["fixed"] == tuple(inspect.signature(policies.FixedPrecisionPolicy).parameters)
    assert opts["muppet"] == muppet._OPTIONS  # the tuple MuppetPolicy.from_config checks against
    adapt_params = tuple(inspect.signature(heuristic.AdaptPolicy).parameters)
    assert opts["adapt"] == tuple(p for p in adapt_params if p not in ("variant", "seed"))
    assert set(heuristic.VARIANT_OPTIONS["reference"]) <= set(opts["adapt"])


def test_every_allowed_policy_key_builds_a_policy():
    """The allowed keys are exactly what the policy code accepts: each registry policy plus
    any allowed key builds, and the constructors reject the keys validate rejects."""
    from adapt.methods import make_policy

    for name in (ADAPT, MUPPET, FIXED, FLOAT):
        make_policy(get_config(name))
    cfg = get_config(ADAPT, policy=dict(get_config(ADAPT).policy, kl="corrected", fl_floor=3, log_interval=5))
    assert make_policy(cfg).options["kl"] == "corrected"
    assert make_policy(get_config(FIXED, policy={"bits": 8, "log_interval": 3})).trace is not None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_registry_config_round_trips(name):
    cfg = CONFIGS[name]
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    back = ExperimentConfig.from_dict(d)
    assert back == cfg and back.to_dict() == d
    assert cfg.replace() == cfg and get_config(name) is cfg


def test_from_dict_validates():
    d = CONFIGS[ADAPT].to_dict()
    with pytest.raises(ValueError, match="config field 'seed' must be .*got '0'"):
        ExperimentConfig.from_dict(dict(d, seed="0"))
    with pytest.raises(ValueError, match="unknown config field"):
        ExperimentConfig.from_dict(dict(d, bogus=1))


# ------------------------------------------------------------------ valid numbers pass
finite = dict(allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    lr=st.floats(min_value=0, max_value=1e6, exclude_min=True, **finite) | st.integers(1, 10),
    momentum=st.floats(min_value=0, max_value=1, exclude_max=True, **finite),
    weight_decay=st.floats(min_value=0, max_value=1e3, **finite),
    l1_decay=st.floats(min_value=0, max_value=1e3, **finite) | st.just(0),
    plateau_factor=st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True, **finite),
    step_gamma=st.floats(min_value=0, max_value=1, exclude_min=True, **finite),
    val_fraction=st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True, **finite),
    target=st.none() | st.floats(min_value=0, max_value=1, exclude_min=True, **finite),
    seed=st.integers(0, 2**32 - 1),
    epochs=st.integers(1, 10_000),
    batch_size=st.integers(1, 4096),
    n_folds=st.integers(2, 20),
    milestones=st.lists(st.integers(1, 500), max_size=4).map(sorted),
    nesterov=st.booleans(),
)
def test_valid_numbers_pass(lr, momentum, weight_decay, l1_decay, plateau_factor, step_gamma, val_fraction,
                            target, seed, epochs, batch_size, n_folds, milestones, nesterov):
    nesterov = nesterov and momentum > 0
    cfg = get_config(ADAPT, lr=lr, momentum=momentum, weight_decay=weight_decay, l1_decay=l1_decay,
                     plateau_factor=plateau_factor, step_gamma=step_gamma, val_fraction=val_fraction,
                     target_accuracy=target, seed=seed, epochs=epochs, batch_size=batch_size, n_folds=n_folds,
                     fold=n_folds - 1, step_milestones=tuple(milestones), nesterov=nesterov)
    assert cfg.lr == lr and math.isfinite(cfg.momentum)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
