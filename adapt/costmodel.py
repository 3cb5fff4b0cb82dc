"""The analytical cost model: per-layer MAdds, bit-weighted training/inference cost, size and memory.

Specification: docs/method.md §1.7 (the released ``utils/analytics.py`` of the official AdaPT
code, and the corrected model's formulas) and §4 item 12 (the release's bugs).  Two variants of
everything:

``"reference"``
    The released formulas and their bookkeeping, quirks included, applied to our models and run
    records (:func:`layer_costs` walks the modules in registration order with a carried image
    size; logged entries are matched to rows by position).  Use it to compare with the paper.
``"corrected"``
    Multiply-accumulate counts of the executed module graph (equal to
    ``torch.utils.flop_counter``'s, :func:`flop_counter_macs`), forward and backward priced
    explicitly, AdaPT's switching work priced from what PushDown/PushUp compute, sizes weighted
    by parameter counts.  Use it for any claim of our own.

Entry points: :func:`layer_costs` and :func:`total_madds` (per layer and per sample),
:func:`trace_costs` (per logged point of a run record), :func:`run_figures` (a record's speedups,
size, memory and sparsity), :func:`muppet_figures` (MuPPET from a schedule or a record) and
:func:`figures_frame` (many records).  Totals per sample at 32x32 are pinned by
tests/test_costmodel.py (AlexNet-C10: 62,756,352 reference, 14,984,714 corrected; ResNet-20:
445,481,408 and 41,206,410).
"""
from __future__ import annotations

import copy
import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from adapt.data.base import DATASETS
from adapt.models import build_model, input_shape_of, layer_kind

__all__ = [
    "VARIANTS",
    "INTERVAL",
    "TARGET_ACCURACY",
    "MUPPET_SCHEDULES",
    "MUPPET_BASELINE",
    "RELEASED_LOG_KEEPS_BIASES",
    "layer_costs",
    "total_madds",
    "flop_counter_macs",
    "marvin_step",
    "iso_accuracy",
    "reference_entries",
    "trace_costs",
    "muppet_schedule_from_record",
    "muppet_figures",
    "model_for_record",
    "run_figures",
    "figures_frame",
]

VARIANTS = ("reference", "corrected")

#: The official logging INTERVAL of the overhead formula (docs/method.md §1.7).
INTERVAL = 10

#: The official TARGET_ACCURACY of the quantized configs (docs/method.md §1.6): the iso-accuracy threshold.
TARGET_ACCURACY = {
    ("alexnet_cifar", "cifar10"): 0.731,
    ("alexnet_cifar", "cifar100"): 0.413,
    ("resnet20", "cifar10"): 0.895,
    ("resnet20", "cifar100"): 0.643,
    ("resnet20", "emnist"): 0.898,
    ("alexnet_cifar", "emnist"): 0.827,
    # SDM configs (lorenz0890/AdaPT@81e54e0 configs/image_recognition/*_msgd_fp_{mnist,fmnist,emnist}.ini)
    ("alexnet_mnist", "emnist"): 0.827,
    ("resnet20_mnist", "emnist"): 0.898,
    ("lenet5", "mnist"): 0.983,
    ("lenet5", "fashion_mnist"): 0.89,
    ("lenet5", "emnist"): 0.78,
}

#: "MuPPET results from paper" in the released code: (bits, epochs), 32 = float32 (docs/method.md §1.7).
MUPPET_SCHEDULES = {
    "alexnet_cifar": ((8, 16), (12, 10), (14, 14), (16, 14), (32, 45)),
    "resnet20": ((8, 22), (12, 22), (14, 10), (16, 15), (32, 45)),
}

#: MuPPET's float32 baseline as the released rescaling assumes it.
MUPPET_BASELINE = {"epochs": 150, "batch_size": 128, "accumulation_steps": 1, "batch_size_imagenet": 256}

#: Whether the official logger kept the bias entries of a model (see the module docstring).
#: The MNIST-family models log as their CIFAR twins (``lenet5``: module-wise qmap with biases,
#: as ``QAlexNet_FP``; lorenz0890/AdaPT@81e54e0 models/lenet5_fp.py L206-L252).
RELEASED_LOG_KEEPS_BIASES = {"alexnet_cifar": True, "resnet20": False, "lenet5": True, "alexnet_mnist": True,
                             "resnet20_mnist": False}

#: Operations of the SGD update per parameter and optimizer step (momentum, weight decay, update), corrected model.
OPTIMIZER_OPS_PER_PARAM = 4

