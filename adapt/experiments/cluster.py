"""Grid points as cluster jobs through ``submitit`` (SLURM, or its local executor for tests).

    python -m adapt grid paper --executor slurm --partition gpu --gpus-per-job 1 --timeout-min 720 \
        [--array-parallelism 16] [--wait]

One job per point (or one job array with ``--array-parallelism``).  Each job runs
:func:`adapt.experiments.runner.run_point` with the inline executor on the compute node, so the
point is claimed (:mod:`adapt.experiments.claims`), resumes from its checkpoint if it has one,
and writes its record atomically, exactly as a local run does.

* **Pre-emption and time-outs.**  SLURM signals a job before it stops it; submitit
  then calls :meth:`PointJob.checkpoint`, which resubmits the same point, and
  requeues the job.  The training state is not pickled: the requeued job resumes
  from the last epoch's ``checkpoint.pt`` (the epoch in progress is trained again),
  so its final record equals an uninterrupted run's on CPU.  submitit requeues a job
  at most ``max_num_timeout`` times (3 by default).
* **Failures of the point itself** (a data set that is missing, a diverging loss, a
  bad config) are recorded in its ``record.json`` as ``failed``/``diverged`` and the
  job ends normally: nothing is retried forever.  The next grid run retries a failed
  point once, as it does locally.
* **Logs**: ``<results>/<profile>/<run_id>/slurm/`` (submitit's ``<job id>_<task>_log.out``,
  ``.err`` and pickles); with a job array, in ``<results>/<profile>/slurm/``, and each run
  folder's ``slurm/job.json`` names its job id and the log folder.
* Points that are finished or claimed when the grid submits are not submitted.

``submitit`` is an optional dependency: ``pip install -e ".[cluster]"`` in the clone (the distribution is
``adapt-replication``; ``pip install adapt`` installs an unrelated package), or ``pip install submitit``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

from adapt import paths
from adapt.experiments import claims
from adapt.experiments.grid import GridPoint
from adapt.experiments.runner import run_point
from adapt.records import atomic_write_json, run_state

__all__ = ["CLUSTER_EXECUTORS", "PointJob", "make_executor", "submit_points", "wait_jobs", "require_submitit"]

#: ``slurm``: a SLURM cluster; ``submitit-local``: submitit's local executor (real subprocesses; tests, one machine).
CLUSTER_EXECUTORS = ("slurm", "submitit-local")


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError("the slurm executor needs submitit, an optional dependency: "
                          "pip install -e '.[cluster]' in the adapt clone, or pip install submitit") from None
    return submitit


class PointJob:
    """The callable a job runs: one grid point, inline, on the node.  Checkpointable by submitit."""

    def __init__(self, point: dict, results_root: str, force: bool = False):
        self.point, self.results_root, self.force = dict(point), str(results_root), bool(force)
        self.started = None

    def _grid_point(self):
        p = self.point
        return GridPoint(p["config_name"], p["variant"], p["seed"], p["fold"], p.get("overrides") or {})

    def __call__(self) -> dict:
        self.started = time.time()
        return run_point(self._grid_point(), self.results_root, executor="inline", force=self.force,
                         progress=True)

    def checkpoint(self, *args, **kwargs):
        """Resubmit this point; a forced run that has written this attempt's record resumes instead of restarting."""
        submitit = require_submitit()
        record = self._grid_point().out_dir(self.results_root) / "record.json"
        wrote = self.started is not None and record.exists() and record.stat().st_mtime >= self.started
        return submitit.helpers.DelayedSubmission(PointJob(self.point, self.results_root, self.force and not wrote))


def make_executor(kind: str, folder, timeout_min: float, partition: Optional[str] = None,
                  gpus_per_job: Optional[int] = None, cpus_per_job: Optional[int] = None,
                  array_parallelism: Optional[int] = None, name: str = "adapt"):
    """A submitit executor writing its files to ``folder``."""
    submitit = require_submitit()
    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=timeout_min)
        return executor
    if kind != "slurm":
        raise ValueError(f"cluster executor must be one of {CLUSTER_EXECUTORS}, got {kind!r}")
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {"timeout_min": int(timeout_min), "name": name, "slurm_partition": partition}
    if gpus_per_job is not None:
        params["gpus_per_node"] = int(gpus_per_job)
    if cpus_per_job is not None:
        params["cpus_per_task"] = int(cpus_per_job)
    if array_parallelism is not None:
        params["slurm_array_parallelism"] = int(array_parallelism)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def _job_file(out_dir: Path, job, log_folder) -> None:
    atomic_write_json(out_dir / "slurm" / "job.json", {"job_id": str(job.job_id), "log_folder": str(log_folder),
                                                        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def submit_points(points: Sequence, results_root, kind: str = "slurm", timeout_min: float = 720,
                  partition: Optional[str] = None, gpus_per_job: Optional[int] = None,
                  cpus_per_job: Optional[int] = None, array_parallelism: Optional[int] = None,
                  force: bool = False, verbose: bool = True) -> list:
    """Submit one job per point that is neither finished nor claimed; returns ``[(point, job)]``."""
    results_root = paths.results_root(results_root)
    todo = []
    for p in points:
        out_dir = p.out_dir(results_root)
        try:
            config = p.config().to_dict()
        except ValueError:  # an invalid override: the job fails and records why
            config = None
        state = run_state(out_dir, config)
        if not force and state.kind == "finished":
            if verbose:
                print(f"{p.run_id}: {state.status}, not submitted", flush=True)
            continue
        holder = claims.holder(out_dir)
        if holder is not None:
            if verbose:
                print(f"{p.run_id}: claimed ({claims.describe(holder)}), not submitted", flush=True)
            continue
        todo.append(p)
    if not todo:
        return []

    def job_of(p):
        return PointJob({"config_name": p.config_name, "variant": p.variant, "seed": p.seed, "fold": p.fold,
                         "overrides": p.override_dict}, str(results_root), force)

    submitted = []
    if array_parallelism:
        folder = results_root / todo[0].profile / "slurm"
        executor = make_executor(kind, folder, timeout_min, partition, gpus_per_job, cpus_per_job,
                                 array_parallelism, name=f"adapt-{todo[0].profile}")
        with executor.batch():
            jobs = [executor.submit(job_of(p)) for p in todo]
        submitted = list(zip(todo, jobs))
        for p, job in submitted:
            _job_file(p.out_dir(results_root), job, folder)
    else:
        for p in todo:
            out_dir = p.out_dir(results_root)
            executor = make_executor(kind, out_dir / "slurm", timeout_min, partition, gpus_per_job,
                                     cpus_per_job, None, name=p.run_id)
            job = executor.submit(job_of(p))
            _job_file(out_dir, job, out_dir / "slurm")
            submitted.append((p, job))
    if verbose:
        for p, job in submitted:
            print(f"{p.run_id}: submitted as job {job.job_id}", flush=True)
    return submitted


def wait_jobs(submitted: Sequence, poll_s: float = 2.0, verbose: bool = True) -> list:
    """Wait for the jobs; one summary per point (``run_point``'s), a job error given as ``failed``."""
    out = []
    for p, job in submitted:
        try:
            summary = job.result()
        except Exception as exc:  # the job itself died (node failure, requeued too often)
            summary = {"run_id": p.run_id, "status": "failed", "action": "failed",
                       "message": f"job {job.job_id}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        if verbose:
            print(f"{p.run_id}: job {job.job_id} ended, {summary['status']}", flush=True)
        out.append(summary)
    return out
