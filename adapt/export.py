"""The fully quantized model: integer export and integer-arithmetic reference inference.

AdaPT's claim is that after training the model is fully quantized (unlike MuPPET,
whose last phase is float32).  This module shows it: a model quantized with a
:class:`~adapt.layers.QuantizedModel` (every parameter with a
:class:`~adapt.quant.FixedPoint` ``weight_format``, every quantizable layer with
input and output formats) is written as integers, and a reference inference that
uses only integer arithmetic reproduces the fake-quantized model's predictions.

Export layout (a directory; no pickle anywhere)
-----------------------------------------------
``<dir>/meta.json``   UTF-8 JSON::

    format        "adapt.export/1"
    model         free-form description (e.g. {"name": "alexnet_cifar", "num_classes": 10})
    input_shape   [C, H, W]
    tensors       {key: {"shape": [...], "dtype": "int8"|"int16"|"int32"|"int64",
                         "word_length": WL, "fractional_length": FL, "kind": "param"|"derived"}}
                  value of element k = tensor[k] * 2**-FL.  A "param" is a model parameter
                  (WL in 1..32, stored in the smallest of int8/int16/int32 holding WL bits);
                  a "derived" tensor is an integer constant computed at export (BatchNorm's
                  folded multiplier and offset, WL up to 64)
    layers        {module name: {"type", "input_format": [WL, FL], "output_format": [WL, FL],
                                 "weight", "bias" (tensor keys or null), hyper-parameters
                                 (kernel_size, stride, padding, dilation, groups, ...)}}
    graph         [{"name", "op", "inputs": [node names], "module" (for module ops), attrs}]
                  in execution order; ops: input, conv2d, linear, batchnorm2d, relu, tanh,
                  maxpool2d, avgpool2d, flatten, add, output
    input_format  [WL, FL] or null: the model-level input quantizer (null: each layer fed by the
                  input quantizes it with its own input format)
    sizes         see :func:`export_size`

``<dir>/tensors.npz`` ``numpy.savez`` of exactly the keys of ``tensors``; read with
``allow_pickle=False``.

:func:`load_export` validates everything (format tag, keys present and no extra
ones, dtype = the declared one = the smallest holding WL, shapes, WL/FL ranges,
values inside the WL-bit range, graph references) and raises :class:`ExportError`
with a message naming the offending entry.

Integer inference (:func:`integer_forward`)
-------------------------------------------
Every activation is an int64 array ``X`` with an exponent ``f`` (value ``X*2**-f``).

* Requantization to ``(WL, FL)``: ``X*2**(FL-f)`` -- an exact left shift when
  ``FL >= f``, otherwise a right shift rounding half to even (what
  ``fixed_point(..., rounding="nearest")`` does) -- then saturation to
  ``[-2**(WL-1), 2**(WL-1)-1]``.  Each quantizable layer requantizes its input to its
  input format and its result to its output format, as the fake-quantized model does.
* Conv / linear: integer weights times integer activations accumulated in int64
  (exponent ``f_in + FL_w``; a bound ``K*max|X|*max|W| < 2**62`` is checked first);
  the bias is shifted to the accumulator's exponent (the accumulator is shifted up
  instead when the bias has more fractional bits) and added.  Two backends compute
  the same integers: ``"torch"`` (torch's int64 ``conv2d``/``matmul`` kernels; the
  default) and ``"numpy"`` (im2col + numpy int64 matmul, an independent check).  A
  third, ``"float64"``, runs the same integer products on float64 BLAS after checking
  ``K*max|X|*max|W| < 2**53`` per layer: every partial sum is then an integer that
  float64 holds exactly, so the result is bit-identical to int64 accumulation (the
  tests check this), at BLAS speed; it refuses layers where the bound fails.
* ReLU and max pooling act on the integers (same exponent).  Tanh (LeNet-5) is a table
  lookup: ``round(tanh(X*2**-f) * 2**30)`` with exponent 30
  (:data:`TANH_FRACTIONAL_LENGTH`; the table is evaluated with float64 ``tanh``), which the
  next layer requantizes to its input format; the official QLeNet5_FP leaves Tanh
  unquantized too (lorenz0890/AdaPT@81e54e0 models/lenet5_fp.py L35-L47).  The residual add aligns
  both operands to the larger exponent (exact left shift) and adds.
* Average pooling: an integer sum; a power-of-two window divides by a shift (exact);
  other windows multiply by a 30-bit reciprocal (approximate; not used by our models).
* BatchNorm (eval mode) is **implemented in fixed point, not folded** into the conv:
  the fake-quantized model quantizes the conv output before BN, so folding would
  change the computation.  ``y = a*x + c`` with ``a = gamma/sqrt(var + eps)``,
  ``c = beta - mean*a`` (gamma, beta the quantized parameters) is exported as an
  int32 multiplier ``A = round(a*2**S)`` (one shift ``S`` per layer, ``|A| < 2**30``)
  and an offset ``C = round(c*2**(f_in + S))``; ``Y = requant(X*A + C)``.  The
  constants are rounded, so BN outputs may differ from the float BN by one unit in the
  last place where the exact value lies close to a rounding boundary.
* The only float step is the encoder: the float input is quantized (nearest) to the
  first layer's input format.

Equality with the fake-quantized model (the tests): for conv/linear/ReLU/pooling
networks (AlexNet) the integer result equals the fake-quantized model run in float64
*exactly* (float64 accumulates these integers exactly); against the float32 model,
float32 accumulation can round a sum across a requantization boundary, so logits may
differ by a few units in the last place and predictions are compared (equal on the
digits test set).  With BatchNorm (ResNet-20) the rounded BN constants could add the
same kind of last-place differences (none seen against the float64 model: logits and
predictions equal); against the float32 model, float32 BN and accumulation differ by a
unit here and there, 20 layers carry that to tens of output units, and a near-tie
prediction can flip (1 of the 360 digits test images in the test, which therefore
requires 99% agreement with the float32 model and 100% with the float64 one).  MuPPET's dynamic
fixed point (a scale per call) has no static integer form: exporting a model with a
:class:`~adapt.quant.DynamicFixedPoint` format raises :class:`ExportError`.
"""
from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from adapt.models import input_shape_of
from adapt.quant import FixedPoint, fixed_point

