"""Fused Triton kernels for fixed-point rounding of CUDA tensors (private; :mod:`adapt.quant` calls them).

Why a kernel: on a GPU the whole-tensor path of :mod:`adapt.quant` is 3-5 launches per
quantization (clamp, add, sub; or ``torch.rand``, ``add_``, ``floor_``, ``clamp_``, ``mul_``), each a
full pass over memory, and the stochastic one materialises a tensor of random numbers.  Here every
quantization is **one read and one write** of the tensor in one launch (plus, for stochastic
rounding, a one-element ``random_`` that draws the seed; plus, for dynamic fixed point, the small
scale computation of :func:`adapt.quant.dynamic_fixed_point`).  Triton ships with the CUDA builds
of torch; this module imports it, :mod:`adapt.quant` imports this module only when it rounds a
CUDA tensor.

**Arithmetic.**  float32 (float64 for float64 tensors; float16/bfloat16 are loaded into float32 and
the result is rounded back on the store, as the whole-tensor path's ``.to(dtype)`` does).  float32
is enough for exact results because every step is exact:

* ``a = x * 2**fl`` scales by a power of two (exact unless it overflows, and an overflow saturates
  anyway);
* ``t = trunc(a)`` and ``r = a - t`` are exact (``r`` is ``a``'s fractional part, which has no more
  significant bits than ``a``);
* nearest: ``t`` moves one code away from zero when ``|r| > 1/2``, or ``|r| = 1/2`` and ``t`` is odd
  (round half to even, as ``np.rint`` in the CPU kernel);
* stochastic: with ``u = (k + 1/2) * 2**-24`` (``k`` 24 random bits, as the CPU kernel),
  ``floor(a + u) = t + floor((floor(r * 2**25) + 2k + 1) / 2**25)``, an int32 sum and an arithmetic
  shift (``r * 2**25`` is exact and below ``2**25`` in magnitude; ``2k + 1 = u * 2**25`` is an
  integer, so the inner floor loses nothing).  This is ``floor(a + u)`` in exact arithmetic for
  *every* finite ``a``; the CPU kernel's float64 sum is exact for ``|a| < 2**28``, the whole-tensor
  float32 path rounds ``a + u`` first.  FMA contraction cannot change any of it (every product is
  exact).
* saturation by comparisons, so NaN passes through; ``+-inf`` give ``r = NaN``, which is replaced
  by 0 before the float-to-int conversion, and ``t = +-inf`` saturates.

So nearest rounding is bit-identical to the CPU kernel and the whole-tensor ops, and stochastic
rounding is exactly ``clamp(floor(x * 2**fl + u))`` for the kernel's own ``u``.

**Random numbers.**  Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011; the generator of Triton's ``tl.randint4x``) keyed by one 64-bit seed per call.  Element ``i`` of a call
takes the top 24 bits of word ``i % 4`` of the Philox block at counter ``(i // 4, stream, 0, 0)``
under the key ``(seed & 0xFFFFFFFF, seed >> 32)``:
a pure function of ``(seed, stream, i)``, independent of the block size and the launch
configuration, and a quarter of a Philox evaluation per element.  ``stream`` is 0 for a single
tensor and the segment number in :func:`fixed_point_segments`.  The seed is drawn on the tensor's
device from the caller's generator (:func:`seed_tensor`: one ``random_`` on a one-element int64
tensor, the same 64-bit draw as the CPU path's ``_seed_from``) and read by the kernel from device
memory, so there is no host synchronisation and the kernels can be captured in a CUDA graph.
Results are reproducible for a given seed; they differ from the CPU kernel's (SplitMix64) and
from the whole-tensor path's (``torch.rand``) random numbers, not in distribution.

**Testing without a GPU.**  Loaded with ``TRITON_INTERPRET=1`` set, the same kernels run on CPU
tensors in Triton's interpreter (``tests/test_triton_kernels.py``): the functions below take any
device, but :mod:`adapt.quant` routes only CUDA tensors here.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

__all__ = ["BLOCK", "seed_tensor", "fixed_point", "round_scaled", "segment_blocks", "fixed_point_segments",
           "segment_extremes", "round_scaled_segments"]

#: Elements per program (default of every ``block`` argument, read at call time).  Results do not
#: depend on it (tests check); 1024 with 4 warps gives each thread 8 elements as two 16-byte vectors.
BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _trunc(a):
    return tl.where(a >= 0, tl.floor(a), tl.ceil(a))


@triton.jit
def _philox4x32_10(c0, c1, k0, k1):
    """Philox4x32-10 of the counter ``(c0, c1, 0, 0)`` under the key ``(k0, k1)`` (uint32 tensors).

    Salmon et al. (SC 2011), Random123's ``philox4x32round`` and ``philox4x32bumpkey``; the same
    function as Triton's ``tl.randint4x``, written out here so that the kernels only call their
    own jitted functions (then a copy of this module loaded with ``TRITON_INTERPRET=1`` runs
    entirely in Triton's interpreter, whatever was imported before).
    """
    c2 = c0 * 0
    c3 = c2
    for _ in tl.static_range(10):
        _c0, _c2 = c0, c2
        c0 = tl.math.umulhi(0xCD9E8D57, _c2) ^ c1 ^ k0
        c2 = tl.math.umulhi(0xD2511F53, _c0) ^ c3 ^ k1
        c1 = tl.mul(_c2, 0xCD9E8D57, sanitize_overflow=False)
        c3 = tl.mul(_c0, 0xD2511F53, sanitize_overflow=False)
        k0 = tl.add(k0, 0x9E3779B9, sanitize_overflow=False)
        k1 = tl.add(k1, 0xBB67AE85, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def _round_codes(a, seed, stream, ctr, cols, STOCHASTIC: tl.constexpr):
    """Integer-valued ``round(a)`` for a (Q, 4) tile; ``ctr`` (Q, 1) holds the Philox counters ``i // 4``."""
    t = _trunc(a)
    r = a - t  # exact; NaN for +-inf and NaN
    if STOCHASTIC:
        seed = tl.cast(seed, tl.uint64, bitcast=True)
        k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
        k1 = (seed >> 32).to(tl.uint32)
        w0, w1, w2, w3 = _philox4x32_10(ctr.to(tl.uint32), tl.cast(stream, tl.uint32) + ctr.to(tl.uint32) * 0, k0, k1)
        w = tl.where(cols == 0, w0, tl.where(cols == 1, w1, tl.where(cols == 2, w2, w3)))
        d = ((w >> 8) * 2 + 1).to(tl.int32)  # 2k + 1, k = top 24 bits: u = d * 2**-25
        c = tl.floor(r * 33554432.0)  # r * 2**25
        c = tl.where(c == c, c, 0.0).to(tl.int32)  # no float-to-int conversion of NaN
        v = t + ((c + d) >> 25).to(a.dtype)
    else:
        ar = tl.abs(r)
        odd = t - 2.0 * tl.floor(t * 0.5)  # 1 for odd t, 0 for even t (and NaN for +-inf, NaN)
        up = (ar > 0.5) | ((ar == 0.5) & (odd != 0.0))
        v = tl.where(up, t + tl.where(r > 0, 1.0, -1.0).to(a.dtype), t)
    return v


@triton.jit
def _saturate(v, low, high):
    # Comparisons, not min/max, so that NaN stays NaN.
    return tl.where(v < low, low, tl.where(v > high, high, v))


@triton.jit
def _to_out(v, OUT: tl.constexpr):
    """``v`` in the output dtype, rounded to nearest even (written out for bfloat16, whose conversion
    Triton's interpreter truncates; compiled Triton rounds to nearest even as well)."""
    if OUT == tl.bfloat16:
        b = v.to(tl.float32).to(tl.uint32, bitcast=True)
        r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        r = tl.where(v != v, (b >> 16) | 0x40, r)  # NaN stays a (quiet) NaN
        return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(OUT)


@triton.jit(do_not_specialize=["low", "high", "stream"])
def _round_kernel(x_ptr, y_ptr, n, scale, inv_scale, low, high, scale_ptr, row_len, seed_ptr, stream,
                  STOCHASTIC: tl.constexpr, DYNAMIC: tl.constexpr, PER_ROW: tl.constexpr,
                  CLAMP: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr):
    """``y = saturate(round(x * s), low, high) / s`` over ``n`` contiguous elements.

    ``s`` is the scalar ``scale`` (fixed point; ``inv_scale`` = 1/s) or, with ``DYNAMIC``, read
    from ``scale_ptr``: one value, or with ``PER_ROW`` one per row of ``row_len`` elements.
    """
    Q: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0)
    if I64:
        pid = pid.to(tl.int64)
    rows = tl.arange(0, Q)[:, None]
    cols = tl.arange(0, 4)[None, :]
    ctr = pid * Q + rows
    offs = ctr * 4 + cols
    mask = offs < n
    cdt = tl.float64 if F64 else tl.float32
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(cdt)
    if DYNAMIC:
        if PER_ROW:
            s = tl.load(scale_ptr + offs // row_len, mask=mask, other=1.0).to(cdt)
        else:
            s = tl.load(scale_ptr).to(cdt)
        if F64:
            inv = 1.0 / s
        else:
            inv = tl.math.div_rn(tl.full(s.shape, 1.0, tl.float32), s)  # IEEE: 1/2**sf exactly; 1/0 = inf
    else:
        s = tl.cast(scale, cdt)
        inv = tl.cast(inv_scale, cdt)
    seed = 0
    if STOCHASTIC:
        seed = tl.load(seed_ptr)
    v = _round_codes(x * s, seed, stream, ctr, cols, STOCHASTIC)
    if CLAMP:
        v = _saturate(v, tl.cast(low, cdt), tl.cast(high, cdt))
    tl.store(y_ptr + offs, _to_out(v * inv, y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["low", "high"])
def _segments_kernel(table_ptr, blocks_ptr, seed_ptr, scale_ptr, low, high,
                     STOCHASTIC: tl.constexpr, DYNAMIC: tl.constexpr, CLAMP: tl.constexpr, DTYPE: tl.constexpr,
                     F64: tl.constexpr, BLOCK: tl.constexpr):
    """One launch over many tensors: program ``p`` rounds block ``blocks[p, 1]`` of segment ``blocks[p, 0]``.

    ``table`` (int64, one row of 6 per segment): input address, output address, numel, word
    length, fractional length, stream.  Segment ``s`` gets exactly what :func:`_round_kernel`
    gives that tensor with the same seed and stream ``table[s, 5]``: fixed point with the row's
    word and fractional lengths, or with ``DYNAMIC`` MuPPET's rounding with the float32 scale
    ``scale[s]`` (saturated to ``[low, high]`` with ``CLAMP``; the lengths are then unused).
    """
    Q: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0)
    seg = tl.load(blocks_ptr + 2 * pid)
    blk = tl.load(blocks_ptr + 2 * pid + 1).to(tl.int64)
    row = table_ptr + 6 * seg.to(tl.int64)
    x_ptr = tl.load(row).to(tl.pointer_type(DTYPE))
    y_ptr = tl.load(row + 1).to(tl.pointer_type(DTYPE))
    n = tl.load(row + 2)
    stream = tl.load(row + 5).to(tl.int32)
    cdt = tl.float64 if F64 else tl.float32
    if DYNAMIC:
        s = tl.load(scale_ptr + seg)
        inv = tl.math.div_rn(tl.full((), 1.0, tl.float32), s)  # IEEE: 1/2**sf exactly; 1/0 = inf
    else:
        wl = tl.load(row + 3).to(tl.int32)
        fl = tl.load(row + 4).to(tl.int32)
        # 2**fl and 2**-fl from their exponent bits (exact; fl <= 32), the code range from wl <= 32.
        s = ((fl + 127) << 23).to(tl.float32, bitcast=True).to(cdt)
        inv = ((127 - fl) << 23).to(tl.float32, bitcast=True).to(cdt)
        half = (tl.full((), 1, tl.int64) << (wl - 1).to(tl.int64)).to(cdt)
    rows = tl.arange(0, Q)[:, None]
    cols = tl.arange(0, 4)[None, :]
    ctr = blk * Q + rows
    offs = ctr * 4 + cols
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(cdt)
    seed = 0
    if STOCHASTIC:
        seed = tl.load(seed_ptr)
    v = _round_codes(x * s, seed, stream, ctr, cols, STOCHASTIC)
    if DYNAMIC:
        if CLAMP:
            v = _saturate(v, tl.cast(low, cdt), tl.cast(high, cdt))
    else:
        v = _saturate(v, -half, half - 1.0)
    tl.store(y_ptr + offs, _to_out(v * inv, DTYPE), mask=mask)


@triton.jit
def _larger(a, b):
    return tl.maximum(a, b)


@triton.jit
def _smaller(a, b):
    return tl.minimum(a, b)


@triton.jit
def _segments_extremes_kernel(table_ptr, blocks_ptr, hi_ptr, lo_ptr, nan_ptr, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    """Per segment, ``max`` and ``min`` (atomic over its blocks; exact, so order-free) and whether it holds NaN."""
    pid = tl.program_id(0)
    seg = tl.load(blocks_ptr + 2 * pid)
    blk = tl.load(blocks_ptr + 2 * pid + 1).to(tl.int64)
    row = table_ptr + 6 * seg.to(tl.int64)
    x_ptr = tl.load(row).to(tl.pointer_type(DTYPE))
    n = tl.load(row + 2)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    ok = mask & (x == x)
    # tl.reduce with our own combine functions, not tl.max/tl.min (jitted in Triton's standard library,
    # which an interpreted copy of this module could not call; see _philox4x32_10)
    tl.atomic_max(hi_ptr + seg, tl.reduce(tl.where(ok, x, float("-inf")), 0, _larger))
    tl.atomic_min(lo_ptr + seg, tl.reduce(tl.where(ok, x, float("inf")), 0, _smaller))
    tl.atomic_max(nan_ptr + seg, tl.reduce((mask & (x != x)).to(tl.int32), 0, _larger))


_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
              torch.float64: tl.float64}


def seed_tensor(device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One uniform 64-bit seed from ``generator`` (the device's default if None), left on ``device``.

    The same draw as :func:`adapt.quant._seed_from` on CPU (``random_`` over the full int64 range),
    done on the device so that reading it needs no synchronisation: the kernel loads it.
    """
    return torch.empty((1,), dtype=torch.int64, device=device).random_(-(2**63), None, generator=generator)


def _as_seed(seed, device) -> torch.Tensor:
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != torch.device(device):
            raise ValueError(f"seed must be a one-element int64 tensor on {device}, got {seed.dtype} "
                             f"{tuple(seed.shape)} on {seed.device}")
        return seed.reshape(1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int or a one-element int64 tensor, got {seed!r}")
    word = seed & 0xFFFFFFFFFFFFFFFF
    return torch.tensor([word - 2**64 if word >= 2**63 else word], dtype=torch.int64, device=device)


def _check_rounding(rounding: str) -> bool:
    if rounding not in ("stochastic", "nearest"):
        raise ValueError(f"rounding must be 'stochastic' or 'nearest', got {rounding!r}")
    return rounding == "stochastic"


def _prepare(x: torch.Tensor, out: Optional[torch.Tensor]):
    if x.dtype not in _TL_DTYPES:
        raise TypeError(f"the Triton kernels take float16, bfloat16, float32 or float64 tensors, got {x.dtype}")
    xc = x.detach().contiguous()
    direct = out is not None and out.is_contiguous() and out.dtype == x.dtype and out.shape == x.shape
    y = out if direct else torch.empty_like(xc)
    return xc, y


def _finish(y: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    if out is not None and y is not out:
        out.copy_(y)
        return out
    return y


def _launch(xc, y, stochastic, seed, *, scale=1.0, inv=1.0, low=0, high=0, scale_t=None, row_len=1,
            dynamic=False, clamp=True, stream=0, block=None):
    n = xc.numel()
    if n == 0:
        return y
    block = BLOCK if block is None else block
    if n >= 2**34:  # the Philox counter i // 4 is 32 bits
        raise ValueError(f"the Triton kernels take at most 2**34 elements, got {n}")
    if block < 4 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 4, got {block}")
    seed_t = _as_seed(seed, xc.device) if stochastic else xc  # unused pointer when not stochastic
    grid = (triton.cdiv(n, block),)
    _round_kernel[grid](
        xc, y, n, scale, inv, low, high, scale_t if dynamic else xc, row_len, seed_t, stream,
        STOCHASTIC=stochastic, DYNAMIC=dynamic, PER_ROW=dynamic and scale_t.numel() > 1, CLAMP=clamp,
        F64=xc.dtype == torch.float64, I64=n + block >= 2**31, BLOCK=block, num_warps=_NUM_WARPS,
    )
    return y


def fixed_point(x: torch.Tensor, word_length: int, fractional_length: int, rounding: str = "stochastic",
                seed=None, out: Optional[torch.Tensor] = None, *, stream: int = 0, block: Optional[int] = None) -> torch.Tensor:
    """:func:`adapt.quant.fixed_point` in one kernel: ``clamp(round(x * 2**fl), -2**(wl-1), 2**(wl-1)-1) * 2**-fl``.

    ``seed`` (stochastic only): an int (any 64-bit pattern) or a one-element int64 tensor on
    ``x``'s device, e.g. from :func:`seed_tensor`.  ``stream`` selects an independent Philox
    stream for the same seed; ``block`` (a power of two) changes the launch, never the result.
    Arguments are assumed validated by the caller (:mod:`adapt.quant`).
    """
    stochastic = _check_rounding(rounding)
    if stochastic and seed is None:
        raise ValueError("stochastic rounding needs a seed (see seed_tensor)")
    xc, y = _prepare(x, out)
    _launch(xc, y, stochastic, seed, scale=2.0**fractional_length, inv=2.0**-fractional_length,
            low=-(2 ** (word_length - 1)), high=2 ** (word_length - 1) - 1, stream=stream, block=block)
    return _finish(y, out)


def round_scaled(x: torch.Tensor, scale: torch.Tensor, rounding: str = "stochastic", seed=None,
                 clamp_bits: Optional[int] = None, *, stream: int = 0, block: Optional[int] = None) -> torch.Tensor:
    """MuPPET's rounding step: ``round(x * scale) / scale``, saturated to ``clamp_bits`` bits if given.

    ``scale`` is a tensor on ``x``'s device in the compute dtype (float64 for float64 ``x``,
    float32 otherwise): one element (per tensor) or ``x.shape[0]`` elements (one per slice along
    dim 0).  :func:`adapt.quant.dynamic_fixed_point` computes it with the whole-tensor path's own
    ops, so both paths use identical scales; a zero scale (``inf`` in the tensor) gives NaN.
    """
    stochastic = _check_rounding(rounding)
    if stochastic and seed is None:
        raise ValueError("stochastic rounding needs a seed (see seed_tensor)")
    xc, y = _prepare(x, None)
    cdt = torch.float64 if xc.dtype == torch.float64 else torch.float32
    s = scale.detach().reshape(-1).to(cdt).contiguous()
    rows = s.numel()
    if rows != 1 and (xc.dim() == 0 or rows != xc.shape[0]):
        raise ValueError(f"scale must have 1 or x.shape[0] elements, got {rows} for shape {tuple(xc.shape)}")
    row_len = max(1, xc.numel() // rows) if rows > 1 else max(1, xc.numel())
    low, high = (0, 0) if clamp_bits is None else (-(2 ** (clamp_bits - 1)), 2 ** (clamp_bits - 1) - 1)
    return _launch(xc, y, stochastic, seed, scale_t=s, row_len=row_len, dynamic=True, low=low, high=high,
                   clamp=clamp_bits is not None, stream=stream, block=block)


def _segment_table(xs: list, outs, formats) -> tuple:
    """``(outs, table)``: the outputs (new tensors if ``outs`` is None) and the int64 device table of a
    segments launch, one row per tensor (input address, output address, numel, word length, fractional
    length, stream); ``table`` is None when there are no tensors.  Checks one dtype, one device, contiguity."""
    if outs is None:
        outs = [torch.empty_like(x) for x in xs]
    outs = list(outs)
    if len(outs) != len(xs):
        raise ValueError(f"got {len(xs)} tensors but {len(outs)} outputs")
    if not xs:
        return outs, None
    dtype, device = xs[0].dtype, xs[0].device
    if dtype not in _TL_DTYPES:
        raise TypeError(f"the Triton kernels take float16, bfloat16, float32 or float64 tensors, got {dtype}")
    rows = []
    for i, (x, y, (wl, fl)) in enumerate(zip(xs, outs, formats)):
        for name, t in (("tensor", x), ("output", y)):
            if t.dtype != dtype or t.device != device or not t.is_contiguous():
                raise ValueError(f"{name} {i} must be contiguous, {dtype}, on {device}; got {t.dtype} on {t.device}"
                                 f"{'' if t.is_contiguous() else ', not contiguous'}")
        if y.shape != x.shape:
            raise ValueError(f"output {i} has shape {tuple(y.shape)}, tensor {i} {tuple(x.shape)}")
        if x.numel() >= 2**34:
            raise ValueError(f"tensor {i} has {x.numel()} elements; the Triton kernels take at most 2**34")
        rows.append([x.data_ptr(), y.data_ptr(), x.numel(), wl, fl, i])
    return outs, torch.tensor(rows, dtype=torch.int64).to(device)


def segment_blocks(numels: Sequence[int], block: Optional[int] = None) -> torch.Tensor:
    """The (segment, block) pairs of a :func:`fixed_point_segments` launch, as an int32 (blocks, 2) CPU tensor."""
    block = BLOCK if block is None else block
    counts = torch.tensor([triton.cdiv(n, block) for n in numels], dtype=torch.int64)
    seg = torch.repeat_interleave(torch.arange(len(numels), dtype=torch.int64), counts)
    starts = torch.cumsum(counts, 0) - counts
    blk = torch.arange(int(counts.sum()), dtype=torch.int64) - torch.repeat_interleave(starts, counts)
    return torch.stack([seg, blk], 1).to(torch.int32)


def fixed_point_segments(xs: Sequence[torch.Tensor], formats: Sequence[tuple], rounding: str = "stochastic",
                         seed=None, outs: Optional[Sequence[torch.Tensor]] = None, *, block: Optional[int] = None,
                         blocks: Optional[torch.Tensor] = None) -> list:
    """Quantize many tensors, each with its own ``(word_length, fractional_length)``, in one launch.

    ``xs``: contiguous tensors of one dtype on one device.  ``outs`` (default: new tensors) may
    be ``xs`` themselves (in place).  Tensor ``s`` gets what :func:`fixed_point` gives it with
    the same ``seed`` and ``stream=s``: one seed per call, independent streams per tensor.
    ``blocks`` (from :func:`segment_blocks`, moved to the device) can be cached by a caller that
    quantizes the same shapes every step; otherwise it is built and copied here.  One small
    host-to-device copy carries the table of addresses and formats.
    """
    stochastic = _check_rounding(rounding)
    if stochastic and seed is None:
        raise ValueError("stochastic rounding needs a seed (see seed_tensor)")
    block = BLOCK if block is None else block
    xs = list(xs)
    if len(formats) != len(xs):
        raise ValueError(f"got {len(xs)} tensors but {len(formats)} formats")
    for i, (wl, fl) in enumerate(formats):
        if not (1 <= wl <= 32 and 0 <= fl <= 32):
            raise ValueError(f"format {i} = ({wl}, {fl}) is outside word length 1..32, fractional length 0..32")
    outs, table = _segment_table(xs, outs, formats)
    if table is None:
        return outs
    device, dtype = xs[0].device, xs[0].dtype
    if blocks is None:
        blocks = segment_blocks([x.numel() for x in xs], block).to(device)
    if blocks.numel() == 0:
        return outs
    seed_t = _as_seed(seed, device) if stochastic else table
    _segments_kernel[(blocks.shape[0],)](
        table, blocks, seed_t, table, 0, 0, STOCHASTIC=stochastic, DYNAMIC=False, CLAMP=True,
        DTYPE=_TL_DTYPES[dtype], F64=dtype == torch.float64, BLOCK=block, num_warps=_NUM_WARPS,
    )
    return outs


def _float32_segments(xs: list, outs, name: str, blocks, block: int) -> tuple:
    """``(outs, table, blocks)`` of a MuPPET segments launch (float32 arithmetic: no float64 tensors);
    ``table`` is None when there is nothing to do.  ``blocks`` (see :func:`segment_blocks`) is built
    when None, so a caller launching twice over the same tensors builds it once."""
    if xs and xs[0].dtype == torch.float64:
        raise TypeError(f"{name} takes float16, bfloat16 or float32 tensors (float32 arithmetic)")
    outs, table = _segment_table(xs, outs, [(8, 0)] * len(xs))
    if table is not None and blocks is None:
        blocks = segment_blocks([x.numel() for x in xs], block).to(xs[0].device)
    if table is not None and blocks.numel() == 0:
        table = None
    return outs, table, blocks


def segment_extremes(xs: Sequence[torch.Tensor], *, block: Optional[int] = None,
                     blocks: Optional[torch.Tensor] = None) -> tuple:
    """``(hi, lo)``: float32 tensors on the device with each tensor's ``max`` and ``min``, NaN for a tensor
    that holds NaN (as ``torch.aminmax`` gives), in one launch over all of them.  Empty tensors get
    ``(-inf, inf)``.  ``xs``: contiguous, one dtype (float16, bfloat16 or float32), one device."""
    block = BLOCK if block is None else block
    xs = list(xs)
    if not xs:
        return torch.empty(0), torch.empty(0)
    _, table, blocks = _float32_segments(xs, xs, "segment_extremes", blocks, block)
    device = xs[0].device
    hi = torch.full((len(xs),), -math.inf, dtype=torch.float32, device=device)
    lo = torch.full((len(xs),), math.inf, dtype=torch.float32, device=device)
    if table is None:  # only empty tensors
        return hi, lo
    has_nan = torch.zeros(len(xs), dtype=torch.int32, device=device)
    _segments_extremes_kernel[(blocks.shape[0],)](table, blocks, hi, lo, has_nan, DTYPE=_TL_DTYPES[xs[0].dtype],
                                                   BLOCK=block, num_warps=_NUM_WARPS)
    nan = has_nan.bool()
    return hi.masked_fill(nan, math.nan), lo.masked_fill(nan, math.nan)


def round_scaled_segments(xs: Sequence[torch.Tensor], scales: torch.Tensor, rounding: str = "stochastic", seed=None,
                          outs: Optional[Sequence[torch.Tensor]] = None, clamp_bits: Optional[int] = None, *,
                          block: Optional[int] = None, blocks: Optional[torch.Tensor] = None) -> list:
    """MuPPET's rounding of many tensors in one launch: tensor ``s`` gets what :func:`round_scaled` gives it
    with ``scales[s]`` (a float32 device tensor, one scale per tensor), the same ``seed`` and ``stream=s``.
    ``xs``, ``outs`` (default new tensors; may be ``xs``) and ``blocks`` as for :func:`fixed_point_segments`."""
    stochastic = _check_rounding(rounding)
    if stochastic and seed is None:
        raise ValueError("stochastic rounding needs a seed (see seed_tensor)")
    block = BLOCK if block is None else block
    xs = list(xs)
    outs, table, blocks = _float32_segments(xs, outs, "round_scaled_segments", blocks, block)
    if table is None:
        return outs
    device = xs[0].device
    s = scales.detach().reshape(-1).to(device=device, dtype=torch.float32).contiguous()
    if s.numel() != len(xs):
        raise ValueError(f"got {s.numel()} scales for {len(xs)} tensors")
    low, high = (0, 0) if clamp_bits is None else (-(2 ** (clamp_bits - 1)), 2 ** (clamp_bits - 1) - 1)
    seed_t = _as_seed(seed, device) if stochastic else table
    _segments_kernel[(blocks.shape[0],)](
        table, blocks, seed_t, s, low, high, STOCHASTIC=stochastic, DYNAMIC=True, CLAMP=clamp_bits is not None,
        DTYPE=_TL_DTYPES[xs[0].dtype], F64=False, BLOCK=block, num_warps=_NUM_WARPS,
    )
    return outs
