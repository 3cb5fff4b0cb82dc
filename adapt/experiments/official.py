"""Run the released AdaPT code from a local checkout, for cross-checks (docs/method.md §1.10).

The released code (``lorenz0890/AdaPT@81e54e0``) has no licence: nothing of it is in this
repository.  This module reads it at run time from a checkout whose path the user gives
(``ADAPT_OFFICIAL_REPO`` or an argument) and loads only the files a cross-check needs:

* ``models/qlayers/{qconvd2d,qlinear,qavgpool2d,qbatchnorm2d}_fp.py`` -- the quantized layers;
* ``models/lenet5_fp.py`` (``QLeNet5_FP``) and ``models/resnet_fp.py`` (``QBasicBlock_FP``,
  ``QResNet_FP``);
* ``optimizers/msgd_fp.py`` (``MSGD_FP``, the heuristic) and ``initializers/custom_init.py``
  (``truncated_normal_variance_scaling``).

The released files import PyTorch-Lightning 1.2.10, the graph layers (``torch_geometric``,
``ogb``, through ``models/__init__.py`` and ``models/qlayers/__init__.py``) and a command-line
logger; none of that takes part in a training step.  They are loaded with small stand-ins for
those imports (a ``LightningModule`` that is a plain ``nn.Module`` whose ``optimizers()``,
``manual_backward`` and ``log`` do what Lightning's do in the released training step, a logger
that keeps nothing, an ``accuracy`` function), registered in ``sys.modules`` only while the files
load.  ``qtorch`` (``fixed_point_quantize``, imported by every quantized layer) must be importable:
``pip install --target DIR qtorch==0.3.0 ninja`` and ``DIR`` on ``PYTHONPATH`` (its C++ extension
compiles at the first import, which needs a C++ compiler and ``ninja`` on ``PATH``).

:func:`load_official` returns an :class:`Official` with the loaded classes and functions.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

__all__ = ["ENV_VAR", "OFFICIAL_COMMIT", "REQUIRED_FILES", "Official", "official_repo", "load_official",
           "qtorch_available", "released_lenet5", "train_released", "train_adapt", "compare_switches"]

#: Environment variable holding the path of a local checkout of lorenz0890/AdaPT.
ENV_VAR = "ADAPT_OFFICIAL_REPO"
#: The commit the package cites (docs/method.md §0).
OFFICIAL_COMMIT = "81e54e02c53858d4d9010f24cb16c0db6dbdbdfb"
#: Files read from the checkout.
REQUIRED_FILES = ("models/qlayers/qconvd2d_fp.py", "models/qlayers/qlinear_fp.py", "models/qlayers/qavgpool2d_fp.py",
                  "models/qlayers/qbatchnorm2d_fp.py", "models/lenet5_fp.py", "models/resnet_fp.py",
                  "optimizers/msgd_fp.py", "initializers/custom_init.py")


def official_repo(path=None) -> Optional[Path]:
    """The checkout's path: ``path``, else ``$ADAPT_OFFICIAL_REPO``; ``None`` when neither is set.

    Raises ``FileNotFoundError`` naming the missing files when the folder is not a checkout of
    lorenz0890/AdaPT (it needs :data:`REQUIRED_FILES`)."""
    path = path if path is not None else os.environ.get(ENV_VAR) or None
    if path is None:
        return None
    root = Path(path).expanduser()
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not a checkout of lorenz0890/AdaPT (@{OFFICIAL_COMMIT[:7]}): "
                                f"missing {', '.join(missing)}; set {ENV_VAR} to the folder that holds "
                                f"models/, optimizers/ and initializers/")
    return root


def qtorch_available() -> bool:
    """True when ``qtorch.quant`` imports (it compiles its C++ extension at the first import)."""
    try:
        importlib.import_module("qtorch.quant")
    except Exception:  # ImportError, or the extension failing to build
        return False
    return True


@dataclass
class Official:
    """The loaded released code: classes and functions, and the checkout it came from."""

    root: Path
    MSGD_FP: type
    QLeNet5_FP: Optional[type]
    QBasicBlock_FP: Optional[type]
    QResNet_FP: Optional[type]
    QConv2d_FP: Optional[type]
    QLinear_FP: Optional[type]
    QAvgPool2d_FP: Optional[type]
    QBatchNorm2d_FP: Optional[type]
    truncated_normal_variance_scaling: object
    fixed_point_quantize: object


# ----------------------------------------------------------------------------- stand-ins
class _NullLogger:
    """Stands in for ``utils.logging.QLogger``, which parses the command line for a config file
    and keeps plots' data; a training step only calls ``qlog``."""

    def __init__(self, *args, **kwargs):
        pass

    def qlog(self, key, value):
        return None

    def save(self):
        return None


