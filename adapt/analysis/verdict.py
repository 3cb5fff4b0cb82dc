"""The replication verdict: seed statistics, the claims table, and the mechanism behind the word lengths.

Notebook 40 (``notebooks/40-replication.ipynb``) is a narrative over these functions; each reads run
records (:mod:`adapt.records`) and returns a DataFrame, so every number the notebook prints comes from
the records beside it.

Statistics.  Seeds are independent replicates; a mean is reported with its two-sided 95 % Student-t
interval (:func:`t_interval`), a difference of two methods' means with Welch's interval
(:func:`welch_interval`).  One seed has no interval (NaN), and the tables say how many seeds entered.

The claims (:func:`claims_table`).  Each claim of the v4 and SDM abstracts
(:data:`adapt.analysis.tables.headline.PAPER_CLAIMS`) is set against the interval measured here, with
a verdict by one rule on the 95 % interval of the measurement: *holds* when the whole interval lies on the
favourable side of the claimed value (above it for a speedup or an accuracy gain, below it for a model
size), *does not hold* when the whole interval lies on the other side, *inconclusive* when the interval
contains the claimed value (the seeds cannot tell), *not testable here* when the measurement does not
exist on this data (the iso-accuracy speedup when no run reaches the target; CIFAR, which needs the
``paper`` profile on a GPU).  One seed has no interval and gets no verdict.  A verdict on mnist5k or digits is a verdict on that data at that scale,
not on the paper's CIFAR benchmarks.

The mechanism (:func:`switch_events`, :func:`switch_balance`, :func:`settled_frame`,
:func:`settled_fractional_length`, :func:`released_speedup`).
The released PushUp adds ``s`` fractional bits with ``t = ln(GD) - 1`` (docs/method.md §1.4.8): nothing
is added beyond the minimum step unless ``t > 0``, i.e. ``GD > e``; and ``s2 = ceil(32 t^2) - FL`` stops
pushing once ``FL >= ceil(32 t^2)``.  The gradient diversity of ``n`` unit gradients
(``GD = n / ||sum g||``, §1.4.3) is 1 when they all agree and ``sqrt(n)`` when they are mutually
orthogonal; at a switch ``n`` is the lookback ``LB``.  With ``GD = c sqrt(LB)``, PushUp's ``s2`` is 0 above
``FL* = min(ceil(32 (ln(c sqrt(LB)) - 1)^2), 32 - RB)`` (:func:`settled_fractional_length`), the level it pushes
towards, and the word length stays at least ``FL + RB`` (the results buffer).  Under the released cost model a run whose
every layer has word length ``WL`` (no sparsity, no switching overhead) has training speedup
``2 * 32 / (WL + 32)`` (:func:`released_speedup`): 1.31 at WL = 16.9 bits, never above 2.

Where the format actually sits is a balance, per switch, between PushDown (which lowers the format as far as
its information-loss test allows) and PushUp (which adds ``s`` bits whenever ``GD > e``):
:func:`switch_balance` measures both from the switch events, and :func:`settled_frame` where each run ended.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from adapt.analysis.tables.frames import mean_word_length, run_method
from adapt.analysis.tables.headline import PAPER_CLAIMS
from adapt.costmodel import run_figures
from adapt.records import COMPLETED

__all__ = ["CONFIDENCE", "t_interval", "welch_interval", "run_frame", "seed_table", "curve_frame",
           "equal_epoch_table", "cost_table", "difference_table", "claims_table", "switch_events",
           "settled_fractional_length", "released_speedup", "mean_word_length", "switch_balance", "settled_frame", "format_interval", "claims_markdown", "verdict_block", "VERDICT_BEGIN", "VERDICT_END", "arm_of", "CLAIMS", "COST_METRICS",
           "interval_reading", "arm_table", "crosscheck_table", "why_line", "lookback_slope"]

#: The confidence level of every interval.
CONFIDENCE = 0.95


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple:
    """``(mean, low, high, n)``: the mean of the finite ``values`` and its two-sided Student-t interval
    (NaN bounds for fewer than two values; a zero-width interval when all values are equal)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def welch_interval(a: Iterable[float], b: Iterable[float], confidence: float = CONFIDENCE) -> tuple:
    """``(mean(a) - mean(b), low, high)``: Welch's two-sided interval for a difference of means
    (unequal variances, Welch-Satterthwaite degrees of freedom); NaN bounds when a side has < 2 values."""
    a = np.asarray([x for x in a if x is not None and np.isfinite(x)], dtype=float)
    b = np.asarray([x for x in b if x is not None and np.isfinite(x)], dtype=float)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * se)
    return diff, diff - half, diff + half


