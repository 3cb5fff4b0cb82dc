"""Number formats and quantizers: fixed point and MuPPET's dynamic fixed point.

Layering follows QPyTorch: small immutable *format* objects (:class:`FixedPoint`,
:class:`DynamicFixedPoint`), functional quantizers (:func:`fixed_point`,
:func:`dynamic_fixed_point`), and two autograd functions on top
(:func:`quantize_ste` for activations, :func:`quantize_gradient` for activation
gradients).  Nothing is compiled; every quantizer is a handful of whole-tensor
PyTorch ops, so it runs unchanged on CPU, CUDA and MPS.

Semantics (../shared/reference/method.md §1.3 and §2.3):

* Fixed point is QPyTorch's ``fixed_point_quantize(x, wl, fl, clamp=True,
  symmetric=False)``, which the official AdaPT code calls everywhere: signed,
  word length including the sign bit, step ``2**-fl``, saturating to
  ``[-2**(wl-fl-1), 2**(wl-fl-1) - 2**-fl]``.
* Dynamic fixed point is MuPPET's ``quantize.py``: a power-of-two scale chosen
  per tensor (or per sample) from the tensor's extremes, recomputed at every call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = [
    "ROUNDING_MODES",
    "FixedPoint",
    "DynamicFixedPoint",
    "fixed_point",
    "dynamic_fixed_point",
    "quantize_ste",
    "quantize_gradient",
]

ROUNDING_MODES = ("stochastic", "nearest")

# Largest float32 magnitude for which adding 1.5*2**23 rounds to an integer: the
# "magic number" trick does round-half-to-even in one add and one subtract.
_MAGIC_MANTISSA_BITS = {torch.float32: 23, torch.float64: 52}


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _check_rounding(rounding: str) -> None:
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")


def _check_tensor(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"quantizers take floating-point tensors, got dtype {x.dtype}")


def _uniform(x: torch.Tensor, dtype: torch.dtype, generator: Optional[torch.Generator]) -> torch.Tensor:
    """U[0, 1) noise shaped like ``x`` (one RNG pass: the cost floor of stochastic rounding)."""
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but the tensor is on {x.device}; "
            "create the generator on the tensor's device"
        )
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=dtype)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16/bfloat16 cannot hold 2**fl for large fl; compute in float32 and cast back.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@dataclass(frozen=True)
class FixedPoint:
    """Signed, saturating fixed point: ``word_length`` bits including the sign, ``fractional_length`` of them after the point.

    The official AdaPT code (method.md §1.3) gives every parameter tensor one such
    format, starting at 8/4.  ``fractional_length`` may exceed ``word_length`` (as
    in QPyTorch): the range then lies inside (-1, 1).
    """

    word_length: int
    fractional_length: int

    def __post_init__(self):
        _check_int("word_length", self.word_length, 1, 32)
        _check_int("fractional_length", self.fractional_length, 0, 32)

    @property
    def bits(self) -> int:
        return self.word_length

    @property
    def step(self) -> float:
        return 2.0 ** -self.fractional_length

    @property
    def min(self) -> float:
        return -(2.0 ** (self.word_length - self.fractional_length - 1))

    @property
    def max(self) -> float:
        return 2.0 ** (self.word_length - self.fractional_length - 1) - self.step

    def quantize(self, x, rounding="stochastic", generator=None, out=None):
        return fixed_point(x, self.word_length, self.fractional_length, rounding, generator, out=out)

    def __str__(self):
        return f"FixedPoint({self.word_length}, {self.fractional_length})"


def fixed_point(
    x: torch.Tensor,
    word_length: int,
    fractional_length: int,
    rounding: str = "stochastic",
    generator: Optional[torch.Generator] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Quantize ``x`` to signed fixed point ``(word_length, fractional_length)``.

    * ``"nearest"``: round half to even, then saturate: equal to QPyTorch's CPU
      kernel (``nearbyint`` under the default rounding mode) except where QPyTorch's
      own float32 ``a + 0.5f - 0.5`` rounds first (``a = x*2**fl`` just above a tie,
      e.g. ``0.5 + 2**-24``, and odd codes ``2**23 <= |a| < 2**24``); there we round
      exactly (tests/test_quant.py pins both cases).
    * ``"stochastic"``: ``floor(x * 2**fl + u) * 2**-fl`` with ``u ~ U[0, 1)`` drawn
      from ``generator``, then saturate.  Unbiased for values inside the range up to
      float32's rounding of the sum ``x * 2**fl + u``: a bias of about
      ``|x * 2**fl| * 2**-24`` steps, which QPyTorch and MuPPET share.

    ``+inf``/``-inf`` saturate to the range ends, NaN stays NaN (so the training
    loop can see divergence).  The result has ``x``'s dtype and device; ``out``
    (same shape, dtype and device) receives it without a new allocation.
    """
    _check_tensor(x)
    FixedPoint(word_length, fractional_length)  # validates both arguments
    _check_rounding(rounding)
    dtype = _compute_dtype(x.dtype)
    xc = x if x.dtype == dtype else x.to(dtype)
    scale = 2.0 ** fractional_length
    step = 2.0 ** -fractional_length
    qmin = -(2.0 ** (word_length - 1))
    qmax = 2.0 ** (word_length - 1) - 1.0
    direct = out is not None and x.dtype == dtype
    if rounding == "nearest":
        mantissa = _MAGIC_MANTISSA_BITS[dtype]
        y = torch.clamp(xc, qmin * step, qmax * step, out=out if direct else None)
        if word_length - 1 <= mantissa - 1:
            # Every code fits below 2**(mantissa-1): adding 1.5*2**(mantissa-fl) leaves a
            # spacing of exactly 2**-fl, so the float unit rounds half to even for us.
            magic = 1.5 * 2.0 ** (mantissa - fractional_length)
            y.add_(magic).sub_(magic)
        else:
            y.mul_(scale).round_().mul_(step)
    else:
        y = _uniform(xc, dtype, generator)
        y.add_(xc, alpha=scale).floor_().clamp_(qmin, qmax).mul_(step)
        if direct:
            out.copy_(y)
            y = out
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
        if out is not None:
            out.copy_(y)
            y = out
    return y


