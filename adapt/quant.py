"""Number formats and quantizers: fixed point and MuPPET's dynamic fixed point.

Layering follows QPyTorch: small immutable *format* objects (:class:`FixedPoint`,
:class:`DynamicFixedPoint`), functional quantizers (:func:`fixed_point`,
:func:`dynamic_fixed_point`), and two autograd functions on top
(:func:`quantize_ste` for activations, :func:`quantize_gradient` for activation
gradients).  Rounding runs in a fused kernel on CPU (numba) and on CUDA (Triton);
everywhere else, and as the reference the kernels are tested against, it is a
handful of whole-tensor PyTorch ops that run unchanged on CPU, CUDA and MPS.

Semantics (docs/method.md §1.3 and §2.3):

* Fixed point is QPyTorch's ``fixed_point_quantize(x, wl, fl, clamp=True,
  symmetric=False)``, which the official AdaPT code calls everywhere: signed,
  word length including the sign bit, step ``2**-fl``, saturating to
  ``[-2**(wl-fl-1), 2**(wl-fl-1) - 2**-fl]``.
* Dynamic fixed point is MuPPET's ``quantize.py``: a power-of-two scale chosen
  per tensor (or per sample) from the tensor's extremes, recomputed at every call.

Stochastic rounding has three implementations with the same distribution:

* **CPU**: one fused, multi-threaded numba kernel (:mod:`adapt._cpu_kernels`), about 7x
  faster than the whole-tensor ops below.  Each call draws one 64-bit seed from
  ``generator``; element ``i`` gets the ``i``-th SplitMix64 output of that seed, so a
  result depends on the seed only, never on the thread count.  Dither
  ``u = (k + 1/2) * 2**-24`` (24 random bits, centred), float64 arithmetic.
* **CUDA** (when Triton, which ships with torch's CUDA builds, imports; ``GPU_KERNEL =
  False`` turns it off): one Triton kernel per call (:mod:`adapt._triton_kernels`), one
  read and one write of the tensor.  Each call draws one 64-bit seed from ``generator``
  on the device (no host sync); element ``i`` takes 24 bits of Philox4x32-10 at counter
  ``i // 4``.  Dither ``u = (k + 1/2) * 2**-24`` as on CPU; float32 arithmetic with an
  exact split, so ``floor(x * 2**fl + u)`` is exact for every finite value.  The first
  call of each kernel in a process checks it against the whole-tensor ops on a probe
  (:func:`_kernel_ok`) and, if they disagree, warns once and uses the ops instead.
* **other devices** (MPS), or CPU with ``CPU_KERNEL = False``, or CUDA with
  ``GPU_KERNEL = False``: ``torch.rand`` (24 random bits) and four in-place ops in the
  tensor's dtype, as QPyTorch does.

They differ in the random numbers only, so a run on CPU and the same run on CUDA
take different (equally distributed) rounding decisions; each is reproducible.
Nearest rounding has both kernels too (one pass instead of three); all its paths
give identical results.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

__all__ = [
    "ROUNDING_MODES",
    "cpu_kernel_threading",
    "divide_many_",
    "FixedPoint",
    "DynamicFixedPoint",
    "fixed_point",
    "fixed_point_many",
    "dynamic_fixed_point",
    "dynamic_fixed_point_many",
    "quantize_ste",
    "quantize_gradient",
    "skip_draw",
]

ROUNDING_MODES = ("stochastic", "nearest")

#: Rounding of CPU tensors uses the fused kernels.  ``False`` runs the whole-tensor
#: ops of the other devices on CPU as well (slower; tests use it to check that path
#: without a GPU).
CPU_KERNEL = True

#: CPU tensors (or groups, for :func:`fixed_point_many`) with fewer elements than this are
#: rounded by the serial twin of the kernel, without a parallel region; results are the same.
#: Measured with ``python benchmarks/train_step.py --serial-threshold`` (2 threads, 2-core EPYC,
#: 2026-12-02): the two cost the same at about 2**14 elements (10 us); above, the parallel one wins
#: (2**16: 23 against 39 us).  2**15 leaves a margin because a parallel region on a busy machine
#: can wait milliseconds for a descheduled thread, which the serial kernel never does.
SERIAL_BELOW = 2**15

# Elements per work item of the parallel grouped kernel: small enough to balance two to 16
# threads over a model's tensors, large enough that scheduling costs nothing.
_GROUP_BLOCK = 2**14

#: Rounding of CUDA tensors uses the fused Triton kernels when Triton imports.  ``False``
#: runs the whole-tensor ops there (the reference the kernels are tested against).
GPU_KERNEL = True
_GPU_KERNELS = None  # the kernel module once imported; False if Triton is missing
#: (kernel, device, dtype, rounding, variant) -> whether its first-use self-check passed (:func:`_kernel_ok`)
_KERNEL_CHECKS: dict = {}
#: CUDA device -> the Philox offset by which one seed draw advances a generator (:func:`_skip_device_seed`)
_SEED_OFFSET_STEP: dict = {}

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
    """U[0, 1) noise shaped like ``x`` for the whole-tensor (non-CPU) path."""
    _check_generator(generator, x.device)
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=dtype)


def _check_generator(generator: Optional[torch.Generator], device: torch.device) -> None:
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the tensor is on {device}; "
            "create the generator on the tensor's device"
        )


def _seed_from(generator: Optional[torch.Generator]) -> np.uint64:
    """One uniform 64-bit word from ``generator`` (the global CPU generator if None): a kernel call's seed."""
    word = torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=generator)
    return np.uint64(int(word) & 0xFFFFFFFFFFFFFFFF)


