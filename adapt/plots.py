"""Figures of the paper and of the official code's ``utils/vis.py`` / ``notebooks/vis.ipynb``.

Every function takes run records (:mod:`adapt.results`) or precomputed arrays and
returns a :class:`matplotlib.figure.Figure`; none calls ``plt.show``, none changes
matplotlib's global style (a seaborn ``whitegrid`` style is applied inside each
function only), and :func:`save_figure` writes the PNG and PDF files.  The figures
are made without pyplot (``matplotlib.figure.Figure``), so a notebook that draws one
figure per run accumulates no open pyplot figures and nothing is shown twice: a
Jupyter cell shows a figure when it is the cell's value or passed to ``display``.
:func:`save_figure` writes into :func:`adapt.paths.figures_root` unless told
otherwise (``$ADAPT_FIGURES``, else ``<repo>/figures``), whatever the working
directory, and its files are byte-for-byte the same for the same figure (no dates or
software tags in the PNG and PDF metadata).  What is drawn
(../shared/reference/method.md §3):

Teaching figures (notebook 01)
    :func:`number_formats_figure` -- bit layouts of float32, fixed point, block
    floating point and int8 (AdaPT v4 Fig. 1's "numerical representations");
    :func:`rounding_figure` -- nearest vs stochastic rounding of a ramp, and the
    mean of many stochastic draws (unbiased); :func:`quantization_error_figure` --
    the RMS error of a tensor against word length and fractional length.
Heuristic (notebook 02)
    :func:`information_loss_figure` -- PushDown's information loss against FL, from
    arrays the notebook computes.
Per run (notebook 21)
    :func:`heatmap` / :func:`heatmaps_figure` -- layers x training progress of word
    length, fractional length, lookback, histogram resolution and sparsity
    (``coolwarm``, as ``utils/vis.py``); rows labelled C1, C2, ... (conv), D (shortcut
    "downsample" conv), L (linear), BN; :func:`sparsity_memory_cost_figure` -- average
    sparsity, "memory requirements" ``1 + (1 - mean sp) * mean WL / 32`` and
    "computational costs" ``cost_q / cost_fp32`` per logged point, box-smoothed;
    :func:`word_length_bars` -- how many tensors end below each word-length threshold;
    :func:`muppet_trace_figure` -- MuPPET's precision per epoch with its
    gradient-diversity ratio, threshold, violations and switches;
    :func:`curves_figure` -- accuracy and loss per epoch of several runs (losses on a
    log axis; the note under it says what the training loss contains).
Tables (README)
    :func:`results_bar_figure` -- a results-table column as grouped bars.
Nothing to draw
    :func:`placeholder_figure` -- a figure that says why it is empty (a profile with no
    completed run).

Methods and arms.  Each method has its colour (:data:`METHOD_COLORS`), the two float32
baselines included: ``float32`` is AdaPT's baseline, ``float32-muppet`` MuPPET's (a
run's method is the method segment of its config name, :func:`run_method`).  AdaPT's
corrected heuristic is an arm of its own (:func:`arm_color`, :func:`arm_name`), so the
reference and corrected runs are never averaged into one bar or one colour.

Conventions.  The x axis of per-epoch plots is the number of epochs completed
(a record's 0-based ``epoch`` plus one), so it lines up with the trace's float
``epoch`` (``epoch + (batch + 1) / batches``) used by the heatmaps and the curves of
:func:`sparsity_memory_cost_figure`.  A logged point of a trace stands for the steps
until the next one (as in :mod:`adapt.costmodel`), so heatmap cells span
``[epoch_i, epoch_{i+1})``.  Smoothing (:func:`smooth`) is a centred moving average
whose window shrinks at the ends, and in :func:`sparsity_memory_cost_figure` to a
quarter of a short trace (the official window sizes 100 / 50 / 50 are in logged points,
and a smoke run logs a few dozen).
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "PlotFigure",
    "STYLE",
    "method_name",
    "method_color",
    "run_method",
    "arm_name",
    "arm_color",
    "train_loss_note",
    "placeholder_figure",
    "run_title",
    "METHOD_COLORS",
    "TRACE_KEYS",
    "WL_THRESHOLDS",
    "save_figure",
    "smooth",
    "layer_labels",
    "trace_matrix",
    "number_formats_figure",
    "rounding_figure",
    "quantization_error_table",
    "quantization_error_figure",
    "information_loss_figure",
    "heatmap",
    "heatmaps_figure",
    "memory_requirement",
    "sparsity_memory_cost_figure",
    "word_length_counts",
    "word_length_bars",
    "muppet_epochs",
    "muppet_trace_figure",
    "curves_figure",
    "results_bar_figure",
]

#: seaborn axes style applied inside every figure function.
STYLE = "whitegrid"

#: One colour per method (seaborn's colour-blind palette), used by every multi-run figure.
METHOD_COLORS = {
    "float32": "#0173b2",
    "float32-muppet": "#56b4e9",
    "muppet": "#de8f05",
    "adapt": "#029e73",
    "fixed": "#cc78bc",
}

#: Colours of the arms that are not a method's default variant.
ARM_COLORS = {("adapt", "corrected"): "#ca9161"}
_FALLBACK_COLORS = ("#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9", "#d55e00")

#: The per-tensor series of a trace that the heatmaps know, with their colour-bar labels.
TRACE_KEYS = {
    "word_length": "word length (bits)",
    "fractional_length": "fractional length (bits)",
    "lookback": "lookback (steps)",
    "resolution": "histogram resolution (bins)",
    "sparsity": "sparsity",
    "memory": "(1 − sparsity) · WL / 32",
}

#: The word-length thresholds of the official stacked bar chart (notebooks/vis.ipynb).
WL_THRESHOLDS = (32, 28, 24, 22, 20, 18, 16, 14, 12)

_METHOD_NAMES = {"float32": "float32", "float32-muppet": "float32 (MuPPET's)", "muppet": "MuPPET", "adapt": "AdaPT",
                 "fixed": "fixed"}
_ARM_NAMES = {"float32": "float32 (AdaPT's baseline)", "float32-muppet": "float32 (MuPPET's baseline)"}
_MODEL_NAMES = {"alexnet_cifar": "AlexNet", "resnet20": "ResNet-20"}
_DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "emnist": "EMNIST", "mnist": "MNIST",
                  "fmnist": "Fashion-MNIST", "digits": "digits", "synthetic": "synthetic"}
_KIND_PREFIX = {"conv": "C", "downsample": "D", "linear": "L", "bn": "BN"}


# ======================================================================= helpers
@contextlib.contextmanager
def _styled():
    import seaborn as sns

    with sns.axes_style(STYLE), sns.plotting_context("notebook", font_scale=0.9):
        yield


class PlotFigure(Figure):
    """The figures of this module: a plain :class:`~matplotlib.figure.Figure` that Jupyter
    shows as PNG even when no pyplot backend has been activated yet."""

    def _repr_png_(self):
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def _new_figure(nrows=1, ncols=1, figsize=None, **kwargs):
    """A constrained-layout figure that pyplot does not track, and its axes (a 2-D array)."""
    fig = PlotFigure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def method_name(method: Optional[str]) -> str:
    return _METHOD_NAMES.get(method, str(method))


def method_color(method: Optional[str]) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _FALLBACK_COLORS[sum(map(ord, str(method))) % len(_FALLBACK_COLORS)]


def run_method(record: Mapping) -> Optional[str]:
    """The method segment of the record's config name (``float32-muppet`` stays apart from ``float32``)."""
    from .tables import run_method as _run_method

    return _run_method(record)


