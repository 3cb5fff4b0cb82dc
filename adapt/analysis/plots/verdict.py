"""The figures of notebook 40: accuracy curves with seed bands, the speedup against the mean word length,
gradient diversity against the lookback, the PushUp step, and the fractional length the rule settles at.

Each takes the frames of :mod:`adapt.analysis.verdict` (or records) and returns a figure.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from adapt.analysis.plots.style import new_figure, sequential_color, styled
from adapt.analysis.tables.frames import mean_word_length
from adapt.analysis.verdict import arm_of, curve_frame, released_speedup, settled_fractional_length
from adapt.costmodel import run_figures
from adapt.heuristic import push_up
from adapt.records import COMPLETED

__all__ = ["ARM_STYLE", "curves_band_figure", "speedup_vs_word_length_figure", "diversity_figure",
           "settled_length_figure"]

#: Colour of each arm of notebook 40 (others get the sequential palette).
ARM_STYLE = {"float32": "#0173b2", "float32 (corrected)": "#56b4e9", "muppet": "#de8f05", "float32-muppet": "#949494",
             "adapt (reference)": "#029e73", "adapt (corrected)": "#ca9161"}


def _color(arm: str, k: int, n: int) -> str:
    return ARM_STYLE.get(arm) or sequential_color(k, max(n, 2), "tab10")


def curves_band_figure(records: Sequence[dict], arms: Optional[Sequence[str]] = None, title: str = ""):
    """Test accuracy per epoch: the mean over seeds of each arm with its 95 % interval as a band."""
    frame = curve_frame(records)
    arms = list(arms) if arms is not None else list(dict.fromkeys(frame["arm"]))
    with styled():
        fig, axes = new_figure(1, 2, figsize=(11, 3.8))
        for ax, ylim in zip(axes[0], (None, (90, 100))):
            for k, arm in enumerate(arms):
                g = frame[frame["arm"] == arm]
                if g.empty:
                    continue
                color = _color(arm, k, len(arms))
                ax.plot(g["epoch"], g["mean"], "o-", ms=3, color=color, label=f"{arm} ({int(g['seeds'].max())} seeds)")
                ok = g["low"].notna()
                ax.fill_between(g["epoch"][ok], g["low"][ok], g["high"][ok], color=color, alpha=0.2, lw=0)
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy (%)")
            if ylim:
                ax.set_ylim(*ylim)
                ax.set_title("the same, 90-100 %")
        axes[0][0].set_title(title or "test accuracy per epoch: mean over seeds, 95 % interval")
        axes[0][0].legend(fontsize=7, loc="lower right")
    return fig


def speedup_vs_word_length_figure(records: Sequence[dict], cost_model: str = "reference"):
    """Every quantized run's training speedup (the ``cost_model``) against its mean weight word length,
    with the released formula's curve ``64 / (WL + 32)`` of a run at one WL without sparsity or overhead."""
    rows = []
    for r in records:
        if r.get("status") != COMPLETED or r["config"].get("method") == "float32":
            continue
        wl = mean_word_length(r)
        if not np.isfinite(wl):
            continue
        rows.append({"arm": arm_of(r), "wl": wl, "speedup": run_figures(r, cost_model)["train_speedup"]})
    frame = pd.DataFrame(rows, columns=["arm", "wl", "speedup"])
    with styled():
        fig, axes = new_figure(figsize=(6.5, 4.2))
        ax = axes[0][0]
        wl = np.linspace(4, 32, 200)
        ax.plot(wl, released_speedup(wl), color="k", lw=1.2, label="64 / (WL + 32): one WL, no sparsity")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        arms = list(dict.fromkeys(frame["arm"]))
        for k, arm in enumerate(arms):
            g = frame[frame["arm"] == arm]
            ax.plot(g["wl"], g["speedup"], "o", ms=5, alpha=0.8, color=_color(arm, k, len(arms)), label=arm)
        ax.set_xlabel("mean weight word length over the run (bits)")
        ax.set_ylabel(f"training speedup ({cost_model} cost model)")
        ax.set_title("training speedup follows the mean word length")
        ax.legend(fontsize=7)
    return fig


