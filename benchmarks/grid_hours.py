"""Device-hours of a whole grid, from measured epochs of each distinct configuration.

For every distinct configuration of a profile's grid (config name x heuristic variant:
the seeds and folds of a configuration cost the same), trains ``--epochs`` epochs (default
2) with the one training loop (:func:`adapt.train.run`: forward, backward, the precision
policy, evaluation on the validation and test splits) on random data of the data set's
exact shape and size, and multiplies the mean time of the epochs after the first::

    hours(config) = epoch_time(config) * config.epochs * runs(config) / 3600

The first epoch is not timed: it compiles the Triton kernels, runs their first-use checks
and warms the allocator and cuDNN, which a run pays once, not every epoch.  AdaPT switches
a tensor's format every ``lookback`` optimizer steps (at least ``min_lookback`` = 25, or 50
for Fashion-MNIST), so an epoch of fewer steps holds no switch; the table counts the switch
events inside the timed epochs (``switches timed``) and says when there are none.  MuPPET
runs are open-ended (the policy stops them; ``config.epochs`` is the cap), and their epochs
cost more in the quantized phases than in the float32 phase, so their figure is an upper
bound from the 8-bit epochs.

Random data (no downloads: the grid's CIFAR/MNIST files need not be present): the
measured time is that of the real shapes; an accuracy on it is meaningless and the
script prints none.  The validation split has the protocol's size but is drawn without
scikit-learn (every ``n_folds``-th image for k-fold, the last ``val_fraction`` for hold-out),
so the script runs where only torch is installed.  Prints a Markdown table per
configuration, the totals per model and data set and for the whole grid, the device name
and the date, and (``--json``) writes them to a file, rewritten after every configuration.

    python benchmarks/grid_hours.py --profile paper --device cuda
    python benchmarks/grid_hours.py --profile sdm --device cuda --json sdm_hours.json
    python benchmarks/grid_hours.py --profile paper --device cpu --max-train 512   # dry run

``--max-train N`` trains on the first ``N`` training images only (and ``N // 5`` test
images) and scales the time by the full size: the figures are then estimates.
``--time-budget S`` starts no configuration after ``S`` seconds; the table then covers the
configurations done and the script exits with status 3 (incomplete).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapt.data import splits as splits_module  # noqa: E402
from adapt.data.base import ImageDataset  # noqa: E402
from adapt import train  # noqa: E402
from adapt.experiments.configs import PROFILES  # noqa: E402
from adapt.experiments.grid import grid  # noqa: E402

#: (train images, test images, channels, classes) of each data set as adapt loads it
#: (adapt.data.base.DATASETS; the MNIST family is resized to 32x32, EMNIST is the balanced split).
SHAPES = {
    "cifar10": (50_000, 10_000, 3, 10),
    "cifar100": (50_000, 10_000, 3, 100),
    "mnist": (60_000, 10_000, 1, 10),
    "fashion_mnist": (60_000, 10_000, 1, 10),
    "emnist": (112_800, 18_800, 1, 47),
    "digits": (1_437, 360, 3, 10),
    "mnist5k": (4_000, 1_000, 1, 10),
}


def distinct_configs(profile: str) -> list:
    """``[(config, runs)]``: one entry per (config name, variant) of the grid, with its number of points."""
    runs, first = defaultdict(int), {}
    for point in grid(profile):
        key = (point.config_name, point.variant)
        runs[key] += 1
        first.setdefault(key, point)
    return [(first[key].config(), runs[key], first[key]) for key in first]


def random_dataset(name: str, max_train=None, seed: int = 0):
    """``(train, test)`` of random uint8 images with the shape and size of ``name`` (``max_train`` caps train)."""
    n_train, n_test, channels, classes = SHAPES[name]
    if max_train is not None:
        n_train, n_test = min(n_train, max_train), min(n_test, max(1, max_train // 5))
    g = torch.Generator().manual_seed(seed)

    def make(n):
        images = torch.randint(0, 256, (n, channels, 32, 32), generator=g, dtype=torch.uint8)
        # Balanced labels in random order: the k-fold split is stratified and needs every class in every fold.
        labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
        return ImageDataset(images, labels, [str(i) for i in range(classes)], name)

    return make(n_train), make(n_test)


def kfold_sizes_split(labels, n_splits: int = 10, fold: int = 0, seed: int = 0) -> tuple:
    """The protocol's k-fold sizes without scikit-learn: every ``n_splits``-th image (from ``fold``) validates."""
    n = len(labels)
    val = np.arange(fold, n, n_splits, dtype=np.int64)
    return np.setdiff1d(np.arange(n, dtype=np.int64), val), val