def arm_name(method: Optional[str], variant: Optional[str] = None) -> str:
    """Legend label of a method and AdaPT variant: ``"float32 (AdaPT's baseline)"``, ``"float32 (MuPPET's
    baseline)"``, ``"MuPPET"``, ``"AdaPT (reference)"``, ``"AdaPT (corrected)"`` (the variant is shown for
    AdaPT only: it is AdaPT's heuristic variant)."""
    if method == "adapt" and variant:
        return f"AdaPT ({variant})"
    return _ARM_NAMES.get(method, method_name(method))


def arm_color(method: Optional[str], variant: Optional[str] = None) -> str:
    """The colour of a method, or of AdaPT's corrected variant (:data:`ARM_COLORS`)."""
    return ARM_COLORS.get((method, variant), method_color(method))


def _arm_rank(arm) -> tuple:
    method, variant = arm
    order = list(METHOD_COLORS)
    return (order.index(method) if method in order else len(order), str(method), variant != "reference",
            str(variant))


def train_loss_note(records) -> str:
    """What the recorded ``train_loss`` of these runs contains, read off their configs.

    The training loop (:func:`adapt.train.run`) records the mean over an epoch's
    training batches of the loss it back-propagates: cross-entropy plus
    ``l1_decay * sum|p|`` over all parameters when ``l1_decay > 0``.  AdaPT's precision
    penalty (``adapt.heuristic``) is not part of it: the policy adds it only to the
    loss its strategy rule compares.  Validation and test losses are cross-entropy.
    """
    records = _as_records(records)
    l1 = {}
    adapt = False
    for r in records:
        cfg = _cfg(r)
        method = run_method(r)
        adapt = adapt or method == "adapt"
        decay = _float(cfg.get("l1_decay"))
        if np.isfinite(decay) and decay > 0:
            l1.setdefault(arm_name(method), decay)
    if l1:
        which = ", ".join(f"{k}: l1_decay = {v:g}" for k, v in l1.items())
        text = f"train loss = cross-entropy + l1_decay·Σ|w| over all parameters ({which}; other runs: no L1 term)"
    else:
        text = "train loss = cross-entropy (no L1 term in these runs)"
    if adapt:
        text += "; AdaPT's precision penalty is not included"
    return text + "; val/test loss = cross-entropy."


def _cfg(record: Mapping) -> dict:
    return record.get("config") or {}


def run_title(record: Mapping, method: bool = True) -> str:
    """``"AdaPT AlexNet CIFAR-10"``-style title of a record (the official notebook's "AlexNet CIFAR100")."""
    cfg = _cfg(record)
    parts = []
    if method and cfg.get("method"):
        parts.append(method_name(cfg["method"]))
    if cfg.get("model"):
        parts.append(_MODEL_NAMES.get(cfg["model"], cfg["model"]))
    if cfg.get("dataset"):
        parts.append(_DATASET_NAMES.get(cfg["dataset"], cfg["dataset"]))
    return " ".join(parts) or str(record.get("name", "run"))


def _as_records(records) -> list:
    if isinstance(records, Mapping):
        return [records]
    return list(records)


def _run_labels(records: Sequence[Mapping], labels=None) -> list:
    """Legend labels: the method, plus whatever of model/dataset/seed/fold tells the runs apart."""
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(records):
            raise ValueError(f"{len(labels)} labels for {len(records)} records")
        return labels
    keys = ("method", "variant", "model", "dataset", "seed", "fold")
    cfgs = [_cfg(r) for r in records]
    varying = [k for k in keys if len({str(c.get(k)) for c in cfgs}) > 1]
    out = []
    for r, c in zip(records, cfgs):
        parts = [method_name(c.get("method"))] if c.get("method") else []
        for k in varying:
            if k == "method" or c.get(k) is None:
                continue
            v = c[k]
            if k == "model":
                v = _MODEL_NAMES.get(v, v)
            elif k == "dataset":
                v = _DATASET_NAMES.get(v, v)
            elif k in ("seed", "fold"):
                v = f"{k} {v}"
            parts.append(str(v))
        out.append(" ".join(parts) or str(r.get("name", "run")))
    return out


def _trace(record: Mapping) -> Optional[dict]:
    t = (record.get("traces") or {}).get("tensors")
    if not t or not t.get("step"):
        return None
    return t


def _require_trace(record: Mapping) -> dict:
    t = _trace(record)
    if t is None:
        raise ValueError(f"run {record.get('name', '?')!r} has no tensor trace (record['traces']['tensors']); "
                         "float32 runs have none")
    return t


def _float(v) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):  # adapt.results writes NaN/inf as strings
        try:
            return float(v)
        except ValueError:
            return math.nan
    return float(v)


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges for points that each stand until the next one; the last for one more spacing."""
    x = np.asarray(x, dtype=float)
    if len(x) == 1:
        width = x[0] if x[0] > 0 else 1.0
        return np.array([x[0] - width, x[0]]) if x[0] > 0 else np.array([x[0], x[0] + width])
    last = x[-1] - x[-2] if x[-1] > x[-2] else 1.0
    return np.append(x, x[-1] + last)


# ======================================================================= saving
def save_figure(fig, name: str, directory=None, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list:
    """Write ``fig`` as ``<directory>/<name>.png`` (``dpi``) and ``.pdf``; return the paths.

    ``directory``: ``None`` is :func:`adapt.paths.figures_root` (``$ADAPT_FIGURES``, else
    ``<repo>/figures``); a relative path is taken relative to the repository, an
    absolute one as is (:func:`adapt.paths.resolve`).  Each file is written to a
    temporary file in the same directory and then renamed over the target, so a reader
    never sees half a figure.  Creation dates and the software tag are left out of the
    metadata (PDF ``CreationDate``/``Producer``/``Creator``, PNG ``Software``, SVG
    ``Date``), so the same figure gives byte-identical files and re-running a notebook on
    the same records leaves them unchanged.
    """
    from .paths import figures_root

    if not name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    directory = figures_root(directory)
    directory.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    paths = []
    for ext in formats:
        ext = ext.lstrip(".").lower()
        path = directory / f"{name}.{ext}"
        metadata = {"pdf": {"CreationDate": None, "Producer": None, "Creator": None},
                    "png": {"Software": None}, "svg": {"Date": None, "Creator": None}}.get(ext)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format=ext, dpi=dpi, bbox_inches="tight", metadata=metadata)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the figure private
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        paths.append(path)
    return paths


# ======================================================================= smoothing
def smooth(y, window: int, max_fraction: float = 1.0) -> np.ndarray:
    """Centred box (moving-average) smoothing with ``window`` points.

    The window shrinks to ``max_fraction`` of the series' length (at least 1 point;
    ``max_fraction=1``: to the whole series), and at both ends the average is over the
    points that exist (no zero padding pulling the ends down).  NaNs are ignored.
    A window of 1 returns the series unchanged (as floats).
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n == 0:
        return y.copy()
    window = int(min(max(int(window), 1), max(1, int(n * float(max_fraction)))))
    if window <= 1:
        return y.copy()
    ok = np.isfinite(y)
    kernel = np.ones(window)
    total = np.convolve(np.where(ok, y, 0.0), kernel, mode="full")
    count = np.convolve(ok.astype(float), kernel, mode="full")
    start = (window - 1) // 2
    total, count = total[start:start + n], count[start:start + n]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ======================================================================= layer labels
