"""Results tables from run records (pure pandas; no plotting).

* :func:`runs_frame` -- one row per run: its group keys, status and accuracies.
* :func:`accuracy_table` -- test accuracy per model x data set x method (x variant):
  mean +- std over seeds/folds, the best run (what the official AdaPT script prints),
  and how many runs completed, diverged or failed.
* :func:`figures_frame` / :func:`speedup_table` -- the cost-model figures
  (:func:`adapt.costmodel.run_figures`) per run and their means per group.
* :func:`adapt_vs_float32` / :func:`headline_table` -- this run's AdaPT-vs-float32
  averages beside the paper's headline claims (:data:`PAPER_CLAIMS`) with deltas.
* :func:`to_markdown` -- a pipe table without the ``tabulate`` package.
* :func:`readme_numbers` -- the numbers the README quotes.

Conventions
-----------
* A run's *method* is the method segment of its config name (``float32``,
  ``float32-muppet``, ``muppet``, ``adapt``, ``fixed``): MuPPET's float32 baseline
  stays apart from AdaPT's although both have ``config.method == "float32"``.
  ``variant`` is the AdaPT heuristic variant of the run (``reference`` for every
  other method); ``cost_model`` is the cost-model variant of a speedup table.
* A run's accuracy is its **final** test accuracy (the last epoch's, in percent): the
  official AdaPT script evaluates the test set after each fold's training and prints
  the maximum over folds ("best model test accuracy", method.md §1.6), which is the
  ``acc_best_pct`` column here (the max over the group's completed runs, seeds or
  folds alike).  How the paper aggregates is not retrieved, so both are shown.
* Only ``completed`` runs enter means, stds, maxima and cost figures.  Every other
  status is counted in its own column (``diverged``, ``failed``, ``other`` =
  interrupted/running), and a group without a completed run shows its statuses in
  the ``accuracy`` column instead of a number: nothing is silently dropped.
* Standard deviations are sample standard deviations (``ddof=1``); a group with one
  completed run has std NaN (printed as ``n/a``, and ``accuracy`` shows the mean only).
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "PAPER_CLAIMS", "HEADLINE_METRICS", "METHOD_ORDER", "STATUSES",
    "run_method", "runs_frame", "accuracy_table", "figures_frame", "speedup_table", "adapt_vs_float32",
    "headline_table", "to_markdown", "readme_numbers", "format_value", "readme_block", "README_BEGIN", "README_END",
]

#: Row order of the methods in every table.
METHOD_ORDER = ("float32", "float32-muppet", "muppet", "adapt", "fixed")

#: Record statuses (adapt.results), counted per group.
STATUSES = ("completed", "diverged", "failed", "interrupted", "running")

#: Group keys of the tables.
GROUP = ["model", "dataset", "method", "variant"]

#: The cost-model figures of :func:`speedup_table` (keys of adapt.costmodel.run_figures).
SPEEDUP_COLUMNS = ("train_speedup", "train_speedup_iso", "inference_speedup", "model_size", "memory_footprint",
                   "final_sparsity", "avg_sparsity", "overhead_share", "speedup_vs_muppet_baseline")

# ----------------------------------------------------------------------------- the paper's claims
#: The headline numbers of the AdaPT abstracts, as stated (method.md §1.1).  Each metric:
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


# ----------------------------------------------------------------------------- per-run rows
def run_method(record: dict) -> str:
    """The method segment of the record's config name (``float32-muppet`` stays distinct)."""
    name = record.get("name") or (record.get("config") or {}).get("name") or ""
    parts = str(name).split("/")
    if len(parts) == 4 and parts[1]:
        return parts[1]
    return (record.get("config") or {}).get("method")


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by model, data set, method (:data:`METHOD_ORDER`), variant (reference first), seed, fold."""
    if frame.empty:
        return frame.reset_index(drop=True)
    mrank = {m: i for i, m in enumerate(METHOD_ORDER)}
    vrank = {"reference": 0, "corrected": 1}
    tmp = frame.assign(_m=frame["method"].map(lambda m: mrank.get(m, len(mrank))),
                       _v=frame["variant"].map(lambda v: vrank.get(v, 2)))
    keys = ["model", "dataset", "_m", "method", "_v", "variant"] + [c for c in ("seed", "fold") if c in frame]
    return tmp.sort_values(keys, kind="stable").drop(columns=["_m", "_v"]).reset_index(drop=True)


def runs_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per run: group keys, seed, fold, status, final/best test accuracy (percent), message."""
    rows = []
    for r in records:
        cfg = r.get("config") or {}
        final = r.get("final") or {}
        acc = final.get("final_test_acc")
        best = final.get("best_test_acc")
        rows.append({
            "name": r.get("name"), "profile": cfg.get("profile"), "model": cfg.get("model"),
            "dataset": cfg.get("dataset"), "method": run_method(r), "variant": cfg.get("variant") or "reference",
            "seed": cfg.get("seed"), "fold": cfg.get("fold"), "status": r.get("status"),
            "epochs_run": final.get("epochs_run", len(r.get("epochs") or [])),
            "test_acc_pct": 100.0 * acc if isinstance(acc, (int, float)) else np.nan,
            "best_epoch_test_acc_pct": 100.0 * best if isinstance(best, (int, float)) else np.nan,
            "wall_time_s": r.get("wall_time_s"), "message": r.get("message") or "",
        })
    cols = ["name", "profile", "model", "dataset", "method", "variant", "seed", "fold", "status", "epochs_run",
            "test_acc_pct", "best_epoch_test_acc_pct", "wall_time_s", "message"]
    return _order(pd.DataFrame(rows, columns=cols))