def arm_of(record: dict) -> str:
    """``"<method> (<variant>)"`` for AdaPT, ``<method>`` otherwise, or the record's ``arm`` when it has one."""
    if record.get("arm"):
        return record["arm"]
    method = run_method(record)
    variant = record["config"].get("variant") or "reference"
    if method == "adapt" or (method == "float32" and variant == "corrected"):
        return f"{method} ({variant})"  # AdaPT's two heuristics; the float32 baseline of the corrected LeNet-5
    return method


def run_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per completed run: ``arm, method, variant, seed, epochs, final_acc_pct, best_acc_pct``."""
    rows = []
    for r in records:
        if r.get("status") != COMPLETED:
            continue
        final = r.get("final") or {}
        rows.append({"arm": arm_of(r), "method": run_method(r), "variant": r["config"].get("variant"),
                     "seed": r["config"].get("seed"), "epochs": final.get("epochs_run"),
                     "final_acc_pct": 100 * final["final_test_acc"] if final.get("final_test_acc") is not None else np.nan,
                     "best_acc_pct": 100 * final["best_test_acc"] if final.get("best_test_acc") is not None else np.nan})
    return pd.DataFrame(rows, columns=["arm", "method", "variant", "seed", "epochs", "final_acc_pct", "best_acc_pct"])


def seed_table(records: Sequence[dict], arms: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Per arm: ``seeds``, ``epochs`` and the mean with its 95 % interval of the final and the best test accuracy."""
    runs = run_frame(records)
    order = list(arms) if arms is not None else list(dict.fromkeys(runs["arm"]))
    rows = []
    for arm in order:
        g = runs[runs["arm"] == arm]
        if g.empty:
            continue
        row = {"arm": arm, "seeds": len(g), "epochs": "/".join(str(int(e)) for e in sorted(set(g["epochs"])))}
        for key in ("final_acc_pct", "best_acc_pct"):
            m, lo, hi, _ = t_interval(g[key])
            row.update({key: m, f"{key}_low": lo, f"{key}_high": hi})
        rows.append(row)
    cols = ["arm", "seeds", "epochs"] + [f"{k}{s}" for k in ("final_acc_pct", "best_acc_pct") for s in ("", "_low", "_high")]
    return pd.DataFrame(rows, columns=cols)


def curve_frame(records: Sequence[dict], metric: str = "test_acc") -> pd.DataFrame:
    """Per arm and epoch (1-based): the mean of ``metric`` (in %) over seeds with its 95 % interval."""
    rows = []
    per = {}
    for r in records:
        if r.get("status") != COMPLETED:
            continue
        for e in r.get("epochs") or []:
            if e.get(metric) is not None:
                per.setdefault((arm_of(r), int(e["epoch"]) + 1), []).append(100 * float(e[metric]))
    for (arm, epoch), values in per.items():
        m, lo, hi, n = t_interval(values)
        rows.append({"arm": arm, "epoch": epoch, "mean": m, "low": lo, "high": hi, "seeds": n})
    return pd.DataFrame(rows, columns=["arm", "epoch", "mean", "low", "high", "seeds"]).sort_values(
        ["arm", "epoch"]).reset_index(drop=True)


def _at_epoch(record: dict, epoch: int) -> float:
    for e in record.get("epochs") or []:
        if int(e["epoch"]) + 1 == epoch and e.get("test_acc") is not None:
            return 100 * float(e["test_acc"])
    return math.nan