def holdout_sizes_split(labels, val_fraction: float = 0.2, seed: int = 0) -> tuple:
    """The hold-out sizes of ``train_test_split(test_size=val_fraction)`` (its ceiling) without scikit-learn."""
    n = len(labels)
    n_val = math.ceil(val_fraction * n)
    return np.arange(n - n_val, dtype=np.int64), np.arange(n - n_val, n, dtype=np.int64)


def time_epochs(config, device, max_train=None, epochs: int = 2) -> dict:
    """Train ``config`` for ``epochs`` epochs on random data of its data set's shape; the mean seconds of the
    epochs after the first (of the only one if ``epochs`` is 1), the sizes, and AdaPT's switches in the timed epochs."""
    full_train = SHAPES[config.dataset][0] if config.subset is None else min(config.subset, SHAPES[config.dataset][0])
    # At least n_folds images per class, so that every class is in every fold.
    cap = full_train if max_train is None else min(full_train, max(max_train, config.n_folds * SHAPES[config.dataset][3]))

    def fake_load(name, *args, **kwargs):
        return random_dataset(name, cap, seed=config.seed)

    with mock.patch.object(train, "load_dataset", fake_load), \
            mock.patch.object(splits_module, "kfold_split", kfold_sizes_split), \
            mock.patch.object(splits_module, "holdout_split", holdout_sizes_split):
        record = train.run(config, out_dir=None, device=device, epoch_limit=epochs, resume=False)
    done = record["epochs"]
    if record["status"] not in ("interrupted", "completed") or len(done) < min(epochs, config.epochs):
        raise RuntimeError(f"{config.name}: the timing epochs ended with status {record['status']!r} after "
                           f"{len(done)} epoch(s): {record.get('message', '')}")
    timed = done[1:] if len(done) > 1 else done
    seconds = sum(float(e["time_s"]) for e in timed) / len(timed)
    first_step = int(done[0]["steps"]) if len(done) > 1 else 0  # "steps" counts the steps taken so far
    switches = None
    if config.method == "adapt":
        switches = sum(1 for e in (record.get("traces") or {}).get("switches", []) if int(e["step"]) >= first_step)
    return {"epoch_s_measured": seconds, "epochs_run": len(done), "epochs_timed": len(timed),
            "steps_per_epoch": int(done[0]["steps"]), "switches_timed": switches, "first_epoch_s": float(done[0]["time_s"]),
            "train_images_timed": cap, "train_images_full": full_train, "epoch_s": seconds * full_train / cap}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper", choices=PROFILES)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: adapt.train.pick_device)")
    parser.add_argument("--max-train", type=int, default=None,
                        help="train on this many training images per epoch and scale the time (estimates)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs trained per configuration; all but the first are timed (default 2)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="start no configuration after this many seconds (then exit 3: incomplete)")
    parser.add_argument("--match", default=None,
                        help="only configurations whose name this regular expression finds (e.g. 'adapt/resnet20/cifar10$')")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file (after every configuration)")
    args = parser.parse_args(argv)
    if args.max_train is not None and args.max_train < 1:
        parser.error(f"--max-train must be a positive integer, got {args.max_train}")
    if args.epochs < 1:
        parser.error(f"--epochs must be a positive integer, got {args.epochs}")

    device = train.pick_device(args.device)
    name, today = device_name(device), date.today().isoformat()
    estimate = args.max_train is not None
    todo = [c for c in distinct_configs(args.profile) if not args.match or re.search(args.match, c[0].name)]
    if not todo:
        print(f"no configuration of {args.profile!r} matches {args.match!r}", file=sys.stderr)
        return 2
    started = time.time()
    rows = []
    for config, runs, point in todo:
        if args.time_budget is not None and time.time() - started > args.time_budget:
            break
        t0 = time.time()
        timing = time_epochs(config, device, args.max_train, min(args.epochs, config.epochs))
        hours = timing["epoch_s"] * config.epochs * runs / 3600
        rows.append({"config": config.name, "variant": point.variant, "model": config.model,
                     "dataset": config.dataset, "method": point.method, "runs": runs, "epochs": config.epochs,
                     "upper_bound": config.method == "muppet", "hours": hours, **timing})
        switches = "" if timing["switches_timed"] is None else f", {timing['switches_timed']} switches timed"
        print(f"  {config.name} ({point.variant}): {timing['epoch_s']:.1f} s/epoch x {config.epochs} epochs "
              f"x {runs} runs = {hours:.2f} h  [first epoch {timing['first_epoch_s']:.1f} s, "
              f"{timing['steps_per_epoch']} steps/epoch{switches}; {time.time() - t0:.0f} s]", flush=True)
        if args.json:
            _write_json(args, name, today, estimate, rows, len(todo))
    complete = len(rows) == len(todo)

    print(f"\n{args.profile} grid on {name}, {today}, torch {torch.__version__}; epochs after the first of "
          f"{args.epochs} timed" + (f"; estimated from {args.max_train} training images per epoch" if estimate else "")
          + ("" if complete else f"; INCOMPLETE: {len(rows)} of {len(todo)} configurations within "
                                 f"--time-budget {args.time_budget:g} s"))
    print("\n| configuration | variant | runs | epochs | s/epoch | switches timed | device-hours |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        bound = "<= " if r["upper_bound"] else ""
        sw = "" if r["switches_timed"] is None else str(r["switches_timed"])
        print(f"| {r['config']} | {r['variant']} | {r['runs']} | {bound}{r['epochs']} | {r['epoch_s']:.1f} | {sw} | "
              f"{bound}{r['hours']:.2f} |")
    totals = defaultdict(float)
    for r in rows:
        totals[(r["model"], r["dataset"])] += r["hours"]
    print("\n| model | data set | device-hours |\n|---|---|---|")
    for (model, dataset), hours in totals.items():
        print(f"| {model} | {dataset} | {hours:.2f} |")
    total = sum(r["hours"] for r in rows)
    print(f"\n{'whole grid' if complete else 'configurations done'}: {total:.2f} device-hours on {name} "
          f"(MuPPET rows are upper bounds)")
    no_switch = [r["config"] for r in rows if r["switches_timed"] == 0]
    if no_switch:
        print(f"note: no AdaPT format switch fell in the timed epochs of {', '.join(no_switch)} (too few steps per "
              f"epoch for the lookback); their figures leave the switches' cost out: raise --epochs or --max-train")
    if args.json:
        _write_json(args, name, today, estimate, rows, len(todo))
    return 0 if complete else 3


def _write_json(args, name, today, estimate, rows, n_configs) -> None:
    Path(args.json).write_text(json.dumps({
        "profile": args.profile, "device": name, "date": today, "torch": torch.__version__, "estimated": estimate,
        "max_train": args.max_train, "epochs": args.epochs, "complete": len(rows) == n_configs,
        "configurations": n_configs, "rows": rows, "total_hours": sum(r["hours"] for r in rows)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
