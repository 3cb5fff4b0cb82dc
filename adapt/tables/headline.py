"""The paper's headline claims and this run's AdaPT-vs-float32 comparison beside them.

* :data:`PAPER_CLAIMS` / :data:`HEADLINE_METRICS` -- the abstracts' headline numbers,
  as stated, and the metrics compared;
* :func:`adapt_vs_float32` / :func:`headline_table` -- this run's AdaPT-vs-float32
  averages beside the paper's headline claims with deltas.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .frames import _mean, accuracy_table, select_records, speedup_table

__all__ = ["PAPER_CLAIMS", "HEADLINE_METRICS", "adapt_vs_float32", "headline_table"]


# ----------------------------------------------------------------------------- the paper's claims
#: The headline numbers of the AdaPT abstracts, as stated (docs/method.md §1.1).  Each metric:
#: ``value`` (in this package's units: speedups as factors, the accuracy difference in
#: percentage points, the model size as a fraction of the float32 model), ``wording``
#: (the abstract's words) and, where the reading is ours, ``note``.
#: The earlier ADEPT abstract (arXiv v1-v3) reports 1.26 and 0.53 with the same +0.98 %;
#: it is superseded by v4 and not tabulated.
PAPER_CLAIMS = {
    "v4": {
        "source": "arXiv 2107.13490v4 (27 Aug 2021), abstract",
        "tag": "[A-v4abs]",
        "benchmarks": "AlexNet/ResNet on CIFAR10/100",
        "metrics": {
            "train_speedup": {
                "value": 1.27, "wording": "an average speedup of 1.27 compared to standard training in float32"},
            "train_speedup_iso": {"value": None, "wording": None, "note": "not claimed in v4"},
            "acc_diff_pp": {
                "value": 0.98, "wording": "an average accuracy increase of 0.98%",
                "note": "'0.98%' may be percentage points or a relative increase; compared here as "
                        "percentage points (the SDM version states its +0.74 in percentage points)"},
            "inference_speedup": {"value": 2.33, "wording": "an average inference speedup of 2.33"},
            "model_size": {
                "value": 0.52, "wording": "a model size reduction of 0.52",
                "note": "read as the quantized model's size relative to float32 (0.52x); read as a "
                        "reduction *by* 52 % it would be 0.48x"},
        },
    },
    "sdm": {
        "source": "SDM 2023 version, abstract (also the official repository's README)",
        "tag": "[A-SDM]",
        "benchmarks": "AlexNet/ResNet-20 on CIFAR10/CIFAR100/EMNIST and LeNet-5/MNIST",
        "metrics": {
            "train_speedup": {"value": 1.31, "wording": "average 1.31x speedup ... compared to float32, "
                                                        "at iso-accuracy"},
            "train_speedup_iso": {"value": 4.76, "wording": "4.76x adjusted for iso-accuracy"},
            "acc_diff_pp": {"value": 0.74, "wording": "average accuracy increase of 0.74 percentage points"},
            "inference_speedup": {"value": 2.28, "wording": "average inference speedup of 2.28x"},
            "model_size": {
                "value": 0.51, "bound": "<=", "wording": "model size reduction up to 51% of the unquantized model",
                "note": "read as 'the model shrinks to at most 51 % of float32' (ratio <= 0.51, the "
                        "best case, not an average); read as a reduction *by* up to 51 % it would be >= 0.49x. "
                        "The SDM averages also cover EMNIST and LeNet-5/MNIST, which this grid does not run"},
        },
    },
}

#: The headline metrics: key -> (label, unit).
HEADLINE_METRICS = {
    "train_speedup": ("training speedup", "x"),
    "train_speedup_iso": ("iso-accuracy training speedup", "x"),
    "acc_diff_pp": ("accuracy difference, mean over runs", "pp"),
    "acc_diff_best_pp": ("accuracy difference, best run", "pp"),
    "inference_speedup": ("inference speedup", "x"),
    "model_size": ("model size (fraction of float32)", ""),
}


# ----------------------------------------------------------------------------- headline
def adapt_vs_float32(records: Sequence[dict], variant: str = "reference", adapt_variant: str = "reference",
                     baseline: str = "float32", figures: Optional[pd.DataFrame] = None,
                     profile: Optional[str] = None) -> pd.DataFrame:
    """AdaPT against its float32 baseline, per model x data set.

    Columns: ``model, dataset, adapt_runs, baseline_runs`` (completed), ``adapt_acc_pct,
    baseline_acc_pct`` (means), ``acc_diff_pp`` (AdaPT mean - baseline mean),
    ``acc_diff_best_pp`` (AdaPT best run - baseline best run), and the AdaPT means of
    ``train_speedup, train_speedup_iso, inference_speedup, model_size`` under the
    ``variant`` cost model.  ``adapt_variant`` picks the heuristic variant;
    ``baseline`` the baseline method (``float32``: AdaPT's own; ``float32-muppet``).
    ``profile``: only that profile's grid records.
    """
    records = select_records(records, profile)
    acc = accuracy_table(records)
    sp = speedup_table(records, variant, figures=figures)
    rows = []
    pairs = acc.loc[acc["method"] == "adapt", ["model", "dataset"]].drop_duplicates()
    for model, dataset in pairs.itertuples(index=False):
        a = acc[(acc.model == model) & (acc.dataset == dataset) & (acc.method == "adapt")
                & (acc.variant == adapt_variant)]
        b = acc[(acc.model == model) & (acc.dataset == dataset) & (acc.method == baseline)]
        s = sp[(sp.model == model) & (sp.dataset == dataset) & (sp.method == "adapt") & (sp.variant == adapt_variant)]
        if a.empty:
            continue
        a, s = a.iloc[0], (s.iloc[0] if len(s) else None)
        b_mean = float(b["acc_mean_pct"].mean()) if len(b) else np.nan
        b_best = float(b["acc_best_pct"].max()) if len(b) else np.nan
        row = {"model": model, "dataset": dataset, "adapt_runs": int(a["completed"]),
               "baseline_runs": int(b["completed"].sum()) if len(b) else 0,
               "adapt_acc_pct": a["acc_mean_pct"], "baseline_acc_pct": b_mean,
               "acc_diff_pp": a["acc_mean_pct"] - b_mean, "acc_diff_best_pp": a["acc_best_pct"] - b_best}
        for c in ("train_speedup", "train_speedup_iso", "inference_speedup", "model_size"):
            row[c] = s[c] if s is not None else np.nan
        rows.append(row)
    cols = ["model", "dataset", "adapt_runs", "baseline_runs", "adapt_acc_pct", "baseline_acc_pct", "acc_diff_pp",
            "acc_diff_best_pp", "train_speedup", "train_speedup_iso", "inference_speedup", "model_size"]
    return pd.DataFrame(rows, columns=cols).sort_values(["model", "dataset"]).reset_index(drop=True)


def headline_table(records: Sequence[dict], variant: str = "reference", adapt_variant: str = "reference",
                   baseline: str = "float32", figures: Optional[pd.DataFrame] = None,
                   profile: Optional[str] = None) -> pd.DataFrame:
    """This run's averages over model x data set beside the paper's headline claims.

    One row per metric of :data:`HEADLINE_METRICS`; columns ``metric`` (key),
    ``label``, ``unit``, ``this_run`` (the mean over the model x data set pairs of
    :func:`adapt_vs_float32` where the value is defined, +inf propagating as in
    :func:`speedup_table`), ``pairs`` (how many pairs entered it), ``paper_v4``, ``delta_v4`` (this run - paper), ``paper_sdm``, ``delta_sdm``.
    A metric a version does not claim has NaN there.  The accuracy difference is
    compared with the papers' accuracy increase in percentage points (see the notes
    in :data:`PAPER_CLAIMS`); the best-run difference with the same claim, as the
    official script reports the best fold.  ``profile``: only that profile's grid records.
    """
    pairs = adapt_vs_float32(records, variant, adapt_variant, baseline, figures, profile=profile)
    rows = []
    for key, (label, unit) in HEADLINE_METRICS.items():
        vals = pd.to_numeric(pairs[key], errors="coerce") if len(pairs) else pd.Series(dtype=float)
        ours = _mean(vals)
        n = int((~np.isnan(vals.to_numpy(float))).sum()) if len(vals) else 0
        claim_key = "acc_diff_pp" if key == "acc_diff_best_pp" else key
        row = {"metric": key, "label": label, "unit": unit, "this_run": ours, "pairs": n}
        for tag in ("v4", "sdm"):
            claim = PAPER_CLAIMS[tag]["metrics"].get(claim_key, {}).get("value")
            claim = np.nan if claim is None else float(claim)
            row[f"paper_{tag}"] = claim
            row[f"delta_{tag}"] = ours - claim if np.isfinite(claim) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "label", "unit", "this_run", "pairs", "paper_v4", "delta_v4",
                                       "paper_sdm", "delta_sdm"])