def difference_table(records: Sequence[dict], arm: str, baseline: str, epochs: Sequence[int] = ()) -> pd.DataFrame:
    """``arm`` minus ``baseline`` in test accuracy (pp), Welch 95 % interval: at each arm's final epoch (the
    official protocols: their own epoch counts), and at each of ``epochs`` (equal epochs, read from the
    per-epoch records)."""
    done = [r for r in records if r.get("status") == COMPLETED]
    a = [r for r in done if arm_of(r) == arm]
    b = [r for r in done if arm_of(r) == baseline]
    rows = []

    def add(label, va, vb):
        d, lo, hi = welch_interval(va, vb)
        rows.append({"comparison": label, "arm": arm, "baseline": baseline, "arm_seeds": len(va),
                     "baseline_seeds": len(vb), "diff_pp": d, "low": lo, "high": hi})

    ea = sorted({r["final"].get("epochs_run") for r in a})
    eb = sorted({r["final"].get("epochs_run") for r in b})
    add(f"final epoch ({'/'.join(map(str, ea))} vs {'/'.join(map(str, eb))} epochs)",
        [100 * r["final"]["final_test_acc"] for r in a], [100 * r["final"]["final_test_acc"] for r in b])
    for epoch in epochs:
        add(f"epoch {epoch} of both", [_at_epoch(r, epoch) for r in a], [_at_epoch(r, epoch) for r in b])
    return pd.DataFrame(rows, columns=["comparison", "arm", "baseline", "arm_seeds", "baseline_seeds", "diff_pp",
                                       "low", "high"])


def equal_epoch_table(records: Sequence[dict], arms: Sequence[str], epoch: int) -> pd.DataFrame:
    """Test accuracy (%) of each arm at ``epoch`` (1-based), mean and 95 % interval over seeds."""
    rows = []
    for arm in arms:
        vals = [_at_epoch(r, epoch) for r in records if r.get("status") == COMPLETED and arm_of(r) == arm]
        m, lo, hi, n = t_interval(vals)
        rows.append({"arm": arm, "epoch": epoch, "seeds": n, "acc_pct": m, "low": lo, "high": hi})
    return pd.DataFrame(rows, columns=["arm", "epoch", "seeds", "acc_pct", "low", "high"])


def interval_reading(low: float, high: float, zero: float = 0.0) -> str:
    """Where a 95 % interval of a difference lies: ``"below"``, ``"above"`` or ``"contains"`` ``zero``, or
    ``"no interval"`` (NaN bounds: one seed on a side)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    return "below" if high < zero else "above" if low > zero else "contains"


def arm_table(records: Sequence[dict], arms: Sequence[str], baseline: str, versus: Optional[str] = None,
              key=lambda r: r.get("arm")) -> pd.DataFrame:
    """One row per arm of ``arms`` (``key(record)`` names a record's arm; default its ``"arm"`` field, which
    :func:`adapt.experiments.decomposition.load_decomposition` sets): the final test accuracy (%), its
    difference from ``baseline`` and, when given, from ``versus`` (pp, Welch 95 % interval), the mean
    weight word length over the run and the released training speedup, each a mean with its 95 % interval
    over the arm's seeds (columns ``<metric>``, ``<metric>_low``, ``<metric>_high``)."""
    done = [r for r in records if r.get("status") == COMPLETED]
    by_arm = {}
    for r in done:
        by_arm.setdefault(key(r), []).append(r)
    acc = {a: [100 * r["final"]["final_test_acc"] for r in rs] for a, rs in by_arm.items()}
    rows = []
    for arm in arms:
        rs = by_arm.get(arm, [])
        if not rs:
            continue
        row = {"arm": arm, "seeds": len(rs)}

        def put(name, interval):
            row.update({name: interval[0], f"{name}_low": interval[1], f"{name}_high": interval[2]})

        put("test_acc_pct", t_interval(acc[arm]))
        put("vs_baseline_pp", welch_interval(acc[arm], acc.get(baseline, [])))
        if versus is not None:
            put("vs_versus_pp", welch_interval(acc[arm], acc.get(versus, [])))
        put("mean_weight_wl", t_interval([mean_word_length(r) for r in rs]))
        put("train_speedup", t_interval([run_figures(r, "reference")["train_speedup"] for r in rs]))
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["arm", "seeds"])


COST_METRICS = ("train_speedup", "train_speedup_iso", "inference_speedup", "model_size", "final_sparsity")