def _status_note(counts: dict) -> str:
    parts = [f"{s} ({n})" if n > 1 else s for s, n in counts.items() if n]
    return ", ".join(parts)


def accuracy_table(records: Iterable[dict]) -> pd.DataFrame:
    """Test accuracy (percent) per model x data set x method x variant.

    Columns: ``model, dataset, method, variant, runs`` (records in the group),
    ``completed, diverged, failed, other`` (status counts; ``other`` = interrupted or
    still running), ``acc_mean_pct, acc_std_pct`` (over completed runs, ``ddof=1``),
    ``acc_best_pct`` (the max over completed runs: the official script's "best model
    test accuracy" over folds), ``accuracy`` (a display string: ``"85.00 ± 5.00"``,
    with ``" (1 failed)"``-style notes for runs that did not complete, or only the
    statuses when none completed).
    """
    runs = runs_frame(records)
    out_cols = GROUP + ["runs", "completed", "diverged", "failed", "other", "acc_mean_pct", "acc_std_pct",
                        "acc_best_pct", "accuracy"]
    rows = []
    for key, g in runs.groupby(GROUP, sort=False, dropna=False):
        counts = {s: int((g["status"] == s).sum()) for s in ("completed", "diverged", "failed")}
        other = int((~g["status"].isin(["completed", "diverged", "failed"])).sum())
        done = g.loc[g["status"] == "completed", "test_acc_pct"].dropna()
        mean = float(done.mean()) if len(done) else np.nan
        std = float(done.std(ddof=1)) if len(done) > 1 else np.nan
        best = float(done.max()) if len(done) else np.nan
        not_done = {"diverged": counts["diverged"], "failed": counts["failed"], "incomplete": other}
        if len(done):
            text = f"{mean:.2f} ± {std:.2f}" if len(done) > 1 else f"{mean:.2f}"
            note = ", ".join(f"{n} {s}" for s, n in not_done.items() if n)
            if note:
                text += f" ({note})"
        else:
            text = _status_note(not_done) or "no run"
        rows.append(dict(zip(GROUP, key), runs=len(g), completed=counts["completed"], diverged=counts["diverged"],
                         failed=counts["failed"], other=other, acc_mean_pct=mean, acc_std_pct=std,
                         acc_best_pct=best, accuracy=text))
    return _order(pd.DataFrame(rows, columns=out_cols))


