"""The heuristic's figure (notebook 02).

:func:`information_loss_figure` -- PushDown's information loss against FL, from arrays
the notebook computes (:func:`adapt.heuristic.information_loss`).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from adapt.analysis.plots.style import METHOD_COLORS, as_float, new_figure, sequential_color, styled

__all__ = ["information_loss_figure"]


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
    with styled():
        fig, axes = new_figure(1, len(losses), figsize=(5.2 * len(losses), 3.8), sharex=True)
        for k, (variant, values) in enumerate(losses.items()):
            ax = axes[0, k]
            v = np.asarray([as_float(a) for a in values], dtype=float)
            if len(v) != len(fls):
                raise ValueError(f"{variant!r}: {len(v)} loss values for {len(fls)} fractional lengths")
            color = sequential_color(k, max(len(losses), 2), "tab10") if k else METHOD_COLORS["adapt"]
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