__all__ = [
    "FORMAT",
    "ExportError",
    "QuantizedExport",
    "int_dtype_for",
    "export_model",
    "load_export",
    "export_size",
    "integer_forward",
    "integer_logits",
    "integer_predict",
    "round_shift",
    "requantize",
]

FORMAT = "adapt.export/1"
META_FILE = "meta.json"
TENSORS_FILE = "tensors.npz"

#: Bits of BatchNorm's folded multiplier (|A| < 2**BN_MULTIPLIER_BITS).
BN_MULTIPLIER_BITS = 30

_INT_DTYPES = (("int8", 8), ("int16", 16), ("int32", 32), ("int64", 64))


class ExportError(ValueError):
    """An export that cannot be written, or a file that is not a valid export."""


def int_dtype_for(word_length: int) -> str:
    """The smallest of int8/int16/int32/int64 holding a signed ``word_length``-bit integer."""
    for name, bits in _INT_DTYPES:
        if word_length <= bits:
            return name
    raise ExportError(f"no integer type holds {word_length} bits")


# ======================================================================= integer helpers
def round_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """``x * 2**-shift`` for int64 ``x``: exact left shift for ``shift <= 0``, otherwise
    a right shift rounding half to even."""
    x = np.asarray(x, dtype=np.int64)
    if shift <= 0:
        return np.left_shift(x, -shift)
    q = np.right_shift(x, shift)  # floor division by 2**shift (arithmetic shift)
    r = x - np.left_shift(q, shift)
    half = np.int64(1) << np.int64(shift - 1)
    up = (r > half) | ((r == half) & ((q & 1) == 1))
    return q + up.astype(np.int64)


def requantize(x: np.ndarray, exponent: int, fmt) -> np.ndarray:
    """Integer ``x`` with value ``x*2**-exponent`` to format ``(WL, FL)``: round half to even, saturate."""
    wl, fl = fmt
    y = round_shift(x, exponent - fl)
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    return np.clip(y, lo, hi)


def _quantize_float(x: np.ndarray, fmt) -> np.ndarray:
    """The encoder: float input to integers of ``fmt`` with the library's nearest rounding."""
    wl, fl = fmt
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    q = fixed_point(t, wl, fl, "nearest")
    return torch.round(q * 2.0 ** fl).to(torch.int64).numpy()