# ----------------------------------------------------------------------------- cost-model figures
_FIGURE_CACHE: dict = {}


def _fingerprint(record: dict, variant: str) -> str:
    return json.dumps([variant, record.get("name"), record.get("config"), record.get("status"),
                       record.get("started"), record.get("finished"), record.get("wall_time_s"),
                       len(record.get("epochs") or [])], sort_keys=True, default=str)


def _run_figures(record: dict, variant: str) -> dict:
    from .costmodel import run_figures

    key = _fingerprint(record, variant)
    if key not in _FIGURE_CACHE:
        _FIGURE_CACHE[key] = run_figures(record, variant)
    return dict(_FIGURE_CACHE[key])


def figures_frame(records: Iterable[dict], variant: str = "reference") -> pd.DataFrame:
    """:func:`adapt.costmodel.run_figures` of every **completed** run, one row each, with the run's keys.

    Non-completed runs are left out (their figures would describe a partial run).  A
    run whose figures cannot be computed keeps a row with NaN figures and the reason
    in ``error``.  Results are cached per record (by name, config, status and times).
    """
    rows = []
    for r in records:
        if r.get("status") != "completed":
            continue
        cfg = r.get("config") or {}
        row = {"name": r.get("name"), "model": cfg.get("model"), "dataset": cfg.get("dataset"),
               "method": run_method(r), "variant": cfg.get("variant") or "reference", "seed": cfg.get("seed"),
               "fold": cfg.get("fold"), "cost_model": variant, "error": ""}
        try:
            figs = _run_figures(r, variant)
        except Exception as exc:  # a record the cost model cannot price: keep it visible
            figs = {}
            row["error"] = f"{type(exc).__name__}: {exc}"
        for k in SPEEDUP_COLUMNS + ("iso_reached",):
            row[k] = figs.get(k, np.nan)
        rows.append(row)
    cols = ["name", "model", "dataset", "method", "variant", "seed", "fold", "cost_model"] + \
        list(SPEEDUP_COLUMNS) + ["iso_reached", "error"]
    return _order(pd.DataFrame(rows, columns=cols))


