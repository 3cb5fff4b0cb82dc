"""Teaching figures of number formats and rounding (notebook 01).

* :func:`number_formats_figure` -- bit layouts of float32, fixed point, block
  floating point and int8 (AdaPT v4 Fig. 1's "numerical representations");
* :func:`rounding_figure` -- nearest vs stochastic rounding of a ramp, and the
  mean of many stochastic draws (unbiased);
* :func:`quantization_error_figure` -- the RMS error of a tensor against word length
  and fractional length (:func:`quantization_error_table`).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np

from adapt.analysis.plots.style import METHOD_COLORS, new_figure, sequential_color, styled
from adapt.quant import fixed_point

__all__ = ["number_formats_figure", "rounding_figure", "quantization_error_table", "quantization_error_figure"]


def _float32_bits(v: float) -> str:
    import struct

    return format(struct.unpack(">I", struct.pack(">f", v))[0], "032b")


def _twos(v: int, bits: int) -> str:
    return format(v & ((1 << bits) - 1), f"0{bits}b")


def number_formats_figure(value: float = 2.6875, block=(2.6875, -1.25, 0.5, 3.0)):
    """Bit layouts of four number formats, one row of boxes each (AdaPT v4 Fig. 1's idea).

    * float32: 1 sign, 8 exponent and 23 mantissa bits;
    * fixed point ``<WL=8, FL=4>`` (AdaPT's initial format): sign, 3 integer and 4
      fractional bits, the binary point marked;
    * block floating point: one shared 8-bit exponent and four 8-bit mantissas
      (MuPPET's dynamic fixed point is this with a whole tensor as the block);
    * int8: sign and 7 bits (two's complement).

    Every box holds the bit of the example: ``value`` in float32, fixed point and int8
    (``value * 2**4`` as an integer), and the ``block`` of four values in block
    floating point.  One bit is the same width in every row.
    """
    from matplotlib.patches import Patch, Rectangle

    colors = {"sign": "#d55e00", "exponent": "#0173b2", "mantissa": "#56b4e9", "integer": "#029e73",
              "fraction": "#8de5a1", "shared exponent": "#cc78bc", "magnitude": "#ece133"}
    # exact example bits
    fx = int(round(value * 2 ** 4))
    fixed_bits = _twos(fx, 8)
    emax = max(math.frexp(abs(v))[1] for v in block)  # |v| < 2**emax
    mant = [int(round(v * 2 ** (7 - emax))) for v in block]
    bfp_exp = _twos(emax + 127, 8)
    rows = [
        ("float32", [("sign", 1), ("exponent", 8), ("mantissa", 23)], _float32_bits(value),
         f"${value:g} = (-1)^s \\times 1.m \\times 2^{{e - 127}}$  (IEEE 754 single precision)"),
        ("fixed point <8, 4>", [("sign", 1), ("integer", 3), ("fraction", 4)], fixed_bits,
         f"${value:g} = {fx} \\times 2^{{-4}}$  (word length 8, fractional length 4: step $2^{{-4}}$, "
         f"range $[-8, 8)$)"),
        ("block floating point", [("shared exponent", 8)] + [("sign", 1), ("mantissa", 7)] * len(block),
         bfp_exp + "".join(_twos(m, 8) for m in mant),
         "$[" + ", ".join(f"{v:g}" for v in block) + f"] = 2^{{{emax}}} \\times [" + ", ".join(map(str, mant))
         + "] / 2^7$  (one exponent per block of values)"),
        ("int8", [("sign", 1), ("magnitude", 7)], _twos(fx, 8), f"${fx}$  (8-bit two's complement integer)"),
    ]
    gap = 0.6  # between the values of block floating point
    spacing = 2.3  # between rows: the boxes, then the note under them
    with styled():
        fig, axes = new_figure(figsize=(12, 3.6))
        ax = axes[0, 0]
        used = []
        for r, (label, fields, bits, note) in enumerate(rows):
            y = -r * spacing
            x = 0.0
            i = 0
            for f_idx, (field, n) in enumerate(fields):
                if label.startswith("block") and f_idx > 0 and field == "sign":
                    x += gap
                for _ in range(n):
                    ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colors[field], edgecolor="white", lw=0.8))
                    ax.text(x + 0.5, y + 0.5, bits[i], ha="center", va="center", fontsize=7, color="black")
                    x += 1
                    i += 1
                if field not in used:
                    used.append(field)
                if label.startswith("fixed") and field == "integer":
                    ax.plot([x, x], [y - 0.15, y + 1.15], color="black", lw=2, solid_capstyle="butt")
                    ax.text(9.5, y + 0.5, "black bar: the binary point", fontsize=8, va="center")
            ax.text(-0.6, y + 0.5, label, ha="right", va="center", fontsize=10, fontweight="bold")
            ax.text(0.0, y - 0.25, note, ha="left", va="top", fontsize=8.5, color="0.25")
        width = 8 + len(block) * (8 + gap)
        ax.set_xlim(-13, max(width, 32) + 1)
        ax.set_ylim(-(len(rows) - 1) * spacing - 1.3, 1.6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_aspect("equal")
        ax.legend(handles=[Patch(facecolor=colors[f], label=f) for f in used], loc="lower right", ncol=4,
                  fontsize=8, frameon=False)
        ax.set_title("Numerical representations (one box = one bit)")
    return fig


def rounding_figure(word_length: int = 8, fractional_length: int = 2, x_range=(-1.0, 1.0), n_points: int = 401,
                    n_draws: int = 2000, seed: int = 0):
    """Nearest vs stochastic rounding of a ramp onto the fixed-point grid of step ``2**-fractional_length``.

    Left: the ramp, round-to-nearest (a staircase), one stochastic draw, and the
    mean of ``n_draws`` stochastic draws (on the ramp).  Right: the error
    ``q(x) - x`` of nearest rounding (a sawtooth of amplitude half a step) and of the
    stochastic mean (zero up to sampling noise, band = 2 standard errors).  All
    computed with :func:`adapt.quant.fixed_point`.
    """
    import torch

    x = torch.linspace(float(x_range[0]), float(x_range[1]), int(n_points), dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    nearest = fixed_point(x, word_length, fractional_length, "nearest")
    draws = fixed_point(x.expand(int(n_draws), -1).contiguous(), word_length, fractional_length, "stochastic",
                        generator=gen).double()
    mean = draws.mean(0)
    se = draws.std(0) / math.sqrt(max(int(n_draws), 1))
    xs, xn = x.double().numpy(), nearest.double().numpy()
    step = 2.0 ** -fractional_length
    with styled():
        fig, axes = new_figure(1, 2, figsize=(11, 4))
        ax = axes[0, 0]
        ax.plot(xs, xs, color="0.6", lw=1, ls="--", label="input x")
        ax.plot(xs, xn, color=METHOD_COLORS["float32"], lw=1.8, label="nearest")
        ax.plot(xs, draws[0].numpy(), ".", color=METHOD_COLORS["muppet"], ms=3, alpha=0.7,
                label="stochastic (one draw)")
        ax.plot(xs, mean.numpy(), color=METHOD_COLORS["adapt"], lw=1.5, label=f"stochastic (mean of {n_draws})")
        ax.set_xlabel("x")
        ax.set_ylabel("rounded value")
        ax.set_title(f"Rounding onto a grid of step $2^{{-{fractional_length}}}$ = {step:g}")
        ax.legend(fontsize=8)
        ax = axes[0, 1]
        err_sr = (mean - x.double()).numpy()
        ax.axhline(0, color="0.3", lw=0.8)
        ax.plot(xs, xn - xs, color=METHOD_COLORS["float32"], lw=1.5, label="nearest: q(x) - x")
        ax.fill_between(xs, -2 * se.numpy(), 2 * se.numpy(), color=METHOD_COLORS["adapt"], alpha=0.2,
                        label="±2 standard errors")
        ax.plot(xs, err_sr, color=METHOD_COLORS["adapt"], lw=1.2, label="stochastic: E[q(x)] - x")
        ax.set_xlabel("x")
        ax.set_ylabel("error")
        ax.set_title("Rounding error: nearest is biased, stochastic unbiased on average")
        ax.legend(fontsize=8)
    return fig


def quantization_error_table(x, word_lengths: Iterable[int] = range(2, 17),
                             fractional_lengths: Iterable[int] = range(0, 17), rounding: str = "nearest"):
    """RMS error of ``fixed_point(x, WL, FL, rounding)`` against ``x``: a DataFrame, FL rows x WL columns.

    ``rounding="stochastic"`` uses a generator seeded with 0.
    """
    import pandas as pd
    import torch

    x = torch.as_tensor(x).detach().float().reshape(-1)
    wls, fls = [int(w) for w in word_lengths], [int(f) for f in fractional_lengths]
    out = np.empty((len(fls), len(wls)))
    for j, wl in enumerate(wls):
        for i, fl in enumerate(fls):
            gen = torch.Generator().manual_seed(0) if rounding == "stochastic" else None
            q = fixed_point(x, wl, fl, rounding, generator=gen)
            out[i, j] = float(torch.sqrt(torch.mean((q.double() - x.double()) ** 2)))
    frame = pd.DataFrame(out, index=pd.Index(fls, name="fractional_length"),
                         columns=pd.Index(wls, name="word_length"))
    return frame


def quantization_error_figure(x, word_lengths: Iterable[int] = range(2, 17),
                              fractional_lengths: Iterable[int] = range(0, 17), rounding: str = "nearest",
                              curves: Optional[Sequence[int]] = None, title: Optional[str] = None):
    """RMS quantization error of the tensor ``x`` against word length and fractional length.

    Left: heatmap of log10 RMS error, FL (rows) x WL (columns), with the best FL of
    each WL marked (small FL: the step dominates; large FL: saturation does).
    Right: RMS error against FL for a few word lengths (``curves``; default four
    spread over ``word_lengths``: the
    last four multiples of 4), log scale.  Computed by :func:`quantization_error_table`.
    """
    table = quantization_error_table(x, word_lengths, fractional_lengths, rounding)
    wls, fls = list(table.columns), list(table.index)
    data = np.log10(np.maximum(table.to_numpy(), 1e-12))
    if curves is None:
        curves = [w for w in wls if w % 4 == 0][-4:]
        if len(curves) < 2:
            curves = sorted({wls[int(round(k))] for k in np.linspace(0, len(wls) - 1, min(4, len(wls)))})
    with styled():
        fig, axes = new_figure(1, 2, figsize=(11, 4.2))
        ax = axes[0, 0]
        mesh = ax.pcolormesh(_centres_to_edges(wls), _centres_to_edges(fls), data, cmap="coolwarm", shading="flat")
        best = table.idxmin(axis=0)
        ax.plot(wls, [best[w] for w in wls], "k.", ms=6, label="smallest error")
        ax.set_xlabel("word length WL (bits)")
        ax.set_ylabel("fractional length FL (bits)")
        ax.set_title(f"log10 RMS error of {rounding} Q(x) (dots: best FL per WL)")
        ax.grid(False)
        ax.legend(fontsize=8, loc="upper left")
        fig.colorbar(mesh, ax=ax, label="log10 RMS error")
        ax = axes[0, 1]
        for k, wl in enumerate(curves):
            if wl in table.columns:
                ax.plot(fls, table[wl].to_numpy(), marker="o", ms=3, label=f"WL = {wl}",
                        color=sequential_color(k, len(curves)))
        ax.set_yscale("log")
        ax.set_xlabel("fractional length FL (bits)")
        ax.set_ylabel("RMS error")
        ax.set_title(f"RMS error against FL ({rounding} rounding)")
        ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
    return fig


def _centres_to_edges(c) -> np.ndarray:
    c = np.asarray(c, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