# ======================================================================= export
@dataclass
class QuantizedExport:
    """A loaded (validated) export: ``meta`` (the JSON), ``tensors`` (key -> integer array)."""

    meta: dict
    tensors: dict
    path: Optional[Path] = None
    sizes: dict = field(default_factory=dict)


def _fmt_pair(fmt, what: str):
    if fmt is None:
        raise ExportError(f"{what} has no format: every quantizable layer needs input and output formats "
                          "and every parameter a weight format (set them, e.g. with a FixedPrecisionPolicy)")
    if not isinstance(fmt, FixedPoint):
        raise ExportError(f"{what} has format {fmt}, but only FixedPoint formats have a static integer form "
                          "(MuPPET's DynamicFixedPoint picks a scale per call)")
    return [int(fmt.word_length), int(fmt.fractional_length)]


#: Modules exported as one graph op each, by type (checked in this order).
_MODULE_OPS = ((nn.Conv2d, "conv2d"), (nn.Linear, "linear"), (nn.BatchNorm2d, "batchnorm2d"), (nn.ReLU, "relu"),
               (nn.MaxPool2d, "maxpool2d"), (nn.AvgPool2d, "avgpool2d"), (nn.Tanh, "tanh"))

#: Fractional bits of the tanh table's output (LeNet-5): tanh of the integer input, rounded to 2**-30.
TANH_FRACTIONAL_LENGTH = 30


def _graph(model: nn.Module, qlayers: dict) -> list:
    import torch.fx as fx

    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # pragma: no cover - depends on the model
        raise ExportError(f"cannot trace the model's graph with torch.fx: {exc}") from exc
    modules = dict(model.named_modules())
    nodes = []
    for node in gm.graph.nodes:
        entry = {"name": node.name, "inputs": []}
        if node.op == "placeholder":
            if any(n["op"] == "input" for n in nodes):
                raise ExportError("models with more than one input are not supported")
            entry["op"] = "input"
        elif node.op == "output":
            entry.update(op="output", inputs=[node.args[0].name])
        elif node.op == "call_module":
            m = modules[node.target]
            entry["module"] = node.target
            entry["inputs"] = [a.name for a in node.args]
            op = next((name for cls, name in _MODULE_OPS if isinstance(m, cls)), None)
            if op is not None:
                entry["op"] = op
            elif isinstance(m, nn.Flatten):
                entry.update(op="flatten", start_dim=m.start_dim, end_dim=m.end_dim)
            else:
                raise ExportError(f"layer {node.target!r} of type {type(m).__name__} is not supported by the "
                                  "integer export (supported: Conv2d, Linear, BatchNorm2d, ReLU, Tanh, MaxPool2d, "
                                  "AvgPool2d, Flatten, torch.flatten, residual add)")
            if entry["op"] in ("conv2d", "linear", "batchnorm2d", "avgpool2d") and node.target not in qlayers:
                raise ExportError(f"layer {node.target!r} is not a quantized layer of the QuantizedModel")
        elif node.op == "call_function" and node.target in (torch.flatten,):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            entry.update(op="flatten", inputs=[node.args[0].name], start_dim=int(start), end_dim=int(end))
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            if len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args) or node.kwargs:
                raise ExportError(f"only tensor + tensor additions are supported (node {node.name!r})")
            entry.update(op="add", inputs=[a.name for a in node.args])
        else:
            raise ExportError(f"operation {node.op} {node.target!r} (node {node.name!r}) is not supported by the "
                              "integer export")
        nodes.append(entry)
    return nodes


def _check_on_grid(name: str, value: torch.Tensor, fmt) -> np.ndarray:
    wl, fl = fmt
    scaled = value.detach().to(torch.float64).cpu() * 2.0 ** fl
    ints = torch.round(scaled)
    if not torch.equal(ints, scaled):
        raise ExportError(f"parameter {name!r} is not on the grid of its format {tuple(fmt)}: "
                          "call qmodel.quantize_weights() before exporting")
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    if ints.numel() and (ints.min() < lo or ints.max() > hi):
        raise ExportError(f"parameter {name!r} exceeds the {wl}-bit range of its format")
    return ints.to(torch.int64).numpy().astype(int_dtype_for(wl))


def _pair(v) -> list:
    return [int(a) for a in v] if isinstance(v, (tuple, list)) else [int(v), int(v)]


