"""The ``adapt`` command (a console entry point of the package).

    adapt run CONFIG [--variant V] [--seed N] [--fold N] [--set FIELD=VALUE ...] [--results DIR] [--force]
    adapt grid PROFILE [...]          the same as  python -m adapt.grid PROFILE [...]
    adapt compare A B [...]           the same as  python -m adapt.compare A B [...]
    adapt configs [PROFILE]           the config names

``adapt run`` trains one run, e.g. the AdaPT smoke point on AlexNet with another
learning rate, 15 epochs and seed 3::

    adapt run smoke/adapt/alexnet_cifar/digits --set lr=0.001 epochs=15 --seed 3

A run with ``--set`` is a custom run: its run id carries a short hash of the changed
fields, so it has a folder of its own and never replaces a grid point's record.
``--set policy.min_lookback=10`` changes one option of the method's policy.  The
same call from Python::

    from adapt.grid import train_point
    train_point("smoke/adapt/alexnet_cifar/digits", seed=3, overrides={"lr": 0.001, "epochs": 15})
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "parse_sets"]


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
    from adapt.configs import CONFIGS

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
    from adapt.claims import PointClaimed
    from adapt.grid import GridPoint, train_point
    from adapt.paths import display

    try:
        overrides = parse_sets(args.set or [], args.config)
        point = GridPoint(args.config, args.variant, args.seed, args.fold, overrides)
        point.config()  # validate before anything is written
    except ValueError as exc:
        print(f"adapt run: {exc}", file=sys.stderr)
        return 2
    results = None if args.results is None else Path(args.results).expanduser().resolve()
    kind = "custom run" if point.is_custom else "grid point"
    print(f"{kind} {point.run_id} -> {display(point.out_dir(results))}", flush=True)
    try:
        record = train_point(args.config, args.variant, args.seed, args.fold, results_root=results,
                             force=args.force, overrides=overrides, progress=True, device=args.device)
    except PointClaimed as exc:
        print(f"adapt run: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # the record says failed; the message says what to do
        print(f"adapt run: {point.run_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0 if record["status"] in ("completed", "diverged") else 1


def _configs(args) -> int:
    from adapt.configs import config_names

    for name in config_names(args.profile):
        print(name)
    return 0


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
    sub.add_parser("grid", help="run a profile's grid (python -m adapt.grid)", add_help=False)
    sub.add_parser("compare", help="compare two run records (python -m adapt.compare)", add_help=False)
    configs = sub.add_parser("configs", help="list the config names")
    configs.add_argument("profile", nargs="?", default=None)
    configs.set_defaults(func=_configs)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grid"]:
        from adapt.grid import main as grid_main

        return grid_main(argv[1:], prog="adapt grid")
    if argv[:1] == ["compare"]:
        from adapt.compare import main as compare_main

        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
