"""Per-run rows and per-group tables: accuracies and cost-model figures.

* :func:`runs_frame` -- one row per run: its run id, group keys, status and accuracies.
* :func:`accuracy_table` -- test accuracy per model x data set x method (x variant):
  mean +- std over seeds/folds, the best run (what the official AdaPT script prints),
  and how many runs completed, diverged or failed.
* :func:`figures_frame` / :func:`speedup_table` -- the cost-model figures
  (:func:`adapt.costmodel.run_figures`) per run and their means per group.

Conventions
-----------
* A run's *method* is the method segment of its config name (``float32``,
  ``float32-muppet``, ``muppet``, ``adapt``, ``fixed``): MuPPET's float32 baseline
  stays apart from AdaPT's although both have ``config.method == "float32"``.
  ``variant`` is the AdaPT heuristic variant of the run (``reference`` for every
  other method); ``cost_model`` is the cost-model variant of a speedup table.
* A run's accuracy is its **final** test accuracy (the last epoch's, in percent): the
  official AdaPT script evaluates the test set after each fold's training and prints
  the maximum over folds ("best model test accuracy", docs/method.md §1.6), which is the
  ``acc_best_pct`` column here (the max over the group's completed runs, seeds or
  folds alike).  How the paper aggregates is not retrieved, so both are shown.
* Only ``completed`` runs enter means, stds, maxima and cost figures.  Every other
  status is counted in its own column (``diverged``, ``failed``, ``other`` =
  interrupted/running), and a group without a completed run shows its statuses in
  the ``accuracy`` column instead of a number: nothing is silently dropped.
* Standard deviations are sample standard deviations (``ddof=1``); a group with one
  completed run has std NaN (printed as ``n/a``, and ``accuracy`` shows the mean only).
* The float32 baselines (:data:`BASELINES`) are what the speedups are measured
  against, so their own training and iso-accuracy speedups are 1 by definition.  The
  cost model applies the released iso formula ``SU / (k / n)`` to a float32 run too
  (a baseline that reaches the target at epoch ``k`` of ``n`` would get ``n / k``
  against itself); :func:`figures_frame` sets ``train_speedup_iso`` of a baseline
  run to 1.

Which records a table reports
-----------------------------
``results/<profile>/`` can hold more than the profile's grid: custom runs (a config
with overrides, e.g. ``adapt.experiments.runner.train_point(..., overrides={"epochs": 1})``, whose
run id ends in ``-x<hash>``), off-grid seeds or folds, hand-made configs.  Every
table function takes ``profile=``: given, only the grid records of that profile
enter the table (:func:`adapt.experiments.grid.split_records`, through :func:`select_records`), so
a 1-epoch custom run of a grid point never changes the grid point's numbers; ``None``
(the default) tabulates the records exactly as given (hand-made records in tests and
notebooks).  :func:`adapt.analysis.tables.report.readme_block` always reports its profile's grid
only.

The helpers (``sort_rows``, ``defined_mean``, ``plural``, ``status_counts``) are
shared by the other submodules of :mod:`adapt.analysis.tables` (not part of its public names).
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from adapt.costmodel import run_figures
from adapt.experiments.grid import record_point, split_records
from adapt.records import COMPLETED, DIVERGED, FAILED, INTERRUPTED, RUNNING

__all__ = [
    "METHOD_ORDER", "BASELINES", "STATUSES", "GROUP", "SPEEDUP_COLUMNS", "SPEEDUP_VIEW",
    "run_method", "run_id", "select_records", "runs_frame", "accuracy_table", "figures_frame", "speedup_table",
    "mean_word_length", "ISO_BASELINE",
]


#: Row order of the methods in every table.
METHOD_ORDER = ("float32", "float32-muppet", "muppet", "adapt", "fixed")

#: The float32 baselines: the methods every speedup is measured against (their own speedups are 1).
BASELINES = ("float32", "float32-muppet")

#: Record statuses (adapt.records), counted per group.
STATUSES = (COMPLETED, DIVERGED, FAILED, INTERRUPTED, RUNNING)  # the display order of the status words

#: Group keys of the tables.
GROUP = ["model", "dataset", "method", "variant"]

#: The cost-model figures of :func:`speedup_table` (keys of adapt.costmodel.run_figures).
SPEEDUP_COLUMNS = ("train_speedup", "train_speedup_iso", "inference_speedup", "model_size", "memory_footprint",
                   "final_sparsity", "avg_sparsity", "overhead_share", "speedup_vs_muppet_baseline",
                   "mean_word_length")

#: The columns of a :func:`speedup_table` that notebook 20 shows (every one exists: no silent drop).
SPEEDUP_VIEW = ("model", "dataset", "method", "variant", "runs", "priced", "train_speedup", "train_speedup_iso",
                "inference_speedup", "model_size", "memory_footprint", "final_sparsity", "avg_sparsity",
                "overhead_share", "mean_word_length", "iso_reached", "iso_note")


# ----------------------------------------------------------------------------- per-run rows
def run_method(record: dict) -> str:
    """The method segment of the record's config name (``float32-muppet`` stays distinct)."""
    name = record.get("name") or (record.get("config") or {}).get("name") or ""
    parts = str(name).split("/")
    if len(parts) == 4 and parts[1]:
        return parts[1]
    return (record.get("config") or {}).get("method")