def export_model(model: nn.Module, qmodel, path, input_shape=None, model_info: Optional[dict] = None) -> dict:
    """Write ``model`` quantized by ``qmodel`` to the directory ``path``; returns :func:`export_size`'s dict.

    The working parameters must hold the quantized values (``qmodel.quantize_weights()``);
    BatchNorm uses its running statistics (eval mode).  See the module docstring.
    """
    if qmodel.model is not model:
        raise ExportError("qmodel does not wrap this model")
    if input_shape is None:  # (C, 32, 32), C from the first conv (3 for CIFAR models, 1 for LeNet-5)

        input_shape = input_shape_of(model)
    path = Path(path)
    graph = _graph(model, qmodel.layers)
    used_layers = {n["module"] for n in graph if "module" in n}
    modules = dict(model.named_modules())
    tensors, arrays = {}, {}

    def put(key, array, wl, fl, kind):
        array = np.ascontiguousarray(array)
        tensors[key] = {"shape": list(array.shape), "dtype": str(array.dtype), "word_length": int(wl),
                        "fractional_length": int(fl), "kind": kind}
        arrays[key] = array

    for name, qp in qmodel.params.items():
        if qp.layer not in used_layers:
            raise ExportError(f"parameter {name!r} belongs to no exported layer")
        fmt = _fmt_pair(qp.weight_format, f"parameter {name!r}")
        put(name, _check_on_grid(name, qp.param, fmt), fmt[0], fmt[1], "param")

    layers = {}
    for node in graph:
        if "module" not in node:
            continue
        mname, m = node["module"], modules[node["module"]]
        entry = {"type": type(m).__name__}
        if mname in qmodel.layers:
            ql = qmodel.layers[mname]
            entry["input_format"] = _fmt_pair(ql.input_format, f"input of layer {mname!r}")
            entry["output_format"] = _fmt_pair(ql.output_format, f"output of layer {mname!r}")
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or _pair(m.dilation) != [1, 1] or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ExportError(f"conv {mname!r}: only groups=1, dilation=1, numeric zero padding are supported")
            entry.update(kernel_size=_pair(m.kernel_size), stride=_pair(m.stride), padding=_pair(m.padding),
                         weight=f"{mname}.weight", bias=f"{mname}.bias" if m.bias is not None else None)
        elif isinstance(m, nn.Linear):
            entry.update(weight=f"{mname}.weight", bias=f"{mname}.bias" if m.bias is not None else None)
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.dilation) != [1, 1] or m.ceil_mode or m.return_indices:
                raise ExportError(f"max pool {mname!r}: only dilation=1, ceil_mode=False are supported")
            entry.update(kernel_size=_pair(m.kernel_size), stride=_pair(m.stride if m.stride is not None else m.kernel_size),
                         padding=_pair(m.padding))
        elif isinstance(m, nn.AvgPool2d):
            if _pair(m.padding) != [0, 0] or m.ceil_mode or m.divisor_override is not None:
                raise ExportError(f"avg pool {mname!r}: only padding=0, ceil_mode=False, no divisor_override")
            entry.update(kernel_size=_pair(m.kernel_size), stride=_pair(m.stride if m.stride is not None else m.kernel_size))
        elif isinstance(m, nn.BatchNorm2d):
            if m.running_mean is None or m.running_var is None:
                raise ExportError(f"batch norm {mname!r} has no running statistics (track_running_stats=False)")
            gamma = m.weight.detach().double() if m.weight is not None else torch.ones(m.num_features, dtype=torch.float64)
            beta = m.bias.detach().double() if m.bias is not None else torch.zeros(m.num_features, dtype=torch.float64)
            a = gamma / torch.sqrt(m.running_var.detach().double() + m.eps)
            c = beta - m.running_mean.detach().double() * a
            amax = float(a.abs().max()) if a.numel() else 0.0
            shift = BN_MULTIPLIER_BITS - 1 - (math.frexp(amax)[1] if amax > 0 else 0)
            mult = torch.round(a * 2.0 ** shift)
            f_in = entry["input_format"][1]
            off = torch.round(c * 2.0 ** (f_in + shift))
            if off.numel() and float(off.abs().max()) >= 2.0 ** 62:
                raise ExportError(f"batch norm {mname!r}: folded offset does not fit 64 bits")
            mult_np = mult.to(torch.int64).numpy().astype("int32")
            off_bits = int(max(float(off.abs().max()) if off.numel() else 0.0, 1.0)).bit_length() + 1
            off_np = off.to(torch.int64).numpy().astype(int_dtype_for(max(off_bits, 8)))
            put(f"{mname}.bn_multiplier", mult_np, 32, shift, "derived")
            put(f"{mname}.bn_offset", off_np, np.iinfo(off_np.dtype).bits, f_in + shift, "derived")
            entry.update(multiplier=f"{mname}.bn_multiplier", offset=f"{mname}.bn_offset",
                         weight=f"{mname}.weight" if m.weight is not None else None,
                         bias=f"{mname}.bias" if m.bias is not None else None, eps=float(m.eps))
        layers[mname] = entry

    input_format = None
    if qmodel.input_format is not None:
        input_format = _fmt_pair(qmodel.input_format, "the model input")
    meta = {"format": FORMAT, "model": dict(model_info or {"class": type(model).__name__}),
            "input_shape": [int(s) for s in input_shape], "tensors": tensors, "layers": layers, "graph": graph,
            "input_format": input_format}
    meta["sizes"] = _sizes(meta, arrays)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / TENSORS_FILE, "wb") as fh:
        np.savez(fh, **arrays)
    with open(path / META_FILE, "w") as fh:
        json.dump(meta, fh, indent=1)
    meta["sizes"]["file_bytes"] = (path / TENSORS_FILE).stat().st_size + (path / META_FILE).stat().st_size
    return dict(meta["sizes"])