def _lightning_stub():
    from torch import nn

    class LightningModule(nn.Module):
        """What the released training step uses of Lightning 1.2.10's ``LightningModule``:
        ``optimizers(use_pl_optimizer=False)`` (the optimizer given to :meth:`attach_optimizer`),
        ``manual_backward(loss, opt)`` (``loss.backward()``) and ``log`` (kept in ``logged``)."""

        def attach_optimizer(self, optimizer) -> None:
            self.__dict__["_stub_optimizer"] = optimizer

        def optimizers(self, use_pl_optimizer=True):
            return self.__dict__.get("_stub_optimizer")

        def manual_backward(self, loss, *args, **kwargs):
            loss.backward()

        def log(self, name, value, **kwargs):
            self.__dict__.setdefault("logged", {})[name] = value

    def accuracy(preds, target, *args, **kwargs):
        return (preds == target).float().mean()

    pl = types.ModuleType("pytorch_lightning")
    pl.LightningModule = LightningModule
    metrics = types.ModuleType("pytorch_lightning.metrics")
    functional = types.ModuleType("pytorch_lightning.metrics.functional")
    functional.accuracy = accuracy
    metrics.functional = functional
    pl.metrics = metrics
    return {"pytorch_lightning": pl, "pytorch_lightning.metrics": metrics,
            "pytorch_lightning.metrics.functional": functional}


@contextlib.contextmanager
def _modules(entries: dict, loaded_names=()):
    """Register ``entries`` in ``sys.modules`` for the duration; afterwards restore what was there
    under those names and under ``loaded_names`` (the files loaded meanwhile)."""
    saved = {name: sys.modules.get(name) for name in (*entries, *loaded_names)}
    for name in loaded_names:
        sys.modules.pop(name, None)
    sys.modules.update(entries)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # relative imports and dataclasses look the module up while it runs
    spec.loader.exec_module(module)
    return module


def _package(name: str, path: Path) -> types.ModuleType:
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(path)]
    pkg.__package__ = name
    return pkg


