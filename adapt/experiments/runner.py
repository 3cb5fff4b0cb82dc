"""Running grid points: train one, run many, read their state from the results folder.

The points themselves (:class:`~adapt.experiments.grid.GridPoint`, the profile tables, the selection)
are defined in :mod:`adapt.experiments.grid`; ``python -m adapt grid`` is the command line over both.

Running a point
---------------
``executor="papermill"`` executes the training notebook (``notebooks/10-train.ipynb``)
with the parameters ``config_name, variant, seed, fold, results_root, force`` (plus
``overrides``, a dict of config fields, only when the point has any) and keeps the
executed copy beside the record as ``<out_dir>/10-train.ipynb``.  ``results_root`` is
handed to the notebook relative to the repository when it lies inside it (the
notebook resolves it with :func:`adapt.paths.results_root`), so the executed copies
hold no machine-specific absolute path.  The notebook is expected to call
:func:`train_point` with its parameters; the kernel inherits this process's claim on
the point (:mod:`adapt.experiments.claims`) and its printed lines are forwarded as they arrive.

* A point that another live process has claimed is skipped (status ``claimed``).
``executor="inline"`` calls :func:`adapt.train.run` in this process (tests, and a
fallback where no Jupyter kernel is available).

* A point whose ``record.json`` is finished (``completed`` or ``diverged``) with the
  same config is skipped (``force=True`` recomputes it).
* A point whose record holds a *different* config (the grid or a config changed
  since it ran) is reported ``stale`` and left untouched; rerun it with ``force``.
* An unfinished point (``interrupted``, ``running`` after a kill, ``failed``) resumes
  from its ``checkpoint.pt`` (``adapt.train.run(resume=True)``); without a checkpoint
  it starts afresh.
* Any exception inside a point is caught: the point is reported ``failed`` and the
  grid goes on.  The record says so: :func:`adapt.train.run` marks a run that fails
  mid-training ``failed`` itself; a point that failed before its record existed gets
  a minimal record (:func:`adapt.experiments.grid.failure_record`, the same ``adapt.run/1`` schema, no
  epochs) so the tables list it as failed.  ``KeyboardInterrupt`` (Ctrl-C, also inside the
  papermill kernel) is not a failure: the record stays ``running`` with its checkpoint, the
  next run resumes it, and :class:`Interrupted` carries the one line that says so
  (:func:`interrupted_line`, printed by ``adapt run`` and ``adapt grid``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import pandas as pd

from adapt import paths, train
from adapt.data.base import DatasetNotAvailable
from adapt.data.datasets import load_dataset
from adapt.experiments import claims
from adapt.experiments.grid import (DEFAULT_NOTEBOOK, EXECUTORS, GridPoint, check_points, failure_record, grid,
                                   record_point, select)
from adapt.records import (CHECKPOINT, COMPLETED, FAILED, FINISHED, INTERRUPTED, RECORD, RUNNING, ReadOnlyError,
                           RecordError, atomic_write_json, check_writable, load_record, read_record, run_state,
                           utc_now)

#: Extra arguments of every kernel this package starts: its log at ERROR, so that ipykernel's "Kernel is
#: running over TCP without encryption" (a local kernel on the loopback) is not printed once per notebook.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR",)

__all__ = ["KERNEL_ARGUMENTS", "custom_points", "prune_checkpoints", "PreflightError", "preflight", "Interrupted", "interrupted_line", "NOTEBOOK_PARAMETERS",
           "notebook_parameters", "train_point", "run_point", "run_grid", "failure_message", "MESSAGE_LIMIT", "point_status",
           "status_frame", "print_status", "run_workers"]


def _mark_failed(point: GridPoint, out_dir: Path, message: str) -> dict:
    """Make ``out_dir/record.json`` say ``failed``: keep a record training wrote, else write a minimal one."""
    path = out_dir / "record.json"
    record = read_record(path)
    if record is not None and record.get("status") == FAILED and record.get("message"):
        return record  # adapt.train already recorded the failure
    if record is not None and record.get("status") in FINISHED:
        # A forced rerun that failed before it trained an epoch: the finished record stays.
        return {**record, "status": FAILED,
                "message": f"{message} (the finished record in {paths.display(path)} is kept)"}
    if record is None:
        try:
            cfg = point.config()
        except ValueError:  # the config itself is invalid
            cfg = point.config_name
        record = failure_record(cfg, message)
        record.update(run_id=point.run_id, overrides=point.override_dict)
    else:
        record.update(status=FAILED, message=message, finished=utc_now())
    atomic_write_json(path, record)
    return record


#: The longest failure message kept in a record (the whole message of a data set error fits).
MESSAGE_LIMIT = 4000


def failure_message(exc: BaseException) -> str:
    """The whole message of ``exc`` (all its lines: what was found and what to do), for the record.

    A papermill error carries the notebook cell's traceback; its exception name and
    value are what the training code raised.
    """
    text = f"{type(exc).__name__}: {exc}".strip()
    if type(exc).__name__ == "PapermillExecutionError":
        ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
        if ename:
            text = f"{ename}: {evalue} (in the notebook, cell {getattr(exc, 'exec_count', '?')})"
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT] + " [...]"
    return text or type(exc).__name__


# ----------------------------------------------------------------------------- interrupts
class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a point trained; ``str()`` is one line: what was kept and how to resume.

    A ``KeyboardInterrupt`` still (whoever catches that catches this), so that a notebook or a
    script stops as before; the command line prints the line instead of a traceback.
    """


