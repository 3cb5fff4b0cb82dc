"""Results tables from run records (pandas; no plotting).

* :func:`load_profile` -- a profile's records, split into its grid records and the
  others (custom runs, ...), with the bad files skipped (see "Which records a table
  reports" below); :func:`other_runs_table`, :func:`failures_table`,
  :func:`protocol_table` -- what was left out, what did not complete, what was run.
* :func:`runs_frame` -- one row per run: its run id, group keys, status and accuracies.
* :func:`accuracy_table` -- test accuracy per model x data set x method (x variant):
  mean +- std over seeds/folds, the best run (what the official AdaPT script prints),
  and how many runs completed, diverged or failed.
* :func:`figures_frame` / :func:`speedup_table` -- the cost-model figures
  (:func:`adapt.costmodel.run_figures`) per run and their means per group.
* :func:`adapt_vs_float32` / :func:`headline_table` -- this run's AdaPT-vs-float32
  averages beside the paper's headline claims (:data:`PAPER_CLAIMS`) with deltas.
* :func:`headline_note`, :func:`iso_note`, :func:`epochs_note` -- sentences generated
  from those frames, for the notebooks' and the README's prose.
* :func:`to_markdown` -- a pipe table without the ``tabulate`` package.
* :func:`readme_numbers` / :func:`readme_block` -- the numbers and the block the README quotes.

Conventions
-----------
* A run's *method* is the method segment of its config name (``float32``,
  ``float32-muppet``, ``muppet``, ``adapt``, ``fixed``): MuPPET's float32 baseline
  stays apart from AdaPT's although both have ``config.method == "float32"``.
  ``variant`` is the AdaPT heuristic variant of the run (``reference`` for every
  other method); ``cost_model`` is the cost-model variant of a speedup table.
* A run's accuracy is its **final** test accuracy (the last epoch's, in percent): the
  official AdaPT script evaluates the test set after each fold's training and prints
  the maximum over folds ("best model test accuracy", method.md §1.6), which is the
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
with overrides, e.g. ``adapt.grid.train_point(..., overrides={"epochs": 1})``, whose
run id ends in ``-x<hash>``), off-grid seeds or folds, hand-made configs.  Every
table function takes ``profile=``: given, only the grid records of that profile
enter the table (:func:`adapt.grid.split_records`), so a 1-epoch custom run of a
grid point never changes the grid point's numbers; ``None`` (the default) tabulates
the records exactly as given (hand-made records in tests and notebooks).
:func:`readme_block` always reports its profile's grid only.

:func:`load_profile` is what the analysis notebooks call: it reads
``<results_root>/<profile>/`` through :func:`adapt.results.load_records` (a bad
``record.json`` is skipped with a ``RuntimeWarning`` naming it), splits the records
into the grid records and the others, and its :meth:`ProfileRecords.summary` says
what was found, skipped and left out ("2 custom runs are not in these tables:",
with :func:`other_runs_table` listing them).  :func:`failures_table` lists the runs
that did not complete with their messages (all of them when a profile has no
completed run: the tables then show each group's status instead of numbers).

Sentences for the notebooks' prose are generated from the frames they describe
(:func:`headline_note`, :func:`iso_note`, :func:`epochs_note`), so a notebook never
states a number its tables do not show.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "PAPER_CLAIMS", "HEADLINE_METRICS", "METHOD_ORDER", "STATUSES", "BASELINES", "SPEEDUP_VIEW",
    "run_method", "run_id", "select_records", "ProfileRecords", "load_profile", "other_run_reason",
    "other_runs_table", "other_runs_note", "failures_table", "protocol_table",
    "runs_frame", "accuracy_table", "figures_frame", "speedup_table", "adapt_vs_float32",
    "headline_table", "headline_note", "iso_note", "epochs_note", "arm_label",
    "to_markdown", "readme_numbers", "format_value", "readme_block", "README_BEGIN", "README_END",
]

#: Row order of the methods in every table.
METHOD_ORDER = ("float32", "float32-muppet", "muppet", "adapt", "fixed")

#: The float32 baselines: the methods every speedup is measured against (their own speedups are 1).
BASELINES = ("float32", "float32-muppet")

#: Record statuses (adapt.results), counted per group.
STATUSES = ("completed", "diverged", "failed", "interrupted", "running")

#: Group keys of the tables.
GROUP = ["model", "dataset", "method", "variant"]

#: The cost-model figures of :func:`speedup_table` (keys of adapt.costmodel.run_figures).
SPEEDUP_COLUMNS = ("train_speedup", "train_speedup_iso", "inference_speedup", "model_size", "memory_footprint",
                   "final_sparsity", "avg_sparsity", "overhead_share", "speedup_vs_muppet_baseline")

#: The columns of a :func:`speedup_table` that notebook 20 shows (every one exists: no silent drop).
SPEEDUP_VIEW = ("model", "dataset", "method", "variant", "runs", "priced", "train_speedup", "train_speedup_iso",
                "inference_speedup", "model_size", "memory_footprint", "final_sparsity", "avg_sparsity",
                "overhead_share", "iso_reached")

# ----------------------------------------------------------------------------- the paper's claims
#: The headline numbers of the AdaPT abstracts, as stated (method.md §1.1).  Each metric:
#: ``value`` (in this package's units: speedups as factors, the accuracy difference in
#: percentage points, the model size as a fraction of the float32 model), ``wording``
#: (the abstract's words) and, where the reading is ours, ``note``.
#: The earlier ADEPT abstract (arXiv v1-v3) reports 1.26 and 0.53 with the same +0.98 %;
#: it is superseded by v4 and not tabulated.
PAPER_CLAIMS = {
    "v4": {
        "source": "arXiv 2107.13490v4 (27 Aug 2021), abstract",
        "tag": "[A-v4abs]",
        "benchmarks": "AlexNet/ResNet on CIFAR10/100",
        "metrics": {
            "train_speedup": {
                "value": 1.27, "wording": "an average speedup of 1.27 compared to standard training in float32"},
            "train_speedup_iso": {"value": None, "wording": None, "note": "not claimed in v4"},
            "acc_diff_pp": {
                "value": 0.98, "wording": "an average accuracy increase of 0.98%",
                "note": "'0.98%' may be percentage points or a relative increase; compared here as "
                        "percentage points (the SDM version states its +0.74 in percentage points)"},
            "inference_speedup": {"value": 2.33, "wording": "an average inference speedup of 2.33"},
            "model_size": {
                "value": 0.52, "wording": "a model size reduction of 0.52",
                "note": "read as the quantized model's size relative to float32 (0.52x); read as a "
                        "reduction *by* 52 % it would be 0.48x"},
        },
    },
    "sdm": {
        "source": "SDM 2023 version, abstract (also the official repository's README)",
        "tag": "[A-SDM]",
        "benchmarks": "AlexNet/ResNet-20 on CIFAR10/CIFAR100/EMNIST and LeNet-5/MNIST",
        "metrics": {
            "train_speedup": {"value": 1.31, "wording": "average 1.31x speedup ... compared to float32, "
                                                        "at iso-accuracy"},
            "train_speedup_iso": {"value": 4.76, "wording": "4.76x adjusted for iso-accuracy"},
            "acc_diff_pp": {"value": 0.74, "wording": "average accuracy increase of 0.74 percentage points"},
            "inference_speedup": {"value": 2.28, "wording": "average inference speedup of 2.28x"},
            "model_size": {
                "value": 0.51, "bound": "<=", "wording": "model size reduction up to 51% of the unquantized model",
                "note": "read as 'the model shrinks to at most 51 % of float32' (ratio <= 0.51, the "
                        "best case, not an average); read as a reduction *by* up to 51 % it would be >= 0.49x. "
                        "The SDM averages also cover EMNIST and LeNet-5/MNIST, which this grid does not run"},
        },
    },
}

#: The headline metrics: key -> (label, unit).
HEADLINE_METRICS = {
    "train_speedup": ("training speedup", "x"),
    "train_speedup_iso": ("iso-accuracy training speedup", "x"),
    "acc_diff_pp": ("accuracy difference, mean over runs", "pp"),
    "acc_diff_best_pp": ("accuracy difference, best run", "pp"),
    "inference_speedup": ("inference speedup", "x"),
    "model_size": ("model size (fraction of float32)", ""),
}


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
    custom run; :attr:`adapt.grid.GridPoint.run_id`), else one built the same way from its config."""
    from .grid import record_point

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
    from .grid import split_records

    return split_records(records, profile)[0]


