"""The heuristic's figures (notebook 02).

* :func:`information_loss_figure` -- PushDown's information loss against FL, from arrays
  the caller computes (:func:`adapt.heuristic.information_loss`);
* :func:`information_loss_scan` -- computes the test at one WL over a range of FL as each
  variant runs it (the released expression on ``w[0]``, the corrected ``D_KL`` on the whole
  tensor over several stochastic-rounding draws, against the G-test threshold) and returns an
  :class:`InformationLossScan` with the figure, the table of signed values and a caption
  generated from its numbers (notebook 02, section on the information-loss test);
* :func:`lookback_figure` -- one tensor's lookback and gradient buffer, step by step, with its
  switches (notebook 02, the lookback section).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from adapt import heuristic
from adapt.analysis.plots.style import METHOD_COLORS, as_float, new_figure, sequential_color, styled

__all__ = ["information_loss_figure", "information_loss_scan", "InformationLossScan", "lookback_figure"]


def information_loss_figure(fractional_lengths, losses: Mapping[str, Sequence[float]], threshold: float = 0.0,
                            chosen: Optional[Mapping[str, float]] = None, word_length: Optional[int] = None,
                            title: Optional[str] = None):
    """PushDown's information loss against FL, one panel per variant (their scales differ).

    ``losses`` maps a variant name ("reference", "corrected", ...) to the loss at each
    of ``fractional_lengths``; ``threshold`` is the "lossy" test's threshold (0 as
    released: any loss > 0 counts); ``chosen`` optionally maps a variant to the FL
    its PushDown picked (a vertical line).  Points above the threshold are marked
    as lossy.  Nothing is computed here: the notebook computes the arrays with
    :func:`adapt.heuristic.information_loss`.
    """
    from matplotlib.ticker import MaxNLocator

    fls = np.asarray(list(fractional_lengths), dtype=float)
    if not losses:
        raise ValueError("losses is empty: give at least one variant's loss values")
    with styled():
        fig, axes = new_figure(1, len(losses), figsize=(5.2 * len(losses), 3.8), sharex=True)
        for k, (variant, values) in enumerate(losses.items()):
            ax = axes[0, k]
            v = np.asarray([as_float(a) for a in values], dtype=float)
            if len(v) != len(fls):
                raise ValueError(f"{variant!r}: {len(v)} loss values for {len(fls)} fractional lengths")
            color = sequential_color(k, max(len(losses), 2), "tab10") if k else METHOD_COLORS["adapt"]
            ax.plot(fls, v, marker="o", ms=4, color=color, label="information loss")
            lossy = v > threshold
            if lossy.any():
                ax.plot(fls[lossy], v[lossy], "x", color="#d55e00", ms=7, label=f"lossy (> {threshold:g})")
            ax.axhline(threshold, color="0.3", lw=0.8, ls="--")
            if chosen and variant in chosen and chosen[variant] is not None:
                ax.axvline(float(chosen[variant]), color="0.2", lw=1.2, ls=":", label=f"chosen FL = {chosen[variant]:g}")
            ax.set_xlabel("fractional length FL (bits)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("information loss")
            ax.set_title(variant)
            ax.legend(fontsize=8)
        sup = title or "Information loss against fractional length"
        if word_length is not None:
            sup += f" (WL = {word_length})"
        fig.suptitle(sup)
    return fig


# ======================================================================= the information-loss scan (notebook 02)
@dataclass
class InformationLossScan:
    """PushDown's information-loss test over a range of FL at one WL, both variants (notebook 02).

    ``released`` / ``released_coarse``: the released expression (docs/method.md §1.4.6) on the
    first slice ``w[0]`` (what the released code tests), at ``resolution`` and at
    ``coarse_resolution`` bins, one stochastic-rounding draw each (seed ``seed``);
    ``corrected``: the corrected ``D_KL`` on the whole tensor, one row per FL and one column per
    draw (seeds ``seed``, ``seed + 1``, ...); ``threshold``: the corrected G-test threshold
    :func:`adapt.heuristic.loss_free_threshold` for ``n_all`` values and ``resolution`` bins.
    Made by :func:`information_loss_scan`; :attr:`table`, :attr:`figure` and :meth:`caption` show it.
    """

    word_length: int
    fractional_lengths: list
    resolution: int
    coarse_resolution: int
    alpha: float
    n_first: int
    n_all: int
    released: np.ndarray
    released_coarse: np.ndarray
    corrected: np.ndarray
    threshold: float

    @property
    def repeats(self) -> int:
        return int(self.corrected.shape[1])

    @property
    def lossy_draws(self) -> np.ndarray:
        """How many corrected draws exceed the threshold, per FL."""
        return (self.corrected > self.threshold).sum(axis=1)

    @property
    def table(self) -> pd.DataFrame:
        """The numbers behind the figure, one row per FL (signed released values, median corrected D_KL and
        G = 2 n D_KL, lossy draws out of :attr:`repeats`)."""
        median = np.median(self.corrected, axis=1)
        return pd.DataFrame({
            f"released, res = {self.resolution}": self.released,
            f"released, res = {self.coarse_resolution}": self.released_coarse,
            "corrected D_KL, median": median,
            "G = 2n·D_KL, median": 2 * self.n_all * median,
            "draws lossy (G-test)": [f"{int(k)}/{self.repeats}" for k in self.lossy_draws],
        }, index=pd.Index(self.fractional_lengths, name="FL"))

    def formatted_table(self) -> pd.DataFrame:
        """:attr:`table` with the released values signed in scientific notation (their sign matters)."""
        shown = self.table.copy()
        for col in shown.columns[:2]:
            shown[col] = shown[col].map("{:+.3e}".format)
        shown["corrected D_KL, median"] = shown["corrected D_KL, median"].map("{:.3e}".format)
        shown["G = 2n·D_KL, median"] = shown["G = 2n·D_KL, median"].map("{:.1f}".format)
        return shown

    @property
    def figure(self):
        """Left: the released value on a symmetric log axis (linear within ±1e-7: it can be negative) at both
        resolutions, against its threshold 0.  Right: every corrected draw on a log axis, loss-free (circles)
        or lossy (crosses) against the G-test threshold (dashed) and the mean of its chi-square scale (dotted)."""
        from matplotlib.ticker import MaxNLocator

        fls = np.asarray(self.fractional_lengths)
        with styled():
            fig, axes = new_figure(1, 2, figsize=(11, 4))
            ax1, ax2 = axes[0]
            ax1.plot(fls, self.released, "o-", ms=4, color="#0072b2", label=f"released value, {self.resolution} bins")
            ax1.plot(fls, self.released_coarse, "s--", ms=4, color="#cc79a7",
                     label=f"released value, {self.coarse_resolution} bins")
            ax1.axhline(0.0, color="0.3", lw=0.8, ls="--", label="threshold 0 (released)")
            ax1.set_yscale("symlog", linthresh=1e-7)
            ax1.set_title(f"Released test on w[0] ({self.n_first} values)")
            ax1.set_ylabel("released test value (symlog)")
            for r in range(self.repeats):
                lossy = self.corrected[:, r] > self.threshold
                ax2.plot(fls[~lossy], self.corrected[~lossy, r], "o", ms=4, color="#009e73",
                         label="loss-free draw" if r == 0 else None)
                ax2.plot(fls[lossy], self.corrected[lossy, r], "x", ms=6, color="#d55e00",
                         label="lossy draw" if r == 0 else None)
            ax2.plot(fls, np.median(self.corrected, axis=1), "-", lw=0.8, color="0.4",
                     label=f"median of {self.repeats} draws")
            ax2.axhline(self.threshold, color="0.2", lw=1.0, ls="--", label=f"G-test threshold ({self.threshold:.2e})")
            ax2.axhline((self.resolution - 1) / (2 * self.n_all), color="0.5", lw=0.8, ls=":",
                        label="(k − 1) / (2n)")
            ax2.set_yscale("log")
            ax2.set_title(f"Corrected D_KL on the whole tensor ({self.n_all} values)")
            ax2.set_ylabel("D_KL(P ‖ Q) (log)")
            for ax in (ax1, ax2):
                ax.set_xlabel("fractional length FL (bits)")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.legend(fontsize=8)
            fig.suptitle(f"PushDown's information-loss test against FL (WL = {self.word_length}, "
                         f"{self.resolution} histogram bins)")
        return fig

    def caption(self) -> str:
        """A Markdown paragraph about this scan, every number taken from it."""
        fls = list(self.fractional_lengths)

        def describe(name, values):
            v = np.asarray(values, dtype=float)
            negative = [fl for fl, x in zip(fls, v) if x < 0]
            rises = [fl for fl, a, b in zip(fls[1:], v[:-1], v[1:]) if b > a]
            return (f"*{name}*: values between {v.min():+.3g} and {v.max():+.3g}, "
                    + (f"negative at FL {negative}" if negative else "never negative") + ", "
                    + (f"rising from FL − 1 to FL at FL {rises}" if rises else "non-increasing in FL") + ".")

        lossy = self.lossy_draws
        free_all = [fl for fl, k in zip(fls, lossy) if k == 0]
        lossy_any = [fl for fl, k in zip(fls, lossy) if k > 0]
        chi = 2 * self.n_all * self.threshold
        if free_all and all(k == 0 for fl, k in zip(fls, lossy) if fl >= free_all[0]):
            free = f"every draw is loss-free from FL {free_all[0]} up"
        elif free_all:
            free = f"every draw is loss-free at FL {free_all}"
        else:
            free = "no FL is loss-free in every draw"
        zero = [fl for fl, row in zip(fls, self.corrected) if (row <= 0).any()]
        if not zero:
            strict = (f"*Corrected*: `D_KL` is positive in every draw at every FL (smallest {self.corrected.min():.2e}), "
                      "so the strict test (threshold 0) calls every FL lossy; ")
        else:
            strict = (f"*Corrected*: `D_KL` is exactly 0 in at least one draw at FL {zero} (the two histograms agree "
                      "bin by bin there), the only FL the strict test (threshold 0) can pass; ")
        g = self.table["G = 2n·D_KL, median"]
        near = [(fl, x) for fl, x in zip(fls, g) if x < 10 * chi]
        return (f"On this tensor: {describe(f'released, {self.resolution} bins', self.released)} "
                f"{describe(f'released, {self.coarse_resolution} bins', self.released_coarse)} "
                + strict
                + f"the G-test threshold for n = {self.n_all} values "
                f"and k = {self.resolution} bins is {self.threshold:.2e} (χ²₁₋α({self.resolution - 1}) = {chi:.1f} "
                f"divided by 2n, α = {self.alpha:g}); {free}"
                + (f"; at least one draw is lossy at FL {lossy_any}" if lossy_any else "") + ". "
                + (("The median G where it is within ten times the χ² quantile: "
                    + ", ".join(f"FL {fl}: {x:.0f}" for fl, x in near) + ". ") if near else "")
                + "Stochastic rounding moves a value across a bin edge only if it lies within one step 2^−FL of "
                  "the edge, so a finer step moves fewer values.")

    def _ipython_display_(self):
        from IPython.display import Markdown, display

        display(self.figure, self.formatted_table(), Markdown(self.caption()))


def information_loss_scan(w, word_length: int = 16, fractional_lengths: Iterable[int] = range(4, 17),
                          resolution: int = 50, repeats: int = 5, seed: int = 0, alpha: Optional[float] = None,
                          coarse_resolution: int = 10) -> InformationLossScan:
    """Evaluate :func:`adapt.heuristic.information_loss` at ``word_length`` for every FL, as each variant tests.

    Released: the released expression on ``w[0]`` (the whole ``w`` if it is 1-D) at ``resolution`` and at
    ``coarse_resolution`` bins, each call with a generator seeded ``seed``.  Corrected: ``D_KL`` on the
    whole tensor, ``repeats`` draws (seeds ``seed .. seed + repeats - 1``), against
    :func:`adapt.heuristic.loss_free_threshold` ``(w.numel(), resolution, alpha)`` (``alpha`` default:
    :data:`adapt.heuristic.KL_ALPHA`).  docs/method.md §1.4.6.
    """
    import torch

    if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.numel() == 0:
        raise ValueError(f"w must be a non-empty floating-point torch.Tensor, got {type(w).__name__}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    alpha = heuristic.KL_ALPHA if alpha is None else alpha
    fls = [int(f) for f in fractional_lengths]
    if not fls:
        raise ValueError("fractional_lengths is empty")
    w = w.detach().float().cpu()
    first = w[0] if w.dim() > 1 else w

    def gen(s):
        return torch.Generator().manual_seed(int(s))

    released = np.array([heuristic.information_loss(first, word_length, fl, resolution, "reference", gen(seed))
                         for fl in fls])
    coarse = np.array([heuristic.information_loss(first, word_length, fl, coarse_resolution, "reference", gen(seed))
                       for fl in fls])
    corrected = np.array([[heuristic.information_loss(w, word_length, fl, resolution, "corrected", gen(seed + r))
                           for r in range(repeats)] for fl in fls])
    threshold = heuristic.loss_free_threshold(w.numel(), resolution, alpha)
    return InformationLossScan(int(word_length), fls, int(resolution), int(coarse_resolution), float(alpha),
                               int(first.numel()), int(w.numel()), released, coarse, corrected, float(threshold))


# ======================================================================= the lookback of an observed run (notebook 02)
def lookback_figure(steps, lookback, count, switches=(), min_lookback: Optional[int] = None,
                    tensor: str = "the tensor", title: Optional[str] = None):
    """One tensor's lookback ``LB`` and buffer size ``r`` (gradients buffered after each step) against the
    optimizer step, a dashed line at each switch (``r >= LB``, docs/method.md §1.4.11) and ``MIN_LB`` dotted.

    ``steps``, ``lookback`` and ``count`` are equal-length sequences (an observed run's per-step log);
    ``switches`` the steps at which the tensor switched.
    """
    from matplotlib.ticker import MaxNLocator

    x = np.asarray(list(steps), dtype=float)
    lb = np.asarray(list(lookback), dtype=float)
    r = np.asarray(list(count), dtype=float)
    if not (len(x) == len(lb) == len(r)):
        raise ValueError(f"steps, lookback and count differ in length: {len(x)}, {len(lb)}, {len(r)}")
    with styled():
        fig, axes = new_figure(figsize=(8, 3.2))
        ax = axes[0, 0]
        ax.plot(x, lb, "o-", ms=3, label=f"lookback LB of {tensor}")
        ax.plot(x, r, "s-", ms=3, label="buffered gradients r (after the step)")
        for k, s in enumerate(switches):
            ax.axvline(float(s), color="0.5", ls="--", lw=1, label="switch" if k == 0 else None)
        if min_lookback is not None:
            ax.axhline(float(min_lookback), color="0.3", lw=0.8, ls=":", label="MIN_LB")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("steps")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title or f"Lookback and gradient buffer of {tensor}, step by step")
        ax.legend(fontsize=8)
    return fig
