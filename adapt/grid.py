"""The experiment grid of each profile and the runner that fills ``results/<profile>/``.

A :class:`GridPoint` is one training run: a named config
(``"<profile>/<method>/<model>/<dataset>"``, :mod:`adapt.configs`), the AdaPT
heuristic variant, a seed and a fold.  :func:`grid` lists the points of a profile,
:func:`run_point` runs one, :func:`run_grid` runs them all and returns their
statuses; ``python -m adapt.grid PROFILE`` is the command line (``make reproduce``).

The grids
---------
=======  =========================  ==========================================  ======
profile  data                       replicates                                  points
=======  =========================  ==========================================  ======
smoke    digits                     AlexNet seeds 0, 1; ResNet-20 seed 0        15
quick    CIFAR-10, CIFAR-100        seed 0                                      16
paper    CIFAR-10, CIFAR-100        k-fold methods (float32, adapt): seed 0,    104
                                    folds 0-9; hold-out methods (float32-muppet,
                                    muppet): seeds 0, 1, 2, fold 0
=======  =========================  ==========================================  ======

Every profile runs both models (``alexnet_cifar``, ``resnet20``) with the methods
:data:`GRID_METHODS`: AdaPT's float32 baseline (``float32``), MuPPET's float32
baseline (``float32-muppet``), ``muppet`` and ``adapt``.  ``adapt`` runs with the
heuristic variants of :data:`ADAPT_VARIANTS` (smoke: reference *and* corrected, for
the ablation notebook; quick and paper: reference only, to keep the budget); every
other method runs once per replicate with variant ``reference`` (the variant only
changes the AdaPT heuristic).

Replicates (:data:`SEEDS`, :data:`FOLDS`; module constants so a profile's budget can
be tuned in one place).  The two protocols replicate differently, as their official
codes do (method.md §1.6, §2.3):

* ``kfold`` (AdaPT and its float32 baseline): the official script trains one fresh
  model per fold of a 10-fold stratified split of the training set and reports the
  **maximum over folds** of the test accuracy.  ``paper`` runs all 10 folds of seed 0
  (seed 0 fixes the split, so the 10 folds partition the same training set); smoke
  and quick run fold 0 only.
* ``holdout`` (MuPPET and its float32 baseline): a fixed 80/20 split; replicates are
  seeds.  The official MuPPET code has no repetition protocol and the number of runs
  behind the paper's numbers is not retrieved (method.md §4 item 16): ``paper`` uses
  3 seeds, the smallest number that gives a standard deviation with some meaning.

Running a point
---------------
``executor="papermill"`` executes the training notebook (``notebooks/10-train.ipynb``)
with the parameters ``config_name, variant, seed, fold, results_root, force`` (plus
``overrides``, a dict of config fields, only when the point has any) and keeps the
executed copy beside the record as ``<out_dir>/10-train.ipynb``.  ``results_root`` is
handed to the notebook *relative to the notebook's folder* (papermill runs the
kernel there), so the executed copies hold no machine-specific absolute path.  The
notebook is expected to call :func:`train_point` with its parameters.
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
  a minimal record (:func:`failure_record`, the same ``adapt.run/1`` schema, no
  epochs) so the tables list it as failed.  ``KeyboardInterrupt`` is not caught:
  the record stays ``running`` with its checkpoint, and the next run resumes it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from .configs import CONFIGS, PROFILES, ExperimentConfig, get_config

__all__ = [
    "MODELS", "GRID_METHODS", "DATASETS", "ADAPT_VARIANTS", "SEEDS", "FOLDS", "EXECUTORS", "FINISHED",
    "GridPoint", "grid", "run_point", "run_grid", "train_point", "failure_record", "main",
]

#: The models of every profile.
MODELS = ("alexnet_cifar", "resnet20")

#: The methods of every profile (the method segment of the config names).
GRID_METHODS = ("float32", "float32-muppet", "muppet", "adapt")

#: Data sets per profile.
DATASETS = {"smoke": ("digits",), "quick": ("cifar10", "cifar100"), "paper": ("cifar10", "cifar100")}

#: AdaPT heuristic variants per profile (every other method runs with ``reference`` only).
ADAPT_VARIANTS = {"smoke": ("reference", "corrected"), "quick": ("reference",), "paper": ("reference",)}

#: Seeds per profile, protocol ("kfold": AdaPT's, "holdout": MuPPET's) and model.
SEEDS = {
    "smoke": {"kfold": {"alexnet_cifar": (0, 1), "resnet20": (0,)},
              "holdout": {"alexnet_cifar": (0, 1), "resnet20": (0,)}},
    "quick": {"kfold": {"alexnet_cifar": (0,), "resnet20": (0,)},
              "holdout": {"alexnet_cifar": (0,), "resnet20": (0,)}},
    "paper": {"kfold": {"alexnet_cifar": (0,), "resnet20": (0,)},
              "holdout": {"alexnet_cifar": (0, 1, 2), "resnet20": (0, 1, 2)}},
}

#: Folds per profile for the k-fold-protocol methods (hold-out methods always run fold 0).
FOLDS = {"smoke": (0,), "quick": (0,), "paper": tuple(range(10))}

EXECUTORS = ("papermill", "inline")

#: Record statuses of a point that is done (the same as adapt.train's).
FINISHED = ("completed", "diverged")

_REPO = Path(__file__).resolve().parents[1]
DEFAULT_NOTEBOOK = "notebooks/10-train.ipynb"


def _jsonable(obj):
    """``obj`` as it reads back from a JSON record (tuples become lists, NaN a string)."""
    from .results import _json_default, _sanitize

    return json.loads(json.dumps(_sanitize(obj), default=_json_default))


@dataclass(frozen=True)
class GridPoint:
    """One run of the grid: a named config, the heuristic variant, a seed and a fold.

    ``overrides`` holds extra config fields as sorted ``(field, value)`` pairs (tests
    and budget experiments: e.g. ``(("epochs", 1), ("subset", 200))``); they are not
    part of :attr:`run_id`.
    """

    config_name: str
    variant: str = "reference"
    seed: int = 0
    fold: int = 0
    overrides: tuple = ()

    def __post_init__(self):
        if self.config_name not in CONFIGS:
            raise ValueError(f"unknown config {self.config_name!r}")
        if isinstance(self.overrides, dict):
            object.__setattr__(self, "overrides", tuple(sorted(self.overrides.items())))
        else:
            object.__setattr__(self, "overrides", tuple(sorted(tuple(p) for p in self.overrides)))

    @property
    def profile(self) -> str:
        return self.config_name.split("/")[0]

    @property
    def method(self) -> str:
        """The method segment of the config name (``float32-muppet`` stays distinct from ``float32``)."""
        return self.config_name.split("/")[1]

    @property
    def model(self) -> str:
        return self.config_name.split("/")[2]

    @property
    def dataset(self) -> str:
        return self.config_name.split("/")[3]

    @property
    def run_id(self) -> str:
        """A stable folder name, e.g. ``adapt-resnet20-digits-reference-s0-f0``."""
        return f"{self.method}-{self.model}-{self.dataset}-{self.variant}-s{self.seed}-f{self.fold}"

    def config(self) -> ExperimentConfig:
        """The named config with this point's variant, seed, fold and overrides."""
        return get_config(self.config_name, variant=self.variant, seed=self.seed, fold=self.fold,
                          **dict(self.overrides))

    def out_dir(self, results_root="results") -> Path:
        """``<results_root>/<profile>/<run_id>/``."""
        return Path(results_root) / self.profile / self.run_id

    def params(self, results_root="results", force: bool = False) -> dict:
        """The notebook parameters of this point."""
        p = {"config_name": self.config_name, "variant": self.variant, "seed": self.seed, "fold": self.fold,
             "results_root": str(results_root), "force": bool(force)}
        if self.overrides:
            p["overrides"] = dict(self.overrides)
        return p


