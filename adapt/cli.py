"""The ``adapt`` command (a console entry point of the package; also ``python -m adapt``).

    adapt run CONFIG [--variant V] [--seed N] [--fold N] [--set FIELD=VALUE ...] [--results DIR] [--force]
    adapt grid PROFILE [...]          run, list (--list) or show (--status) the points of a profile's grid
    adapt compare A B [...]           compare two run records
    adapt configs [PROFILE]           the config names

This module only parses the command line and calls :mod:`adapt.experiments`; nothing
below it imports it.

``adapt run`` trains one run, e.g. the AdaPT smoke point on AlexNet with another
learning rate, 15 epochs and seed 3::

    adapt run smoke/adapt/alexnet_cifar/digits --set lr=0.001 epochs=15 --seed 3

A run with ``--set`` is a custom run: its run id carries a short hash of the changed
fields, so it has a folder of its own and never replaces a grid point's record.
``--set policy.min_lookback=10`` changes one option of the method's policy.  The
same call from Python::

    from adapt.experiments.runner import train_point
    train_point("smoke/adapt/alexnet_cifar/digits", seed=3, overrides={"lr": 0.001, "epochs": 15})
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from adapt import paths
from adapt.experiments import cluster, decomposition, reproduce
from adapt.experiments.claims import PointClaimed
from adapt.experiments.compare import UsageError, compare_records, load
from adapt.experiments.configs import CONFIGS, PROFILES, config_names
from adapt.experiments.grid import DEFAULT_NOTEBOOK, EXECUTORS, GridPoint, check_points, grid, select, shard
from adapt.experiments.runner import (Interrupted, PreflightError, custom_points, print_status, prune_checkpoints,
                                     run_grid, run_workers, train_point)
from adapt.records import FINISHED, ReadOnlyError

__all__ = ["main", "parse_sets", "INTERRUPTED_EXIT"]

#: The exit status after Ctrl-C (128 + SIGINT, what a shell reports for a process ended by it).
INTERRUPTED_EXIT = 130


def _value(text: str):
    """``15`` -> 15, ``0.001`` -> 0.001, ``true`` -> True, ``[8, 12]`` -> [8, 12], ``step`` -> "step"."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    return text


def parse_sets(items: Sequence[str], config_name: str) -> dict:
    """``["lr=0.001", "policy.min_lookback=10"]`` -> overrides for ``config_name`` (policy merged into its own)."""
    overrides, policy = {}, None
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set lr=0.001 epochs=15")
        value = _value(text.strip())
        if key.startswith("policy."):
            if policy is None:
                policy = dict(CONFIGS[config_name].policy) if config_name in CONFIGS else {}
            policy[key[len("policy."):]] = value
        else:
            overrides[key] = value
    if policy is not None:
        if "policy" in overrides:
            raise ValueError("--set policy=... and --set policy.KEY=... together: use one of the two")
        overrides["policy"] = policy
    return overrides