def load_official(path=None, models: bool = True) -> Official:
    """Load the released code from the checkout (:func:`official_repo`).

    ``models=False`` loads only ``MSGD_FP`` and the initializer (no ``qtorch`` needed: the
    optimizer calls the quantizer it is given in ``qmap``); ``models=True`` also the quantized
    layers and models, which import ``qtorch``.  Raises ``FileNotFoundError`` without a checkout
    and ``ImportError`` when ``qtorch`` is needed and does not import.
    """
    root = official_repo(path)
    if root is None:
        raise FileNotFoundError(f"no checkout of lorenz0890/AdaPT: set {ENV_VAR} (or pass path=)")
    prefix = "_adapt_official"
    models_pkg = _package("models", root / "models")
    qlayers_pkg = _package("models.qlayers", root / "models" / "qlayers")
    optim_pkg = _package("optimizers", root / "optimizers")
    utils_pkg = _package("utils", root / "utils")
    logging_mod = types.ModuleType("utils.logging")
    logging_mod.QLogger = _NullLogger
    utils_pkg.logging = logging_mod
    entries = {"models": models_pkg, "models.qlayers": qlayers_pkg, "optimizers": optim_pkg, "utils": utils_pkg,
               "utils.logging": logging_mod, **_lightning_stub()}
    names = ["optimizers.msgd_fp", "models.qlayers.qconvd2d_fp", "models.qlayers.qlinear_fp",
             "models.qlayers.qavgpool2d_fp", "models.qlayers.qbatchnorm2d_fp", "models.lenet5_fp",
             "models.resnet_fp", f"{prefix}.custom_init"]
    entries[prefix] = _package(prefix, root / "initializers")
    loaded = {}
    with _modules(entries, names):
        msgd = _load("optimizers.msgd_fp", root / "optimizers" / "msgd_fp.py")
        optim_pkg.MSGD_FP = msgd.MSGD_FP
        init = _load(f"{prefix}.custom_init", root / "initializers" / "custom_init.py")
        if models:
            if not qtorch_available():
                raise ImportError("qtorch does not import: pip install --target DIR qtorch==0.3.0 ninja, put DIR on "
                                  "PYTHONPATH and DIR/bin on PATH (its C++ extension compiles at the first import)")
            for f, cls in (("qconvd2d_fp", "QConv2d_FP"), ("qlinear_fp", "QLinear_FP"),
                           ("qavgpool2d_fp", "QAvgPool2d_FP"), ("qbatchnorm2d_fp", "QBatchNorm2d_FP")):
                mod = _load(f"models.qlayers.{f}", root / "models" / "qlayers" / f"{f}.py")
                setattr(qlayers_pkg, cls, getattr(mod, cls))
                loaded[cls] = getattr(mod, cls)
            loaded["QLeNet5_FP"] = _load("models.lenet5_fp", root / "models" / "lenet5_fp.py").QLeNet5_FP
            resnet = _load("models.resnet_fp", root / "models" / "resnet_fp.py")
            loaded["QBasicBlock_FP"], loaded["QResNet_FP"] = resnet.QBasicBlock_FP, resnet.QResNet_FP
            from qtorch.quant import fixed_point_quantize
            loaded["fixed_point_quantize"] = fixed_point_quantize
    return Official(root=root, MSGD_FP=msgd.MSGD_FP, QLeNet5_FP=loaded.get("QLeNet5_FP"),
                    QBasicBlock_FP=loaded.get("QBasicBlock_FP"), QResNet_FP=loaded.get("QResNet_FP"),
                    QConv2d_FP=loaded.get("QConv2d_FP"), QLinear_FP=loaded.get("QLinear_FP"),
                    QAvgPool2d_FP=loaded.get("QAvgPool2d_FP"), QBatchNorm2d_FP=loaded.get("QBatchNorm2d_FP"),
                    truncated_normal_variance_scaling=init.truncated_normal_variance_scaling,
                    fixed_point_quantize=loaded.get("fixed_point_quantize"))


# ----------------------------------------------------------------------------- training the released code
class _NoGC:
    """Stands in for the ``gc`` module inside ``models/lenet5_fp.py``: its training step calls
    ``gc.collect()`` every step (memory housekeeping, about a third of a CPU step here)."""

    @staticmethod
    def collect(*args, **kwargs):
        return 0