# ----------------------------------------------------------------------------- loading a profile
def _display_path(path) -> str:
    """``path`` relative to the repository when it lies inside it (no machine-specific prefix in notebooks)."""
    from .paths import repo_root

    path = Path(path)
    root = repo_root()
    if root is not None:
        try:
            return str(path.resolve().relative_to(root))
        except ValueError:
            pass
    return str(path)


def _status_counts(records) -> str:
    return ", ".join(f"{sum(1 for r in records if r.get('status') == s)} {s}" for s in STATUSES
                     if any(r.get("status") == s for r in records))


def _plural(n: int, word: str, plural: Optional[str] = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


@dataclass
class ProfileRecords:
    """What :func:`load_profile` found under ``<results_root>/<profile>/``.

    ``records``: the grid records of the profile (what every table reports);
    ``others``: the other valid records there (custom runs, off-grid points, hand-made
    configs; :func:`other_runs_table`); ``skipped``: the warnings of the
    ``record.json`` files that are not valid records (each names its path).
    """

    profile: str
    root: Path
    records: list = field(default_factory=list)
    others: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    @property
    def completed(self) -> list:
        return [r for r in self.records if r.get("status") == "completed"]

    def summary(self) -> str:
        """Plain-text lines: what was read, skipped and left out of the tables, and whether anything completed."""
        where = _display_path(self.root)
        lines = []
        if self.records:
            lines.append(f"{_plural(len(self.records), 'grid record')} of the {self.profile!r} profile in {where} "
                         f"({_status_counts(self.records)}).")
        else:
            lines.append(f"no grid records of the {self.profile!r} profile in {where}: no completed runs, "
                         f"so the tables below are empty.")
        if self.skipped:
            lines.append(f"{_plural(len(self.skipped), 'record file')} skipped (not a valid run record):")
            lines.extend(f"  {msg}" for msg in self.skipped)
        if self.records and not self.completed:
            lines.append("no completed runs: the tables show each group's status instead of numbers.")
        unfinished: dict = {}
        for r in self.records:
            if r.get("status") != "completed":
                key = (r.get("status"), r.get("message") or "(no message)")
                unfinished[key] = unfinished.get(key, 0) + 1
        if unfinished:
            lines.append("runs that did not complete, by status and message:")
            for (status, message), n in list(unfinished.items())[:10]:
                lines.append(f"  {n} {status}: {message}")
            if len(unfinished) > 10:
                lines.append(f"  ... and {len(unfinished) - 10} other messages (failures_table lists every run)")
        if self.others:
            lines.append(other_runs_note(self.others, self.profile))
        return "\n".join(lines)


def load_profile(profile: str, results_root=None) -> ProfileRecords:
    """Read ``<results_root>/<profile>/`` (root: :func:`adapt.paths.results_root`) into a :class:`ProfileRecords`.

    Bad ``record.json`` files are skipped by :func:`adapt.results.load_records` with a
    ``RuntimeWarning`` naming them (re-issued here, so it shows in a notebook's output)
    and listed in ``skipped``.  A missing folder gives no records.
    """
    from .paths import results_root as _results_root
    from .results import load_records

    root = _results_root(results_root) / profile
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = load_records(root, on_error="warn")
    skipped = []
    for w in caught:
        if issubclass(w.category, RuntimeWarning) and str(w.message).startswith("skipping"):
            skipped.append(str(w.message))
            warnings.warn(str(w.message), RuntimeWarning, stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    from .grid import split_records

    grid_records, others = split_records(found, profile)
    return ProfileRecords(profile=profile, root=root, records=grid_records, others=others, skipped=skipped)


def _other_kind(record: dict, profile: Optional[str]) -> tuple:
    """``(kind, reason)`` of a record that is not a grid record of ``profile``."""
    from .configs import CONFIGS
    from .grid import record_point

    cfg = record.get("config") or {}
    point = record_point(record)
    if point is None:
        if cfg.get("name") not in CONFIGS:
            return "hand-made config", f"config {cfg.get('name')!r} is not in adapt.configs"
        return "incomplete config", "its config has no seed, fold or variant"
    if point.is_custom:
        text = ", ".join(f"{k}={v!r}" for k, v in point.override_dict.items())
        return "custom run", f"overrides {text}"
    if profile is not None and point.profile != profile:
        return "other profile", f"a run of the {point.profile!r} profile"
    return "off-grid point", (f"variant {point.variant}, seed {point.seed}, fold {point.fold} "
                              f"is not a point of the {point.profile} grid")


def other_run_reason(record: dict, profile: Optional[str] = None) -> str:
    """Why ``record`` is not in the tables of ``profile`` (e.g. ``"custom run: overrides epochs=1"``)."""
    kind, reason = _other_kind(record, profile)
    return f"{kind}: {reason}"


def other_runs_table(records: Iterable[dict], profile: Optional[str] = None) -> pd.DataFrame:
    """The records left out of ``profile``'s tables: ``run_id, status, epochs_run, test_acc_pct, reason``."""
    rows = []
    for r in records:
        final = r.get("final") or {}
        acc = final.get("final_test_acc")
        rows.append({"run_id": run_id(r), "status": r.get("status"),
                     "epochs_run": final.get("epochs_run", len(r.get("epochs") or [])),
                     "test_acc_pct": 100.0 * acc if isinstance(acc, (int, float)) else np.nan,
                     "reason": other_run_reason(r, profile)})
    return pd.DataFrame(rows, columns=["run_id", "status", "epochs_run", "test_acc_pct", "reason"])


def other_runs_note(records: Sequence[dict], profile: Optional[str] = None) -> str:
    """``"2 custom runs are not in these tables:"`` (the kinds counted when they differ); ``""`` for none."""
    records = list(records)
    if not records:
        return ""
    kinds: dict = {}
    for r in records:
        kind = _other_kind(r, profile)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    verb = "is" if len(records) == 1 else "are"
    if len(kinds) == 1:
        (kind, n), = kinds.items()
        return f"{_plural(n, kind)} {verb} not in these tables:"
    parts = ", ".join(_plural(n, k) for k, n in kinds.items())
    return f"{_plural(len(records), 'run')} {verb} not in these tables ({parts}):"


def failures_table(records: Iterable[dict], profile: Optional[str] = None) -> pd.DataFrame:
    """The runs that did not complete, with their messages: ``run_id, model, dataset, method, variant,
    seed, fold, status, epochs_run, message``."""
    runs = runs_frame(records, profile=profile)
    cols = ["run_id", "model", "dataset", "method", "variant", "seed", "fold", "status", "epochs_run", "message"]
    return runs.loc[runs["status"] != "completed", cols].reset_index(drop=True)


def protocol_table(records: Iterable[dict], profile: Optional[str] = None) -> pd.DataFrame:
    """What the runs of each method were trained with, read off their configs and records.

    One row per model x data set x method: ``epochs`` (the config's, MuPPET's cap),
    ``epochs_run`` (``"21-27"`` when runs differ), ``batch`` (``batch_size x
    accumulation_steps``), ``lr``, ``scheduler``, ``protocol``, ``l1_decay``, ``runs``.
    """
    records = select_records(records, profile)
    rows = {}
    for r in records:
        cfg = r.get("config") or {}
        key = (cfg.get("model"), cfg.get("dataset"), run_method(r))
        row = rows.setdefault(key, {"cfgs": [], "run": []})
        row["cfgs"].append(cfg)
        final = r.get("final") or {}
        row["run"].append(final.get("epochs_run", len(r.get("epochs") or [])))

    def span(values):
        vals = sorted({v for v in values if v is not None}, key=lambda v: (str(type(v)), v))
        if not vals:
            return "n/a"
        if len(vals) == 1:
            return str(vals[0])
        if all(isinstance(v, (int, float)) for v in vals):
            return f"{min(vals):g}-{max(vals):g}" if not all(isinstance(v, int) for v in vals) \
                else f"{min(vals)}-{max(vals)}"
        return ", ".join(map(str, vals))

    out = []
    for (model, dataset, method), row in rows.items():
        cfgs = row["cfgs"]
        out.append({
            "model": model, "dataset": dataset, "method": method, "variant": "",
            "runs": len(cfgs), "epochs": span([c.get("epochs") for c in cfgs]),
            "epochs_run": span(row["run"]),
            "batch": span([f"{c.get('batch_size')}x{c.get('accumulation_steps', 1)}"
                           if c.get("accumulation_steps", 1) != 1 else c.get("batch_size") for c in cfgs]),
            "lr": span([c.get("lr") for c in cfgs]), "scheduler": span([c.get("scheduler") for c in cfgs]),
            "protocol": span([c.get("protocol") for c in cfgs]), "l1_decay": span([c.get("l1_decay") for c in cfgs]),
        })
    cols = ["model", "dataset", "method", "variant", "runs", "epochs", "epochs_run", "batch", "lr", "scheduler",
            "protocol", "l1_decay"]
    frame = _order(pd.DataFrame(out, columns=cols))
    return frame.drop(columns=["variant"])


def _order(frame: pd.DataFrame) -> pd.DataFrame:
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
    return _order(pd.DataFrame(rows, columns=cols))


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
    with ``" (1 failed)"``-style notes for runs that did not complete, or only the
    statuses when none completed).  ``profile``: only that profile's grid records.
    """
    runs = runs_frame(records, profile=profile)
    out_cols = GROUP + ["runs", "completed", "diverged", "failed", "other", "acc_mean_pct", "acc_std_pct",
                        "acc_best_pct", "accuracy"]
    rows = []
    for key, g in runs.groupby(GROUP, sort=False, dropna=False):
        counts = {s: int((g["status"] == s).sum()) for s in ("completed", "diverged", "failed")}
        other = int((~g["status"].isin(["completed", "diverged", "failed"])).sum())
        done = g.loc[g["status"] == "completed", "test_acc_pct"].dropna()
        mean = float(done.mean()) if len(done) else np.nan
        std = float(done.std(ddof=1)) if len(done) > 1 else np.nan
        best = float(done.max()) if len(done) else np.nan
        not_done = {"diverged": counts["diverged"], "failed": counts["failed"], "incomplete": other}
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
    return _order(pd.DataFrame(rows, columns=out_cols))


# ----------------------------------------------------------------------------- cost-model figures
_FIGURE_CACHE: dict = {}


def _fingerprint(record: dict, variant: str) -> str:
    return json.dumps([variant, record.get("name"), record.get("config"), record.get("status"),
                       record.get("started"), record.get("finished"), record.get("wall_time_s"),
                       len(record.get("epochs") or [])], sort_keys=True, default=str)


def _run_figures(record: dict, variant: str) -> dict:
    from .costmodel import run_figures

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
        if r.get("status") != "completed":
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
        for k in ("iso_target", "iso_metric", "iso_index"):
            v = figs.get(k)
            row[k] = np.nan if v is None else v
        if row["method"] in BASELINES and not row["error"]:
            row["train_speedup_iso"] = 1.0  # a baseline against itself (see the module docstring)
        rows.append(row)
    cols = ["run_id", "name", "model", "dataset", "method", "variant", "seed", "fold", "cost_model"] + \
        list(SPEEDUP_COLUMNS) + ["iso_reached", "iso_target", "iso_metric", "iso_index", "error"]
    return _order(pd.DataFrame(rows, columns=cols))


def _mean(series) -> float:
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
    (the fraction of priced runs that reached the iso-accuracy target).  Means skip
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
            row[c] = _mean(priced[c]) if len(priced) else np.nan
        row["iso_reached"] = float(priced["iso_reached"].astype(float).mean()) if len(priced) else np.nan
        rows.append(row)
    cols = GROUP + ["cost_model", "runs", "priced"] + list(SPEEDUP_COLUMNS) + ["iso_reached"]
    return _order(pd.DataFrame(rows, columns=cols))


# ----------------------------------------------------------------------------- headline
def adapt_vs_float32(records: Sequence[dict], variant: str = "reference", adapt_variant: str = "reference",
                     baseline: str = "float32", figures: Optional[pd.DataFrame] = None,
                     profile: Optional[str] = None) -> pd.DataFrame:
    """AdaPT against its float32 baseline, per model x data set.

    Columns: ``model, dataset, adapt_runs, baseline_runs`` (completed), ``adapt_acc_pct,
    baseline_acc_pct`` (means), ``acc_diff_pp`` (AdaPT mean - baseline mean),
    ``acc_diff_best_pp`` (AdaPT best run - baseline best run), and the AdaPT means of
    ``train_speedup, train_speedup_iso, inference_speedup, model_size`` under the
    ``variant`` cost model.  ``adapt_variant`` picks the heuristic variant;
    ``baseline`` the baseline method (``float32``: AdaPT's own; ``float32-muppet``).
    ``profile``: only that profile's grid records.
    """
    records = select_records(records, profile)
    acc = accuracy_table(records)
    sp = speedup_table(records, variant, figures=figures)
    rows = []
    pairs = acc.loc[acc["method"] == "adapt", ["model", "dataset"]].drop_duplicates()
    for model, dataset in pairs.itertuples(index=False):
        a = acc[(acc.model == model) & (acc.dataset == dataset) & (acc.method == "adapt")
                & (acc.variant == adapt_variant)]
        b = acc[(acc.model == model) & (acc.dataset == dataset) & (acc.method == baseline)]
        s = sp[(sp.model == model) & (sp.dataset == dataset) & (sp.method == "adapt") & (sp.variant == adapt_variant)]
        if a.empty:
            continue
        a, s = a.iloc[0], (s.iloc[0] if len(s) else None)
        b_mean = float(b["acc_mean_pct"].mean()) if len(b) else np.nan
        b_best = float(b["acc_best_pct"].max()) if len(b) else np.nan
        row = {"model": model, "dataset": dataset, "adapt_runs": int(a["completed"]),
               "baseline_runs": int(b["completed"].sum()) if len(b) else 0,
               "adapt_acc_pct": a["acc_mean_pct"], "baseline_acc_pct": b_mean,
               "acc_diff_pp": a["acc_mean_pct"] - b_mean, "acc_diff_best_pp": a["acc_best_pct"] - b_best}
        for c in ("train_speedup", "train_speedup_iso", "inference_speedup", "model_size"):
            row[c] = s[c] if s is not None else np.nan
        rows.append(row)
    cols = ["model", "dataset", "adapt_runs", "baseline_runs", "adapt_acc_pct", "baseline_acc_pct", "acc_diff_pp",
            "acc_diff_best_pp", "train_speedup", "train_speedup_iso", "inference_speedup", "model_size"]
    return pd.DataFrame(rows, columns=cols).sort_values(["model", "dataset"]).reset_index(drop=True)


def headline_table(records: Sequence[dict], variant: str = "reference", adapt_variant: str = "reference",
                   baseline: str = "float32", figures: Optional[pd.DataFrame] = None,
                   profile: Optional[str] = None) -> pd.DataFrame:
    """This run's averages over model x data set beside the paper's headline claims.

    One row per metric of :data:`HEADLINE_METRICS`; columns ``metric`` (key),
    ``label``, ``unit``, ``this_run`` (the mean over the model x data set pairs of
    :func:`adapt_vs_float32` where the value is defined, +inf propagating as in
    :func:`speedup_table`), ``pairs`` (how many pairs entered it), ``paper_v4``, ``delta_v4`` (this run - paper), ``paper_sdm``, ``delta_sdm``.
    A metric a version does not claim has NaN there.  The accuracy difference is
    compared with the papers' accuracy increase in percentage points (see the notes
    in :data:`PAPER_CLAIMS`); the best-run difference with the same claim, as the
    official script reports the best fold.  ``profile``: only that profile's grid records.
    """
    pairs = adapt_vs_float32(records, variant, adapt_variant, baseline, figures, profile=profile)
    rows = []
    for key, (label, unit) in HEADLINE_METRICS.items():
        vals = pd.to_numeric(pairs[key], errors="coerce") if len(pairs) else pd.Series(dtype=float)
        ours = _mean(vals)
        n = int((~np.isnan(vals.to_numpy(float))).sum()) if len(vals) else 0
        claim_key = "acc_diff_pp" if key == "acc_diff_best_pp" else key
        row = {"metric": key, "label": label, "unit": unit, "this_run": ours, "pairs": n}
        for tag in ("v4", "sdm"):
            claim = PAPER_CLAIMS[tag]["metrics"].get(claim_key, {}).get("value")
            claim = np.nan if claim is None else float(claim)
            row[f"paper_{tag}"] = claim
            row[f"delta_{tag}"] = ours - claim if np.isfinite(claim) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "label", "unit", "this_run", "pairs", "paper_v4", "delta_v4",
                                       "paper_sdm", "delta_sdm"])


# ----------------------------------------------------------------------------- prose from the frames
def arm_label(method, variant=None) -> str:
    """``"adapt (reference)"`` / ``"adapt (corrected)"`` for AdaPT (the variant is AdaPT's heuristic), else the method."""
    if method == "adapt" and variant:
        return f"{method} ({variant})"
    return str(method)


def _fmt(v, unit: str = "", signed: bool = False) -> str:
    text = format_value(v)
    if signed and text not in ("n/a", "inf", "-inf") and not text.startswith("-"):
        text = "+" + text
    return text + (unit if text not in ("n/a",) else "")


def headline_note(head: pd.DataFrame, corrected: Optional[pd.DataFrame] = None) -> str:
    """One paragraph (Markdown) stating :func:`headline_table`'s values beside the paper's, generated from it.

    ``corrected``: the same table under the corrected cost model, stated after it.
    Values are formatted as the tables print them (two decimals; ``n/a`` where undefined).
    """
    h = head.set_index("metric")
    pairs = int(pd.to_numeric(h["pairs"], errors="coerce").max()) if len(h) else 0
    if pairs == 0:
        return ("**Headline.** No model × data set pair has a completed AdaPT run and a completed float32 "
                "baseline, so every headline value is n/a.")

    def claims(metric):
        out = []
        for tag, name, version in (("paper_v4", "v4", "v4"), ("paper_sdm", "SDM", "sdm")):
            v = h.loc[metric, tag]
            if isinstance(v, (int, float, np.floating)) and np.isfinite(v):
                bound = PAPER_CLAIMS[version]["metrics"].get(metric, {}).get("bound")
                bound = {"<=": "≤ ", ">=": "≥ "}.get(bound, "")
                out.append(f"{name} {bound}{_fmt(v, signed=metric.startswith('acc'))}")
        return f" (paper: {', '.join(out)})" if out else " (not claimed)"

    def values(frame):
        f = frame.set_index("metric")
        return {m: f.loc[m, "this_run"] for m in f.index}

    ours = values(head)
    su, acc = ours.get("train_speedup"), ours.get("acc_diff_pp")
    verdict = []
    if isinstance(su, float) and np.isfinite(su):
        verdict.append(f"{'cheaper' if su > 1 else 'not cheaper'} to train than float32 by the cost model")
    if isinstance(acc, float) and np.isfinite(acc):
        verdict.append(f"{_fmt(abs(acc))} pp {'more' if acc > 0 else 'less'} accurate on average")
    parts = [
        f"training speedup {_fmt(ours.get('train_speedup'))}{claims('train_speedup')}",
        f"iso-accuracy training speedup {_fmt(ours.get('train_speedup_iso'))}{claims('train_speedup_iso')}",
        f"accuracy difference {_fmt(ours.get('acc_diff_pp'), ' pp', True)} mean over runs and "
        f"{_fmt(ours.get('acc_diff_best_pp'), ' pp', True)} best run{claims('acc_diff_pp')}",
        f"inference speedup {_fmt(ours.get('inference_speedup'))}{claims('inference_speedup')}",
        f"model size {_fmt(ours.get('model_size'))} of float32{claims('model_size')}",
    ]
    text = (f"**Headline** (AdaPT, reference heuristic, against its float32 baseline; mean over "
            f"{_plural(pairs, 'model × data set pair')}, reference cost model): " + "; ".join(parts) + ".")
    if verdict:
        text += " AdaPT is " + " and ".join(verdict) + " here."
    if corrected is not None:
        c = values(corrected)
        text += (f" Under the corrected cost model: training speedup {_fmt(c.get('train_speedup'))}, iso-accuracy "
                 f"{_fmt(c.get('train_speedup_iso'))}, inference speedup {_fmt(c.get('inference_speedup'))}, "
                 f"model size {_fmt(c.get('model_size'))}.")
    return text


def iso_note(figures: pd.DataFrame, corrected: Optional[pd.DataFrame] = None) -> str:
    """Which runs reached the iso-accuracy target and what that makes of the iso speedups (Markdown).

    ``figures``: a :func:`figures_frame` (the reference cost model's); ``corrected``: the
    corrected one's, for its count of undefined (n/a) values.
    """
    figs = figures[figures["error"] == ""] if len(figures) else figures
    if not len(figs):
        return "**Iso-accuracy.** No completed run was priced, so no iso-accuracy speedup is defined."
    targets = sorted({float(t) for t in pd.to_numeric(figs["iso_target"], errors="coerce").dropna()})
    metrics = sorted({str(m) for m in figs["iso_metric"].dropna()})
    target = ", ".join(f"{t:g}" for t in targets) or "none set"
    metric = " / ".join(f"`{m}`" for m in metrics) or "the accuracy"
    reached = figs["iso_reached"].astype(bool)
    arms = []
    for (method, variant), g in figs.groupby(["method", "variant"], sort=False):
        arms.append((METHOD_ORDER.index(method) if method in METHOD_ORDER else 99, variant != "reference",
                     f"{arm_label(method, variant)} {int(g['iso_reached'].astype(bool).sum())} of {len(g)}"))
    counts = ", ".join(a[2] for a in sorted(arms))
    text = (f"**Iso-accuracy.** Target: {metric} ≥ {target} (the records' `target_accuracy`). Runs that reach it: "
            f"{counts}.")
    quantized = figs[~figs["method"].isin(BASELINES)]
    never = quantized[~quantized["iso_reached"].astype(bool)]
    first = quantized[quantized["iso_reached"].astype(bool) & (pd.to_numeric(quantized["iso_index"],
                                                                              errors="coerce") == 0)]
    if len(never):
        text += (f" For the {_plural(len(never), 'quantized run')} that never reach it, the released formula "
                 f"(reference cost model) divides by an epoch fraction of 1 and reports the plain training speedup")
        if corrected is not None and len(corrected):
            cfig = corrected[(corrected["error"] == "") & ~corrected["method"].isin(BASELINES)]
            undefined = int(pd.to_numeric(cfig["train_speedup_iso"], errors="coerce").isna().sum())
            text += f"; the corrected cost model leaves {_plural(undefined, 'iso speedup')} undefined (n/a)"
        text += "."
    if len(first):
        text += (f" {_plural(len(first), 'quantized run')} reach it at the first logged epoch, where the released "
                 f"formula divides by zero (inf).")
    if figs["method"].isin(BASELINES).any():
        text += " The float32 baselines' iso-accuracy speedup is 1: a baseline is not faster than itself."
    return text


def epochs_note(records: Iterable[dict], profile: Optional[str] = None) -> str:
    """How many epochs each method's completed runs trained (Markdown), from the records."""
    runs = runs_frame(records, profile=profile)
    done = runs[runs["status"] == "completed"]
    if not len(done):
        return "**Epochs.** No run completed."
    parts = []
    for method in [m for m in METHOD_ORDER if m in set(done["method"])] + \
            sorted(set(done["method"]) - set(METHOD_ORDER)):
        e = sorted(int(v) for v in pd.to_numeric(done.loc[done["method"] == method, "epochs_run"],
                                                 errors="coerce").dropna())
        if not e:
            continue
        text = f"{method} {e[0]}" if e[0] == e[-1] else f"{method} {e[0]}–{e[-1]}"
        if method == "muppet":
            text += " (its own stop rule: the fixed-point phases, then float32)"
        parts.append(text)
    return "**Epochs trained** (completed runs): " + ", ".join(parts) + "."


# ----------------------------------------------------------------------------- markdown
def format_value(v, floatfmt: str = ".2f", na_rep: str = "n/a") -> str:
    """One table cell: floats with ``floatfmt``, NaN/None as ``na_rep``, +-inf as ``inf``/``-inf``."""
    if v is None:
        return na_rep
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return na_rep
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return format(float(v), floatfmt)
    try:
        if pd.isna(v):
            return na_rep
    except (TypeError, ValueError):
        pass
    return str(v)


def to_markdown(frame: pd.DataFrame, floatfmt=".2f", index: bool = False,
                na_rep: str = "n/a") -> str:
    """``frame`` as a GitHub pipe table (no ``tabulate`` needed).

    ``floatfmt`` is a format spec (``".2f"``) for every float column or a dict
    ``{column: spec}`` (columns not named use ``".2f"``).  Numeric columns are
    right-aligned, others left-aligned; ``|`` in a cell is escaped; NaN shows as
    ``na_rep``.  ``index=True`` adds the index as the first column.
    """
    df = frame.reset_index() if index else frame
    cols = [str(c) for c in df.columns]

    def fmt_for(col):
        if isinstance(floatfmt, dict):
            return floatfmt.get(col, ".2f")
        return floatfmt

    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    body = []
    for row in df.itertuples(index=False, name=None):
        body.append([format_value(v, fmt_for(str(c)), na_rep).replace("|", "\\|").replace("\n", " ")
                     for c, v in zip(df.columns, row)])
    header = [c.replace("|", "\\|") for c in cols]
    widths = [max([len(h), 3] + [len(r[i]) for r in body]) for i, h in enumerate(header)]

    def line(cells):
        return "| " + " | ".join(
            (c.rjust(w) if num else c.ljust(w)) for c, w, num in zip(cells, widths, numeric)) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if num else ("-" * w) for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line(header), sep] + [line(r) for r in body])