def _run(args) -> int:
    try:
        overrides = parse_sets(args.set or [], args.config)
        point, = check_points([GridPoint(args.config, args.variant, args.seed, args.fold, overrides)])
    except ValueError as exc:
        print(f"adapt run: {exc}", file=sys.stderr)
        return 2
    results = None if args.results is None else Path(args.results).expanduser().resolve()
    kind = "custom run" if point.is_custom else "grid point"
    print(f"{kind} {point.run_id} -> {paths.display(point.out_dir(results))}", flush=True)
    try:
        record = train_point(args.config, args.variant, args.seed, args.fold, results_root=results,
                             force=args.force, overrides=overrides, progress=True, device=args.device)
    except PointClaimed as exc:
        print(f"adapt run: {exc}", file=sys.stderr)
        return 3
    except ReadOnlyError as exc:  # nothing was written: one line, not a traceback
        print(f"adapt run: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:  # Ctrl-C: one line, not a traceback (the checkpoint is what matters)
        print(f"adapt run: {exc}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as exc:  # the record says failed; the message says what to do
        print(f"adapt run: {point.run_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0 if record["status"] in FINISHED else 1


def _configs(args) -> int:
    for name in config_names(args.profile):
        print(name)
    return 0


# ----------------------------------------------------------------------------- adapt grid
def _add_selection_args(parser) -> None:
    parser.add_argument("--only", action="append", default=None, metavar="RUN_ID",
                        help="run only this point (its exact run id, as --list prints it; repeatable)")
    parser.add_argument("--match", action="append", default=None, metavar="PATTERN",
                        help="run the points whose run id or config name matches this shell-style pattern, "
                             "e.g. 'adapt-resnet20-cifar10-*' (repeatable)")


def grid_parser(prog: str = "adapt grid") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the experiment grid of a profile into <results>/<profile>/ (finished points are skipped, "
                    "points another process is training are skipped, interrupted points resume).")
    parser.add_argument("profile", choices=PROFILES)
    parser.add_argument("--executor", choices=EXECUTORS + ("slurm", "submitit-local"), default="papermill",
                        help="papermill: execute the training notebook per point (default); inline: call adapt.train "
                             "in this process; slurm: one SLURM job per point through submitit (in the clone: pip "
                             "install -e '.[cluster]', or pip install submitit); submitit-local: the same jobs as local subprocesses")
    parser.add_argument("--force", action="store_true", help="recompute finished points")
    parser.add_argument("--results", default=None,
                        help=f"results root (default: ${paths.RESULTS_ENV} if set, else the repository's results/)")
    _add_selection_args(parser)
    parser.add_argument("--notebook", default=DEFAULT_NOTEBOOK, help=f"training notebook (default: {DEFAULT_NOTEBOOK})")
    parser.add_argument("--set", nargs="+", action="extend", metavar="FIELD=VALUE",
                        help="change config fields of every selected point (custom runs with run ids of their "
                             "own), e.g. --set epochs=1 subset=500")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="run only the K-th of N deterministic shares of the selected points (1-based)")
    parser.add_argument("--device", default=None,
                        help="device of the runs (cpu, cuda, cuda:1, mps; default: $ADAPT_DEVICE, else the best available)")
    parser.add_argument("--devices", default=None, metavar="D1,D2,...",
                        help="one worker process per device (e.g. cuda:0,cuda:1), each taking the next unclaimed point")
    cluster = parser.add_argument_group("cluster (--executor slurm / submitit-local)")
    cluster.add_argument("--partition", default=None, help="SLURM partition")
    cluster.add_argument("--gpus-per-job", type=int, default=None, help="GPUs per job (SLURM gpus_per_node)")
    cluster.add_argument("--cpus-per-job", type=int, default=None, help="CPUs per job (SLURM cpus_per_task)")
    cluster.add_argument("--timeout-min", type=float, default=720.0,
                         help="time limit of a job in minutes (default 720); a timed-out job is requeued and resumes")
    cluster.add_argument("--array-parallelism", type=int, default=None,
                         help="submit one job array with at most this many tasks running at once")
    cluster.add_argument("--wait", action="store_true", help="wait for the jobs to end and print the grid's status")
    parser.add_argument("--list", action="store_true", help="print the selected points and exit")
    parser.add_argument("--status", action="store_true",
                        help="print the state of each selected point (queued, claimed, epoch k/n, completed, failed ...) "
                             "from the results folder and exit; works while other processes train")
    parser.add_argument("--prune-checkpoints", action="store_true",
                        help="delete the checkpoint.pt of the selected points that are finished (completed or "
                             "diverged; their records hold everything the tables read) and exit")
    parser.add_argument("--quiet", action="store_true", help="print only one line per finished point")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a point failed or is stale (default: report and exit 0, "
                             "so the analysis still runs and shows the failure)")
    return parser


def _without_option(argv: Sequence[str], name: str) -> list:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def _cli_path(value) -> Optional[Path]:
    """A path typed on the command line: relative to the shell's working directory."""
    return None if value is None else Path(value).expanduser().resolve()


def _custom_runs(args, results) -> list:
    """The custom runs (and off-grid points) on disk in the profile's folder, as --match selects them."""
    found = custom_points(args.profile, results)
    if args.match:
        import fnmatch

        found = [p for p in found if any(fnmatch.fnmatchcase(p.run_id, m) or fnmatch.fnmatchcase(p.config_name, m)
                                         for m in args.match)]
    return found


def grid_main(argv: Optional[Sequence[str]] = None, prog: str = "adapt grid") -> int:
    """``adapt grid PROFILE [...]``: run, list or show the points of a profile's grid."""
    parser = grid_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        pts = select(grid(args.profile), args.only, args.match)
        if args.shard:
            pts = shard(pts, args.shard)
        if args.set:
            pts = [GridPoint(p.config_name, p.variant, p.seed, p.fold, parse_sets(args.set, p.config_name))
                   for p in pts]
        check_points(pts)  # every value, before anything is listed, run or written (as adapt run does)
    except ValueError as exc:
        parser.error(str(exc))
    results = _cli_path(args.results)
    if args.list:
        for p in pts:
            print(f"{p.run_id}  {p.config_name}")
        print(f"{len(pts)} point(s)")
        return 0
    if args.status or args.prune_checkpoints:  # the custom runs on disk too, unless the selection names points
        on_disk = pts + ([] if args.set or args.only or args.shard else _custom_runs(args, results))
    if args.status:
        print_status(on_disk, results)
        return 0
    if args.prune_checkpoints:
        try:
            removed = prune_checkpoints(on_disk, results)
        except ReadOnlyError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        for path, _ in removed:
            print(f"removed {paths.display(path)}")
        print(f"{len(removed)} checkpoint(s) of finished runs removed, {sum(n for _, n in removed) / 1e6:.1f} MB")
        return 0
    if args.devices:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not devices:
            parser.error(f"--devices {args.devices!r}: expected a comma-separated list, e.g. cuda:0,cuda:1")
        worker_argv = _without_option(argv, "--devices")
        if results is not None:
            worker_argv = _without_option(worker_argv, "--results") + ["--results", str(results)]
        code = run_workers(devices, worker_argv)
        print_status(pts, results)
        return code
    if args.device:
        os.environ["ADAPT_DEVICE"] = args.device  # the papermill kernels and the jobs inherit it
    if args.executor in ("slurm", "submitit-local"):
        try:
            submitted = cluster.submit_points(
                pts, results, args.executor, timeout_min=args.timeout_min, partition=args.partition,
                gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
                array_parallelism=args.array_parallelism, force=args.force)
        except ImportError as exc:
            parser.error(str(exc))
        if args.wait:
            cluster.wait_jobs(submitted)
            print_status(pts, results)
        else:
            print(f"{len(submitted)} job(s) submitted; follow them with: {prog} {args.profile} --status"
                  + (f" --results {results}" if results is not None else ""))
        return 0
    try:
        frame = run_grid(points=pts, results_root=results, executor=args.executor, force=args.force,
                         notebook=args.notebook, progress=not args.quiet)
    except PreflightError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return INTERRUPTED_EXIT
    bad = frame[frame["status"].isin(["failed", "stale"])]
    if len(bad):
        print(f"{len(bad)} point(s) failed or stale: {', '.join(bad['run_id'])}", file=sys.stderr)
        if args.strict:
            return 1
    if len(frame) and (frame["status"] == "failed").all():  # nothing to analyse: not a success, --strict or not
        print(f"{prog}: every point failed ({len(frame)}); their records say why", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- adapt compare
def compare_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="adapt compare",
        description="Compare two adapt run records: identical or not, config differences, the first differing "
                    "epoch/metric and trace entry, and the environment differences that may explain them. "
                    "Exit status 0 identical, 1 different, 2 usage or file error.")
    ap.add_argument("a", help="record.json, or a run folder holding one")
    ap.add_argument("b", help="record.json, or a run folder holding one")
    ap.add_argument("--tolerance", "--atol", dest="atol", type=float, default=0.0, metavar="ATOL",
                    help="absolute tolerance for numbers (default 0: bit for bit)")
    ap.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for numbers (default 0)")
    ap.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return ap


def compare_main(argv=None) -> int:
    """``adapt compare A B``: exit 0 identical, 1 different, 2 usage or file error."""
    ap = compare_parser()
    args = ap.parse_args(argv)
    if not (args.atol >= 0 and args.rtol >= 0):
        ap.print_usage(sys.stderr)
        print(f"{ap.prog}: error: tolerances must be >= 0", file=sys.stderr)
        return 2
    try:
        a, pa = load(args.a)
        b, pb = load(args.b)
    except UsageError as exc:
        print(f"{ap.prog}: error: {exc}", file=sys.stderr)
        return 2
    cmp = compare_records(a, b, atol=args.atol, rtol=args.rtol, a_label=str(pa), b_label=str(pb))
    try:
        print(json.dumps(cmp.to_dict(), indent=1, default=str) if args.json else cmp.format())
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: stop quietly, keep the exit status
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if cmp.identical else 1


# ----------------------------------------------------------------------------- adapt
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adapt", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one run (a grid point, or a custom run with --set)",
                         description="Train one run into <results>/<profile>/<run_id>/ with a line per epoch.")
    run.add_argument("config", help="config name <profile>/<method>/<model>/<dataset> (adapt configs lists them)")
    run.add_argument("--variant", default="reference", choices=("reference", "corrected"),
                     help="AdaPT heuristic variant (default: reference)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--fold", type=int, default=0)
    run.add_argument("--set", nargs="+", action="extend", metavar="FIELD=VALUE",
                     help="change config fields, e.g. --set lr=0.001 epochs=15 policy.min_lookback=10")
    run.add_argument("--results", default=None, help="results root (default: $ADAPT_RESULTS, else the repository's results/)")
    run.add_argument("--force", action="store_true", help="retrain even if a finished record exists")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: $ADAPT_DEVICE, else the best available)")
    run.set_defaults(func=_run)
    sub.add_parser("grid", help="run a profile's grid (python -m adapt grid)", add_help=False)
    sub.add_parser("compare", help="compare two run records (python -m adapt compare)", add_help=False)
    configs = sub.add_parser("configs", help="list the config names")
    configs.add_argument("profile", nargs="?", default=None)
    configs.set_defaults(func=_configs)
    rep = sub.add_parser("reproduce", help="retrain committed grid points into a folder of your own and compare them",
                         description=reproduce.__doc__.split("\n")[0])
    rep.add_argument("profile", nargs="?", default=reproduce.DEFAULT_PROFILE, choices=PROFILES,
                     help=f"the grid (default: {reproduce.DEFAULT_PROFILE})")
    rep.add_argument("--seeds", default=",".join(map(str, reproduce.DEFAULT_SEEDS)), metavar="S1,S2,...",
                     help="the seeds to retrain (default: %(default)s; fold 0)")
    rep.add_argument("--results", default="reproduced",
                     help="where the new runs go (default: reproduced/ of the repository, which git ignores)")
    rep.add_argument("--against", default=None,
                     help="the committed results root to compare with (default: the repository's results/)")
    rep.add_argument("--executor", choices=EXECUTORS, default="papermill")
    rep.add_argument("--force", action="store_true", help="retrain runs already finished in --results")
    rep.set_defaults(func=_reproduce)
    dec = sub.add_parser("decomposition", help="train notebook 40's decomposition arms on mnist5k (skips finished ones)",
                         description=decomposition.__doc__.split("\n")[0])
    dec.add_argument("--arms", nargs="+", metavar="ARM", default=None,
                     help="the arms to train (default: all; --list names them), e.g. --arms adapt-logits 'min_lookback=50'")
    dec.add_argument("--seeds", default=",".join(map(str, decomposition.SEEDS)), metavar="S1,S2,...",
                     help="the seeds (default: %(default)s)")
    dec.add_argument("--results", default=None, help="results root: the grid's records are read from it and the arms "
                     "trained into <results>/decomposition/ (default: $ADAPT_RESULTS, else the repository's results/)")
    dec.add_argument("--force", action="store_true", help="retrain arms already finished")
    dec.add_argument("--list", action="store_true", help="print each point with its state and exit")
    dec.set_defaults(func=_decomposition)
    return parser