def released_lenet5(official: Official, cfg, init: str = "copy", num_classes: int = 10):
    """``QLeNet5_FP`` with the hyperparameters of an AdaPT LeNet-5 config, as ``utils/factory.py
    L126-L139`` builds it (quantized inputs, outputs and gradients; the config's lr, momentum, L2,
    L1, accumulation, lookback/resolution bounds, results buffer, lookback momentum, start format).

    ``init="copy"``: no initializer, then ``adapt``'s initial weights for ``cfg`` (``adapt.train.build``)
    copied in, parameter by parameter (the two models register them in the same order);
    ``init="own"``: the released initializer (``initializers/custom_init.py``, gain 0.5) after
    ``torch.manual_seed(cfg.seed)``."""
    from adapt.train import build

    seed = cfg.seed
    p = cfg.policy
    kwargs = dict(num_classes=num_classes, quant_in=True, quant_out=True, optimizer=official.MSGD_FP,
                  accumulation_steps=cfg.accumulation_steps, l1_decay=cfg.l1_decay,
                  wl_start=p["initial_word_length"], fl_start=p["initial_fractional_length"],
                  lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                  max_lookback=p["max_lookback"], push_up_strategy=p["push_up_strategy"],
                  max_resolution=p["max_resolution"], min_lookback=p["min_lookback"],
                  min_resolution=p["min_resolution"], quant_grads=True, results_buffer=p["results_buffer"],
                  lookback_momentum=p["lookback_momentum"])
    if init == "own":
        torch.manual_seed(seed)
        return official.QLeNet5_FP(initializer=official.truncated_normal_variance_scaling,
                                   initializer_arg=0.5, **kwargs)
    if init != "copy":
        raise ValueError(f"init must be 'copy' or 'own', got {init!r}")
    model = official.QLeNet5_FP(initializer=None, **kwargs)
    ours, _, _, _ = build(cfg, num_classes, torch.device("cpu"))
    with torch.no_grad():
        for (name, theirs), (our_name, p_ours) in zip(model.named_parameters(), ours.named_parameters()):
            if theirs.shape != p_ours.shape:
                raise RuntimeError(f"parameter {name} {tuple(theirs.shape)} vs {our_name} {tuple(p_ours.shape)}")
            theirs.copy_(p_ours)
    return model


def _watch_switches(opt, events: list, state: dict, names: list) -> None:
    """Record every switch of the released optimizer: wrap its private ``__push_down`` and
    ``__push_up`` on the instance (``MSGD_FP.step`` calls them through ``self``)."""
    push_down, push_up = opt._MSGD_FP__push_down, opt._MSGD_FP__push_up
    masters = [w.untyped_storage().data_ptr() for w in opt.param_groups[0]["fpWeights"]]

    def down(w, fl_min, fl_mid, fl_max, wl_mid, wl_max, quantizer, resolution):
        out = push_down(w, fl_min, fl_mid, fl_max, wl_mid, wl_max, quantizer, resolution)
        state["pending"] = {"index": masters.index(w.untyped_storage().data_ptr()), "old": [wl_mid, fl_mid],
                            "pushed_down": [int(out[0]), int(out[1])], "resolution": int(resolution)}
        return out

    def up(g_list, wl, fl, quantizer, resolution):
        out = push_up(g_list, wl, fl, quantizer, resolution)
        e = state.pop("pending")
        gd = float(g_list[0][0] / g_list[0][1].norm(2.0))
        i = e["index"]
        events.append({"step": state["step"], "epoch": state["epoch_float"], "tensor": names[i], "index": i,
                       "old": e["old"], "pushed_down": e["pushed_down"], "new": [int(out[0]), int(out[1])],
                       "lookback": int(state["qmap"]["lb"][i]), "resolution": e["resolution"],
                       "gd": gd if math.isfinite(gd) else None,
                       "strategy": opt._MSGD_FP__push_up_strategy})
        return out

    opt._MSGD_FP__push_down, opt._MSGD_FP__push_up = down, up


@torch.no_grad()
def _released_eval(model, dataset, batch_size: int):
    """Mean loss and accuracy from the released ``validation_step`` (quantized forward, its
    double-softmax loss), weighted by batch size."""
    from adapt.data.loader import DeviceLoader

    if dataset is None:
        return None, None
    model.eval()
    loss_sum, correct, n = 0.0, 0.0, 0
    for x, y in DeviceLoader(dataset, batch_size, shuffle=False, augment=False):
        model.validation_step((x.clone(), y), 0)
        loss_sum += float(model.logged["val_loss"]) * len(y)
        correct += float(model.logged["val_acc"]) * len(y)
        n += len(y)
    model.train()
    return loss_sum / n, correct / n


