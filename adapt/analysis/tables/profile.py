"""Loading a profile's records, and what its tables leave out, what failed, what was run.

* :func:`load_profile` -- a profile's records, split into its grid records and the
  others (custom runs, ...), with the bad files skipped;
* :func:`other_runs_table` (and :func:`other_runs_note`, :func:`other_run_reason`),
  :func:`failures_table`, :func:`protocol_table` -- what was left out, what did not
  complete, what was run.

:func:`load_profile` is what the analysis notebooks call: it reads
``<results_root>/<profile>/<run_id>/record.json`` (:func:`find_records`: a bad
``record.json`` is skipped with a ``RuntimeWarning`` naming it; copies and symlinks
are named and not read), splits the records
into the grid records and the others, and its :meth:`ProfileRecords.summary` says
what was found, skipped and left out ("2 custom runs are not in these tables:",
with :func:`other_runs_table` listing them).  :func:`failures_table` lists the runs
that did not complete with their messages (all of them when a profile has no
completed run: the tables then show each group's status instead of numbers).
Which records a table reports: see :mod:`adapt.analysis.tables.frames`.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from adapt.analysis.tables.frames import (sort_rows, plural, status_counts, run_id, run_method, runs_frame, select_records)
from adapt.experiments.configs import CONFIGS
from adapt.experiments.grid import record_point, split_records
from adapt.paths import display, results_root as _results_root
from adapt.records import COMPLETED, RecordError, load_record

__all__ = [
    "ProfileRecords", "load_profile", "find_records", "other_run_reason", "other_runs_table", "other_runs_note", "failures_table",
    "protocol_table",
]


# ----------------------------------------------------------------------------- loading a profile
def _display_path(path) -> str:
    """``path`` relative to the repository when it lies inside it (no machine-specific prefix in notebooks)."""
    return display(path)


@dataclass
class ProfileRecords:
    """What :func:`load_profile` found under ``<results_root>/<profile>/``.

    ``records``: the grid records of the profile (what every table reports);
    ``others``: the other valid records there (custom runs, off-grid points, hand-made
    configs; :func:`other_runs_table`); ``skipped``: the warnings of the
    ``record.json`` files that are not valid records (each names its path); ``strays``: the
    other ``record.json`` files found there and not read (copies, symlinks; :func:`find_records`).
    """

    profile: str
    root: Path
    records: list = field(default_factory=list)
    others: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    strays: list = field(default_factory=list)

    @property
    def completed(self) -> list:
        return [r for r in self.records if r.get("status") == COMPLETED]

    def summary(self) -> str:
        """Plain-text lines: what was read, skipped and left out of the tables, and whether anything completed."""
        where = _display_path(self.root)
        lines = []
        if self.records:
            lines.append(f"{plural(len(self.records), 'grid record')} of the {self.profile!r} profile in {where} "
                         f"({status_counts(self.records)}).")
        else:
            lines.append(f"no grid records of the {self.profile!r} profile in {where}: no completed runs, "
                         f"so the tables below are empty.")
        if self.skipped:
            lines.append(f"{plural(len(self.skipped), 'record file')} skipped (not a valid run record):")
            lines.extend(f"  {msg}" for msg in self.skipped)
        if self.strays:
            lines.append(f"{plural(len(self.strays), 'other record file')} not read (each run is read once, "
                         f"from <run_id>/record.json):")
            lines.extend(f"  {msg}" for msg in self.strays)
        if self.records and not self.completed:
            lines.append("no completed runs: the tables show each group's status instead of numbers.")
        unfinished: dict = {}
        for r in self.records:
            if r.get("status") != COMPLETED:
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

    A run is read only from ``<profile>/<run_id>/record.json``, where the folder is a real folder (not
    a symlink) and ``run_id`` is the run id of the record's own config: a backup copy of a run folder
    (``<run_id>.bak/``), a copy of the results inside them (``old/<run_id>/``) or a symlink to another
    run would otherwise count a run twice.  Those are listed in ``strays``, each with why it was not
    read (:func:`find_records`), and :meth:`ProfileRecords.summary` names them.  Bad ``record.json``
    files are skipped by :func:`adapt.records.load_record` with a ``RuntimeWarning`` naming them
    (issued here, so it shows in a notebook's output) and listed in ``skipped``.  A missing folder
    gives no records.
    """

    root = _results_root(results_root) / profile
    found, skipped, strays = find_records(root)
    for message in skipped:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    grid_records, others = split_records(found, profile)
    return ProfileRecords(profile=profile, root=root, records=grid_records, others=others, skipped=skipped,
                          strays=strays)