def cost_table(records: Sequence[dict], variant: str = "reference", arms: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Per arm: the cost model's figures (``variant``), mean and 95 % interval over seeds, and how many runs
    reached the iso-accuracy target (``iso_reached``; the iso speedup is NaN for a run that did not)."""
    figs = {}
    for r in records:
        if r.get("status") != COMPLETED:
            continue
        f = run_figures(r, variant)
        if not f.get("iso_reached"):
            f["train_speedup_iso"] = math.nan  # no target reached: no iso-accuracy speedup (not the plain one)
        figs.setdefault(arm_of(r), []).append(f)
    order = list(arms) if arms is not None else list(figs)
    rows = []
    for arm in order:
        fs = figs.get(arm, [])
        if not fs:
            continue
        row = {"arm": arm, "cost_model": variant, "seeds": len(fs), "iso_reached": sum(bool(f["iso_reached"]) for f in fs)}
        for key in COST_METRICS:
            m, lo, hi, _ = t_interval([f.get(key, math.nan) for f in fs])
            row.update({key: m, f"{key}_low": lo, f"{key}_high": hi})
        rows.append(row)
    cols = ["arm", "cost_model", "seeds", "iso_reached"] + [f"{k}{s}" for k in COST_METRICS for s in ("", "_low", "_high")]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- the claims
#: The claims the table tests, in order: (metric key of PAPER_CLAIMS, label, which side is favourable).
CLAIMS = (("acc_diff_pp", "accuracy vs float32 (pp)", "higher"),
          ("train_speedup", "training speedup vs float32 (×)", "higher"),
          ("train_speedup_iso", "iso-accuracy training speedup (×)", "higher"),
          ("inference_speedup", "inference speedup (×)", "higher"),
          ("model_size", "model size (fraction of float32)", "lower"),
          ("final_sparsity", "weight sparsity (fraction of zeros)", "higher"))


def _verdict(claim: Optional[float], low: float, high: float, favourable: str, mean: float) -> str:
    """The verdict rule of the module docstring, on the 95 % interval ``[low, high]`` (the mean alone for one seed)."""
    if not np.isfinite(mean):
        return "not testable here"
    if claim is None or not np.isfinite(claim):
        return "no number claimed"
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval (one seed)"
    lo, hi = low, high
    if lo <= claim <= hi:
        return "inconclusive"
    better = lo > claim if favourable == "higher" else hi < claim
    return "holds" if better else "does not hold"


def claims_table(data: dict, arm: str = "adapt", baseline: str = "float32", cost_model: str = "reference") -> pd.DataFrame:
    """Each claim of v4 and SDM beside what the records of each data set give, with a verdict per data set.

    ``data``: ``{"mnist5k": records, "digits": records, ...}``.  Per claim and data set: the AdaPT mean
    (``arm``) with its 95 % interval (the accuracy as a Welch difference to ``baseline``; the costs under
    the ``cost_model``, the released one by default, as the paper's), the seeds, and the verdict against
    the SDM value where SDM claims one, else v4's (see the module docstring for the rule)."""
    rows = []
    for key, label, favourable in CLAIMS:
        claim_v4 = PAPER_CLAIMS["v4"]["metrics"].get(key, {}).get("value")
        claim_sdm = PAPER_CLAIMS["sdm"]["metrics"].get(key, {}).get("value")
        claim = claim_sdm if claim_sdm is not None else claim_v4
        row = {"claim": label, "metric": key, "paper_v4": claim_v4, "paper_sdm": claim_sdm}
        for name, records in data.items():
            if key == "acc_diff_pp":
                d = difference_table(records, arm, baseline).iloc[0]
                mean, lo, hi, n = d["diff_pp"], d["low"], d["high"], int(d["arm_seeds"])
            else:
                c = cost_table([r for r in records if arm_of(r) == arm], cost_model)
                if c.empty:
                    mean = lo = hi = math.nan
                    n = 0
                else:
                    c = c.iloc[0]
                    mean, lo, hi, n = c[key], c[f"{key}_low"], c[f"{key}_high"], int(c["seeds"])
            row.update({f"{name}": mean, f"{name}_low": lo, f"{name}_high": hi, f"{name}_seeds": n,
                        f"{name}_verdict": _verdict(claim, lo, hi, favourable, mean)})
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the mechanism
def switch_events(records: Sequence[dict]) -> pd.DataFrame:
    """Every AdaPT switch event of the records: ``arm, seed, step, tensor, lookback, gd, gd_over_sqrt_lb``,
    the formats ``old``/``pushed_down``/``new`` as WL and FL columns, and the PushUp step in FL
    (``push_up_fl`` = new FL - pushed-down FL)."""
    rows = []
    for r in records:
        if r["config"].get("method") != "adapt":  # MuPPET's "switches" are its precision switches
            continue
        for e in (r.get("traces") or {}).get("switches") or []:
            gd, lb = e.get("gd"), e.get("lookback")
            rows.append({"arm": arm_of(r), "seed": r["config"].get("seed"), "step": e["step"], "epoch": e["epoch"],
                         "tensor": e["tensor"], "lookback": lb, "gd": gd,
                         "gd_over_sqrt_lb": gd / math.sqrt(lb) if gd is not None and lb else math.nan,
                         "old_wl": e["old"][0], "old_fl": e["old"][1], "down_wl": e["pushed_down"][0],
                         "down_fl": e["pushed_down"][1], "new_wl": e["new"][0], "new_fl": e["new"][1],
                         "push_up_fl": e["new"][1] - e["pushed_down"][1], "strategy": e.get("strategy")})
    return pd.DataFrame(rows)


def switch_balance(events: pd.DataFrame) -> pd.DataFrame:
    """Per arm: how many switches, the median ``GD / sqrt(LB)``, the share with ``GD > e`` (where PushUp's
    ``t = ln GD - 1`` is positive), and the mean change of WL and FL per switch made by PushDown
    (``pushed_down - old``) and by PushUp (``new - pushed_down``): the balance that sets the word length."""
    if events.empty:
        return pd.DataFrame(columns=["arm", "switches", "gd_over_sqrt_lb", "share_gd_above_e", "push_down_wl",
                                     "push_down_fl", "push_up_wl", "push_up_fl", "net_wl"])
    e = events.assign(push_down_wl=events["down_wl"] - events["old_wl"],
                      push_down_fl=events["down_fl"] - events["old_fl"],
                      push_up_wl=events["new_wl"] - events["down_wl"], push_up_fl=events["new_fl"] - events["down_fl"],
                      net_wl=events["new_wl"] - events["old_wl"], above_e=events["gd"] > math.e)
    out = e.groupby("arm", sort=False).agg(
        switches=("step", "size"), gd_over_sqrt_lb=("gd_over_sqrt_lb", "median"), share_gd_above_e=("above_e", "mean"),
        push_down_wl=("push_down_wl", "mean"), push_down_fl=("push_down_fl", "mean"), push_up_wl=("push_up_wl", "mean"),
        push_up_fl=("push_up_fl", "mean"), net_wl=("net_wl", "mean"))
    return out.reset_index()


def settled_frame(records: Sequence[dict], last: float = 1 / 3) -> pd.DataFrame:
    """One row per AdaPT run: its lookback bounds, the median lookback at its switches in the ``last`` part of
    training, and the mean FL and WL of its weight tensors at the last logged point (where the rules settled)."""
    rows = []
    for r in records:
        if r.get("status") != COMPLETED or r["config"].get("method") != "adapt":
            continue
        trace = r["traces"]["tensors"]
        keep = [k for k, w in enumerate(trace["is_weight"]) if w]
        events = (r["traces"].get("switches") or [])
        end = max((e["epoch"] for e in events), default=0.0)
        late = [e["lookback"] for e in events if e["epoch"] >= (1 - last) * end]
        policy = r["config"].get("policy") or {}
        rows.append({"arm": arm_of(r), "seed": r["config"].get("seed"), "min_lookback": policy.get("min_lookback"),
                     "max_lookback": policy.get("max_lookback"),
                     "lookback": float(np.median(late)) if late else math.nan,
                     "fl": float(np.mean([trace["fractional_length"][-1][k] for k in keep])),
                     "wl": float(np.mean([trace["word_length"][-1][k] for k in keep]))})
    return pd.DataFrame(rows, columns=["arm", "seed", "min_lookback", "max_lookback", "lookback", "fl", "wl"])


def lookback_slope(settled: pd.DataFrame, y: str = "wl", confidence: float = CONFIDENCE) -> tuple:
    """``(slope, low, high, n)``: the least-squares slope of ``y`` (``"wl"`` or ``"fl"``, bits) against the
    natural log of the lookback over the runs of :func:`settled_frame`, with its two-sided Student-t interval
    (``n - 2`` degrees of freedom): bits gained per e-fold of lookback.  If the word length followed the
    lookback as PushUp's ceiling ``FL*`` does (:func:`settled_fractional_length`), the slope would be positive;
    an interval containing 0 says the runs do not show it.  NaN bounds for fewer than three runs or one
    lookback value."""
    d = settled[["lookback", y]].apply(pd.to_numeric, errors="coerce").dropna()
    d = d[d["lookback"] > 0]
    n = len(d)
    if n < 3 or d["lookback"].nunique() < 2:
        return math.nan, math.nan, math.nan, n
    fit = stats.linregress(np.log(d["lookback"].to_numpy(float)), d[y].to_numpy(float))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 2) * fit.stderr)
    return float(fit.slope), float(fit.slope) - half, float(fit.slope) + half, n