def _kind_from_name(module_name: str, ndim: Optional[int] = None) -> str:
    low = module_name.lower()
    last = low.rsplit(".", 1)[-1]
    if re.search(r"(^|[._])(bn|norm|batchnorm)\d*($|[._])", low) or last.startswith(("bn", "norm")):
        return "bn"
    if "shortcut" in low or "downsample" in low:
        return "downsample"
    if last.startswith(("fc", "linear", "classifier", "dense", "head")):
        return "linear"
    if "conv" in last or "conv" in low:
        return "conv"
    return "other"


def layer_labels(names: Sequence[str], model_name: Optional[str] = None) -> list:
    """Short labels of parameter tensors for per-layer plots: C1, C2, ... (conv), D1 (shortcut
    "downsample" conv), L1 (linear), BN1 (batch norm), T1 (anything else), numbered per kind in
    order of first appearance; a layer's non-weight tensors (bias, BN shift) get ``.b``.

    The layer of each tensor is the module that owns it in ``adapt.models.build_model(model_name)``
    labelled by :func:`adapt.models.layer_kind`; names the model does not have (or no
    ``model_name``) fall back to the module name (``bn``, ``shortcut``, ``fc``, ``conv`` ...).
    """
    return list(_layer_labels(tuple(names), model_name))


@functools.lru_cache(maxsize=32)
def _module_kinds(model_name: str) -> dict:
    """Module name -> :func:`adapt.models.layer_kind` of ``build_model(model_name)`` ({} if unknown)."""
    from .models import build_model, layer_kind

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(model_name, 10, init="torch")
    except (ValueError, KeyError, TypeError):
        return {}
    return {name: layer_kind(m, name) for name, m in model.named_modules()}


@functools.lru_cache(maxsize=64)
def _layer_labels(names: tuple, model_name: Optional[str]) -> tuple:
    kinds = _module_kinds(model_name) if model_name else {}
    counters: dict = {}
    layer_label: dict = {}
    out = []
    for name in names:
        mod_name, _, pname = name.rpartition(".")
        if mod_name in kinds:
            kind = kinds[mod_name]
        else:
            kind = _kind_from_name(mod_name or name)
        if mod_name not in layer_label:
            prefix = _KIND_PREFIX.get(kind, "T")
            counters[prefix] = counters.get(prefix, 0) + 1
            layer_label[mod_name] = f"{prefix}{counters[prefix]}"
        label = layer_label[mod_name]
        out.append(label if pname == "weight" or not pname else f"{label}.b")
    return tuple(out)


def trace_matrix(record: Mapping, key: str = "word_length", weights_only: bool = True) -> tuple:
    """``(values, labels, epochs)`` of one per-tensor series of a run's trace.

    ``values`` has shape (#tensors, #logged points) -- rows in ``named_parameters``
    order, only the weight tensors (``is_weight``) when ``weights_only`` -- with NaN
    where the trace holds ``None``; ``labels`` are :func:`layer_labels`; ``epochs`` the
    trace's float epochs.  ``key="memory"`` is the derived ``(1 - sparsity) * WL / 32``.
    Raises ``KeyError`` when the trace has no such series.
    """
    t = _require_trace(record)
    if key == "memory":
        wl, labels, epochs = trace_matrix(record, "word_length", weights_only)
        sp, _, _ = trace_matrix(record, "sparsity", weights_only)
        return (1.0 - sp) * wl / 32.0, labels, epochs
    if key not in t:
        raise KeyError(f"the trace has no {key!r} series (it has: "
                       f"{', '.join(k for k in t if isinstance(t[k], list) and k not in ('names', 'numel'))})")
    values = np.array([[_float(v) for v in row] for row in t[key]], dtype=float).T
    names = list(t["names"])
    if values.shape[0] != len(names):
        raise ValueError(f"trace series {key!r} has {values.shape[0]} tensors, the trace names {len(names)}")
    labels = layer_labels(names, _cfg(record).get("model"))
    if weights_only:
        keep = [i for i, w in enumerate(t.get("is_weight") or [True] * len(names)) if w]
        values = values[keep]
        labels = [labels[i] for i in keep]
    return values, labels, np.asarray(t["epoch"], dtype=float)


# ======================================================================= teaching figures
def _float32_bits(v: float) -> str:
    import struct

    return format(struct.unpack(">I", struct.pack(">f", v))[0], "032b")


def _twos(v: int, bits: int) -> str:
    return format(v & ((1 << bits) - 1), f"0{bits}b")


