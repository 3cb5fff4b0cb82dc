"""Fused CPU kernels for fixed-point rounding (private; :mod:`adapt.quant` calls them).

Why a kernel: with whole-tensor PyTorch ops, stochastic rounding on the CPU costs one
``torch.rand`` draw per element (about 2.4 ns, single-threaded Mersenne Twister) plus
four passes over memory.  Training ResNet-20 quantizes ~50-100 M activations per
batch-128 step, which made a quantized step 2.4x slower than float32 (issue 3's
target is 1.3x).  This kernel does the whole rounding in one parallel pass.

Random numbers: element ``i`` of a call uses the ``i``-th output of the SplitMix64
generator (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014; the seeding generator of xoshiro) started at a 64-bit ``seed`` that the
caller draws from its ``torch.Generator``.  The output is a pure function of
``(seed, i)``: identical for any number of threads, so runs stay bit-reproducible.
Two calls share part of a stream only if their seeds differ by a multiple of the
increment smaller than their size ``n``: probability about ``2n / 2**64`` per pair of
calls, irrelevant for training (one Mersenne Twister stream never overlaps, but costs
2.4 ns per element on one thread).
The top 24 bits give the dither ``u = (k + 1/2) * 2**-24`` in ``(0, 1)`` -- the
resolution of ``torch.rand``/QPyTorch's ``rand_like`` -- centred so that rounding is
unbiased to within ``2**-25`` of a step.  The arithmetic is float64, so
``floor(x * scale + u)`` is exact for ``|x * scale| < 2**28`` (float32 arithmetic, as in
QPyTorch, rounds the sum first; see ``tests/test_quant.py``).

Nearest rounding gets a kernel too (one pass instead of three); it computes exactly
what the whole-tensor ops compute.

Serial twins: every parallel kernel has a serial (``parallel=False``) twin with the same
arithmetic, for tensors below :data:`adapt.quant.SERIAL_BELOW` elements.  Entering a
parallel region costs far more than rounding a small tensor (0.6-8.5 ms per call with
two threads on a busy machine against microseconds of work for a 16-element BatchNorm
vector), and a model has dozens of such tensors.  Both give identical results: the
output is a pure function of ``(seed, i)``.

Grouped kernels (:func:`fixed_point_many_serial`, :func:`fixed_point_many_parallel`)
round a list of float32 tensors in one call, each with its own format and seed: what
``QuantizedModel.quantize_grads`` / ``quantize_weights`` need, one call per step instead
of one per parameter tensor.  The tensors are passed as addresses (``data_ptr()``) with
their sizes, because numba takes a variable number of arrays only as a typed list,
whose construction costs about 5 us per array; :func:`_f32_view` turns an address back
into an array inside the kernel.  The caller keeps the tensors alive and checks that
they are contiguous float32 CPU tensors (``adapt.quant.fixed_point_many``).

numba compiles these functions on their first call (about a second; ``cache=True``
keeps the machine code in ``__pycache__`` for the next process), never at import.
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's Weyl increment (golden ratio)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_DITHER_STEP = 2.0**-24


@njit(inline="always")
def _splitmix64(seed, index):
    """Output number ``index`` (0-based) of SplitMix64 seeded with ``seed``."""
    z = seed + (np.uint64(index) + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _round(x, scale, inv_scale, low, high, bits):
    u = (np.float64(bits >> np.uint64(40)) + 0.5) * _DITHER_STEP
    v = np.floor(np.float64(x) * scale + u)
    # Written as comparisons so that NaN (both false) stays NaN.
    if v < low:
        v = low
    elif v > high:
        v = high
    return v * inv_scale


@njit(inline="always")
def _nearest(x, scale, inv_scale, low, high):
    v = np.rint(np.float64(x) * scale)
    if v < low:
        v = low
    elif v > high:
        v = high
    return v * inv_scale


@njit(parallel=True, nogil=True, cache=True)
def stochastic_round_flat(x, out, scale, inv_scale, low, high, seed):
    """``out[i] = clamp(floor(x[i] * scale + u_i), low, high) * inv_scale`` for 1-D ``x``."""
    for i in prange(x.size):
        out[i] = _round(x[i], scale, inv_scale, low, high, _splitmix64(seed, i))


@njit(parallel=True, nogil=True, cache=True)
def stochastic_round_rows(x, out, scales, inv_scales, low, high, seed):
    """Like :func:`stochastic_round_flat` with one scale per row of 2-D ``x`` (the dither index stays flat)."""
    rows, cols = x.shape
    for r in prange(rows):
        for c in range(cols):
            out[r, c] = _round(x[r, c], scales[r], inv_scales[r], low, high, _splitmix64(seed, r * cols + c))


@njit(parallel=True, nogil=True, cache=True)
def nearest_round_flat(x, out, scale, inv_scale, low, high):
    """``out[i] = clamp(rint(x[i] * scale), low, high) * inv_scale`` (round half to even, float64)."""
    for i in prange(x.size):
        out[i] = _nearest(x[i], scale, inv_scale, low, high)


# -- serial twins (no parallel region; same arithmetic) -------------------------------------------
@njit(nogil=True, cache=True)
def stochastic_round_flat_serial(x, out, scale, inv_scale, low, high, seed):
    """:func:`stochastic_round_flat` without a parallel region."""
    for i in range(x.size):
        out[i] = _round(x[i], scale, inv_scale, low, high, _splitmix64(seed, i))


@njit(nogil=True, cache=True)
def stochastic_round_rows_serial(x, out, scales, inv_scales, low, high, seed):
    """:func:`stochastic_round_rows` without a parallel region."""
    rows, cols = x.shape
    for r in range(rows):
        for c in range(cols):
            out[r, c] = _round(x[r, c], scales[r], inv_scales[r], low, high, _splitmix64(seed, r * cols + c))


@njit(nogil=True, cache=True)
def nearest_round_flat_serial(x, out, scale, inv_scale, low, high):
    """:func:`nearest_round_flat` without a parallel region."""
    for i in range(x.size):
        out[i] = _nearest(x[i], scale, inv_scale, low, high)


# -- grouped kernels: many float32 tensors, one call --------------------------------------------
@intrinsic
def _f32_pointer(typingctx, address):
    """The int64 ``address`` as a ``float32*`` (what ``carray`` takes)."""
    sig = types.CPointer(types.float32)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.float32)))

    return sig, codegen


@njit(inline="always")
def _f32_view(address, size):
    return carray(_f32_pointer(address), (size,))


@njit(inline="always")
def _round_segment(x, out, start, stop, scale, inv_scale, low, high, seed, stochastic):
    # Element i of a tensor gets SplitMix64 output i of the tensor's seed, as in stochastic_round_flat.
    if stochastic:
        for i in range(start, stop):
            out[i] = _round(x[i], scale, inv_scale, low, high, _splitmix64(seed, i))
    else:
        for i in range(start, stop):
            out[i] = _nearest(x[i], scale, inv_scale, low, high)


@njit(nogil=True, cache=True)
def fixed_point_many_serial(x_addr, out_addr, sizes, scales, inv_scales, lows, highs, seeds, stochastic):
    """Round tensor ``t`` (``sizes[t]`` float32 values at ``x_addr[t]``) into ``out_addr[t]``, one after another.

    Per tensor: ``scales``/``inv_scales``/``lows``/``highs`` (float64) and ``seeds`` (uint64,
    ignored for nearest rounding) -- the arguments of :func:`stochastic_round_flat` /
    :func:`nearest_round_flat`, with identical results.  ``out_addr[t]`` may equal ``x_addr[t]``.
    """
    for t in range(sizes.size):
        n = sizes[t]
        _round_segment(_f32_view(x_addr[t], n), _f32_view(out_addr[t], n), 0, n, scales[t], inv_scales[t],
                       lows[t], highs[t], seeds[t], stochastic)


@njit(parallel=True, nogil=True, cache=True)
def fixed_point_many_parallel(x_addr, out_addr, sizes, scales, inv_scales, lows, highs, seeds, stochastic, block):
    """:func:`fixed_point_many_serial` in one parallel region over blocks of ``block`` elements of all tensors."""
    per = (sizes + block - 1) // block
    total = 0
    for t in range(sizes.size):
        total += per[t]
    owner = np.empty(total, np.int64)
    first = np.empty(total, np.int64)
    b = 0
    for t in range(sizes.size):
        for k in range(per[t]):
            owner[b] = t
            first[b] = k * block
            b += 1
    for b in prange(total):
        t = owner[b]
        n = sizes[t]
        _round_segment(_f32_view(x_addr[t], n), _f32_view(out_addr[t], n), first[b], min(first[b] + block, n),
                       scales[t], inv_scales[t], lows[t], highs[t], seeds[t], stochastic)