def grid(profile: str) -> list:
    """The points of ``profile`` (``smoke``, ``quick`` or ``paper``), in run order."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {PROFILES}")
    points = []
    for model in MODELS:
        for dataset in DATASETS[profile]:
            for method in GRID_METHODS:
                name = f"{profile}/{method}/{model}/{dataset}"
                cfg = CONFIGS[name]
                protocol = "kfold" if cfg.protocol == "kfold" else "holdout"
                seeds = SEEDS[profile][protocol][model]
                folds = FOLDS[profile] if protocol == "kfold" else (0,)
                variants = ADAPT_VARIANTS[profile] if method == "adapt" else ("reference",)
                for variant in variants:
                    for seed in seeds:
                        for fold in folds:
                            points.append(GridPoint(name, variant, seed, fold))
    return points


# ----------------------------------------------------------------------------- records
def failure_record(config: Union[ExperimentConfig, dict, str], message: str) -> dict:
    """A minimal ``adapt.run/1`` record of a run that failed before training wrote its own.

    ``config`` is the run's config (or its dict; or only its name when the config
    itself could not be built, in which case model, dataset and method are read
    from the name).
    """
    from .results import SCHEMA

    if isinstance(config, ExperimentConfig):
        cfg = config.to_dict()
    elif isinstance(config, dict):
        cfg = dict(config)
    else:
        parts = str(config).split("/")
        cfg = {"name": str(config), "profile": parts[0] if parts else None,
               "method": parts[1] if len(parts) > 1 else None, "model": parts[2] if len(parts) > 2 else None,
               "dataset": parts[3] if len(parts) > 3 else None, "variant": "reference", "seed": None,
               "fold": None, "protocol": None}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "schema": SCHEMA, "name": cfg.get("name"), "status": "failed", "config": cfg, "environment": {},
        "epochs": [], "traces": {}, "final": {}, "policy": {}, "wall_time_s": 0.0, "started": now,
        "finished": now, "message": message,
    }


def _read_record(path: Path) -> Optional[dict]:
    from .results import load_record

    if not path.exists():
        return None
    try:
        return load_record(path)
    except (ValueError, OSError) as exc:  # unreadable: treat as absent (a run will overwrite it)
        print(f"warning: {path}: unreadable record ({exc}); it will be recomputed", file=sys.stderr)
        return None


def _mark_failed(point: GridPoint, out_dir: Path, message: str) -> dict:
    """Make ``out_dir/record.json`` say ``failed``: keep a record training wrote, else write a minimal one."""
    from .results import atomic_write_json

    path = out_dir / "record.json"
    record = _read_record(path)
    if record is not None and record.get("status") == "failed" and record.get("message"):
        return record  # adapt.train already recorded the failure
    if record is None:
        try:
            cfg = point.config()
        except Exception:  # the config itself is invalid
            cfg = point.config_name
        record = failure_record(cfg, message)
    else:
        record["status"] = "failed"
        record["message"] = message
        record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(path, record)
    return record


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    # papermill's message carries the whole cell traceback: keep its last meaningful line
    if type(exc).__name__ == "PapermillExecutionError":
        ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
        if ename:
            text = f"{ename}: {evalue} (in the notebook, cell {getattr(exc, 'exec_count', '?')})"
    return text.splitlines()[0][:500] if text else type(exc).__name__


# ----------------------------------------------------------------------------- running
def train_point(config_name: str, variant: str = "reference", seed: int = 0, fold: int = 0,
                results_root="results", force: bool = False, overrides: Optional[dict] = None,
                progress: bool = False, device=None, **train_kwargs) -> dict:
    """Train one grid point into ``<results_root>/<profile>/<run_id>/`` and return its record.

    What the training notebook calls with its papermill parameters (and the inline
    executor).  Resumes an unfinished run from its checkpoint; returns a finished
    one without recomputing unless ``force``.
    """
    from . import train

    point = GridPoint(config_name, variant, int(seed), int(fold), tuple(sorted((overrides or {}).items())))
    config = point.config()
    out_dir = point.out_dir(results_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = _read_record(out_dir / "record.json")
    if existing is not None and not force:
        if _jsonable(existing.get("config")) != _jsonable(config.to_dict()):
            raise ValueError(f"{out_dir / 'record.json'} holds a run of another config; use force=True to replace it")
        if existing.get("status") in FINISHED:
            return existing
        if not (out_dir / "checkpoint.pt").exists():
            # nothing to resume (a minimal failure record, or a run killed before its first
            # epoch ended): start afresh rather than let the old record block the run
            force = True
    return train.run(config, out_dir=out_dir, resume=True, force=force, progress=progress, device=device,
                     **train_kwargs)


def _resolve_notebook(notebook) -> Path:
    nb = Path(notebook)
    if not nb.is_absolute() and not nb.exists() and (_REPO / nb).exists():
        nb = _REPO / nb
    return nb.resolve()


def _run_papermill(point: GridPoint, results_root: Path, notebook, force: bool) -> None:
    import papermill

    nb = _resolve_notebook(notebook)
    if not nb.exists():
        raise FileNotFoundError(f"training notebook {notebook!r} not found")
    out_dir = point.out_dir(results_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Paths relative to where they are used (the notebook's folder for the kernel, this
    # process's cwd for papermill), so the executed copy holds no machine-specific path.
    rel_root = os.path.relpath(Path(results_root).resolve(), nb.parent)
    papermill.execute_notebook(
        os.path.relpath(nb), os.path.relpath(out_dir / nb.name), parameters=point.params(rel_root, force),
        kernel_name="python3", cwd=os.path.relpath(nb.parent), log_output=False, progress_bar=False)


def run_point(point: GridPoint, results_root="results", executor: str = "papermill",
              notebook=DEFAULT_NOTEBOOK, force: bool = False, progress: bool = False) -> dict:
    """Run one point unless it is done; never raises for a failure of the run itself.

    Returns ``{"run_id", "config_name", "variant", "seed", "fold", "status", "action",
    "wall_s", "message", "out_dir"}`` where ``status`` is the record's status after the
    call (``completed``, ``diverged``, ``interrupted``, ``failed``) or ``stale`` (a record
    of another config is in the way), and ``action`` is ``skipped``, ``ran`` or ``failed``.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    results_root = Path(results_root)
    out_dir = point.out_dir(results_root)
    summary = {"run_id": point.run_id, "config_name": point.config_name, "variant": point.variant,
               "seed": point.seed, "fold": point.fold, "status": None, "action": None, "wall_s": 0.0,
               "message": "", "out_dir": str(out_dir)}
    t0 = time.time()
    existing = _read_record(out_dir / "record.json")
    if existing is not None and not force:
        try:
            wanted = _jsonable(point.config().to_dict())
        except Exception as exc:  # an invalid override: the point fails, the record stays as it is
            summary.update(status="failed", action="failed", message=_short(exc))
            return summary
        if _jsonable(existing.get("config")) != wanted:
            summary.update(status="stale", action="skipped",
                           message="record.json holds a run of another config; rerun with force to replace it")
            return summary
        if existing.get("status") in FINISHED:
            summary.update(status=existing["status"], action="skipped", message=existing.get("message", ""))
            return summary
    try:
        if executor == "inline":
            train_point(point.config_name, point.variant, point.seed, point.fold, results_root, force,
                        dict(point.overrides), progress=progress)
        else:
            _run_papermill(point, results_root, notebook, force)
        record = _read_record(out_dir / "record.json")
        if record is None:
            raise RuntimeError(f"the run finished without writing {out_dir / 'record.json'}")
        summary.update(status=record["status"], action="ran", message=record.get("message", ""))
    except Exception as exc:
        message = _short(exc)
        if progress:
            traceback.print_exc()
        record = _mark_failed(point, out_dir, message)
        summary.update(status="failed", action="failed", message=record.get("message") or message)
    summary["wall_s"] = time.time() - t0
    return summary