def interrupted_line(point: GridPoint, results_root=None, done: Optional[int] = None,
                     total: Optional[int] = None) -> str:
    """What Ctrl-C left of ``point`` (read from its folder: :func:`adapt.records.run_state`) and how to resume.

    ``done`` / ``total``: the grid's points finished before it (said too).  Only the epoch in
    progress is lost: every finished epoch is in the checkpoint, and the same command resumes
    from it with exactly the numbers of an uninterrupted run.
    """
    out_dir = point.out_dir(results_root)
    try:
        state = run_state(out_dir, point.config().to_dict())
    except ValueError:
        state = run_state(out_dir)
    epochs = len((state.record or {}).get("epochs") or [])
    try:
        of = f" of {point.config().epochs}"
    except ValueError:
        of = ""
    where = paths.display(out_dir)
    if state.kind == "finished":
        kept = f"{point.run_id} is {state.status} in {where} (nothing lost)"
    elif state.kind == "resumable" and epochs:
        kept = f"{point.run_id} keeps {epochs}{of} epoch(s) in {where} (checkpoint.pt; the epoch in progress is lost)"
    else:
        kept = f"{point.run_id} had not finished an epoch (nothing of it kept)"
    grid_part = f"; {done} of {total} point(s) done before it" if total is not None else ""
    return f"interrupted: {kept}{grid_part}; run the same command again to resume"


# ----------------------------------------------------------------------------- the training notebook's parameters
#: The parameters of the training notebook (notebooks/10-train.ipynb's parameters cell; :meth:`GridPoint.params`).
NOTEBOOK_PARAMETERS = ("config_name", "variant", "seed", "fold", "results_root", "force", "overrides", "device")

#: The other names the training notebook's cells define (so that rerunning them by hand is not taken for
#: an unknown parameter), and those IPython puts in every namespace.
_NOTEBOOK_NAMES = ("pd", "GridPoint", "train_point", "notebook_parameters", "params", "point", "config", "record",
                   "history", "In", "Out", "get_ipython", "exit", "quit", "open")


def notebook_parameters(namespace: dict) -> dict:
    """The training notebook's parameters from its namespace (``globals()``), checked; ``ValueError`` otherwise.

    papermill only warns about a parameter the notebook does not have (``-p epochs 1``) and runs
    the notebook with its defaults, whose committed record then looks like the result: a name
    that is not one of :data:`NOTEBOOK_PARAMETERS` is an error here, listing them.  ``overrides``
    given as a string (``-p overrides '{"epochs": 1}'``) is read as JSON; it must be a dict of
    config fields (``None`` for none).
    """
    unknown = sorted(k for k in namespace if not k.startswith("_") and k not in NOTEBOOK_PARAMETERS
                     and k not in _NOTEBOOK_NAMES)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(repr(k) for k in unknown)} of the training notebook: "
                         f"it takes {', '.join(NOTEBOOK_PARAMETERS)}; config fields go in overrides, e.g. "
                         f"-p overrides '{{\"epochs\": 1}}' (papermill -y 'overrides: {{epochs: 1}}')")
    params = {k: namespace[k] for k in NOTEBOOK_PARAMETERS if k in namespace}
    overrides = params.get("overrides")
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except ValueError as exc:
            raise ValueError(f"parameter overrides={overrides!r} is not JSON ({exc}); expected a dict of config "
                             f"fields, e.g. -p overrides '{{\"epochs\": 1}}'") from None
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"parameter overrides={params.get('overrides')!r} must be a dict of config fields "
                         f"(or None), e.g. {{\"epochs\": 1}}")
    params["overrides"] = overrides
    return params