def _mean(series) -> float:
    """Mean of the defined values: NaN (undefined, e.g. an iso target never reached) is skipped,
    +inf (the released iso rule when the target is reached at the first epoch) propagates."""
    v = pd.to_numeric(pd.Series(series), errors="coerce").to_numpy(float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


def speedup_table(records: Sequence[dict], variant: str = "reference",
                  figures: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Mean cost-model figures per model x data set x method x variant (completed runs).

    ``variant`` is the cost model's (``reference``: the released formulas;
    ``corrected``: this package's; see :mod:`adapt.costmodel`).  Columns: the group
    keys, ``cost_model``, ``runs`` (all records of the group), ``priced`` (completed
    runs with figures), then the means of :data:`SPEEDUP_COLUMNS` and ``iso_reached``
    (the fraction of priced runs that reached the iso-accuracy target).  Means skip
    NaN (an iso speedup is undefined when the target is never reached) and keep
    +inf (the released iso rule divides by zero when the target is reached at the
    first epoch), so a group with such a run has mean +inf.  ``figures`` reuses a :func:`figures_frame` of the same variant.
    """
    records = list(records)
    runs = runs_frame(records)
    figs = figures if figures is not None else figures_frame(records, variant)
    rows = []
    for key, g in runs.groupby(GROUP, sort=False, dropna=False):
        sel = figs
        for k, v in zip(GROUP, key):
            sel = sel[sel[k] == v]
        priced = sel[sel["error"] == ""] if len(sel) else sel
        row = dict(zip(GROUP, key), cost_model=variant, runs=len(g), priced=len(priced))
        for c in SPEEDUP_COLUMNS:
            row[c] = _mean(priced[c]) if len(priced) else np.nan
        row["iso_reached"] = float(priced["iso_reached"].astype(float).mean()) if len(priced) else np.nan
        rows.append(row)
    cols = GROUP + ["cost_model", "runs", "priced"] + list(SPEEDUP_COLUMNS) + ["iso_reached"]
    return _order(pd.DataFrame(rows, columns=cols))


# ----------------------------------------------------------------------------- headline
def adapt_vs_float32(records: Sequence[dict], variant: str = "reference", adapt_variant: str = "reference",
                     baseline: str = "float32", figures: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """AdaPT against its float32 baseline, per model x data set.

    Columns: ``model, dataset, adapt_runs, baseline_runs`` (completed), ``adapt_acc_pct,
    baseline_acc_pct`` (means), ``acc_diff_pp`` (AdaPT mean - baseline mean),
    ``acc_diff_best_pp`` (AdaPT best run - baseline best run), and the AdaPT means of
    ``train_speedup, train_speedup_iso, inference_speedup, model_size`` under the
    ``variant`` cost model.  ``adapt_variant`` picks the heuristic variant;
    ``baseline`` the baseline method (``float32``: AdaPT's own; ``float32-muppet``).
    """
    records = list(records)
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
                   baseline: str = "float32", figures: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """This run's averages over model x data set beside the paper's headline claims.

    One row per metric of :data:`HEADLINE_METRICS`; columns ``metric`` (key),
    ``label``, ``unit``, ``this_run`` (the mean over the model x data set pairs of
    :func:`adapt_vs_float32` where the value is defined, +inf propagating as in
    :func:`speedup_table`), ``pairs`` (how many pairs entered it), ``paper_v4``, ``delta_v4`` (this run - paper), ``paper_sdm``, ``delta_sdm``.
    A metric a version does not claim has NaN there.  The accuracy difference is
    compared with the papers' accuracy increase in percentage points (see the notes
    in :data:`PAPER_CLAIMS`); the best-run difference with the same claim, as the
    official script reports the best fold.
    """
    pairs = adapt_vs_float32(records, variant, adapt_variant, baseline, figures)
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


# ----------------------------------------------------------------------------- markdown
def format_value(v, floatfmt: str = ".2f", na_rep: str = "n/a") -> str:
    """One table cell: floats with ``floatfmt``, NaN/None as ``na_rep``, +-inf as ``inf``/``-inf``."""
    if v is None:
        return na_rep
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return na_rep
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return format(float(v), floatfmt)
    try:
        if pd.isna(v):
            return na_rep
    except (TypeError, ValueError):
        pass
    return str(v)


def to_markdown(frame: pd.DataFrame, floatfmt=".2f", index: bool = False,
                na_rep: str = "n/a") -> str:
    """``frame`` as a GitHub pipe table (no ``tabulate`` needed).

    ``floatfmt`` is a format spec (``".2f"``) for every float column or a dict
    ``{column: spec}`` (columns not named use ``".2f"``).  Numeric columns are
    right-aligned, others left-aligned; ``|`` in a cell is escaped; NaN shows as
    ``na_rep``.  ``index=True`` adds the index as the first column.
    """
    df = frame.reset_index() if index else frame
    cols = [str(c) for c in df.columns]

    def fmt_for(col):
        if isinstance(floatfmt, dict):
            return floatfmt.get(col, ".2f")
        return floatfmt

    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    body = []
    for row in df.itertuples(index=False, name=None):
        body.append([format_value(v, fmt_for(str(c)), na_rep).replace("|", "\\|").replace("\n", " ")
                     for c, v in zip(df.columns, row)])
    header = [c.replace("|", "\\|") for c in cols]
    widths = [max([len(h), 3] + [len(r[i]) for r in body]) for i, h in enumerate(header)]

    def line(cells):
        return "| " + " | ".join(
            (c.rjust(w) if num else c.ljust(w)) for c, w, num in zip(cells, widths, numeric)) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if num else ("-" * w) for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line(header), sep] + [line(r) for r in body])


# ----------------------------------------------------------------------------- README
def readme_numbers(records: Sequence[dict], variants: Sequence[str] = ("reference", "corrected")) -> dict:
    """The numbers the README quotes, flat ``{key: float}`` (a test checks the README against them).

    Keys:

    * ``runs``, ``runs.<status>`` -- counts of records;
    * ``accuracy.<model>.<dataset>.<method>.<variant>.mean_pct`` / ``.std_pct`` /
      ``.best_pct`` -- :func:`accuracy_table`;
    * ``headline.<cost_model>.<metric>`` -- :func:`headline_table`'s ``this_run`` per
      cost-model variant (metrics: ``train_speedup, train_speedup_iso, acc_diff_pp,
      acc_diff_best_pp, inference_speedup, model_size``);
    * ``speedup.<cost_model>.<model>.<dataset>.<method>.<variant>.<figure>`` -- the
      :func:`speedup_table` means of ``train_speedup, train_speedup_iso,
      inference_speedup, model_size``.

    Values are unrounded floats (NaN where undefined); format them with
    :func:`format_value` (``".2f"``) as the README does.
    """
    records = list(records)
    out = {"runs": float(len(records))}
    for s in STATUSES:
        out[f"runs.{s}"] = float(sum(1 for r in records if r.get("status") == s))
    acc = accuracy_table(records)
    for r in acc.itertuples(index=False):
        base = f"accuracy.{r.model}.{r.dataset}.{r.method}.{r.variant}"
        out[f"{base}.mean_pct"] = float(r.acc_mean_pct)
        out[f"{base}.std_pct"] = float(r.acc_std_pct)
        out[f"{base}.best_pct"] = float(r.acc_best_pct)
    for v in variants:
        figs = figures_frame(records, v)
        head = headline_table(records, v, figures=figs)
        for r in head.itertuples(index=False):
            out[f"headline.{v}.{r.metric}"] = float(r.this_run)
        sp = speedup_table(records, v, figures=figs)
        for r in sp.itertuples(index=False):
            base = f"speedup.{v}.{r.model}.{r.dataset}.{r.method}.{r.variant}"
            for c in ("train_speedup", "train_speedup_iso", "inference_speedup", "model_size"):
                out[f"{base}.{c}"] = float(getattr(r, c))
    return out


# ----------------------------------------------------------------------------- README block
README_BEGIN = "<!-- results:begin (generated by tools/update_readme.py from results/smoke; do not edit) -->"
README_END = "<!-- results:end -->"


def readme_block(records: Sequence[dict], profile: str = "smoke") -> str:
    """The README's results section body: accuracy and headline tables computed from ``records``.

    ``tools/update_readme.py`` writes it between :data:`README_BEGIN` and
    :data:`README_END`; tests/test_readme.py recomputes it from the committed records and
    checks that the README says exactly this.
    """
    records = list(records)
    acc = accuracy_table(records)
    acc_view = acc[["model", "dataset", "method", "variant", "runs", "accuracy", "acc_best_pct"]].rename(
        columns={"accuracy": "test accuracy % (mean ± std)", "acc_best_pct": "best run %"})
    figs = {v: figures_frame(records, v) for v in ("reference", "corrected")}
    head = headline_table(records, "reference", figures=figs["reference"])
    head_c = headline_table(records, "corrected", figures=figs["corrected"])
    view = pd.DataFrame({
        "metric": head["label"],
        "this run (reference cost model)": head["this_run"],
        "this run (corrected cost model)": head_c["this_run"].values,
        "paper v4": head["paper_v4"],
        "paper SDM": head["paper_sdm"],
    })
    counts = ", ".join(f"{int((pd.Series([r.get('status') for r in records]) == s).sum())} {s}"
                       for s in STATUSES if any(r.get("status") == s for r in records))
    return "\n".join([
        f"{len(records)} runs of the `{profile}` profile ({counts}).",
        "",
        "**Test accuracy** (final epoch; mean ± std over seeds/folds, ddof 1; best run = what the official "
        "script reports):",
        "",
        to_markdown(acc_view, floatfmt=".2f"),
        "",
        "**Headline** (AdaPT reference heuristic vs its float32 baseline, averaged over model × data set):",
        "",
        to_markdown(view, floatfmt=".2f"),
    ])
