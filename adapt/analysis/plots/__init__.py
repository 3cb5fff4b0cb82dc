"""Figures of the paper and of the official code's ``utils/vis.py`` / ``notebooks/vis.ipynb``.

Every function takes run records (:mod:`adapt.records`) or precomputed arrays and
returns a :class:`matplotlib.figure.Figure`; none calls ``plt.show``, none changes
matplotlib's global style (a seaborn ``whitegrid`` style is applied inside each
function only), and :func:`save_figure` writes the PNG and PDF files.  The figures
are made without pyplot (``matplotlib.figure.Figure``), so a notebook that draws one
figure per run accumulates no open pyplot figures and nothing is shown twice: a
Jupyter cell shows a figure when it is the cell's value or passed to ``display``.
What is drawn (docs/method.md §3), by submodule:

:mod:`adapt.analysis.plots.style`
    what every figure shares: colours and names of methods and arms, run titles, the
    figure class, :func:`save_figure`, :func:`placeholder_figure` (nothing to draw).
:mod:`adapt.analysis.plots.formats` (notebook 01)
    number formats, nearest vs stochastic rounding, quantization error against WL/FL.
:mod:`adapt.analysis.plots.heuristic` (notebook 02)
    PushDown's information loss against FL (:func:`information_loss_scan`: both variants' tests
    over a range of FL, with the figure, the table and a generated caption).
:mod:`adapt.analysis.plots.traces` (notebook 21, per run)
    heatmaps of a run's tensor trace, sparsity/memory/cost curves (each "memory" named by its
    definition, each cost by its cost model), word-length bars.
:mod:`adapt.analysis.plots.muppet_trace` (notebook 21, per run)
    MuPPET's precision per epoch and its gradient-diversity rule.
:mod:`adapt.analysis.plots.results` (notebooks 20, 21)
    accuracy and loss curves of several runs, results-table columns as grouped bars.

Every public name is importable from here (``from adapt.analysis import plots; plots.heatmap(...)``).

The x axis of per-epoch plots is the number of epochs completed (a record's 0-based
``epoch`` plus one), so it lines up with the trace's float ``epoch``
(``epoch + (batch + 1) / batches``) used by the heatmaps and the curves of
:func:`sparsity_memory_cost_figure`.
"""
from __future__ import annotations

from adapt.analysis.plots.formats import (number_formats_figure, quantization_error_figure, quantization_error_table, rounding_figure)
from adapt.analysis.plots.heuristic import InformationLossScan, information_loss_figure, information_loss_scan, lookback_figure
from adapt.analysis.plots.muppet_trace import muppet_epochs, muppet_trace_figure
from adapt.analysis.plots.results import curves_figure, results_bar_figure, train_loss_note
from adapt.analysis.plots.style import (ARM_COLORS, METHOD_COLORS, STYLE, PlotFigure, arm_color, arm_name, method_color, method_name, placeholder_figure, run_method, run_title, save_figure)
from adapt.analysis.plots.traces import (COST_MODEL_NAMES, MEMORY_DEFINITIONS, TRACE_KEYS, WL_THRESHOLDS, heatmap, heatmaps_figure, layer_labels, memory_curve, memory_requirement, smooth, sparsity_memory_cost_figure, trace_matrix, word_length_bars, word_length_counts)

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
    "ARM_COLORS",
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
    "information_loss_scan",
    "InformationLossScan",
    "lookback_figure",
    "heatmap",
    "heatmaps_figure",
    "memory_requirement",
    "memory_curve",
    "COST_MODEL_NAMES",
    "MEMORY_DEFINITIONS",
    "sparsity_memory_cost_figure",
    "word_length_counts",
    "word_length_bars",
    "muppet_epochs",
    "muppet_trace_figure",
    "curves_figure",
    "results_bar_figure",
]