def settled_fractional_length(lookback, c: float = 1.0, results_buffer: int = 8) -> np.ndarray:
    """``min(ceil(32 t^2), 32 - RB)`` with ``t = ln(c sqrt(LB)) - 1`` (0 where ``t <= 0``): the fractional
    length above which the released PushUp's ``s2`` is 0 when ``GD = c sqrt(LB)`` (module docstring), the
    ceiling of what PushUp pushes towards; PushDown pulls the format below it at every switch."""
    lb = np.asarray(lookback, dtype=float)
    t = np.log(c * np.sqrt(lb)) - 1
    fl = np.where(t > 0, np.ceil(np.minimum(32 * t ** 2, 32)), 0.0)
    return np.minimum(fl, 32 - results_buffer)


def released_speedup(word_length) -> np.ndarray:
    """The released training speedup ``2 * 32 / (WL + 32)`` of a run at one word length everywhere, without
    sparsity or switching overhead (docs/method.md §1.7): below 2 for every WL > 0."""
    wl = np.asarray(word_length, dtype=float)
    return 64.0 / (wl + 32.0)


def format_interval(mean: float, low: float = math.nan, high: float = math.nan, digits: int = 2,
                    signed: bool = False) -> str:
    """``"mean [low, high]"``, the mean alone without an interval, ``"n/a"`` without a mean."""
    if mean is None or not np.isfinite(mean):
        return "n/a"
    s = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if np.isfinite(low) and np.isfinite(high):
        return f"{s} [{low:.{digits}f}, {high:.{digits}f}]"
    return s