def _sizes(meta: dict, arrays: dict) -> dict:
    params = {k: v for k, v in meta["tensors"].items() if v["kind"] == "param"}
    n = sum(math.prod(v["shape"]) for v in params.values())
    stored = sum(int(arrays[k].nbytes) for k in params)
    packed = sum(math.prod(v["shape"]) * v["word_length"] for v in params.values()) / 8.0
    derived = sum(int(arrays[k].nbytes) for k, v in meta["tensors"].items() if v["kind"] == "derived")
    return {"parameters": int(n), "float32_bytes": int(4 * n), "stored_bytes": int(stored),
            "packed_bytes": float(packed), "derived_bytes": int(derived),
            "stored_ratio": stored / (4.0 * n) if n else float("nan"),
            "packed_ratio": packed / (4.0 * n) if n else float("nan")}


def export_size(export: QuantizedExport) -> dict:
    """Sizes of an export: ``parameters``; ``float32_bytes`` (4 per parameter);
    ``stored_bytes`` (the integer containers of the parameters, int8/16/32);
    ``packed_bytes`` (``sum n*WL/8``, bit-packed); ``derived_bytes`` (BN constants);
    ``stored_ratio``/``packed_ratio`` against float32."""
    return _sizes(export.meta, export.tensors)


# ======================================================================= load + validate
def load_export(path) -> QuantizedExport:
    """Read and validate an export directory; raises :class:`ExportError` on anything inconsistent."""
    path = Path(path)
    meta_path, npz_path = path / META_FILE, path / TENSORS_FILE
    for p in (meta_path, npz_path):
        if not p.is_file():
            raise ExportError(f"{path}: missing {p.name} (an export is a directory with {META_FILE} and {TENSORS_FILE})")
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{meta_path}: format tag is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                          f"expected {FORMAT!r}")
    for key in ("tensors", "layers", "graph", "input_shape"):
        if key not in meta:
            raise ExportError(f"{meta_path}: missing key {key!r}")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise ExportError(f"{npz_path}: cannot read without pickle ({exc})") from exc
    except Exception as exc:
        raise ExportError(f"{npz_path}: not a readable .npz archive ({exc})") from exc
    _validate(meta, arrays)
    exp = QuantizedExport(meta=meta, tensors=arrays, path=path)
    exp.sizes = export_size(exp)
    return exp


def _check_fmt(fmt, what, max_wl=32):
    if (not isinstance(fmt, (list, tuple)) or len(fmt) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in fmt)):
        raise ExportError(f"{what}: format must be [WL, FL] integers, got {fmt!r}")
    wl, fl = fmt
    if not 1 <= wl <= max_wl:
        raise ExportError(f"{what}: word length {wl} outside 1..{max_wl}")
    if not 0 <= fl <= 64:
        raise ExportError(f"{what}: fractional length {fl} outside 0..64")