def _py(d: dict) -> dict:
    """numpy scalars to plain Python numbers (JSON- and table-friendly)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _input_shape(input_shape, model: Optional[nn.Module] = None) -> tuple:
    """``(C, H, W)``; ``None``: ``(C, 32, 32)`` with ``C`` the input channels of the model's
    first conv (:func:`adapt.models.input_shape_of`: 3 for the CIFAR models, 1 for LeNet-5
    and the MNIST variants)."""
    if input_shape is None:
        return input_shape_of(model) if model is not None else (3, 32, 32)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)!r}")
    return shape


# ======================================================================= per-layer tables
def layer_costs(model: nn.Module, input_shape=None, variant: str = "corrected") -> pd.DataFrame:
    """Per-layer cost table of ``model`` for one input of ``input_shape`` = (C, H, W).

    Columns: ``layer`` (module name), ``type`` (class name), ``kind`` (conv, linear,
    bn, pool, relu, other), ``output_shape`` (from real execution, ``(C, H, W)`` or
    ``(n,)``), ``params`` (the module's own parameter count), ``madds`` (the
    variant's count, per sample), ``tensor_size`` (the heuristic-overhead size),
    plus per variant: ``reference``: ``pass`` (1 or 2 for the doubled conv rows),
    ``ref_in``/``ref_out`` (the released carried size ``(H, W, C)``), ``act_term``
    (the ReLU/Tanh part of ``madds``); ``corrected``: ``macs`` (conv/linear only),
    ``small_ops``, ``input_shape``, ``has_weight``, ``needs_input_grad``.
    See the module docstring for the formulas.
    """
    variant = _check_variant(variant)
    shape = _input_shape(input_shape, model)
    executed = _execute(model, shape)
    if variant == "corrected":
        return _corrected_table(model, executed)
    return _reference_table(model, shape, executed)


def total_madds(model: nn.Module, input_shape=None, variant: str = "corrected") -> int:
    """Sum of the ``madds`` column of :func:`layer_costs`."""
    return int(layer_costs(model, input_shape, variant)["madds"].sum())


def _leaf_modules(model):
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


@torch.no_grad()
def _execute(model: nn.Module, shape: tuple) -> list:
    """Run ``model`` once in eval mode on zeros of ``shape``; one dict per leaf-module call, in order."""
    calls = []
    handles = []
    x0 = torch.zeros((1,) + shape, dtype=torch.float32,
                     device=next((p.device for p in model.parameters()), torch.device("cpu")))

    def make(name):
        def hook(module, args, output):
            inp = args[0] if args else None
            calls.append({
                "layer": name, "module": module,
                "input_shape": tuple(inp.shape[1:]) if isinstance(inp, torch.Tensor) else None,
                "output_shape": tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None,
                "from_input": inp is x0,
            })
        return hook

    for name, module in _leaf_modules(model):
        handles.append(module.register_forward_hook(make(name)))
    was_training = model.training
    model.eval()
    try:
        model(x0)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls


def _kind(module) -> str:
    """:func:`adapt.models.layer_kind`, with a shortcut conv counted as a conv and every
    elementwise activation (not only ReLU) as one."""
    if isinstance(module, (nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.LeakyReLU)):
        return "relu"
    kind = layer_kind(module)
    return "conv" if kind == "downsample" else kind


_FREE = (nn.Identity, nn.Dropout, nn.Flatten)


def _corrected_table(model, executed) -> pd.DataFrame:
    rows = []
    seen_counts: dict = {}
    for call in executed:
        m, name = call["module"], call["layer"]
        kind = _kind(m)
        ins, outs = call["input_shape"], call["output_shape"]
        own_params = sum(p.numel() for p in m.parameters(recurse=False))
        macs = small = 0
        has_weight = False
        tensor_size = 0
        if isinstance(m, nn.Conv2d):
            c_out, ho, wo = outs
            kh, kw = _pair(m.kernel_size)
            macs = ho * wo * c_out * (m.in_channels // m.groups) * kh * kw
            small = ho * wo * c_out if m.bias is not None else 0
            has_weight, tensor_size = True, m.weight.numel()
        elif isinstance(m, nn.Linear):
            macs = m.in_features * m.out_features
            small = m.out_features if m.bias is not None else 0
            has_weight, tensor_size = True, m.weight.numel()
        elif isinstance(m, nn.BatchNorm2d):
            small = math.prod(ins)
            has_weight = m.weight is not None
            tensor_size = m.weight.numel() if m.weight is not None else 0
        elif isinstance(m, nn.MaxPool2d):
            kh, kw = _pair(m.kernel_size)
            small = math.prod(outs) * (kh * kw - 1)
        elif isinstance(m, nn.AvgPool2d):
            kh, kw = _pair(m.kernel_size)
            small = math.prod(outs) * kh * kw
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            small = math.prod(ins)
        elif kind == "relu":
            small = math.prod(ins)
        elif isinstance(m, _FREE) or own_params == 0:
            small = 0
        else:
            raise NotImplementedError(
                f"cost model: no formula for layer {name!r} of type {type(m).__name__} with parameters; "
                "supported: Conv2d, Linear, BatchNorm2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLU, Tanh")
        k = seen_counts.get(name, 0)
        seen_counts[name] = k + 1
        rows.append({
            "layer": name if k == 0 else f"{name}#{k}", "type": type(m).__name__, "kind": kind,
            "input_shape": ins, "output_shape": outs, "params": own_params,
            "macs": int(macs), "small_ops": int(small), "madds": int(macs + small),
            "tensor_size": int(tensor_size), "has_weight": bool(has_weight),
            "needs_input_grad": not call["from_input"],
        })
    return pd.DataFrame(rows)


def _released_modules(model):
    """``model.modules()`` without the ``nn.Sequential`` containers, as the released ``analyse()`` lists them."""
    return [(n, m) for n, m in model.named_modules() if not isinstance(m, nn.Sequential)]


def _act_term(modules, idx, h, w, c) -> int:
    if idx + 1 < len(modules):
        nxt = modules[idx + 1][1]
        if isinstance(nxt, nn.Tanh):
            return h * w * c * 4
        if isinstance(nxt, nn.ReLU):
            return h * w * c
    return 0


def _reference_table(model, shape, executed) -> pd.DataFrame:
    out_shapes = {c["layer"]: c["output_shape"] for c in executed}
    modules = _released_modules(model)
    c0, h0, w0 = shape
    img = (h0, w0, c0)
    rows = []

    def add(name, m, kind, madds, act, tsize, img_in, img_out, pass_no=1):
        rows.append({"layer": name, "type": type(m).__name__, "kind": kind, "pass": pass_no,
                     "output_shape": out_shapes.get(name), "params": sum(p.numel() for p in m.parameters(recurse=False)),
                     "madds": int(madds + act), "act_term": int(act), "tensor_size": int(tsize),
                     "ref_in": img_in, "ref_out": img_out})

    for idx, (name, m) in enumerate(modules):
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = _pair(m.kernel_size)[0], _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding)
            kh, kw = _pair(m.kernel_size)
            oh = (img[0] + p[0] * 2 - kh) // s[0] + 1
            ow = (img[1] + p[1] * 2 - kw) // s[1] + 1
            madds = oh * ow * img[2]
            act = _act_term(modules, idx, oh, ow, img[2])
            new = (oh, ow, img[2])
            add(name, m, "pool", madds, act, img[0] * img[1] * img[2], img, new)
            img = new
        elif isinstance(m, nn.Conv2d):
            kh, kw = _pair(m.kernel_size)
            sh, sw = _pair(m.stride)
            ph, pw = _pair(m.padding)
            for pass_no in (1, 2):  # the released analyse() has this branch twice
                oh = (img[0] + ph * 2 - kh) // sh + 1
                ow = (img[1] + pw * 2 - kw) // sw + 1
                madds = 2 * img[0] * img[1] * (m.in_channels * kh + 1) * m.out_channels * img[2]
                act = _act_term(modules, idx, oh, ow, img[2])
                new = (oh, ow, m.out_channels)
                add(name, m, "conv", madds, act, kh * kw * m.out_channels, img, new, pass_no)
                img = new
        elif isinstance(m, nn.Linear):
            mi, n = m.in_features, m.out_features
            madds = 2 * mi * n - mi
            act = _act_term(modules, idx, mi, n, img[2])
            add(name, m, "linear", madds, act, img[0] * img[1] * img[2], img, img)
        elif isinstance(m, nn.BatchNorm2d):
            madds = 4 * img[0] * img[1] * img[2]
            act = _act_term(modules, idx, img[0], img[1], img[2])
            add(name, m, "bn", madds, act, img[0] * img[1] * img[2], img, img)
    return pd.DataFrame(rows)


def flop_counter_macs(model: nn.Module, input_shape=None, backward: bool = False) -> int:
    """Multiply-accumulates that ``torch.utils.flop_counter.FlopCounterMode`` sees (its FLOPs / 2).

    Forward of one sample by default; ``backward=True`` counts only the backward pass
    of ``model(x).sum()`` (train mode, input not requiring grad).  The counter covers
    convolutions and matrix products (``aten.convolution``, ``addmm``, ``mm``, their
    backward); it does not count biases, BatchNorm, pooling or activations.
    """
    from torch.utils.flop_counter import FlopCounterMode

    shape = _input_shape(input_shape, model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.randn((1,) + shape, device=device)
    was_training = model.training
    try:
        if not backward:
            model.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                model(x)
            return fc.get_total_flops() // 2
        twin = copy.deepcopy(model).train()  # train-mode BN would update the caller's running statistics
        out = twin(x).sum()
        with FlopCounterMode(display=False) as fc:
            out.backward()
        return fc.get_total_flops() // 2
    finally:
        model.train(was_training)


# ======================================================================= released pieces
def marvin_step(tensor_size, lb, res, non_zeros=1.0, wl=32):
    """The released per-switch heuristic cost (``marvin_step``), vectorized over numpy arrays.

    ``bisect = 2*log2(wl - 8)`` if ``wl > 8`` else 1;
    ``3*T*bisect*res*non_zeros + (lb + 1)*T + 1``.
    """
    wl = np.asarray(wl, dtype=float)
    bisect = np.where(wl > 8, 2.0 * np.log2(np.maximum(wl - 8.0, 1.0)), 1.0)
    t = np.asarray(tensor_size, dtype=float)
    out = 3.0 * t * bisect * np.asarray(res, dtype=float) * np.asarray(non_zeros, dtype=float) \
        + (np.asarray(lb, dtype=float) + 1.0) * t + 1.0
    return out if out.ndim else float(out)


def iso_accuracy(accuracies: Sequence[float], target: Optional[float], max_epochs: Optional[int] = None) -> dict:
    """The released iso-accuracy index rule.

    ``index`` = 0-based position of the first accuracy ``>= target`` (None if none);
    ``fraction = index/len(accuracies)`` (1.0 if none, as released); ``epoch =
    int(max_epochs*fraction) + 1`` (released ``iso_acc_epoch``; ``max_epochs``
    defaults to ``len(accuracies)``); ``reached``.
    """
    accs = [a for a in accuracies]
    n = len(accs)
    if max_epochs is None:
        max_epochs = n
    index = None
    if target is not None:
        for i, a in enumerate(accs):
            if a is not None and a >= target:
                index = i
                break
    fraction = 1.0 if index is None or n == 0 else index / n
    return {"index": index, "fraction": fraction, "epoch": int(max_epochs * fraction) + 1,
            "reached": index is not None, "target": target}


# ======================================================================= records
def _trace(record: dict) -> tuple:
    traces = record.get("traces") or {}
    t = traces.get("tensors")
    if not t or not t.get("step"):
        return None, None
    interval = traces.get("interval", t.get("interval", INTERVAL))
    return t, int(interval)


def _arr(trace: dict, key: str, fill=np.nan) -> Optional[np.ndarray]:
    if key not in trace:
        return None
    return np.array([[fill if v is None else v for v in row] for row in trace[key]], dtype=float)


def reference_entries(names: Sequence[str], model_name: Optional[str]) -> list:
    """Indices of the traced tensors the released logger kept (see :data:`RELEASED_LOG_KEEPS_BIASES`)."""
    keep_bias = RELEASED_LOG_KEEPS_BIASES.get(model_name, False)
    return [i for i, n in enumerate(names) if keep_bias or "bias" not in n]


def _num_classes_for(config: dict, trace: Optional[dict]) -> int:
    ds = config.get("dataset")
    if ds in DATASETS:
        return DATASETS[ds].num_classes
    if trace is not None:
        return int(trace["numel"][-1])
    raise ValueError(f"cannot tell the number of classes of data set {ds!r}; pass model=")


def model_for_record(record: dict) -> nn.Module:
    """Build the record's model (untrained; only its structure is used) and check it against the trace."""
    cfg = record["config"]
    trace, _ = _trace(record)
    model = build_model(cfg["model"], _num_classes_for(cfg, trace), init="torch")
    if trace is not None:
        _check_model_matches(model, trace)
    return model


def _check_model_matches(model: nn.Module, trace: dict) -> None:
    params = dict(model.named_parameters())
    names = list(trace["names"])
    if names != list(params):
        missing = [n for n in names if n not in params]
        raise ValueError(f"the trace's tensors do not match the model's parameters "
                         f"(first unknown: {missing[:3]}, {len(names)} traced vs {len(params)} in the model)")
    for n, k in zip(names, trace["numel"]):
        if params[n].numel() != k:
            raise ValueError(f"tensor {n!r}: trace says {k} elements, the model has {params[n].numel()}")


def _activation_grads_quantized(cfg: dict) -> bool:
    method = cfg.get("method")
    if method == "muppet":
        return True
    if method in ("adapt", "fixed"):
        return bool((cfg.get("policy") or {}).get("quantize_activation_grads", False))
    return False


def _point_weights(steps: np.ndarray, total_steps: Optional[int], interval: int) -> np.ndarray:
    """Optimizer steps each logged point stands for: until the next point (the last: until the end)."""
    steps = np.asarray(steps, dtype=float)
    if len(steps) == 0:
        return steps
    end = float(total_steps) if total_steps is not None and total_steps > steps[-1] else steps[-1] + interval
    nxt = np.append(steps[1:], end)
    return np.maximum(nxt - steps, 0.0)


def _total_steps(record: dict) -> Optional[int]:
    eps = [e for e in record.get("epochs", []) if e.get("steps") is not None]
    return int(eps[-1]["steps"]) if eps else None


def trace_costs(record: dict, variant: str = "reference", model: Optional[nn.Module] = None,
                input_shape=None) -> pd.DataFrame:
    """Per logged point of ``record``'s tensor trace: the costs of the chosen variant.

    Columns: ``step``, ``epoch``, ``weight`` (steps the point stands for; 1 in
    ``reference``), ``cost_q``, ``cost_fp32``, ``overhead``, ``size_q``,
    ``size_fp32``, ``nonzero`` (reference: mean over entries; corrected:
    parameter-weighted), ``inference_q``, ``inference_fp32`` (per sample); corrected
    also ``size_dense``, ``memory`` (ratio to float32 training), ``samples_per_step``
    and ``update`` (the SGD update's cost per step).  ``reference`` costs are per
    logged point as released; ``corrected`` costs are per optimizer step (multiply by
    ``weight`` for the point's share of the run).  All costs are in bit-units
    (operations times bits).
    """
    variant = _check_variant(variant)
    trace, interval = _trace(record)
    if trace is None:
        raise ValueError("record has no tensor trace (record['traces']['tensors'] with logged points)")
    cfg = record["config"]
    if model is None:
        model = model_for_record(record)
    else:
        _check_model_matches(model, trace)
    if variant == "reference":
        return _reference_trace_costs(record, trace, interval, model, input_shape)
    return _corrected_trace_costs(record, trace, interval, model, input_shape, _activation_grads_quantized(cfg))


def _reference_trace_costs(record, trace, interval, model, input_shape) -> pd.DataFrame:
    cfg = record["config"]
    table = layer_costs(model, input_shape, "reference")
    entries = reference_entries(trace["names"], cfg.get("model"))
    if len(entries) > len(table):
        raise ValueError(f"{len(entries)} logged entries but only {len(table)} reference MAdds rows")
    madds = table["madds"].to_numpy(float)[: len(entries)]
    tsize = table["tensor_size"].to_numpy(float)[: len(entries)]
    wl = _arr(trace, "word_length")[:, entries]
    nz = 1.0 - _arr(trace, "sparsity", 0.0)[:, entries]
    accum = float(cfg.get("accumulation_steps", 1))
    lb = _arr(trace, "lookback")
    res = _arr(trace, "resolution")
    if lb is not None and res is not None:
        lb, res = lb[:, entries], res[:, entries]
        ok = np.isfinite(lb) & np.isfinite(res) & (lb > 0)
        lb_safe = np.where(ok, lb, 1.0)
        ov = 32.0 * marvin_step(tsize[None, :], lb_safe, np.where(ok, res, 0.0), nz, wl) * interval / (lb_safe * accum)
        ov = np.where(ok, ov, 0.0)
    else:
        ov = np.zeros_like(wl)
    cost_q = (nz * (madds[None, :] * wl + ov)).sum(1)
    cost_fp = np.full(len(wl), (madds * 32.0).sum())
    mean_nz = nz.mean(1)
    return pd.DataFrame({
        "step": trace["step"], "epoch": trace["epoch"], "weight": 1.0,
        "cost_q": cost_q, "cost_fp32": cost_fp, "overhead": ov.sum(1),
        "size_q": wl.sum(1) * mean_nz, "size_fp32": 32.0 * wl.shape[1], "nonzero": mean_nz,
        "inference_q": (nz * madds[None, :] * wl).sum(1), "inference_fp32": (madds * 32.0).sum(),
    })


def _layer_bits_index(table: pd.DataFrame, names: Sequence[str]) -> list:
    """For each corrected row: the trace index of the tensor whose bits it uses, and whether it has a weight."""
    index = {n: i for i, n in enumerate(names)}
    out, last = [], None
    for _, row in table.iterrows():
        base = row["layer"].split("#")[0]
        w = f"{base}.weight"
        if row["has_weight"] and w in index:
            last = index[w]
            out.append((index[w], True))
        elif row["has_weight"]:
            raise ValueError(f"layer {base!r} has a weight but the trace has no tensor {w!r}")
        else:
            out.append((last, False))
    return out


def _corrected_arrays(table, trace, model):
    names = trace["names"]
    wl_t = _arr(trace, "word_length", 32.0)
    sp_t = _arr(trace, "sparsity", 0.0)
    mapping = _layer_bits_index(table, names)
    n_points = wl_t.shape[0]
    bits = np.full((n_points, len(table)), 32.0)
    nz = np.ones((n_points, len(table)))
    for j, (ti, own) in enumerate(mapping):
        if ti is not None:
            bits[:, j] = wl_t[:, ti]
            if own:
                nz[:, j] = 1.0 - sp_t[:, ti]
    return bits, nz, wl_t, sp_t


def _per_sample_costs(table, bits, nz, grad_bits_quantized: bool):
    """Per-sample training cost (bit-units) per point for bits/nz (points x layers); and the fp32 one."""
    macs = table["macs"].to_numpy(float)[None, :]
    small = table["small_ops"].to_numpy(float)[None, :]
    ig = table["needs_input_grad"].to_numpy(float)[None, :]
    hw = table["has_weight"].to_numpy(float)[None, :] * (macs > 0)
    g = bits if grad_bits_quantized else np.maximum(bits, 32.0)
    fwd = (nz * macs + small) * bits
    bwd = (nz * macs * ig + macs * hw + small) * g
    train_q = (fwd + bwd).sum(1)
    train_fp = float(((macs + small) * 32.0 + (macs * ig + macs * hw + small) * 32.0).sum())
    inf_q = fwd.sum(1)
    inf_fp = float(((macs + small) * 32.0).sum())
    return train_q, train_fp, inf_q, inf_fp


def _switch_overhead(trace, model) -> Optional[np.ndarray]:
    """Corrected switching overhead per optimizer step (bit-units), per logged point."""
    lb = _arr(trace, "lookback")
    res = _arr(trace, "resolution")
    if lb is None or res is None:
        return None
    wl = _arr(trace, "word_length", 32.0)
    fl = _arr(trace, "fractional_length", np.nan)
    params = dict(model.named_parameters())
    total = np.zeros(wl.shape[0])
    for k, name in enumerate(trace["names"]):
        if not trace["is_weight"][k]:
            continue
        p = params[name]
        n = float(p.numel())
        n0 = n / p.shape[0]
        lbk, resk = lb[:, k], res[:, k]
        ok = np.isfinite(lbk) & (lbk > 0)
        flk = np.where(np.isfinite(fl[:, k]), fl[:, k], 4.0)
        e = _bisect_steps(flk - 4.0) + _bisect_steps(wl[:, k] - flk)
        per_switch = e * (5.0 * n0 + 3.0 * np.nan_to_num(resk)) + 2.0
        total += np.where(ok, 4.0 * n + per_switch / np.where(ok, lbk, 1.0), 0.0)
    return 32.0 * total


def _bisect_steps(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=float)
    return np.where(d >= 1.0, np.maximum(np.ceil(np.log2(np.maximum(d, 1.0))), 1.0), 0.0)


def _memory_bits(wl_t: np.ndarray, numel: np.ndarray, momentum: bool) -> tuple:
    """Training-state bits per point (quantized run) and of float32 training."""
    quant = wl_t < 32
    per = np.where(quant, 32.0 + 2.0 * wl_t, 64.0) + (32.0 if momentum else 0.0)
    q = (per * numel[None, :]).sum(1)
    fp = float(numel.sum() * (64.0 + (32.0 if momentum else 0.0)))
    return q, fp


def _corrected_trace_costs(record, trace, interval, model, input_shape, grads_q) -> pd.DataFrame:
    cfg = record["config"]
    table = layer_costs(model, input_shape, "corrected")
    bits, nz, wl_t, sp_t = _corrected_arrays(table, trace, model)
    train_q, train_fp, inf_q, inf_fp = _per_sample_costs(table, bits, nz, grads_q)
    samples = float(cfg.get("batch_size", 1)) * float(cfg.get("accumulation_steps", 1))
    numel = np.asarray(trace["numel"], dtype=float)
    update = OPTIMIZER_OPS_PER_PARAM * numel.sum() * 32.0
    ov = _switch_overhead(trace, model)
    ov = np.zeros(len(train_q)) if ov is None else ov
    weights = _point_weights(np.asarray(trace["step"]), _total_steps(record), interval)
    mem_q, mem_fp = _memory_bits(wl_t, numel, float(cfg.get("momentum", 0.0) or 0.0) > 0)
    return pd.DataFrame({
        "step": trace["step"], "epoch": trace["epoch"], "weight": weights,
        "cost_q": samples * train_q + update + ov, "cost_fp32": samples * train_fp + update, "overhead": ov,
        "size_q": ((1.0 - sp_t) * wl_t * numel[None, :]).sum(1), "size_dense": (wl_t * numel[None, :]).sum(1),
        "size_fp32": 32.0 * numel.sum(), "nonzero": ((1.0 - sp_t) * numel[None, :]).sum(1) / numel.sum(),
        "inference_q": inf_q, "inference_fp32": inf_fp, "memory": mem_q / mem_fp,
        "samples_per_step": samples, "update": update,
    })


# ======================================================================= figures
def _accuracies(record: dict) -> tuple:
    """The logged accuracies for the iso-accuracy rule: per-epoch ``val_acc`` (``test_acc`` without a split)."""
    eps = [e for e in record.get("epochs", []) if "epoch" in e and ("val_acc" in e or "test_acc" in e)]
    if eps and all(e.get("val_acc") is not None for e in eps):
        return [e["val_acc"] for e in eps], "val_acc"
    return [e.get("test_acc") for e in eps], "test_acc"


def _target(record: dict, target: Optional[float]) -> Optional[float]:
    if target is not None:
        return target
    cfg = record["config"]
    if cfg.get("target_accuracy") is not None:
        return cfg["target_accuracy"]
    return TARGET_ACCURACY.get((cfg.get("model"), cfg.get("dataset")))


def _rescale_bs(cfg: dict) -> float:
    ds = str(cfg.get("dataset", "")).lower()
    if "cifar" in ds:
        return MUPPET_BASELINE["batch_size"] / float(cfg.get("batch_size", 1))
    if "imagenet" in ds:
        return MUPPET_BASELINE["batch_size_imagenet"] / float(cfg.get("batch_size", 1))
    return 1.0


def run_figures(record: dict, variant: str = "reference", model: Optional[nn.Module] = None,
                target: Optional[float] = None, input_shape=None) -> dict:
    """All cost-model figures of one run, flat (one row of a results table).

    Keys: ``name, model, dataset, method, variant, madds`` (per-sample forward MAdds
    of the variant's table), ``iso_target, iso_metric, iso_reached, iso_index,
    iso_fraction, iso_epoch``, ``train_speedup, train_speedup_iso,
    inference_speedup, model_size, memory_footprint, final_sparsity, avg_sparsity,
    overhead, overhead_share, speedup_vs_muppet_baseline,
    model_size_vs_muppet_baseline`` and, corrected only, ``model_size_dense``.
    A float32 run (no trace) gets speedups and size 1 and sparsity 0.  A MuPPET run
    also gets ``schedule`` (its per-epoch bits, run-length encoded); in ``reference``
    it is priced as the released synthetic MuPPET log (:func:`muppet_figures`).
    """
    variant = _check_variant(variant)
    cfg = record["config"]
    method = cfg.get("method")
    out = {"name": record.get("name"), "model": cfg.get("model"), "dataset": cfg.get("dataset"),
           "method": method, "variant": variant}
    if model is None:
        model = model_for_record(record)
    out["madds"] = total_madds(model, input_shape, variant)
    accs, acc_key = _accuracies(record)
    tgt = _target(record, target)
    iso = iso_accuracy(accs, tgt, int(cfg.get("epochs", len(accs))))
    out.update({"iso_target": tgt, "iso_metric": acc_key, "iso_reached": iso["reached"],
                "iso_index": iso["index"], "iso_fraction": iso["fraction"], "iso_epoch": iso["epoch"]})
    trace, _ = _trace(record)
    if method == "muppet":
        out["schedule"] = [list(s) for s in muppet_schedule_from_record(record)]
    if method == "muppet" and variant == "reference":
        figs = muppet_figures(schedule=out["schedule"], variant="reference", model=model, input_shape=input_shape)
        figs["train_speedup_iso"] = _released_iso(figs["train_speedup"], iso)
        out.update({k: v for k, v in figs.items() if k not in out})
        return _py(out)
    if trace is None:
        if method not in (None, "float32"):
            raise ValueError(f"a {method!r} run needs a tensor trace (record['traces']['tensors']) for the cost model")
        out.update(_float32_figures(variant, iso, len(accs)))
        return _py(out)
    costs = trace_costs(record, variant, model, input_shape)
    if variant == "reference":
        out.update(_reference_figures(costs, cfg, iso))
    else:
        out.update(_corrected_figures(costs, record, iso))
    return _py(out)


def _released_iso(su: float, iso: dict) -> float:
    return su / iso["fraction"] if iso["fraction"] > 0 else float("inf")


def _float32_figures(variant: str, iso: dict, n_epochs: int) -> dict:
    if variant == "reference":
        su_iso, memory = _released_iso(1.0, iso), 3.0  # 1 + 2*size ratio 1, as the released formula gives
    else:
        su_iso = n_epochs / (iso["index"] + 1) if iso["reached"] else float("nan")
        memory = 1.0
    out = {"train_speedup": 1.0, "train_speedup_iso": su_iso, "inference_speedup": 1.0, "model_size": 1.0,
           "memory_footprint": memory, "final_sparsity": 0.0, "avg_sparsity": 0.0, "overhead": 0.0,
           "overhead_share": 0.0, "speedup_vs_muppet_baseline": float("nan"), "model_size_vs_muppet_baseline": 1.0}
    if variant == "corrected":
        out["model_size_dense"] = 1.0
    return out


def _reference_figures(c: pd.DataFrame, cfg: dict, iso: dict) -> dict:
    q, f = c["cost_q"].sum(), c["cost_fp32"].sum()
    su = 2.0 * f / (q + f)
    accum = float(cfg.get("accumulation_steps", 1))
    epochs = MUPPET_BASELINE["epochs"] / float(cfg.get("epochs", 1))
    last = c.iloc[-1]
    size = float(last["size_q"] / last["size_fp32"])
    ov = float((c["overhead"]).sum())
    return {
        "train_speedup": su,
        "train_speedup_iso": _released_iso(su, iso),
        "inference_speedup": float(last["inference_fp32"] / last["inference_q"]),
        "model_size": size,
        "memory_footprint": 1.0 + float(c["size_q"].sum() / c["size_fp32"].sum()) * 2.0,
        "final_sparsity": 1.0 - float(last["nonzero"]),
        "avg_sparsity": 1.0 - float(c["nonzero"].mean()),
        "overhead": ov, "overhead_share": ov / q if q else 0.0,
        "speedup_vs_muppet_baseline": epochs * (2.0 * f / (q + f * (1.0 / accum) * _rescale_bs(cfg))),
        "model_size_vs_muppet_baseline": size,
    }


def _corrected_figures(c: pd.DataFrame, record: dict, iso: dict) -> dict:
    cfg = record["config"]
    w = c["weight"].to_numpy(float)
    q = float((w * c["cost_q"]).sum())
    f = float((w * c["cost_fp32"]).sum())
    ov = float((w * c["overhead"]).sum())
    last = c.iloc[-1]
    total_w = w.sum() if w.sum() > 0 else 1.0
    # iso: quantized cost through the end of epoch `index` against the float32 cost of the whole run
    su_iso = float("nan")
    if iso["reached"]:
        eps = [e for e in record.get("epochs", []) if "epoch" in e]
        end = eps[iso["index"]].get("steps")
        if end is not None:
            steps = c["step"].to_numpy(float)
            upto = np.clip(np.minimum(steps + w, end) - steps, 0.0, None)
            q_iso = float((upto * c["cost_q"]).sum())
            su_iso = f / q_iso if q_iso > 0 else float("inf")
    # MuPPET's float32 baseline: 150 epochs at batch 128, ceil(N/128) steps per epoch
    n_epochs = max(len([e for e in record.get("epochs", []) if "epoch" in e]), 1)
    samples = float(c["samples_per_step"].iloc[0])
    steps_total = float(w.sum())
    n_train = steps_total / n_epochs * samples
    update = float(c["update"].iloc[0])
    per_sample_fp = (float(c["cost_fp32"].iloc[0]) - update) / samples
    b = MUPPET_BASELINE["batch_size"]
    base_total = MUPPET_BASELINE["epochs"] * (n_train * per_sample_fp + math.ceil(n_train / b) * update)
    size = float(last["size_q"] / last["size_fp32"])
    return {
        "train_speedup": f / q,
        "train_speedup_iso": su_iso,
        "inference_speedup": float(last["inference_fp32"] / last["inference_q"]),
        "model_size": size,
        "model_size_dense": float(last["size_dense"] / last["size_fp32"]),
        "memory_footprint": float((w * c["memory"]).sum() / total_w),
        "final_sparsity": 1.0 - float(last["nonzero"]),
        "avg_sparsity": 1.0 - float((w * c["nonzero"]).sum() / total_w),
        "overhead": ov, "overhead_share": ov / q if q else 0.0,
        "speedup_vs_muppet_baseline": base_total / q,
        "model_size_vs_muppet_baseline": size,
    }


# ======================================================================= MuPPET
def muppet_schedule_from_record(record: dict) -> list:
    """A MuPPET record's per-epoch bits as a run-length ``[(bits, epochs), ...]`` (32 = float32).

    Uses the epochs' ``bits`` field; without it, the largest traced word length of each epoch.
    """
    eps = [e for e in record.get("epochs", []) if "epoch" in e]
    bits = []
    if eps and all("bits" in e for e in eps):
        for e in eps:
            b = e["bits"]
            bits.append(32 if b is None or b in (-1, "fp32", "float32") or int(b) >= 32 else int(b))
    else:
        trace, _ = _trace(record)
        if trace is None:
            raise ValueError("MuPPET record has neither per-epoch 'bits' nor a tensor trace")
        by_epoch: dict = {}
        for ep, row in zip(trace["epoch"], trace["word_length"]):
            key = max(int(math.ceil(ep)) - 1, 0)
            by_epoch[key] = max(32 if v is None else v for v in row)
        bits = [by_epoch[k] for k in sorted(by_epoch)]
    out = []
    for b in bits:
        if out and out[-1][0] == b:
            out[-1] = (b, out[-1][1] + 1)
        else:
            out.append((b, 1))
    return out


def _released_log_modules(model) -> list:
    """gen_json's module list: the compute modules (conv, BN, pool, linear) that consume MAdds rows."""
    mods = []
    for _, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Linear)):
            mods.append(m)
    return mods