def _decomposition(args) -> int:
    """``adapt decomposition``: exit 0 when every selected point finished, 1 when one failed, 2 on bad input."""
    try:
        seeds = _seeds(args.seeds)
        results = _cli_path(args.results)
        # held-final needs the grid's reference AdaPT run of its seed: listing skips a seed without one
        points = decomposition.decomposition_points(seeds, args.arms, grid_root=results,
                                                    missing="skip" if args.list else "raise")
    except ValueError as exc:
        print(f"adapt decomposition: {exc}", file=sys.stderr)
        return 2
    if args.list:
        _, status = decomposition.load_decomposition(points, results)
        print(status.to_string(index=False))
        return 0
    frame = decomposition.run_decomposition(points, results, force=args.force)
    bad = frame[~frame["status"].isin(FINISHED)]
    if len(bad):
        print(f"adapt decomposition: these runs did not finish (their records say why): {list(bad['run_id'])}",
              file=sys.stderr)
    return 1 if len(bad) else 0


def _seeds(text: str) -> tuple:
    """``--seeds 0,1,2`` as a tuple of ints (``ValueError`` naming the value otherwise)."""
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers such as 0,1,2, got {text!r}") from None


def _reproduce(args) -> int:
    try:
        seeds = _seeds(args.seeds)
        rows = reproduce.reproduce(args.profile, seeds, _cli_path(args.results), _cli_path(args.against),
                                   executor=args.executor, force=args.force)
    except (ValueError, PreflightError) as exc:
        print(f"adapt reproduce: {exc}", file=sys.stderr)
        return 2
    bad = reproduce.failed(rows)
    if bad:
        print(f"adapt reproduce: these runs failed (their records say why): {bad}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["grid"]:
            return grid_main(argv[1:], prog="adapt grid")
        if argv[:1] == ["compare"]:
            return compare_main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except Interrupted as exc:  # adapt reproduce
        print(f"adapt: {exc}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except KeyboardInterrupt:  # between runs: nothing was training
        print("adapt: interrupted (no run was training; nothing lost)", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
