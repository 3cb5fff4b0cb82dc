"""Widgets for notebooks 01 and 02, each with a static fallback that the test suite checks.

* :func:`quantization_explorer` -- WL and FL sliders over a weight tensor: the histogram of
  its fixed-point quantization against the FP32 one, the quantization error, the
  representable range and PushDown's information-loss test (released and corrected);
* :func:`pushdown_stepper` -- a slider over the probes of one :func:`adapt.heuristic.push_down`
  call: which format each bisection probe tested, the test value, the threshold, the verdict;
* :func:`pushup_explorer` -- a gradient-diversity slider over :func:`adapt.heuristic.push_up`;
* :func:`trained_weight` -- a weight tensor of a short real training run, for the above.

One call, two renderings
------------------------
Each explorer returns a view that Jupyter displays: ipywidgets controls that redraw on
every change when a person is at the notebook, otherwise a static figure and a small
table for the given arguments (:class:`QuantizationView`, :class:`PushDownView`,
:class:`PushUpView`).  Which one, decided by :func:`use_widgets`, in this order:

1. the call's ``interactive=True`` / ``False``;
2. the environment variable ``ADAPT_INTERACTIVE``: ``1`` widgets, ``0`` static
   (``auto`` or unset: go on);
3. widgets iff the code runs in an IPython kernel whose current cell was sent with
   ``allow_stdin=True`` -- the Jupyter protocol's flag that the client can answer an
   ``input()`` prompt, i.e. that a person is at the front end.  JupyterLab, Notebook 7 and
   VS Code set it; the headless executors do not: papermill (through nbclient) and nbval
   send ``allow_stdin=False``.  So ``tools/notebooks.py run``, ``make notebooks-test`` and
   nbval's re-run of the committed notebooks render the static figure with no setting, the
   stored notebooks hold no widget outputs, and CI checks the same cells that a reader
   plays with.  Outside a kernel (a script, the terminal IPython) it is static too.

A dashboard server that executes headlessly but does render widgets (Voila) needs
``ADAPT_INTERACTIVE=1``; a front end without the ipywidgets extension (it shows "Error
displaying widget") needs ``ADAPT_INTERACTIVE=0`` or ``interactive=False``.  Widgets need ``ipywidgets`` (the ``notebooks`` extra, ``pip install
"adapt[notebooks]"``): when they are asked for (1 or 2) and it is missing, the call raises
an ``ImportError`` naming that command; when rule 3 picks them, the static view is shown
with a line saying what to install.

The static figure for given arguments is deterministic: nearest rounding needs no random
numbers, and every stochastic draw (stochastic rounding, the information-loss test) comes
from a ``torch.Generator`` seeded with ``seed`` afresh for each view, so a slider moved
back shows exactly what it showed before.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from adapt import heuristic
from adapt.analysis.plots.style import new_figure, styled
from adapt.experiments.configs import get_config
from adapt.quant import FixedPoint, fixed_point
from adapt.train import run

__all__ = [
    "ENV_VAR",
    "INSTALL_HINT",
    "use_widgets",
    "front_end_attached",
    "trained_weight",
    "quantization_view",
    "quantization_explorer",
    "pushdown_view",
    "pushdown_stepper",
    "pushup_view",
    "pushup_explorer",
    "QuantizationView",
    "PushDownView",
    "PushUpView",
    "WidgetView",
]

#: The environment variable of rule 2 (``1`` widgets, ``0`` static, ``auto``/unset: rule 3).
ENV_VAR = "ADAPT_INTERACTIVE"
#: What to install for the widgets.
INSTALL_HINT = 'pip install "adapt[notebooks]"  (or just: pip install ipywidgets)'
ROUNDINGS = ("nearest", "stochastic")

_TRUE, _FALSE, _AUTO = ("1", "true", "yes", "on"), ("0", "false", "no", "off"), ("", "auto")


# ======================================================================= which rendering
def front_end_attached() -> bool:
    """Whether this code runs in an IPython kernel whose current request came with ``allow_stdin``.

    ipykernel stores the flag of every ``execute_request`` (``Kernel._allow_stdin``, set
    before the cell runs); a kernel without that attribute counts as headless.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    return bool(kernel is not None and getattr(kernel, "_allow_stdin", False) is True)


