"""AdaPT's precision-switching heuristic: the pure rules and the :class:`AdaptPolicy`.

Specification: docs/method.md §1.3-1.6 (what the official optimizer
``MSGD_FP`` of ``lorenz0890/AdaPT``, ``optimizers/msgd_fp.py``, does) and §4 (its
known bugs).  The paper's own equations were not available; every rule below is
the released code's, cited by the name of the private method that implements it.

Pure rules
----------
Module-level functions, each a documented, separately tested piece of the method:

* :func:`gradient_diversity` -- ``GD = count / ||S||_2`` (``__g_div``);
* :func:`next_lookback` -- the lookback update (``__adapt_lookback``);
* :func:`next_resolution` -- the histogram-resolution update (``__adapt_resolution``);
* :func:`information_loss` -- the quantization "KL" test (``__fpq_loss``);
* :func:`push_down` -- the FL then WL bisection (``__push_down_fl``, ``__push_down_wl``);
* :func:`push_up` -- the gradient-diversity push-up and results buffer (``__push_up``);
* :func:`next_strategy` -- the min/mean/max push-up strategy escalation (``__adapt_strategy``).

Per optimizer step, per weight tensor (``dim > 1``), :class:`AdaptPolicy` does what
``MSGD_FP.step`` does: the training loop has already quantized the gradient with the
tensor's own format (``grad_format`` = the tensor's :class:`~adapt.quant.FixedPoint`,
so :meth:`~adapt.layers.QuantizedModel.quantize_grads` *is* the official
``QUANT_GRADS`` step); the policy normalizes it to unit L2 norm in place (the same
tensor then feeds SGD), adds it to the tensor's buffer (count, sum), updates the
lookback and the resolution, and once ``count >= lookback`` runs PushDown on the
FP32 master (before this step's update) and PushUp, clears the buffer and sets the
new format on the weight and its gradient.  1-D tensors (biases, BatchNorm) take
another tensor's format, and every quantized layer's input and output formats are
set from the parameter formats (see the options below).

Options: every released quirk is a named option (:data:`VARIANT_OPTIONS`)
----------------------------------------------------------------------------
``variant="reference"`` sets every option as released; ``variant="corrected"`` fixes all of
them; an option passed explicitly overrides the variant's choice.  The options (``test_slice``,
``kl``, ``kl_threshold``, ``fl_probe``, ``bisection_return``, ``activation_map``, ``bias_format``,
``normalize_gradients``, ``strategy_average``, ``initial_quantization``), what each does in
either variant and the release's lines are the table of docs/method.md §1.4.12; the options that
are not quirks (``switch_at``, ``kl_alpha``, ``kl_epsilon``, ``fl_floor``, ``log_interval``) and the
per-model settings (``loss_penalty``, ``lookback_bounds``) follow it.

Where things run.  Per step the policy makes two device syncs (nonzero counts with the
gradient norms, then the gradient diversities; multi-tensor ``torch._foreach_*`` kernels
otherwise).  The information-loss bisection runs on a CPU copy of the tested slice with the
policy's own CPU ``torch.Generator`` (seeded from ``seed``), so its random numbers are the
same on every device and it costs one copy per switch rather than a sync per probe.

Numerics: docs/method.md §1.4.13.

The strategy rule's loss.  The official closure returns ``(CE + l1 + pen) / accum``
where ``pen = mean_i(WL_i / 32 * nnz(p_i) / numel(p_i))`` (docs/method.md §1.5).  The loop
hands :meth:`AdaptPolicy.before_step` ``(CE + l1) / accum``; the policy adds
``loss_penalty() / accum`` itself, with ``pen`` computed from the current formats and
working weights -- the same values the official forward pass used.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from adapt.policies import PrecisionPolicy, TensorTrace
from adapt.quant import FixedPoint, divide_many_, fixed_point

__all__ = [
    "KL_ALPHA",
    "KL_EPSILON",
    "G_TEST",
    "STRATEGIES",
    "VARIANTS",
    "VARIANT_OPTIONS",
    "gradient_diversity",
    "next_lookback",
    "next_resolution",
    "information_loss",
    "loss_free_threshold",
    "push_down",
    "push_up",
    "next_strategy",
    "activation_sources",
    "AdaptPolicy",
]

STRATEGIES = ("min", "mean", "max")
VARIANTS = ("reference", "corrected")
#: Smoothing of the corrected KL: each bin probability p becomes (p + eps) / (1 + res * eps).
KL_EPSILON = 1e-10

#: ``kl_threshold`` value selecting the G-test threshold :func:`loss_free_threshold` (the corrected default).
G_TEST = "g_test"
#: Default significance level of the G-test threshold (``kl_alpha``).
KL_ALPHA = 0.05

#: Every quirk option and its value under each variant (the table of the module docstring).
VARIANT_OPTIONS = {
    "reference": dict(test_slice="first", kl="reference", kl_threshold=0.0, fl_probe="lo",
                      bisection_return="lower", activation_map="released", bias_format="preceding",
                      normalize_gradients=True, strategy_average="released", initial_quantization="first_step"),
    "corrected": dict(test_slice="all", kl="corrected", kl_threshold=G_TEST, fl_probe="mid",
                      bisection_return="first_loss_free", activation_map="own", bias_format="own_layer",
                      normalize_gradients=False, strategy_average="mean", initial_quantization="setup"),
}
#: The two variant values of each option; ``kl_threshold`` also accepts any real number >= 0.
_OPTION_VALUES = {
    "test_slice": ("first", "all"),
    "kl": VARIANTS,
    "kl_threshold": (0.0, G_TEST),
    "fl_probe": ("lo", "mid"),
    "bisection_return": ("lower", "first_loss_free"),
    "activation_map": ("released", "own"),
    "bias_format": ("preceding", "own_layer"),
    "normalize_gradients": (True, False),
    "strategy_average": ("released", "mean"),
    "initial_quantization": ("first_step", "setup"),
}


# --------------------------------------------------------------------------- validation
def _int(name, value, low=None, high=None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def _number(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _choice(name, value, allowed):
    if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _bounds(lo_name, lo, hi_name, hi, low=0, literal=False):
    lo, hi = _int(lo_name, lo, low), _int(hi_name, hi, low)
    if lo > hi and not literal:
        raise ValueError(f"{lo_name} ({lo}) must be <= {hi_name} ({hi})")
    return lo, hi


def _tensor(name, w) -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(w).__name__}")
    if w.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    return w


def _alpha(name, value) -> float:
    value = _number(name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def _threshold(name, value):
    """``"g_test"`` or a real number >= 0 (returned as float)."""
    if isinstance(value, str):
        if value != G_TEST:
            raise ValueError(f"{name} must be {G_TEST!r} or a real number >= 0, got {value!r}")
        return value
    try:
        value = _number(name, value)
    except ValueError:
        raise ValueError(f"{name} must be {G_TEST!r} or a real number >= 0, got {value!r}") from None
    if not value >= 0:
        raise ValueError(f"{name} must be {G_TEST!r} or a real number >= 0, got {value}")
    return value


def _format_args(wl, fl):
    return _int("wl", wl, 1, 32), _int("fl", fl, 0, 32)


# --------------------------------------------------------------------------- pure rules
def gradient_diversity(count, grad_sum: torch.Tensor) -> float:
    """Gradient diversity ``GD = count / ||S||_2`` of the buffered gradients (``MSGD_FP.__g_div``).

    ``S`` is the sum of the gradients collected since the tensor's last switch and
    ``count`` their number.  For unit-norm gradients ``count = sum_k ||g_k||``, so this
    is ``sum_k ||g_k|| / ||sum_k g_k|| >= 1`` (triangle inequality); without the
    normalization, pass ``sum_k ||g_k||`` as ``count`` (a real number) to get the same
    quantity.  ``inf`` when ``||S|| = 0`` (``nan`` when also ``count = 0``).  Computed
    in float32 as released (a float32 tensor there).
    """
    count = _number("count", count)
    if not count >= 0:
        raise ValueError(f"count must be >= 0, got {count}")
    _tensor("grad_sum", grad_sum)
    norm = torch.linalg.vector_norm(grad_sum.float())
    return float(torch.tensor(count, dtype=torch.float32, device=norm.device) / norm)


def next_lookback(lookback: int, gd: float, min_lookback: int, max_lookback: int, momentum: float,
                  literal_bounds: bool = False) -> int:
    """The lookback update (``MSGD_FP.__adapt_lookback``), run every step before the switching test::

        LB_new = ceil(clip(MAX_LB / GD, MIN_LB, MAX_LB))   if GD > 0 else MAX_LB
        LB     = ceil(momentum * LB_new + (1 - momentum) * LB)

    ``MAX_LB / GD`` is a float32 division (GD is a float32 tensor in the release);
    ``GD = inf`` gives ``MIN_LB``, ``GD = nan`` (never > 0) gives ``MAX_LB``.  The
    blend is float64 Python arithmetic in exactly the released order.

    ``literal_bounds=True`` accepts ``min_lookback > max_lookback`` (some released SDM
    configs: ``MIN_LOOKBACK = 256``, ``MAX_LOOKBACK = 100``) and evaluates the formula as
    written: ``min(max(r, 256), 100) = 100`` for every GD.
    """
    lookback = _int("lookback", lookback, 0)
    min_lookback, max_lookback = _bounds("min_lookback", min_lookback, "max_lookback", max_lookback,
                                         literal=literal_bounds)
    momentum = _number("momentum", momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    gd = _number("gd", gd)
    if gd < 0:
        raise ValueError(f"gd must be >= 0 (or inf/nan), got {gd}")
    if gd > 0:
        with np.errstate(over="ignore"):  # a GD beyond float32's range is inf there too: ratio 0
            ratio = float(np.float32(max_lookback) / np.float32(gd))
        lb_new = math.ceil(min(max(ratio, min_lookback), max_lookback))
    else:
        lb_new = max_lookback
    return math.ceil(lb_new * momentum + lookback * (1.0 - momentum))


def next_resolution(resolution: int, lookback: int, min_lookback: int, max_lookback: int,
                    min_resolution: int, max_resolution: int, literal_bounds: bool = False) -> int:
    """The histogram-resolution update (``MSGD_FP.__adapt_resolution``)::

        if LB == MAX_LB: res = clip(res + 1, MIN_RES, MAX_RES)
        if LB == MIN_LB: res = clip(res - 1, MIN_RES, MAX_RES)

    Two independent ``if`` s, as released: with ``MIN_LB == MAX_LB`` both apply.
    """
    resolution = _int("resolution", resolution, 1)
    lookback = _int("lookback", lookback, 0)
    min_lookback, max_lookback = _bounds("min_lookback", min_lookback, "max_lookback", max_lookback,
                                         literal=literal_bounds)
    min_resolution, max_resolution = _bounds("min_resolution", min_resolution, "max_resolution", max_resolution, 1)
    if lookback == max_lookback:
        resolution = min(max(resolution + 1, min_resolution), max_resolution)
    if lookback == min_lookback:
        resolution = min(max(resolution - 1, min_resolution), max_resolution)
    return int(resolution)


def information_loss(w: torch.Tensor, wl: int, fl: int, resolution: int, variant: str = "reference",
                     generator=None, *, epsilon: float = KL_EPSILON) -> float:
    """The quantization information-loss test value (``MSGD_FP.__fpq_loss``).

    Loss iff the value ``> 0`` as released; the corrected policy compares the corrected
    value with :func:`loss_free_threshold` instead (``kl_threshold="g_test"``).

    ``w_hat = Q(w, wl, fl)`` with stochastic rounding from ``generator``.

    ``"reference"`` -- exactly as released::

        P  = histc(w, res)                          # over [min w, max w]
        Qh = histc(w_hat, res, min(w), max(w))      # values outside are dropped
        P, Qh = P / sum(P), Qh / sum(Qh)
        KLDivLoss(reduction="batchmean", log_target=True)(P, Qh)
            = (1/res) * sum_b exp(Qh_b) * (Qh_b - P_b)

    i.e. probabilities where log-probabilities are expected: not a divergence, and it
    can be negative.  ``nan`` when every quantized value falls outside the range
    (``sum(Qh) = 0``); ``nan > 0`` is false, so that counts as "no loss", as released.

    ``"corrected"`` -- ``D_KL(P || Q) = sum_b P_b log(P_b / Q_b)`` in float64, both
    histograms over ``[min(w, w_hat), max(w, w_hat)]`` (saturated values count), each
    smoothed as ``(p + epsilon) / (1 + res * epsilon)``.  ``>= 0``, and exactly 0 iff
    the two histograms are identical bin by bin.
    """
    _tensor("w", w)
    wl, fl = _format_args(wl, fl)
    resolution = _int("resolution", resolution, 1)
    _choice("variant", variant, VARIANTS)
    epsilon = _number("epsilon", epsilon)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    w = w.detach()
    w_hat = fixed_point(w, wl, fl, "stochastic", generator)
    if variant == "reference":
        lo, hi = torch.aminmax(w)
        p = torch.histc(w, bins=resolution)
        q = torch.histc(w_hat, bins=resolution, min=float(lo), max=float(hi))
        p, q = p / p.sum(), q / q.sum()
        return float(F.kl_div(p, q, reduction="batchmean", log_target=True))
    lo = float(torch.minimum(w.min(), w_hat.min()))
    hi = float(torch.maximum(w.max(), w_hat.max()))
    p = torch.histc(w, bins=resolution, min=lo, max=hi).double()
    q = torch.histc(w_hat, bins=resolution, min=lo, max=hi).double()
    p = (p / p.sum() + epsilon) / (1.0 + resolution * epsilon)
    q = (q / q.sum() + epsilon) / (1.0 + resolution * epsilon)
    return float((p * torch.log(p / q)).sum())


def loss_free_threshold(n, resolution, alpha: float = KL_ALPHA) -> float:
    """The corrected variant's loss-free threshold on ``D_KL``: ``chi2.isf(alpha, k - 1) / (2 n)``.

    Not in the release (whose threshold is 0, docs/method.md §1.4.6); the corrected
    variant's decision (``kl_threshold="g_test"``), derived in docs/method.md §1.4.6.
    ``n`` is the number of values tested, ``k = resolution`` the number of bins.

    Why: a histogram of ``n`` values drawn from a distribution ``Q`` has
    ``G = 2 n D_KL(P_hat || Q)`` asymptotically chi-square with ``k - 1`` degrees of
    freedom (Wilks' theorem for the multinomial; the G-test), and ``D_KL`` is
    symmetric to second order, so the direction does not matter at that order.  A
    divergence below the ``1 - alpha`` quantile of ``G / (2 n)`` is within what
    resampling the same distribution at this histogram's resolution would produce:
    "loss-free" means indistinguishable at the histogram's own sampling resolution.
    It is a scale set by sampling noise, not an exact test: the two histograms are
    not independent samples (``Q(w)`` is a function of ``w``), both are estimated (two
    independent samples would give about twice the variance), the bins are fit to the
    data's range, and the chi-square limit needs several values per bin (``n >> k``;
    for ``n`` of the order of ``k`` the threshold is large and little is called lossy).

    ``k = 1`` gives 0 (one bin: ``D_KL = 0`` exactly).  Uses ``scipy.stats.chi2.isf``
    (the upper quantile, accurate for small ``alpha``).
    """
    n = _int("n", n, 1)
    resolution = _int("resolution", resolution, 1)
    alpha = _alpha("alpha", alpha)
    if resolution == 1:
        return 0.0
    from scipy.stats import chi2  # imported here: scipy's import is slow and most users never need it

    return float(chi2.isf(alpha, resolution - 1)) / (2.0 * n)


def _bisect(lossy, lo: int, hi: int, probe: str) -> tuple:
    """The released bisection loop of ``__push_down_fl`` / ``__push_down_wl``; returns (lo, hi)."""
    for _ in range(hi - lo):
        mid = math.ceil((hi + lo) / 2)
        if lossy(lo if probe == "lo" else mid):
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1:
            break
    return lo, hi


def push_down(w: torch.Tensor, wl: int, fl: int, resolution: int, variant: str = "reference",
              fl_floor: int = 4, generator=None, *, kl: Optional[str] = None, probe: Optional[str] = None,
              bisection_return: Optional[str] = None, threshold=0.0, alpha: float = KL_ALPHA,
              epsilon: float = KL_EPSILON, record: Optional[list] = None) -> tuple[int, int]:
    """PushDown (``MSGD_FP.__push_down``): lower FL, then WL, by bisection on :func:`information_loss`.

    As released (``variant="reference"``)::

        # FL at fixed WL = wl, bracket lo = fl_floor, hi = fl
        for n in range(hi - lo):
            mid = ceil((hi + lo) / 2)
            l = loss(w, wl, lo)                # sic: the lower bound, not mid
            if l > 0: lo = mid  else: hi = mid
            if hi - lo <= 1: break
        FL' = lo                               # fl <= fl_floor: empty loop, FL' = fl_floor
        # WL at fixed FL', bracket lo = FL', hi = wl; probes loss(w, mid, FL')
        WL' = lo                               # the lower bracket, not the first loss-free

    ``variant="corrected"`` probes ``mid`` and searches with the bracket starting one
    below the floor (every value of ``[fl_floor, fl]`` resp. ``[FL', wl]`` is a
    candidate, the start value assumed acceptable), returning the upper bracket: the
    smallest loss-free FL at ``wl``, then the smallest loss-free WL at it, when the
    loss is monotone.  It never raises FL: ``fl < fl_floor`` stays.

    The keyword-only ``kl`` (the :func:`information_loss` variant), ``probe``
    (``"lo"``/``"mid"``, FL loop only; the WL loop always probes ``mid``) and
    ``bisection_return`` (``"lower"``/``"first_loss_free"``) override the variant's
    choices one by one.  Information loss is ``value > threshold``: ``threshold`` is a
    real number >= 0 (0 as released) or ``"g_test"``, which uses
    :func:`loss_free_threshold` ``(w.numel(), resolution, alpha)`` (the corrected
    policy's default, ``kl_threshold``; this function's default stays 0).

    ``record``: a list to which every probe appends ``{"stage": "fl" | "wl",
    "word_length", "fractional_length", "value", "threshold", "lossy"}`` (the format
    tested, the :func:`information_loss` value, the threshold it was compared with and
    the outcome), in evaluation order.
    """
    _tensor("w", w)
    wl, fl = _format_args(wl, fl)
    resolution = _int("resolution", resolution, 1)
    _choice("variant", variant, VARIANTS)
    fl_floor = _int("fl_floor", fl_floor, 0, 32)
    opts = VARIANT_OPTIONS[variant]
    kl = _choice("kl", opts["kl"] if kl is None else kl, VARIANTS)
    probe = _choice("probe", opts["fl_probe"] if probe is None else probe, _OPTION_VALUES["fl_probe"])
    bisection_return = _choice("bisection_return", opts["bisection_return"] if bisection_return is None
                               else bisection_return, _OPTION_VALUES["bisection_return"])
    threshold = _threshold("threshold", threshold)
    alpha = _alpha("alpha", alpha)
    if threshold == G_TEST:
        threshold = loss_free_threshold(w.numel(), resolution, alpha)
    if record is not None and not isinstance(record, list):
        raise ValueError(f"record must be None or a list, got {type(record).__name__}")

    def lossy(stage, wl_, fl_):
        value = information_loss(w, wl_, fl_, resolution, kl, generator, epsilon=epsilon)
        out = value > threshold
        if record is not None:
            record.append({"stage": stage, "word_length": wl_, "fractional_length": fl_, "value": value,
                           "threshold": threshold, "lossy": out})
        return out

    if bisection_return == "lower":
        lo, _ = _bisect(lambda f: lossy("fl", wl, f), fl_floor, fl, probe)
        fl_new = lo
        lo, _ = _bisect(lambda x: lossy("wl", x, fl_new), fl_new, wl, "mid")
        return lo, fl_new
    # Lower-bound searches: the sentinel below the range is never evaluated.
    lo, hi = fl_floor - 1, fl
    if hi - lo > 1:
        _, hi = _bisect(lambda f: lossy("fl", wl, max(f, 0)), lo, hi, probe)
    fl_new = hi
    lo, hi = max(fl_new, 1) - 1, wl
    if hi - lo > 1:
        _, hi = _bisect(lambda x: lossy("wl", max(x, 1), fl_new), lo, hi, "mid")
    return hi, fl_new


def push_up(wl: int, fl: int, gd: float, strategy: str = "min", results_buffer: int = 8) -> tuple[int, int]:
    """PushUp (``MSGD_FP.__push_up``, the ``QUANT_GRADS=True`` gradient-diversity branch)::

        s = 1
        if 0 < GD < inf:
            t = ln(GD) - 1                                   # float32
            if t > 0:
                s1 = max(ceil(1 / t^2), 1)
                s2 = max(min(ceil(32 t^2), 32) - FL, 0)
                s  = min(s1, s2) | ceil((s1 + s2) / 2) | max(s1, s2)   # min | mean | max
        FL = min(FL + s, 32);  WL = min(max(WL, FL) + 1, 32)
        FL = min(FL, 32 - RB); WL = max(min(FL + RB, 32), WL)         # results buffer, always

    So afterwards ``WL >= FL + RB`` (capped at 32) and ``FL <= 32 - RB``.
    """
    wl, fl = _format_args(wl, fl)
    gd = _number("gd", gd)
    if gd < 0:
        raise ValueError(f"gd must be >= 0 (or inf/nan), got {gd}")
    _choice("strategy", strategy, STRATEGIES)
    results_buffer = _int("results_buffer", results_buffer, 0, 32)
    s = 1
    with np.errstate(over="ignore"):
        gd = float(np.float32(gd))  # GD is a float32 tensor in the release: beyond its range it is inf
    if 0 < gd < math.inf:
        t = torch.log(torch.tensor([gd], dtype=torch.float32)) - 1
        if float(t) > 0:
            tt = t * t
            s1 = max(math.ceil(float(1 / tt)), s)
            s2 = max(min(math.ceil(float(32 * tt)), 32) - fl, 0)
            if strategy == "min":
                s = min(s1, s2)
            elif strategy == "mean":
                s = math.ceil(0.5 * (s1 + s2))
            else:
                s = max(s1, s2)
    fl = min(fl + s, 32)
    wl = min(max(wl, fl) + 1, 32)
    fl = min(fl, 32 - results_buffer)
    wl = max(min(fl + results_buffer, 32), wl)
    return wl, fl


def next_strategy(strategy: str, loss_history: list, loss: float, average_lookback: int, *,
                  average: str = "released") -> tuple[str, list]:
    """The push-up strategy adaptation (``MSGD_FP.__adapt_strategy``), every step::

        if len(hist) > avg_lb:
            A = |sum(hist) / avg_lb| ; L = |loss|
            if A <= L and strategy == 'mean': strategy = 'max'
            if A <= L and strategy == 'min':  strategy = 'mean'
            if A >  L:                        strategy = 'min'
            hist = hist[-avg_lb:]
        hist.append(loss)

    One escalation step per call (min -> mean -> max, max stays), any improvement
    resets to min.  ``avg_lb = int(mean of every tensor's lookback)``.  As released,
    ``hist`` holds ``avg_lb + 1`` losses at the comparison, so ``A`` is their sum over
    ``avg_lb``; ``average="mean"`` (corrected) uses the mean of the last ``avg_lb``
    losses instead.  Returns the new strategy and a new history list (the input is
    not modified).
    """
    _choice("strategy", strategy, STRATEGIES)
    if not isinstance(loss_history, (list, tuple)):
        raise ValueError(f"loss_history must be a list of numbers, got {type(loss_history).__name__}")
    loss = _number("loss", loss)
    average_lookback = _int("average_lookback", average_lookback, 1)
    _choice("average", average, ("released", "mean"))
    hist = [float(h) for h in loss_history]
    if len(hist) > average_lookback:
        if average == "released":
            a = abs(sum(hist) / average_lookback)
        else:
            a = abs(sum(hist[-average_lookback:]) / average_lookback)
        l_abs = abs(loss)
        if a <= l_abs and strategy == "mean":
            strategy = "max"
        if a <= l_abs and strategy == "min":
            strategy = "mean"
        if a > l_abs:
            strategy = "min"
        hist = hist[-average_lookback:]
    hist.append(loss)
    return strategy, hist


# --------------------------------------------------------------------------- mappings
def _is_resnet(qmodel) -> bool:
    model = qmodel.model
    return all(hasattr(model, a) for a in ("conv1", "bn1", "layer1", "avgpool", "fc"))


def _is_lenet(qmodel) -> bool:
    from adapt.models import LeNet5

    return isinstance(qmodel.model, LeNet5)


def _owner_weights(qmodel) -> dict:
    """Layer name -> index of its 'own' weight tensor: its own dim>1 parameter, else the nearest
    preceding layer's (registration order), else the first weight of the model (None if none)."""
    names = list(qmodel.params)
    index = {n: i for i, n in enumerate(names)}
    weights = [i for i, n in enumerate(names) if qmodel.params[n].is_weight]
    first = weights[0] if weights else None
    out, last = {}, None
    for lname, layer in qmodel.layers.items():
        own = [index[p] for p in layer.params if p in index and qmodel.params[p].is_weight]
        if own:
            last = own[0]
        out[lname] = last if last is not None else first
    return out


def activation_sources(qmodel, mapping: str = "released") -> dict:
    """Layer name -> index of the parameter tensor whose format the layer's input and output take.

    ``"own"``: the layer's own weight (BatchNorm and pooling: the nearest preceding
    layer that has a weight).

    ``"released"``, for a ResNet-shaped model (``conv1, bn1, layer1.., avgpool, fc``),
    ``QResNet_FP.forward`` / ``__forward_helper``: ``conv1`` -> tensor 0, ``bn1`` ->
    tensor 2; the quantizable layers inside the stages, in module order (conv1, bn1,
    conv2, bn2, shortcut conv, shortcut bn of each block), -> tensors 0, 1, 2, ...
    (the counter restarts at 0: it counts *layers* but indexes *parameter tensors*);
    ``avgpool`` -> tensor P-3, ``fc`` -> tensor P-1 (P tensors).  Otherwise the
    ``QAlexNet_FP.forward`` rule: the k-th quantizable layer that owns parameters ->
    tensor k (so AlexNet's conv2 takes conv1's bias = conv1's format, conv3 and conv4
    conv2's, conv5 and the classifier conv3's); a parameter-less quantizable layer,
    which the release does not quantize, takes the preceding layer's source.

    LeNet-5 (``QLeNet5_FP.forward``): the convs keep the initial format (source ``None``),
    both average pools and both linears take tensor 0's (``conv1.weight``) -- see the
    comment in the code for why.
    """
    _choice("mapping", mapping, ("released", "own"))
    if mapping == "own":
        return _owner_weights(qmodel)
    n_params = len(qmodel.params)
    out = {}
    if _is_lenet(qmodel):
        # QLeNet5_FP (lorenz0890/AdaPT@81e54e0 models/lenet5_fp.py L76-L90, L206-L252): `perm` is keyed
        # by the index in self.modules() (0 = the model, 1 = the Sequential, 2 = layers[0], ...) but read
        # with the index in self.layers, and its counter j is never incremented, so every entry is 0 or
        # None.  layers[i] is set from qmap entry 0 (conv1.weight's format) iff module i has parameters:
        # modules 2, 5, 8, 10 (conv1, conv2, conv3, fc1; 12 = fc2 has no layer 12) set layers 2 (pool1),
        # 5 (pool2), 8 (fc1) and 10 (fc2).  The three convs (layers 0, 3, 6 read modules 0, 3, 6: the
        # model, tanh1, tanh2, without parameters) are never set and keep the initial format of their
        # construction (wl_start, fl_start): source None.
        for lname in qmodel.layers:
            out[lname] = None if ".conv" in f".{lname}" else 0
        return {k: (None if v is None else min(max(v, 0), n_params - 1)) for k, v in out.items()}
    if _is_resnet(qmodel):
        ctr = 0
        for lname, layer in qmodel.layers.items():
            if lname == "conv1":
                out[lname] = 0
            elif lname == "bn1":
                out[lname] = 2
            elif lname.startswith("layer"):
                out[lname] = ctr
                ctr += 1
            elif lname == "fc":
                out[lname] = n_params - 1
            else:  # the average pool (and anything else outside the stages)
                out[lname] = n_params - 3
    else:
        k, last = 0, 0
        for lname, layer in qmodel.layers.items():
            if layer.params:
                out[lname] = last = k
                k += 1
            else:
                out[lname] = last
    return {k: min(max(v, 0), n_params - 1) if n_params else None for k, v in out.items()}


def _bias_sources(qmodel, mode: str) -> list:
    """For every tensor index: the index a 1-D tensor copies from (None for weights)."""
    names = list(qmodel.params)
    owners = _owner_weights(qmodel) if mode == "own_layer" else None
    weights = [i for i, n in enumerate(names) if qmodel.params[n].is_weight]
    out = []
    for i, name in enumerate(names):
        qp = qmodel.params[name]
        if qp.is_weight:
            out.append(None)
        elif mode == "preceding":
            out.append(i - 1 if i > 0 else len(names) - 1)  # qmap[i - 1]: index -1 is the last tensor
        else:
            src = owners.get(qp.layer) if qp.layer is not None else None
            if src is None:
                before = [j for j in weights if j < i]
                src = before[-1] if before else (weights[0] if weights else None)
            out.append(src)
    return out


# --------------------------------------------------------------------------- the policy
class AdaptPolicy(PrecisionPolicy):
    """AdaPT (the official ``MSGD_FP`` heuristic) as a precision policy; see the module docstring.

    Defaults are the ``MSGD_FP`` constructor's; the experiment configs override them
    (docs/method.md §1.6).  ``variant`` picks the released or the corrected behaviour of
    every quirk option (table above); an option given explicitly overrides it.
    ``seed`` seeds the policy's own ``torch.Generator`` (stochastic rounding inside
    the information-loss test), independent of the global RNG and of the
    ``QuantizedModel``'s generator.

    Timings: :attr:`timings` accumulates ``time.perf_counter`` seconds of the parts of
    :meth:`before_step` -- ``normalize`` (gradient norms and the division: the released
    optimizer's SGD variant), ``strategy`` (nonzero counts, precision penalty, strategy
    rule), ``bookkeeping`` (accumulation, GD, lookback, resolution, format copies),
    ``push_down``, ``push_up``, ``total`` -- and the number of ``steps``; not
    checkpointed.  On CUDA a part that syncs absorbs whatever GPU work is still queued.
    """

    name = "adapt"
    quantized = True

    def __init__(self, min_resolution: int = 1, max_resolution: int = 100, min_lookback: int = 10,
                 max_lookback: int = 100, results_buffer: int = 8, lookback_momentum: float = 0.33,
                 push_up_strategy: str = "min", initial_word_length: int = 8, initial_fractional_length: int = 4,
                 variant: str = "reference", *, test_slice=None, kl=None, fl_probe=None, bisection_return=None,
                 activation_map=None, bias_format=None, normalize_gradients=None, strategy_average=None,
                 initial_quantization=None, switch_at: str = "step", kl_threshold=None,
                 kl_alpha: float = KL_ALPHA, kl_epsilon: float = KL_EPSILON, fl_floor: int = 4, log_interval: int = 10, seed: int = 0,
                 loss_penalty: bool = True, lookback_bounds: str = "checked"):
        self.min_resolution, self.max_resolution = _bounds("min_resolution", min_resolution,
                                                           "max_resolution", max_resolution, 1)
        self.lookback_bounds = _choice("lookback_bounds", lookback_bounds, ("checked", "literal"))
        self._literal_bounds = self.lookback_bounds == "literal"
        self.min_lookback, self.max_lookback = _bounds("min_lookback", min_lookback, "max_lookback", max_lookback, 1,
                                                       literal=self._literal_bounds)
        if not isinstance(loss_penalty, bool):
            raise ValueError(f"loss_penalty must be True or False, got {loss_penalty!r}")
        self.use_loss_penalty = loss_penalty
        self.results_buffer = _int("results_buffer", results_buffer, 0, 32)
        self.lookback_momentum = _number("lookback_momentum", lookback_momentum)
        if not 0.0 <= self.lookback_momentum <= 1.0:
            raise ValueError(f"lookback_momentum must be in [0, 1], got {lookback_momentum}")
        self.initial_strategy = _choice("push_up_strategy", push_up_strategy, STRATEGIES)
        self.initial_format = FixedPoint(_int("initial_word_length", initial_word_length, 1, 32),
                                         _int("initial_fractional_length", initial_fractional_length, 0, 32))
        self.variant = _choice("variant", variant, VARIANTS)
        given = dict(test_slice=test_slice, kl=kl, kl_threshold=kl_threshold, fl_probe=fl_probe,
                     bisection_return=bisection_return, activation_map=activation_map, bias_format=bias_format,
                     normalize_gradients=normalize_gradients, strategy_average=strategy_average,
                     initial_quantization=initial_quantization)
        self.options = {}
        for key, value in given.items():
            value = VARIANT_OPTIONS[variant][key] if value is None else value
            if key == "kl_threshold":  # any real number >= 0, not only the two variant values
                self.options[key] = _threshold(key, value)
            else:
                self.options[key] = _choice(key, value, _OPTION_VALUES[key])
        self.switch_at = _choice("switch_at", switch_at, ("step", "epoch"))
        self.kl_threshold = self.options["kl_threshold"]
        self.kl_alpha = _alpha("kl_alpha", kl_alpha)
        self.kl_epsilon = _number("kl_epsilon", kl_epsilon)
        if not self.kl_epsilon > 0:
            raise ValueError(f"kl_epsilon must be > 0, got {kl_epsilon}")
        self.fl_floor = _int("fl_floor", fl_floor, 0, 32)
        self.log_interval = _int("log_interval", log_interval, 1)
        self.seed = _int("seed", seed)
        self.trace = TensorTrace(self.log_interval)
        self.timings = defaultdict(float)
        self._formats = {}

    @classmethod
    def from_config(cls, config) -> "AdaptPolicy":
        """``AdaptPolicy(variant=config.variant, **config.policy, seed=config.seed)``."""
        return cls(variant=config.variant, seed=config.seed, **dict(config.policy))

    def __getattr__(self, name):  # options read as attributes: policy.test_slice, ...
        options = self.__dict__.get("options")
        if options is not None and name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    # -- set-up ------------------------------------------------------------------------
    def setup(self, model, qmodel, config) -> None:
        super().setup(model, qmodel, config)
        if qmodel is None:
            raise ValueError("AdaptPolicy needs a QuantizedModel (policy.quantized is True)")
        self.accumulation_steps = int(getattr(config, "accumulation_steps", 1) or 1)
        self.names = list(qmodel.params)
        self._qps = [qmodel.params[n] for n in self.names]
        self._is_weight = [qp.is_weight for qp in self._qps]
        n = len(self.names)
        fmt = self.initial_format
        self.wl = [fmt.word_length] * n
        self.fl = [fmt.fractional_length] * n
        self.lookback = [self.min_lookback] * n
        self.resolution = [self.min_resolution] * n
        self.count = [0] * n
        self.norm_sum = [0.0] * n
        self.grad_sum = [None] * n
        self.strategy = self.initial_strategy
        self.loss_history: list = []
        self.events: list = []
        self.strategy_log = {"step": [], "epoch": [], "strategy": []}
        self._epoch_acc = {"penalty_sum": 0.0, "steps": 0, "switches": 0, "changes": 0}
        self._last_epoch = {}
        self._last_penalty = None
        self._last_step = -1
        self._bias_src = _bias_sources(qmodel, self.options["bias_format"])
        self._act_src = activation_sources(qmodel, self.options["activation_map"])
        self.generator = torch.Generator()  # CPU: the information-loss test runs on CPU copies
        # A seed of its own: the loop seeds the QuantizedModel's generator with seed + 1.
        self.generator.manual_seed((self.seed * 6364136223846793005 + 1442695040888963407) % (1 << 63))
        self._apply_formats()
        if self.options["initial_quantization"] == "setup":
            qmodel.quantize_weights()

    def _fmt(self, wl: int, fl: int) -> FixedPoint:
        key = (wl, fl)
        fmt = self._formats.get(key)
        if fmt is None:
            fmt = self._formats[key] = FixedPoint(wl, fl)
        return fmt

    def _apply_formats(self) -> None:
        fmts = [self._fmt(w, f) for w, f in zip(self.wl, self.fl)]
        for qp, fmt in zip(self._qps, fmts):
            qp.weight_format = fmt
            qp.grad_format = fmt
        for lname, layer in self.qmodel.layers.items():
            src = self._act_src.get(lname)
            fmt = fmts[src] if src is not None else self.initial_format
            layer.input_format = fmt
            layer.output_format = fmt

    # -- the per-step rule -------------------------------------------------------------
    def loss_penalty(self, nnz: Optional[list] = None) -> float:
        """``mean_i(WL_i / 32 * nnz(p_i) / numel(p_i))`` over all parameter tensors (docs/method.md §1.5).

        A constant with no gradient: the official loss adds it, which only changes the
        logged loss and, through it, the push-up strategy rule (see the module docstring).
        ``nnz`` (the nonzero counts, in tensor order) is computed when not given.
        """
        if not self._qps:
            return 0.0
        if nnz is None:
            nnz = torch.stack(self._nonzeros()).tolist()
        pen = 0
        for wl, k, qp in zip(self.wl, nnz, self._qps):
            pen += wl / 32 * int(k) / qp.param.numel()
        return pen / len(self._qps)

    def _nonzeros(self) -> list:
        # The L0 "norm" counts nonzeros, exactly (counts < 2**24), in one multi-tensor launch on CUDA.
        return list(torch._foreach_norm([qp.param.detach() for qp in self._qps], 0))

    @torch.no_grad()
    def before_step(self, step: int, loss: float) -> None:
        t_start = time.perf_counter()
        timings = self.timings
        live = [i for i, qp in enumerate(self._qps) if qp.param.grad is not None]
        grads = [self._qps[i].param.grad for i in live]
        normalize = self.options["normalize_gradients"]
        # Everything on the device first, then one transfer for all the numbers the rules need:
        # the nonzero counts (penalty), the gradient norms and the norms of the GD buffers.  On
        # CPU the multi-tensor norm is torch.linalg.vector_norm tensor by tensor (bit-identical to
        # gradient_diversity); CUDA's fused kernel may differ from it in the last bit.
        nnz = self._nonzeros()
        t_norm = time.perf_counter()
        grad_norms = list(torch._foreach_norm(grads)) if grads else []
        if grads and normalize:
            # g / ||g|| where ||g|| > 0 (MSGD_FP.step), in place; dividing by 1 elsewhere is exact.
            # A float32 divisor on the device divides exactly as the Python float of its value did;
            # on CUDA one launch for all tensors (adapt.quant.divide_many_), on CPU a loop of div_.
            norms = torch.stack(grad_norms)
            divide_many_(grads, torch.where(norms > 0, norms, torch.ones_like(norms)))
        t_div = time.perf_counter()

        weights = [i for i in live if self._is_weight[i]]
        if weights:
            acc_sums, acc_grads = [], []
            for k, i in enumerate(live):
                if not self._is_weight[i]:
                    continue
                g = grads[k]
                if self.grad_sum[i] is None:
                    self.grad_sum[i] = g.detach().float().clone()
                else:
                    acc_sums.append(self.grad_sum[i])
                    acc_grads.append(g)
                self.count[i] += 1
            if acc_sums:
                torch._foreach_add_(acc_sums, acc_grads)
        sum_norms = list(torch._foreach_norm([self.grad_sum[i] for i in weights])) if weights else []
        device_values = nnz + grad_norms + sum_norms
        values = torch.stack(device_values).tolist() if device_values else []
        nnz, grad_norms = values[:len(nnz)], values[len(nnz):len(nnz) + len(grad_norms)]
        sum_norms = values[len(nnz) + len(grad_norms):]
        t_read = time.perf_counter()

        pen = self.loss_penalty(nnz) if self.use_loss_penalty else 0.0
        self._last_penalty = pen
        self._epoch_acc["penalty_sum"] += pen
        self._epoch_acc["steps"] += 1
        avg_lb = int(sum(self.lookback) / len(self.lookback)) if self.lookback else self.min_lookback
        self.strategy, self.loss_history = next_strategy(
            self.strategy, self.loss_history, float(loss) + pen / self.accumulation_steps, max(avg_lb, 1),
            average=self.options["strategy_average"])
        t2 = time.perf_counter()
        timings["normalize"] += t_div - t_norm
        timings["strategy"] += (t_norm - t_start) + (t2 - t_read)

        gds = {}
        if weights:
            if not normalize:
                for k, i in enumerate(live):
                    if self._is_weight[i]:
                        self.norm_sum[i] += grad_norms[k]
            gds = dict(zip(weights, self._gd_values(weights, sum_norms)))
        timing_push = [0.0, 0.0]
        inline_copy = self.options["bias_format"] == "preceding"
        for i in live:
            if self._is_weight[i]:
                self.lookback[i] = next_lookback(self.lookback[i], gds[i], self.min_lookback, self.max_lookback,
                                                 self.lookback_momentum, self._literal_bounds)
                self.resolution[i] = next_resolution(self.resolution[i], self.lookback[i], self.min_lookback,
                                                     self.max_lookback, self.min_resolution, self.max_resolution,
                                                     self._literal_bounds)
                if self.switch_at == "step" and self.count[i] >= self.lookback[i]:
                    self._switch(i, step, gds[i], timing_push)
            elif inline_copy:
                self._copy_from_source(i)  # qmap[i - 1]: already updated this step when i - 1 was
        if not inline_copy:  # own layer's weight: after every weight has switched
            for i in live:
                if not self._is_weight[i]:
                    self._copy_from_source(i)
        self._apply_formats()
        self._last_step = int(step)
        t_end = time.perf_counter()
        timings["push_down"] += timing_push[0]
        timings["push_up"] += timing_push[1]
        timings["bookkeeping"] += (t_end - t2) + (t_read - t_div) - timing_push[0] - timing_push[1]
        timings["total"] += t_end - t_start
        timings["steps"] += 1

    def _diversities(self, indices) -> list:
        """GD of each listed weight tensor's buffer; one device sync for all (same values as
        :func:`gradient_diversity`)."""
        norms = torch.stack(torch._foreach_norm([self.grad_sum[i] for i in indices])).tolist()
        return self._gd_values(indices, norms)

    def _gd_values(self, indices, norms) -> list:
        """``float32(numerator) / float32(norm)`` per listed tensor, ``norms`` being its buffer's norm
        (a float32 value): the float32 division of :func:`gradient_diversity`, done on the host (IEEE
        division, so the same bits as the tensor division)."""
        if self.options["normalize_gradients"]:
            numer = np.array([float(self.count[i]) for i in indices], dtype=np.float32)
        else:
            numer = np.array([self.norm_sum[i] for i in indices], dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (numer / np.array(norms, dtype=np.float32)).tolist()

    def _copy_from_source(self, i: int) -> None:
        src = self._bias_src[i]
        if src is None:
            return
        self.wl[i], self.fl[i] = self.wl[src], self.fl[src]
        self.resolution[i], self.lookback[i] = self.resolution[src], self.lookback[src]

    def _switch(self, i: int, step: int, gd: float, timing: list) -> None:
        """PushDown on the FP32 master, then PushUp; clear the buffer; record the event."""
        t0 = time.perf_counter()
        master = self._qps[i].master.detach()
        # The bisection runs on a CPU copy with the policy's CPU generator: the same numbers on
        # every device, and no device sync per probe on an accelerator.
        w = (master[0] if self.options["test_slice"] == "first" else master).to("cpu", torch.float32)
        old = (self.wl[i], self.fl[i])
        wl, fl = push_down(w, old[0], old[1], self.resolution[i], variant=self.variant, fl_floor=self.fl_floor,
                           generator=self.generator, kl=self.options["kl"], probe=self.options["fl_probe"],
                           bisection_return=self.options["bisection_return"], threshold=self.kl_threshold,
                           alpha=self.kl_alpha, epsilon=self.kl_epsilon)
        t1 = time.perf_counter()
        pushed_down = (wl, fl)
        wl, fl = push_up(wl, fl, gd, self.strategy, self.results_buffer)
        t2 = time.perf_counter()
        timing[0] += t1 - t0
        timing[1] += t2 - t1
        self.wl[i], self.fl[i] = wl, fl
        self.count[i], self.norm_sum[i], self.grad_sum[i] = 0, 0.0, None
        self._epoch_acc["switches"] += 1
        self._epoch_acc["changes"] += int((wl, fl) != old)
        self.events.append({
            "step": int(step), "epoch": float(self.epoch_float), "tensor": self.names[i], "index": i,
            "old": [old[0], old[1]], "pushed_down": [pushed_down[0], pushed_down[1]], "new": [wl, fl],
            "lookback": self.lookback[i], "resolution": self.resolution[i],
            "gd": gd if math.isfinite(gd) else None, "strategy": self.strategy,
        })

    def after_step(self, step: int) -> None:
        if self.trace.due(step):
            self.trace.log(step, self.epoch_float, self.qmodel,
                           extra={"lookback": self.lookback, "resolution": self.resolution})
            self.strategy_log["step"].append(int(step))
            self.strategy_log["epoch"].append(float(self.epoch_float))
            self.strategy_log["strategy"].append(self.strategy)

    @torch.no_grad()
    def end_epoch(self, epoch: int, metrics: dict, optimizer) -> bool:
        if self.switch_at == "epoch":
            due = [i for i, w in enumerate(self._is_weight) if w and self.count[i] > 0
                   and self.count[i] >= self.lookback[i]]
            if due:
                timing = [0.0, 0.0]
                gds = dict(zip(due, self._diversities(due)))
                inline_copy = self.options["bias_format"] == "preceding"
                for i in range(len(self._qps)):
                    if i in gds:
                        self._switch(i, self._last_step, gds[i], timing)
                    elif not self._is_weight[i] and inline_copy:
                        self._copy_from_source(i)
                if not inline_copy:
                    for i in range(len(self._qps)):
                        if not self._is_weight[i]:
                            self._copy_from_source(i)
                self._apply_formats()
                self.qmodel.quantize_weights()
                self.timings["push_down"] += timing[0]
                self.timings["push_up"] += timing[1]
        acc = self._epoch_acc
        self._last_epoch = {
            "adapt_strategy": self.strategy,
            "adapt_penalty": acc["penalty_sum"] / acc["steps"] if acc["steps"] else None,
            "adapt_switches": acc["switches"],
            "adapt_format_changes": acc["changes"],
            "adapt_mean_weight_wl": self._mean_weight_wl(),
        }
        self._epoch_acc = {"penalty_sum": 0.0, "steps": 0, "switches": 0, "changes": 0}
        return False

    def _mean_weight_wl(self) -> Optional[float]:
        wls = [wl for wl, w in zip(self.wl, self._is_weight) if w]
        return sum(wls) / len(wls) if wls else None

    def epoch_log(self) -> dict:
        return dict(self._last_epoch)

    # -- records -----------------------------------------------------------------------
    def traces(self) -> dict:
        return {"tensors": self.trace.data, "strategy": self.strategy_log, "switches": self.events}

    trace_state_keys = ("trace", "strategy_log", "events")

    def state_from_traces(self, traces: dict, state: dict) -> dict:
        """:meth:`traces` holds the tensor trace, the strategy log and the switch events as they are."""
        return {"trace": self.trace.state_from_data(traces.get("tensors", {})),
                "strategy_log": traces.get("strategy", {"step": [], "epoch": [], "strategy": []}),
                "events": traces.get("switches", [])}

    def summary(self) -> dict:
        return {
            "variant": self.variant, "options": dict(self.options), "switch_at": self.switch_at,
            "loss_penalty": self.use_loss_penalty, "lookback_bounds": self.lookback_bounds,
            "final_formats": {n: [wl, fl] for n, wl, fl in zip(self.names, self.wl, self.fl)},
            "final_lookback": dict(zip(self.names, self.lookback)),
            "final_resolution": dict(zip(self.names, self.resolution)),
            "strategy": self.strategy, "switch_events": len(self.events),
            "format_changes": sum(1 for e in self.events if e["old"] != e["new"]),
        }

    def state_dict(self) -> dict:
        return {
            "names": list(self.names), "wl": list(self.wl), "fl": list(self.fl),
            "lookback": list(self.lookback), "resolution": list(self.resolution),
            "count": list(self.count), "norm_sum": list(self.norm_sum),
            "grad_sum": {self.names[i]: s.detach().clone() for i, s in enumerate(self.grad_sum) if s is not None},
            "strategy": self.strategy, "loss_history": list(self.loss_history),
            "generator": self.generator.get_state(),
            "trace": self.trace.state_dict(), "strategy_log": {k: list(v) for k, v in self.strategy_log.items()},
            "events": [dict(e) for e in self.events],
            "epoch_acc": dict(self._epoch_acc), "last_epoch": dict(self._last_epoch),
            "last_step": int(self._last_step),
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise ValueError("policy state belongs to a model with different parameter tensors")
        self.wl, self.fl = [int(v) for v in state["wl"]], [int(v) for v in state["fl"]]
        self.lookback = [int(v) for v in state["lookback"]]
        self.resolution = [int(v) for v in state["resolution"]]
        self.count = [int(v) for v in state["count"]]
        self.norm_sum = [float(v) for v in state["norm_sum"]]
        self.grad_sum = [None] * len(self.names)
        for name, s in state["grad_sum"].items():
            i = self.names.index(name)
            self.grad_sum[i] = s.detach().to(self._qps[i].master.device, torch.float32).clone()
        self.strategy = state["strategy"]
        self.loss_history = [float(v) for v in state["loss_history"]]
        self.generator.set_state(state["generator"].cpu())
        self.trace.load_state_dict(state["trace"])
        self.strategy_log = {k: list(v) for k, v in state["strategy_log"].items()}
        self.events = [dict(e) for e in state["events"]]
        self._epoch_acc = dict(state["epoch_acc"])
        self._last_epoch = dict(state["last_epoch"])
        self._last_step = int(state["last_step"])
        self._apply_formats()