#: Column titles of :func:`claims_markdown` per data set key of :func:`claims_table`'s ``data``.
DATA_TITLES = {"mnist5k": "mnist5k (LeNet-5, 5,000 MNIST images)", "digits": "digits (AlexNet)"}


def claims_markdown(claims: pd.DataFrame, names: Sequence[str] = ("mnist5k", "digits")) -> str:
    """:func:`claims_table` as a Markdown table: the papers' values, then per data set the mean with its 95 %
    interval, the seeds and the verdict, and a last column for CIFAR (not testable here)."""
    head = "| claim | paper v4 | paper SDM | " + " | ".join(f"{DATA_TITLES.get(n, n)} | verdict" for n in names) + " | CIFAR |"
    lines = [head, "|---|---:|---:|" + "---|---|" * len(names) + "---|"]
    for row in claims.itertuples():
        signed = row.metric == "acc_diff_pp"

        def paper(v):
            return "n/a" if v is None or not np.isfinite(v) else (f"{v:+.2f}" if signed else f"{v:.2f}")

        cells = []
        for name in names:
            mean, lo, hi, n = (getattr(row, name), getattr(row, f"{name}_low"), getattr(row, f"{name}_high"),
                               getattr(row, f"{name}_seeds"))
            cells += [f"{format_interval(mean, lo, hi, 2, signed)} ({n} seed{'s' if n != 1 else ''})"
                      if np.isfinite(mean) else "n/a", getattr(row, f"{name}_verdict")]
        lines.append(f"| {row.claim} | {paper(row.paper_v4)} | {paper(row.paper_sdm)} | " + " | ".join(cells)
                     + " | not testable here (the `paper` profile on a GPU) |")
    return "\n".join(lines)


#: The markers of the README's generated verdict block (tools/update_readme.py writes between them).
VERDICT_BEGIN = "<!-- verdict:begin (generated by tools/update_readme.py from results/mnist5k, smoke and decomposition; do not edit) -->"
VERDICT_END = "<!-- verdict:end -->"


_SIDE = {"below": "below 0", "above": "above 0", "contains": "not separable from 0", "no interval": "one seed"}


