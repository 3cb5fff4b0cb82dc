"""Per-run figures of a run's tensor trace (notebook 21).

* :func:`heatmap` / :func:`heatmaps_figure` -- layers x training progress of word
  length, fractional length, lookback, histogram resolution and sparsity
  (``coolwarm``, as ``utils/vis.py``); rows labelled C1, C2, ... (conv), D (shortcut
  "downsample" conv), L (linear), BN (:func:`layer_labels`; the values:
  :func:`trace_matrix`);
* :func:`sparsity_memory_cost_figure` -- average sparsity, memory and training cost per
  logged point, box-smoothed (:func:`smooth`).  "Memory" is one of two defined
  quantities, named on the figure: the official notebook's weight memory
  ``1 + (1 - mean sp) * mean WL / 32`` (:func:`memory_requirement`: the FP32 master copy
  plus the quantized copy, relative to float32 weights, so always above 1 for AdaPT) or
  the corrected cost model's training state relative to float32 training (masters,
  quantized weights and gradients, momentum: docs/method.md §1.7.1, the tables'
  ``memory_footprint`` under ``corrected``); the cost is ``cost_q / cost_fp32`` under the
  released or the corrected cost model, named as such (not "reference", which on the
  other figures names AdaPT's heuristic);
* :func:`word_length_bars` -- how many tensors end below each word-length threshold
  (:func:`word_length_counts`).

Conventions.  A logged point of a trace stands for the steps until the next one (as in
:mod:`adapt.costmodel`), so heatmap cells span ``[epoch_i, epoch_{i+1})``, with the
trace's float ``epoch`` (``epoch + (batch + 1) / batches``).  Smoothing (:func:`smooth`)
is a centred moving average whose window shrinks at the ends, and in
:func:`sparsity_memory_cost_figure` to a quarter of a short trace (the official window
sizes 100 / 50 / 50 are in logged points, and a smoke run logs a few dozen).
"""
from __future__ import annotations

import functools
import math
import re
import warnings
from typing import Mapping, Optional, Sequence

import numpy as np

from adapt.analysis.plots.style import (DATASET_NAMES, MODEL_NAMES, as_float, as_records, config_of, method_color, method_name, new_figure, run_title, sequential_color, styled)
from adapt.costmodel import trace_costs
from adapt.models import build_model, layer_kind

__all__ = [
    "TRACE_KEYS", "WL_THRESHOLDS", "COST_MODEL_NAMES", "MEMORY_DEFINITIONS", "smooth", "layer_labels", "trace_matrix", "heatmap", "heatmaps_figure",
    "memory_requirement", "memory_curve", "sparsity_memory_cost_figure", "word_length_counts", "word_length_bars",
]


#: The per-tensor series of a trace that the heatmaps know, with their colour-bar labels.
TRACE_KEYS = {
    "word_length": "word length (bits)",
    "fractional_length": "fractional length (bits)",
    "lookback": "lookback (steps)",
    "resolution": "histogram resolution (bins)",
    "sparsity": "sparsity",
    "memory": "quantized weights / float32 weights: (1 − sparsity) · WL / 32",
}

#: How the figures name the cost model's variants (``"reference"`` names AdaPT's heuristic elsewhere).
COST_MODEL_NAMES = {"reference": "released cost model", "corrected": "corrected cost model"}

#: The two definitions of "memory" that :func:`sparsity_memory_cost_figure` can draw: (panel title, y label).
MEMORY_DEFINITIONS = {
    "official": ("Weight memory: FP32 master + quantized copy",
                 "1 + (1 − sp) · WL / 32"),
    "corrected": ("Training memory (corrected cost model)",
                  "training state / float32 training"),
}

#: The word-length thresholds of the official stacked bar chart (notebooks/vis.ipynb).
WL_THRESHOLDS = (32, 28, 24, 22, 20, 18, 16, 14, 12)

_KIND_PREFIX = {"conv": "C", "downsample": "D", "linear": "L", "bn": "BN"}


# ======================================================================= reading a trace
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