@dataclass(frozen=True)
class DynamicFixedPoint:
    """MuPPET's dynamic fixed point: ``bits``-bit integers times a power-of-two scale chosen per call.

    ``per_sample`` gives every slice along dim 0 its own scale (MuPPET quantizes each
    input image separately); ``clamp`` saturates to the true ``bits``-bit range (see
    :func:`dynamic_fixed_point` for why MuPPET itself does not).
    """

    bits: int
    per_sample: bool = False
    clamp: bool = False

    def __post_init__(self):
        _check_int("bits", self.bits, 2, 32)

    def quantize(self, x, rounding="stochastic", generator=None, out=None):
        y = dynamic_fixed_point(x, self.bits, rounding, self.per_sample, generator, clamp=self.clamp)
        if out is not None:
            out.copy_(y)
            return out
        return y

    def __str__(self):
        return f"DynamicFixedPoint({self.bits})"


def dynamic_fixed_point(
    x: torch.Tensor,
    bits: int,
    rounding: str = "stochastic",
    per_sample: bool = False,
    generator: Optional[torch.Generator] = None,
    clamp: bool = False,
) -> torch.Tensor:
    """MuPPET's ``quantize.py`` dynamic fixed point (method.md §2.3).

    ``maxVal = 2**(b-1) - 1 + 0.5``, ``minVal = -2**(b-1) - 0.5``,
    ``sf = floor(log2(min(|maxVal / max(x)|, |minVal / min(x)|)))``, then
    ``round(x * 2**sf) * 2**-sf``.  An all-zero tensor (or sample) is returned
    unchanged.  Stochastic rounding is ``floor(x * 2**sf + u)``, ``u ~ U[0, 1)``:
    the same distribution as MuPPET's ``round(x * 2**sf + U(-0.5, 0.5))``.

    **No clamp, as released.**  The scale keeps ``x * 2**sf`` inside
    ``[minVal, maxVal]``, half a step beyond the integer range, and MuPPET never
    clamps after rounding, so a value can land one code outside a ``bits``-bit
    signed integer (``2**(b-1)`` or ``-2**(b-1) - 1``).  We reproduce that by
    default (the MuPPET baseline must match the released code); ``clamp=True``
    saturates to ``[-2**(b-1), 2**(b-1) - 1]`` instead.

    The exponent ``sf`` is capped at 126 so that ``2**sf`` stays finite in float32;
    ``inf`` in a tensor makes its scale zero and the output NaN (a diverged run).
    """
    _check_tensor(x)
    _check_int("bits", bits, 2, 32)
    _check_rounding(rounding)
    if per_sample and x.dim() == 0:
        raise ValueError("per_sample=True needs a tensor with a batch dimension (dim 0), got a 0-d tensor")
    dtype = _compute_dtype(x.dtype)
    xc = x if x.dtype == dtype else x.to(dtype)
    if x.numel() == 0:
        return x.clone()
    if per_sample:
        lo, hi = torch.aminmax(xc.reshape(xc.shape[0], -1), dim=1)
        view = (-1,) + (1,) * (x.dim() - 1)
    else:
        lo, hi = torch.aminmax(xc)
        view = ()
    max_val = 2.0 ** (bits - 1) - 1 + 0.5
    min_val = -(2.0 ** (bits - 1)) - 0.5
    with torch.no_grad():
        range_best = torch.minimum((max_val / hi).abs(), (min_val / lo).abs())
        sf = torch.floor(torch.log2(range_best)).clamp_(max=126)
        sf = torch.where((hi == 0) & (lo == 0), torch.zeros_like(sf), sf)
        scale = torch.exp2(sf).reshape(view)
    if rounding == "stochastic":
        y = _uniform(xc, dtype, generator)
        y.addcmul_(xc, scale).floor_()
    else:
        y = (xc * scale).round_()
    if clamp:
        y.clamp_(-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    y.div_(scale)
    return y if y.dtype == x.dtype else y.to(x.dtype)


class _QuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt, rounding, generator):
        return fmt.quantize(x, rounding, generator)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


class _QuantizeGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt, rounding, generator):
        ctx.fmt, ctx.rounding, ctx.generator = fmt, rounding, generator
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.fmt.quantize(grad.contiguous(), ctx.rounding, ctx.generator), None, None, None


def quantize_ste(x: torch.Tensor, fmt, rounding: str = "stochastic", generator=None) -> torch.Tensor:
    """Quantize activations: forward ``fmt.quantize(x)``, backward passes the gradient unchanged.

    This is what both official codes do by assigning to ``tensor.data``, which
    autograd does not see (method.md §1.3, §2.3): a straight-through estimator.
    """
    return _QuantizeSTE.apply(x, fmt, rounding, generator)


def quantize_gradient(x: torch.Tensor, fmt, rounding: str = "stochastic", generator=None) -> torch.Tensor:
    """Identity forward; in backward the gradient flowing to ``x`` is quantized with ``fmt``.

    Put on a layer's input, this quantizes the layer's ``grad_input`` as MuPPET's
    backward hook does (method.md §2.3).
    """
    return _QuantizeGradient.apply(x, fmt, rounding, generator)