def why_line(decomposition_records: Sequence[dict], grid_records: Sequence[dict] = ()) -> str:
    """One sentence on where AdaPT's accuracy difference on mnist5k comes from, from the decomposition's records
    (:mod:`adapt.experiments.decomposition`; each record's ``"arm"``) and the mnist5k grid's: AdaPT's optimizer
    alone in float32 against the float32 baseline, the quantization and heuristic on top of that optimizer, and
    (given the grid's ``float32 (corrected)`` runs, the float32 LeNet-5 with logits) the reference AdaPT with
    logits and the corrected AdaPT against float32 with logits.  ``""`` when an arm it needs has no records."""
    logits = [{**r, "arm": arm_of(r)} for r in grid_records
              if r.get("status") == COMPLETED and arm_of(r) in ("float32 (corrected)", "adapt (corrected)")]
    records = list(decomposition_records) + logits
    t = arm_table(records, ["float32-adapt-optimizer", "adapt"], baseline="float32",
                  versus="float32-adapt-optimizer").set_index("arm") if decomposition_records else pd.DataFrame()
    if not {"float32-adapt-optimizer", "adapt"} <= set(t.index):
        return ""
    base = "float32 (corrected)" if any(r["arm"] == "float32 (corrected)" for r in logits) else "float32"
    u = arm_table(records, ["adapt-logits", "adapt (corrected)"], baseline=base).set_index("arm")
    if "adapt-logits" not in u.index:
        return ""

    def part(table, arm, col):
        r = table.loc[arm]
        lo, hi = r[f"{col}_low"], r[f"{col}_high"]
        return f"{format_interval(r[col], lo, hi, 2, True)} pp ({_SIDE[interval_reading(lo, hi)]})"

    seeds = "/".join(str(int(n)) for n in sorted(set(t["seeds"]) | set(u["seeds"])))
    text = ("**Where the accuracy difference comes from** (notebook 40 §4, " + seeds + " seeds per arm, LeNet-5 "
            "on mnist5k): AdaPT's optimizer alone, in float32 on the released LeNet-5 (which applies the loss to "
            "softmax outputs, a double softmax), is " + part(t, "float32-adapt-optimizer", "vs_baseline_pp") + " from "
            "the float32 baseline; AdaPT's quantization and heuristic on top of that optimizer add "
            + part(t, "adapt", "vs_versus_pp") + ". ")
    if base == "float32 (corrected)":
        text += ("On a LeNet-5 that returns logits, against float32 on that LeNet-5: the reference AdaPT is "
                 + part(u, "adapt-logits", "vs_baseline_pp"))
        if "adapt (corrected)" in u.index:
            text += ", the corrected AdaPT " + part(u, "adapt (corrected)", "vs_baseline_pp")
        return text + "."
    return text + ("The reference AdaPT on a LeNet-5 that returns logits is " + part(u, "adapt-logits", "vs_baseline_pp")
                   + " from the float32 baseline.")


def verdict_block(mnist_records: Sequence[dict], digit_records: Sequence[dict],
                  decomposition_records: Sequence[dict] = ()) -> str:
    """The README's verdict: :func:`claims_markdown` of AdaPT (reference heuristic) against its float32 baseline
    on mnist5k and on digits (AlexNet), released cost model, one line on how to read it and, given the
    decomposition's records, :func:`why_line`."""
    claims = claims_table({"mnist5k": mnist_records, "digits": digit_records}, arm="adapt (reference)",
                          baseline="float32")
    why = why_line(decomposition_records, mnist_records)
    return ("AdaPT (the released heuristic) against its float32 baseline; mean over seeds with its 95 % interval "
            "(a difference: Welch's), the released cost model; *holds* / *does not hold*: the whole interval on one "
            "side of the claimed value, *inconclusive*: the interval contains it.\n\n" + claims_markdown(claims)
            + (f"\n\n{why}" if why else ""))


# ----------------------------------------------------------------------------- the cross-check
def crosscheck_table(comparison: dict) -> pd.DataFrame:
    """Per arm of a cross-check (``tools/official_crosscheck.py``'s ``comparison.json``: the released code,
    ``adapt``'s reference, the reference with logits): seeds, final test accuracy (%) and final mean weight
    word length, each a mean with its 95 % interval over seeds, and the median ``GD / sqrt(lookback)``."""
    runs = pd.DataFrame(comparison.get("runs", []))
    rows = []
    for arm, g in runs.groupby("arm", sort=False):
        row = {"arm": arm, "seeds": len(g)}
        for name, col, scale in (("test_acc_pct", "final_test_acc", 100.0), ("mean_weight_wl", "final_mean_weight_wl", 1.0)):
            m, lo, hi, _ = t_interval(scale * pd.to_numeric(g[col], errors="coerce"))
            row.update({name: m, f"{name}_low": lo, f"{name}_high": hi})
        row["median_gd_over_sqrt_lookback"] = float(pd.to_numeric(g["median_gd_over_sqrt_lookback"],
                                                                  errors="coerce").median())
        rows.append(row)
    return pd.DataFrame(rows)
