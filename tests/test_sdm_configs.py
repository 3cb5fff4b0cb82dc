"""The SDM 2023 configs (values of lorenz0890/AdaPT@81e54e0 configs/image_recognition/*.ini), the
``sdm`` and ``mnist5k`` grids, the literal-lookback option, and one short run of each method on mnist5k."""
from __future__ import annotations

import pytest

import adapt.experiments.grid as G
from adapt.experiments.configs import CONFIGS, SDM_KCV, SDM_LITERAL_POLICY, config_names, get_config
from adapt.heuristic import AdaptPolicy, next_lookback, next_resolution

# (name, batch, accumulation, lr, L2, L1, epochs, target, policy subset): straight from the .ini files
RELEASED = [
    ("sdm/adapt/lenet5/mnist", 256, 4, 0.1, 1e-4, 1e-4, 15, 0.983,
     dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=150, results_buffer=8,
          lookback_momentum=0.9)),
    ("sdm/float32/lenet5/mnist", 256, 4, 0.1, 1e-4, 1e-8, 10, 0.98, None),
    ("sdm/adapt/lenet5/fashion_mnist", 256, 4, 0.1, 1e-4, 1e-4, 10, 0.89,
     dict(min_resolution=50, max_resolution=150, min_lookback=50, max_lookback=150, results_buffer=4,
          lookback_momentum=0.33)),
    ("sdm/float32/lenet5/fashion_mnist", 128, 4, 0.1, 1e-4, 1e-8, 10, 0.89, None),
    ("sdm/adapt/lenet5/emnist", 256, 4, 0.01, 1e-4, 1e-4, 10, 0.78,
     dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=150, results_buffer=4,
          lookback_momentum=0.33)),
    ("sdm/float32/lenet5/emnist", 128, 4, 0.1, 1e-4, 1e-8, 10, 0.78, None),
    ("sdm/adapt/alexnet_mnist/emnist", 256, 4, 0.1, 1e-8, 1e-4, 15, 0.827,
     dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=100, results_buffer=8,
          lookback_momentum=0.33)),
    ("sdm/float32/alexnet_mnist/emnist", 256, 4, 0.01, 1e-8, 1e-4, 15, 0.75, None),
    ("sdm/adapt/resnet20_mnist/emnist", 256, 4, 0.1, 1e-4, 1e-4, 15, 0.898,
     dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=100, results_buffer=8,
          lookback_momentum=0.9)),
    ("sdm/float32/resnet20_mnist/emnist", 256, 4, 0.1, 1e-4, 1e-8, 15, 0.90, None),
]


@pytest.mark.parametrize("row", RELEASED, ids=[r[0] for r in RELEASED])
def test_sdm_configs_carry_the_released_values(row):
    name, batch, accum, lr, l2, l1, epochs, target, policy = row
    c = CONFIGS[name]
    assert (c.batch_size, c.accumulation_steps, c.lr, c.weight_decay, c.l1_decay, c.epochs, c.target_accuracy) == \
        (batch, accum, lr, l2, l1, epochs, target)
    assert c.momentum == 0.9 and not c.augment and c.protocol == "kfold" and c.n_folds == 10
    if policy is not None:
        assert {k: c.policy[k] for k in policy} == policy
        assert c.policy["push_up_strategy"] == "min" and c.policy["initial_word_length"] == 8


def test_sdm_schedulers_per_model():
    assert (CONFIGS["sdm/adapt/lenet5/mnist"].scheduler, CONFIGS["sdm/adapt/lenet5/mnist"].step_milestones) == \
        ("step", (14,))
    f = CONFIGS["sdm/float32/lenet5/mnist"]
    assert (f.scheduler, f.plateau_patience, f.plateau_threshold) == ("plateau", 2, 1e-4)
    a = CONFIGS["sdm/adapt/alexnet_mnist/emnist"]
    assert (a.scheduler, a.plateau_patience, a.plateau_threshold) == ("plateau", 5, 1e-6)
    assert CONFIGS["sdm/adapt/resnet20_mnist/emnist"].step_milestones == (10, 11)
    assert CONFIGS["sdm/float32/resnet20_mnist/emnist"].step_milestones == (5, 10)
    # the WL penalty: in QAlexNet_MNIST_FP's loss, commented out in QLeNet5_FP and QResNet_MNIST_FP
    assert CONFIGS["sdm/adapt/alexnet_mnist/emnist"].policy["loss_penalty"] is True
    assert CONFIGS["sdm/adapt/lenet5/mnist"].policy["loss_penalty"] is False
    assert CONFIGS["sdm/adapt/resnet20_mnist/emnist"].policy["loss_penalty"] is False