def _env_choice() -> Optional[bool]:
    raw = os.environ.get(ENV_VAR)
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value in _AUTO:
        return None
    raise ValueError(f"${ENV_VAR} must be 1, 0 or auto (or unset), got {raw!r}")


def use_widgets(interactive: Optional[bool] = None) -> bool:
    """The rendering rule of the module docstring: ``True`` for widgets, ``False`` for the static view."""
    if interactive is not None:
        if not isinstance(interactive, bool):
            raise ValueError(f"interactive must be True, False or None (decide), got {interactive!r}")
        return interactive
    env = _env_choice()
    return front_end_attached() if env is None else env


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(f"the interactive views need ipywidgets, which is not installed: {INSTALL_HINT}; "
                          f"or pass interactive=False (or set {ENV_VAR}=0) for the static figure") from exc
    return ipywidgets


def _render(build_widget, build_static, interactive):
    """Widgets or the static view, following :func:`use_widgets`."""
    asked = interactive is not None or _env_choice() is not None
    if not use_widgets(interactive):
        return build_static()
    if asked:
        return build_widget(_ipywidgets())
    try:
        widgets = _ipywidgets()
    except ImportError:
        print(f"(static view: the sliders need ipywidgets: {INSTALL_HINT})")
        return build_static()
    return build_widget(widgets)


def _display(*objs):
    from IPython.display import display

    display(*objs)


# ======================================================================= inputs
def _weights(w) -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise ValueError(f"w must be a floating-point torch.Tensor, got {type(w).__name__}")
    if w.numel() == 0:
        raise ValueError("w must not be empty")
    w = w.detach().to("cpu", torch.float32)
    if not torch.isfinite(w).all():
        raise ValueError("w must hold finite values only (it has inf or nan)")
    return w