def _validate(meta: dict, arrays: dict) -> None:
    declared = meta["tensors"]
    missing = sorted(set(declared) - set(arrays))
    if missing:
        raise ExportError(f"tensor(s) {missing} declared in {META_FILE} are missing from {TENSORS_FILE}")
    extra = sorted(set(arrays) - set(declared))
    if extra:
        raise ExportError(f"{TENSORS_FILE} holds undeclared tensor(s) {extra}")
    for key, spec in declared.items():
        for k in ("shape", "dtype", "word_length", "fractional_length", "kind"):
            if k not in spec:
                raise ExportError(f"tensor {key!r}: metadata lacks {k!r}")
        kind = spec["kind"]
        if kind not in ("param", "derived"):
            raise ExportError(f"tensor {key!r}: kind {kind!r} is not 'param' or 'derived'")
        _check_fmt([spec["word_length"], spec["fractional_length"]], f"tensor {key!r}",
                   32 if kind == "param" else 64)
        arr = arrays[key]
        if list(arr.shape) != list(spec["shape"]):
            raise ExportError(f"tensor {key!r}: shape {list(arr.shape)} does not match the declared {spec['shape']}")
        if str(arr.dtype) != spec["dtype"]:
            raise ExportError(f"tensor {key!r}: dtype {arr.dtype} does not match the declared {spec['dtype']}")
        wl = spec["word_length"]
        if kind == "param" and spec["dtype"] != int_dtype_for(wl):
            raise ExportError(f"tensor {key!r}: a {wl}-bit parameter must be stored as {int_dtype_for(wl)}, "
                              f"not {spec['dtype']}")
        if arr.dtype.kind != "i":
            raise ExportError(f"tensor {key!r}: dtype {arr.dtype} is not a signed integer type")
        if np.iinfo(arr.dtype).bits < wl:
            raise ExportError(f"tensor {key!r}: {arr.dtype} cannot hold {wl} bits")
        if arr.size and wl < 64:
            lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
            if int(arr.min()) < lo or int(arr.max()) > hi:
                raise ExportError(f"tensor {key!r}: values outside the {wl}-bit range [{lo}, {hi}]")
    names = set()
    layers = meta["layers"]
    for node in meta["graph"]:
        for k in ("name", "op", "inputs"):
            if k not in node:
                raise ExportError(f"graph node {node!r} lacks {k!r}")
        for inp in node["inputs"]:
            if inp not in names:
                raise ExportError(f"graph node {node['name']!r} reads {inp!r} before it is computed")
        names.add(node["name"])
        op = node["op"]
        if op not in ("input", "conv2d", "linear", "batchnorm2d", "relu", "tanh", "maxpool2d", "avgpool2d",
                      "flatten", "add", "output"):
            raise ExportError(f"graph node {node['name']!r}: unknown op {op!r}")
        if op in ("conv2d", "linear", "batchnorm2d", "avgpool2d", "relu", "tanh", "maxpool2d"):
            mod = node.get("module")
            if mod not in layers:
                raise ExportError(f"graph node {node['name']!r} refers to unknown layer {mod!r}")
            layer = layers[mod]
            if op in ("conv2d", "linear", "batchnorm2d", "avgpool2d"):
                for k in ("input_format", "output_format"):
                    if k not in layer:
                        raise ExportError(f"layer {mod!r}: missing {k!r}")
                    _check_fmt(layer[k], f"layer {mod!r} {k}")
            for k in ("weight", "bias", "multiplier", "offset"):
                ref = layer.get(k)
                if ref is not None and ref not in declared:
                    raise ExportError(f"layer {mod!r}: {k} tensor {ref!r} is not in the export")
            if op in ("conv2d", "linear") and layer.get("weight") is None:
                raise ExportError(f"layer {mod!r}: no weight tensor")
            if op == "batchnorm2d" and (layer.get("multiplier") is None or layer.get("offset") is None):
                raise ExportError(f"layer {mod!r}: batch norm without its folded multiplier/offset")
    if not meta["graph"] or meta["graph"][-1]["op"] != "output":
        raise ExportError("graph does not end with an output node")
    if meta.get("input_format") is not None:
        _check_fmt(meta["input_format"], "input_format")


