"""MuPPET (Rajagopal et al., ICML 2020): one global dynamic-fixed-point precision, switched by gradient diversity.

Specification: docs/method.md §2.3 (the official code
``ICIdsl/muppet@a5cbb1318dcbd371e98cd7acf35d7773fedf68ba``, cited as ``@a5cbb13``:
``quantize.py``, ``quant_layers.py``, ``scaler.py``, ``quant_sgd.py``, ``policy.py``,
``training.py``), §1.7 (the per-precision epochs AdaPT's code attributes to MuPPET)
and §4 items 13-15.  This is our own code; it follows the released behaviour unless
a deviation is named below.

Pure rules
----------
Each rule of the release is a module-level function.  :class:`MuppetPolicy` calls the
switching and learning-rate rules (:func:`gradient_diversity_from_sums`,
:func:`mean_gradient_diversity`, :func:`check_due`, :func:`gd_step`,
:func:`next_precision`, :func:`fp32_lr_rule`); notebook ``04-muppet`` applies each to
real gradients and replays a committed run with :func:`replay_checks`:

* :func:`scale_exponent` -- the power-of-two scale ``sf`` that dynamic fixed point picks
  for a tensor (or per sample); the quantizer itself is
  :func:`adapt.quant.dynamic_fixed_point`; :func:`dfp_codes` -- its integer codes.
* :func:`gradient_diversity` -- ``sum_i ||g_i||^2 / ||sum_i g_i||^2`` over a list of
  gradients of one tensor (:func:`gradient_diversity_from_sums` from the running sums
  the policy keeps); :func:`mean_gradient_diversity` -- its mean over tensors.
* :func:`check_due` -- whether epoch ``e`` closes a window: ``(e + 1) % resolution == 0``.
* :func:`threshold` -- ``T(e) = 1 + scale * exp(-decay * e)`` (1.5 and 0.1 as released),
  indexed by the absolute 0-based epoch.
* :func:`gd_check` -- the released ``if meanGD >= maxGD: maxGD = meanGD / elif
  maxGD / meanGD > T(e): violation`` step; :func:`patience_rule` -- the violation count
  and the switch decision; :func:`gd_step` -- the three chained, as at every check.
* :func:`next_precision` -- the precision after a switch; :func:`replay_checks` -- the
  rule over a run's logged checks (what a record's trace must follow).
* :func:`fp32_lr_rule` -- the float32 learning-rate decay and stop rule;
  :func:`fp32_lr_schedule` -- the lr of every counted float32 epoch until the stop.
* :data:`PRECISION_SCHEDULE` ``= (8, 12, 14, 16, 32)``; 32 means float32 (the released
  configs write ``-1``, which is accepted too).

The policy (:class:`MuppetPolicy`)
----------------------------------
All quantization points share one global bit width ``b``; every quantizer is
:class:`~adapt.quant.DynamicFixedPoint` (one power-of-two scale per tensor, chosen at
every call, no clamp, stochastic rounding when ``config.rounding`` is
``"stochastic"``, the value of every released config):

* the **model input**: every image of the batch with its own scale (``per_sample``);
  during *training* only -- the released inference loop feeds float inputs;
* the **outputs** of ``Conv2d``, ``Linear``, ``AvgPool2d`` and ``AdaptiveAvgPool2d``
  (MuPPET's ``QuantConv2d`` / ``QuantLinear`` / ``QuantAvgPool2d`` /
  ``QuantAdaptiveAvgPool2d``), one scale for the whole batch, in training *and*
  evaluation (the released layers quantize in every forward).  BatchNorm, ReLU and
  max pooling are not quantized, nor are layer inputs;
* the **activation gradients**: the gradient w.r.t. the input of each of those layers
  (the ``grad_input`` that MuPPET's backward hook quantizes);
* the **weight gradients** of every parameter tensor before the update (BN included:
  ``QuantSGD`` holds all parameters);
* the **weights**, ``Q(master)`` after every update of the FP32 master copy.

**Weight decay** is added in place to the (quantized) gradient using the *quantized*
working weights, as ``QuantSGD.step`` does (``d_p = Q(p.grad); d_p.add_(wd, p.data)``):
:meth:`MuppetPolicy.make_optimizer` builds SGD with ``weight_decay=0`` and
:meth:`MuppetPolicy.before_step` adds ``config.weight_decay * p.data`` to ``p.grad``.
The gradient the policy keeps at the end of an epoch therefore includes it, as
released.

**Switching** (at :meth:`MuppetPolicy.end_epoch`): the last mini-batch gradient of
every named parameter is added (cloned) to a window; every ``resolution`` epochs
(``(e + 1) % resolution == 0``, only while not in float32) the per-tensor gradient
diversity of the window is computed and averaged over tensors, then :func:`gd_check`;
violations accumulate until ``patience`` is reached (they are reset only at a
switch), and then the next precision of the schedule starts with ``maxGD = 0``.  At
float32 quantization is switched off and the master weights are copied in.  In
**static mode** (``static_schedule``: a preset name of :data:`STATIC_SCHEDULES` or a
list of 0-based epochs) the switch happens after each listed epoch instead and no
gradient diversity is computed (as released).

**Learning rate** (``controls_lr``): constant at ``config.lr`` through the fixed-point
phases; in float32, every ``fp32_epochs_per_lr`` counted epochs ``lr *= gamma`` while
``lr > min_lr``, else training stops (:func:`fp32_lr_rule`).  The count starts in the
switch epoch itself (which was trained at the last fixed-point precision), so with
lr 0.01 -> min 1e-4 and 15 epochs per lr, training stops at the end of the 45th
counted epoch: the switch epoch plus 44 float32 epochs.

Deviations from the released code (each a decision; see also the report in the tests)
-------------------------------------------------------------------------------------
* **Gradients are cloned** into the window.  The release stores ``grad.data``
  references (docs/method.md §4 item 13), which under PyTorch 1.x's in-place
  ``zero_grad`` were overwritten by the next epoch's first raw gradient.  Our loop
  zeroes gradients with ``set_to_none``, so a stored reference would not even alias;
  cloning states the intent and costs one copy of the parameters per epoch.
* **The float32 stop test is tolerant** of float rounding: ``lr > min_lr * (1 + 1e-9)``.
  The release compares Python floats exactly, and ``0.1 * 0.1 * 0.1`` is
  ``0.0010000000000000002 > 0.001``: as released, ResNet (lr 0.1, min 1e-3) would
  decay a third time and stop after 60 counted epochs, not 45, while AlexNet
  (0.01 -> 1e-4 lands exactly) stops after 45.  docs/method.md §2.3 and AdaPT's MuPPET
  schedules say 45 for both; ``exact_lr_compare=True`` restores the literal test.
* **Weights are quantized at set-up**; the release quantizes them first after the
  first update, so its very first forward pass ran on float weights.
* Weight gradients are quantized **once**.  The release's old-style module backward
  hook also rounds a conv/linear layer's weight and bias gradients (they are part of
  the last autograd node's ``grad_input``), and ``QuantSGD`` rounds them again.
* A parameter whose ``.grad`` is ``None`` at an epoch end is left out of the window
  (the release would crash).
* The gradient diversity is computed in float64 (float32 on MPS); the release used
  float32.  A tensor whose window gradients sum to zero has diversity ``inf`` (or
  ``nan`` for all-zero gradients), as the release's tensor division gives; a ``nan``
  mean makes that check a no-op, as released.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from adapt import quant
from adapt.policies import PrecisionPolicy, TensorTrace
from adapt.quant import DynamicFixedPoint, dynamic_fixed_point

__all__ = [
    "PRECISION_SCHEDULE",
    "FLOAT32",
    "THRESHOLD_SCALE",
    "THRESHOLD_DECAY",
    "MUPPET_OUTPUT_LAYERS",
    "EPOCHS_PER_PRECISION",
    "STATIC_SCHEDULES",
    "scale_exponent",
    "dfp_codes",
    "gradient_diversity",
    "gradient_diversity_from_sums",
    "mean_gradient_diversity",
    "check_due",
    "threshold",
    "gd_check",
    "patience_rule",
    "gd_step",
    "next_precision",
    "replay_checks",
    "fp32_lr_rule",
    "fp32_lr_schedule",
    "switch_epochs_from_durations",
    "precision_epochs",
    "MuppetPolicy",
]

#: MuPPET's precision schedule ``Prec_Schedule: 8 12 14 16 -1``; 32 stands for float32.
PRECISION_SCHEDULE = (8, 12, 14, 16, 32)

#: The schedule entry meaning "float32, quantization off".
FLOAT32 = 32

#: The released threshold ``T(e) = 1 + 1.5 * exp(-0.1 * e)`` (``policy.py L13-L14``): its
#: scale and decay, the defaults of :func:`threshold` and :class:`MuppetPolicy`.
THRESHOLD_SCALE = 1.5
THRESHOLD_DECAY = 0.1

#: Layers whose outputs (and input gradients) MuPPET quantizes: its QuantConv2d,
#: QuantLinear, QuantAvgPool2d and QuantAdaptiveAvgPool2d.  Not BatchNorm.
MUPPET_OUTPUT_LAYERS = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d)

#: Epochs per precision (8, 12, 14, 16 bit, float32) that AdaPT's ``utils/analytics.py``
#: labels "MuPPET results from paper" for CIFAR-10 (docs/method.md §1.7).
EPOCHS_PER_PRECISION = {
    "adapt-paper-alexnet": (16, 10, 14, 14, 45),
    "adapt-paper-resnet": (22, 22, 10, 15, 45),
}


def switch_epochs_from_durations(durations: Sequence[int]) -> tuple:
    """0-based switch epochs (switch *after* that epoch) for the given epochs per precision.

    The last entry (the float32 phase) does not enter: it is ended by the stop rule.
    ``(16, 10, 14, 14, 45)`` -> ``(15, 25, 39, 53)``: 8 bits in epochs 0-15, 12 bits in
    16-25, 14 bits in 26-39, 16 bits in 40-53.
    """
    out, total = [], 0
    for d in list(durations)[:-1]:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"epochs per precision must be positive integers, got {list(durations)}")
        total += d
        out.append(total - 1)
    return tuple(out)


#: Static switch epochs (0-based, switch after that epoch; 8->12, 12->14, 14->16, 16->FP32).
#: ``muppet-*``: the ``Prec_Epoch_Schedule`` of MuPPET's released static configs, named
#: after the run whose schedule they reuse (docs/method.md §2.3).  ``adapt-paper-*``: the
#: per-precision epochs of :data:`EPOCHS_PER_PRECISION` turned into switch epochs.
#: Under the stop rule the float32 phase then has 45 *counted* epochs, the first of
#: which is the switch epoch itself (trained at 16 bits): AdaPT's table books that
#: epoch at 32 bits, so a run of the ``adapt-paper-alexnet`` preset trains
#: 16/10/14/14 epochs at 8/12/14/16 bits and 44 in float32 (98, not 99, in all).
STATIC_SCHEDULES = {
    "muppet-alexnet-cifar100": (41, 50, 59, 71),
    "muppet-resnet-cifar100": (29, 47, 59, 71),
    "muppet-googlenet-cifar100": (44, 53, 65, 77),
    "muppet-resnet-cifar10": (20, 38, 50, 62),
    "muppet-googlenet-cifar10": (32, 41, 50, 59),
    "adapt-paper-alexnet": switch_epochs_from_durations(EPOCHS_PER_PRECISION["adapt-paper-alexnet"]),
    "adapt-paper-resnet": switch_epochs_from_durations(EPOCHS_PER_PRECISION["adapt-paper-resnet"]),
}


# ------------------------------------------------------------------------------ pure rules
# Line numbers below are of ICIdsl/muppet@a5cbb13 (docs/method.md §2.2).
def _ratio(num: float, den: float) -> float:
    """``num / den`` with tensor-division semantics: x/0 = +-inf, 0/0 = nan."""
    if den == 0:
        if num == 0 or math.isnan(num):
            return math.nan
        return math.copysign(math.inf, num)
    return num / den


def _gd_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def scale_exponent(x: torch.Tensor, bits: int, per_sample: bool = False) -> torch.Tensor:
    """The power-of-two exponent ``sf`` that MuPPET's dynamic fixed point picks for ``x``.

    ``maxVal = 2**(b-1) - 1 + 0.5``, ``minVal = -2**(b-1) - 0.5``,
    ``sf = floor(log2(min(|maxVal / max(x)|, |minVal / min(x)|)))``
    (``quantize.py L34-L36``, ``L51-L59``); an all-zero tensor gets ``sf = 0`` (``L31-L32``).
    The quantized tensor is then ``k * 2**-sf`` with integer codes
    ``k = round(x * 2**sf)``: the scale puts the extreme of ``x`` within half a step of
    the ``bits``-bit integer range, and nothing clamps ``k`` afterwards, so stochastic
    rounding can reach ``2**(b-1)`` or ``-2**(b-1) - 1`` (docs/method.md §4 item 14).

    The computation :func:`adapt.quant.dynamic_fixed_point` applies (one shared function,
    in the tensor's float dtype, ``sf`` capped at 126).  Returns a 0-d tensor, or one
    entry per slice along dim 0 with ``per_sample`` (MuPPET's per-image input scale,
    ``training.py L78-L80``).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if isinstance(bits, bool) or not isinstance(bits, int) or not (2 <= bits <= 32):
        raise ValueError(f"bits must be an integer in [2, 32], got {bits!r}")
    if x.numel() == 0 or (per_sample and x.dim() == 0):
        raise ValueError(f"scale_exponent needs a non-empty tensor (with a batch dimension for per_sample), "
                         f"got shape {tuple(x.shape)}")
    xc = x.detach() if x.dtype in (torch.float32, torch.float64) else x.detach().float()
    with torch.no_grad():
        return quant._dynamic_exponent(xc, bits, per_sample)


def dfp_codes(x: torch.Tensor, bits: int, rounding: str = "stochastic", per_sample: bool = False,
              generator: Optional[torch.Generator] = None) -> tuple:
    """The integer codes and exponents of MuPPET's dynamic fixed point: ``(k, sf)`` with ``Q(x) = k * 2**-sf``.

    ``Q(x)`` is :func:`adapt.quant.dynamic_fixed_point` (unclamped, as released) and
    ``sf`` :func:`scale_exponent`; ``k`` (float64, integer-valued) is exact because the
    scale is a power of two.  A ``bits``-bit signed integer holds
    ``[-2**(b-1), 2**(b-1) - 1]``; stochastic rounding can put an extreme one code
    beyond (``quantize.py L61-L69``, no clamp).
    """
    sf = scale_exponent(x, bits, per_sample)
    view = (-1,) + (1,) * (x.dim() - 1) if per_sample else ()
    q = dynamic_fixed_point(x.detach(), bits, rounding, per_sample, generator)
    return q.double() * torch.exp2(sf.double()).reshape(view), sf


def gradient_diversity_from_sums(sum_of_norms: float, sum_of_grads: torch.Tensor) -> float:
    """One tensor's gradient diversity from the window's running sums: ``sum ||g_i||^2 / ||sum g_i||^2``.

    ``policy.py L39`` (``sumOfNorms[l] / ||sumOfGrads[l]||^2``, the sums kept by
    ``L16-L29``).  A zero sum gives ``inf`` (``nan`` when ``sum_of_norms`` is 0 too),
    as the release's tensor division does.
    """
    s = sum_of_grads.detach()
    return _ratio(float(sum_of_norms), float(torch.sum(s * s)))


def gradient_diversity(grads: Sequence[torch.Tensor]) -> float:
    """Gradient diversity of one tensor over several gradients: ``sum ||g_i||^2 / ||sum g_i||^2``.

    ``grads`` are gradients of the same tensor (same shape), e.g. the last mini-batch
    gradient of each epoch of one window.  Accumulated as the policy does
    (``policy.py L16-L29``) in float64 (float32 on MPS), then
    :func:`gradient_diversity_from_sums`.  One gradient always gives exactly 1;
    ``r`` identical gradients give ``1 / r``; ``r`` mutually orthogonal ones give 1.
    """
    grads = list(grads)
    if not grads:
        raise ValueError("gradient_diversity needs at least one gradient")
    shape = grads[0].shape
    for g in grads:
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"gradients must be tensors, got {type(g).__name__}")
        if g.shape != shape:
            raise ValueError(f"all gradients must have one shape, got {tuple(shape)} and {tuple(g.shape)}")
    dtype = _gd_dtype(grads[0].device)
    sum_sq = 0.0
    total = torch.zeros(shape, dtype=dtype, device=grads[0].device)
    for g in grads:
        g = g.detach().to(dtype)
        sum_sq += float(torch.sum(g * g))
        total += g
    return gradient_diversity_from_sums(sum_sq, total)