# ----------------------------------------------------------------------------- running
class PreflightError(RuntimeError):
    """What every point of a run would fail on (the device, a data set), found before any point ran."""


def preflight(points: Sequence[GridPoint], results_root=None, force: bool = False, device=None) -> list:
    """Check the device and the data sets of the points that will train, once, before any of them runs.

    Checked per point at run time instead, an unusable device or a data set that is not there
    fails every point one after the other, each writing a failure record (and, with ``force``,
    each rerun of a finished point started for nothing).  Points already finished are not
    counted unless ``force`` (an offline rerun of a finished grid needs no data).  Returns the
    names of the data sets checked; raises :class:`PreflightError` (one message: what is wrong,
    that nothing was run or written, and what to do) otherwise; a results folder this process cannot
    write (someone else's, read-only) is found here too.  ``device`` as
    :func:`adapt.train.pick_device` takes it (default ``$ADAPT_DEVICE``, else the best available).
    """
    todo = []
    for p in points:
        try:
            config = p.config()
        except ValueError:  # an invalid override: that point's own run says so
            continue
        if force or run_state(p.out_dir(results_root), config.to_dict()).kind != "finished":
            todo.append(config)
    if not todo:
        return []
    nothing = "no point was run and no record was changed"
    for folder in dict.fromkeys(paths.results_root(results_root) / c.profile for c in todo):
        try:
            check_writable(folder, f"train into it ({nothing}); pass --results DIR (or set ${paths.RESULTS_ENV}) "
                                   f"to a folder you can write; reading and analysing it works as it is")
        except ReadOnlyError as exc:
            raise PreflightError(str(exc)) from None
    try:
        train.pick_device(device)
    except (ValueError, RuntimeError) as exc:
        raise PreflightError(f"{exc}; {nothing}") from None
    names = list(dict.fromkeys(c.dataset for c in todo))
    for name in names:
        try:
            load_dataset(name)
        except DatasetNotAvailable as exc:
            raise PreflightError(f"data set {name!r}, needed by {sum(c.dataset == name for c in todo)} point(s), "
                                 f"is not available ({nothing}):\n{exc}") from None
    return names


def train_point(config_name: str, variant: str = "reference", seed: int = 0, fold: int = 0,
                results_root=None, force: bool = False, overrides: Optional[dict] = None,
                progress: bool = True, device=None, **train_kwargs) -> dict:
    """Train one point into ``<results_root>/<profile>/<run_id>/`` and return its record.

    What ``adapt run`` and the training notebook call (and the inline executor)::

        from adapt.experiments.runner import train_point
        record = train_point("smoke/adapt/alexnet_cifar/digits", seed=3, overrides={"lr": 0.001, "epochs": 15})

    ``overrides`` (config fields) make a custom run with a run id of its own
    (:attr:`GridPoint.run_id`), so it never replaces the grid point's record.
    ``results_root``: see :func:`adapt.paths.results_root` (default ``$ADAPT_RESULTS`` or
    the repository's ``results/``).  ``progress`` prints a line per epoch.

    What happens with what the folder holds (finished, resumable, stale ...) is
    :func:`adapt.train.run`'s decision.  The point is claimed for the call
    (:mod:`adapt.experiments.claims`): :class:`adapt.experiments.claims.PointClaimed` when
    another process is training it; :class:`adapt.records.ReadOnlyError` (one line) when the run
    would have to be written into a folder this process cannot write.
    """
    point = GridPoint(config_name, variant, int(seed), int(fold), overrides or {})
    config = point.config()
    out_dir = point.out_dir(results_root)
    if not force:  # a finished run is read, not claimed: someone else's read-only results work too
        state = run_state(out_dir, config.to_dict())
        if state.kind == "finished":
            if progress:
                print(f"[{point.run_id}] already {state.status} in {paths.display(out_dir)} (force=True retrains it)",
                      flush=True)
            return state.record
    check_writable(out_dir, f"train {point.run_id} into it; pass --results DIR (or set ${paths.RESULTS_ENV}) to a "
                            f"folder you can write")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_info = {"run_id": point.run_id, "overrides": point.override_dict}
    with claims.claim(out_dir):
        state = run_state(out_dir, config.to_dict())
        if state.kind == "finished" and not force and progress:
            print(f"[{point.run_id}] already {state.status} in {paths.display(out_dir)} (force=True retrains it)",
                  flush=True)
        try:
            return train.run(config, out_dir=out_dir, resume=True, force=force, progress=progress, device=device,
                             run_info=run_info, **train_kwargs)
        except KeyboardInterrupt as exc:
            if isinstance(exc, Interrupted):
                raise
            raise Interrupted(interrupted_line(point, results_root)) from None