def find_records(root) -> tuple:
    """``(records, skipped, strays)`` of a profile folder: the runs read, the bad record files, the rest.

    ``records``: from every ``<root>/<folder>/record.json`` whose folder is not a symlink, whose
    ``record.json`` is not one, and whose folder name is the run id of the record's config (a record
    whose config is not in the registry has no run id to match and is read: the tables list it apart).
    ``skipped``: one message per ``record.json`` there that is not a valid record (naming it).
    ``strays``: one message per other ``record.json`` found below ``root`` (deeper, at ``root`` itself,
    behind a symlink, or in a folder named after another run), naming it and why it is not read.
    Read only; nothing is moved.
    """
    root = Path(root)
    records, skipped, strays = [], [], []
    if not root.is_dir():
        return records, skipped, strays
    top = root / "record.json"
    if top.exists():
        strays.append(f"{_display_path(top)}: not in a run folder <run_id>/record.json, not read")
    for entry in sorted(root.iterdir()):
        if entry.is_symlink():
            if entry.is_dir() and (entry / "record.json").exists():
                strays.append(f"{_display_path(entry)}: a symlink (to {os.readlink(entry)}), not a run folder; "
                              f"its record.json is not read (the run it points to is read where it lies)")
            continue
        if not entry.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(entry):  # does not follow symlinked folders
            here = Path(dirpath)
            for d in dirnames:
                if (here / d).is_symlink() and (here / d / "record.json").exists():
                    strays.append(f"{_display_path(here / d)}: a symlink inside {entry.name}/, not read")
            if "record.json" in filenames and here != entry:
                strays.append(f"{_display_path(here / 'record.json')}: a copy inside {entry.name}/ (not "
                              f"<run_id>/record.json), not read")
        path = entry / "record.json"
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_symlink():
            strays.append(f"{_display_path(path)}: a symlink (to {os.readlink(path)}), not read")
            continue
        try:
            record = load_record(path)
        except (RecordError, OSError) as exc:
            skipped.append(f"skipping {exc} (rerun its grid point to recompute it)")
            continue
        point = record_point(record)
        if point is not None and point.run_id != entry.name:
            strays.append(f"{_display_path(path)}: holds run {point.run_id}, not {entry.name} (a backup copy?), "
                          f"not read")
            continue
        records.append(record)
    return records, skipped, strays


def _other_kind(record: dict, profile: Optional[str]) -> tuple:
    """``(kind, reason)`` of a record that is not a grid record of ``profile``."""

    cfg = record.get("config") or {}
    point = record_point(record)
    if point is None:
        if cfg.get("name") not in CONFIGS:
            return "hand-made config", f"config {cfg.get('name')!r} is not in adapt.experiments.configs"
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
        return f"{plural(n, kind)} {verb} not in these tables:"
    parts = ", ".join(plural(n, k) for k, n in kinds.items())
    return f"{plural(len(records), 'run')} {verb} not in these tables ({parts}):"


def failures_table(records: Iterable[dict], profile: Optional[str] = None) -> pd.DataFrame:
    """The runs that did not complete, with their messages: ``run_id, model, dataset, method, variant,
    seed, fold, status, epochs_run, message``."""
    runs = runs_frame(records, profile=profile)
    cols = ["run_id", "model", "dataset", "method", "variant", "seed", "fold", "status", "epochs_run", "message"]
    return runs.loc[runs["status"] != COMPLETED, cols].reset_index(drop=True)


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
    frame = sort_rows(pd.DataFrame(out, columns=cols))
    return frame.drop(columns=["variant"])
