"""Cross-check: the released AdaPT code against ``adapt``'s reference, trained the same way.

    ADAPT_OFFICIAL_REPO=/path/to/AdaPT PYTHONPATH=$PWD:/tmp/qtorch PATH=/tmp/qtorch/bin:$PATH \\
        python tools/official_crosscheck.py [--seeds 0 1 2] [--epochs 15] [--out results/crosscheck]

Needs a local checkout of ``lorenz0890/AdaPT`` (@81e54e0; ``ADAPT_OFFICIAL_REPO`` or ``--repo``)
and ``qtorch`` 0.3.0 (``python -m pip install --target /tmp/qtorch qtorch==0.3.0 ninja``; its C++
extension compiles at the first import).  The released code is read from the checkout at run time
(:mod:`adapt.experiments.official`); nothing of it is copied into this repository.

For every seed it trains, on the ``mnist5k`` split of ``mnist5k/adapt/lenet5/mnist5k`` (fold 0 of
the 10-fold split, seeded with the seed), with that config's hyperparameters (batch 64, no
accumulation, lr 0.1, momentum 0.9, L2 1e-4, L1 1e-4, 15 epochs, lr x0.1 from epoch 14, lookback
25..150, resolution 50..150, results buffer 8, lookback momentum 0.9, 8/4 start):

``released``
    the released ``QLeNet5_FP`` (``models/lenet5_fp.py``, quantized inputs, outputs and gradients)
    with the released ``MSGD_FP`` (``optimizers/msgd_fp.py``) and MultiStepLR from its own
    ``configure_optimizers``, one ``training_step(batch, batch_idx)`` per mini-batch (the released
    method itself; the Lightning calls it makes are stood in for, and its per-step
    ``gc.collect()`` / ``torch.cuda.empty_cache()`` are skipped: housekeeping that changes no value),
    the scheduler stepped after every epoch; validation and test accuracy per epoch from the
    released ``validation_step`` (quantized, stochastic rounding, as released);
``reference``
    ``adapt.train.run`` of the reference variant (``softmax_output`` and ``in_place_inputs`` on);
``reference-logits``
    the same with ``softmax_output=False`` (the LeNet-5 returning logits, ``adapt``'s model before
    docs/method.md §1.10): how much the released double softmax matters.

Both see the same batches in the same order (``adapt.data.loader.DeviceLoader`` with the seed) and,
with ``--init copy`` (default), the same initial weights: ``adapt``'s initialisation for the seed
copied into the released model.  ``--init own`` draws them with the released initializer
(``initializers/custom_init.py``, the same truncated normal; torch's own ``trunc_normal_`` now
samples by rejection, so the draws differ).  The stochastic rounding draws differ (qtorch's
``rand_like`` on the global generator against ``adapt``'s generators), so two arms agree in
distribution, not step by step: the comparison is over seeds.

Written to ``--out``: ``traces/<arm>-s<seed>.json`` (per-epoch metrics and formats, every switch
event: step, tensor, old, pushed-down and new format, lookback, resolution, gradient diversity,
strategy), ``comparison.json`` (per run and per arm over seeds) and ``comparison.csv`` (one row per
run), ``run_info.json`` (command, date, versions, the checkout's file hashes).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from adapt.experiments.configs import get_config
from adapt.experiments.official import (OFFICIAL_COMMIT, REQUIRED_FILES, compare_switches, load_official, official_repo,
                                        train_adapt, train_released)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "mnist5k/adapt/lenet5/mnist5k"
ARMS = ("released", "reference", "reference-logits")


# ----------------------------------------------------------------------------- comparison
def weight_tensors(run_: dict) -> list:
    """The weight tensors (the ones the heuristic switches) of a run, in parameter order."""
    return [n for n in run_["final_formats"] if n.endswith(".weight")]


def formats_by_epoch(run_: dict) -> dict:
    """``{tensor: [[wl, fl] at the end of epoch 0, 1, ...]}`` for the weight tensors, from the switch
    events (a weight's format changes only at its switches); 8/4 before the first."""
    out = {}
    for name in weight_tensors(run_):
        fmt, k, series = [8, 4], 0, []
        events = [e for e in run_["switches"] if e["tensor"] == name]
        for epoch in range(len(run_["epochs"])):
            while k < len(events) and events[k]["epoch"] <= epoch + 1 + 1e-9:
                fmt = events[k]["new"]
                k += 1
            series.append(list(fmt))
        out[name] = series
    return out


def first_steps(run_: dict) -> dict:
    """Per weight tensor: the step of its first switch, and of its first push-up (the first switch
    whose new word length exceeds the format it had)."""
    out = {}
    for name in weight_tensors(run_):
        events = [e for e in run_["switches"] if e["tensor"] == name]
        raise_ = next((e for e in events if e["new"][0] > e["old"][0]), None)
        out[name] = {"first_switch": events[0]["step"] if events else None,
                     "first_push_up": raise_["step"] if raise_ else None,
                     "first_push_up_to": raise_["new"] if raise_ else None}
    return out


def summarize_run(run_: dict) -> dict:
    last = run_["epochs"][-1]
    fmts = formats_by_epoch(run_)
    finals = {n: run_["final_formats"][n] for n in weight_tensors(run_)}
    return {"arm": run_["arm"], "seed": run_["seed"], "final_test_acc": last["test_acc"],
            "best_test_acc": max(e["test_acc"] for e in run_["epochs"]), "final_val_acc": last["val_acc"],
            "final_mean_weight_wl": sum(f[0] for f in finals.values()) / len(finals),
            "final_mean_weight_fl": sum(f[1] for f in finals.values()) / len(finals),
            "mean_weight_wl_by_epoch": [sum(fmts[n][e][0] for n in fmts) / len(fmts) for e in range(len(run_["epochs"]))],
            "test_acc_by_epoch": [e["test_acc"] for e in run_["epochs"]],
            "final_weight_formats": finals, "switches": len(run_["switches"]),
            "format_changes": sum(1 for e in run_["switches"] if e["old"] != e["new"]),
            "median_gd_over_sqrt_lookback": _median([e["gd"] / math.sqrt(e["lookback"]) for e in run_["switches"]
                                                     if e["gd"] is not None and e["lookback"]]),
            "first_steps": first_steps(run_), "wall_time_s": run_["wall_time_s"]}


def _median(values):
    return statistics.median(values) if values else None


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def summarize_arms(summaries: list) -> dict:
    """Per arm, over seeds: mean and sd of the accuracies, mean weight WL/FL, switches, and per
    weight tensor of the final WL/FL and of the first switch and push-up steps."""
    out = {}
    for arm in dict.fromkeys(s["arm"] for s in summaries):
        rows = [s for s in summaries if s["arm"] == arm]
        tensors = list(rows[0]["final_weight_formats"])
        out[arm] = {
            "seeds": [s["seed"] for s in rows],
            **{k: _mean_sd([s[k] for s in rows]) for k in ("final_test_acc", "best_test_acc", "final_mean_weight_wl",
                                                            "final_mean_weight_fl", "switches", "format_changes",
                                                            "median_gd_over_sqrt_lookback")},
            "per_tensor": {n: {"final_wl": _mean_sd([s["final_weight_formats"][n][0] for s in rows]),
                               "final_fl": _mean_sd([s["final_weight_formats"][n][1] for s in rows]),
                               "first_switch": _mean_sd([s["first_steps"][n]["first_switch"] for s in rows]),
                               "first_push_up": _mean_sd([s["first_steps"][n]["first_push_up"] for s in rows])}
                           for n in tensors},
            "mean_weight_wl_by_epoch": [statistics.fmean(v) for v in zip(*(s["mean_weight_wl_by_epoch"] for s in rows))],
            "test_acc_by_epoch": [statistics.fmean(v) for v in zip(*(s["test_acc_by_epoch"] for s in rows))],
        }
    return out


def csv_rows(summaries: list) -> list:
    rows = []
    for s in summaries:
        row = {"arm": s["arm"], "seed": s["seed"], "final_test_acc": s["final_test_acc"],
               "best_test_acc": s["best_test_acc"], "final_mean_weight_wl": s["final_mean_weight_wl"],
               "final_mean_weight_fl": s["final_mean_weight_fl"], "switches": s["switches"],
               "format_changes": s["format_changes"], "median_gd_over_sqrt_lookback": s["median_gd_over_sqrt_lookback"]}
        for n, (wl, fl) in s["final_weight_formats"].items():
            row[f"{n}:final"] = f"{wl}/{fl}"
        for n, f in s["first_steps"].items():
            row[f"{n}:first_switch"] = f["first_switch"]
            row[f"{n}:first_push_up"] = f["first_push_up"]
        rows.append(row)
    return rows


def write_comparison(out: Path, results: dict, meta: dict) -> dict:
    """``comparison.json`` and ``comparison.csv`` in ``out`` from ``{(arm, seed): trace}``."""
    summaries = [summarize_run(results[k]) for k in sorted(results, key=lambda k: (k[1], ARMS.index(k[0])))]
    seeds = sorted({seed for _, seed in results})
    comparison = {**meta, "arms": summarize_arms(summaries),
                  "released_vs_reference": {seed: compare_switches(results[("released", seed)],
                                                                   results[("reference", seed)])
                                            for seed in seeds
                                            if ("released", seed) in results and ("reference", seed) in results},
                  "runs": summaries}
    (out / "comparison.json").write_text(json.dumps(comparison, indent=1) + "\n")
    rows = csv_rows(summaries)
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return comparison


def summarize_folder(out: Path) -> int:
    """Rewrite the comparison from ``out/traces/*.json`` (keeping the meta fields of the old one)."""
    results = {}
    for path in sorted((out / "traces").glob("*-s*.json")):
        trace = json.loads(path.read_text())
        results[(trace["arm"], trace["seed"])] = trace
    if not results:
        raise SystemExit(f"no traces in {out / 'traces'}")
    old = json.loads((out / "comparison.json").read_text()) if (out / "comparison.json").exists() else {}
    meta = {k: old.get(k) for k in ("config", "init", "rounding", "seeds", "epochs")}
    write_comparison(out, results, meta)
    return 0


# ----------------------------------------------------------------------------- command line
def _versions(root: Path) -> dict:
    import numpy
    import qtorch

    files = {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in REQUIRED_FILES}
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "qtorch": getattr(qtorch, "__version__", "0.3.0 (no __version__)"), "platform": platform.platform(),
            "official_commit_cited": OFFICIAL_COMMIT, "official_files_sha256": files,
            "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=None, help="checkout of lorenz0890/AdaPT (default: $ADAPT_OFFICIAL_REPO)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the config's 15 epochs (a quick look)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--init", choices=("copy", "own"), default="copy",
                        help="released model's initial weights: adapt's for the seed (copy) or its own initializer")
    parser.add_argument("--rounding", choices=("stochastic", "nearest"), default="stochastic",
                        help="nearest: the lockstep mode (deterministic rounding, PushDown's draws shared), in "
                             "which the released and reference runs can be compared step by step")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "results" / "crosscheck"))
    parser.add_argument("--summarize-only", action="store_true",
                        help="recompute comparison.json/.csv from the traces already in --out (no training)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.summarize_only:
        return summarize_folder(out)
    root = official_repo(args.repo)
    if root is None:
        parser.error("no checkout of lorenz0890/AdaPT: pass --repo or set ADAPT_OFFICIAL_REPO")
    if args.threads:
        torch.set_num_threads(args.threads)
    official = load_official(root)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results = {}
    for seed in args.seeds:
        overrides = {"seed": seed, "rounding": args.rounding, **({"epochs": args.epochs} if args.epochs else {})}
        cfg = get_config(CONFIG, variant="reference", **overrides)
        for arm in args.arms:
            t0 = time.time()
            if arm == "released":
                result = train_released(official, cfg, args.init)
            elif arm == "reference":
                result = train_adapt(cfg, arm)
            else:
                result = train_adapt(cfg.replace(softmax_output=False), arm)
            results[(arm, seed)] = result
            (out / "traces" / f"{arm}-s{seed}.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")
            summary = summarize_run(result)
            print(f"{arm:17s} seed {seed}: final test acc {summary['final_test_acc']:.3f}, mean weight WL "
                  f"{summary['final_mean_weight_wl']:.1f}, {summary['switches']} switches, "
                  f"{time.time() - t0:.0f} s", flush=True)
    write_comparison(out, results, {"config": CONFIG, "init": args.init, "rounding": args.rounding,
                                    "seeds": args.seeds, "epochs": cfg.epochs})
    info = {"command": "python tools/official_crosscheck.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(root)}
    (out / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