# ======================================================================= integer inference
BACKENDS = ("torch", "numpy", "float64")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _check_no_overflow(k: int, a: np.ndarray, b: np.ndarray, what: str) -> None:
    amax = int(np.abs(a).max()) if a.size else 0
    bmax = int(np.abs(b).max()) if b.size else 0
    if k * amax * bmax >= 2 ** 62:
        raise ExportError(f"{what}: int64 accumulation could overflow (K*max|x|*max|w| >= 2**62)")


def _exact_in_float64(k: int, a: np.ndarray, b: np.ndarray, what: str) -> None:
    amax = int(np.abs(a).max()) if a.size else 0
    bmax = int(np.abs(b).max()) if b.size else 0
    if k * amax * bmax >= 2 ** 53:
        raise ExportError(f"{what}: backend 'float64' is not exact here (K*max|x|*max|w| >= 2**53); "
                          "use backend='torch' (int64)")


def _int_matmul(a: np.ndarray, b: np.ndarray, backend: str) -> np.ndarray:
    """``a @ b`` for int64 ``a`` (M, K) and ``b`` (K, N): int64 multiply-accumulate."""
    if backend == "float64":
        return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    if backend == "torch":
        return torch.matmul(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)),
                            torch.from_numpy(np.ascontiguousarray(b, dtype=np.int64))).numpy()
    return a.astype(np.int64) @ b.astype(np.int64)


def _im2col(x: np.ndarray, kh: int, kw: int, stride, padding, pad_value=0) -> tuple:
    ph, pw = padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    return win, win.shape[2], win.shape[3]


def _conv(x, w, stride, padding, backend):
    """Integer convolution, int64 accumulation: torch's integer conv2d kernel, or numpy im2col + int64 matmul."""
    if backend == "float64":
        out = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
                                         stride=tuple(stride), padding=tuple(padding))
        return torch.round(out).to(torch.int64).numpy()
    if backend == "torch":
        return torch.nn.functional.conv2d(torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)),
                                          torch.from_numpy(np.ascontiguousarray(w, dtype=np.int64)),
                                          stride=tuple(stride), padding=tuple(padding)).numpy()
    n, c = x.shape[:2]
    co, ci, kh, kw = w.shape
    win, ho, wo = _im2col(x, kh, kw, stride, padding)
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
    out = _int_matmul(cols, w.reshape(co, -1).T, "numpy")
    return out.reshape(n, ho, wo, co).transpose(0, 3, 1, 2)


def _add_bias(acc: np.ndarray, f_acc: int, bias: Optional[np.ndarray], f_bias: int, channel_axis: int) -> tuple:
    if bias is None:
        return acc, f_acc
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    b = bias.astype(np.int64).reshape(shape)
    if f_bias <= f_acc:
        return acc + np.left_shift(b, f_acc - f_bias), f_acc
    return np.left_shift(acc, f_bias - f_acc) + b, f_bias