def _lockstep(official, model, cfg, num_classes: int) -> None:
    """``--rounding nearest``: make the released run deterministic and draw PushDown's random numbers
    as ``adapt``'s reference run with ``rounding="nearest"`` does, so that the two runs can agree step
    by step.  Every quantizer of the released layers and of ``qmap["q"]`` (weights, gradients)
    rounds to nearest with ``adapt.quant.fixed_point`` (the reference's own quantizer), and the
    information-loss test ``__fpq_loss`` quantizes with stochastic rounding from a generator in the state
    of the ``AdaptPolicy``'s own (``adapt.heuristic``: the test runs on a CPU copy with the policy's
    generator).  Both sides round with one quantizer because the lockstep compares the rules:
    qtorch's nearest, ``nearbyint(a + 0.5f - 0.5)`` in float32, rounds a value one float32 ulp above a
    tie the other way (``a = 0.5 + 2**-24`` gives 0), a documented deviation of ``fixed_point``
    (docs/method.md §1.3) that, hit once in a weight, makes the two runs' weights drift apart until the
    information-loss test of a PushDown decides differently (seed 0 of mnist5k: step 716 of 855)."""
    from adapt.quant import fixed_point
    from adapt.train import build

    def nearest(x, wl, fl, rounding="stochastic"):
        return fixed_point(x, wl, fl, "nearest")

    for module in model.modules():
        if "quantizer" in vars(module):
            module.quantizer = nearest
    generator = torch.Generator()
    generator.set_state(build(cfg, num_classes, torch.device("cpu"))[1].generator.get_state())

    def stochastic(x, wl, fl, rounding="stochastic"):
        return fixed_point(x.detach().to("cpu", torch.float32), wl, fl, "stochastic", generator)

    model.__dict__["_lockstep_quantizer"] = stochastic


def train_released(official, cfg, init: str = "copy") -> dict:
    """Train the released QLeNet5_FP + MSGD_FP on the config's data and batches; returns the run's
    per-epoch metrics, switch events and final formats (tensors named as ``adapt``'s LeNet-5).
    ``cfg.rounding == "nearest"`` runs the lockstep mode (:func:`_lockstep`).

    As tools/official_crosscheck.py describes: one released ``training_step(batch, batch_idx)`` per
    mini-batch of ``adapt``'s loader for the config and seed, the released scheduler stepped after
    every epoch, validation and test from the released ``validation_step``."""
    from adapt.data.loader import DeviceLoader
    from adapt.train import build, prepare_data

    device = torch.device("cpu")
    train_ds, val_ds, test_ds, num_classes = prepare_data(cfg, device)
    model = released_lenet5(official, cfg, init, num_classes)
    type(model).training_step.__globals__["gc"] = _NoGC  # the loaded module's globals (a private copy)
    if cfg.rounding == "nearest":
        _lockstep(official, model, cfg, num_classes)
    conf = model.configure_optimizers()
    opt, scheduler = conf["optimizer"], conf["lr_scheduler"]
    milestones = sorted(scheduler.milestones)
    if cfg.scheduler != "step" or tuple(milestones) != tuple(cfg.step_milestones):
        raise RuntimeError(f"the released LeNet-5 steps the lr at epochs {milestones}; config {cfg.name} has "
                           f"scheduler {cfg.scheduler!r} with milestones {cfg.step_milestones}")
    model.attach_optimizer(opt)
    model.setup("fit")  # qmap["q"] takes each layer's quantizer
    if "_lockstep_quantizer" in vars(model):
        fpq_loss, stochastic = opt._MSGD_FP__fpq_loss, model.__dict__["_lockstep_quantizer"]
        opt._MSGD_FP__fpq_loss = lambda w, wl, fl, quantizer, resolution: fpq_loss(w, wl, fl, stochastic, resolution)
    names = [n for n, _ in build(cfg, num_classes, device)[0].named_parameters()]
    events, state = [], {"step": 0, "epoch_float": 0.0, "qmap": model.qmap}
    _watch_switches(opt, events, state, names)
    loader = DeviceLoader(train_ds, cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed)
    weights = [i for i, (_, p) in enumerate(model.named_parameters()) if p.dim() > 1]
    epochs, started = [], time.time()
    for epoch in range(cfg.epochs):
        t0 = time.time()
        lr = opt.param_groups[0]["lr"]
        model.train()
        loader.set_epoch(epoch)
        n_batches = len(loader)
        loss_sum, seen = 0.0, 0
        for i, (x, y) in enumerate(loader):
            state["epoch_float"] = epoch + (i + 1) / n_batches
            loss = model.training_step((x.clone(), y), i)  # the released step: forward, loss, backward, MSGD_FP.step
            if (i + 1) % cfg.accumulation_steps == 0:
                state["step"] += 1
            loss_sum += float(loss.detach()) * cfg.accumulation_steps * len(y)
            seen += len(y)
        scheduler.step()
        val_loss, val_acc = _released_eval(model, val_ds, cfg.eval_batch_size)
        test_loss, test_acc = _released_eval(model, test_ds, cfg.eval_batch_size)
        qwl = [int(v) for v in model.qmap["qwl"]]
        epochs.append({"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "val_loss": val_loss,
                       "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc, "steps": state["step"],
                       "adapt_mean_weight_wl": sum(qwl[i] for i in weights) / len(weights),
                       "formats": {names[i]: [qwl[i], int(model.qmap["qfl"][i])] for i in range(len(names))},
                       "time_s": time.time() - t0})
    final = {names[i]: [int(model.qmap["qwl"][i]), int(model.qmap["qfl"][i])] for i in range(len(names))}
    return {"arm": "released", "seed": cfg.seed, "epochs": epochs, "switches": events, "final_formats": final,
            "wall_time_s": time.time() - started}


