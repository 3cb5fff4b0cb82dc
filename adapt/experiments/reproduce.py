"""Retrain committed grid points into a folder of your own and say, run by run, whether they came out the same.

    adapt reproduce [PROFILE] [--seeds 0] [--results reproduced] [--against results]

What ``make reproduce`` runs: for each selected point of the profile's grid (by default seed 0 of
every method and heuristic variant of ``mnist5k``, the offline real-MNIST grid), train it afresh
into ``<results>/<profile>/<run_id>/`` (a folder git ignores), then compare the new record with the
committed one (``<against>/<profile>/<run_id>/record.json``) through
:func:`adapt.experiments.compare.compare_records` and print one verdict line per run:

* ``IDENTICAL`` -- the same config and the same results, bit for bit (what the same machine type,
  package versions and thread count give, docs/reproducibility.md);
* ``DIFFERS`` -- the first difference (epoch and metric, or trace entry) and the environment
  entries that differ between the two records, which usually explain it (another CPU capability,
  BLAS build or thread count);
* ``NEW`` -- no committed record to compare with; ``FAILED`` -- the run failed (its record says why).

A summary line follows.  Nothing in the committed ``results/`` is read for training or written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from adapt import paths
from adapt.experiments.compare import compare_records
from adapt.experiments.grid import DEFAULT_NOTEBOOK, GridPoint, grid
from adapt.experiments.runner import run_grid
from adapt.records import FINISHED, RECORD, RecordError, load_record

__all__ = ["DEFAULT_PROFILE", "DEFAULT_SEEDS", "reproduce_points", "verdict", "reproduce", "summary", "failed"]

#: What ``make reproduce`` retrains: the profile whose data is real and offline, ...
DEFAULT_PROFILE = "mnist5k"
#: ... and the seeds of it (one seed of every method and variant).
DEFAULT_SEEDS = (0,)


def reproduce_points(profile: str = DEFAULT_PROFILE, seeds: Sequence[int] = DEFAULT_SEEDS) -> list:
    """The grid points of ``profile`` with a seed in ``seeds`` (fold 0 only): one run per method and variant."""
    points = [p for p in grid(profile) if p.seed in tuple(seeds) and p.fold == 0]
    if not points:
        raise ValueError(f"profile {profile!r} has no point with seed in {tuple(seeds)} and fold 0; "
                         f"`adapt grid {profile} --list` lists its points")
    return points


def verdict(point: GridPoint, new_root: Path, committed_root: Path) -> dict:
    """``{"run_id", "verdict", "detail"}``: how the new record of ``point`` compares with the committed one."""
    new_path = point.out_dir(new_root) / RECORD
    old_path = point.out_dir(committed_root) / RECORD
    row = {"run_id": point.run_id, "verdict": "FAILED", "detail": ""}
    try:
        new = load_record(new_path)
    except (OSError, RecordError) as exc:
        row["detail"] = f"no record: {exc}"
        return row
    if new.get("status") not in FINISHED:
        row["detail"] = f"status {new.get('status')}: {(new.get('message') or '').splitlines()[0:1]}"
        return row
    if not old_path.exists():
        row.update(verdict="NEW", detail=f"no committed record at {paths.display(old_path)} to compare with")
        return row
    try:
        old = load_record(old_path)
    except RecordError as exc:
        row.update(verdict="NEW", detail=f"the committed record cannot be read: {exc.problem}")
        return row
    cmp = compare_records(old, new, a_label=paths.display(old_path), b_label=paths.display(new_path))
    if cmp.identical:
        row.update(verdict="IDENTICAL", detail=f"to {paths.display(old_path)}")
        return row
    parts = []
    if cmp.config:
        parts.append("config fields " + ", ".join(f for f, _, _ in cmp.config[:4]))
    if cmp.first_epoch is not None:
        parts.append("first at " + cmp.first_epoch.format())
    elif cmp.first_trace is not None:
        parts.append("first at trace " + cmp.first_trace.format())
    elif cmp.n_epochs[0] != cmp.n_epochs[1]:
        parts.append(f"{cmp.n_epochs[0]} vs {cmp.n_epochs[1]} epochs")
    env = [k for k, _, _ in cmp.environment]
    parts.append(f"environment differs in {', '.join(env[:6])}{' ...' if len(env) > 6 else ''}" if env
                 else "the environment entries agree")
    row.update(verdict="DIFFERS", detail="; ".join(parts))
    return row


def reproduce(profile: str = DEFAULT_PROFILE, seeds: Sequence[int] = DEFAULT_SEEDS, results_root="reproduced",
              committed_root=None, executor: str = "papermill", notebook=DEFAULT_NOTEBOOK,
              force: bool = False, verbose: bool = True) -> list:
    """Train :func:`reproduce_points` into ``results_root`` and compare each with ``committed_root``.

    ``results_root`` defaults to ``reproduced/`` of the repository; ``committed_root`` to the committed
    results (:func:`adapt.paths.results_root`).  A point already finished in ``results_root`` is not
    trained again (``force`` retrains it).  Returns the verdict rows (:func:`verdict`).
    """
    new_root = paths.resolve(results_root)
    committed = paths.results_root(committed_root)
    if new_root.resolve() == committed.resolve():
        raise ValueError(f"--results {results_root!r} is the committed results folder {paths.display(committed)}: "
                         f"reproduce into a folder of its own (default: reproduced/)")
    points = reproduce_points(profile, seeds)
    if verbose:
        print(f"reproducing {len(points)} run(s) of the {profile} grid into {paths.display(new_root)}, "
              f"compared with {paths.display(committed)}", flush=True)
    run_grid(points=points, results_root=new_root, executor=executor, notebook=notebook, force=force,
             verbose=verbose)
    rows = [verdict(p, new_root, committed) for p in points]
    if verbose:
        width = max(len(r["run_id"]) for r in rows)
        for r in rows:
            print(f"{r['run_id']:<{width}}  {r['verdict']:<9}  {r['detail']}", flush=True)
        print(summary(rows), flush=True)
    return rows


def summary(rows: Sequence[dict]) -> str:
    """``"5 run(s): 5 IDENTICAL"``, or the counts of each verdict."""
    counts = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    order = ("IDENTICAL", "DIFFERS", "NEW", "FAILED")
    text = ", ".join(f"{counts[v]} {v}" for v in order if v in counts)
    note = ""
    if counts.get("DIFFERS"):
        note = (" -- a difference with a differing environment is expected across machines "
                "(docs/reproducibility.md); on the same machine type it is a finding")
    return f"{len(rows)} run(s): {text}{note}"


def failed(rows: Sequence[dict]) -> Optional[str]:
    """The run ids whose run failed, or ``None``."""
    bad = [r["run_id"] for r in rows if r["verdict"] == "FAILED"]
    return ", ".join(bad) if bad else None