def _resolve_notebook(notebook) -> Path:
    nb = Path(notebook)
    if not nb.is_absolute() and not nb.exists() and (paths.base_dir() / nb).exists():
        nb = paths.base_dir() / nb
    return nb.resolve()


def _notebook_results_root(results_root: Path) -> str:
    """``results_root`` as the training notebook takes it: relative to the repository when inside it."""
    try:
        return Path(results_root).resolve().relative_to(paths.base_dir()).as_posix()
    except ValueError:
        return str(Path(results_root).resolve())


def _run_papermill(point: GridPoint, results_root: Path, notebook, force: bool, progress: bool) -> None:
    import papermill  # an optional dependency (the notebooks extra): only this executor needs it

    nb = _resolve_notebook(notebook)
    if not nb.exists():
        raise FileNotFoundError(f"training notebook {notebook!r} not found")
    out_dir = point.out_dir(results_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The kernel is a child process: it inherits the claim this process holds on out_dir.
    previous = os.environ.get(claims.HELD_ENV)
    os.environ[claims.HELD_ENV] = str(out_dir.resolve())
    try:
        # The kernel's printed lines (one per epoch) are forwarded as they arrive.  Paths relative to
        # where they are used (papermill's metadata: this process's cwd; the results root: the
        # repository), so the executed copy holds no machine-specific path.
        papermill.execute_notebook(
            os.path.relpath(nb), os.path.relpath(out_dir / nb.name),
            parameters=point.params(_notebook_results_root(results_root), force),
            kernel_name="python3", cwd=os.path.relpath(nb.parent), log_output=False, progress_bar=False,
            stdout_file=sys.stdout if progress else None, stderr_file=sys.stderr if progress else None,
            extra_arguments=list(KERNEL_ARGUMENTS))
    finally:
        if previous is None:
            os.environ.pop(claims.HELD_ENV, None)
        else:
            os.environ[claims.HELD_ENV] = previous


def run_point(point: GridPoint, results_root=None, executor: str = "papermill",
              notebook=DEFAULT_NOTEBOOK, force: bool = False, progress: bool = False, label: str = "") -> dict:
    """Run one point unless it is done or claimed; never raises for a failure of the run itself.

    Returns ``{"run_id", "config_name", "variant", "seed", "fold", "status", "action",
    "wall_s", "message", "out_dir"}`` where ``status`` is the record's status after the
    call (``completed``, ``diverged``, ``interrupted``, ``failed``), ``stale`` (a record
    of another config is in the way) or ``claimed`` (another process is training it),
    and ``action`` is ``skipped``, ``ran`` or ``failed``.  With ``progress``, a line is
    printed when the point starts and one per epoch while it trains.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    results_root = paths.results_root(results_root)
    out_dir = point.out_dir(results_root)
    summary = {"run_id": point.run_id, "config_name": point.config_name, "variant": point.variant,
               "seed": point.seed, "fold": point.fold, "status": None, "action": None, "wall_s": 0.0,
               "message": "", "out_dir": str(out_dir)}
    t0 = time.time()

    def done_already() -> bool:
        """A finished or stale point is skipped (``force`` retrains both): :func:`adapt.records.run_state`."""
        if force:
            return False
        try:
            wanted = point.config().to_dict()
        except ValueError:  # an invalid override: the run below fails, and its record says why
            return False
        state = run_state(out_dir, wanted)
        if state.kind == "stale":
            summary.update(status="stale", action="skipped",
                           message="record.json holds a run of another config; rerun with --force to replace it")
            return True
        if state.kind == "finished":
            summary.update(status=state.status, action="skipped", message=state.record.get("message", ""))
            return True
        return False

    if done_already():
        return summary
    try:
        with claims.claim(out_dir):
            if done_already():  # finished by another process between the check and the claim
                return summary
            if progress:
                print(f"{label}{' ' if label else ''}{point.run_id}: starting ({point.config_name}, "
                      f"{executor})", flush=True)
            try:
                if executor == "inline":
                    train_point(point.config_name, point.variant, point.seed, point.fold, results_root, force,
                                point.override_dict, progress=progress)
                else:
                    _run_papermill(point, results_root, notebook, force, progress)
                record = read_record(out_dir / "record.json")
                if record is None:
                    raise RuntimeError(f"the run finished without writing {out_dir / 'record.json'}")
                summary.update(status=record["status"], action="ran", message=record.get("message", ""))
            except Exception as exc:
                if getattr(exc, "ename", None) == "KeyboardInterrupt":  # Ctrl-C reached the kernel: not a failure
                    raise Interrupted(interrupted_line(point, results_root)) from None
                message = failure_message(exc)
                record = _mark_failed(point, out_dir, message)
                summary.update(status=FAILED, action="failed", message=record.get("message") or message)
    except claims.PointClaimed as exc:
        summary.update(status="claimed", action="skipped", message=str(exc))
    summary["wall_s"] = time.time() - t0
    return summary


def run_grid(profile: Optional[str] = "smoke", results_root=None, executor: str = "papermill",
             force: bool = False, only: Union[str, Sequence[str], None] = None, notebook=DEFAULT_NOTEBOOK,
             points: Optional[Iterable[GridPoint]] = None, progress: Optional[bool] = None, verbose: bool = True,
             match: Union[str, Sequence[str], None] = None):
    """Run every point of ``profile`` (or the given ``points``); returns a DataFrame of their statuses.

    ``only``: exact run ids; ``match``: shell-style patterns (:func:`select`).  With
    ``verbose``, a line is printed when a point starts, one per epoch while it trains
    (``progress``, default: ``verbose``), and one when it ends.

    Every point's values are checked first (:func:`adapt.experiments.grid.check_points`: ``ValueError``),
    then the device and the data sets, once (:func:`preflight`: :class:`PreflightError`); either way
    nothing is run or written.
    """
    pts = check_points(select(list(points) if points is not None else grid(profile), only, match))
    preflight(pts, results_root, force)
    progress = verbose if progress is None else progress
    rows = []
    width = len(str(len(pts)))
    for i, p in enumerate(pts, 1):
        label = f"[{i:>{width}}/{len(pts)}]"
        try:
            row = run_point(p, results_root, executor=executor, notebook=notebook, force=force, progress=progress,
                            label=label)
        except KeyboardInterrupt:
            raise Interrupted(interrupted_line(p, results_root, done=len(rows), total=len(pts))) from None
        rows.append(row)
        if verbose:
            lines = (row["message"] or "").splitlines() if row["status"] != COMPLETED else []
            msg = f"  {lines[0]}" if lines else ""
            print(f"{label} {row['run_id']:<48} {row['status']:<11} {row['action']:<7} {row['wall_s']:7.1f}s{msg}",
                  flush=True)
            for line in lines[1:]:
                print(f"{' ' * (len(label) + 1)}  {line}", flush=True)
    cols = ["run_id", "config_name", "variant", "seed", "fold", "status", "action", "wall_s", "message", "out_dir"]
    frame = pd.DataFrame(rows, columns=cols)
    if verbose and len(frame):
        counts = ", ".join(f"{k} {v}" for k, v in frame["status"].value_counts().items())
        print(f"{len(frame)} point(s): {counts}; {frame['wall_s'].sum():.0f}s", flush=True)
    return frame


# ----------------------------------------------------------------------------- status, workers
def point_status(point: GridPoint, results_root=None) -> dict:
    """What the results folder says of ``point`` now (read only; works while other processes train).

    ``state`` is ``queued`` (nothing yet), ``claimed`` (a live process holds it; ``epoch``
    of ``epochs`` done), ``completed``, ``diverged``, ``failed`` (``message``),
    ``interrupted`` (resumable), ``stale`` (a record of another config) or ``corrupt``
    (a record that does not parse): :func:`adapt.records.run_state`, plus the claim.
    """
    out_dir = point.out_dir(results_root)
    row = {"run_id": point.run_id, "state": "queued", "epoch": None, "epochs": None, "holder": "", "message": ""}
    try:
        config = point.config().to_dict()
        row["epochs"] = config["epochs"]
    except ValueError:
        config = None
    state = run_state(out_dir, config)
    if state.kind == "corrupt":
        row.update(state="corrupt", message=state.message)
    elif state.record is not None:
        record = state.record
        row["epoch"] = len(record.get("epochs") or [])
        if state.kind == "stale":
            row["state"] = "stale"
        elif record.get("status") == RUNNING:
            row["state"] = INTERRUPTED  # unless a live process holds it (below)
        else:
            row["state"] = record.get("status")
        row["message"] = (record.get("message") or "").splitlines()[0] if record.get("message") else ""
    holder = claims.holder(out_dir)
    if holder is not None:
        row.update(state="claimed", holder=claims.describe(holder))
    job = _job_info(out_dir)
    if job is not None and row["state"] in ("queued", "claimed", INTERRUPTED):
        row["holder"] = f"{row['holder']}  job {job.get('job_id')}".strip()
    return row


def _job_info(out_dir: Path) -> Optional[dict]:
    """``slurm/job.json`` of a run folder (written when the point was submitted as a job), or None."""
    try:
        info = json.loads((out_dir / "slurm" / "job.json").read_text())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def status_frame(points: Sequence[GridPoint], results_root=None):
    """One row per point: :func:`point_status`."""
    return pd.DataFrame([point_status(p, results_root) for p in points],
                        columns=["run_id", "state", "epoch", "epochs", "holder", "message"])


def print_status(points: Sequence[GridPoint], results_root=None) -> None:
    frame = status_frame(points, results_root)
    width = max([len(r) for r in frame["run_id"]] + [6])
    for row in frame.itertuples():
        done = f"epoch {row.epoch}/{row.epochs}" if row.epoch is not None and row.epochs else ""
        extra = "  ".join(x for x in (done, row.holder, row.message) if x)
        print(f"{row.run_id:<{width}}  {row.state:<11}  {extra}".rstrip())
    counts = ", ".join(f"{k} {v}" for k, v in frame["state"].value_counts().items())
    print(f"{len(frame)} point(s): {counts}")


def custom_points(profile: str, results_root=None) -> list:
    """The points of the runs in ``<results>/<profile>/`` that are not the profile's grid points (custom runs,
    off-grid seeds), read from their records: what ``adapt grid PROFILE --status`` lists after the grid.

    Only ``<run_id>/record.json`` whose folder is not a symlink and is named after the record's own
    run id (as the tables read them); read only.
    """
    root = paths.results_root(results_root) / profile
    if not root.is_dir():
        return []
    ids = {p.run_id for p in grid(profile)}
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name in ids or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            point = record_point(load_record(entry / RECORD, traces=False))
        except (RecordError, OSError):
            continue
        if point is not None and point.run_id == entry.name:
            out.append(point)
    return out


def prune_checkpoints(points: Sequence[GridPoint], results_root=None) -> list:
    """Delete the ``checkpoint.pt`` of every finished point (``completed`` or ``diverged``) that no process holds.

    A finished run is never resumed, and its record (rebuilt, if need be, from its journal:
    :func:`adapt.records.finished_record`) holds everything the tables and notebooks read, so the
    checkpoint (the model's last weights and optimizer state, 40 MB for the CIFAR ResNet-20) is only
    kept for whoever wants those weights.  Returns ``(path, bytes)`` of each file deleted; a point
    whose folder cannot be written raises :class:`adapt.records.ReadOnlyError`.
    """
    removed = []
    for p in points:
        out_dir = p.out_dir(results_root)
        ckpt = out_dir / CHECKPOINT
        if not ckpt.is_file():
            continue
        try:
            config = p.config().to_dict()
        except ValueError:
            continue
        if run_state(out_dir, config).kind != "finished" or claims.holder(out_dir) is not None:
            continue
        check_writable(out_dir, f"delete {paths.display(ckpt)}")
        size = ckpt.stat().st_size
        ckpt.unlink()
        removed.append((ckpt, size))
    return removed


def run_workers(devices: Sequence[str], argv: Sequence[str]) -> int:
    """One grid process per device (``ADAPT_DEVICE`` set for each), all on the same points and results.

    Each worker takes the next point that is neither finished nor claimed, so every point
    is trained once; their lines are printed prefixed with the device.  Returns the
    largest exit status of the workers.
    """
    procs, threads = [], []

    def pump(proc, tag):
        for line in proc.stdout:
            sys.stdout.write(f"[{tag}] {line}")
            sys.stdout.flush()

    for i, device in enumerate(devices):
        env = dict(os.environ, ADAPT_DEVICE=device, ADAPT_WORKER=str(i))
        proc = subprocess.Popen([sys.executable, "-m", "adapt", "grid", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        t = threading.Thread(target=pump, args=(proc, f"{device}#{i}"), daemon=True)
        t.start()
        procs.append(proc)
        threads.append(t)
    codes = [p.wait() for p in procs]
    for t in threads:
        t.join()
    return max(codes) if codes else 0