def _int(name, value, low, high=None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def _format(word_length, fractional_length) -> FixedPoint:
    return FixedPoint(_int("word_length", word_length, 1, 32), _int("fractional_length", fractional_length, 0, 32))


def _rounding(rounding) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(_int("seed", seed, 0))


def _tested_slice(w: torch.Tensor, test_slice: str) -> torch.Tensor:
    """What the policy tests (``AdaptPolicy._switch``): ``w[0]`` (released) or the whole tensor."""
    if test_slice not in ("first", "all"):
        raise ValueError(f"test_slice must be 'first' or 'all', got {test_slice!r}")
    return w[0] if test_slice == "first" and w.dim() > 1 else w


def _threshold(variant: str, n: int, resolution: int, alpha: float = heuristic.KL_ALPHA) -> float:
    """The policy's default loss threshold of ``variant`` for ``n`` tested values (``kl_threshold``)."""
    value = heuristic.VARIANT_OPTIONS[variant].get("kl_threshold", 0.0)
    if value == getattr(heuristic, "G_TEST", "g_test"):
        return heuristic.loss_free_threshold(n, resolution, alpha)
    return float(value)


def trained_weight(config: str = "mnist5k/float32/lenet5/mnist5k", tensor: str = "features.conv3.weight", *,
                   seed: int = 0, device: str = "cpu", **overrides) -> tuple:
    """``(weight, record)``: the parameter ``tensor`` after training ``config`` (with ``overrides``).

    The run goes through :func:`adapt.train.run` into a temporary directory that is
    deleted afterwards; the tensor comes from the run's final checkpoint, on the CPU.
    Example (notebook 01): ``trained_weight(epochs=2, subset=2000)`` -- LeNet-5 trained
    in float32 on 2,000 of the bundled MNIST images.
    """

    cfg = get_config(config, seed=seed, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        record = run(cfg, out_dir=tmp, device=device)
        state = torch.load(Path(tmp) / "checkpoint.pt", weights_only=True, map_location="cpu")["model"]
    if tensor not in state:
        raise ValueError(f"{config} has no parameter {tensor!r}; its parameters: {', '.join(state)}")
    return state[tensor].detach().clone(), record


# ======================================================================= figures
def _figure(ncols, figsize):
    with styled():
        fig, axes = new_figure(1, ncols, figsize=figsize)
    return fig, axes[0]


_FLOAT_COLOR, _QUANT_COLOR, _LOSSY, _FREE = "#0173b2", "#de8f05", "#d55e00", "#029e73"


# ======================================================================= quantization explorer
@dataclass
class QuantizationView:
    """One (WL, FL) of :func:`quantization_explorer`: histograms, error, range and the loss-free tests.

    ``edges`` are ``resolution`` equal bins over the common range of ``w`` and ``Q(w)``
    (the corrected test's range, saturated values included); ``float_counts`` and
    ``quantized_counts`` are NumPy histograms over them.  ``stats`` holds the format and
    error figures, ``tests`` one row per variant of :func:`adapt.heuristic.information_loss`
    with the tensor slice, the threshold and the verdict that the policy of that variant uses.
    """

    word_length: int
    fractional_length: int
    rounding: str
    resolution: int
    seed: int
    edges: np.ndarray
    float_counts: np.ndarray
    quantized_counts: np.ndarray
    stats: dict
    tests: pd.DataFrame
    _fig: object = field(default=None, repr=False)

    @property
    def format(self) -> FixedPoint:
        return FixedPoint(self.word_length, self.fractional_length)

    @property
    def table(self) -> pd.DataFrame:
        """The error figures (one row) -- the small table shown under the figure, beside :attr:`tests`."""
        return pd.DataFrame([self.stats]).set_index("format")

    @property
    def figure(self):
        if self._fig is None:
            self._fig = self._draw()
        return self._fig

    def _draw(self):
        s, fmt = self.stats, self.format
        fig, (ax, ax2) = _figure(2, (11, 3.9))
        ax.stairs(self.float_counts, self.edges, fill=True, color=_FLOAT_COLOR, alpha=0.35, label="float32")
        ax.stairs(self.quantized_counts, self.edges, color=_QUANT_COLOR, lw=1.4, label=f"quantized ({self.rounding})")
        lo, hi = self.edges[0], self.edges[-1]
        for x in (fmt.min, fmt.max):
            if lo <= x <= hi:
                ax.axvline(x, color="0.25", lw=0.9, ls="--")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("value")
        ax.set_ylabel(f"count ({self.resolution} bins)")
        ax.set_title(f"Histogram of w and of Q(w) at {fmt}\n(step {fmt.step:g}, range [{fmt.min:g}, {fmt.max:g}])")
        ax.legend(fontsize=8, loc="upper right")
        # The quantizer's staircase over the tensor's range: where the error comes from.
        x = torch.linspace(float(lo), float(hi), 2001)
        ax2.plot(x.numpy(), x.numpy(), color="0.6", lw=0.8, label="y = x")
        ax2.plot(x.numpy(), fixed_point(x, fmt.word_length, fmt.fractional_length, "nearest").numpy(),
                 color=_QUANT_COLOR, lw=1.2, label="Q(x), nearest")
        ax2.set_xlabel("x")
        ax2.set_ylabel("Q(x)")
        ax2.set_title(f"The quantizer Q(x) over w's range\n(RMS error {s['RMS error']:.3g}, max {s['max |error|']:.3g})")
        verdicts = "; ".join(f"{v}: {'loss-free' if r['loss-free'] else 'lossy'}" for v, r in self.tests.iterrows())
        ax2.text(0.02, 0.98, f"outside range {s['outside range']:.1%}\nrounded to 0 {s['rounded to 0']:.1%}\n"
                 + verdicts.replace("; ", "\n"), transform=ax2.transAxes, va="top", fontsize=8,
                 bbox=dict(boxstyle="round", fc="white", ec="0.8"))
        ax2.legend(fontsize=8, loc="lower right")
        return fig

    def _ipython_display_(self):
        _display(self.figure, self.table, self.tests)

    def __repr__(self):
        return f"QuantizationView({self.format}, {self.rounding})\n{self.table.to_string()}\n{self.tests.to_string()}"


def quantization_view(w, word_length: int = 8, fractional_length: int = 4, rounding: str = "nearest",
                      resolution: int = 100, seed: int = 0, alpha: float = heuristic.KL_ALPHA) -> QuantizationView:
    """The static content of :func:`quantization_explorer` for one (WL, FL)."""
    w = _weights(w)
    fmt = _format(word_length, fractional_length)
    rounding = _rounding(rounding)
    resolution = _int("resolution", resolution, 1)
    q = fixed_point(w, fmt.word_length, fmt.fractional_length, rounding,
                    _generator(seed) if rounding == "stochastic" else None)
    wn, qn = w.numpy().astype(np.float64).ravel(), q.numpy().astype(np.float64).ravel()
    lo, hi = min(wn.min(), qn.min()), max(wn.max(), qn.max())
    float_counts, edges = np.histogram(wn, bins=resolution, range=(lo, hi))
    quantized_counts, _ = np.histogram(qn, bins=resolution, range=(lo, hi))
    err = qn - wn
    stats = {"format": str(fmt), "step": fmt.step, "min": fmt.min, "max": fmt.max,
             "RMS error": float(np.sqrt(np.mean(err ** 2))), "max |error|": float(np.abs(err).max()),
             "outside range": float(np.mean((wn < fmt.min) | (wn > fmt.max))),
             "rounded to 0": float(np.mean((qn == 0) & (wn != 0)))}
    rows = []
    for variant in heuristic.VARIANTS:
        opts = heuristic.VARIANT_OPTIONS[variant]
        tested = _tested_slice(w, opts["test_slice"])
        value = heuristic.information_loss(tested, fmt.word_length, fmt.fractional_length, resolution, opts["kl"],
                                           _generator(seed))
        threshold = _threshold(variant, tested.numel(), resolution, alpha)
        rows.append({"variant": variant, "tested": "w[0]" if tested is not w else "w", "values": tested.numel(),
                     "test value": value, "threshold": threshold, "loss-free": not value > threshold})
    return QuantizationView(fmt.word_length, fmt.fractional_length, rounding, resolution, seed, edges,
                            float_counts, quantized_counts, stats, pd.DataFrame(rows).set_index("variant"))


class WidgetView:
    """Controls and an output area; Jupyter displays :attr:`widget`.

    ``controls`` maps each argument name to its widget; every change redraws into the
    output and leaves the static view it drew in :attr:`view`.
    """

    def __init__(self, widget, controls: dict, output, make_view):
        self.widget, self.controls, self.output, self._make_view = widget, controls, output, make_view
        self.view = None
        for control in controls.values():
            control.observe(self.update, names="value")
        self.update()

    def update(self, *_):
        try:
            self.view = self._make_view(**{k: c.value for k, c in self.controls.items()})
        except ValueError as exc:  # e.g. a format the slider allows but the rule does not: say so, keep going
            self.view = None
            with self.output:
                self.output.clear_output(wait=True)
                print(exc)
            return
        with self.output:
            self.output.clear_output(wait=True)
            _display(self.view)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self):
        _display(self.widget)


def quantization_explorer(w, word_length: int = 8, fractional_length: int = 4, rounding: str = "nearest",
                          resolution: int = 100, seed: int = 0, interactive: Optional[bool] = None):
    """WL and FL sliders over the weight tensor ``w``; the static :class:`QuantizationView` without a front end.

    Drawn for each (WL, FL): the histogram of ``Q(w)`` (``rounding``, nearest by
    default) against that of ``w`` over ``resolution`` bins, the quantizer's staircase
    with the RMS and maximum error, the fraction of values outside the representable
    range ``[-2^(WL-FL-1), 2^(WL-FL-1) - 2^-FL]`` and of non-zero values rounded to 0,
    and PushDown's information-loss test as each variant's policy runs it
    (docs/method.md §1.4.6): released -- the released expression on ``w[0]``,
    threshold 0; corrected -- ``D_KL`` on the whole tensor against
    :func:`adapt.heuristic.loss_free_threshold`.  The test's own stochastic rounding
    draws from ``seed``.  ``interactive``: see :func:`use_widgets`.
    """
    w = _weights(w)
    view = quantization_view(w, word_length, fractional_length, rounding, resolution, seed)  # validates all

    def build_widget(widgets):
        style = {"description_width": "initial"}
        controls = {
            "word_length": widgets.IntSlider(value=view.word_length, min=1, max=32, description="WL",
                                             continuous_update=False, style=style),
            "fractional_length": widgets.IntSlider(value=view.fractional_length, min=0, max=32, description="FL",
                                                   continuous_update=False, style=style),
            "rounding": widgets.ToggleButtons(options=list(ROUNDINGS), value=view.rounding, description="rounding",
                                              style=style),
            "resolution": widgets.IntSlider(value=view.resolution, min=2, max=max(200, view.resolution),
                                            description="bins", continuous_update=False, style=style),
        }
        out = widgets.Output()
        box = widgets.VBox([widgets.HBox([controls["word_length"], controls["fractional_length"]]),
                            widgets.HBox([controls["rounding"], controls["resolution"]]), out])
        return WidgetView(box, controls, out, lambda **kw: quantization_view(w, seed=seed, **kw))

    return _render(build_widget, lambda: view, interactive)


# ======================================================================= PushDown stepper
_PUSH_DOWN_KEYS = ("fl_floor", "kl", "probe", "bisection_return", "threshold", "alpha", "epsilon", "generator")


@dataclass
class PushDownView:
    """The probes of one PushDown call and its result; ``step`` (1-based) marks the probe on show."""

    start: tuple
    result: tuple
    variant: str
    tested: str
    probes: pd.DataFrame
    step: Optional[int] = None

    def at(self, step: int) -> "PushDownView":
        """The same call with probe ``step`` (1 .. number of probes) on show."""
        step = _int("step", step, 1, max(len(self.probes), 1))
        return PushDownView(self.start, self.result, self.variant, self.tested, self.probes, step)

    def sentence(self) -> str:
        n = len(self.probes)
        head = (f"PushDown ({self.variant}, testing {self.tested}) from (WL, FL) = {self.start}: "
                f"{n} probe{'s' if n != 1 else ''}, result {self.result}.")
        if not self.step or not n:
            return head
        p = self.probes.iloc[self.step - 1]
        stage = "FL bisection at WL = " if p["stage"] == "fl" else "WL bisection at FL = "
        fixed = p["word_length"] if p["stage"] == "fl" else p["fractional_length"]
        verdict = "> threshold: lossy" if p["lossy"] else "<= threshold: loss-free"
        return (head + f" Probe {self.step}/{n} ({stage}{fixed}): ({p['word_length']}, {p['fractional_length']}) "
                f"gives {p['value']:.4g} {verdict} (threshold {p['threshold']:.4g}).")

    @property
    def figure(self):
        return self._draw()

    def _draw(self):
        fig, (ax, ax2) = _figure(2, (11, 3.6))
        n = len(self.probes)
        if not n:
            for a in (ax, ax2):
                a.text(0.5, 0.5, "no probe: both brackets were empty", ha="center", va="center",
                       transform=a.transAxes)
            return fig
        k = np.arange(1, n + 1)
        v = self.probes["value"].to_numpy(dtype=float)
        lossy = self.probes["lossy"].to_numpy(dtype=bool)
        shown = np.ones(n, dtype=bool) if not self.step else k <= self.step
        positive = np.isfinite(v) & (v > 0)
        # The released value can be <= 0: a symmetric log axis then, a log one otherwise.
        if positive.all():
            ax.set_yscale("log")
        else:
            small = np.abs(v[np.isfinite(v) & (v != 0)])
            ax.set_yscale("symlog", linthresh=float(small.min()) if small.size else 1e-12)
        ax.plot(k, v, color="0.7", lw=0.8, zorder=1)
        thresholds = self.probes["threshold"].to_numpy(dtype=float)
        hidden = ax.get_yscale() == "log" and not (thresholds > 0).any()
        ax.step(k, thresholds, where="mid", color="0.25", ls="--", lw=0.9,
                label="threshold 0 (below this log axis)" if hidden else "threshold")
        for mask, color, marker, name in ((lossy, _LOSSY, "x", "lossy"), (~lossy, _FREE, "o", "loss-free")):
            ax.scatter(k[mask & shown], v[mask & shown], color=color, marker=marker, zorder=3,
                       label=name if mask.any() else None)
            ax.scatter(k[mask & ~shown], v[mask & ~shown], color=color, marker=marker, alpha=0.2, zorder=2)
        wl_stage = (self.probes["stage"] == "wl").to_numpy()
        for a in (ax, ax2):  # the WL bisection's probes on a grey band
            if wl_stage.any():
                a.axvspan(k[wl_stage].min() - 0.5, k[wl_stage].max() + 0.5, color="0.92", zorder=0,
                          label="WL bisection" if a is ax2 else None)
        if self.step:
            ax.axvline(self.step, color="0.4", lw=3, alpha=0.25)
        ax.set_xlabel("probe")
        ax.set_ylabel("information loss")
        ax.set_xticks(k)
        ax.set_title(f"Information-loss test value of each probe ({self.variant})")
        ax.legend(fontsize=8)
        wl, fl = self.probes["word_length"].to_numpy(), self.probes["fractional_length"].to_numpy()
        for values, name, color in ((wl, "WL probed", _FLOAT_COLOR), (fl, "FL probed", _QUANT_COLOR)):
            ax2.plot(k[shown], values[shown], marker="o", color=color, label=name)
            ax2.plot(k, values, color=color, alpha=0.2)
        for value, name, ls in ((self.start, "start", ":"), (self.result, "result", "-")):
            ax2.axhline(value[0], color=_FLOAT_COLOR, ls=ls, lw=0.8)
            ax2.axhline(value[1], color=_QUANT_COLOR, ls=ls, lw=0.8)
        ax2.set_xticks(k)
        ax2.set_xlabel("probe")
        ax2.set_ylabel("bits")
        ax2.set_title(f"Format of each probe; dotted: start {self.start}, solid: result {self.result}", fontsize=10)
        ax2.legend(fontsize=8)
        return fig

    def _ipython_display_(self):
        from IPython.display import Markdown

        rows = self.probes if not self.step else self.probes.iloc[: self.step]
        _display(Markdown(self.sentence()), self.figure, rows)

    def __repr__(self):
        return f"{self.sentence()}\n{self.probes.to_string()}"


def pushdown_view(w, word_length: int, fractional_length: int, resolution: int, variant: str = "corrected",
                  seed: int = 0, test_slice: Optional[str] = None, **push_down_kwargs) -> PushDownView:
    """Run :func:`adapt.heuristic.push_down` as ``variant``'s policy does and keep its probes (``record=``).

    As ``AdaptPolicy._switch``: the tested slice is the variant's ``test_slice`` (``w[0]``
    or ``w``), the threshold its ``kl_threshold`` (0, or ``"g_test"`` for the corrected
    variant) and the information-loss draws come from a CPU generator seeded with
    ``seed``.  ``push_down_kwargs`` (``fl_floor``, ``kl``, ``probe``, ``bisection_return``,
    ``threshold``, ``alpha``, ``epsilon``, ``generator``) override those choices.
    """
    w = _weights(w)
    fmt = _format(word_length, fractional_length)
    if variant not in heuristic.VARIANTS:
        raise ValueError(f"variant must be one of {heuristic.VARIANTS}, got {variant!r}")
    unknown = sorted(set(push_down_kwargs) - set(_PUSH_DOWN_KEYS))
    if unknown:
        raise ValueError(f"unknown push_down arguments {unknown}; allowed: {', '.join(_PUSH_DOWN_KEYS)}")
    opts = heuristic.VARIANT_OPTIONS[variant]
    tested = _tested_slice(w, opts["test_slice"] if test_slice is None else test_slice)
    kwargs = {"threshold": opts.get("kl_threshold", 0.0), **push_down_kwargs}
    kwargs.setdefault("generator", _generator(seed))
    record = []
    result = heuristic.push_down(tested, fmt.word_length, fmt.fractional_length, resolution, variant,
                                 record=record, **kwargs)
    probes = pd.DataFrame(record, columns=["stage", "word_length", "fractional_length", "value", "threshold", "lossy"])
    probes.index = pd.RangeIndex(1, len(probes) + 1, name="probe")
    return PushDownView((fmt.word_length, fmt.fractional_length), tuple(result), variant,
                        "w[0]" if tested is not w else "w", probes)


def pushdown_stepper(w, word_length: int, fractional_length: int, resolution: int, variant: str = "corrected",
                     seed: int = 0, test_slice: Optional[str] = None, interactive: Optional[bool] = None,
                     **push_down_kwargs):
    """A slider (with a play button) over the probes of one PushDown call; static: every probe at once.

    The probes are those :func:`adapt.heuristic.push_down` makes and reports through
    ``record=`` (see :func:`pushdown_view` for how it is called): the FL bisection at the
    start WL, then the WL bisection at the new FL (docs/method.md §1.4.7).  Each step
    shows the probed format, its test value against the threshold and the verdict; the
    figure marks the probes so far.  ``interactive``: see :func:`use_widgets`.
    """
    view = pushdown_view(w, word_length, fractional_length, resolution, variant, seed, test_slice,
                         **push_down_kwargs)

    def build_widget(widgets):
        n = len(view.probes)
        out = widgets.Output()
        if not n:
            with out:
                _display(view)
            return widgets.VBox([out])
        step = widgets.IntSlider(value=1, min=1, max=n, description="probe", continuous_update=True)
        play = widgets.Play(value=1, min=1, max=n, interval=1200, description="play")
        widgets.jslink((play, "value"), (step, "value"))
        return WidgetView(widgets.VBox([widgets.HBox([play, step]), out]), {"step": step}, out, view.at)

    return _render(build_widget, lambda: view, interactive)


# ======================================================================= PushUp explorer
@dataclass
class PushUpView:
    """:func:`adapt.heuristic.push_up` from one format over a range of gradient diversities."""

    word_length: int
    fractional_length: int
    results_buffer: int
    gd: float
    curve: pd.DataFrame   # one row per GD of the sweep: (WL, FL) per strategy
    table: pd.DataFrame   # the three strategies at ``gd``

    @property
    def figure(self):
        fig, (ax, ax2) = _figure(2, (11, 3.6))
        g = self.curve.index.to_numpy(dtype=float)
        for k, strategy in enumerate(heuristic.STRATEGIES):
            color = (_FREE, _QUANT_COLOR, _LOSSY)[k]
            ax.step(g, self.curve[(strategy, "FL")], where="post", color=color, label=strategy)
            ax2.step(g, self.curve[(strategy, "WL")], where="post", color=color, label=strategy)
        from matplotlib.ticker import MaxNLocator

        for a, name in ((ax, "FL"), (ax2, "WL")):
            a.set_xscale("log")
            a.yaxis.set_major_locator(MaxNLocator(integer=True))
            a.axvline(math.e, color="0.5", lw=0.8, ls=":")
            a.axvline(self.gd, color="0.2", lw=1.2)
            a.set_xlabel("gradient diversity GD (dotted: e)")
            a.set_ylabel(f"{name} after PushUp")
            a.legend(fontsize=8, title="strategy")
        ax.set_title(f"FL after PushUp from ({self.word_length}, {self.fractional_length}), RB = {self.results_buffer}")
        ax2.set_title(f"WL after PushUp (solid line: GD = {self.gd:g})")
        return fig

    def _ipython_display_(self):
        _display(self.figure, self.table)

    def __repr__(self):
        return f"PushUpView(GD = {self.gd:g})\n{self.table.to_string()}"


def pushup_view(word_length: int = 8, fractional_length: int = 4, gd: float = 3.0, results_buffer: int = 8,
                gd_range: tuple = (1.0, 100.0), points: int = 400) -> PushUpView:
    """The static content of :func:`pushup_explorer`."""
    fmt = _format(word_length, fractional_length)
    results_buffer = _int("results_buffer", results_buffer, 0, 32)
    if isinstance(gd, bool) or not isinstance(gd, (int, float, np.number)) or not gd >= 0:
        raise ValueError(f"gd must be a real number >= 0 (or inf), got {gd!r}")
    lo, hi = gd_range
    if not 0 < lo < hi:
        raise ValueError(f"gd_range must be (low, high) with 0 < low < high, got {gd_range!r}")
    grid = np.geomspace(lo, hi, _int("points", points, 2))
    cols = pd.MultiIndex.from_product([heuristic.STRATEGIES, ["WL", "FL"]])
    rows = [[x for s in heuristic.STRATEGIES
             for x in heuristic.push_up(fmt.word_length, fmt.fractional_length, float(g), s, results_buffer)]
            for g in grid]
    curve = pd.DataFrame(rows, index=pd.Index(grid, name="GD"), columns=cols)
    t = math.log(gd) - 1 if 0 < gd < math.inf else float("nan")
    table = pd.DataFrame([{"strategy": s, "t = ln GD - 1": round(t, 4),
                           "(WL, FL)": heuristic.push_up(fmt.word_length, fmt.fractional_length, float(gd), s,
                                                         results_buffer)} for s in heuristic.STRATEGIES])
    return PushUpView(fmt.word_length, fmt.fractional_length, results_buffer, float(gd), curve,
                      table.set_index("strategy"))


def pushup_explorer(word_length: int = 8, fractional_length: int = 4, gd: float = 3.0, results_buffer: int = 8,
                    interactive: Optional[bool] = None):
    """A GD slider (log scale, 1 to 100) over PushUp from (WL, FL): what each strategy returns.

    Static: the same figure and table for ``gd``.  docs/method.md §1.4.8;
    ``interactive``: see :func:`use_widgets`.
    """
    view = pushup_view(word_length, fractional_length, gd, results_buffer)

    def build_widget(widgets):
        controls = {
            "gd": widgets.FloatLogSlider(value=max(min(view.gd, 100.0), 1.0), base=10, min=0, max=2, step=0.01,
                                         description="GD", continuous_update=False),
            "word_length": widgets.IntSlider(value=view.word_length, min=1, max=32, description="WL",
                                             continuous_update=False),
            "fractional_length": widgets.IntSlider(value=view.fractional_length, min=0, max=32, description="FL",
                                                   continuous_update=False),
        }
        out = widgets.Output()
        box = widgets.VBox([widgets.HBox(list(controls.values())), out])
        return WidgetView(box, controls, out, lambda **kw: pushup_view(results_buffer=view.results_buffer, **kw))

    return _render(build_widget, lambda: view, interactive)