def muppet_figures(model_name: Optional[str] = None, schedule=None, record: Optional[dict] = None,
                   variant: str = "reference", model: Optional[nn.Module] = None, input_shape=None,
                   released_resnet_bug: bool = False, batch_size: int = 128, config: Optional[dict] = None) -> dict:
    """MuPPET's figures under the cost model: from ``schedule`` ((bits, epochs) pairs; default the
    preset :data:`MUPPET_SCHEDULES` of ``model_name``) or from a live MuPPET ``record``.

    Keys: ``schedule`` (the (bits, epochs) used), ``epochs``, ``train_speedup``
    (against float32 over the same epochs, as released), ``memory_footprint``,
    ``model_size`` (final), ``inference_speedup`` (final state; 1 after the FP32
    phase), ``final_sparsity``/``avg_sparsity`` (0: not modelled), ``overhead`` (0),
    ``speedup_vs_muppet_baseline`` (against 150 float32 epochs), ``madds``.
    ``released_resnet_bug=True`` (reference only): a ResNet analysis uses the AlexNet
    model and the AlexNet schedule, as the released ``run_analysitcs`` does.
    ``corrected`` with a live record prices the tensor trace (sparsity included).
    """
    variant = _check_variant(variant)
    if record is not None:
        cfg = record["config"]
        model_name = model_name or cfg.get("model")
        if schedule is None:
            schedule = muppet_schedule_from_record(record)
        batch_size = cfg.get("batch_size", batch_size)
        config = cfg
    if released_resnet_bug:
        if variant != "reference":
            raise ValueError("released_resnet_bug applies to the reference variant only")
        if model_name == "resnet20":
            model_name, model, schedule = "alexnet_cifar", None, MUPPET_SCHEDULES["alexnet_cifar"]
    if schedule is None:
        if model_name not in MUPPET_SCHEDULES:
            raise ValueError(f"no MuPPET preset schedule for model {model_name!r}; pass schedule=")
        schedule = MUPPET_SCHEDULES[model_name]
    schedule = [(int(b), int(n)) for b, n in schedule]
    for b, n in schedule:
        if not 1 <= b <= 32 or n < 0:
            raise ValueError(f"bad schedule entry ({b}, {n}): bits in 1..32, epochs >= 0")
    if model is None:
        if model_name is None:
            raise ValueError("give model_name, model or record")
        model = build_model(model_name, 10, init="torch")
    per_epoch_bits = np.array([b for b, n in schedule for _ in range(n)], dtype=float)
    n_epochs = len(per_epoch_bits)
    if n_epochs == 0:
        raise ValueError("empty MuPPET schedule")
    out = {"schedule": [list(s) for s in schedule], "epochs": n_epochs,
           "madds": total_madds(model, input_shape, variant), "final_sparsity": 0.0, "avg_sparsity": 0.0,
           "overhead": 0.0, "overhead_share": 0.0}
    final_bits = per_epoch_bits[-1]
    if variant == "reference":
        table = layer_costs(model, input_shape, "reference")
        n_entries = len(_released_log_modules(model))
        madds = table["madds"].to_numpy(float)[:n_entries]
        q = (madds.sum() * per_epoch_bits).sum()
        f = madds.sum() * 32.0 * n_epochs
        su = 2.0 * f / (q + f)
        size_ratio = per_epoch_bits / 32.0
        out.update({
            "train_speedup": su,
            "memory_footprint": 1.0 + 2.0 * float(size_ratio.mean()),
            "model_size": float(final_bits / 32.0),
            "inference_speedup": float(madds.sum() * 32.0 / (madds.sum() * final_bits)),
            "speedup_vs_muppet_baseline": su,
            "model_size_vs_muppet_baseline": float(final_bits / 32.0),
        })
        return _py(out)
    # corrected
    if record is not None and _trace(record)[0] is not None:
        costs = trace_costs(record, "corrected", model, input_shape)
        accs, _ = _accuracies(record)
        tgt = _target(record, None)
        figs = _corrected_figures(costs, record, iso_accuracy(accs, tgt, len(accs)))
        figs.pop("train_speedup_iso")
        out.update(figs)
        return _py(out)
    table = layer_costs(model, input_shape, "corrected")
    n_layers = len(table)
    bits = np.repeat(per_epoch_bits[:, None], n_layers, axis=1)
    train_q, train_fp, inf_q, inf_fp = _per_sample_costs(table, bits, np.ones_like(bits), True)
    numel = np.array([p.numel() for p in model.parameters()], dtype=float)
    update = OPTIMIZER_OPS_PER_PARAM * numel.sum() * 32.0 / float(batch_size)  # per sample
    q = float((train_q + update).sum())
    f_epoch = train_fp + update
    mom = float((config or {}).get("momentum", 0.9) or 0.0) > 0
    mem_q, mem_fp = _memory_bits(np.repeat(per_epoch_bits[:, None], len(numel), axis=1), numel, mom)
    out.update({
        "train_speedup": f_epoch * n_epochs / q,
        "memory_footprint": float((mem_q / mem_fp).mean()),
        "model_size": float(final_bits / 32.0),
        "model_size_dense": float(final_bits / 32.0),
        "inference_speedup": float(inf_fp / inf_q[-1]),
        "speedup_vs_muppet_baseline": MUPPET_BASELINE["epochs"] * f_epoch / q,
        "model_size_vs_muppet_baseline": float(final_bits / 32.0),
    })
    return _py(out)


def figures_frame(records: Sequence[dict], variant: str = "reference", **kwargs) -> pd.DataFrame:
    """:func:`run_figures` of every record, one row each."""
    return pd.DataFrame([run_figures(r, variant, **kwargs) for r in records])