# ----------------------------------------------------------------------------- README
def readme_numbers(records: Sequence[dict], variants: Sequence[str] = ("reference", "corrected"),
                   profile: Optional[str] = None) -> dict:
    """The numbers the README quotes, flat ``{key: float}`` (a test checks the README against them).

    Keys:

    * ``runs``, ``runs.<status>`` -- counts of records;
    * ``accuracy.<model>.<dataset>.<method>.<variant>.mean_pct`` / ``.std_pct`` /
      ``.best_pct`` -- :func:`accuracy_table`;
    * ``headline.<cost_model>.<metric>`` -- :func:`headline_table`'s ``this_run`` per
      cost-model variant (metrics: ``train_speedup, train_speedup_iso, acc_diff_pp,
      acc_diff_best_pp, inference_speedup, model_size``);
    * ``speedup.<cost_model>.<model>.<dataset>.<method>.<variant>.<figure>`` -- the
      :func:`speedup_table` means of ``train_speedup, train_speedup_iso,
      inference_speedup, model_size``.

    Values are unrounded floats (NaN where undefined); format them with
    :func:`format_value` (``".2f"``) as the README does.  ``profile``: only that
    profile's grid records (the README passes its profile).
    """
    records = select_records(records, profile)
    out = {"runs": float(len(records))}
    for s in STATUSES:
        out[f"runs.{s}"] = float(sum(1 for r in records if r.get("status") == s))
    acc = accuracy_table(records)
    for r in acc.itertuples(index=False):
        base = f"accuracy.{r.model}.{r.dataset}.{r.method}.{r.variant}"
        out[f"{base}.mean_pct"] = float(r.acc_mean_pct)
        out[f"{base}.std_pct"] = float(r.acc_std_pct)
        out[f"{base}.best_pct"] = float(r.acc_best_pct)
    for v in variants:
        figs = figures_frame(records, v)
        head = headline_table(records, v, figures=figs)
        for r in head.itertuples(index=False):
            out[f"headline.{v}.{r.metric}"] = float(r.this_run)
        sp = speedup_table(records, v, figures=figs)
        for r in sp.itertuples(index=False):
            base = f"speedup.{v}.{r.model}.{r.dataset}.{r.method}.{r.variant}"
            for c in ("train_speedup", "train_speedup_iso", "inference_speedup", "model_size"):
                out[f"{base}.{c}"] = float(getattr(r, c))
    return out


