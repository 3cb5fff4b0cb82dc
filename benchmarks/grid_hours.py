"""Device-hours of a whole grid, from one measured epoch of each distinct configuration.

For every distinct configuration of a profile's grid (config name x heuristic variant:
the seeds and folds of a configuration cost the same), trains one epoch with the one
training loop (:func:`adapt.train.run`, ``epoch_limit=1``: forward, backward, the
precision policy, evaluation on the validation and test splits) on random data of the
data set's exact shape and size, and multiplies::

    hours(config) = epoch_time(config) * config.epochs * runs(config) / 3600

MuPPET runs are open-ended (the policy stops them; ``config.epochs`` is the cap), and
their epochs cost more in the quantized phases than in the float32 phase, so their
figure is an upper bound from the first (8-bit) epoch.  An AdaPT epoch costs about the
same throughout (every layer stays quantized; the switching overhead is measured by
``benchmarks/heuristic.py``).

Random data (no downloads: the grid's CIFAR/MNIST files need not be present): the
measured time is that of the real shapes; an accuracy on it is meaningless and the
script prints none.  Prints a Markdown table per configuration, the totals per model
and data set and for the whole grid, the device name and the date, and (``--json``)
writes them to a file.

    python benchmarks/grid_hours.py --profile paper --device cuda
    python benchmarks/grid_hours.py --profile sdm --device cuda --json sdm_hours.json
    python benchmarks/grid_hours.py --profile paper --device cpu --max-train 512   # dry run

``--max-train N`` times the epoch on the first ``N`` training images only and scales the
time by the full size (for a dry run on a CPU; the figures are then estimates).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def time_one_epoch(config, device, max_train=None) -> dict:
    """Train ``config`` for one epoch on random data of its data set's shape; the epoch's seconds and sizes."""
    full_train = SHAPES[config.dataset][0] if config.subset is None else min(config.subset, SHAPES[config.dataset][0])
    # At least n_folds images per class, so that the stratified k-fold split exists.
    cap = full_train if max_train is None else min(full_train, max(max_train, config.n_folds * SHAPES[config.dataset][3]))

    def fake_load(name, *args, **kwargs):
        return random_dataset(name, cap, seed=config.seed)

    with mock.patch.object(train, "load_dataset", fake_load):
        record = train.run(config, out_dir=None, device=device, epoch_limit=1, resume=False)
    if record["status"] not in ("interrupted", "completed") or not record["epochs"]:
        raise RuntimeError(f"{config.name}: the timing epoch ended with status {record['status']!r}: "
                           f"{record.get('message', '')}")
    seconds = float(record["epochs"][0]["time_s"])
    return {"epoch_s_measured": seconds, "train_images_timed": cap, "train_images_full": full_train,
            "epoch_s": seconds * full_train / cap}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper", choices=PROFILES)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: adapt.train.pick_device)")
    parser.add_argument("--max-train", type=int, default=None,
                        help="time the epoch on this many training images and scale (dry runs)")
    parser.add_argument("--match", default=None, help="only configuration names containing this text")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.max_train is not None and args.max_train < 1:
        parser.error(f"--max-train must be a positive integer, got {args.max_train}")

    device = train.pick_device(args.device)
    rows = []
    for config, runs, point in distinct_configs(args.profile):
        if args.match and args.match not in config.name:
            continue
        t0 = time.time()
        timing = time_one_epoch(config, device, args.max_train)
        hours = timing["epoch_s"] * config.epochs * runs / 3600
        rows.append({"config": config.name, "variant": point.variant, "model": config.model,
                     "dataset": config.dataset, "method": point.method, "runs": runs, "epochs": config.epochs,
                     "upper_bound": config.method == "muppet", "hours": hours, **timing})
        print(f"  {config.name} ({point.variant}): {timing['epoch_s']:.1f} s/epoch x {config.epochs} epochs "
              f"x {runs} runs = {hours:.2f} h  [{time.time() - t0:.0f} s]", flush=True)
    if not rows:
        print(f"no configuration of {args.profile!r} matches {args.match!r}", file=sys.stderr)
        return 2

    name, today = device_name(device), date.today().isoformat()
    estimate = args.max_train is not None
    print(f"\n{args.profile} grid on {name}, {today}, torch {torch.__version__}"
          + (f" (estimated from {args.max_train} images per epoch)" if estimate else ""))
    print("\n| configuration | variant | runs | epochs | s/epoch | device-hours |\n|---|---|---|---|---|---|")
    for r in rows:
        bound = "<= " if r["upper_bound"] else ""
        print(f"| {r['config']} | {r['variant']} | {r['runs']} | {bound}{r['epochs']} | {r['epoch_s']:.1f} | "
              f"{bound}{r['hours']:.2f} |")
    totals = defaultdict(float)
    for r in rows:
        totals[(r["model"], r["dataset"])] += r["hours"]
    print("\n| model | data set | device-hours |\n|---|---|---|")
    for (model, dataset), hours in totals.items():
        print(f"| {model} | {dataset} | {hours:.2f} |")
    total = sum(r["hours"] for r in rows)
    print(f"\nwhole grid: {total:.2f} device-hours on {name} (MuPPET rows are upper bounds)")
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "device": name, "date": today,
                                               "torch": torch.__version__, "estimated": estimate,
                                               "rows": rows, "total_hours": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