def number_formats_figure(value: float = 2.6875, block=(2.6875, -1.25, 0.5, 3.0)):
    """Bit layouts of four number formats, one row of boxes each (AdaPT v4 Fig. 1's idea).

    * float32: 1 sign, 8 exponent and 23 mantissa bits;
    * fixed point ``<WL=8, FL=4>`` (AdaPT's initial format): sign, 3 integer and 4
      fractional bits, the binary point marked;
    * block floating point: one shared 8-bit exponent and four 8-bit mantissas
      (MuPPET's dynamic fixed point is this with a whole tensor as the block);
    * int8: sign and 7 bits (two's complement).

    Every box holds the bit of the example: ``value`` in float32, fixed point and int8
    (``value * 2**4`` as an integer), and the ``block`` of four values in block
    floating point.  One bit is the same width in every row.
    """
    from matplotlib.patches import Patch, Rectangle

    colors = {"sign": "#d55e00", "exponent": "#0173b2", "mantissa": "#56b4e9", "integer": "#029e73",
              "fraction": "#8de5a1", "shared exponent": "#cc78bc", "magnitude": "#ece133"}
    # exact example bits
    fx = int(round(value * 2 ** 4))
    fixed_bits = _twos(fx, 8)
    emax = max(math.frexp(abs(v))[1] for v in block)  # |v| < 2**emax
    mant = [int(round(v * 2 ** (7 - emax))) for v in block]
    bfp_exp = _twos(emax + 127, 8)
    rows = [
        ("float32", [("sign", 1), ("exponent", 8), ("mantissa", 23)], _float32_bits(value),
         f"${value:g} = (-1)^s \\times 1.m \\times 2^{{e - 127}}$  (IEEE 754 single precision)"),
        ("fixed point <8, 4>", [("sign", 1), ("integer", 3), ("fraction", 4)], fixed_bits,
         f"${value:g} = {fx} \\times 2^{{-4}}$  (word length 8, fractional length 4: step $2^{{-4}}$, "
         f"range $[-8, 8)$)"),
        ("block floating point", [("shared exponent", 8)] + [("sign", 1), ("mantissa", 7)] * len(block),
         bfp_exp + "".join(_twos(m, 8) for m in mant),
         "$[" + ", ".join(f"{v:g}" for v in block) + f"] = 2^{{{emax}}} \\times [" + ", ".join(map(str, mant))
         + "] / 2^7$  (one exponent per block of values)"),
        ("int8", [("sign", 1), ("magnitude", 7)], _twos(fx, 8), f"${fx}$  (8-bit two's complement integer)"),
    ]
    gap = 0.6  # between the values of block floating point
    spacing = 2.3  # between rows: the boxes, then the note under them
    with _styled():
        fig, axes = _new_figure(figsize=(12, 3.6))
        ax = axes[0, 0]
        used = []
        for r, (label, fields, bits, note) in enumerate(rows):
            y = -r * spacing
            x = 0.0
            i = 0
            for f_idx, (field, n) in enumerate(fields):
                if label.startswith("block") and f_idx > 0 and field == "sign":
                    x += gap
                for _ in range(n):
                    ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colors[field], edgecolor="white", lw=0.8))
                    ax.text(x + 0.5, y + 0.5, bits[i], ha="center", va="center", fontsize=7, color="black")
                    x += 1
                    i += 1
                if field not in used:
                    used.append(field)
                if label.startswith("fixed") and field == "integer":
                    ax.plot([x, x], [y - 0.15, y + 1.15], color="black", lw=2, solid_capstyle="butt")
                    ax.text(9.5, y + 0.5, "black bar: the binary point", fontsize=8, va="center")
            ax.text(-0.6, y + 0.5, label, ha="right", va="center", fontsize=10, fontweight="bold")
            ax.text(0.0, y - 0.25, note, ha="left", va="top", fontsize=8.5, color="0.25")
        width = 8 + len(block) * (8 + gap)
        ax.set_xlim(-13, max(width, 32) + 1)
        ax.set_ylim(-(len(rows) - 1) * spacing - 1.3, 1.6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_aspect("equal")
        ax.legend(handles=[Patch(facecolor=colors[f], label=f) for f in used], loc="lower right", ncol=4,
                  fontsize=8, frameon=False)
        ax.set_title("Numerical representations (one box = one bit)")
    return fig


def rounding_figure(word_length: int = 8, fractional_length: int = 2, x_range=(-1.0, 1.0), n_points: int = 401,
                    n_draws: int = 2000, seed: int = 0):
    """Nearest vs stochastic rounding of a ramp onto the fixed-point grid of step ``2**-fractional_length``.

    Left: the ramp, round-to-nearest (a staircase), one stochastic draw, and the
    mean of ``n_draws`` stochastic draws (on the ramp).  Right: the error
    ``q(x) - x`` of nearest rounding (a sawtooth of amplitude half a step) and of the
    stochastic mean (zero up to sampling noise, band = 2 standard errors).  All
    computed with :func:`adapt.quant.fixed_point`.
    """
    import torch

    from .quant import fixed_point

    x = torch.linspace(float(x_range[0]), float(x_range[1]), int(n_points), dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    nearest = fixed_point(x, word_length, fractional_length, "nearest")
    draws = fixed_point(x.expand(int(n_draws), -1).contiguous(), word_length, fractional_length, "stochastic",
                        generator=gen).double()
    mean = draws.mean(0)
    se = draws.std(0) / math.sqrt(max(int(n_draws), 1))
    xs, xn = x.double().numpy(), nearest.double().numpy()
    step = 2.0 ** -fractional_length
    with _styled():
        fig, axes = _new_figure(1, 2, figsize=(11, 4))
        ax = axes[0, 0]
        ax.plot(xs, xs, color="0.6", lw=1, ls="--", label="input x")
        ax.plot(xs, xn, color=METHOD_COLORS["float32"], lw=1.8, label="nearest")
        ax.plot(xs, draws[0].numpy(), ".", color=METHOD_COLORS["muppet"], ms=3, alpha=0.7,
                label="stochastic (one draw)")
        ax.plot(xs, mean.numpy(), color=METHOD_COLORS["adapt"], lw=1.5, label=f"stochastic (mean of {n_draws})")
        ax.set_xlabel("x")
        ax.set_ylabel("rounded value")
        ax.set_title(f"Rounding onto a grid of step $2^{{-{fractional_length}}}$ = {step:g}")
        ax.legend(fontsize=8)
        ax = axes[0, 1]
        err_sr = (mean - x.double()).numpy()
        ax.axhline(0, color="0.3", lw=0.8)
        ax.plot(xs, xn - xs, color=METHOD_COLORS["float32"], lw=1.5, label="nearest: q(x) - x")
        ax.fill_between(xs, -2 * se.numpy(), 2 * se.numpy(), color=METHOD_COLORS["adapt"], alpha=0.2,
                        label="±2 standard errors")
        ax.plot(xs, err_sr, color=METHOD_COLORS["adapt"], lw=1.2, label="stochastic: E[q(x)] - x")
        ax.set_xlabel("x")
        ax.set_ylabel("error")
        ax.set_title("Bias: nearest is deterministic, stochastic is unbiased")
        ax.legend(fontsize=8)
    return fig


def quantization_error_table(x, word_lengths: Iterable[int] = range(2, 17),
                             fractional_lengths: Iterable[int] = range(0, 17), rounding: str = "nearest"):
    """RMS error of ``fixed_point(x, WL, FL, rounding)`` against ``x``: a DataFrame, FL rows x WL columns.

    ``rounding="stochastic"`` uses a generator seeded with 0.
    """
    import pandas as pd
    import torch

    from .quant import fixed_point

    x = torch.as_tensor(x).detach().float().reshape(-1)
    wls, fls = [int(w) for w in word_lengths], [int(f) for f in fractional_lengths]
    out = np.empty((len(fls), len(wls)))
    for j, wl in enumerate(wls):
        for i, fl in enumerate(fls):
            gen = torch.Generator().manual_seed(0) if rounding == "stochastic" else None
            q = fixed_point(x, wl, fl, rounding, generator=gen)
            out[i, j] = float(torch.sqrt(torch.mean((q.double() - x.double()) ** 2)))
    frame = pd.DataFrame(out, index=pd.Index(fls, name="fractional_length"),
                         columns=pd.Index(wls, name="word_length"))
    return frame


def quantization_error_figure(x, word_lengths: Iterable[int] = range(2, 17),
                              fractional_lengths: Iterable[int] = range(0, 17), rounding: str = "nearest",
                              curves: Optional[Sequence[int]] = None, title: Optional[str] = None):
    """RMS quantization error of the tensor ``x`` against word length and fractional length.

    Left: heatmap of log10 RMS error, FL (rows) x WL (columns), with the best FL of
    each WL marked (small FL: the step dominates; large FL: saturation does).
    Right: RMS error against FL for a few word lengths (``curves``; default four
    spread over ``word_lengths``: the
    last four multiples of 4), log scale.  Computed by :func:`quantization_error_table`.
    """
    table = quantization_error_table(x, word_lengths, fractional_lengths, rounding)
    wls, fls = list(table.columns), list(table.index)
    data = np.log10(np.maximum(table.to_numpy(), 1e-12))
    if curves is None:
        curves = [w for w in wls if w % 4 == 0][-4:]
        if len(curves) < 2:
            curves = sorted({wls[int(round(k))] for k in np.linspace(0, len(wls) - 1, min(4, len(wls)))})
    with _styled():
        fig, axes = _new_figure(1, 2, figsize=(11, 4.2))
        ax = axes[0, 0]
        mesh = ax.pcolormesh(_centres_to_edges(wls), _centres_to_edges(fls), data, cmap="coolwarm", shading="flat")
        best = table.idxmin(axis=0)
        ax.plot(wls, [best[w] for w in wls], "k.", ms=6, label="smallest error")
        ax.set_xlabel("word length WL (bits)")
        ax.set_ylabel("fractional length FL (bits)")
        ax.set_title("log10 RMS error")
        ax.grid(False)
        ax.legend(fontsize=8, loc="upper left")
        fig.colorbar(mesh, ax=ax, label="log10 RMS error")
        ax = axes[0, 1]
        for k, wl in enumerate(curves):
            if wl in table.columns:
                ax.plot(fls, table[wl].to_numpy(), marker="o", ms=3, label=f"WL = {wl}",
                        color=_sequential(k, len(curves)))
        ax.set_yscale("log")
        ax.set_xlabel("fractional length FL (bits)")
        ax.set_ylabel("RMS error")
        ax.set_title(f"RMS error against FL ({rounding} rounding)")
        ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
    return fig


def _centres_to_edges(c) -> np.ndarray:
    c = np.asarray(c, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _sequential(k: int, n: int, cmap: str = "viridis"):
    import matplotlib

    return matplotlib.colormaps[cmap](0.1 + 0.8 * (k / max(n - 1, 1)))


def information_loss_figure(fractional_lengths, losses: Mapping[str, Sequence[float]], threshold: float = 0.0,
                            chosen: Optional[Mapping[str, float]] = None, word_length: Optional[int] = None,
                            title: Optional[str] = None):
    """PushDown's information loss against FL, one panel per variant (their scales differ).

    ``losses`` maps a variant name ("reference", "corrected", ...) to the loss at each
    of ``fractional_lengths``; ``threshold`` is the "lossy" test's threshold (0 as
    released: any loss > 0 counts); ``chosen`` optionally maps a variant to the FL
    its PushDown picked (a vertical line).  Points above the threshold are marked
    as lossy.  Nothing is computed here: the notebook computes the arrays with
    :func:`adapt.heuristic.information_loss`.
    """
    from matplotlib.ticker import MaxNLocator

    fls = np.asarray(list(fractional_lengths), dtype=float)
    if not losses:
        raise ValueError("losses is empty: give at least one variant's loss values")
    with _styled():
        fig, axes = _new_figure(1, len(losses), figsize=(5.2 * len(losses), 3.8), sharex=True)
        for k, (variant, values) in enumerate(losses.items()):
            ax = axes[0, k]
            v = np.asarray([_float(a) for a in values], dtype=float)
            if len(v) != len(fls):
                raise ValueError(f"{variant!r}: {len(v)} loss values for {len(fls)} fractional lengths")
            color = _sequential(k, max(len(losses), 2), "tab10") if k else METHOD_COLORS["adapt"]
            ax.plot(fls, v, marker="o", ms=4, color=color, label="information loss")
            lossy = v > threshold
            if lossy.any():
                ax.plot(fls[lossy], v[lossy], "x", color="#d55e00", ms=7, label=f"lossy (> {threshold:g})")
            ax.axhline(threshold, color="0.3", lw=0.8, ls="--")
            if chosen and variant in chosen and chosen[variant] is not None:
                ax.axvline(float(chosen[variant]), color="0.2", lw=1.2, ls=":", label=f"chosen FL = {chosen[variant]:g}")
            ax.set_xlabel("fractional length FL (bits)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("information loss")
            ax.set_title(variant)
            ax.legend(fontsize=8)
        sup = title or "Information loss against fractional length"
        if word_length is not None:
            sup += f" (WL = {word_length})"
        fig.suptitle(sup)
    return fig


# ======================================================================= per-run heatmaps
def heatmap(record: Mapping, key: str = "word_length", weights_only: bool = True, ax=None,
            cmap: str = "coolwarm", vmin: Optional[float] = None, vmax: Optional[float] = None,
            title: Optional[str] = None, colorbar: bool = True):
    """Layers x training progress of one per-tensor series of a run (``utils/vis.py``'s heatmaps).

    Rows: the traced tensors in ``named_parameters`` order (weight tensors only when
    ``weights_only``), top to bottom, labelled by :func:`layer_labels`; columns: the
    logged points, each spanning ``[epoch_i, epoch_{i+1})``; ``coolwarm`` colours and a
    colour bar.  ``key``: any trace series (``word_length``, ``fractional_length``,
    ``lookback``, ``resolution``, ``sparsity``) or ``"memory"`` (``(1 - sp) * WL / 32``).
    Draws into ``ax`` if given; returns the figure.
    """
    from matplotlib.ticker import MaxNLocator

    values, labels, epochs = trace_matrix(record, key, weights_only)
    with _styled():
        if ax is None:
            fig, axes = _new_figure(figsize=(9, max(2.5, 0.22 * len(labels) + 1.5)))
            ax = axes[0, 0]
        fig = ax.figure
        data = np.ma.masked_invalid(values)
        mesh = ax.pcolormesh(_edges(epochs), np.arange(len(labels) + 1), data, cmap=cmap, vmin=vmin, vmax=vmax,
                             shading="flat")
        ax.set_ylim(len(labels), 0)
        every = max(1, int(math.ceil(len(labels) / 40)))
        ticks = np.arange(len(labels))[::every]
        ax.set_yticks(ticks + 0.5, [labels[i] for i in ticks], fontsize=7 if len(labels) > 20 else 9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("layer")
        ax.grid(False)
        ax.set_title(title if title is not None else f"{run_title(record)}: {TRACE_KEYS.get(key, key)}")
        if colorbar:
            cbar = fig.colorbar(mesh, ax=ax, label=TRACE_KEYS.get(key, key), pad=0.01)
            finite = values[np.isfinite(values)]
            if finite.size and np.all(finite == np.round(finite)):  # bits, steps, bins: integer ticks
                cbar.locator = MaxNLocator(integer=True)
                cbar.update_ticks()
    return fig


def heatmaps_figure(record: Mapping, keys: Sequence[str] = ("word_length", "fractional_length", "lookback",
                                                            "resolution", "sparsity"),
                    weights_only: bool = True, title: Optional[str] = None):
    """One :func:`heatmap` panel per series in ``keys`` that the run's trace has (others are skipped,
    as are series with no value at all, e.g. MuPPET's fractional length: its dynamic fixed point has none).

    The panels share the epoch axis and are stacked top to bottom; the figure title
    is the run's (``"AdaPT AlexNet CIFAR-10"``).  Raises ``ValueError`` for a run without
    a trace or with none of ``keys``.
    """
    t = _require_trace(record)
    def has(key):
        if key == "memory":
            return has("word_length") and has("sparsity")
        return key in t and any(v is not None for row in t[key] for v in row)

    present = [k for k in keys if has(k)]
    if not present:
        raise ValueError(f"the trace has none of {list(keys)} (or only empty values)")
    n_rows = int(sum(t.get("is_weight") or [1] * len(t["names"]))) if weights_only else len(t["names"])
    height = max(1.8, 0.16 * n_rows + 1.0)
    with _styled():
        fig, axes = _new_figure(len(present), 1, figsize=(9, height * len(present)), sharex=True)
        for ax, key in zip(axes[:, 0], present):
            heatmap(record, key, weights_only, ax=ax, title=TRACE_KEYS.get(key, key))
        for ax in axes[:-1, 0]:
            ax.set_xlabel("")
        fig.suptitle(title if title is not None else run_title(record))
    return fig


# ======================================================================= sparsity / memory / cost
def memory_requirement(record: Mapping, weights_only: bool = False) -> tuple:
    """``(epochs, mean sparsity, memory)`` per logged point: the official notebook's
    ``1 + (1 - mean sparsity) * mean WL / 32`` (means over the traced tensors, unweighted;
    the 1 is the FP32 master copy), relative to a float32 model."""
    wl, _, epochs = trace_matrix(record, "word_length", weights_only)
    sp, _, _ = trace_matrix(record, "sparsity", weights_only)
    mean_sp = np.nanmean(np.nan_to_num(sp, nan=0.0), axis=0)
    mean_wl = np.nanmean(np.where(np.isfinite(wl), wl, 32.0), axis=0)
    return epochs, mean_sp, 1.0 + (1.0 - mean_sp) * mean_wl / 32.0


def _cost_ratio(record, costs, variant):
    if costs is None:
        from .costmodel import trace_costs

        costs = trace_costs(record, variant)
    q = np.asarray(costs["cost_q"], dtype=float)
    f = np.asarray(costs["cost_fp32"], dtype=float)
    epochs = np.asarray(costs["epoch"], dtype=float) if "epoch" in costs else np.arange(len(q), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return epochs, q / f


def sparsity_memory_cost_figure(records, windows: Sequence[int] = (100, 50, 50), variant: str = "reference",
                                costs: Optional[Sequence] = None, weights_only: bool = False, labels=None,
                                max_fraction: float = 0.25, title: Optional[str] = None):
    """Three panels over training, one curve per run with a tensor trace (runs without one are skipped):

    * "Average sparsity": mean over the traced tensors of the weight sparsity;
    * "Memory requirements": ``1 + (1 - mean sp) * mean WL / 32`` (:func:`memory_requirement`);
    * "Computational costs": ``cost_q / cost_fp32`` of each logged point under the cost
      model's ``variant`` (:func:`adapt.costmodel.trace_costs`), or from ``costs`` (one
      ``trace_costs``-like frame per traced run, in order; ``None`` entries are computed).

    Each curve is box-smoothed (:func:`smooth`) with ``windows`` (official: 100, 50, 50
    logged points), each shrunk to at most ``max_fraction`` of the trace's length so a
    short smoke trace is not flattened into its mean (a paper-length trace has
    thousands of points and keeps the official windows); the raw series is drawn
    faintly behind.  A dashed line marks float32 (memory and cost 1).  A run whose cost cannot be computed
    (e.g. a trace that does not match the record's model) is left out of the cost panel
    with a warning.
    """
    records = _as_records(records)
    traced = [r for r in records if _trace(r) is not None]
    if labels is not None:
        labels = [lab for r, lab in zip(records, _run_labels(records, labels)) if _trace(r) is not None]
    else:
        labels = _run_labels(traced)
    if costs is not None:
        costs = list(costs)
        if len(costs) != len(traced):
            raise ValueError(f"{len(costs)} cost frames for {len(traced)} runs with a trace")
    w_sp, w_mem, w_cost = (list(windows) + [50, 50, 50])[:3]
    with _styled():
        fig, axes = _new_figure(1, 3, figsize=(14, 3.8))
        ax_sp, ax_mem, ax_cost = axes[0]
        drawn_cost = 0
        for i, (r, label) in enumerate(zip(traced, labels)):
            color = method_color(_cfg(r).get("method")) if len({_cfg(x).get("method") for x in traced}) == len(traced) \
                else _sequential(i, len(traced), "tab10")
            epochs, sp, mem = memory_requirement(r, weights_only)
            for ax, y, w in ((ax_sp, sp, w_sp), (ax_mem, mem, w_mem)):
                ax.plot(epochs, y, color=color, alpha=0.25, lw=0.8)
                ax.plot(epochs, smooth(y, w, max_fraction), color=color, lw=1.8, label=label)
            try:
                ce, ratio = _cost_ratio(r, None if costs is None else costs[i], variant)
            except Exception as exc:  # noqa: BLE001 -- a figure for the others is still useful
                warnings.warn(f"no computational-cost curve for {r.get('name', '?')!r}: {exc}", stacklevel=2)
                continue
            ax_cost.plot(ce, ratio, color=color, alpha=0.25, lw=0.8)
            ax_cost.plot(ce, smooth(ratio, w_cost, max_fraction), color=color, lw=1.8, label=label)
            drawn_cost += 1
        for ax in (ax_mem, ax_cost):
            ax.axhline(1.0, color="0.4", lw=0.9, ls="--", label="float32")
        ax_sp.set_title("Average sparsity")
        ax_sp.set_ylabel("mean weight sparsity")
        ax_mem.set_title("Memory requirements")
        ax_mem.set_ylabel("1 + (1 − sp) · WL / 32")
        ax_cost.set_title(f"Computational costs ({variant})")
        ax_cost.set_ylabel("cost / float32 cost")
        for ax in axes[0]:
            ax.set_xlabel("epoch")
        if traced:
            ax_sp.legend(fontsize=8)
        if not drawn_cost:
            ax_cost.text(0.5, 0.5, "cost model unavailable", transform=ax_cost.transAxes, ha="center",
                         va="center", color="0.4")
        if not traced:
            ax_sp.text(0.5, 0.5, "no run with a tensor trace", transform=ax_sp.transAxes, ha="center",
                       va="center", color="0.4")
        if title:
            fig.suptitle(title)
    return fig


# ======================================================================= word-length bars
def word_length_counts(records, thresholds: Sequence[int] = WL_THRESHOLDS, weights_only: bool = True,
                       labels=None):
    """Per run with a trace: how many tensors have a final word length below each threshold.

    A DataFrame, one row per run (index: the run labels), columns ``WL < t`` for each
    threshold (in the order given) and ``tensors`` (how many were counted).  The final
    word length is the last logged point's.
    """
    import pandas as pd

    records = _as_records(records)
    all_labels = _run_labels(records, labels)
    rows, index = [], []
    for r, label in zip(records, all_labels):
        if _trace(r) is None:
            continue
        wl, _, _ = trace_matrix(r, "word_length", weights_only)
        final = np.where(np.isfinite(wl[:, -1]), wl[:, -1], 32.0)
        row = {f"WL < {t}": int((final < t).sum()) for t in thresholds}
        row["tensors"] = int(len(final))
        rows.append(row)
        index.append(label)
    return pd.DataFrame(rows, index=pd.Index(index, name="run"),
                        columns=[f"WL < {t}" for t in thresholds] + ["tensors"])


def word_length_bars(records, thresholds: Sequence[int] = WL_THRESHOLDS, weights_only: bool = True,
                     labels=None, title: Optional[str] = None):
    """Stacked bars of the counts of :func:`word_length_counts`, one bar per run.

    The segments are nested word-length bands (``WL < 12`` at the bottom, then
    ``12 ≤ WL < 14``, ..., ``28 ≤ WL < 32``, and ``WL = 32`` in grey on top), so the
    top of the segment of threshold ``t`` is the official count of ``WL < t`` and the
    whole bar is the number of tensors.
    """
    from matplotlib.ticker import MaxNLocator

    table = word_length_counts(records, thresholds, weights_only, labels)
    ts = sorted(int(t) for t in thresholds)
    x = np.arange(len(table))
    with _styled():
        fig, axes = _new_figure(figsize=(max(5.0, 1.1 * len(table) + 3.5), 4))
        ax = axes[0, 0]
        bottom = np.zeros(len(table))
        prev = None
        for k, t in enumerate(ts):
            top = table[f"WL < {t}"].to_numpy(float) if len(table) else np.zeros(0)
            height = top - bottom
            label = f"WL < {t}" if prev is None else f"{prev} ≤ WL < {t}"
            ax.bar(x, height, bottom=bottom, color=_sequential(k, len(ts), "viridis"), label=label,
                   edgecolor="white", lw=0.5)
            bottom, prev = top, t
        rest = table["tensors"].to_numpy(float) - bottom if len(table) else np.zeros(0)
        ax.bar(x, rest, bottom=bottom, color="0.85", edgecolor="white", lw=0.5,
               label=("WL = 32" if prev == 32 else f"WL ≥ {prev}") if prev is not None else "all")
        ax.grid(axis="x", visible=False)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xticks(x, list(table.index), rotation=20 if len(table) > 3 else 0, ha="right" if len(table) > 3 else "center")
        ax.set_ylabel("tensors")
        ax.set_title(title or "Final word lengths")
        handles, labs = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labs[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if not len(table):
            ax.text(0.5, 0.5, "no run with a tensor trace", transform=ax.transAxes, ha="center", va="center",
                    color="0.4")
    return fig


# ======================================================================= MuPPET
_MUPPET_ALIASES = {
    "bits": ("bits",),
    "mean_gd": ("mean_gd",),
    "max_gd": ("max_gd",),
    "ratio": ("gd_ratio", "ratio"),
    "threshold": ("gd_threshold", "threshold"),
    "violations": ("gd_violations", "violations"),
    "switched_to": ("switched_to",),
}


def muppet_epochs(record: Mapping):
    """MuPPET's per-epoch fields of a record as a DataFrame (one row per epoch, 0-based ``epoch``).

    Reads ``record["traces"]["muppet"]`` (lists per field) when present, else the
    per-epoch entries of ``record["epochs"]``; columns ``epoch, bits, mean_gd, max_gd,
    ratio, threshold, violations, switched_to`` for whatever of them exist (the
    released names ``gd_ratio``, ``gd_threshold``, ``gd_violations`` and the short ones
    both work); ``ratio`` is filled in from ``max_gd / mean_gd`` where missing.
    """
    import pandas as pd

    src = (record.get("traces") or {}).get("muppet")
    if src and src.get("epoch"):
        n = len(src["epoch"])
        rows = [{k: (v[i] if isinstance(v, list) and i < len(v) else None) for k, v in src.items()} for i in range(n)]
    else:
        rows = [dict(e) for e in record.get("epochs", []) if "epoch" in e]
    out = {"epoch": [int(r["epoch"]) for r in rows]}
    for col, names in _MUPPET_ALIASES.items():
        for name in names:
            if any(name in r for r in rows):
                out[col] = [_float(r.get(name)) for r in rows]
                break
    frame = pd.DataFrame(out)
    if "mean_gd" in frame and "max_gd" in frame:
        with np.errstate(divide="ignore", invalid="ignore"):
            derived = frame["max_gd"] / frame["mean_gd"]
        frame["ratio"] = frame["ratio"].fillna(derived) if "ratio" in frame else derived
    return frame


def _switch_epochs(record: Mapping, frame) -> list:
    sw = (record.get("traces") or {}).get("switches")
    if isinstance(sw, list) and sw and all(isinstance(s, Mapping) and "epoch" in s and "to_bits" in s for s in sw):
        return [(int(s["epoch"]), int(s["to_bits"])) for s in sw]
    if "switched_to" in frame:
        return [(int(e), int(b)) for e, b in zip(frame["epoch"], frame["switched_to"]) if np.isfinite(b)]
    if "bits" in frame and len(frame) > 1:
        b = frame["bits"].to_numpy()
        return [(int(frame["epoch"].iloc[i]), int(b[i + 1])) for i in range(len(b) - 1) if b[i + 1] != b[i]]
    return []


def muppet_trace_figure(record: Mapping, title: Optional[str] = None):
    """MuPPET's precision schedule and the gradient-diversity rule that drove it.

    Top: the global bit width of each epoch (a step plot; float32 is drawn 4 above the
    widest fixed-point width rather than at 32, so that 8/12/14/16 stay apart).  Bottom: the
    ratio maxGD / meanGD at each check, the threshold ``T(e)``, violations (ratio
    above the threshold) as crosses.  Switches (after epoch ``e``) are dashed vertical
    lines in both panels.  x = epochs completed.  Fields the record lacks are left
    out (a static schedule has no gradient diversity: the bottom panel says so).
    """
    frame = muppet_epochs(record)
    switches = _switch_epochs(record, frame)
    x = frame["epoch"].to_numpy(float) + 1.0
    with _styled():
        fig, axes = _new_figure(2, 1, figsize=(9, 5.5), sharex=True, height_ratios=(1, 1.3))
        ax_b, ax_g = axes[:, 0]
        if "bits" in frame and len(frame):
            bits = frame["bits"].to_numpy(float)
            fixed = bits[np.isfinite(bits) & (bits < 32)]
            fp32_at = float(fixed.max() + 4) if len(fixed) else 32.0  # float32 just above the widest fixed point
            shown = np.where(bits >= 32, fp32_at, bits)
            ax_b.step(np.append(0.0, x), np.append(shown[:1], shown), where="pre", color=METHOD_COLORS["muppet"], lw=2)
            levels = sorted({float(b) for b in shown if np.isfinite(b)})
            ax_b.set_yticks(levels, ["FP32" if b == fp32_at and (bits >= 32).any() else f"{b:g}" for b in levels])
            ax_b.set_ylim(min(levels) - 2, max(levels) + 2)
        else:
            ax_b.text(0.5, 0.5, "no per-epoch bits in the record", transform=ax_b.transAxes, ha="center",
                      va="center", color="0.4")
        ax_b.set_ylabel("bits")
        ax_b.set_title("Precision per epoch")
        has_ratio = "ratio" in frame and np.isfinite(frame["ratio"].to_numpy(float)).any()
        if has_ratio:
            ratio = frame["ratio"].to_numpy(float)
            ok = np.isfinite(ratio)
            ax_g.plot(x[ok], ratio[ok], "o-", ms=4, color=METHOD_COLORS["muppet"], label="maxGD / meanGD")
            if "threshold" in frame:
                thr = frame["threshold"].to_numpy(float)
                tok = np.isfinite(thr)
                ax_g.plot(x[tok], thr[tok], color="0.3", lw=1.2, ls="-.", label="threshold T(e)")
                viol = ok & tok & (ratio > thr)
            elif "violations" in frame:
                v = frame["violations"].to_numpy(float)
                prev = np.append(0.0, v[:-1])
                viol = ok & np.isfinite(v) & (v > prev)
            else:
                viol = np.zeros(len(x), bool)
            if viol.any():
                ax_g.plot(x[viol], ratio[viol], "x", color="#d55e00", ms=9, mew=2, label="violation")
            ax_g.legend(fontsize=8)
        else:
            ax_g.text(0.5, 0.5, "no gradient-diversity data (static schedule or float32 only)",
                      transform=ax_g.transAxes, ha="center", va="center", color="0.4")
        ax_g.set_ylabel("gradient diversity ratio")
        ax_g.set_xlabel("epoch")
        ax_g.set_title("Gradient diversity")
        for k, (e, to) in enumerate(switches):
            for ax in (ax_b, ax_g):
                ax.axvline(e + 1.0, color="0.5", lw=1, ls="--", label=None)
            ax_b.annotate(f"→ {'FP32' if to >= 32 else to}", (e + 1.0, 1.0), xycoords=("data", "axes fraction"),
                          xytext=(2, -10), textcoords="offset points", fontsize=7, color="0.3")
        if len(x):
            ax_g.set_xlim(0, x[-1] + 0.5)
        fig.suptitle(title if title is not None else run_title(record))
    return fig


# ======================================================================= learning curves
def curves_figure(records, splits: Sequence[str] = ("val", "test"), show_train_loss: bool = True,
                  show_lr: bool = False, title: Optional[str] = None, log_loss: bool = True):
    """Accuracy and loss per epoch of several runs: one colour per arm, one line style per split.

    An arm is a method (:func:`run_method`: AdaPT's float32 baseline ``float32`` and
    MuPPET's ``float32-muppet`` have a colour and a legend entry each) and, for AdaPT,
    its heuristic variant (:func:`arm_name`, :func:`arm_color`).  Panels: accuracy
    (``<split>_acc``), loss (``<split>_loss``, plus ``train_loss`` dotted when
    ``show_train_loss``) and, with ``show_lr``, the learning rate (log scale; the
    official ``utils/vis.py`` third panel).  ``log_loss`` puts the losses on a log axis
    (labelled so), so that one early spike does not flatten every other curve.  The note
    under the panels (:func:`train_loss_note`) says what the training loss contains:
    the loop's loss, cross-entropy plus the L1 term where a run has one, without AdaPT's
    precision penalty.  Several runs of one arm (seeds, folds) share its colour; the
    legend lists arms and splits once.  Missing fields (a run without a validation
    split) are skipped.
    """
    import textwrap

    from matplotlib.lines import Line2D

    records = _as_records(records)
    styles = {"test": "-", "val": "--", "train": ":"}
    n = 3 if show_lr else 2
    with _styled():
        fig, axes = _new_figure(1, n, figsize=(5 * n, 4.2))
        axes = axes[0]
        arms, used_splits = [], set()
        for r in records:
            method = run_method(r)
            arm = (method, (_cfg(r).get("variant") or "reference") if method == "adapt" else "reference")
            color = arm_color(*arm)
            eps = [e for e in r.get("epochs", []) if "epoch" in e]
            if not eps:
                continue
            if arm not in arms:
                arms.append(arm)
            x = np.array([e["epoch"] for e in eps], dtype=float) + 1.0
            series = [(axes[0], f"{s}_acc", s) for s in splits] + [(axes[1], f"{s}_loss", s) for s in splits]
            if show_train_loss:
                series.append((axes[1], "train_loss", "train"))
            if show_lr:
                series.append((axes[2], "lr", None))
            for ax, key, split in series:
                y = np.array([_float(e.get(key)) for e in eps], dtype=float)
                if not np.isfinite(y).any():
                    continue
                ax.plot(x, y, color=color, ls=styles.get(split, "-"), lw=1.5, alpha=0.85,
                        drawstyle="steps-pre" if key == "lr" else "default")
                if split:
                    used_splits.add(split)
        axes[0].set_title("Accuracy")
        axes[0].set_ylabel("top-1 accuracy")
        axes[1].set_title("Loss")
        positive = [line.get_ydata() for line in axes[1].get_lines()]
        if log_loss and positive and all(np.nanmin(np.where(np.isfinite(y), y, np.nan)) > 0 for y in positive):
            axes[1].set_yscale("log")
            axes[1].set_ylabel("loss (log scale)")
        else:
            axes[1].set_ylabel("loss")
        if show_lr:
            axes[2].set_title("Learning rate")
            axes[2].set_ylabel("lr")
            if any(line.get_ydata().size and np.nanmin(line.get_ydata()) > 0 for line in axes[2].get_lines()):
                axes[2].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("epoch")
        arms.sort(key=_arm_rank)
        handles = [Line2D([], [], color=arm_color(*a), lw=2, label=arm_name(a[0], a[1] if a[0] == "adapt" else None))
                   for a in arms]
        handles += [Line2D([], [], color="0.3", ls=styles[s], label=s) for s in ("test", "val", "train")
                    if s in used_splits]
        if handles:
            axes[0].legend(handles=handles, fontsize=8)
        if show_train_loss and "train" in used_splits:
            fig.supxlabel("\n".join(textwrap.wrap(train_loss_note(records), 150)), fontsize=8, color="0.3")
        if title:
            fig.suptitle(title)
    return fig


# ======================================================================= nothing to draw
def placeholder_figure(message: str, title: Optional[str] = None, figsize=(6.0, 2.4)):
    """A figure that only says ``message`` (e.g. "no completed runs in the quick profile"), for a
    notebook that must save *something* under a figure's name rather than leave an old file there."""
    import textwrap

    fig, axes = _new_figure(figsize=figsize)
    ax = axes[0, 0]
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(str(message), 60)), ha="center", va="center", fontsize=10,
            color="0.3", transform=ax.transAxes)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


# ======================================================================= results bars
def results_bar_figure(frame, value: str = "test_acc", by: Sequence[str] = ("model", "dataset"),
                       hue: str = "method", error: Optional[str] = None, ylabel: Optional[str] = None,
                       reference: Optional[float] = None, annotate: bool = True, fmt: str = "{:.3g}",
                       title: Optional[str] = None, variant: Optional[str] = "variant"):
    """Grouped bars of one column of a results table: groups ``by`` (model x dataset), one bar per ``hue``.

    With ``hue="method"`` and a ``variant`` column, AdaPT's reference and corrected runs
    are separate bars ("AdaPT (reference)", "AdaPT (corrected)"); the two float32
    baselines have their own colours and labels (:func:`arm_name`).  An empty frame
    gives a :func:`placeholder_figure`.

    Several rows per (group, hue) -- seeds, folds -- are averaged and their standard
    deviation drawn as the error bar; ``error`` names a column of precomputed
    errors instead (used when the rows are already one per bar).  ``reference`` draws
    a horizontal line (e.g. 1 for speedups); ``annotate`` writes each bar's value
    (``fmt``) on top of it.
    """
    import pandas as pd

    frame = pd.DataFrame(frame)
    missing = [c for c in (*by, hue, value) if c not in frame.columns]
    if missing:
        raise KeyError(f"results frame lacks column(s) {missing}")
    if frame.empty:
        return placeholder_figure(f"no rows to draw: {value} is empty", title=title or value)
    frame = frame.assign(_v=pd.to_numeric(frame[value], errors="coerce"))
    frame["_group"] = frame[list(by)].astype(str).agg(" ".join, axis=1) if by else ""
    groups = list(dict.fromkeys(frame["_group"]))
    arms = hue == "method" and variant is not None and variant in frame.columns
    if arms:  # AdaPT's variants are bars of their own, never averaged together
        frame[hue] = [(m, v if m == "adapt" else "reference")
                      for m, v in zip(frame["method"], frame[variant].fillna("reference"))]
        hues = sorted(dict.fromkeys(frame[hue]), key=_arm_rank)
    else:
        hues = list(dict.fromkeys(frame[hue]))
    width = 0.8 / max(len(hues), 1)
    with _styled():
        fig, axes = _new_figure(figsize=(max(5.0, 1.6 * len(groups) + 2), 4))
        ax = axes[0, 0]
        for k, h in enumerate(hues):
            means, errs = [], []
            for g in groups:
                sel = frame[(frame["_group"] == g) & (frame[hue] == h)]
                means.append(sel["_v"].mean() if len(sel) else np.nan)
                if error is not None and error in sel and len(sel):
                    errs.append(pd.to_numeric(sel[error], errors="coerce").mean())
                else:
                    errs.append(sel["_v"].std(ddof=1) if len(sel) > 1 else np.nan)
            xs = np.arange(len(groups)) - 0.4 + width * (k + 0.5)
            errs = np.asarray(errs, dtype=float)
            if arms:
                color, label = arm_color(*h), arm_name(h[0], h[1] if h[0] == "adapt" else None)
            elif hue == "method":
                color, label = method_color(h), method_name(h)
            else:
                color, label = _sequential(k, len(hues), "tab10"), str(h)
            bars = ax.bar(xs, means, width * 0.95, color=color, label=label,
                          yerr=None if not np.isfinite(errs).any() else np.nan_to_num(errs), capsize=3)
            if annotate:
                ax.bar_label(bars, labels=["" if not np.isfinite(m) else fmt.format(m) for m in means],
                             fontsize=7, padding=2)
        if reference is not None:
            ax.axhline(reference, color="0.3", lw=0.9, ls="--")
        pretty = [" ".join(_MODEL_NAMES.get(p, _DATASET_NAMES.get(p, p)) for p in g.split(" ")) for g in groups]
        ax.set_xticks(np.arange(len(groups)), pretty)
        ax.set_ylabel(ylabel or value)
        ax.set_title(title or value)
        ax.grid(axis="x", visible=False)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