def _run_labels(records: Sequence[Mapping], labels=None) -> list:
    """Legend labels: the method, plus whatever of model/dataset/seed/fold tells the runs apart."""
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(records):
            raise ValueError(f"{len(labels)} labels for {len(records)} records")
        return labels
    keys = ("method", "variant", "model", "dataset", "seed", "fold")
    cfgs = [config_of(r) for r in records]
    varying = [k for k in keys if len({str(c.get(k)) for c in cfgs}) > 1]
    out = []
    for r, c in zip(records, cfgs):
        parts = [method_name(c.get("method"))] if c.get("method") else []
        for k in varying:
            if k == "method" or c.get(k) is None:
                continue
            v = c[k]
            if k == "model":
                v = MODEL_NAMES.get(v, v)
            elif k == "dataset":
                v = DATASET_NAMES.get(v, v)
            elif k in ("seed", "fold"):
                v = f"{k} {v}"
            parts.append(str(v))
        out.append(" ".join(parts) or str(r.get("name", "run")))
    return out


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges for points that each stand until the next one; the last for one more spacing."""
    x = np.asarray(x, dtype=float)
    if len(x) == 1:
        width = x[0] if x[0] > 0 else 1.0
        return np.array([x[0] - width, x[0]]) if x[0] > 0 else np.array([x[0], x[0] + width])
    last = x[-1] - x[-2] if x[-1] > x[-2] else 1.0
    return np.append(x, x[-1] + last)


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
    values = np.array([[as_float(v) for v in row] for row in t[key]], dtype=float).T
    names = list(t["names"])
    if values.shape[0] != len(names):
        raise ValueError(f"trace series {key!r} has {values.shape[0]} tensors, the trace names {len(names)}")
    labels = layer_labels(names, config_of(record).get("model"))
    if weights_only:
        keep = [i for i, w in enumerate(t.get("is_weight") or [True] * len(names)) if w]
        values = values[keep]
        labels = [labels[i] for i in keep]
    return values, labels, np.asarray(t["epoch"], dtype=float)


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
    Draws into ``ax`` if given; returns the figure.  The default title names the series and
    the run (:func:`adapt.analysis.plots.run_title`: method, AdaPT's heuristic variant,
    model, data set, seed).
    """
    from matplotlib.ticker import MaxNLocator

    values, labels, epochs = trace_matrix(record, key, weights_only)
    with styled():
        if ax is None:
            fig, axes = new_figure(figsize=(9, max(2.5, 0.22 * len(labels) + 1.5)))
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
        ax.set_title(title if title is not None else f"{TRACE_KEYS.get(key, key)} per layer: {run_title(record)}")
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
    says what is drawn and whose run it is (``"Per-layer trace over training (rows:
    weight tensors, columns: logged steps)"`` over ``"AdaPT (reference heuristic),
    AlexNet, CIFAR-10, seed 0"``).  Raises ``ValueError`` for a run without a trace or
    with none of ``keys``.
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
    with styled():
        fig, axes = new_figure(len(present), 1, figsize=(9, height * len(present)), sharex=True)
        for ax, key in zip(axes[:, 0], present):
            heatmap(record, key, weights_only, ax=ax, title=TRACE_KEYS.get(key, key))
        for ax in axes[:-1, 0]:
            ax.set_xlabel("")
        what = "weight tensors" if weights_only else "parameter tensors"
        fig.suptitle(title if title is not None else
                     f"Per-layer trace over training (rows: {what}, columns: logged steps)\n{run_title(record)}")
    return fig


# ======================================================================= sparsity / memory / cost
def memory_requirement(record: Mapping, weights_only: bool = False) -> tuple:
    """``(epochs, mean sparsity, memory)`` per logged point: the official notebook's
    ``1 + (1 - mean sparsity) * mean WL / 32`` (means over the traced tensors, unweighted).

    Weight memory relative to float32 training's one FP32 copy of the weights: the 1 is
    AdaPT's FP32 master copy, the second term its quantized working copy with zeros not
    stored.  So it is above 1 whenever anything is stored besides the master: by this
    measure AdaPT *training* needs more weight memory than float32 training (the savings
    are in the exported model, docs/method.md §1.8).  Not the tables' ``memory_footprint``
    (docs/method.md §1.7, §1.7.1; :func:`memory_curve` draws either).
    """
    wl, _, epochs = trace_matrix(record, "word_length", weights_only)
    sp, _, _ = trace_matrix(record, "sparsity", weights_only)
    mean_sp = np.nanmean(np.nan_to_num(sp, nan=0.0), axis=0)
    mean_wl = np.nanmean(np.where(np.isfinite(wl), wl, 32.0), axis=0)
    return epochs, mean_sp, 1.0 + (1.0 - mean_sp) * mean_wl / 32.0


