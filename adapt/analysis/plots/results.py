"""Results figures of several runs (notebooks 20 and 21).

* :func:`curves_figure` -- accuracy and loss per epoch of several runs (losses on a
  log axis; the note under it, :func:`train_loss_note`, says what the training loss
  contains);
* :func:`results_bar_figure` -- a results-table column (:mod:`adapt.analysis.tables`) as
  grouped bars, one bar per method arm.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from adapt.analysis.plots.style import (DATASET_NAMES, MODEL_NAMES, METHOD_COLORS, as_records, config_of, as_float, new_figure, sequential_color, styled, arm_color, arm_name, method_color, method_name, placeholder_figure, run_method)

__all__ = ["train_loss_note", "curves_figure", "results_bar_figure"]


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
    records = as_records(records)
    l1 = {}
    adapt = False
    for r in records:
        cfg = config_of(r)
        method = run_method(r)
        adapt = adapt or method == "adapt"
        decay = as_float(cfg.get("l1_decay"))
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

    records = as_records(records)
    styles = {"test": "-", "val": "--", "train": ":"}
    n = 3 if show_lr else 2
    with styled():
        fig, axes = new_figure(1, n, figsize=(5 * n, 4.2))
        axes = axes[0]
        arms, used_splits = [], set()
        for r in records:
            method = run_method(r)
            arm = (method, (config_of(r).get("variant") or "reference") if method == "adapt" else "reference")
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
                y = np.array([as_float(e.get(key)) for e in eps], dtype=float)
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
    with styled():
        fig, axes = new_figure(figsize=(max(5.0, 1.6 * len(groups) + 2), 4))
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
                color, label = sequential_color(k, len(hues), "tab10"), str(h)
            bars = ax.bar(xs, means, width * 0.95, color=color, label=label,
                          yerr=None if not np.isfinite(errs).any() else np.nan_to_num(errs), capsize=3)
            if annotate:
                ax.bar_label(bars, labels=["" if not np.isfinite(m) else fmt.format(m) for m in means],
                             fontsize=7, padding=2)
        if reference is not None:
            ax.axhline(reference, color="0.3", lw=0.9, ls="--")
        pretty = [" ".join(MODEL_NAMES.get(p, DATASET_NAMES.get(p, p)) for p in g.split(" ")) for g in groups]
        ax.set_xticks(np.arange(len(groups)), pretty)
        ax.set_ylabel(ylabel or value)
        ax.set_title(title or value)
        ax.grid(axis="x", visible=False)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