# ----------------------------------------------------------------------------- adapt's runs
def train_adapt(cfg, arm: str) -> dict:
    """``adapt.train.run`` of ``cfg`` (in memory), in the fields of :func:`train_released`."""
    from adapt.train import run

    started = time.time()
    record = run(cfg)
    if record["status"] != "completed":
        raise RuntimeError(f"{arm} seed {cfg.seed}: run ended {record['status']}: {record['message']}")
    keep = ("epoch", "lr", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc", "steps",
            "adapt_mean_weight_wl", "time_s")
    epochs = [{k: e.get(k) for k in keep} for e in record["epochs"]]
    return {"arm": arm, "seed": cfg.seed, "epochs": epochs, "switches": record["traces"]["switches"],
            "final_formats": record["policy"]["final_formats"], "wall_time_s": time.time() - started,
            "config": {k: record["config"][k] for k in ("variant", "softmax_output", "in_place_inputs")}}


# ----------------------------------------------------------------------------- comparing two runs
def compare_switches(a: dict, b: dict) -> dict:
    """Step-by-step agreement of two runs' switch events (tensor, step, old, pushed-down and new
    format, lookback, resolution, strategy): the number of identical leading events and the first
    pair that differs.  In the lockstep mode identical runs agree on every event."""
    keys = ("step", "tensor", "old", "pushed_down", "new", "lookback", "resolution", "strategy")
    ea, eb = a["switches"], b["switches"]
    same = 0
    while same < min(len(ea), len(eb)) and all(ea[same][k] == eb[same][k] for k in keys):
        same += 1
    first = None
    if same < max(len(ea), len(eb)):
        first = {"a": {k: ea[same][k] for k in keys} if same < len(ea) else None,
                 "b": {k: eb[same][k] for k in keys} if same < len(eb) else None}
    acc = [(x["test_acc"], y["test_acc"]) for x, y in zip(a["epochs"], b["epochs"])]
    return {"events": [len(ea), len(eb)], "identical_leading_events": same, "identical": first is None,
            "first_difference": first, "test_acc_by_epoch": acc}
