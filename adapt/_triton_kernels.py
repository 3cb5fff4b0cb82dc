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

**Launches.**  Every launch runs under the tensors' device (:func:`_guard`): Triton launches on the
*current* CUDA device and its current stream, which need not be the tensors' device in a process
that trains on ``cuda:1``.  The many-tensor launches read a small int64 table of addresses and
formats and a table of (segment, block) pairs from device memory; both are built on the host,
uploaded once from pinned memory without blocking (:func:`_device_tables`) and cached by their
contents, so a training step that quantizes the same tensors again launches no copy and waits for
nothing (a CUDA graph can capture it once the tables exist).  Blocks that lie wholly inside their
tensor load and store without a mask, in 16-byte vectors when every address in the table is
16-byte aligned (checked on the host); the last block of each tensor takes the masked path.

**Triton versions.**  The kernels use only what Triton 3.0 (torch 2.4) has: the Philox words wrap
modulo 2**32 through 64-bit sums and products (Triton 3.0 has no ``tl.mul``/``tl.add`` with
``sanitize_overflow``, and newer interpreters check 32-bit overflow); the table's addresses become
pointers of a tensor argument's type (Triton 3.0 cannot make a pointer type of a dtype constexpr);
and :func:`segment_extremes` never hands a negative zero to a float ``atomic_max``/``atomic_min``,
which Triton before 3.4 lowered by the sign of ``x >= 0`` (triton-lang/triton#6431), so that ``-0.0``
took the integer path of the non-negative values and lost a block's maximum or overwrote a negative
minimum.  ``tests/test_triton_kernels.py`` runs the kernels under that old lowering as well;
``tools/triton_compile.py`` compiles every kernel for a GPU without one (Triton 3.0 and 3.8 checked).

**Testing without a GPU.**  Loaded with ``TRITON_INTERPRET=1`` set, the same kernels run on CPU
tensors in Triton's interpreter (``tests/test_triton_kernels.py``): the functions below take any
device, but :mod:`adapt.quant` routes only CUDA tensors here.
"""
from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

__all__ = ["BLOCK", "seed_tensor", "fixed_point", "round_scaled", "segment_blocks", "fixed_point_segments",
           "segment_extremes", "round_scaled_segments", "divide_segments", "clear_table_cache"]

#: Elements per program (default of every ``block`` argument, read at call time).  Results do not
#: depend on it (tests check); 1024 with 4 warps gives each thread 8 elements as two 16-byte vectors.
BLOCK = 1024
_NUM_WARPS = 4

#: Device tables kept (:func:`_device_tables`): a model's weights, its gradients and MuPPET's two
#: launches over each take one entry apiece; AdaPT's format switches add one per new set of formats.
TABLE_CACHE_SIZE = 64
_TABLES: "OrderedDict[tuple, tuple]" = OrderedDict()


# --------------------------------------------------------------------------------------------------
# jitted helpers
# --------------------------------------------------------------------------------------------------
@triton.jit
def _trunc(a):
    return tl.where(a >= 0, tl.floor(a), tl.ceil(a))


@triton.jit
def _wrap32(v):
    """A 64-bit unsigned value modulo 2**32, as uint32 (the Philox words' wrapping arithmetic)."""
    return (v & 0xFFFFFFFF).to(tl.uint32)


@triton.jit
def _philox4x32_10(c0, c1, k0, k1):
    """Philox4x32-10 of the counter ``(c0, c1, 0, 0)`` under the key ``(k0, k1)`` (uint32 tensors).

    Salmon et al. (SC 2011), Random123's ``philox4x32round`` and ``philox4x32bumpkey``; the same
    function as Triton's ``tl.randint4x``, written out here so that the kernels only call their
    own jitted functions (then a copy of this module loaded with ``TRITON_INTERPRET=1`` runs
    entirely in Triton's interpreter, whatever was imported before).  Low words of products and
    sums are taken from 64-bit arithmetic: no 32-bit operation overflows, which Triton's
    interpreter would report, and no Triton 3.2 ``sanitize_overflow`` argument is needed.
    """
    c2 = c0 * 0
    c3 = c2
    for _ in tl.static_range(10):
        _c0, _c2 = c0, c2
        c0 = tl.math.umulhi(0xCD9E8D57, _c2) ^ c1 ^ k0
        c2 = tl.math.umulhi(0xD2511F53, _c0) ^ c3 ^ k1
        c1 = _wrap32(_c2.to(tl.uint64) * 0xCD9E8D57)
        c3 = _wrap32(_c0.to(tl.uint64) * 0xD2511F53)
        k0 = _wrap32(k0.to(tl.uint64) + 0x9E3779B9)
        k1 = _wrap32(k1.to(tl.uint64) + 0xBB67AE85)
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


@triton.jit
def _load(ptr, offs, n, MASKED: tl.constexpr):
    """``ptr[offs]`` (0 beyond ``n`` when ``MASKED``; unmasked loads of a full block can be vectorised)."""
    if MASKED:
        return tl.load(ptr + offs, mask=offs < n, other=0.0)
    else:
        return tl.load(ptr + offs)


@triton.jit
def _store(ptr, offs, n, v, MASKED: tl.constexpr):
    if MASKED:
        tl.store(ptr + offs, v, mask=offs < n)
    else:
        tl.store(ptr + offs, v)


@triton.jit
def _round_tile(x_ptr, y_ptr, n, ctr, cols, s, inv, low, high, seed, stream, STOCHASTIC: tl.constexpr,
                CLAMP: tl.constexpr, cdt: tl.constexpr, MASKED: tl.constexpr):
    """``y = saturate(round(x * s), low, high) * inv`` on the (Q, 4) tile of element offsets ``ctr * 4 + cols``."""
    offs = ctr * 4 + cols
    x = _load(x_ptr, offs, n, MASKED).to(cdt)
    v = _round_codes(x * s, seed, stream, ctr, cols, STOCHASTIC)
    if CLAMP:
        v = _saturate(v, low, high)
    _store(y_ptr, offs, n, _to_out(v * inv, y_ptr.dtype.element_ty), MASKED)


# --------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------
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
    cdt: tl.constexpr = tl.float64 if F64 else tl.float32
    if DYNAMIC:
        if PER_ROW:
            s = tl.load(scale_ptr + (ctr * 4 + cols) // row_len, mask=ctr * 4 + cols < n, other=1.0).to(cdt)
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
    low_c = tl.cast(low, cdt)
    high_c = tl.cast(high, cdt)
    if (pid + 1) * BLOCK <= n:
        _round_tile(x_ptr, y_ptr, n, ctr, cols, s, inv, low_c, high_c, seed, stream, STOCHASTIC, CLAMP, cdt, False)
    else:
        _round_tile(x_ptr, y_ptr, n, ctr, cols, s, inv, low_c, high_c, seed, stream, STOCHASTIC, CLAMP, cdt, True)


@triton.jit
def _segment_row(table_ptr, blocks_ptr):
    """Program ``p``'s segment, block, table row and numel."""
    pid = tl.program_id(0)
    seg = tl.load(blocks_ptr + 2 * pid)
    blk = tl.load(blocks_ptr + 2 * pid + 1).to(tl.int64)
    row = table_ptr + 6 * seg.to(tl.int64)
    n = tl.load(row + 2)
    return seg, blk, row, n


@triton.jit
def _row_pointer(address, like_ptr, ALIGNED: tl.constexpr):
    """An address from the table as a pointer of ``like_ptr``'s type (a tensor argument's type, not a dtype
    constexpr, which Triton 3.0 cannot make a pointer type of), 16-byte aligned if ``ALIGNED``."""
    ptr = address.to(like_ptr.dtype)
    if ALIGNED:  # every address of the table is a multiple of 16 bytes (checked on the host)
        ptr = tl.multiple_of(ptr, 16)
    return ptr


@triton.jit(do_not_specialize=["low", "high"])
def _segments_kernel(table_ptr, blocks_ptr, like_ptr, seed_ptr, scale_ptr, low, high,
                     STOCHASTIC: tl.constexpr, DYNAMIC: tl.constexpr, CLAMP: tl.constexpr,
                     F64: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One launch over many tensors: program ``p`` rounds block ``blocks[p, 1]`` of segment ``blocks[p, 0]``.

    ``table`` (int64, one row of 6 per segment): input address, output address, numel, word
    length, fractional length, stream.  Segment ``s`` gets exactly what :func:`_round_kernel`
    gives that tensor with the same seed and stream ``table[s, 5]``: fixed point with the row's
    word and fractional lengths, or with ``DYNAMIC`` MuPPET's rounding with the float32 scale
    ``scale[s]`` (saturated to ``[low, high]`` with ``CLAMP``; the lengths are then unused).
    Fixed point always saturates (the host passes ``CLAMP``).  ``like_ptr``: any tensor of the segments'
    dtype (the first), whose pointer type the table's addresses take.
    """
    Q: tl.constexpr = BLOCK // 4
    seg, blk, row, n = _segment_row(table_ptr, blocks_ptr)
    x_ptr = _row_pointer(tl.load(row), like_ptr, ALIGNED)
    y_ptr = _row_pointer(tl.load(row + 1), like_ptr, ALIGNED)
    stream = tl.load(row + 5).to(tl.int32)
    cdt: tl.constexpr = tl.float64 if F64 else tl.float32
    if DYNAMIC:
        s = tl.load(scale_ptr + seg)
        inv = tl.math.div_rn(tl.full((), 1.0, tl.float32), s)  # IEEE: 1/2**sf exactly; 1/0 = inf
        lo = tl.cast(low, cdt)
        hi = tl.cast(high, cdt)
    else:
        wl = tl.load(row + 3).to(tl.int32)
        fl = tl.load(row + 4).to(tl.int32)
        # 2**fl and 2**-fl from their exponent bits (exact; fl <= 32), the code range from wl <= 32.
        s = ((fl + 127) << 23).to(tl.float32, bitcast=True).to(cdt)
        inv = ((127 - fl) << 23).to(tl.float32, bitcast=True).to(cdt)
        half = (tl.full((), 1, tl.int64) << (wl - 1).to(tl.int64)).to(cdt)
        lo = -half
        hi = half - 1.0
    rows = tl.arange(0, Q)[:, None]
    cols = tl.arange(0, 4)[None, :]
    ctr = blk * Q + rows
    seed = 0
    if STOCHASTIC:
        seed = tl.load(seed_ptr)
    if (blk + 1) * BLOCK <= n:
        _round_tile(x_ptr, y_ptr, n, ctr, cols, s, inv, lo, hi, seed, stream, STOCHASTIC, CLAMP, cdt, False)
    else:
        _round_tile(x_ptr, y_ptr, n, ctr, cols, s, inv, lo, hi, seed, stream, STOCHASTIC, CLAMP, cdt, True)


@triton.jit
def _larger(a, b):
    return tl.maximum(a, b)


@triton.jit
def _smaller(a, b):
    return tl.minimum(a, b)


@triton.jit
def _block_extremes(x_ptr, offs, n, MASKED: tl.constexpr):
    """``(max, min, has NaN)`` of a block, NaN left out of the extremes and a zero returned as ``+0.0``."""
    x = _load(x_ptr, offs, n, MASKED).to(tl.float32)
    if MASKED:
        valid = offs < n
    else:
        valid = offs == offs
    ok = valid & (x == x)
    # tl.reduce with our own combine functions, not tl.max/tl.min (jitted in Triton's standard library,
    # which an interpreted copy of this module could not call; see _philox4x32_10)
    hi = tl.reduce(tl.where(ok, x, float("-inf")), 0, _larger)
    lo = tl.reduce(tl.where(ok, x, float("inf")), 0, _smaller)
    # +0.0 for -0.0 (-0.0 == 0.0): Triton before 3.4 lowered a float atomic_max/min by the sign of
    # x >= 0, so -0.0 took the signed-integer path and lost a maximum or overwrote a negative minimum.
    hi = tl.where(hi == 0.0, 0.0, hi)
    lo = tl.where(lo == 0.0, 0.0, lo)
    nan = tl.reduce((valid & (x != x)).to(tl.int32), 0, _larger)
    return hi, lo, nan


@triton.jit
def _segments_extremes_kernel(table_ptr, blocks_ptr, like_ptr, hi_ptr, lo_ptr, nan_ptr, ALIGNED: tl.constexpr,
                              BLOCK: tl.constexpr):
    """Per segment, ``max`` and ``min`` (atomic over its blocks; exact, so order-free) and whether it holds NaN."""
    seg, blk, row, n = _segment_row(table_ptr, blocks_ptr)
    x_ptr = _row_pointer(tl.load(row), like_ptr, ALIGNED)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    if (blk + 1) * BLOCK <= n:
        hi, lo, nan = _block_extremes(x_ptr, offs, n, False)
    else:
        hi, lo, nan = _block_extremes(x_ptr, offs, n, True)
    tl.atomic_max(hi_ptr + seg, hi)
    tl.atomic_min(lo_ptr + seg, lo)
    tl.atomic_max(nan_ptr + seg, nan)


@triton.jit
def _divide_tile(x_ptr, y_ptr, offs, n, d, MASKED: tl.constexpr):
    x = _load(x_ptr, offs, n, MASKED)
    _store(y_ptr, offs, n, tl.math.div_rn(x, tl.broadcast_to(d, x.shape)), MASKED)


@triton.jit
def _segments_divide_kernel(table_ptr, blocks_ptr, like_ptr, div_ptr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """Segment ``s`` (float32) divided by ``div[s]``, IEEE-rounded (``div_rn``, as ``torch.div``)."""
    seg, blk, row, n = _segment_row(table_ptr, blocks_ptr)
    x_ptr = _row_pointer(tl.load(row), like_ptr, ALIGNED)
    y_ptr = _row_pointer(tl.load(row + 1), like_ptr, ALIGNED)
    d = tl.load(div_ptr + seg)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    if (blk + 1) * BLOCK <= n:
        _divide_tile(x_ptr, y_ptr, offs, n, d, False)
    else:
        _divide_tile(x_ptr, y_ptr, offs, n, d, True)


# --------------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------------
_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
              torch.float64: tl.float64}


def _guard(device: torch.device):
    """The context a launch on ``device`` runs in: that CUDA device made current (Triton launches on the
    current device and stream); nothing for CPU tensors (the interpreter)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _run(kernel, grid, device: torch.device, *args, **kwargs) -> None:
    """Launch ``kernel`` on ``grid`` with the tensors' ``device`` current: every launch goes through here."""
    with _guard(device):
        kernel[grid](*args, **kwargs)


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
    _run(_round_kernel, grid, xc.device,
         xc, y, n, scale, inv, low, high, scale_t if dynamic else xc, row_len, seed_t, stream,
         STOCHASTIC=stochastic, DYNAMIC=dynamic, PER_ROW=dynamic and scale_t.numel() > 1, CLAMP=clamp,
         F64=xc.dtype == torch.float64, I64=n + block >= 2**31, BLOCK=block, num_warps=_NUM_WARPS)
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


def segment_blocks(numels: Sequence[int], block: Optional[int] = None) -> torch.Tensor:
    """The (segment, block) pairs of a :func:`fixed_point_segments` launch, as an int32 (blocks, 2) CPU tensor."""
    block = BLOCK if block is None else block
    counts = torch.tensor([triton.cdiv(n, block) for n in numels], dtype=torch.int64)
    seg = torch.repeat_interleave(torch.arange(len(numels), dtype=torch.int64), counts)
    starts = torch.cumsum(counts, 0) - counts
    blk = torch.arange(int(counts.sum()), dtype=torch.int64) - torch.repeat_interleave(starts, counts)
    return torch.stack([seg, blk], 1).to(torch.int32)


def _upload(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``host`` (a new CPU tensor) on ``device``: on CUDA from pinned memory, without blocking the host.

    torch's pinned-memory allocator keeps the staging block until the copy has run, so the host
    tensor may go at once.  (The one place the kernels copy from the host: tests count its calls.)"""
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _device_tables(xs: list, outs: list, formats, block: int) -> tuple:
    """``(table, blocks, aligned)`` of a segments launch over ``xs`` into ``outs``, cached on the device.

    ``table`` (int64, one row per tensor: input address, output address, numel, word length,
    fractional length, stream) and ``blocks`` (int32 (segment, block) pairs, :func:`segment_blocks`)
    are built on the host and uploaded in one copy (:func:`_upload`) the first time these addresses,
    sizes and formats meet on this device and stream; afterwards the cached tensors are returned
    (at most :data:`TABLE_CACHE_SIZE`, least recently used dropped).  ``aligned``: every address
    is a multiple of 16 bytes, which lets the kernels load and store 16-byte vectors.
    """
    device = xs[0].device
    rows = tuple((x.data_ptr(), y.data_ptr(), x.numel(), wl, fl, i)
                 for i, (x, y, (wl, fl)) in enumerate(zip(xs, outs, formats)))
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    key = (device, stream, block, rows)
    hit = _TABLES.get(key)
    if hit is not None:
        _TABLES.move_to_end(key)
        return hit
    n_rows = len(rows)
    blocks = segment_blocks([r[2] for r in rows], block)
    # one copy for both: the int32 pairs travel as int64 words (2 per word) behind the table
    host = torch.cat([torch.tensor(rows, dtype=torch.int64).reshape(-1), blocks.reshape(-1).view(torch.int64)])
    dev = _upload(host, device)
    table = dev[:6 * n_rows].view(n_rows, 6)
    dev_blocks = dev[6 * n_rows:].view(torch.int32).view(-1, 2)
    aligned = all(r[0] % 16 == 0 and r[1] % 16 == 0 for r in rows)
    entry = (table, dev_blocks, aligned)
    _TABLES[key] = entry
    while len(_TABLES) > TABLE_CACHE_SIZE:
        _TABLES.popitem(last=False)
    return entry


def clear_table_cache() -> None:
    """Drop every cached device table (they are rebuilt on the next call)."""
    _TABLES.clear()


def _check_segments(xs: list, outs, dtypes=tuple(_TL_DTYPES)) -> list:
    """The outputs (new tensors if ``outs`` is None), after checking one dtype, one device, contiguity, shapes."""
    if outs is None:
        outs = [torch.empty_like(x) for x in xs]
    outs = list(outs)
    if len(outs) != len(xs):
        raise ValueError(f"got {len(xs)} tensors but {len(outs)} outputs")
    if not xs:
        return outs
    dtype, device = xs[0].dtype, xs[0].device
    if dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"the Triton kernels take {names} tensors here, got {dtype}")
    for i, (x, y) in enumerate(zip(xs, outs)):
        for name, t in (("tensor", x), ("output", y)):
            if t.dtype != dtype or t.device != device or not t.is_contiguous():
                raise ValueError(f"{name} {i} must be contiguous, {dtype}, on {device}; got {t.dtype} on {t.device}"
                                 f"{'' if t.is_contiguous() else ', not contiguous'}")
        if y.shape != x.shape:
            raise ValueError(f"output {i} has shape {tuple(y.shape)}, tensor {i} {tuple(x.shape)}")
        if x.numel() >= 2**34:
            raise ValueError(f"tensor {i} has {x.numel()} elements; the Triton kernels take at most 2**34")
    return outs


def _tables(xs, outs, formats, block, blocks):
    """``(table, blocks, aligned)`` for a launch, or None when there is no element to process."""
    if not xs or sum(x.numel() for x in xs) == 0:
        return None
    table, cached_blocks, aligned = _device_tables(xs, outs, formats, block)
    return table, (cached_blocks if blocks is None else blocks), aligned


def fixed_point_segments(xs: Sequence[torch.Tensor], formats: Sequence[tuple], rounding: str = "stochastic",
                         seed=None, outs: Optional[Sequence[torch.Tensor]] = None, *, block: Optional[int] = None,
                         blocks: Optional[torch.Tensor] = None) -> list:
    """Quantize many tensors, each with its own ``(word_length, fractional_length)``, in one launch.

    ``xs``: contiguous tensors of one dtype on one device.  ``outs`` (default: new tensors) may
    be ``xs`` themselves (in place).  Tensor ``s`` gets what :func:`fixed_point` gives it with
    the same ``seed`` and ``stream=s``: one seed per call, independent streams per tensor.  The
    table of addresses and formats and the block table come from :func:`_device_tables` (uploaded
    once, then cached); ``blocks`` (from :func:`segment_blocks`, on the device) overrides the latter.
    """
    stochastic = _check_rounding(rounding)
    if stochastic and seed is None:
        raise ValueError("stochastic rounding needs a seed (see seed_tensor)")
    block = BLOCK if block is None else block
    xs = list(xs)
    formats = [tuple(f) for f in formats]
    if len(formats) != len(xs):
        raise ValueError(f"got {len(xs)} tensors but {len(formats)} formats")
    for i, (wl, fl) in enumerate(formats):
        if not (1 <= wl <= 32 and 0 <= fl <= 32):
            raise ValueError(f"format {i} = ({wl}, {fl}) is outside word length 1..32, fractional length 0..32")
    outs = _check_segments(xs, outs)
    tables = _tables(xs, outs, formats, block, blocks)
    if tables is None:
        return outs
    table, blocks, aligned = tables
    device, dtype = xs[0].device, xs[0].dtype
    seed_t = _as_seed(seed, device) if stochastic else table
    _run(_segments_kernel, (blocks.shape[0],), device,
         table, blocks, xs[0], seed_t, table, 0, 0, STOCHASTIC=stochastic, DYNAMIC=False, CLAMP=True,
         F64=dtype == torch.float64, ALIGNED=aligned, BLOCK=block, num_warps=_NUM_WARPS)
    return outs


_FLOAT32_ARITHMETIC = (torch.float16, torch.bfloat16, torch.float32)


def segment_extremes(xs: Sequence[torch.Tensor], *, block: Optional[int] = None,
                     blocks: Optional[torch.Tensor] = None) -> tuple:
    """``(hi, lo)``: float32 tensors on the device with each tensor's ``max`` and ``min``, NaN for a tensor
    that holds NaN (as ``torch.aminmax`` gives), in one launch over all of them.  Empty tensors get
    ``(-inf, inf)``; a zero extreme is ``+0.0`` (``== torch.aminmax``'s, whose sign may differ).  ``xs``:
    contiguous, one dtype (float16, bfloat16 or float32), one device."""
    block = BLOCK if block is None else block
    xs = list(xs)
    if not xs:
        return torch.empty(0), torch.empty(0)
    _check_segments(xs, xs, _FLOAT32_ARITHMETIC)
    device = xs[0].device
    hi = torch.full((len(xs),), -math.inf, dtype=torch.float32, device=device)
    lo = torch.full((len(xs),), math.inf, dtype=torch.float32, device=device)
    tables = _tables(xs, xs, [(8, 0)] * len(xs), block, blocks)
    if tables is None:  # only empty tensors
        return hi, lo
    table, blocks, aligned = tables
    has_nan = torch.zeros(len(xs), dtype=torch.int32, device=device)
    _run(_segments_extremes_kernel, (blocks.shape[0],), device, table, blocks, xs[0], hi, lo, has_nan,
         ALIGNED=aligned, BLOCK=block, num_warps=_NUM_WARPS)
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
    outs = _check_segments(xs, outs, _FLOAT32_ARITHMETIC)
    tables = _tables(xs, outs, [(8, 0)] * len(xs), block, blocks)
    if tables is None:
        return outs
    table, blocks, aligned = tables
    device = xs[0].device
    s = scales.detach().reshape(-1).to(device=device, dtype=torch.float32).contiguous()
    if s.numel() != len(xs):
        raise ValueError(f"got {s.numel()} scales for {len(xs)} tensors")
    low, high = (0, 0) if clamp_bits is None else (-(2 ** (clamp_bits - 1)), 2 ** (clamp_bits - 1) - 1)
    seed_t = _as_seed(seed, device) if stochastic else table
    _run(_segments_kernel, (blocks.shape[0],), device,
         table, blocks, xs[0], seed_t, s, low, high, STOCHASTIC=stochastic, DYNAMIC=True, CLAMP=clamp_bits is not None,
         F64=False, ALIGNED=aligned, BLOCK=block, num_warps=_NUM_WARPS)
    return outs


def divide_segments(xs: Sequence[torch.Tensor], divisors: torch.Tensor, outs: Optional[Sequence[torch.Tensor]] = None,
                    *, block: Optional[int] = None, blocks: Optional[torch.Tensor] = None) -> list:
    """``outs[s] = xs[s] / divisors[s]`` for many float32 tensors in one launch (IEEE division, the same bits
    as ``torch.div``); ``divisors``: a float32 tensor on the device, one value per tensor.  ``outs``
    (default new tensors) may be ``xs`` (in place).  AdaPT divides every gradient by its norm so."""
    block = BLOCK if block is None else block
    xs = list(xs)
    outs = _check_segments(xs, outs, (torch.float32,))
    d = divisors.detach().reshape(-1)
    if d.numel() != len(xs) or d.dtype != torch.float32 or (xs and d.device != xs[0].device):
        raise ValueError(f"divisors must be {len(xs)} float32 values on the tensors' device, got {d.numel()} "
                         f"{d.dtype} on {d.device}")
    tables = _tables(xs, outs, [(0, 0)] * len(xs), block, blocks)
    if tables is None:
        return outs
    table, blocks, aligned = tables
    _run(_segments_divide_kernel, (blocks.shape[0],), xs[0].device, table, blocks, xs[0], d.contiguous(),
         ALIGNED=aligned, BLOCK=block, num_warps=_NUM_WARPS)
    return outs