def _gpu_kernels():
    """:mod:`adapt._triton_kernels` (importing Triton on first use), or None without Triton."""
    global _GPU_KERNELS
    if _GPU_KERNELS is None:
        try:
            from adapt import _triton_kernels
        except ImportError as exc:  # torch's CPU-only wheels and some platforms have no Triton
            warnings.warn(f"adapt's CUDA rounding kernels need Triton ({exc}); using whole-tensor ops "
                          "(slower) instead", RuntimeWarning, stacklevel=3)
            _GPU_KERNELS = False
        else:
            _GPU_KERNELS = _triton_kernels
    return _GPU_KERNELS or None


def _on_gpu_kernel(x: torch.Tensor) -> bool:
    return x.device.type == "cuda" and GPU_KERNEL and _gpu_kernels() is not None


def _device_seed(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """A stochastic Triton call's seed: one 64-bit word from ``generator``, drawn and kept on ``x``'s device."""
    _check_generator(generator, x.device)
    return _GPU_KERNELS.seed_tensor(x.device, generator)


def _skip_device_seed(x: torch.Tensor, generator: Optional[torch.Generator]) -> None:
    """Advance ``generator`` exactly as :func:`_device_seed` would, without launching the draw.

    A CUDA generator's state is its seed and a Philox offset kept on the host; a draw adds a fixed
    step to the offset (torch's launch configuration for one element), measured once per device on
    a generator of its own.  Elsewhere (the interpreter's CPU tensors in the tests, a torch without
    ``Generator.get_offset``) the seed is drawn.
    """
    _check_generator(generator, x.device)
    if x.device.type != "cuda" or not hasattr(torch.Generator, "get_offset"):
        _device_seed(x, generator)
        return
    step = _SEED_OFFSET_STEP.get(x.device)
    if step is None:
        probe = torch.Generator(device=x.device)
        before = probe.get_offset()
        _GPU_KERNELS.seed_tensor(x.device, probe)
        step = _SEED_OFFSET_STEP[x.device] = probe.get_offset() - before
    g = generator if generator is not None else torch.cuda.default_generators[x.device.index]
    g.set_offset(g.get_offset() + step)


# --------------------------------------------------------------------------------------------------
# first-use self-check of the Triton kernels
# --------------------------------------------------------------------------------------------------
_PROBE_SEED = 0x5EED_0F_ADA9_7  # stochastic probes draw nothing from the caller's generators


def _kernel_ok(kind: str, x: torch.Tensor, rounding: str, variant: tuple = ()) -> bool:
    """Whether the Triton kernel ``kind`` may round tensors like ``x`` (device, dtype) with ``rounding``.

    The first call for each (kernel, device, dtype, rounding, ``variant``) in a process runs the
    kernel on a probe (:func:`_self_check`) that covers full and partial blocks, ties, both signs,
    values beyond the range, ``+-inf``, NaN and ``-0.0``, and compares it with the whole-tensor ops:
    value for value for nearest rounding (``+0.0 == -0.0``, NaN matching NaN), and for stochastic
    rounding every output must be one of the two grid values around the exact input (the floor and
    the ceiling, saturated).  For MuPPET's kernels the extremes must equal ``torch.aminmax``'s and the
    scales are the whole-tensor path's own (:func:`_exponent_from_extremes`).  On a disagreement,
    or if the kernel raises (a Triton that cannot compile it), it warns once, with the input and
    both values, and this process uses the whole-tensor ops for that kernel from then on.  The
    probe synchronises with the device once; it draws nothing from any generator.
    """
    key = (kind, x.device, x.dtype, rounding, variant)
    ok = _KERNEL_CHECKS.get(key)
    if ok is None:
        ok = _KERNEL_CHECKS[key] = _self_check(kind, x.device, x.dtype, rounding, variant)
    return ok


def _probe_values(n: int, dtype: torch.dtype, device, span: float = 8.0) -> torch.Tensor:
    """``n`` deterministic probe values: a ramp over ``[-2 span, 2 span]``, half-step ties of the 8/4 grid
    (both parities) in every fifth element, and the specials near the start."""
    k = torch.arange(n, dtype=torch.float64)
    v = (k - n / 2) * (4.0 * span / n)
    v[3::5] = (torch.arange(len(v[3::5]), dtype=torch.float64) - len(v[3::5]) / 2 + 0.5) / 16
    specials = torch.tensor([math.inf, -math.inf, math.nan, -0.0, 0.0, 1e-30, -1e-30, 2 * span, -2 * span],
                            dtype=torch.float64)
    v[:len(specials)] = specials[:n]
    return v.to(dtype).to(device)


def _bracket(x: torch.Tensor, scale, low: float, high: float) -> tuple:
    """``(floor, ceil)`` grid values around ``x`` (``scale`` a number or a tensor broadcasting against
    ``x``), saturated to ``[low, high]`` codes, in ``x``'s dtype: the two values stochastic rounding may give."""
    a = x.double() * (scale.double() if isinstance(scale, torch.Tensor) else scale)
    inv = (1.0 / scale.double()) if isinstance(scale, torch.Tensor) else 1.0 / scale
    return tuple((f(a).clamp(low, high) * inv).to(x.dtype) for f in (torch.floor, torch.ceil))


def _same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: equal values (``+0.0 == -0.0``, as the tests' ``assert_same``), or both NaN."""
    a, b = a.float(), b.float()
    return (a == b) | (a.isnan() & b.isnan())


def _self_check(kind: str, device, dtype, rounding: str, variant: tuple) -> bool:
    """Run the first-use probe of ``kind`` (see :func:`_kernel_ok`); warn and return False on a difference."""
    K = _GPU_KERNELS
    try:
        checks = _PROBES[kind](K, device, dtype, rounding, variant)
        for inputs, got, allowed in checks:
            ok = _same(got, allowed[0])
            for alt in allowed[1:]:
                ok |= _same(got, alt)
            if not bool(ok.all()):
                i = int((~ok).nonzero()[0])
                shown = " or ".join(repr(float(a.reshape(-1)[i])) for a in allowed)
                _warn_fallback(kind, device, dtype, rounding, variant,
                               f"element {i}: input {float(inputs.reshape(-1)[i])!r} gives {float(got.reshape(-1)[i])!r}, "
                               f"the whole-tensor reference {shown}")
                return False
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot run must not stop training
        _warn_fallback(kind, device, dtype, rounding, variant,
                       f"it raised {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}")
        return False
    return True


def _warn_fallback(kind, device, dtype, rounding, variant, what: str) -> None:
    import triton

    extra = f", {variant}" if variant else ""
    warnings.warn(
        f"adapt.quant: the Triton kernel '{kind}' ({dtype}, {rounding}{extra}) on {device} failed its first-use "
        f"check against the whole-tensor ops: {what}. This process rounds with the whole-tensor ops instead "
        f"(slower, same distribution). Please report it with torch {torch.__version__}, Triton "
        f"{triton.__version__} and the GPU.", RuntimeWarning, stacklevel=4)


def _probe_fixed_point(K, device, dtype, rounding, variant):
    x = _probe_values(2 * K.BLOCK + 37, dtype, device)
    wl, fl = 8, 4
    if rounding == "nearest":
        return [(x, K.fixed_point(x, wl, fl, "nearest"), (_fixed_point(x, wl, fl, "nearest", None, None, False),))]
    return [(x, K.fixed_point(x, wl, fl, "stochastic", seed=_PROBE_SEED), _bracket(x, 2.0**fl, -128, 127))]


def _probe_round_scaled(K, device, dtype, rounding, variant):
    per_sample, clamp = variant
    x = _probe_values(3 * (K.BLOCK + 13), dtype, device).reshape(3, -1)
    x[1] *= 0.001  # rows with different scales
    bits = 8
    xc = x if x.dtype in (torch.float32, torch.float64) else x.float()
    view = (-1, 1) if per_sample else ()
    scale = torch.exp2(_dynamic_exponent(xc, bits, per_sample)).reshape(view)
    got = K.round_scaled(xc, scale, rounding, _PROBE_SEED if rounding == "stochastic" else None,
                         clamp_bits=bits if clamp else None).to(dtype)
    if rounding == "nearest":
        return [(x, got, (_dynamic_fixed_point(x, bits, "nearest", per_sample, None, clamp, False),))]
    low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if clamp else (-math.inf, math.inf)
    return [(x, got, tuple(v.to(dtype) for v in _bracket(xc, scale, low, high)))]


def _probe_tensors(K, device, dtype) -> list:
    """Segments of every kind: several full blocks and a partial one, one element, an exact block."""
    return [_probe_values(2 * K.BLOCK + 37, dtype, device), _probe_values(1, dtype, device) + 0.3,
            _probe_values(K.BLOCK, dtype, device, span=1.0), torch.empty(0, dtype=dtype, device=device)]


def _probe_segments(K, device, dtype, rounding, variant):
    xs = _probe_tensors(K, device, dtype)
    formats = [(8, 4), (16, 10), (4, 2), (8, 4)]
    got = K.fixed_point_segments(xs, formats, rounding, seed=_PROBE_SEED if rounding == "stochastic" else None)
    checks = []
    for x, y, (wl, fl) in zip(xs, got, formats):
        if rounding == "nearest":
            checks.append((x, y, (_fixed_point(x, wl, fl, "nearest", None, None, False),)))
        else:
            checks.append((x, y, _bracket(x, 2.0**fl, -(2.0 ** (wl - 1)), 2.0 ** (wl - 1) - 1)))
    return checks


def _probe_dynamic_segments(K, device, dtype, rounding, variant):
    (clamp,) = variant
    b = K.BLOCK
    xs = _probe_tensors(K, device, dtype)
    # A block of -0.0 beside negative values (its maximum is 0) and one beside a negative block (the minimum
    # stays negative): what Triton before 3.4 got wrong in float atomic_max/atomic_min.
    xs.append(torch.cat([torch.full((b,), -0.0), torch.full((b + 5,), -1.5)]).to(dtype).to(device))
    xs.append(torch.cat([torch.full((b,), -3.0), torch.full((b,), -0.0), torch.full((7,), 2.0)]).to(dtype).to(device))
    hi, lo = K.segment_extremes(xs)
    checks = []
    for k, x in enumerate(xs):
        if x.numel():
            mn, mx = torch.aminmax(x.float())
            # the kernel gives +0.0 for a zero extreme; the reference may give -0.0 (equal values)
            checks.append((x[:1], hi[k:k + 1], (torch.where(mx == 0, 0.0, mx).reshape(1),)))
            checks.append((x[:1], lo[k:k + 1], (torch.where(mn == 0, 0.0, mn).reshape(1),)))
    bits = 8
    scales = torch.exp2(_exponent_from_extremes(lo, hi, bits))
    ys = K.round_scaled_segments(xs, scales, rounding, seed=_PROBE_SEED if rounding == "stochastic" else None,
                                 clamp_bits=bits if clamp else None)
    low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if clamp else (-math.inf, math.inf)
    for x, y, s in zip(xs, ys, scales):
        if rounding == "nearest":
            checks.append((x, y, (_dynamic_fixed_point(x, bits, "nearest", False, None, clamp, False),)))
        else:
            checks.append((x, y, _bracket(x, s, low, high)))
    return checks


def _probe_divide(K, device, dtype, rounding, variant):
    xs = [_probe_values(2 * K.BLOCK + 37, dtype, device), _probe_values(3, dtype, device)]
    d = torch.tensor([3.0, 0.1], dtype=torch.float32).to(device)
    ys = K.divide_segments(xs, d)
    return [(x, y, (x / d[k],)) for k, (x, y) in enumerate(zip(xs, ys))]


_PROBES = {"fixed_point": _probe_fixed_point, "round_scaled": _probe_round_scaled, "segments": _probe_segments,
           "dynamic_segments": _probe_dynamic_segments, "divide": _probe_divide}


_LAYER_CHECKED = False


def _cpu_kernels():
    """The numba kernels, imported on first use (importing numba costs ~0.3 s; compiling, ~1 s once)."""
    global _LAYER_CHECKED
    import numba

    from adapt import _cpu_kernels

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != threads:  # follow torch.set_num_threads
        numba.set_num_threads(threads)
    if not _LAYER_CHECKED:  # once per process
        _LAYER_CHECKED = True
        if numba.config.NUMBA_NUM_THREADS > 1 and numba.threading_layer() == "workqueue":
            warnings.warn(
                "adapt's CPU rounding kernels run on numba's slower 'workqueue' threading layer (numba found no "
                "OpenMP runtime or TBB, or NUMBA_THREADING_LAYER asks for it): a quantized ResNet-20 step "
                "measured 1.49x float32 instead of about 1.15x. Install the system's OpenMP runtime (e.g. "
                "`apt install libgomp1`) for the fast path.",
                RuntimeWarning, stacklevel=3,
            )
    return _cpu_kernels


def cpu_kernel_threading() -> str:
    """numba's threading layer for the CPU kernels: ``"omp"`` or ``"tbb"`` (fast) or ``"workqueue"`` (slower)."""
    import numba

    _cpu_kernels()
    return numba.threading_layer()


def _round_cpu(xc: torch.Tensor, rounding: str, scale, low: float, high: float, generator, out=None) -> torch.Tensor:
    """``clamp(round(xc * scale), low, high) / scale`` on CPU through a fused kernel.

    ``round`` is ``floor(. + u)`` for ``"stochastic"``, half-to-even for ``"nearest"``.
    ``xc`` is float32 or float64; ``scale`` is a float, or (stochastic only) a 1-D
    float64 array with one scale per slice along dim 0.  ``out`` (contiguous, ``xc``'s
    dtype and shape; may be ``xc`` itself) receives the result.
    """
    kernels = _cpu_kernels()
    if rounding == "stochastic":
        _check_generator(generator, xc.device)
        seed = _seed_from(generator)
    x = xc.detach().contiguous()
    y = out if out is not None else torch.empty_like(x)
    if x.numel() == 0:
        return y
    serial = x.numel() < SERIAL_BELOW
    # A zero scale (MuPPET's scale for a tensor holding inf) makes 0 * inf = NaN, as on other devices.
    if isinstance(scale, float):
        inv = math.inf if scale == 0.0 else 1.0 / scale
        if rounding == "nearest":
            kernel = kernels.nearest_round_flat_serial if serial else kernels.nearest_round_flat
            kernel(x.view(-1).numpy(), y.detach().view(-1).numpy(), scale, inv, low, high)
        else:
            kernel = kernels.stochastic_round_flat_serial if serial else kernels.stochastic_round_flat
            kernel(x.view(-1).numpy(), y.detach().view(-1).numpy(), scale, inv, low, high, seed)
    else:
        rows = x.shape[0]
        with np.errstate(divide="ignore"):
            inv = 1.0 / scale
        kernel = kernels.stochastic_round_rows_serial if serial else kernels.stochastic_round_rows
        kernel(x.view(rows, -1).numpy(), y.detach().view(rows, -1).numpy(), scale, inv, low, high, seed)
    return y


def skip_draw(x: torch.Tensor, rounding: str, generator: Optional[torch.Generator] = None) -> None:
    """Advance ``generator`` exactly as quantizing ``x`` with ``rounding`` would, without quantizing.

    For a caller that skips a quantization it knows to be the identity (see
    :meth:`FixedPoint.contains`): on CPU, where a stochastic rounding draws one word,
    the random stream and hence every later rounding stay the same as without the
    skip; on CUDA with the Triton kernels the generator's Philox offset advances by what one
    seed draw takes, with no launch (:func:`_skip_device_seed`).  (On the whole-tensor path
    ``torch.rand`` draws depend on the size; nothing is drawn.)
    """
    if rounding == "stochastic" and x.device.type == "cpu" and CPU_KERNEL:
        _check_generator(generator, x.device)
        _seed_from(generator)
    elif rounding == "stochastic" and _on_gpu_kernel(x) and _kernel_ok("fixed_point", x, rounding):
        _skip_device_seed(x, generator)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16/bfloat16 cannot hold 2**fl for large fl; compute in float32 and cast back.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@dataclass(frozen=True)
class FixedPoint:
    """Signed, saturating fixed point: ``word_length`` bits including the sign, ``fractional_length`` of them after the point.

    The official AdaPT code (docs/method.md §1.3) gives every parameter tensor one such
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

    def contains(self, other) -> bool:
        """Whether every value of ``other`` (a format) is a value of this one.

        Then quantizing an ``other``-quantized tensor with this format changes
        nothing: its values are on this grid (``other``'s step is a multiple of this
        step) and inside this range, so nearest rounding, stochastic rounding in exact
        arithmetic (the CPU kernel) and saturation all leave them as they are.
        """
        return (isinstance(other, FixedPoint) and other.fractional_length <= self.fractional_length
                and self.min <= other.min and other.max <= self.max)

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
    * ``"stochastic"``: ``floor(x * 2**fl + u) * 2**-fl`` with ``u`` uniform in (0, 1)
      from ``generator`` (24 random bits), then saturate.  On CPU (fused kernel, float64)
      this is unbiased to within ``2**-25`` of a step for ``|x * 2**fl| < 2**28``; on
      CUDA (Triton kernel, exact split) for every finite value.  On the whole-tensor
      path the sum ``x * 2**fl + u`` is rounded to float32 first, a bias of
      about ``|x * 2**fl| * 2**-24`` steps that QPyTorch and MuPPET share.

    ``+inf``/``-inf`` saturate to the range ends, NaN stays NaN (so the training
    loop can see divergence).  The result has ``x``'s dtype and device; ``out``
    (same shape, dtype and device) receives it without a new allocation.
    """
    _check_tensor(x)
    FixedPoint(word_length, fractional_length)  # validates both arguments
    _check_rounding(rounding)
    return _fixed_point(x, word_length, fractional_length, rounding, generator, out, True)


def _fixed_point(x, word_length, fractional_length, rounding, generator, out, kernels: bool) -> torch.Tensor:
    """:func:`fixed_point` after validation; ``kernels=False`` takes the whole-tensor ops on every device."""
    if kernels and _on_gpu_kernel(x) and _kernel_ok("fixed_point", x, rounding):
        # half precision is loaded into float32 inside the kernel: no conversion pass
        seed = _device_seed(x, generator) if rounding == "stochastic" else None
        return _GPU_KERNELS.fixed_point(x, word_length, fractional_length, rounding, seed, out=out)
    dtype = _compute_dtype(x.dtype)
    xc = x if x.dtype == dtype else x.to(dtype)
    scale = 2.0 ** fractional_length
    step = 2.0 ** -fractional_length
    qmin = -(2.0 ** (word_length - 1))
    qmax = 2.0 ** (word_length - 1) - 1.0
    direct = out is not None and x.dtype == dtype
    if kernels and xc.device.type == "cpu" and CPU_KERNEL:
        y = _round_cpu(xc, rounding, scale, qmin, qmax, generator, out if direct and out.is_contiguous() else None)
        if direct and y is not out:
            out.copy_(y)
            y = out
    elif rounding == "nearest":
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


def _seeds_from(generator: Optional[torch.Generator], n: int) -> np.ndarray:
    """``n`` seeds, the same words (in order) as ``n`` calls of :func:`_seed_from`: one draw for all.

    The CPU generator fills a tensor element by element, one 64-bit output per element for
    the full 64-bit range (tests/test_quant.py checks the equality).
    """
    words = torch.empty(n, dtype=torch.int64).random_(-(2**63), None, generator=generator)
    return words.numpy().view(np.uint64)


def _groupable(tensors, outs) -> bool:
    """Whether :func:`fixed_point_many` can round these in one CPU kernel call."""
    if not CPU_KERNEL:
        return False
    for k, x in enumerate(tensors):
        if not (x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous()):
            return False
        if outs is not None:
            o = outs[k]
            if not (o.device.type == "cpu" and o.dtype == torch.float32 and o.is_contiguous() and o.shape == x.shape):
                return False
    return True


def _segments_on_gpu(tensors, outs) -> bool:
    """Whether the many-tensor functions can process these in one Triton launch (one device, one dtype, contiguous)."""
    first = tensors[0]
    if not _on_gpu_kernel(first):
        return False
    for t in list(tensors) + ([] if outs is None else list(outs)):
        if t.device != first.device or t.dtype != first.dtype or not t.is_contiguous():
            return False
    return outs is None or all(o.shape == x.shape for o, x in zip(outs, tensors))


def fixed_point_many(tensors, formats, rounding: str = "stochastic", generator: Optional[torch.Generator] = None,
                     outs=None) -> list:
    """``[fixed_point(x, f.word_length, f.fractional_length, rounding, generator, out=o) ...]`` in one call.

    ``tensors``, ``formats`` (:class:`FixedPoint` each) and ``outs`` (``None``, or one
    tensor per input; an output may be its input) are sequences of the same length; the
    results are returned as a list, in order.  On CPU, the results and the generator's state
    afterwards are identical to the loop over :func:`fixed_point`: stochastic rounding
    draws one seed per tensor, in order, from ``generator`` (on CUDA, see below).

    CPU, when every tensor (and output) is a contiguous float32 tensor and ``CPU_KERNEL``
    is set: one kernel call for all tensors (serial below :data:`SERIAL_BELOW` elements in
    total, else one parallel region).

    CUDA with the Triton kernels, when all tensors (and outputs) are contiguous, of one dtype,
    on one device: one launch for all (``_triton_kernels.fixed_point_segments``).  It draws
    *one* seed from ``generator`` for the call, and tensor ``k`` takes Philox stream ``k`` of
    it, so the random draws differ from the loop's (one seed per tensor), with the same
    distribution; nearest rounding is identical.  Otherwise, and on other devices: the loop.
    """
    tensors, formats = list(tensors), list(formats)
    if outs is not None:
        outs = list(outs)
        if len(outs) != len(tensors):
            raise ValueError(f"outs has {len(outs)} tensors for {len(tensors)} inputs")
    if len(formats) != len(tensors):
        raise ValueError(f"formats has {len(formats)} entries for {len(tensors)} tensors")
    _check_rounding(rounding)
    for x in tensors:
        _check_tensor(x)
    for f in formats:
        if not isinstance(f, FixedPoint):
            raise TypeError(f"fixed_point_many takes FixedPoint formats, got {f!r}")
    if not tensors:
        return []
    if _segments_on_gpu(tensors, outs) and _kernel_ok("segments", tensors[0], rounding):
        seed = _device_seed(tensors[0], generator) if rounding == "stochastic" else None
        ys = _GPU_KERNELS.fixed_point_segments([x.detach() for x in tensors],
                                               [(f.word_length, f.fractional_length) for f in formats],
                                               rounding, seed, outs=None if outs is None else [o.detach() for o in outs])
        return ys if outs is None else list(outs)
    if not _groupable(tensors, outs):
        return [fixed_point(x, f.word_length, f.fractional_length, rounding, generator,
                            out=None if outs is None else outs[k])
                for k, (x, f) in enumerate(zip(tensors, formats))]
    kernels = _cpu_kernels()
    n = len(tensors)
    stochastic = rounding == "stochastic"
    if stochastic:
        _check_generator(generator, tensors[0].device)
        seeds = _seeds_from(generator, n)
    else:
        seeds = np.zeros(n, dtype=np.uint64)
    xs = [x.detach() for x in tensors]
    ys = [torch.empty_like(x) for x in xs] if outs is None else [o.detach() for o in outs]
    fls = np.array([f.fractional_length for f in formats], dtype=np.float64)
    wls = np.array([f.word_length for f in formats], dtype=np.float64)
    scales = np.exp2(fls)
    inv_scales = np.exp2(-fls)
    highs = np.exp2(wls - 1.0)
    lows = -highs
    highs -= 1.0
    sizes = np.array([x.numel() for x in xs], dtype=np.int64)
    x_addr = np.array([x.data_ptr() for x in xs], dtype=np.int64)
    y_addr = np.array([y.data_ptr() for y in ys], dtype=np.int64)
    if int(sizes.sum()) < SERIAL_BELOW:
        kernels.fixed_point_many_serial(x_addr, y_addr, sizes, scales, inv_scales, lows, highs, seeds, stochastic)
    else:
        kernels.fixed_point_many_parallel(x_addr, y_addr, sizes, scales, inv_scales, lows, highs, seeds, stochastic,
                                          _GROUP_BLOCK)
    return ys if outs is None else list(outs)


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


def _dynamic_exponent(xc: torch.Tensor, bits: int, per_sample: bool) -> torch.Tensor:
    """MuPPET's scale exponent ``sf`` for a non-empty float32/float64 ``xc`` (one per dim-0 slice with
    ``per_sample``): ``floor(log2(min(|maxVal / max|, |minVal / min|)))``, capped at 126, 0 where all-zero.
    The one place it is computed: :func:`dynamic_fixed_point` and :func:`adapt.muppet.scale_exponent`."""
    if per_sample:
        lo, hi = torch.aminmax(xc.reshape(xc.shape[0], -1), dim=1)
    else:
        lo, hi = torch.aminmax(xc)
    return _exponent_from_extremes(lo, hi, bits)


def _exponent_from_extremes(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`_dynamic_exponent` from the extremes (elementwise, so tensors of many extremes at once)."""
    max_val = 2.0 ** (bits - 1) - 1 + 0.5
    min_val = -(2.0 ** (bits - 1)) - 0.5
    range_best = torch.minimum((max_val / hi).abs(), (min_val / lo).abs())
    sf = torch.floor(torch.log2(range_best)).clamp_(max=126)
    return torch.where((hi == 0) & (lo == 0), torch.zeros_like(sf), sf)


def dynamic_fixed_point(
    x: torch.Tensor,
    bits: int,
    rounding: str = "stochastic",
    per_sample: bool = False,
    generator: Optional[torch.Generator] = None,
    clamp: bool = False,
) -> torch.Tensor:
    """MuPPET's ``quantize.py`` dynamic fixed point (docs/method.md §2.3).

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
    return _dynamic_fixed_point(x, bits, rounding, per_sample, generator, clamp, True)


def _dynamic_fixed_point(x, bits, rounding, per_sample, generator, clamp, kernels: bool) -> torch.Tensor:
    """:func:`dynamic_fixed_point` after validation; ``kernels=False`` takes the whole-tensor ops everywhere."""
    dtype = _compute_dtype(x.dtype)
    xc = x if x.dtype == dtype else x.to(dtype)
    if x.numel() == 0:
        return x.clone()
    view = (-1,) + (1,) * (x.dim() - 1) if per_sample else ()
    with torch.no_grad():
        scale = torch.exp2(_dynamic_exponent(xc, bits, per_sample)).reshape(view)
    low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if clamp else (-math.inf, math.inf)
    if kernels and _on_gpu_kernel(xc) and _kernel_ok("round_scaled", xc, rounding, (per_sample, clamp)):
        # the same scale, then one fused rounding pass
        seed = _device_seed(xc, generator) if rounding == "stochastic" else None
        y = _GPU_KERNELS.round_scaled(xc, scale, rounding, seed, clamp_bits=bits if clamp else None)
        return y if y.dtype == x.dtype else y.to(x.dtype)
    if kernels and rounding == "stochastic" and xc.device.type == "cpu" and CPU_KERNEL:
        scales = scale.reshape(-1).double().numpy()
        y = _round_cpu(xc, "stochastic", scales if per_sample else float(scales[0]), low, high, generator)
        return y if y.dtype == x.dtype else y.to(x.dtype)
    if rounding == "stochastic":
        y = _uniform(xc, dtype, generator)
        y.addcmul_(xc, scale).floor_()
    else:
        y = (xc * scale).round_()
    if clamp:
        y.clamp_(low, high)
    y.div_(scale)
    return y if y.dtype == x.dtype else y.to(x.dtype)


def dynamic_fixed_point_many(tensors, bits: int, rounding: str = "stochastic",
                             generator: Optional[torch.Generator] = None, clamp: bool = False, outs=None) -> list:
    """``[dynamic_fixed_point(x, bits, rounding, generator=generator, clamp=clamp) ...]`` (per tensor, not
    per sample), written into ``outs`` when given (an output may be its input); returns the list.

    CUDA with the Triton kernels, for contiguous float32 tensors (and outputs) on one device: two launches
    for all tensors, one for the extremes and one for the rounding, with the scales computed in between
    by the same ops as :func:`dynamic_fixed_point` on a vector of extremes (identical scales).  Like
    :func:`fixed_point_many` there, one seed is drawn for the call and tensor ``k`` takes Philox stream
    ``k``.  Everywhere else: the loop, identical to calling :func:`dynamic_fixed_point` per tensor.
    """
    tensors = list(tensors)
    if outs is not None:
        outs = list(outs)
        if len(outs) != len(tensors):
            raise ValueError(f"outs has {len(outs)} tensors for {len(tensors)} inputs")
    _check_int("bits", bits, 2, 32)
    _check_rounding(rounding)
    for x in tensors:
        _check_tensor(x)
    if not tensors:
        return []
    if (tensors[0].dtype == torch.float32 and _segments_on_gpu(tensors, outs)
            and _kernel_ok("dynamic_segments", tensors[0], rounding, (clamp,))):
        xs = [x.detach() for x in tensors]
        hi, lo = _GPU_KERNELS.segment_extremes(xs)
        with torch.no_grad():
            scales = torch.exp2(_exponent_from_extremes(lo, hi, bits))
        seed = _device_seed(tensors[0], generator) if rounding == "stochastic" else None
        ys = _GPU_KERNELS.round_scaled_segments(xs, scales, rounding, seed, None if outs is None else
                                                [o.detach() for o in outs], clamp_bits=bits if clamp else None)
        return ys if outs is None else list(outs)
    ys = []
    for k, x in enumerate(tensors):
        y = dynamic_fixed_point(x, bits, rounding, False, generator, clamp=clamp)
        if outs is not None:
            outs[k].copy_(y)
            y = outs[k]
        ys.append(y)
    return ys


def divide_many_(tensors, divisors: torch.Tensor) -> list:
    """``tensors[k].div_(divisors[k])`` for every ``k``, in place; returns ``tensors`` as a list.

    ``divisors``: a 1-D tensor with one value per tensor, on their device (e.g. their norms,
    as AdaPT's normalised gradients need, docs/method.md §1.4).  CUDA with the Triton kernels,
    for contiguous float32 tensors on one device: one launch for all
    (``_triton_kernels.divide_segments``; IEEE division, the same bits as ``torch.div``).
    Elsewhere ``torch._foreach_div_`` with the divisors as 0-d tensors (on CPU a loop of
    ``div_``; on CUDA one launch per tensor).
    """
    tensors = list(tensors)
    if not tensors:
        return tensors
    if (tensors[0].dtype == torch.float32 and divisors.dtype == torch.float32 and divisors.device == tensors[0].device
            and _segments_on_gpu(tensors, None) and _kernel_ok("divide", tensors[0], "nearest")):
        _GPU_KERNELS.divide_segments(tensors, divisors, outs=tensors)
        return tensors
    torch._foreach_div_(tensors, list(divisors.unbind()))
    return tensors


class _QuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt, rounding, generator):
        return fmt.quantize(x, rounding, generator)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


class _QuantizeSTEInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt, rounding, generator):
        ctx.mark_dirty(x)
        return fmt.quantize(x, rounding, generator, out=x)

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


def quantize_ste(x: torch.Tensor, fmt, rounding: str = "stochastic", generator=None, in_place: bool = False
                 ) -> torch.Tensor:
    """Quantize activations: forward ``fmt.quantize(x)``, backward passes the gradient unchanged.

    This is what both official codes do by assigning to ``tensor.data``, which
    autograd does not see (docs/method.md §1.3, §2.3): a straight-through estimator.

    ``in_place=True`` writes the result into ``x`` and returns it (autograd records an
    in-place op, so ``x`` must not be a leaf that requires grad).  Values, gradients and
    random draws are the same as out of place; it saves allocating a new tensor, which on
    CPU can cost more than the rounding itself: for 8,388,608 floats (a ResNet-20 stage-1
    activation at batch 512, above the 32 MB that glibc serves from fresh pages every time)
    11.8 ms into a new tensor against 2.4 ms in place (2 threads;
    ``python benchmarks/quantizer.py --device cpu --numel 8388608``).  Only for a tensor that no
    autograd node has saved: the caller's responsibility (:class:`adapt.layers.QuantizedModel`
    uses it for layer outputs whose backward does not read them).
    """
    if in_place:
        return _QuantizeSTEInPlace.apply(x, fmt, rounding, generator)
    return _QuantizeSTE.apply(x, fmt, rounding, generator)


def quantize_gradient(x: torch.Tensor, fmt, rounding: str = "stochastic", generator=None) -> torch.Tensor:
    """Identity forward; in backward the gradient flowing to ``x`` is quantized with ``fmt``.

    Put on a layer's input, this quantizes the layer's ``grad_input`` as MuPPET's
    backward hook does (docs/method.md §2.3).
    """
    return _QuantizeGradient.apply(x, fmt, rounding, generator)