def run_grid(profile: Optional[str] = "smoke", results_root="results", executor: str = "papermill",
             force: bool = False, only: Union[str, Sequence[str], None] = None, notebook=DEFAULT_NOTEBOOK,
             points: Optional[Iterable[GridPoint]] = None, progress: bool = False, verbose: bool = True):
    """Run every point of ``profile`` (or the given ``points``); returns a DataFrame of their statuses.

    ``only`` keeps the points whose run id or config name contains the substring (or
    any of the substrings).  One line per point is printed as it finishes.
    """
    import pandas as pd

    pts = list(points) if points is not None else grid(profile)
    if only:
        subs = [only] if isinstance(only, str) else list(only)
        pts = [p for p in pts if any(s in p.run_id or s in p.config_name for s in subs)]
    rows = []
    for i, p in enumerate(pts, 1):
        row = run_point(p, results_root, executor=executor, notebook=notebook, force=force, progress=progress)
        rows.append(row)
        if verbose:
            msg = f"  {row['message']}" if row["message"] and row["status"] != "completed" else ""
            print(f"[{i:>{len(str(len(pts)))}}/{len(pts)}] {row['run_id']:<48} {row['status']:<11} "
                  f"{row['action']:<7} {row['wall_s']:7.1f}s{msg}", flush=True)
    cols = ["run_id", "config_name", "variant", "seed", "fold", "status", "action", "wall_s", "message", "out_dir"]
    frame = pd.DataFrame(rows, columns=cols)
    if verbose and len(frame):
        counts = ", ".join(f"{k} {v}" for k, v in frame["status"].value_counts().items())
        print(f"{len(frame)} point(s): {counts}; {frame['wall_s'].sum():.0f}s", flush=True)
    return frame