def diversity_figure(events: pd.DataFrame, results_buffer: int = 8):
    """Left: the gradient diversity at each switch against the lookback, with ``sqrt(LB)`` (mutually orthogonal
    unit gradients), 1 (aligned ones) and ``e`` (below it PushUp adds only its minimum step).  Right: the
    PushUp step in FL against GD, with the released rule's step at the event's pushed-down FL."""
    with styled():
        fig, axes = new_figure(1, 2, figsize=(11, 4))
        ax, bx = axes[0]
        arms = list(dict.fromkeys(events["arm"])) if len(events) else []
        for k, arm in enumerate(arms):
            g = events[events["arm"] == arm]
            color = _color(arm, k, len(arms))
            ax.plot(g["lookback"], g["gd"], ".", ms=3, alpha=0.35, color=color, label=arm)
            bx.plot(g["gd"], g["push_up_fl"], ".", ms=3, alpha=0.35, color=color, label=arm)
        lb = np.linspace(max(1, events["lookback"].min() if len(events) else 1), events["lookback"].max() if len(events) else 150, 100)
        ax.plot(lb, np.sqrt(lb), "k-", lw=1.2, label="sqrt(LB): orthogonal unit gradients")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="1: aligned gradients")
        ax.axhline(math.e, color="crimson", lw=0.8, ls=":", label="e: PushUp adds more than 1 bit above it")
        ax.set_xlabel("lookback at the switch (gradients summed)")
        ax.set_ylabel("gradient diversity GD = n / ||sum g||")
        ax.set_title("GD at every switch")
        ax.legend(fontsize=7)
        gd = np.linspace(1.01, max(events["gd"].max() if len(events) else 12, 3), 200)
        for fl, ls in ((4, "-"), (12, "--"), (20, ":")):
            steps = [push_up(32, fl, float(x), "min", 0)[1] - fl for x in gd]
            bx.plot(gd, steps, "k", ls=ls, lw=1, label=f"released rule at FL {fl} (min strategy)")
        bx.set_xlabel("gradient diversity at the switch")
        bx.set_ylabel("PushUp step (fractional bits added)")
        bx.set_title("the bits PushUp adds")
        bx.legend(fontsize=7)
    return fig


def settled_length_figure(summary: pd.DataFrame, c_values: Sequence[float] = (1.0, 1.25), results_buffer: int = 8):
    """The final fractional length of each run against its final mean lookback, with the prediction
    ``FL*(LB)`` of :func:`adapt.analysis.verdict.settled_fractional_length` for each ``c`` in ``c_values``.

    ``summary``: one row per run with ``arm, lookback, fl``."""
    with styled():
        fig, axes = new_figure(figsize=(6.5, 4.2))
        ax = axes[0][0]
        lb = np.linspace(2, max(160, summary["lookback"].max() if len(summary) else 160), 300)
        for c, ls in zip(c_values, ("-", "--", ":")):
            ax.plot(lb, settled_fractional_length(lb, c, results_buffer), "k", ls=ls, lw=1.1,
                    label=f"FL* with GD = {c:g} sqrt(LB)")
        arms = list(dict.fromkeys(summary["arm"])) if len(summary) else []
        for k, arm in enumerate(arms):
            g = summary[summary["arm"] == arm]
            ax.plot(g["lookback"], g["fl"], "o", ms=5, color=_color(arm, k, len(arms)), label=arm)
        ax.set_xlabel("lookback (mean over weight tensors, last logged point)")
        ax.set_ylabel("fractional length (mean over weight tensors)")
        ax.set_title("where the released PushUp stops adding bits")
        ax.legend(fontsize=7)
    return fig