def run_id(record: dict) -> str:
    """The record's run folder name (``adapt-resnet20-digits-reference-s0-f0``, ``...-x1a2b3c4d`` for a
    custom run; :attr:`adapt.experiments.grid.GridPoint.run_id`), else one built the same way from its config."""
    point = record_point(record)
    if point is not None:
        return point.run_id
    cfg = record.get("config") or {}
    parts = [run_method(record), cfg.get("model"), cfg.get("dataset"), cfg.get("variant") or "reference"]
    text = "-".join(str(p) for p in parts if p is not None)
    if cfg.get("seed") is not None or cfg.get("fold") is not None:
        text += f"-s{cfg.get('seed')}-f{cfg.get('fold')}"
    return text or str(record.get("name") or "run")


def select_records(records: Iterable[dict], profile: Optional[str] = None) -> list:
    """The records a table of ``profile`` reports: its grid records (all of ``records`` when ``profile`` is None)."""
    records = list(records)
    if profile is None:
        return records

    return split_records(records, profile)[0]


# ----------------------------------------------------------------------------- text helpers
def status_counts(records) -> str:
    return ", ".join(f"{sum(1 for r in records if r.get('status') == s)} {s}" for s in STATUSES
                     if any(r.get("status") == s for r in records))


def plural(n: int, word: str, plural: Optional[str] = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


# ----------------------------------------------------------------------------- per-group tables
def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by model, data set, method (:data:`METHOD_ORDER`), variant (reference first), seed, fold."""
    if frame.empty:
        return frame.reset_index(drop=True)
    mrank = {m: i for i, m in enumerate(METHOD_ORDER)}
    vrank = {"reference": 0, "corrected": 1}
    tmp = frame.assign(_m=frame["method"].map(lambda m: mrank.get(m, len(mrank))),
                       _v=frame["variant"].map(lambda v: vrank.get(v, 2)))
    keys = ["model", "dataset", "_m", "method", "_v", "variant"] + [c for c in ("seed", "fold") if c in frame]
    return tmp.sort_values(keys, kind="stable").drop(columns=["_m", "_v"]).reset_index(drop=True)


def runs_frame(records: Iterable[dict], profile: Optional[str] = None) -> pd.DataFrame:
    """One row per run: run id, group keys, seed, fold, status, final/best test accuracy (percent), message.

    ``profile``: only that profile's grid records (see the module docstring).
    """
    rows = []
    for r in select_records(records, profile):
        cfg = r.get("config") or {}
        final = r.get("final") or {}
        acc = final.get("final_test_acc")
        best = final.get("best_test_acc")
        rows.append({
            "run_id": run_id(r), "name": r.get("name"), "profile": cfg.get("profile"), "model": cfg.get("model"),
            "dataset": cfg.get("dataset"), "method": run_method(r), "variant": cfg.get("variant") or "reference",
            "seed": cfg.get("seed"), "fold": cfg.get("fold"), "status": r.get("status"),
            "epochs_run": final.get("epochs_run", len(r.get("epochs") or [])),
            "test_acc_pct": 100.0 * acc if isinstance(acc, (int, float)) else np.nan,
            "best_epoch_test_acc_pct": 100.0 * best if isinstance(best, (int, float)) else np.nan,
            "wall_time_s": r.get("wall_time_s"), "message": r.get("message") or "",
        })
    cols = ["run_id", "name", "profile", "model", "dataset", "method", "variant", "seed", "fold", "status",
            "epochs_run", "test_acc_pct", "best_epoch_test_acc_pct", "wall_time_s", "message"]
    return sort_rows(pd.DataFrame(rows, columns=cols))


def _status_note(counts: dict) -> str:
    parts = [f"{s} ({n})" if n > 1 else s for s, n in counts.items() if n]
    return ", ".join(parts)


def accuracy_table(records: Iterable[dict], profile: Optional[str] = None) -> pd.DataFrame:
    """Test accuracy (percent) per model x data set x method x variant.

    Columns: ``model, dataset, method, variant, runs`` (records in the group),
    ``completed, diverged, failed, other`` (status counts; ``other`` = interrupted or
    still running), ``acc_mean_pct, acc_std_pct`` (over completed runs, ``ddof=1``),
    ``acc_best_pct`` (the max over completed runs: the official script's "best model
    test accuracy" over folds), ``accuracy`` (a display string: ``"85.00 ± 5.00"``,
    with ``" (1 failed)"``-style notes for runs that did not complete or completed without an
    accuracy (NaN, left out of the mean), or only the statuses when none has one).  ``profile``: only that profile's grid records.
    """
    runs = runs_frame(records, profile=profile)
    out_cols = GROUP + ["runs", "completed", "diverged", "failed", "other", "acc_mean_pct", "acc_std_pct",
                        "acc_best_pct", "accuracy"]
    rows = []
    for key, g in runs.groupby(GROUP, sort=False, dropna=False):
        counts = {s: int((g["status"] == s).sum()) for s in (COMPLETED, DIVERGED, FAILED)}
        other = int((~g["status"].isin([COMPLETED, DIVERGED, FAILED])).sum())
        done = g.loc[g["status"] == COMPLETED, "test_acc_pct"].dropna()
        mean = float(done.mean()) if len(done) else np.nan
        std = float(done.std(ddof=1)) if len(done) > 1 else np.nan
        best = float(done.max()) if len(done) else np.nan
        # A completed run whose accuracy is NaN (an edited record, an evaluation that gave NaN) is left
        # out of the mean, and said so: a mean over fewer runs than "runs" must not look like all of them.
        not_done = {"completed without an accuracy (NaN)": counts["completed"] - len(done),
                    "diverged": counts["diverged"], "failed": counts["failed"], "incomplete": other}
        if len(done):
            text = f"{mean:.2f} ± {std:.2f}" if len(done) > 1 else f"{mean:.2f}"
            note = ", ".join(f"{n} {s}" for s, n in not_done.items() if n)
            if note:
                text += f" ({note})"
        else:
            text = _status_note(not_done) or "no run"
        rows.append(dict(zip(GROUP, key), runs=len(g), completed=counts["completed"], diverged=counts["diverged"],
                         failed=counts["failed"], other=other, acc_mean_pct=mean, acc_std_pct=std,
                         acc_best_pct=best, accuracy=text))
    return sort_rows(pd.DataFrame(rows, columns=out_cols))


# ----------------------------------------------------------------------------- cost-model figures
_FIGURE_CACHE: dict = {}


def _fingerprint(record: dict, variant: str) -> str:
    return json.dumps([variant, record.get("name"), record.get("config"), record.get("status"),
                       record.get("started"), record.get("finished"), record.get("wall_time_s"),
                       len(record.get("epochs") or [])], sort_keys=True, default=str)


def _run_figures(record: dict, variant: str) -> dict:
    key = _fingerprint(record, variant)
    if key not in _FIGURE_CACHE:
        _FIGURE_CACHE[key] = run_figures(record, variant)
    return dict(_FIGURE_CACHE[key])


def figures_frame(records: Iterable[dict], variant: str = "reference", profile: Optional[str] = None) -> pd.DataFrame:
    """:func:`adapt.costmodel.run_figures` of every **completed** run, one row each, with the run's keys.

    Non-completed runs are left out (their figures would describe a partial run).  A
    run whose figures cannot be computed keeps a row with NaN figures and the reason
    in ``error``.  A float32 baseline's (:data:`BASELINES`) ``train_speedup_iso`` is 1:
    the released formula would give it ``n / k`` against itself.  ``iso_target`` /
    ``iso_metric`` / ``iso_index`` say which accuracy had to reach what, and when it did
    (``iso_index`` NaN: never).  Results are cached per record (by name, config, status
    and times).  ``profile``: only that profile's grid records.
    """
    rows = []
    for r in select_records(records, profile):
        if r.get("status") != COMPLETED:
            continue
        cfg = r.get("config") or {}
        row = {"run_id": run_id(r), "name": r.get("name"), "model": cfg.get("model"), "dataset": cfg.get("dataset"),
               "method": run_method(r), "variant": cfg.get("variant") or "reference", "seed": cfg.get("seed"),
               "fold": cfg.get("fold"), "cost_model": variant, "error": ""}
        try:
            figs = _run_figures(r, variant)
        except Exception as exc:  # a record the cost model cannot price: keep it visible
            figs = {}
            row["error"] = f"{type(exc).__name__}: {exc}"
        for k in SPEEDUP_COLUMNS + ("iso_reached",):
            row[k] = figs.get(k, np.nan)
        row["mean_word_length"] = mean_word_length(r)
        for k in ("iso_target", "iso_metric", "iso_index"):
            v = figs.get(k)
            row[k] = np.nan if v is None else v
        if row["method"] in BASELINES and not row["error"]:
            row["train_speedup_iso"] = 1.0  # a baseline against itself (see the module docstring)
        rows.append(row)
    cols = ["run_id", "name", "model", "dataset", "method", "variant", "seed", "fold", "cost_model"] + \
        list(SPEEDUP_COLUMNS) + ["iso_reached", "iso_target", "iso_metric", "iso_index", "error"]
    return sort_rows(pd.DataFrame(rows, columns=cols))


def mean_word_length(record: dict, weighted: bool = False) -> float:
    """The word length of a run's weight tensors (``is_weight`` in its tensor trace), averaged over the logged
    points and the tensors (``weighted``: by their element counts); 32 for a float32 run, NaN without a trace.

    What the released training speedup follows: a run at one word length ``WL`` everywhere, without sparsity or
    switching overhead, has ``64 / (WL + 32)`` under the released cost model (docs/method.md §1.7)."""
    trace = (record.get("traces") or {}).get("tensors") or {}
    wl = trace.get("word_length")
    if not wl:
        return 32.0 if (record.get("config") or {}).get("method") == "float32" else math.nan
    keep = [k for k, w in enumerate(trace.get("is_weight") or [True] * len(wl[0])) if w]
    w = np.asarray(trace.get("numel"), dtype=float)[keep] if weighted else np.ones(len(keep))
    per_point = np.asarray(wl, dtype=float)[:, keep] @ (w / w.sum())
    return float(per_point.mean())


def defined_mean(series) -> float:
    """Mean of the defined values: NaN (undefined, e.g. an iso target never reached) is skipped,
    +inf (the released iso rule when the target is reached at the first epoch) propagates."""
    v = pd.to_numeric(pd.Series(series), errors="coerce").to_numpy(float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


def speedup_table(records: Sequence[dict], variant: str = "reference",
                  figures: Optional[pd.DataFrame] = None, profile: Optional[str] = None) -> pd.DataFrame:
    """Mean cost-model figures per model x data set x method x variant (completed runs).

    ``variant`` is the cost model's (``reference``: the released formulas;
    ``corrected``: this package's; see :mod:`adapt.costmodel`).  Columns: the group
    keys, ``cost_model``, ``runs`` (all records of the group), ``priced`` (completed
    runs with figures), then the means of :data:`SPEEDUP_COLUMNS` and ``iso_reached``
    (the fraction of priced runs that reached the iso-accuracy target).  ``train_speedup_iso`` is the mean
    over the runs that reached the target, under either cost model, and NaN with the reason in
    ``iso_note`` when none did or when the group's float32 baseline never did (``"target not reached"``,
    ``"float32 baseline never reached the target"``).  Means skip
    NaN (an iso speedup is undefined when the target is never reached) and keep
    +inf (the released iso rule divides by zero when the target is reached at the
    first epoch), so a group with such a run has mean +inf.  ``figures`` reuses a :func:`figures_frame` of the
    same variant (only its rows of the reported runs enter, matched by ``run_id``).  ``profile``: only that
    profile's grid records.
    """
    records = select_records(records, profile)
    runs = runs_frame(records)
    figs = figures if figures is not None else figures_frame(records, variant)
    if "run_id" in figs and len(figs):
        figs = figs[figs["run_id"].isin(set(runs["run_id"]))]
    rows = []
    for key, g in runs.groupby(GROUP, sort=False, dropna=False):
        sel = figs
        for k, v in zip(GROUP, key):
            sel = sel[sel[k] == v]
        priced = sel[sel["error"] == ""] if len(sel) else sel
        row = dict(zip(GROUP, key), cost_model=variant, runs=len(g), priced=len(priced))
        for c in SPEEDUP_COLUMNS:
            row[c] = defined_mean(priced[c]) if len(priced) else np.nan
        row["iso_reached"] = float(priced["iso_reached"].astype(float).mean()) if len(priced) else np.nan
        if len(priced):
            # An iso-accuracy speedup is the cost of reaching the target: only runs that reach it have
            # one (the released formula reports the plain speedup for the others, which is not one).
            reached = priced[priced["iso_reached"].astype(bool)]
            row["train_speedup_iso"] = defined_mean(reached["train_speedup_iso"]) if len(reached) else np.nan
        row["iso_note"] = ""
        rows.append(row)
    frame = pd.DataFrame(rows, columns=GROUP + ["cost_model", "runs", "priced"] + list(SPEEDUP_COLUMNS)
                         + ["iso_reached", "iso_note"])
    return sort_rows(_iso_notes(frame))


#: The baseline an iso-accuracy speedup of each quantized method is measured against.
ISO_BASELINE = {"muppet": "float32-muppet"}


def _iso_notes(frame: pd.DataFrame) -> pd.DataFrame:
    """Say why an iso-accuracy speedup is missing: the group's runs never reached the target, or its float32
    baseline never did (the iso definition prices the baseline's whole run as its cost of reaching the target,
    which means nothing when the baseline does not reach it either); the speedup is NaN then."""
    frame = frame.copy()
    for i, row in frame.iterrows():
        if not row["priced"]:
            continue
        if row["method"] in BASELINES:  # 1 against itself, but only where it reached the target
            if not row["iso_reached"] > 0:
                frame.at[i, "iso_note"] = "target not reached"
            continue
        base = frame[(frame["model"] == row["model"]) & (frame["dataset"] == row["dataset"])
                     & (frame["method"] == ISO_BASELINE.get(row["method"], "float32"))]
        if len(base) and not (pd.to_numeric(base["iso_reached"], errors="coerce") > 0).any():
            frame.at[i, "train_speedup_iso"] = np.nan
            frame.at[i, "iso_note"] = "float32 baseline never reached the target"
        elif not row["iso_reached"] > 0:
            frame.at[i, "iso_note"] = "target not reached"
    return frame
