"""The ablation's figure (notebook 30).

:func:`ablation_figure` -- one panel per metric of :data:`adapt.analysis.tables.ablation.ABLATION_METRICS`,
one line per ablation row (reference, each option corrected alone, corrected): the mean over
seeds with a +- std bar and every seed as a dot, the reference mean as a dashed line.
Nothing is computed here: the frames come from :func:`adapt.analysis.tables.ablation.ablation_runs`
and :func:`adapt.analysis.tables.ablation.ablation_table`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from adapt.analysis.plots.style import ARM_COLORS, METHOD_COLORS, new_figure, styled
from adapt.analysis.tables.ablation import ABLATION_METRICS, METRIC_LABELS
from adapt.records import COMPLETED

__all__ = ["ablation_figure"]


def ablation_figure(table, runs=None, metrics: Optional[Sequence[str]] = None, title: Optional[str] = None):
    """Mean +- std of each metric per ablation row (rows top to bottom in the table's order).

    ``table``: :func:`adapt.analysis.tables.ablation.ablation_table`; ``runs`` (optional):
    :func:`adapt.analysis.tables.ablation.ablation_runs`, whose completed runs are drawn as dots.
    ``metrics`` default to every metric of the table.  The reference row is drawn in
    AdaPT's colour, the corrected one in the corrected arm's, the one-option rows in grey.
    """
    metrics = list(metrics or ABLATION_METRICS)
    missing = [m for m in metrics if f"{m}_mean" not in table]
    if missing:
        raise ValueError(f"metrics {missing} are not columns of the table; known: {list(ABLATION_METRICS)}")
    if not len(table):
        raise ValueError("the ablation table is empty: nothing to draw")
    labels = list(table.index)
    y = np.arange(len(labels))
    colors = [METHOD_COLORS["adapt"] if lb == "reference" else ARM_COLORS[("adapt", "corrected")]
              if lb == "corrected" else "0.35" for lb in labels]
    with styled():
        fig, axes = new_figure(1, len(metrics), figsize=(2.9 * len(metrics) + 1.2, 0.32 * len(labels) + 1.6),
                                sharey=True)
        for k, m in enumerate(metrics):
            ax = axes[0, k]
            mean = table[f"{m}_mean"].to_numpy(float)
            std = np.nan_to_num(table[f"{m}_std"].to_numpy(float))
            if runs is not None and len(runs):
                done = runs[runs["status"] == COMPLETED]
                for i, lb in enumerate(labels):
                    v = done.loc[done["row"] == lb, m].to_numpy(float)
                    ax.plot(v, np.full(len(v), i), "o", ms=3.5, color=colors[i], alpha=0.35, mec="none")
            for i in range(len(labels)):
                if not np.isnan(mean[i]):
                    ax.errorbar(mean[i], i, xerr=std[i], fmt="D", ms=5, color=colors[i], capsize=3, lw=1.2)
            if "reference" in labels and not np.isnan(mean[labels.index("reference")]):
                ax.axvline(mean[labels.index("reference")], color=METHOD_COLORS["adapt"], lw=0.9, ls="--")
            ax.set_title(METRIC_LABELS.get(m, m), fontsize=10)
            ax.set_yticks(y)
            ax.set_yticklabels([lb if lb in ("reference", "corrected") else f"+ {lb}" for lb in labels])
            ax.set_ylim(len(labels) - 0.5, -0.5)
        fig.suptitle(title or "Ablation: reference, each option corrected alone, corrected (mean ± std over seeds)")
    return fig