# ----------------------------------------------------------------------------- CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapt.grid",
        description="Run the experiment grid of a profile into <results>/<profile>/ (finished points are skipped).")
    parser.add_argument("profile", choices=PROFILES)
    parser.add_argument("--executor", choices=EXECUTORS, default="papermill",
                        help="papermill: execute the training notebook per point (default); inline: call adapt.train")
    parser.add_argument("--force", action="store_true", help="recompute finished points")
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--only", action="append", default=None, metavar="SUBSTRING",
                        help="run only the points whose run id or config name contains SUBSTRING (repeatable)")
    parser.add_argument("--notebook", default=DEFAULT_NOTEBOOK, help=f"training notebook (default: {DEFAULT_NOTEBOOK})")
    parser.add_argument("--list", action="store_true", help="print the points and exit")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a point failed or is stale (default: report and exit 0, "
                             "so the analysis still runs and shows the failure)")
    args = parser.parse_args(argv)
    if args.list:
        pts = grid(args.profile)
        if args.only:
            pts = [p for p in pts if any(s in p.run_id or s in p.config_name for s in args.only)]
        for p in pts:
            print(f"{p.run_id}  {p.config_name}")
        print(f"{len(pts)} point(s)")
        return 0
    frame = run_grid(args.profile, args.results, executor=args.executor, force=args.force, only=args.only,
                     notebook=args.notebook)
    bad = frame[frame["status"].isin(["failed", "stale"])]
    if len(bad):
        print(f"{len(bad)} point(s) failed or stale: {', '.join(bad['run_id'])}", file=sys.stderr)
        if args.strict:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
