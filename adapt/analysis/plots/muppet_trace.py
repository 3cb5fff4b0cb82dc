"""MuPPET's per-run trace figure (notebook 21).

:func:`muppet_trace_figure` -- MuPPET's precision per epoch with its gradient-diversity
ratio, threshold, violations and switches, from :func:`muppet_epochs` (a DataFrame of
the record's per-epoch MuPPET fields).
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from adapt.analysis.plots.style import METHOD_COLORS, as_float, new_figure, styled, run_title
from adapt.muppet import THRESHOLD_DECAY, THRESHOLD_SCALE, threshold

__all__ = ["muppet_epochs", "muppet_trace_figure"]


# ======================================================================= MuPPET
_MUPPET_ALIASES = {
    "bits": ("bits",),
    "mean_gd": ("mean_gd",),
    "max_gd": ("max_gd",),
    "ratio": ("gd_ratio", "ratio"),
    "threshold": ("gd_threshold", "threshold"),
    "violations": ("gd_violations", "violations"),
    "switched_to": ("switched_to",),
}


def muppet_epochs(record: Mapping):
    """MuPPET's per-epoch fields of a record as a DataFrame (one row per epoch, 0-based ``epoch``).

    Reads ``record["traces"]["muppet"]`` (lists per field) when present, else the
    per-epoch entries of ``record["epochs"]``; columns ``epoch, bits, mean_gd, max_gd,
    ratio, threshold, violations, switched_to`` for whatever of them exist (the
    released names ``gd_ratio``, ``gd_threshold``, ``gd_violations`` and the short ones
    both work); ``ratio`` is filled in from ``max_gd / mean_gd`` where missing.
    """
    import pandas as pd

    src = (record.get("traces") or {}).get("muppet")
    if src and src.get("epoch"):
        n = len(src["epoch"])
        rows = [{k: (v[i] if isinstance(v, list) and i < len(v) else None) for k, v in src.items()} for i in range(n)]
    else:
        rows = [dict(e) for e in record.get("epochs", []) if "epoch" in e]
    out = {"epoch": [int(r["epoch"]) for r in rows]}
    for col, names in _MUPPET_ALIASES.items():
        for name in names:
            if any(name in r for r in rows):
                out[col] = [as_float(r.get(name)) for r in rows]
                break
    frame = pd.DataFrame(out)
    if "mean_gd" in frame and "max_gd" in frame:
        with np.errstate(divide="ignore", invalid="ignore"):
            derived = frame["max_gd"] / frame["mean_gd"]
        frame["ratio"] = frame["ratio"].fillna(derived) if "ratio" in frame else derived
    return frame


def _switch_epochs(record: Mapping, frame) -> list:
    sw = (record.get("traces") or {}).get("switches")
    if isinstance(sw, list) and sw and all(isinstance(s, Mapping) and "epoch" in s and "to_bits" in s for s in sw):
        return [(int(s["epoch"]), int(s["to_bits"])) for s in sw]
    if "switched_to" in frame:
        return [(int(e), int(b)) for e, b in zip(frame["epoch"], frame["switched_to"]) if np.isfinite(b)]
    if "bits" in frame and len(frame) > 1:
        b = frame["bits"].to_numpy()
        return [(int(frame["epoch"].iloc[i]), int(b[i + 1])) for i in range(len(b) - 1) if b[i + 1] != b[i]]
    return []


def muppet_trace_figure(record: Mapping, title: Optional[str] = None, released_threshold: bool = False):
    """MuPPET's precision schedule and the gradient-diversity rule that drove it.

    Top: the global bit width of each epoch (a step plot; float32 is drawn 4 above the
    widest fixed-point width rather than at 32, so that 8/12/14/16 stay apart).  Bottom: the
    ratio maxGD / meanGD at each check, the threshold ``T(e)`` the run logged (its
    config's), violations (ratio above the threshold) as crosses.  Switches (after epoch
    ``e``) are dashed vertical lines in both panels.  x = epochs completed.  Fields the
    record lacks are left out (a static schedule has no gradient diversity: the bottom
    panel says so).

    ``released_threshold``: also draw the released ``T(e) = 1 + 1.5 exp(-0.1 e)``
    (:func:`adapt.muppet.threshold` at its defaults) over the run's fixed-point epochs,
    dotted, beside the threshold the run logged (its config's: the smoke profile's is
    flat at 1).  The default title says what is drawn and names the run
    (:func:`adapt.analysis.plots.run_title`).
    """
    frame = muppet_epochs(record)
    switches = _switch_epochs(record, frame)
    x = frame["epoch"].to_numpy(float) + 1.0
    with styled():
        fig, axes = new_figure(2, 1, figsize=(9, 5.5), sharex=True, height_ratios=(1, 1.3))
        ax_b, ax_g = axes[:, 0]
        if "bits" in frame and len(frame):
            bits = frame["bits"].to_numpy(float)
            fixed = bits[np.isfinite(bits) & (bits < 32)]
            fp32_at = float(fixed.max() + 4) if len(fixed) else 32.0  # float32 just above the widest fixed point
            shown = np.where(bits >= 32, fp32_at, bits)
            ax_b.step(np.append(0.0, x), np.append(shown[:1], shown), where="pre", color=METHOD_COLORS["muppet"], lw=2)
            levels = sorted({float(b) for b in shown if np.isfinite(b)})
            ax_b.set_yticks(levels, ["FP32" if b == fp32_at and (bits >= 32).any() else f"{b:g}" for b in levels])
            ax_b.set_ylim(min(levels) - 2, max(levels) + 2)
        else:
            ax_b.text(0.5, 0.5, "no per-epoch bits in the record", transform=ax_b.transAxes, ha="center",
                      va="center", color="0.4")
        ax_b.set_ylabel("bits")
        ax_b.set_title("Global bit width of each epoch (FP32: float32)")
        has_ratio = "ratio" in frame and np.isfinite(frame["ratio"].to_numpy(float)).any()
        if has_ratio:
            ratio = frame["ratio"].to_numpy(float)
            ok = np.isfinite(ratio)
            ax_g.plot(x[ok], ratio[ok], "o-", ms=4, color=METHOD_COLORS["muppet"], label="maxGD / meanGD")
            if "threshold" in frame:
                thr = frame["threshold"].to_numpy(float)
                tok = np.isfinite(thr)
                ax_g.plot(x[tok], thr[tok], color="0.3", lw=1.2, ls="-.", label="threshold T(e)")
            if released_threshold and len(x):
                # over the fixed-point epochs only: MuPPET makes no check in float32
                fixed = frame["bits"].to_numpy(float) < 32 if "bits" in frame else np.ones(len(x), bool)
                epochs = frame["epoch"].to_numpy(int)[fixed]
                ax_g.plot(x[fixed], [threshold(int(e)) for e in epochs], color="0.55", lw=1.2, ls=":",
                          label=f"released T(e) = 1 + {THRESHOLD_SCALE:g}·exp(−{THRESHOLD_DECAY:g}·e)")
                viol = ok & tok & (ratio > thr)
            elif "violations" in frame:
                v = frame["violations"].to_numpy(float)
                prev = np.append(0.0, v[:-1])
                viol = ok & np.isfinite(v) & (v > prev)
            else:
                viol = np.zeros(len(x), bool)
            if viol.any():
                ax_g.plot(x[viol], ratio[viol], "x", color="#d55e00", ms=9, mew=2, label="violation")
            ax_g.legend(fontsize=8)
        else:
            ax_g.text(0.5, 0.5, "no gradient-diversity data (static schedule or float32 only)",
                      transform=ax_g.transAxes, ha="center", va="center", color="0.4")
        ax_g.set_ylabel("gradient diversity ratio")
        ax_g.set_xlabel("epoch")
        ax_g.set_title("Switching check: maxGD / meanGD against the threshold T(e)")
        for k, (e, to) in enumerate(switches):
            for ax in (ax_b, ax_g):
                ax.axvline(e + 1.0, color="0.5", lw=1, ls="--", label=None)
            ax_b.annotate(f"→ {'FP32' if to >= 32 else to}", (e + 1.0, 1.0), xycoords=("data", "axes fraction"),
                          xytext=(2, -10), textcoords="offset points", fontsize=7, color="0.3")
        if len(x):
            ax_g.set_xlim(0, x[-1] + 0.5)
        fig.suptitle(title if title is not None else f"MuPPET's precision switches\n{run_title(record)}")
    return fig
