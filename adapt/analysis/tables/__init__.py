"""Results tables from run records (pandas; no plotting), by submodule:

:mod:`adapt.analysis.tables.frames` -- per-run rows and per-group tables
    :func:`runs_frame` (one row per run), :func:`accuracy_table` (test accuracy per
    model x data set x method x variant), :func:`figures_frame` / :func:`speedup_table`
    (the cost-model figures per run and their means per group); the conventions of
    every table, and which records a table reports (``profile=``).
:mod:`adapt.analysis.tables.profile` -- loading a profile
    :func:`load_profile` (a profile's grid records and the others, bad files skipped, copies and
    symlinks named and not read: :func:`find_records`);
    :func:`other_runs_table`, :func:`failures_table`, :func:`protocol_table` -- what
    was left out, what did not complete, what was run.
:mod:`adapt.analysis.tables.headline` -- the paper's claims
    :data:`PAPER_CLAIMS`; :func:`adapt_vs_float32` / :func:`headline_table` -- this
    run's AdaPT-vs-float32 averages beside the paper's headline claims with deltas.
:mod:`adapt.analysis.tables.report` -- text
    :func:`headline_note`, :func:`iso_note`, :func:`epochs_note`, :func:`reading_note` (sentences generated
    from the frames), :func:`to_markdown` (a pipe table without ``tabulate``),
    :func:`readme_numbers` / :func:`readme_block` (the numbers and the block the
    README quotes), :func:`save_tables` (csv and Markdown copies; a read-only folder is one line).

Every public name is importable from here (``from adapt.analysis.tables import accuracy_table``).
"""
from __future__ import annotations

from adapt.analysis.tables.frames import (BASELINES, GROUP, METHOD_ORDER, SPEEDUP_COLUMNS, SPEEDUP_VIEW, STATUSES, accuracy_table, figures_frame, run_id, run_method, runs_frame, select_records, speedup_table)
from adapt.analysis.tables.headline import HEADLINE_METRICS, PAPER_CLAIMS, adapt_vs_float32, headline_table
from adapt.analysis.tables.profile import (ProfileRecords, failures_table, find_records, load_profile, other_run_reason, other_runs_note, other_runs_table, protocol_table)
from adapt.analysis.tables.report import (README_BEGIN, README_END, arm_label, epochs_note, format_value, headline_note, iso_note, readme_block, reading_note, readme_numbers, save_tables, to_markdown)

__all__ = [
    "PAPER_CLAIMS", "HEADLINE_METRICS", "METHOD_ORDER", "STATUSES", "BASELINES", "SPEEDUP_VIEW",
    "SPEEDUP_COLUMNS", "GROUP",
    "run_method", "run_id", "select_records", "ProfileRecords", "load_profile", "find_records", "other_run_reason",
    "other_runs_table", "other_runs_note", "failures_table", "protocol_table",
    "runs_frame", "accuracy_table", "figures_frame", "speedup_table", "adapt_vs_float32",
    "headline_table", "headline_note", "iso_note", "epochs_note", "reading_note", "arm_label",
    "to_markdown", "save_tables", "readme_numbers", "format_value", "readme_block", "README_BEGIN", "README_END",
]