def integer_forward(export: QuantizedExport, x, backend: str = "torch") -> tuple:
    """Run the export on float input ``x`` (N, C, H, W) with integer arithmetic.

    Returns ``(Y, f)``: the int64 output and its exponent (value ``Y * 2**-f``).
    ``backend``: ``"torch"`` (torch's int64 conv2d/matmul kernels), ``"numpy"``
    (im2col + numpy int64 matmul; slower, an independent implementation) or
    ``"float64"`` (see the module docstring: exact, checked, and fast).
    """
    backend = _check_backend(backend)
    meta, T = export.meta, export.tensors
    specs = meta["tensors"]
    layers = meta["layers"]
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    env: dict = {}

    def tensor(key):
        return T[key].astype(np.int64), specs[key]["fractional_length"]

    def as_int(value, fmt, what):
        """Requantize a value (("int", X, f) or ("float", x)) to fmt."""
        if value[0] == "float":
            return _quantize_float(value[1], fmt)
        return requantize(value[1], value[2], fmt)

    def need_int(value, what):
        if value[0] == "float":
            raise ExportError(f"{what} consumes the float input directly; it needs a quantized layer or a model "
                              "input_format first")
        return value[1], value[2]

    for node in meta["graph"]:
        op, name = node["op"], node["name"]
        ins = [env[i] for i in node["inputs"]]
        if op == "input":
            fmt = meta.get("input_format")
            env[name] = ("float", x) if fmt is None else ("int", _quantize_float(x, fmt), fmt[1])
            continue
        if op == "output":
            return need_int(ins[0], "the output")
        layer = layers.get(node.get("module"), {})
        if op in ("conv2d", "linear", "batchnorm2d", "avgpool2d"):
            fin, fout = layer["input_format"], layer["output_format"]
            X = as_int(ins[0], fin, node["module"])
            f_x = fin[1]
            if op == "conv2d":
                W, f_w = tensor(layer["weight"])
                _check_no_overflow(W[0].size, X, W, node["module"])
                if backend == "float64":
                    _exact_in_float64(W[0].size, X, W, node["module"])
                acc = _conv(X, W, layer["stride"], layer["padding"], backend)
                b = tensor(layer["bias"]) if layer.get("bias") else (None, 0)
                acc, f = _add_bias(acc, f_x + f_w, b[0], b[1], 1)
            elif op == "linear":
                W, f_w = tensor(layer["weight"])
                _check_no_overflow(W.shape[1], X, W, node["module"])
                if backend == "float64":
                    _exact_in_float64(W.shape[1], X, W, node["module"])
                acc = _int_matmul(X.reshape(X.shape[0], -1), W.T, backend)
                b = tensor(layer["bias"]) if layer.get("bias") else (None, 0)
                acc, f = _add_bias(acc, f_x + f_w, b[0], b[1], 1)
            elif op == "batchnorm2d":
                A, s = tensor(layer["multiplier"])
                C, f_c = tensor(layer["offset"])
                if f_c != f_x + s:
                    raise ExportError(f"layer {node['module']!r}: offset exponent {f_c} != input FL + shift {f_x + s}")
                acc = X * A.reshape(1, -1, 1, 1) + C.reshape(1, -1, 1, 1)
                f = f_x + s
            else:  # avgpool2d
                kh, kw = layer["kernel_size"]
                win, _, _ = _im2col(X, kh, kw, layer["stride"], (0, 0))
                acc = win.sum(axis=(-1, -2), dtype=np.int64)
                k = kh * kw
                if k & (k - 1) == 0:
                    f = f_x + (k.bit_length() - 1)
                else:
                    s = 30
                    acc = acc * int(round(2 ** s / k))
                    f = f_x + s
            env[name] = ("int", requantize(acc, f, fout), fout[1])
        elif op == "relu":
            X, f = need_int(ins[0], node["module"])
            env[name] = ("int", np.maximum(X, 0), f)
        elif op == "tanh":  # a lookup table: tanh of the integer's value, rounded to 2**-TANH_FRACTIONAL_LENGTH
            X, f = need_int(ins[0], node["module"])
            ft = TANH_FRACTIONAL_LENGTH
            env[name] = ("int", np.rint(np.tanh(X.astype(np.float64) * 2.0 ** -f) * 2.0 ** ft).astype(np.int64), ft)
        elif op == "maxpool2d":
            X, f = need_int(ins[0], node["module"])
            kh, kw = layer["kernel_size"]
            win, _, _ = _im2col(X, kh, kw, layer["stride"], layer["padding"], pad_value=np.iinfo(np.int64).min)
            env[name] = ("int", win.max(axis=(-1, -2)), f)
        elif op == "flatten":
            X, f = need_int(ins[0], name)
            start, end = node.get("start_dim", 1), node.get("end_dim", -1)
            t = torch.from_numpy(np.ascontiguousarray(X)).flatten(start, end)
            env[name] = ("int", t.numpy(), f)
        elif op == "add":
            (A, fa), (B, fb) = need_int(ins[0], name), need_int(ins[1], name)
            f = max(fa, fb)
            env[name] = ("int", np.left_shift(A, f - fa) + np.left_shift(B, f - fb), f)
    raise ExportError("graph has no output node")


def integer_logits(export: QuantizedExport, x, backend: str = "torch") -> np.ndarray:
    """:func:`integer_forward` dequantized to float64 (exact: ``Y * 2**-f``)."""
    y, f = integer_forward(export, x, backend)
    return y.astype(np.float64) * 2.0 ** -f


def integer_predict(export: QuantizedExport, x, backend: str = "torch") -> np.ndarray:
    """Predicted classes (argmax over the integer logits; ties go to the first class, as torch.argmax)."""
    y, _ = integer_forward(export, x, backend)
    return y.argmax(axis=1)
