"""Text from the tables: generated prose, Markdown tables, and the README's numbers and block.

* :func:`headline_note`, :func:`iso_note`, :func:`epochs_note` -- sentences generated
  from the frames, for the notebooks' and the README's prose;
* :func:`to_markdown` -- a pipe table without the ``tabulate`` package
  (:func:`format_value`: one cell);
* :func:`readme_numbers` / :func:`readme_block` -- the numbers and the block the README
  quotes (between :data:`README_BEGIN` and :data:`README_END`).

Sentences for the notebooks' prose are generated from the frames they describe
(:func:`headline_note`, :func:`iso_note`, :func:`epochs_note`), so a notebook never
states a number its tables do not show.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from adapt.analysis.tables.frames import (BASELINES, METHOD_ORDER, STATUSES, accuracy_table, figures_frame, plural,
                                          run_method, runs_frame, select_records, speedup_table, status_counts)
from adapt.analysis.tables.headline import PAPER_CLAIMS, headline_table
from adapt.analysis.tables.profile import failures_table
from adapt.experiments.grid import split_records
from adapt.heuristic import VARIANT_OPTIONS
from adapt.records import COMPLETED, ReadOnlyError, atomic_write_text, check_writable

__all__ = [
    "arm_label", "headline_note", "iso_note", "epochs_note", "reading_note", "TEST_SET_SIZES", "format_value", "to_markdown", "readme_numbers",
    "README_BEGIN", "README_END", "readme_block",
]


# ----------------------------------------------------------------------------- prose from the frames
def arm_label(method, variant=None) -> str:
    """``"adapt (reference)"`` / ``"adapt (corrected)"`` for AdaPT (the variant is AdaPT's heuristic), else the method."""
    if method == "adapt" and variant:
        return f"{method} ({variant})"
    return str(method)


def _fmt(v, unit: str = "", signed: bool = False) -> str:
    text = format_value(v)
    if signed and text not in ("n/a", "inf", "-inf") and not text.startswith("-"):
        text = "+" + text
    return text + (unit if text not in ("n/a",) else "")


def headline_note(head: pd.DataFrame, corrected: Optional[pd.DataFrame] = None) -> str:
    """One paragraph (Markdown) stating :func:`headline_table`'s values beside the paper's, generated from it.

    ``corrected``: the same table under the corrected cost model, stated after it.
    Values are formatted as the tables print them (two decimals; ``n/a`` where undefined).
    """
    h = head.set_index("metric")
    pairs = int(pd.to_numeric(h["pairs"], errors="coerce").max()) if len(h) else 0
    if pairs == 0:
        return ("**Headline.** No model × data set pair has a completed AdaPT run and a completed float32 "
                "baseline, so every headline value is n/a.")

    def claims(metric):
        out = []
        for tag, name, version in (("paper_v4", "v4", "v4"), ("paper_sdm", "SDM", "sdm")):
            v = h.loc[metric, tag]
            if isinstance(v, (int, float, np.floating)) and np.isfinite(v):
                bound = PAPER_CLAIMS[version]["metrics"].get(metric, {}).get("bound")
                bound = {"<=": "≤ ", ">=": "≥ "}.get(bound, "")
                out.append(f"{name} {bound}{_fmt(v, signed=metric.startswith('acc'))}")
        return f" (paper: {', '.join(out)})" if out else " (not claimed)"

    def values(frame):
        f = frame.set_index("metric")
        return {m: f.loc[m, "this_run"] for m in f.index}

    ours = values(head)
    su, acc = ours.get("train_speedup"), ours.get("acc_diff_pp")
    verdict = []
    if isinstance(su, float) and np.isfinite(su):
        verdict.append(f"{'cheaper' if su > 1 else 'not cheaper'} to train than float32 by the cost model")
    if isinstance(acc, float) and np.isfinite(acc):
        verdict.append(f"{_fmt(abs(acc))} pp {'more' if acc > 0 else 'less'} accurate on average")
    iso = ours.get("train_speedup_iso")
    iso_text = _fmt(iso) if isinstance(iso, float) and np.isfinite(iso) else "n/a, target not reached"
    parts = [
        f"training speedup {_fmt(ours.get('train_speedup'))}{claims('train_speedup')}",
        f"iso-accuracy training speedup {iso_text}{claims('train_speedup_iso')}",
        f"accuracy difference {_fmt(ours.get('acc_diff_pp'), ' pp', True)} mean over runs and "
        f"{_fmt(ours.get('acc_diff_best_pp'), ' pp', True)} best run{claims('acc_diff_pp')}",
        f"inference speedup {_fmt(ours.get('inference_speedup'))}{claims('inference_speedup')}",
        f"model size {_fmt(ours.get('model_size'))} of float32{claims('model_size')}",
    ]
    text = (f"**Headline** (AdaPT, reference heuristic, against its float32 baseline; mean over "
            f"{plural(pairs, 'model × data set pair')}, reference cost model): " + "; ".join(parts) + ".")
    if verdict:
        text += " AdaPT is " + " and ".join(verdict) + " here."
    wl = ours.get("mean_word_length")
    if isinstance(wl, float) and np.isfinite(wl):
        text += (f" Its weights average {_fmt(wl)} bits over training; under the released formula a run at one "
                 f"word length WL everywhere (no sparsity, no switching overhead) has training speedup "
                 f"64 / (WL + 32) = {_fmt(64 / (wl + 32))} at that WL, whatever its accuracy: the training speedup "
                 f"follows the word length (and can never reach 2).")
    if corrected is not None:
        c = values(corrected)
        text += (f" Under the corrected cost model: training speedup {_fmt(c.get('train_speedup'))}, iso-accuracy "
                 f"{_fmt(c.get('train_speedup_iso'))}, inference speedup {_fmt(c.get('inference_speedup'))}, "
                 f"model size {_fmt(c.get('model_size'))}.")
    return text


def iso_note(figures: pd.DataFrame, corrected: Optional[pd.DataFrame] = None) -> str:
    """Which runs reached the iso-accuracy target and what that makes of the iso speedups (Markdown).

    ``figures``: a :func:`figures_frame` (the reference cost model's); ``corrected``: the
    corrected one's, for its count of undefined (n/a) values.
    """
    figs = figures[figures["error"] == ""] if len(figures) else figures
    if not len(figs):
        return "**Iso-accuracy.** No completed run was priced, so no iso-accuracy speedup is defined."
    targets = sorted({float(t) for t in pd.to_numeric(figs["iso_target"], errors="coerce").dropna()})
    metrics = sorted({str(m) for m in figs["iso_metric"].dropna()})
    target = ", ".join(f"{t:g}" for t in targets) or "none set"
    metric = " / ".join(f"`{m}`" for m in metrics) or "the accuracy"
    arms = []
    for (method, variant), g in figs.groupby(["method", "variant"], sort=False):
        arms.append((METHOD_ORDER.index(method) if method in METHOD_ORDER else 99, variant != "reference",
                     f"{arm_label(method, variant)} {int(g['iso_reached'].astype(bool).sum())} of {len(g)}"))
    counts = ", ".join(a[2] for a in sorted(arms))
    text = (f"**Iso-accuracy.** Target: {metric} ≥ {target} (the records' `target_accuracy`). Runs that reach it: "
            f"{counts}.")
    quantized = figs[~figs["method"].isin(BASELINES)]
    never = quantized[~quantized["iso_reached"].astype(bool)]
    first = quantized[quantized["iso_reached"].astype(bool) & (pd.to_numeric(quantized["iso_index"],
                                                                              errors="coerce") == 0)]
    if len(never):
        text += (f" The {plural(len(never), 'quantized run')} that never reach it have no iso-accuracy speedup "
                 f"(n/a, target not reached) under either cost model: the released formula would divide by an "
                 f"epoch fraction of 1 and report the plain training speedup, which is not an iso-accuracy figure.")
    if len(first):
        text += (f" {plural(len(first), 'quantized run')} reach it at the first logged epoch, where the released "
                 f"formula divides by zero (inf).")
    if figs["method"].isin(BASELINES).any():
        text += " The float32 baselines' iso-accuracy speedup is 1: a baseline is not faster than itself."
    return text


def epochs_note(records: Iterable[dict], profile: Optional[str] = None) -> str:
    """How many epochs each method's completed runs trained (Markdown), from the records."""
    runs = runs_frame(records, profile=profile)
    done = runs[runs["status"] == COMPLETED]
    if not len(done):
        return "**Epochs.** No run completed."
    parts = []
    for method in [m for m in METHOD_ORDER if m in set(done["method"])] + \
            sorted(set(done["method"]) - set(METHOD_ORDER)):
        e = sorted(int(v) for v in pd.to_numeric(done.loc[done["method"] == method, "epochs_run"],
                                                 errors="coerce").dropna())
        if not e:
            continue
        text = f"{method} {e[0]}" if e[0] == e[-1] else f"{method} {e[0]}–{e[-1]}"
        if method == "muppet":
            text += " (its own stop rule: the fixed-point phases, then float32)"
        parts.append(text)
    return "**Epochs trained** (completed runs): " + ", ".join(parts) + "."


#: Test-set sizes of the data sets (the test split every record's accuracy is measured on).
TEST_SET_SIZES = {"digits": 360, "mnist5k": 1000, "mnist": 10_000, "fashion_mnist": 10_000, "emnist": 18_800,
                  "cifar10": 10_000, "cifar100": 10_000}


def reading_note(records: Iterable[dict], profile: Optional[str] = None) -> str:
    """How to read a profile's numbers (Markdown), generated from its records: how far training got (whether the
    last epochs still raised the test accuracy), what AdaPT's optimizer does differently from its float32
    baseline's (gradient normalization, learning rate, schedule, L1, epochs), and what one seed's accuracy is
    worth (the binomial standard error on the test set; how many seeds each method has)."""
    records = [r for r in select_records(list(records), profile) if r.get("status") == COMPLETED]
    if not records:
        return "**How to read these numbers.** No run completed."
    parts = []
    climbing = []
    for r in records:
        acc = [e.get("test_acc") for e in r.get("epochs") or [] if e.get("test_acc") is not None]
        if len(acc) >= 4 and acc[-1] - acc[-4] > 0.01:
            climbing.append(r)
    parts.append(f"{len(climbing)} of the {plural(len(records), 'completed run')} still gained more than 1 pp of "
                 f"test accuracy over their last three epochs, so {'those runs had not converged' if climbing else 'the runs had levelled off'}"
                 + (" and their final accuracies compare methods at an unfinished point" if climbing else "") + ".")
    by_method = {}
    for r in sorted(records, key=lambda r: (r["config"].get("variant") or "reference") != "reference"):
        by_method.setdefault(run_method(r), r["config"])  # the reference variant's config where there is one
    a, f = by_method.get("adapt"), by_method.get("float32")
    if a and f:
        norm = (a.get("policy") or {}).get("normalize_gradients")
        norm = VARIANT_OPTIONS[a.get("variant") or "reference"]["normalize_gradients"] if norm is None else norm
        parts.append(
            f"AdaPT trains with another optimizer than its float32 baseline: "
            f"{'every gradient divided by its norm (the learning rate becomes a step length per tensor), ' if norm else ''}"
            f"lr {a['lr']:g} vs {f['lr']:g}, {a['scheduler']} vs {f['scheduler']} schedule, L1 {a['l1_decay']:g} vs "
            f"{f['l1_decay']:g}, {a['epochs']} vs {f['epochs']} epochs; an accuracy difference mixes that with the "
            f"quantization (notebook 40 separates them on mnist5k).")
    sizes = {TEST_SET_SIZES.get(r["config"].get("dataset")) for r in records} - {None}
    seeds = runs_frame(records).groupby("method")["seed"].nunique()
    if sizes:
        n = min(sizes)
        se = 100 * math.sqrt(0.9 * 0.1 / n)
        parts.append(f"One run's test accuracy near 90 % on {n:,} test images has a binomial standard error of "
                     f"about {se:.1f} pp (near 97 %: {100 * math.sqrt(0.97 * 0.03 / n):.1f} pp); seeds per method here: "
                     + ", ".join(f"{m} {int(k)}" for m, k in seeds.items()) + ". A difference between two single runs "
                     f"smaller than about {2 * math.sqrt(2) * se:.0f} pp is within that noise.")
    return "**How to read these numbers.** " + " ".join(parts)


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
def save_tables(frames: dict, folder) -> list:
    """Write each frame as ``<name>.csv`` and ``<name>.md`` (:func:`to_markdown`) into ``folder``, atomically.

    Returns the paths written.  A folder this process cannot write (someone else's results,
    a read-only copy) is not an error: the tables have been computed and shown, only their copy
    on disk is missing, so one line says which folder is read-only and nothing is written
    (an analysis notebook then runs to its end).
    """
    folder = Path(folder)
    try:
        check_writable(folder, "save the tables there (they are shown above; point results_root at a folder "
                               "you can write to keep a copy)")
    except ReadOnlyError as exc:
        print(f"tables not saved: {exc}")
        return []
    written = []
    for name, frame in frames.items():
        for path, text in ((folder / f"{name}.csv", frame.to_csv(index=False)),
                           (folder / f"{name}.md", to_markdown(frame) + "\n")):
            atomic_write_text(path, text)
            written.append(path)
    return written


def readme_numbers(records: Sequence[dict], variants: Sequence[str] = ("reference", "corrected"),
                   profile: Optional[str] = None) -> dict:
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
    :func:`format_value` (``".2f"``) as the README does.  ``profile``: only that
    profile's grid records (the README passes its profile).
    """
    records = select_records(records, profile)
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

    Only the grid records of ``profile`` enter the block, and the others (custom runs, off-grid
    seeds) are not named in it: the block describes the committed grid, and a user's own runs
    in ``results/<profile>/`` must change neither the README (``make figures`` would publish
    them) nor what tests/test_readme.py checks.  The analysis notebooks name them
    (:meth:`adapt.analysis.tables.ProfileRecords.summary`).  Without a completed run the block
    says so and lists the failures with their messages.  ``tools/update_readme.py`` writes it
    between :data:`README_BEGIN` and :data:`README_END`; tests/test_readme.py recomputes
    it from the committed records and checks that the README says exactly this.
    """
    records = split_records(list(records), profile)[0]
    lines = [f"{len(records)} runs of the `{profile}` profile ({status_counts(records) or 'none'})."]
    completed = [r for r in records if r.get("status") == COMPLETED]
    if not completed:
        lines += ["", "**No completed runs.**" if records else "**No runs.**"]
        fails = failures_table(records)
        if len(fails):
            lines += ["", to_markdown(fails[["run_id", "status", "message"]])]
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
    lines += [
        "",
        "**Test accuracy** (final epoch; mean ± std over seeds/folds, ddof 1; best run = what the official "
        "script reports):",
        "",
        to_markdown(acc_view, floatfmt=".2f"),
        "",
        "**Headline** (AdaPT reference heuristic vs its float32 baseline, averaged over model × data set):",
        "",
        to_markdown(view, floatfmt=".2f"),
    ]
    if completed:
        lines += ["", epochs_note(records), "", iso_note(figs["reference"], figs["corrected"])]
    return "\n".join(lines)