def memory_curve(record: Mapping, definition: str = "official", weights_only: bool = False,
                 costs=None) -> tuple:
    """``(epochs, memory)`` per logged point under one of :data:`MEMORY_DEFINITIONS`.

    ``"official"``: :func:`memory_requirement` (weight memory, FP32 master + quantized copy,
    relative to float32 weights).  ``"corrected"``: the ``memory`` column of
    :func:`adapt.costmodel.trace_costs` under the corrected model (the training state --
    FP32 masters, WL-bit weights and gradients, float32 momentum -- relative to float32
    training; its step-weighted mean is the tables' ``memory_footprint``), from ``costs`` when
    given (a corrected ``trace_costs`` frame).
    """
    if definition not in MEMORY_DEFINITIONS:
        raise ValueError(f"definition must be one of {tuple(MEMORY_DEFINITIONS)}, got {definition!r}")
    if definition == "official":
        epochs, _, mem = memory_requirement(record, weights_only)
        return epochs, mem
    if costs is None:
        costs = trace_costs(record, "corrected")
    if "memory" not in costs:
        raise ValueError("costs has no 'memory' column: pass a corrected trace_costs frame")
    return np.asarray(costs["epoch"], dtype=float), np.asarray(costs["memory"], dtype=float)


def _cost_ratio(record, costs, variant):
    if costs is None:
        costs = trace_costs(record, variant)
    q = np.asarray(costs["cost_q"], dtype=float)
    f = np.asarray(costs["cost_fp32"], dtype=float)
    epochs = np.asarray(costs["epoch"], dtype=float) if "epoch" in costs else np.arange(len(q), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return epochs, q / f


def sparsity_memory_cost_figure(records, windows: Sequence[int] = (100, 50, 50), variant: str = "reference",
                                costs: Optional[Sequence] = None, weights_only: bool = False, labels=None,
                                max_fraction: float = 0.25, title: Optional[str] = None,
                                memory: str = "official"):
    """Three panels over training, one curve per run with a tensor trace (runs without one are skipped):

    * "Mean weight sparsity": mean over the traced tensors of the fraction of zeros;
    * memory, as ``memory`` says (:data:`MEMORY_DEFINITIONS`, :func:`memory_curve`):
      ``"official"`` -- "Weight memory: FP32 master + quantized copy",
      ``1 + (1 - mean sp) * mean WL / 32`` (:func:`memory_requirement`), where the dashed line
      at 1 is float32 training's one FP32 copy and anything above it is more memory than
      float32 needs; ``"corrected"`` -- the corrected cost model's training state relative to
      float32 training;
    * "Training cost / float32": ``cost_q / cost_fp32`` of each logged point under the cost
      model's ``variant`` (:func:`adapt.costmodel.trace_costs`; titled "released cost model"
      or "corrected cost model", :data:`COST_MODEL_NAMES`), or from ``costs`` (one
      ``trace_costs``-like frame per traced run, in order; ``None`` entries are computed).

    Each curve is box-smoothed (:func:`smooth`) with ``windows`` (official: 100, 50, 50
    logged points), each shrunk to at most ``max_fraction`` of the trace's length so a
    short smoke trace is not flattened into its mean (a paper-length trace has
    thousands of points and keeps the official windows); the raw series is drawn
    faintly behind.  A dashed line marks float32 (memory and cost 1).  A run whose cost cannot be computed
    (e.g. a trace that does not match the record's model) is left out of the cost panel
    with a warning.  The figure title (``title``, else a sentence naming the three panels)
    says what is drawn.
    """
    if memory not in MEMORY_DEFINITIONS:
        raise ValueError(f"memory must be one of {tuple(MEMORY_DEFINITIONS)}, got {memory!r}")
    if variant not in COST_MODEL_NAMES:
        raise ValueError(f"variant must be one of {tuple(COST_MODEL_NAMES)}, got {variant!r}")
    records = as_records(records)
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
    with styled():
        fig, axes = new_figure(1, 3, figsize=(14, 3.8))
        ax_sp, ax_mem, ax_cost = axes[0]
        drawn_cost = 0
        for i, (r, label) in enumerate(zip(traced, labels)):
            color = method_color(config_of(r).get("method")) if len({config_of(x).get("method") for x in traced}) == len(traced) \
                else sequential_color(i, len(traced), "tab10")
            epochs, sp, _ = memory_requirement(r, weights_only)
            ax_sp.plot(epochs, sp, color=color, alpha=0.25, lw=0.8)
            ax_sp.plot(epochs, smooth(sp, w_sp, max_fraction), color=color, lw=1.8, label=label)
            given = None if costs is None else costs[i]
            try:
                me, mem = memory_curve(r, memory, weights_only,
                                       given if memory == "corrected" and variant == "corrected" else None)
            except Exception as exc:  # noqa: BLE001 -- the corrected memory needs the cost model
                warnings.warn(f"no memory curve for {r.get('name', '?')!r}: {exc}", stacklevel=2)
            else:
                ax_mem.plot(me, mem, color=color, alpha=0.25, lw=0.8)
                ax_mem.plot(me, smooth(mem, w_mem, max_fraction), color=color, lw=1.8, label=label)
            try:
                ce, ratio = _cost_ratio(r, given, variant)
            except Exception as exc:  # noqa: BLE001 -- a figure for the others is still useful
                warnings.warn(f"no computational-cost curve for {r.get('name', '?')!r}: {exc}", stacklevel=2)
                continue
            ax_cost.plot(ce, ratio, color=color, alpha=0.25, lw=0.8)
            ax_cost.plot(ce, smooth(ratio, w_cost, max_fraction), color=color, lw=1.8, label=label)
            drawn_cost += 1
        ref_mem = ax_mem.axhline(1.0, color="0.4", lw=0.9, ls="--",
                                 label="float32 training (one FP32 copy)" if memory == "official"
                                 else "float32 training")
        ref_cost = ax_cost.axhline(1.0, color="0.4", lw=0.9, ls="--", label="float32 training")
        ax_mem.legend(handles=[ref_mem], fontsize=7, loc="upper right")
        ax_cost.legend(handles=[ref_cost], fontsize=7, loc="upper right")
        ax_mem.text(0.02, 0.02, "above the dashed line: more memory than float32 training", fontsize=7,
                    color="0.35", transform=ax_mem.transAxes)
        ax_sp.set_title("Mean weight sparsity")
        ax_sp.set_ylabel("fraction of zero weights")
        mem_title, mem_label = MEMORY_DEFINITIONS[memory]
        ax_mem.set_title(mem_title)
        ax_mem.set_ylabel(mem_label)
        ax_cost.set_title(f"Training cost / float32 ({COST_MODEL_NAMES[variant]})")
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
        fig.suptitle(title if title else "Sparsity, memory and training cost over training, one curve per run")
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

    records = as_records(records)
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
    with styled():
        fig, axes = new_figure(figsize=(max(5.0, 1.1 * len(table) + 3.5), 4))
        ax = axes[0, 0]
        bottom = np.zeros(len(table))
        prev = None
        for k, t in enumerate(ts):
            top = table[f"WL < {t}"].to_numpy(float) if len(table) else np.zeros(0)
            height = top - bottom
            label = f"WL < {t}" if prev is None else f"{prev} ≤ WL < {t}"
            ax.bar(x, height, bottom=bottom, color=sequential_color(k, len(ts), "viridis"), label=label,
                   edgecolor="white", lw=0.5)
            bottom, prev = top, t
        rest = table["tensors"].to_numpy(float) - bottom if len(table) else np.zeros(0)
        ax.bar(x, rest, bottom=bottom, color="0.85", edgecolor="white", lw=0.5,
               label=("WL = 32" if prev == 32 else f"WL ≥ {prev}") if prev is not None else "all")
        ax.grid(axis="x", visible=False)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xticks(x, list(table.index), rotation=20 if len(table) > 3 else 0, ha="right" if len(table) > 3 else "center")
        ax.set_ylabel("tensors")
        ax.set_title(title or "Final word length of each weight tensor, per run")
        handles, labs = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labs[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if not len(table):
            ax.text(0.5, 0.5, "no run with a tensor trace", transform=ax.transAxes, ha="center", va="center",
                    color="0.4")
    return fig