def test_sdm_muppet_is_a_labelled_comparison_point():
    names = config_names("sdm")
    assert len(names) == 20 and sum("/muppet/" in n for n in names) == 5
    m = CONFIGS["sdm/muppet/lenet5/mnist"]
    assert (m.batch_size, m.epochs, m.protocol, m.val_fraction) == (128, 150, "holdout", 0.2)


def test_literal_min_lookback_above_max():
    name = "sdm/adapt/alexnet_mnist/emnist"
    with pytest.raises(ValueError, match="min_lookback .*must be <= max_lookback"):
        AdaptPolicy(min_lookback=256, max_lookback=100)
    cfg = get_config(name, policy=dict(CONFIGS[name].policy, **SDM_LITERAL_POLICY[name]))
    p = AdaptPolicy.from_config(cfg)
    assert (p.min_lookback, p.max_lookback, p.lookback_bounds) == (256, 100, "literal")
    # as written: min(max(r, 256), 100) = 100 whatever GD is; the blend starts at 256
    assert next_lookback(256, 1.0, 256, 100, 0.33, literal_bounds=True) == 205
    assert next_lookback(256, 50.0, 256, 100, 0.33, literal_bounds=True) == 205
    # LB == MAX raises the resolution; LB == MIN (256) lowers it
    assert next_resolution(60, 100, 256, 100, 50, 150, literal_bounds=True) == 61
    assert next_resolution(60, 256, 256, 100, 50, 150, literal_bounds=True) == 59


def test_sdm_and_mnist5k_grids():
    assert {p: len(G.grid(p)) for p in ("smoke", "quick", "paper")} == {"smoke": 15, "quick": 16, "paper": 104}
    sdm = G.grid("sdm")
    # KCV 10 (LeNet-5/MNIST, ResNet-20/EMNIST AdaPT): 10 folds; KCV 1: fold 0; MuPPET pair: 3 seeds
    assert len(sdm) == 2 * 10 + 8 * 1 + 5 * 2 * 3 == 58
    assert SDM_KCV[("lenet5", "mnist", "adapt")] == 10 and SDM_KCV[("lenet5", "mnist", "float32")] == 1
    folds = {p.fold for p in sdm if p.config_name == "sdm/adapt/lenet5/mnist"}
    assert folds == set(range(10))
    assert {(p.model, p.dataset) for p in sdm} == set(G.PAIRS["sdm"])
    m5 = G.grid("mnist5k")
    seeds = range(5)  # five seeds of every method: the verdict's replicates (notebook 40)
    assert [p.run_id for p in m5] == (
        [f"float32-lenet5-mnist5k-{v}-s{s}-f0" for v in ("reference", "corrected") for s in seeds]
        + [f"float32-muppet-lenet5-mnist5k-reference-s{s}-f0" for s in seeds]
        + [f"muppet-lenet5-mnist5k-reference-s{s}-f0" for s in seeds]
        + [f"adapt-lenet5-mnist5k-{v}-s{s}-f0" for v in ("reference", "corrected") for s in seeds])
    for p in sdm + m5:
        cfg = p.config()
        assert cfg.profile == p.profile and (cfg.seed, cfg.fold) == (p.seed, p.fold)


def test_mnist5k_configs_follow_the_lenet_mnist_protocol():
    a, sdm = CONFIGS["mnist5k/adapt/lenet5/mnist5k"], CONFIGS["sdm/adapt/lenet5/mnist"]
    same = ("lr", "weight_decay", "l1_decay", "epochs", "scheduler", "step_milestones", "momentum", "augment",
            "n_folds", "target_accuracy", "policy")
    assert all(getattr(a, k) == getattr(sdm, k) for k in same)
    assert (a.batch_size, a.accumulation_steps) == (64, 1)  # comparable optimizer steps on 3,600 images
    # 57 steps per epoch on a 3,600-image fold, against 54,000 / 1,024 ~ 53 in the official run
    assert -(-3600 // a.batch_size) == 57 and 54_000 // (256 * 4) == 52


@pytest.mark.parametrize("name,variant", [
    ("mnist5k/float32/lenet5/mnist5k", "reference"), ("mnist5k/float32-muppet/lenet5/mnist5k", "reference"),
    ("mnist5k/muppet/lenet5/mnist5k", "reference"), ("mnist5k/adapt/lenet5/mnist5k", "reference"),
    ("mnist5k/adapt/lenet5/mnist5k", "corrected")])
def test_one_short_run_of_each_method_on_mnist5k(tmp_path, name, variant):
    from adapt.train import run

    cfg = get_config(name, variant=variant, epochs=1, subset=400, test_subset=200)
    rec = run(cfg, out_dir=tmp_path, device="cpu")
    assert rec["status"] == "completed" and len(rec["epochs"]) == 1
    assert 0.0 <= rec["epochs"][-1]["test_acc"] <= 1.0
    if "adapt" in name:
        assert rec["traces"]["tensors"]["names"][0] == "features.conv1.weight"
