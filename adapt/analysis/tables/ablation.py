"""The ablation's tables (notebook 30): one row per run, and mean +- std per ablation row.

* :func:`ablation_runs` -- one row per run of :mod:`adapt.experiments.ablation`: its row label
  (:func:`adapt.experiments.ablation.row_of`), seed, status, final test accuracy, final mean weight WL
  and the cost-model figures of :data:`ABLATION_METRICS`.
* :func:`ablation_table` -- per row (in :func:`adapt.experiments.ablation.ablation_rows` order, then any
  other label): ``runs``, ``completed``, and ``<metric>_mean`` / ``<metric>_std`` of every
  metric over the completed runs (sample std, ``ddof=1``; NaN with one run), plus
  ``acc_delta`` (the row's mean accuracy minus the reference row's).
* :func:`ablation_view` -- the same as ``"mean ± std"`` strings, for reading.

Conventions are those of :mod:`adapt.analysis.tables.frames`: accuracy is the last epoch's test
accuracy in percent; only completed runs enter a mean; the cost-model figures are
:func:`adapt.costmodel.run_figures` of the chosen cost-model variant (through
:func:`adapt.analysis.tables.frames.figures_frame`).  The mean weight WL is the policy's own
``adapt_mean_weight_wl`` of the last epoch: the unweighted mean word length of the weight
tensors (``dim > 1``) at the end of training.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from adapt.analysis.tables.frames import figures_frame, run_id
from adapt.experiments.ablation import ablation_rows, row_of
from adapt.records import COMPLETED

__all__ = ["ABLATION_METRICS", "METRIC_LABELS", "ablation_runs", "ablation_table", "ablation_view"]

#: The per-run numbers the ablation aggregates (columns of :func:`ablation_runs`).
ABLATION_METRICS = ("test_acc_pct", "mean_weight_wl", "train_speedup", "inference_speedup", "model_size")

#: Display names of :data:`ABLATION_METRICS`.
METRIC_LABELS = {"test_acc_pct": "final test acc (%)", "mean_weight_wl": "mean weight WL (bits)",
                 "train_speedup": "training speedup", "inference_speedup": "inference speedup",
                 "model_size": "model size (x float32)"}


def _final_wl(record: dict) -> float:
    epochs = record.get("epochs") or []
    v = epochs[-1].get("adapt_mean_weight_wl") if epochs else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def ablation_runs(records: Iterable[dict], cost_model: str = "corrected",
                  figures: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per record: ``row, seed, run_id, status`` and :data:`ABLATION_METRICS`.

    ``cost_model`` is the variant of :mod:`adapt.costmodel` the speedups and the size come
    from; ``figures`` reuses a :func:`~adapt.analysis.tables.frames.figures_frame` of that variant
    (matched by run id).  Runs that did not complete keep their row, with NaN numbers.
    """
    records = list(records)
    figs = figures if figures is not None else figures_frame(records, cost_model)
    by_id = {r["run_id"]: r for r in figs.to_dict("records")} if len(figs) else {}
    rows = []
    for r in records:
        cfg = r.get("config") or {}
        rid = run_id(r)
        done = r.get("status") == COMPLETED
        acc = (r.get("final") or {}).get("final_test_acc")
        fig = by_id.get(rid, {}) if done else {}
        row = {"row": row_of(cfg), "seed": cfg.get("seed"), "run_id": rid, "status": r.get("status"),
               "test_acc_pct": 100.0 * acc if done and isinstance(acc, (int, float)) else math.nan,
               "mean_weight_wl": _final_wl(r) if done else math.nan}
        for k in ABLATION_METRICS[2:]:
            v = fig.get(k, math.nan)
            row[k] = float(v) if isinstance(v, (int, float)) else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["row", "seed", "run_id", "status"] + list(ABLATION_METRICS))


def _row_order(labels) -> list:
    known = [r.label for r in ablation_rows()]
    return [label for label in known if label in set(labels)] + sorted(set(labels) - set(known))


def ablation_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (``ddof=1``) of every metric per ablation row, over the completed runs.

    ``runs`` is :func:`ablation_runs`'s frame.  Index: the row label; columns ``option``
    (the option the row corrects; empty for the endpoints), ``value`` (its corrected value),
    ``runs``, ``completed``, ``<metric>_mean``, ``<metric>_std`` for each of
    :data:`ABLATION_METRICS`, and ``acc_delta`` (mean accuracy minus the reference row's
    mean; NaN without a completed reference run).
    """
    flipped = {r.label: r.flipped for r in ablation_rows()}
    out = []
    for label in _row_order(runs["row"]):
        g = runs[runs["row"] == label]
        done = g[g["status"] == COMPLETED]
        entry = {"row": label, "option": label if flipped.get(label) else "",
                 "value": repr(next(iter(flipped[label].values()))) if flipped.get(label) else "",
                 "runs": len(g), "completed": len(done)}
        for m in ABLATION_METRICS:
            v = done[m].to_numpy(dtype=float)
            v = v[~np.isnan(v)]
            entry[f"{m}_mean"] = float(v.mean()) if len(v) else math.nan
            entry[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        out.append(entry)
    cols = ["row", "option", "value", "runs", "completed"] + [f"{m}_{s}" for m in ABLATION_METRICS
                                                              for s in ("mean", "std")]
    table = pd.DataFrame(out, columns=cols).set_index("row")
    ref = table["test_acc_pct_mean"].get("reference", math.nan)
    table["acc_delta"] = table["test_acc_pct_mean"] - ref
    return table


def ablation_view(table: pd.DataFrame, digits: Optional[dict] = None) -> pd.DataFrame:
    """:func:`ablation_table` as ``"mean ± std"`` strings, one column per metric (:data:`METRIC_LABELS`).

    ``digits`` (metric -> decimals) defaults to 1 for accuracy and WL, 2 otherwise.
    """
    digits = {"test_acc_pct": 1, "mean_weight_wl": 1, **(digits or {})}
    view = pd.DataFrame(index=table.index)
    view["corrects"] = [f"{o} = {v}" if o else "" for o, v in zip(table["option"], table["value"])]
    view["runs"] = [f"{c}/{n}" for c, n in zip(table["completed"], table["runs"])]
    for m in ABLATION_METRICS:
        d = digits.get(m, 2)
        cells = []
        for mean, std in zip(table[f"{m}_mean"], table[f"{m}_std"]):
            if math.isnan(mean):
                cells.append("n/a")
            else:
                cells.append(f"{mean:.{d}f} ± {std:.{d}f}" if not math.isnan(std) else f"{mean:.{d}f}")
        view[METRIC_LABELS[m]] = cells
    view["Δ acc vs reference"] = [f"{v:+.1f}" if not math.isnan(v) else "n/a" for v in table["acc_delta"]]
    return view