def mean_gradient_diversity(values: Union[Mapping[str, float], Iterable[float]]) -> float:
    """``meanGD``: the mean of the per-tensor gradient diversities (``policy.py L35-L41``).

    ``values``: one diversity per parameter tensor (a mapping name -> value, or the
    values).  Every tensor counts once, biases and BatchNorm parameters included.  No
    tensor gives ``nan``; an ``inf`` or ``nan`` entry propagates, as in the release.
    """
    values = list(values.values() if isinstance(values, Mapping) else values)
    if not values:
        return math.nan
    return sum(values) / len(values)


def check_due(epoch: int, resolution: int) -> bool:
    """Whether epoch ``epoch`` (0-based) closes a window: ``(epoch + 1) % resolution == 0`` (``policy.py L49``).

    The policy computes the gradient diversity only then (and never in float32), over
    the ``resolution`` last-mini-batch gradients gathered since the previous check.
    """
    for name, v, low in (("epoch", epoch, 0), ("resolution", resolution, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return (epoch + 1) % resolution == 0


def threshold(epoch: int, decay: float = THRESHOLD_DECAY, scale: float = THRESHOLD_SCALE) -> float:
    """MuPPET's violation threshold ``T(e) = 1 + scale * exp(-decay * e)`` at 0-based epoch ``e``.

    ``policy.py L13-L14`` (``[1 + 1.5*math.exp(-0.1*x) for x in range(epochs)]``,
    indexed by the absolute epoch at ``L57``).  ``scale = 0`` gives a flat ``T = 1``.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    return 1.0 + scale * math.exp(-decay * epoch)


def gd_check(mean_gd: float, max_gd: float, thresh: float) -> tuple:
    """One check of the released policy: returns ``(new_max_gd, violated)``.

    ``if mean_gd >= max_gd: max_gd = mean_gd  elif max_gd / mean_gd > thresh: violation``
    (``policy.py L54-L58``).  A ``nan`` mean neither raises the maximum nor violates.
    """
    if mean_gd >= max_gd:
        return mean_gd, False
    if _ratio(max_gd, mean_gd) > thresh:
        return max_gd, True
    return max_gd, False


def patience_rule(violations: int, violated: bool, patience: int) -> tuple:
    """The violation count and the switch decision: returns ``(count, switch)``.

    ``count = violations + violated`` (``policy.py L58``); ``switch = count >= patience``
    (``L64``).  ``count`` is what the release logs at this check (``L62``, before the
    reset); after a switch the count restarts at 0 (``L65``).  A check without a
    violation does not reset the count.
    """
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be a positive integer, got {patience!r}")
    if isinstance(violations, bool) or not isinstance(violations, int) or violations < 0:
        raise ValueError(f"violations must be a non-negative integer, got {violations!r}")
    count = violations + (1 if violated else 0)
    return count, count >= patience


def gd_step(epoch: int, mean_gd: float, max_gd: float, violations: int, patience: int,
            threshold_decay: float = THRESHOLD_DECAY, threshold_scale: float = THRESHOLD_SCALE) -> dict:
    """One gradient-diversity check at epoch ``epoch``: :func:`threshold`, :func:`gd_check`, :func:`patience_rule`.

    Returns the fields the policy logs, named as in the run record: ``gd_threshold``
    (``T(e)``), ``max_gd`` (after the check), ``gd_ratio`` (``max_gd / mean_gd``),
    ``violated``, ``gd_violations`` (the count including this check) and ``switch``.
    After a switch the caller restarts with ``max_gd = 0`` (``policy.py L86``) and no
    violations.
    """
    t = threshold(epoch, threshold_decay, threshold_scale)
    new_max, violated = gd_check(mean_gd, max_gd, t)
    count, switch = patience_rule(violations, violated, patience)
    return {"gd_threshold": t, "max_gd": new_max, "gd_ratio": _ratio(new_max, mean_gd), "violated": violated,
            "gd_violations": count, "switch": switch}


def next_precision(schedule: Sequence[int], bits: int) -> Optional[int]:
    """The precision after ``bits`` in ``schedule`` (``policy.py L84-L85``), or None after the last.

    ``(8, 12, 14, 16, 32)``: 8 -> 12 -> 14 -> 16 -> 32 (float32, the release's ``-1``:
    quantization off and the FP32 masters copied in, ``L89-L91``).  The release indexes
    past the end of its schedule (an ``IndexError``); a schedule that ends before float32
    stays at its last entry here.
    """
    schedule = list(schedule)
    if bits not in schedule:
        raise ValueError(f"bits {bits!r} is not in the schedule {schedule}")
    i = schedule.index(bits)
    return schedule[i + 1] if i + 1 < len(schedule) else None


def replay_checks(checks: Sequence, patience: int, threshold_decay: float = THRESHOLD_DECAY,
                  threshold_scale: float = THRESHOLD_SCALE, schedule: Sequence[int] = PRECISION_SCHEDULE) -> list:
    """The gradient-diversity rule over a run's checks, from its first precision: one row per check.

    ``checks``: ``(epoch, mean_gd)`` pairs in epoch order (the epochs where
    :func:`check_due` holds, e.g. read from a record's ``traces["muppet"]``).  Each check
    is :func:`gd_step`; at a switch the precision moves to :func:`next_precision`, and
    ``maxGD`` and the violation count restart at 0 (``policy.py L64-L66``, ``L86``), as
    :class:`MuppetPolicy` does.  A row holds ``epoch``, ``bits`` (the precision the check
    was made at), ``mean_gd``, the :func:`gd_step` fields and ``switched_to`` (``None``
    without a switch).  The replay ends at the switch to float32, where the policy
    computes no diversity any more: checks listed after it get no row.
    """
    schedule = [_bits(b) for b in schedule]
    bits, max_gd, violations, rows, last = schedule[0], 0.0, 0, [], -1
    for epoch, mean_gd in checks:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= last:
            raise ValueError(f"check epochs must be increasing integers, got {epoch!r} after {last}")
        if bits == FLOAT32:
            break
        last = epoch
        s = gd_step(epoch, float(mean_gd), max_gd, violations, patience, threshold_decay, threshold_scale)
        row = {"epoch": epoch, "bits": bits, "mean_gd": float(mean_gd), **s, "switched_to": None}
        max_gd, violations = s["max_gd"], s["gd_violations"]
        if s["switch"]:
            violations = 0
            to_bits = next_precision(schedule, bits)
            if to_bits is not None:
                bits, max_gd, row["switched_to"] = to_bits, 0.0, to_bits
        rows.append(row)
    return rows


def _lr_above(lr: float, min_lr: float, exact: bool) -> bool:
    return lr > min_lr if exact else lr > min_lr * (1.0 + 1e-9)


def fp32_lr_rule(fp32_count: int, lr: float, min_lr: float, epochs_per_lr: int = 15, gamma: float = 0.1,
                 exact: bool = False) -> tuple:
    """The float32 phase's lr rule, applied once per counted epoch: returns ``(lr, stop, fp32_count)``.

    ``fp32_count`` epochs were counted before this one (0 in the switch epoch).  If
    this is a multiple of ``epochs_per_lr`` counted epochs, then ``lr *= gamma`` if
    ``lr > min_lr`` (tolerant of float rounding unless ``exact``), else stop.  The
    count advances by one unless training stops (``policy.py L96-L112``).
    """
    if (fp32_count + 1) % epochs_per_lr == 0:
        if _lr_above(lr, min_lr, exact):
            lr = lr * gamma
        else:
            return lr, True, fp32_count
    return lr, False, fp32_count + 1


def fp32_lr_schedule(lr: float, min_lr: float, epochs_per_lr: int = 15, gamma: float = 0.1,
                     exact: bool = False, max_epochs: int = 100_000) -> list:
    """The learning rate of every counted float32 epoch, from the switch epoch to the stop.

    :func:`fp32_lr_rule` applied from ``fp32_count = 0`` until it stops; entry ``k`` is
    the lr that counted epoch ``k`` trains with (entry 0 is the switch epoch itself,
    trained at the last fixed-point precision).  The length is the number of counted
    epochs: 45 for lr 0.01 -> ``min_lr`` 1e-4 at 15 epochs per lr (docs/method.md §2.3.4).
    ``ValueError`` if it has not stopped after ``max_epochs`` (``gamma`` or ``min_lr``
    that never meet).
    """
    for name, v in (("lr", lr), ("min_lr", min_lr)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if isinstance(epochs_per_lr, bool) or not isinstance(epochs_per_lr, int) or epochs_per_lr < 1:
        raise ValueError(f"epochs_per_lr must be a positive integer, got {epochs_per_lr!r}")
    if not (isinstance(gamma, (int, float)) and 0 < gamma < 1):
        raise ValueError(f"gamma must be in (0, 1), got {gamma!r}")
    out, count = [], 0
    while len(out) < max_epochs:
        out.append(lr)
        lr, stop, count = fp32_lr_rule(count, lr, min_lr, epochs_per_lr, gamma, exact)
        if stop:
            return out
    raise ValueError(f"the float32 phase did not stop within {max_epochs} epochs (lr {out[0]}, min_lr {min_lr})")


def precision_epochs(bits_per_epoch: Sequence[int]) -> list:
    """Run-length encode a per-epoch bit-width list: ``[8, 8, 12] -> [[8, 2], [12, 1]]``.

    The shape of AdaPT's synthetic MuPPET log (``(bits, epochs)`` pairs, docs/method.md §1.7).
    """
    out = []
    for b in bits_per_epoch:
        if out and out[-1][0] == b:
            out[-1][1] += 1
        else:
            out.append([int(b), 1])
    return out


# ------------------------------------------------------------------------------ the policy
class _TrainingInputs:
    """Quantize the model input only while the model is in training mode.

    MuPPET quantizes each input image in its training loop; its inference loop feeds
    float inputs (the layers still quantize their outputs).
    """

    def __init__(self, fmt: DynamicFixedPoint, model: nn.Module):
        self.fmt, self.model = fmt, model

    @property
    def bits(self) -> int:
        return self.fmt.bits

    def quantize(self, x, rounding="stochastic", generator=None, out=None):
        if not self.model.training:
            return x.clone() if out is None else out.copy_(x)
        return self.fmt.quantize(x, rounding, generator, out=out)

    def __str__(self):
        return f"{self.fmt} per image, training only"


_OPTIONS = ("schedule", "resolution", "patience", "threshold_decay", "threshold_scale", "fp32_epochs_per_lr",
            "gamma", "min_lr", "static_schedule", "quantize_eval_inputs", "exact_lr_compare", "log_interval")


def _bits(value) -> int:
    if value == -1:
        return FLOAT32
    if isinstance(value, bool) or not isinstance(value, int) or not (2 <= value <= 32):
        raise ValueError(f"schedule entries must be bit widths in [2, 32] (32 or -1 = float32), got {value!r}")
    return value


class MuppetPolicy(PrecisionPolicy):
    """MuPPET's precision policy; see the module docstring.

    Options (``config.policy`` keys): ``schedule`` (bit widths, 32 or -1 = float32),
    ``resolution`` (epochs per gradient-diversity window), ``patience`` (violations
    per switch), ``threshold_decay`` / ``threshold_scale`` (of :func:`threshold`),
    ``fp32_epochs_per_lr``, ``gamma``, ``min_lr`` (default ``config.lr / 100``, the
    ratio of every released config), ``static_schedule`` (a :data:`STATIC_SCHEDULES`
    name or a list of switch epochs; ``None`` = the gradient-diversity rule),
    ``quantize_eval_inputs`` (default False, as released), ``exact_lr_compare``
    (default False, see the module docstring), ``log_interval`` (steps between
    :class:`~adapt.policies.TensorTrace` points).
    """

    name = "muppet"
    quantized = True
    controls_lr = True

    def __init__(self, schedule: Sequence[int] = PRECISION_SCHEDULE, resolution: int = 3, patience: int = 2,
                 threshold_decay: float = THRESHOLD_DECAY, threshold_scale: float = THRESHOLD_SCALE,
                 fp32_epochs_per_lr: int = 15, gamma: float = 0.1, min_lr: Optional[float] = None,
                 static_schedule: Union[None, str, Sequence[int]] = None, quantize_eval_inputs: bool = False,
                 exact_lr_compare: bool = False, log_interval: int = 10):
        schedule = [_bits(b) for b in schedule]
        if not schedule:
            raise ValueError("schedule must list at least one precision")
        if FLOAT32 in schedule[:-1]:
            raise ValueError(f"float32 (32 or -1) can only be the last entry of the schedule, got {schedule}")
        if any(b <= a for a, b in zip(schedule, schedule[1:])):
            raise ValueError(f"schedule must be strictly increasing, got {schedule}")
        for name, v in (("resolution", resolution), ("patience", patience), ("fp32_epochs_per_lr", fp32_epochs_per_lr)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(gamma, (int, float)) and 0 < gamma < 1):
            raise ValueError(f"gamma must be in (0, 1), got {gamma!r}")
        if min_lr is not None and not (isinstance(min_lr, (int, float)) and min_lr > 0):
            raise ValueError(f"min_lr must be a positive number or None, got {min_lr!r}")
        for name, v in (("threshold_decay", threshold_decay), ("threshold_scale", threshold_scale)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        self.schedule = schedule
        self.resolution, self.patience = resolution, patience
        self.threshold_decay, self.threshold_scale = float(threshold_decay), float(threshold_scale)
        self.fp32_epochs_per_lr, self.gamma = fp32_epochs_per_lr, float(gamma)
        self.min_lr_option = None if min_lr is None else float(min_lr)
        self.static_schedule = self._resolve_static(static_schedule)
        self.static_name = static_schedule if isinstance(static_schedule, str) else None
        self.quantize_eval_inputs = bool(quantize_eval_inputs)
        self.exact_lr_compare = bool(exact_lr_compare)
        self.trace = TensorTrace(log_interval)
        self._formats = {b: DynamicFixedPoint(b) for b in schedule if b != FLOAT32}
        self._input_formats = {b: DynamicFixedPoint(b, per_sample=True) for b in schedule if b != FLOAT32}
        self._reset_state()

    def _resolve_static(self, static) -> Optional[list]:
        if static is None:
            return None
        if isinstance(static, str):
            if static not in STATIC_SCHEDULES:
                raise ValueError(f"unknown static schedule {static!r}; presets: {', '.join(STATIC_SCHEDULES)}")
            static = STATIC_SCHEDULES[static]
        static = list(static)
        if any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in static):
            raise ValueError(f"static switch epochs must be non-negative integers, got {static}")
        if any(b <= a for a, b in zip(static, static[1:])):
            raise ValueError(f"static switch epochs must be strictly increasing, got {static}")
        if len(static) != len(self.schedule) - 1:
            raise ValueError(f"{len(static)} static switch epochs for {len(self.schedule)} precisions; "
                             f"need one per switch ({len(self.schedule) - 1})")
        return static

    @classmethod
    def from_config(cls, config) -> "MuppetPolicy":
        opts = dict(config.policy)
        unknown = set(opts) - set(_OPTIONS)
        if unknown:
            raise ValueError(f"unknown MuPPET policy option(s) {sorted(unknown)}; valid: {list(_OPTIONS)}")
        if "schedule" in opts:
            opts["schedule"] = list(opts["schedule"])
        return cls(**opts)

    # -- state ------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.index = 0
        self.max_gd = 0.0
        self.violations = 0
        self.fp32_count = 0
        self.lr = None
        self.stopped = False
        self.window_norms: dict = {}   # name -> sum of ||g||^2 over the window (float)
        self.window_grads: dict = {}   # name -> sum of g over the window (tensor)
        self.window_size = 0
        self.history: list = []        # one dict per epoch (what epoch_log returns)
        self.switches: list = []       # one dict per precision switch
        self.last_step = -1

    @property
    def bits(self) -> int:
        """The current global bit width (32 = float32)."""
        return self.schedule[self.index]

    @property
    def in_float32(self) -> bool:
        return self.bits == FLOAT32

    @property
    def mode(self) -> str:
        return "adaptive" if self.static_schedule is None else "static"

    # -- interface --------------------------------------------------------------------
    def setup(self, model, qmodel, config) -> None:
        if qmodel is None:
            raise ValueError("MuppetPolicy needs a QuantizedModel")
        super().setup(model, qmodel, config)
        self._reset_state()
        self.weight_decay = float(config.weight_decay)
        self.lr = float(config.lr)
        self.min_lr = self.min_lr_option if self.min_lr_option is not None else self.lr / 100.0
        self._apply_formats()
        qmodel.quantize_weights()

    def make_optimizer(self, params, config) -> torch.optim.Optimizer:
        """SGD with momentum and **no** built-in weight decay: :meth:`before_step` adds it to the quantized gradient."""
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=0.0,
                               nesterov=config.nesterov)

    def _apply_formats(self) -> None:
        q = self.qmodel
        if self.in_float32:
            q.disable()
            return
        fmt, fin = self._formats[self.bits], self._input_formats[self.bits]
        q.input_format = fin if self.quantize_eval_inputs else _TrainingInputs(fin, self.model)
        for layer in q.layers.values():
            on = isinstance(layer.module, MUPPET_OUTPUT_LAYERS)
            layer.input_format = None
            layer.output_format = fmt if on else None
            layer.input_grad_format = fmt if on else None
        for qp in q.params.values():
            qp.weight_format = fmt
            qp.grad_format = fmt

    @torch.no_grad()
    def before_step(self, step: int, loss: float) -> None:
        """``p.grad += weight_decay * p.data`` with the quantized working weights (QuantSGD's order).

        One multi-tensor op for all parameters (on CPU the same ``add_`` per tensor as a loop; on CUDA
        one launch instead of one per parameter)."""
        if not self.weight_decay:
            return
        pairs = [(qp.param.grad, qp.param.data) for qp in self.qmodel.params.values() if qp.param.grad is not None]
        if pairs:
            torch._foreach_add_([g for g, _ in pairs], [w for _, w in pairs], alpha=self.weight_decay)

    def after_step(self, step: int) -> None:
        self.last_step = step
        if self.trace.due(step):
            self.trace.log(step, self.epoch_float, self.qmodel)

    @torch.no_grad()
    def _window_add(self) -> None:
        for name, qp in self.qmodel.params.items():
            g = qp.param.grad
            if g is None:
                continue
            g = g.detach().to(_gd_dtype(g.device))
            sq = float(torch.sum(g * g))
            if name in self.window_grads:
                self.window_grads[name] += g
                self.window_norms[name] += sq
            else:
                self.window_grads[name] = g.clone()  # never a reference to .grad (docs/method.md §4 item 13)
                self.window_norms[name] = sq
        self.window_size += 1

    @torch.no_grad()
    def _window_mean_gd(self) -> float:
        values = [gradient_diversity_from_sums(self.window_norms[n], s) for n, s in self.window_grads.items()]
        self.window_grads, self.window_norms, self.window_size = {}, {}, 0
        return mean_gradient_diversity(values)

    def _switch(self, epoch: int, to_bits: int) -> None:
        old = self.bits
        self.index = self.schedule.index(to_bits)
        self.max_gd = 0.0
        self._apply_formats()
        if self.in_float32:
            self.qmodel.quantize_weights()  # no format: copies the FP32 masters into the working weights
        self.switches.append({"epoch": int(epoch), "step": int(self.last_step + 1), "from_bits": int(old),
                              "to_bits": int(self.bits)})

    def end_epoch(self, epoch: int, metrics: dict, optimizer) -> bool:
        entry = {"epoch": int(epoch), "bits": int(self.bits), "mean_gd": None, "max_gd": None, "gd_ratio": None,
                 "gd_threshold": None, "gd_violations": int(self.violations), "switched_to": None,
                 "fp32_epochs_counted": None}
        switch = False
        if self.static_schedule is not None:
            switch = epoch in self.static_schedule
        elif not self.in_float32:
            self._window_add()
            if check_due(epoch, self.resolution):
                mean_gd = self._window_mean_gd()
                check = gd_step(epoch, mean_gd, self.max_gd, self.violations, self.patience,
                                self.threshold_decay, self.threshold_scale)
                self.max_gd, switch = check["max_gd"], check["switch"]
                self.violations = 0 if switch else check["gd_violations"]
                entry.update(mean_gd=mean_gd, max_gd=check["max_gd"], gd_ratio=check["gd_ratio"],
                             gd_threshold=check["gd_threshold"], gd_violations=int(check["gd_violations"]))
        to_bits = next_precision(self.schedule, self.bits) if switch else None
        if to_bits is not None:
            self._switch(epoch, to_bits)
            entry["switched_to"] = int(self.bits)
        stop = False
        if self.in_float32:
            lr, stop, self.fp32_count = fp32_lr_rule(self.fp32_count, self.lr, self.min_lr,
                                                      self.fp32_epochs_per_lr, self.gamma, self.exact_lr_compare)
            if lr != self.lr:
                self.lr = lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
            entry["fp32_epochs_counted"] = int(self.fp32_count + (1 if stop else 0))
        entry["next_lr"] = float(self.lr)
        entry["stop"] = bool(stop)
        self.stopped = self.stopped or stop
        self.history.append(entry)
        return stop

    def epoch_log(self) -> dict:
        if not self.history:
            return {}
        last = self.history[-1]
        return {k: last[k] for k in ("bits", "mean_gd", "max_gd", "gd_ratio", "gd_threshold", "gd_violations",
                                     "switched_to")}

    def traces(self) -> dict:
        per_epoch = {k: [h[k] for h in self.history] for k in
                     ("epoch", "bits", "mean_gd", "max_gd", "gd_ratio", "gd_threshold", "gd_violations",
                      "switched_to", "fp32_epochs_counted", "next_lr")}
        return {"tensors": self.trace.data, "muppet": per_epoch, "switches": [dict(s) for s in self.switches]}

    trace_state_keys = ("trace", "history", "switches")

    def state_from_traces(self, traces: dict, state: dict) -> dict:
        """``history`` is ``traces["muppet"]`` by epoch plus ``stop``, which :meth:`end_epoch` sets
        only in the epoch that ends training: the last one, when ``stopped``."""
        columns = traces.get("muppet") or {}
        n = len(columns.get("epoch", []))
        history = [{k: v[i] for k, v in columns.items()} for i in range(n)]
        for i, entry in enumerate(history):
            entry["stop"] = bool(state["stopped"]) and i == n - 1
        return {"trace": self.trace.state_from_data(traces.get("tensors", {})), "history": history,
                "switches": traces.get("switches", [])}

    def summary(self) -> dict:
        return {
            "mode": self.mode,
            "static_schedule": None if self.static_schedule is None else (self.static_name or list(self.static_schedule)),
            "schedule": list(self.schedule),
            "final_bits": int(self.bits),
            "switch_epochs": [s["epoch"] for s in self.switches],
            "epochs_per_precision": precision_epochs([h["bits"] for h in self.history]),
            "stopped_by_policy": bool(self.stopped),
            "final_lr": self.lr,
        }

    def state_dict(self) -> dict:
        """Plain tensors, numbers, strings, lists and dicts only (``torch.load(weights_only=True)``)."""
        return {
            "index": int(self.index), "max_gd": float(self.max_gd), "violations": int(self.violations),
            "fp32_count": int(self.fp32_count), "lr": self.lr, "stopped": bool(self.stopped),
            "window_norms": dict(self.window_norms),
            "window_grads": {k: v.detach().clone() for k, v in self.window_grads.items()},
            "window_size": int(self.window_size), "history": [dict(h) for h in self.history],
            "switches": [dict(s) for s in self.switches], "last_step": int(self.last_step),
            "trace": self.trace.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the policy and re-apply the formats of the restored precision (weights are not touched)."""
        self.index = int(state["index"])
        self.max_gd = float(state["max_gd"])
        self.violations = int(state["violations"])
        self.fp32_count = int(state["fp32_count"])
        self.lr = state["lr"]
        self.stopped = bool(state["stopped"])
        self.window_norms = dict(state["window_norms"])
        self.window_grads = {k: v.clone() for k, v in state["window_grads"].items()}
        self.window_size = int(state["window_size"])
        self.history = [dict(h) for h in state["history"]]
        self.switches = [dict(s) for s in state["switches"]]
        self.last_step = int(state["last_step"])
        self.trace.load_state_dict(state["trace"])
        if getattr(self, "qmodel", None) is not None:
            self._apply_formats()