# ----------------------------------------------------------------------------- README block
README_BEGIN = "<!-- results:begin (generated by tools/update_readme.py from results/smoke; do not edit) -->"
README_END = "<!-- results:end -->"


def readme_block(records: Sequence[dict], profile: str = "smoke") -> str:
    """The README's results section body: accuracy and headline tables computed from ``records``.

    Only the grid records of ``profile`` enter the tables; the others (custom runs, ...)
    are named below the first line.  Without a completed run the block says so and
    lists the failures with their messages.  ``tools/update_readme.py`` writes it
    between :data:`README_BEGIN` and :data:`README_END`; tests/test_readme.py recomputes
    it from the committed records and checks that the README says exactly this.
    """
    from .grid import split_records

    records, others = split_records(list(records), profile)
    lines = [f"{len(records)} runs of the `{profile}` profile ({_status_counts(records) or 'none'})."]
    if others:
        lines += ["", other_runs_note(others, profile), ""]
        lines += [f"* `{run_id(r)}` ({r.get('status')}): {other_run_reason(r, profile)}" for r in others]
    completed = [r for r in records if r.get("status") == "completed"]
    if not completed:
        lines += ["", "**No completed runs.**" if records else "**No runs.**"]
        fails = failures_table(records)
        if len(fails):
            lines += ["", to_markdown(fails[["run_id", "status", "message"]])]
    acc = accuracy_table(records)
    acc_view = acc[["model", "dataset", "method", "variant", "runs", "accuracy", "acc_best_pct"]].rename(
        columns={"accuracy": "test accuracy % (mean ± std)", "acc_best_pct": "best run %"})
    figs = {v: figures_frame(records, v) for v in ("reference", "corrected")}
    head = headline_table(records, "reference", figures=figs["reference"])
    head_c = headline_table(records, "corrected", figures=figs["corrected"])
    view = pd.DataFrame({
        "metric": head["label"],
        "this run (reference cost model)": head["this_run"],
        "this run (corrected cost model)": head_c["this_run"].values,
        "paper v4": head["paper_v4"],
        "paper SDM": head["paper_sdm"],
    })
    lines += [
        "",
        "**Test accuracy** (final epoch; mean ± std over seeds/folds, ddof 1; best run = what the official "
        "script reports):",
        "",
        to_markdown(acc_view, floatfmt=".2f"),
        "",
        "**Headline** (AdaPT reference heuristic vs its float32 baseline, averaged over model × data set):",
        "",
        to_markdown(view, floatfmt=".2f"),
    ]
    if completed:
        lines += ["", epochs_note(records), "", iso_note(figs["reference"], figs["corrected"])]
    return "\n".join(lines)
