"""Tests of :mod:`adapt._triton_kernels` (the CUDA rounding kernels) in Triton's interpreter, on CPU tensors.

A copy of the module is loaded with ``TRITON_INTERPRET=1`` set while its kernels are decorated, so the
same kernel code runs in NumPy whatever this process imported before (the kernels call only their own
jitted functions; see ``_philox4x32_10``).  :mod:`adapt.quant` routes only CUDA tensors to the kernels;
the ``via_kernels`` fixture points its dispatch at the interpreted copy for CPU tensors, so the
dispatch code of ``fixed_point``/``dynamic_fixed_point`` is exercised too.

References, independent of the code under test:

* ``np_fixed_nearest`` (tests/test_quant.py): QPyTorch's nearest rounding in NumPy;
* ``np_philox``: Philox4x32-10 in NumPy, checked against Random123's published known-answer vectors;
  with it, ``np_stochastic`` computes the exact stochastic result the kernels must return
  (``floor(a + u)`` in float64 is exact for ``|a| < 2**28``, and a float32 ``a`` with ``|a| >= 2**24``
  is an integer, where ``floor(a + u) = a``);
* ``adapt.quant``'s whole-tensor path (``CPU_KERNEL = False``), the reference for MuPPET's scales.

Exactness range stated by these tests: nearest and stochastic results are bit-exact for every float32
input (every bit pattern, infinities and NaN included) and for float64 inputs with ``|x * 2**fl| < 2**28``.
Interpreted kernels are slow per program, so the tests use ``BLOCK = 16384`` except where they vary it.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed (it ships with torch's CUDA builds)")

from adapt import quant  # noqa: E402
from test_quant import INF, NAN, assert_same, np_fixed_nearest, np_muppet_scale  # noqa: E402
from triton_interpreted import load_interpreted  # noqa: E402

# The interpreter evaluates the kernels with NumPy, which warns where the kernels compute inf - inf or
# inf * 0 on purpose (then replaced or saturated).
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")
ROOT = Path(__file__).resolve().parents[1]
TEST_BLOCK = 16384


@pytest.fixture(scope="module")
def K():
    """adapt/_triton_kernels.py loaded as a separate module with its kernels in Triton's interpreter."""
    module = load_interpreted()
    module.BLOCK = TEST_BLOCK
    return module


_CHECKS_OF_K: dict = {}  # the interpreted kernels' first-use self-checks, run once for this module


@pytest.fixture
def via_kernels(K, monkeypatch):
    """Route adapt.quant's CPU tensors through the interpreted Triton kernels (as it routes CUDA tensors),
    first-use self-checks included (their results kept for this module's tests)."""
    monkeypatch.setattr(quant, "_GPU_KERNELS", K)
    monkeypatch.setattr(quant, "_on_gpu_kernel", lambda x: True)
    monkeypatch.setattr(quant, "_KERNEL_CHECKS", _CHECKS_OF_K)
    return K


@pytest.fixture
def whole_tensor_ops(monkeypatch):
    monkeypatch.setattr(quant, "CPU_KERNEL", False)


# --------------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------------
def np_philox(counter, key):
    """Philox4x32-10 (Salmon et al. 2011; Random123 ``philox4x32``): four uint32 counter words (arrays or
    scalars, broadcast) and two key words -> the four output words."""
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    c = [np.asarray(v, np.uint32) for v in np.broadcast_arrays(*[np.asarray(v, np.uint32) for v in counter])]
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    for _ in range(10):
        p0, p1 = m0 * c[0].astype(np.uint64), m1 * c[2].astype(np.uint64)
        c = [(p1 >> np.uint64(32)).astype(np.uint32) ^ c[1] ^ k0, p1.astype(np.uint32),
             (p0 >> np.uint64(32)).astype(np.uint32) ^ c[3] ^ k1, p0.astype(np.uint32)]
        k0, k1 = k0 + np.uint32(0x9E3779B9), k1 + np.uint32(0xBB67AE85)
    return c


def np_dither(seed: int, n: int, stream: int = 0) -> np.ndarray:
    """The kernels' ``u`` for elements 0..n-1: top 24 bits of word ``i % 4`` of Philox at counter ``(i // 4, stream)``."""
    seed &= 2**64 - 1
    i = np.arange(n, dtype=np.int64)
    with np.errstate(over="ignore"):
        words = np.stack(np_philox(((i // 4).astype(np.uint32), stream, 0, 0), (seed & 0xFFFFFFFF, seed >> 32)))
    w = words[i % 4, i]
    return ((w >> np.uint32(8)).astype(np.float64) + 0.5) * 2.0**-24


def np_stochastic(x: np.ndarray, scale, low: float, high: float, seed: int, stream: int = 0) -> np.ndarray:
    """Exact ``clamp(floor(x * scale + u), low, high) / scale`` with the kernels' ``u``; ``scale`` broadcasts."""
    u = np_dither(seed, x.size, stream)
    s = np.broadcast_to(np.asarray(scale, np.float64), x.shape).reshape(-1)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        a = x.reshape(-1).astype(np.float64) * s
        v = np.where(np.abs(a) >= 2.0**24, a, np.floor(a + u)) if x.dtype == np.float32 else np.floor(a + u)
        v = np.where(v < low, low, np.where(v > high, high, v))
        return (v * (1.0 / s)).astype(x.dtype).reshape(x.shape)


def test_numpy_philox_matches_random123_known_answers():
    # Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key) -> output.
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    with np.errstate(over="ignore"):
        for counter, key, expected in cases:
            assert [int(w) for w in np_philox(counter, key)] == list(expected)


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def random_bits(n: int, seed: int) -> torch.Tensor:
    """Uniform random float32 bit patterns: every exponent, subnormals, +-inf and NaN."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**31), 2**31, (n,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)


def ties_and_neighbours(wl: int, fl: int, limit: int = 2**9) -> torch.Tensor:
    """Grid points and half-step ties near zero and at the range ends, and their float32 neighbours."""
    top = 2 ** (wl - 1)
    k = torch.arange(-min(top + 2, limit), min(top + 2, limit), dtype=torch.float64)
    if top + 2 > limit:  # the range ends too
        k = torch.cat([k, torch.arange(top - 3, top + 3, dtype=torch.float64), -torch.arange(top - 3, top + 3)])
    v = torch.cat([k, k + 0.5]).mul(2.0**-fl).float()
    return torch.cat([v, torch.nextafter(v, torch.tensor(INF)), torch.nextafter(v, torch.tensor(-INF))])


def stress(wl: int, fl: int, n_bits: int = 3000) -> torch.Tensor:
    """Bit patterns, ties, magnitudes around the range and around 2**24 codes, and the specials."""
    g = torch.Generator().manual_seed(wl * 100 + fl)
    span = 2.0 ** (wl - fl - 1)
    extra = torch.cat([
        torch.randn(1000, generator=g) * span,
        (torch.rand(500, generator=g) * 2 - 1) * 2.0 ** (25 - fl),  # |x * 2**fl| up to 2**25
        torch.tensor([INF, -INF, NAN, 0.0, -0.0, 3.4e38, -3.4e38, 1e-45, -1e-45, span, -span, 2 * span]),
    ])
    return torch.cat([random_bits(n_bits, wl * 31 + fl), ties_and_neighbours(wl, fl), extra.float()])


FORMATS = [(1, 0), (2, 1), (4, 6), (8, 4), (8, 0), (12, 8), (16, 10), (24, 12), (25, 0), (26, 3), (31, 16),
           (32, 0), (32, 16), (32, 32)]
SEED = 0xDEADBEEF12345678  # high bits set: both key words matter


# --------------------------------------------------------------------------------------------------
# fixed point
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wl,fl", FORMATS)
def test_nearest_bit_exact_against_numpy(K, wl, fl):
    x = stress(wl, fl)
    assert_same(K.fixed_point(x, wl, fl, "nearest"), torch.from_numpy(np_fixed_nearest(x.numpy(), wl, fl)))


@pytest.mark.parametrize("wl,fl", [(8, 4), (1, 0), (12, 14), (24, 12), (32, 0), (32, 32)])
def test_stochastic_bit_exact_against_numpy_philox(K, wl, fl):
    x = stress(wl, fl, n_bits=1500)
    lo, hi = -(2.0 ** (wl - 1)), 2.0 ** (wl - 1) - 1
    got = K.fixed_point(x, wl, fl, "stochastic", seed=SEED)
    assert_same(got, torch.from_numpy(np_stochastic(x.numpy(), 2.0**fl, lo, hi, SEED)))
    # Every output is floor or ceil of x * 2**fl (clamped; the top code as float32 stores it, 2**31 for
    # wl = 32): the grid and one of the two neighbours.
    finite = x.isfinite()
    code = got[finite].double() * 2.0**fl
    a = x[finite].double() * 2.0**fl
    flo, cei = (v.clamp(lo, float(np.float32(hi))) for v in (a.floor(), a.ceil()))
    assert bool(((code == flo) | (code == cei)).all())


def test_float64_and_half_precision(K):
    g = torch.Generator().manual_seed(0)
    x64 = torch.cat([torch.randn(3000, generator=g, dtype=torch.float64) * 2.0**10,
                     (torch.rand(1000, generator=g, dtype=torch.float64) * 2 - 1) * 2.0**17,  # |x * 2**fl| < 2**28
                     torch.tensor([INF, -INF, NAN, 0.5 * 2.0**-10, 1.5 * 2.0**-10], dtype=torch.float64)])
    wl, fl = 30, 10
    assert_same(K.fixed_point(x64, wl, fl, "nearest"), torch.from_numpy(np_fixed_nearest(x64.numpy(), wl, fl)))
    expected = np_stochastic(x64.numpy(), 2.0**fl, -(2.0 ** (wl - 1)), 2.0 ** (wl - 1) - 1, 7)
    assert_same(K.fixed_point(x64, wl, fl, "stochastic", seed=7), torch.from_numpy(expected))
    # float16 and bfloat16: loaded into float32, rounded back on the store, the same as converting first.
    x = torch.randn(1000, generator=g) * 6
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        for rounding in ("nearest", "stochastic"):
            got = K.fixed_point(xh, 10, 7, rounding, seed=3)
            assert got.dtype == dtype
            assert_same(got, K.fixed_point(xh.float(), 10, 7, rounding, seed=3).to(dtype))
        assert_same(K.fixed_point(xh, 10, 7, "nearest"), quant.fixed_point(xh, 10, 7, "nearest"))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_saturation_nan_inf_as_cpu_kernel(K, rounding):
    x = torch.tensor([7.95625, 8.0, 100.0, 3e38, INF, -8.01875, -8.5, -1e30, -INF, NAN] * 50)
    expected = torch.tensor([7.9375] * 5 + [-8.0] * 4 + [NAN]).repeat(50)
    assert_same(K.fixed_point(x, 8, 4, rounding, seed=1), expected)
    assert_same(quant.fixed_point(x, 8, 4, rounding, torch.Generator().manual_seed(0)), expected)  # CPU kernel
    for wl, fl in [(32, 0), (32, 32), (1, 0), (25, 3)]:
        x = torch.tensor([INF, -INF, NAN])
        assert_same(K.fixed_point(x, wl, fl, rounding, seed=2),
                    quant.fixed_point(x, wl, fl, rounding, torch.Generator().manual_seed(0)))


def test_stochastic_unbiased_without_float32_bias(K):
    wl, fl, n = 8, 4, 4000
    step = 2.0**-fl
    x = torch.tensor([0.01, 0.1, 0.25, 0.5, 0.7, 0.99, -0.3, -7.9, 7.9, -8.0, 7.9375]) * 1.0
    draws = K.fixed_point(x.expand(n, -1).contiguous(), wl, fl, "stochastic", seed=11).double()
    p = torch.remainder(x.double() / step, 1.0)
    se = step * torch.sqrt(p * (1 - p) / n)
    # 4.5 standard errors (two-sided, about 7e-6 per value) plus the dither's own 2**-25 of a step.
    err = (draws.mean(0) - x.double()).abs()
    assert bool((err <= 4.5 * se + step * 2.0**-25).all()), (err, se)
    # Exact arithmetic: a grid value never moves, however large (float32 ops move 2**20 up 1/16 of the time).
    big = torch.full((20_000,), 2.0**20)
    assert torch.equal(K.fixed_point(big, 32, 0, "stochastic", seed=12), big)
    # And just below a code the dither decides exactly: a = c - 2**-20 goes up unless u < 2**-20.
    a = torch.full((20_000,), 5.0 - 2.0**-20)
    assert torch.equal(K.fixed_point(a, 32, 0, "stochastic", seed=13), torch.full((20_000,), 5.0))


def test_seed_stream_and_block_independence(K):
    x = torch.linspace(-3, 3, 3001) + 1e-4  # almost nothing on the 1/16 grid
    a = K.fixed_point(x, 8, 4, "stochastic", seed=123)
    assert torch.equal(a, K.fixed_point(x, 8, 4, "stochastic", seed=123))
    assert torch.equal(a, K.fixed_point(x, 8, 4, "stochastic", seed=torch.tensor([123])))
    assert not torch.equal(a, K.fixed_point(x, 8, 4, "stochastic", seed=124))
    assert not torch.equal(a, K.fixed_point(x, 8, 4, "stochastic", seed=123 + 2**32))  # the key's high word
    assert not torch.equal(a, K.fixed_point(x, 8, 4, "stochastic", seed=123, stream=1))
    # Interpreted programs are slow: small blocks on a slice (element i's dither depends on i only).
    assert torch.equal(a, K.fixed_point(x, 8, 4, "stochastic", seed=123, block=1024))
    for block in (4, 16, 64):
        assert torch.equal(a[:250], K.fixed_point(x[:250], 8, 4, "stochastic", seed=123, block=block)), block
    assert torch.equal(K.fixed_point(x[:250], 8, 4, "nearest", block=8), K.fixed_point(x[:250], 8, 4, "nearest"))
    # Non-contiguous input, out= (contiguous: written directly; otherwise copied), empty input.
    xt = x[:3000].reshape(60, 50).t()
    assert_same(K.fixed_point(xt, 8, 4, "nearest"), K.fixed_point(xt.contiguous(), 8, 4, "nearest"))
    out = torch.empty(3001)
    assert K.fixed_point(x, 8, 4, "stochastic", seed=123, out=out) is out and torch.equal(out, a)
    out = torch.empty(60, 50).t()
    assert K.fixed_point(xt, 8, 4, "nearest", out=out) is out
    assert_same(out, K.fixed_point(xt, 8, 4, "nearest"))
    assert K.fixed_point(torch.empty(0), 8, 4, "stochastic", seed=1).shape == (0,)
    with pytest.raises(ValueError, match="seed"):
        K.fixed_point(x, 8, 4, "stochastic")
    with pytest.raises(ValueError, match="block"):
        K.fixed_point(x, 8, 4, "nearest", block=48)


# --------------------------------------------------------------------------------------------------
# through adapt.quant's dispatch
# --------------------------------------------------------------------------------------------------
def first_word(seed: int) -> int:
    g = torch.Generator().manual_seed(seed)
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=g))


def test_dispatch_fixed_point_draws_one_seed(via_kernels):
    K = via_kernels
    x = torch.randn(2000, generator=torch.Generator().manual_seed(0)) * 3
    g = torch.Generator().manual_seed(5)
    y = quant.fixed_point(x, 8, 4, "stochastic", g)
    assert torch.equal(y, K.fixed_point(x, 8, 4, "stochastic", seed=first_word(5)))
    ref = torch.Generator().manual_seed(5)
    torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())  # one 64-bit word per call, like the CPU kernel
    quant.skip_draw(x, "stochastic", g)  # ... and skip_draw draws the same word
    torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())
    assert_same(quant.fixed_point(x, 8, 4, "nearest"), torch.from_numpy(np_fixed_nearest(x.numpy(), 8, 4)))
    out = torch.empty(2000, dtype=torch.float16)
    xh = x.half()
    assert quant.fixed_point(xh, 8, 4, "nearest", out=out) is out
    assert_same(out, torch.from_numpy(np_fixed_nearest(xh.float().numpy(), 8, 4)).half())


@pytest.mark.parametrize("clamp", [False, True])
def test_dynamic_nearest_bit_exact_against_whole_tensor_path(K, monkeypatch, clamp):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 3, 7, 5, generator=g) * torch.logspace(-4, 4, 12).reshape(-1, 1, 1, 1)
    x[4] = 0.0
    cases = [(x, bits, per) for bits in (4, 8, 16) for per in (False, True)]
    cases += [(torch.tensor([1.9921875, -0.1]), 8, False), (x[4], 8, False), (x.double(), 8, True),
              (x.half(), 8, True), (torch.tensor(1.5), 8, False)]
    monkeypatch.setattr(quant, "CPU_KERNEL", False)
    expected = [quant.dynamic_fixed_point(v, b, "nearest", per_sample=p, clamp=clamp) for v, b, p in cases]
    monkeypatch.setattr(quant, "_GPU_KERNELS", K)
    monkeypatch.setattr(quant, "_on_gpu_kernel", lambda t: True)
    monkeypatch.setattr(quant, "_KERNEL_CHECKS", _CHECKS_OF_K)
    for (v, b, p), e in zip(cases, expected):
        assert_same(quant.dynamic_fixed_point(v, b, "nearest", per_sample=p, clamp=clamp), e)
    assert_same(expected[-4], torch.zeros(3, 7, 5))  # an all-zero tensor comes back unchanged


@pytest.mark.parametrize("clamp", [False, True])
def test_dynamic_stochastic_exact_per_tensor_and_per_sample(via_kernels, clamp):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 3, 5, 5, generator=g) * torch.logspace(-3, 3, 16).reshape(-1, 1, 1, 1)
    x[4] = 0.0
    low, high = (-128.0, 127.0) if clamp else (-INF, INF)
    got = quant.dynamic_fixed_point(x, 8, "stochastic", generator=torch.Generator().manual_seed(5), clamp=clamp)
    scale = np_muppet_scale(x.numpy(), 8)
    assert_same(got, torch.from_numpy(np_stochastic(x.numpy(), scale, low, high, first_word(5))))
    got = quant.dynamic_fixed_point(x, 8, "stochastic", per_sample=True, generator=torch.Generator().manual_seed(6),
                                    clamp=clamp)
    scales = np.array([np_muppet_scale(xi, 8) for xi in x.numpy()]).reshape(-1, 1, 1, 1)
    assert_same(got, torch.from_numpy(np_stochastic(x.numpy(), scales, low, high, first_word(6))))
    assert_same(got[4], torch.zeros(3, 5, 5))


def test_dynamic_stochastic_distribution_and_specials(via_kernels):
    # b = 8, sf = 6: x * 64 = [127.5, -128.5, 0.5, 9.6]; unclamped codes reach 128 and -129 (MuPPET).
    x = torch.tensor([127.5, -128.5, 0.5, 9.6]) / 64
    n = 3000
    xs = x.expand(n, -1).contiguous()
    codes = quant.dynamic_fixed_point(xs, 8, per_sample=True, generator=torch.Generator().manual_seed(0)) * 64
    assert set(codes[:, 0].unique().tolist()) == {127.0, 128.0}
    assert set(codes[:, 1].unique().tolist()) == {-129.0, -128.0}
    assert set(codes[:, 3].unique().tolist()) == {9.0, 10.0}
    p = torch.tensor([0.5, 0.5, 0.5, 0.6], dtype=torch.float64)
    se = torch.sqrt(p * (1 - p) / n) / 64
    assert bool(((codes.double().mean(0) / 64 - x.double()).abs() <= 4.5 * se).all())
    clamped = quant.dynamic_fixed_point(xs, 8, per_sample=True, generator=torch.Generator().manual_seed(0),
                                        clamp=True) * 64
    assert clamped.max().item() == 127.0 and clamped.min().item() == -128.0
    # inf or NaN make their tensor (or sample) NaN, the others stay finite; zeros stay zeros.
    for rounding in ("nearest", "stochastic"):
        for bad in (INF, -INF, NAN):
            assert bool(quant.dynamic_fixed_point(torch.tensor([bad, 1.0, -2.0, 0.0]), 8, rounding).isnan().all())
            y = quant.dynamic_fixed_point(torch.tensor([[bad, 1.0], [0.5, -0.25]]), 8, rounding, per_sample=True)
            assert bool(y[0].isnan().all()) and not bool(y[1].isnan().any())
        z = torch.zeros(4, 7)
        assert_same(quant.dynamic_fixed_point(z, 8, rounding, per_sample=True, generator=torch.Generator()), z)
        assert quant.dynamic_fixed_point(torch.empty(0, 3), 8, rounding, per_sample=True).shape == (0, 3)


# --------------------------------------------------------------------------------------------------
# one launch for many tensors
# --------------------------------------------------------------------------------------------------
def test_segments_equal_single_tensor_calls(K):
    g = torch.Generator().manual_seed(9)
    sizes, formats = [1, 5, 3000, 17, 0, 1200], [(8, 4), (4, 2), (16, 10), (1, 0), (8, 4), (32, 32)]
    xs = [torch.randn(n, generator=g) * 4 for n in sizes]
    xs[2][:3] = torch.tensor([INF, -INF, NAN])
    for rounding in ("nearest", "stochastic"):
        outs = K.fixed_point_segments(xs, formats, rounding, seed=SEED)
        for s, (x, (wl, fl)) in enumerate(zip(xs, formats)):
            assert_same(outs[s], K.fixed_point(x, wl, fl, rounding, seed=SEED, stream=s))
        if rounding == "nearest":
            for x, y, (wl, fl) in zip(xs, outs, formats):
                assert_same(y, torch.from_numpy(np_fixed_nearest(x.numpy(), wl, fl)))
    # In place, with a cached block table and a small block (results do not depend on it).
    ys = [x.clone() for x in xs]
    blocks = K.segment_blocks(sizes, 64)
    assert K.fixed_point_segments(ys, formats, "stochastic", seed=SEED, outs=ys, block=64, blocks=blocks) == ys
    for s, (x, (wl, fl)) in enumerate(zip(xs, formats)):
        assert_same(ys[s], K.fixed_point(x, wl, fl, "stochastic", seed=SEED, stream=s))
    with pytest.raises(ValueError, match="format 0"):
        K.fixed_point_segments(xs[:1], [(33, 4)], "nearest")
    with pytest.raises(ValueError, match="tensor 1"):
        K.fixed_point_segments([xs[0], xs[2].double()], [(8, 4)] * 2, "nearest")


def test_fixed_point_many_is_one_launch_with_one_seed(via_kernels):
    """On the kernels' device, adapt.quant.fixed_point_many rounds all tensors in one segments launch: one
    seed drawn for the call (tensor k on stream k), nearest identical to the loop, outputs in place."""
    K = via_kernels
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(n, generator=g) * 4 for n in (7, 3000, 1, 200)]
    formats = [quant.FixedPoint(8, 4), quant.FixedPoint(16, 10), quant.FixedPoint(4, 2), quant.FixedPoint(8, 4)]
    gen = torch.Generator().manual_seed(5)
    got = quant.fixed_point_many(xs, formats, "stochastic", gen)
    expected = K.fixed_point_segments(xs, [(f.word_length, f.fractional_length) for f in formats], "stochastic",
                                      seed=first_word(5))
    for a, b in zip(got, expected, strict=True):
        assert_same(a, b)
    ref = torch.Generator().manual_seed(5)
    torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())  # one word for the whole call
    ys = [x.clone() for x in xs]
    assert all(a is b for a, b in zip(quant.fixed_point_many(ys, formats, "nearest", outs=ys), ys, strict=True))
    for x, y, f in zip(xs, ys, formats):
        assert_same(y, torch.from_numpy(np_fixed_nearest(x.numpy(), f.word_length, f.fractional_length)))
    # mixed dtypes cannot share a launch: the loop, one seed per tensor
    mixed = [xs[0], xs[1].double()]
    gen = torch.Generator().manual_seed(5)
    got = quant.fixed_point_many(mixed, formats[:2], "stochastic", gen)
    assert_same(got[0], K.fixed_point(mixed[0], 8, 4, "stochastic", seed=first_word(5)))


def test_segment_extremes_are_aminmax_for_every_block_size(K):
    g = torch.Generator().manual_seed(8)
    xs = [torch.randn(n, generator=g) for n in (1, 300, 77)] + [torch.tensor([2.0, NAN, -1.0])]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        ts = [x.to(dtype) for x in xs]
        for block in (64, 256):
            hi, lo = K.segment_extremes(ts, block=block)
            for k, t in enumerate(ts[:3]):
                mn, mx = torch.aminmax(t.float())
                assert hi[k].item() == mx.item() and lo[k].item() == mn.item()
            assert hi[3].isnan() and lo[3].isnan()


@pytest.mark.parametrize("clamp", [False, True])
def test_dynamic_fixed_point_many_is_two_launches_with_exact_scales(via_kernels, clamp, monkeypatch):
    """MuPPET's weights and gradients on the kernels' device: extremes in one launch, rounding in another,
    tensor k on stream k of one seed; each tensor's scale is MuPPET's (NumPy reference), a tensor holding
    NaN or inf comes back NaN, zeros stay zeros, and nearest rounding equals the per-tensor calls.
    (Blocks of 256: the interpreter's reductions are slow per element; results do not depend on it.)"""
    K = via_kernels
    monkeypatch.setattr(K, "BLOCK", 256)
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(n, generator=g) * 10.0 ** (k - 3) for k, n in enumerate((5, 3000, 1, 130, 40))]
    xs += [torch.zeros(9), torch.tensor([1.0, INF, -2.0]), torch.tensor([NAN, 0.5]), torch.empty(0)]
    low, high = (-128.0, 127.0) if clamp else (-INF, INF)
    gen = torch.Generator().manual_seed(11)
    got = quant.dynamic_fixed_point_many(xs, 8, "stochastic", gen, clamp=clamp)
    for k, (x, y) in enumerate(zip(xs[:6], got[:6])):
        expected = np_stochastic(x.numpy(), np_muppet_scale(x.numpy(), 8), low, high, first_word(11), stream=k)
        assert_same(y, torch.from_numpy(expected))
    assert bool(got[6].isnan().all()) and bool(got[7].isnan().all()) and got[8].shape == (0,)
    ref = torch.Generator().manual_seed(11)
    torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())  # one seed for the call
    ys = [x.clone() for x in xs]
    out = quant.dynamic_fixed_point_many(ys, 8, "nearest", clamp=clamp, outs=ys)
    assert all(a is b for a, b in zip(out, ys, strict=True))
    for x, y in zip(xs, ys):
        assert_same(y, quant.dynamic_fixed_point(x, 8, "nearest", clamp=clamp))


# --------------------------------------------------------------------------------------------------
# launches: under the tensors' device, one per call, device tables uploaded once
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def launches(K, monkeypatch):
    """``[(kernel name, device, guard)]`` of every launch of the interpreted module, in order: each one runs
    inside ``_guard(device)`` (recorded), the context that makes a CUDA tensor's device current."""
    seen, guards = [], []
    real_guard = K._guard

    def guard(device):
        guards.append(device)
        return real_guard(device)

    def kernel_name(kernel):
        return getattr(getattr(kernel, "fn", kernel), "__name__", repr(kernel))

    real_run = K._run

    def run(kernel, grid, device, *args, **kwargs):
        n = len(guards)
        real_run(kernel, grid, device, *args, **kwargs)
        seen.append((kernel_name(kernel), device, guards[n:]))

    monkeypatch.setattr(K, "_guard", guard)
    monkeypatch.setattr(K, "_run", run)
    return seen


def test_guard_makes_the_tensors_cuda_device_current():
    """Triton launches on the current CUDA device: the guard of a cuda:1 tensor is torch.cuda.device(1) (built
    here without a GPU); CPU tensors (the interpreter) need none."""
    from adapt import _triton_kernels as G

    g = G._guard(torch.device("cuda", 1))
    assert isinstance(g, torch.cuda.device) and g.idx == 1
    assert isinstance(G._guard(torch.device("cpu")), contextlib.nullcontext)


def test_every_entry_point_is_one_launch_under_the_tensors_device(K, launches):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, generator=g) for n in (3, 300, 40)]
    cpu = torch.device("cpu")
    K.fixed_point(xs[1], 8, 4, "stochastic", seed=1, block=64)
    K.round_scaled(xs[1], torch.tensor([4.0]), "nearest", block=64)
    K.fixed_point_segments(xs, [(8, 4)] * 3, "nearest", block=64)
    K.segment_extremes(xs, block=64)
    K.round_scaled_segments(xs, torch.tensor([1.0, 2.0, 4.0]), "stochastic", seed=2, block=64)
    K.divide_segments(xs, torch.tensor([1.0, 2.0, 3.0]), block=64)
    assert [name for name, _, _ in launches] == ["_round_kernel", "_round_kernel", "_segments_kernel",
                                                   "_segments_extremes_kernel", "_segments_kernel",
                                                   "_segments_divide_kernel"]
    assert all(device == cpu and guards == [cpu] for _, device, guards in launches)
    launches.clear()
    K.fixed_point_segments([torch.empty(0)], [(8, 4)], "nearest")  # nothing to do: no launch
    assert launches == []


def test_quant_grouped_calls_are_one_and_two_launches(via_kernels, launches, monkeypatch):
    """fixed_point_many: one launch for all tensors; dynamic_fixed_point_many: the extremes, then the rounding;
    divide_many_: one launch (self-checks done beforehand, so that only the calls' own launches count)."""
    K = via_kernels
    monkeypatch.setattr(K, "BLOCK", 256)  # quick interpreted reductions; results do not depend on it
    monkeypatch.setattr(quant, "_KERNEL_CHECKS", {})
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, generator=g) for n in (7, 3000, 1)]
    formats = [quant.FixedPoint(8, 4)] * 3
    for kind, rounding, variant in [("segments", "stochastic", ()), ("dynamic_segments", "nearest", (False,)),
                                    ("divide", "nearest", ())]:
        assert quant._kernel_ok(kind, xs[0], rounding, variant)
    launches.clear()
    quant.fixed_point_many(xs, formats, "stochastic", torch.Generator().manual_seed(2), outs=xs)
    assert [n for n, _, _ in launches] == ["_segments_kernel"]
    launches.clear()
    quant.dynamic_fixed_point_many(xs, 8, "nearest", outs=xs)
    assert [n for n, _, _ in launches] == ["_segments_extremes_kernel", "_segments_kernel"]
    launches.clear()
    ys = [x.clone() for x in xs]
    quant.divide_many_(ys, torch.tensor([2.0, 3.0, 0.5]))
    assert [n for n, _, _ in launches] == ["_segments_divide_kernel"]
    for x, y, d in zip(xs, ys, (2.0, 3.0, 0.5)):
        assert_same(y, x / d)


def test_adapt_gradient_normalisation_is_one_launch_with_torch_div_bits(via_kernels, launches, monkeypatch):
    """AdaPT's g / ||g|| (MSGD_FP.step) through the kernels' device: one division launch for every gradient,
    the same bits as torch.div by the norm, a zero gradient left as it is."""
    from test_adapt_policy import make, set_grads

    monkeypatch.setattr(via_kernels, "BLOCK", 256)
    monkeypatch.setattr(quant, "_KERNEL_CHECKS", {})
    model, qmodel, policy, _ = make()
    assert quant._kernel_ok("divide", torch.zeros(1), "nearest")
    g = torch.Generator().manual_seed(0)
    set_grads(model, lambda p: torch.randn(p.shape, generator=g) * 3)
    model.bn.bias.grad.zero_()
    expected = {}
    for n, p in model.named_parameters():
        norm = torch.linalg.vector_norm(p.grad)
        expected[n] = p.grad / norm if norm > 0 else p.grad.clone()
    launches.clear()
    policy.before_step(0, 1.0)
    assert [name for name, _, _ in launches] == ["_segments_divide_kernel"]
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, expected[n]), n


@pytest.fixture
def uploads(K, monkeypatch):
    """The host-to-device copies of the interpreted module (numel of each), with an empty table cache."""
    K.clear_table_cache()
    seen = []
    real = K._upload

    def upload(host, device):
        seen.append(host.numel())
        return real(host, device)

    monkeypatch.setattr(K, "_upload", upload)
    yield seen
    K.clear_table_cache()


def test_device_tables_are_uploaded_once_then_cached(K, uploads, monkeypatch):
    """The table of addresses and formats and the block table travel in one copy, the first time; a call over
    the same tensors and formats copies nothing (the tables hold no values), new formats copy once more, and
    the cache keeps TABLE_CACHE_SIZE entries, least recently used dropped."""
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(n, generator=g) for n in (300, 5, 64)]
    ys = [torch.empty_like(x) for x in xs]
    formats = [(8, 4), (4, 2), (16, 10)]
    K.fixed_point_segments(xs, formats, "nearest", outs=ys, block=64)
    assert uploads == [6 * 3 + (5 + 1 + 1)]  # 3 table rows, then 7 (segment, block) int32 pairs as int64 words
    for x in xs:
        x.mul_(3)  # new values, same tensors: the cached tables serve
    K.fixed_point_segments(xs, formats, "nearest", outs=ys, block=64)
    assert len(uploads) == 1
    for x, y, (wl, fl) in zip(xs, ys, formats):
        assert_same(y, torch.from_numpy(np_fixed_nearest(x.numpy(), wl, fl)))
    K.fixed_point_segments(xs, [(8, 4)] * 3, "nearest", outs=ys, block=64)  # other formats: a new table
    K.fixed_point_segments(xs, formats, "nearest", outs=ys, block=64)  # the first is still cached
    assert len(uploads) == 2
    # MuPPET in place: the extremes and the rounding read the same rows, so one table serves both launches
    hi, lo = K.segment_extremes(xs, block=64)
    K.round_scaled_segments(xs, torch.exp2(-hi.abs().log2().ceil()), "nearest", outs=xs, block=64)
    assert len(uploads) == 3
    monkeypatch.setattr(K, "TABLE_CACHE_SIZE", 2)
    K.fixed_point_segments(xs, [(6, 3)] * 3, "nearest", outs=ys, block=64)  # drops the least recently used
    assert len(K._TABLES) == 2 and len(uploads) == 4
    K.fixed_point_segments(xs, formats, "nearest", outs=ys, block=64)  # was dropped: copied again
    assert len(uploads) == 5


def test_full_blocks_and_unaligned_tensors_give_the_same_results(K):
    """Blocks wholly inside a tensor take the unmasked (vectorisable) path, the last one the masked path; tensors
    at addresses that are not multiples of 16 bytes take the scalar path (ALIGNED false).  All agree with the
    references, element for element, at sizes around multiples of the block."""
    block = 64
    g = torch.Generator().manual_seed(4)
    base = torch.randn(4 * block + 3, generator=g) * 5
    base[::17] = torch.tensor([INF, -INF, NAN, -0.0])[torch.arange(len(base[::17])) % 4]
    sizes = [3 * block, 3 * block + 1, block - 1, 1, block]
    for offset in (0, 1):  # offset 1: 4 bytes past a 16-byte boundary
        xs = [base[offset:offset + n] for n in sizes]
        assert all((x.data_ptr() % 16 == 0) == (offset == 0) for x in xs)
        for rounding in ("nearest", "stochastic"):
            got = K.fixed_point_segments(xs, [(8, 4)] * len(xs), rounding, seed=SEED, block=block)
            for s, (x, y) in enumerate(zip(xs, got)):
                expected = (np_fixed_nearest(x.numpy(), 8, 4) if rounding == "nearest"
                            else np_stochastic(x.numpy(), 16.0, -128, 127, SEED, stream=s))
                assert_same(y, torch.from_numpy(expected))
                assert_same(K.fixed_point(x, 8, 4, rounding, seed=SEED, stream=s, block=block), y)
        hi, lo = K.segment_extremes(xs, block=block)
        for k, x in enumerate(xs):
            mn, mx = torch.aminmax(x)
            assert_same(hi[k:k + 1], mx.reshape(1)) and assert_same(lo[k:k + 1], mn.reshape(1))
        d = torch.tensor([3.0, -0.0, 1e-38, INF, NAN])
        outs = [torch.empty_like(x) for x in xs]
        K.divide_segments(xs, d, outs=outs, block=block)
        for k, (x, y) in enumerate(zip(xs, outs)):
            assert torch.equal(y.view(torch.int32)[~y.isnan()], (x / d[k]).view(torch.int32)[~y.isnan()])
            assert torch.equal(y.isnan(), (x / d[k]).isnan())


def _pre_34_signbit(self, x):
    """Triton before 3.4 (triton-lang/triton#6431): a float atomic_max/min took its negative path for x < 0 only."""
    return self.less_than(x, 0.0)


@pytest.mark.parametrize("old_triton", [False, True])
def test_segment_extremes_of_negative_zero_blocks(K, monkeypatch, old_triton):
    """A block whose maximum is -0.0 beside negative blocks, and a block of -0.0 beside a negative one: Triton's
    lowering before 3.4 (emulated in the interpreter by its frontend's sign test) lost the first maximum (-1.5
    instead of 0, a NaN scale downstream) and overwrote the second minimum with -0.0.  The kernel hands the
    atomics +0.0 instead, so both lowerings give torch.aminmax's values."""
    if old_triton:
        semantic = pytest.importorskip("triton.language.semantic")
        if not hasattr(semantic.TritonSemantic, "_signbit"):
            pytest.skip("this Triton's frontend has no _signbit to emulate the old lowering with")
        monkeypatch.setattr(semantic.TritonSemantic, "_signbit", _pre_34_signbit)
    b = 64
    xs = [torch.cat([torch.full((b,), -0.0), torch.full((b + 5,), -1.5)]),
          torch.cat([torch.full((b,), -3.0), torch.full((b,), -0.0), torch.full((7,), 2.0)]),
          torch.full((2 * b,), -0.0)]
    hi, lo = K.segment_extremes(xs, block=b)
    assert hi.tolist() == [0.0, 2.0, 0.0] and lo.tolist() == [-1.5, -3.0, 0.0]
    for k, x in enumerate(xs):
        mn, mx = torch.aminmax(x)
        assert hi[k] == mx and lo[k] == mn  # -0.0 == 0.0


def test_the_kernels_move_data_in_16_byte_vectors():
    """Compiled for sm_90 (no GPU needed; Triton ships ptxas): every kernel the loop launches loads and stores
    its tensors with ld/st.global.v4.b32 in full blocks, the many-tensor ones too (ALIGNED tables)."""
    import importlib.util as iu

    if iu.find_spec("triton.backends.compiler") is None:
        pytest.skip("this Triton cannot compile for a CUDA target without a GPU")
    spec = iu.spec_from_file_location("triton_compile_tool", ROOT / "tools" / "triton_compile.py")
    tool = iu.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for name, (kernel, args) in tool.specs().items():
        loads, stores = tool.accesses(tool.compile_ptx(kernel, args, 90))
        assert "ld.global.v4.b32" in loads, (name, loads)
        if name != "segment_extremes":
            assert "st.global.v4.b32" in stores, (name, stores)


# --------------------------------------------------------------------------------------------------
# first-use self-check
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_checks(K, monkeypatch):
    """adapt.quant routed to the interpreted kernels with no self-check done yet (blocks of 64: quick probes)."""
    monkeypatch.setattr(K, "BLOCK", 64)
    monkeypatch.setattr(quant, "_GPU_KERNELS", K)
    monkeypatch.setattr(quant, "_on_gpu_kernel", lambda x: True)
    checks = {}
    monkeypatch.setattr(quant, "_KERNEL_CHECKS", checks)
    return checks


KINDS = [("fixed_point", ()), ("round_scaled", (False, False)), ("round_scaled", (True, True)), ("segments", ()),
         ("dynamic_segments", (False,)), ("dynamic_segments", (True,)), ("divide", ())]


def test_self_checks_pass_on_correct_kernels(fresh_checks, recwarn):
    x = torch.zeros(3)
    for kind, variant in KINDS:
        for rounding in ("nearest", "stochastic"):
            if kind == "divide" and rounding == "stochastic":
                continue
            assert quant._kernel_ok(kind, x, rounding, variant), (kind, rounding, variant)
    assert all(fresh_checks.values()) and len(fresh_checks) == 2 * len(KINDS) - 1
    assert not [w for w in recwarn if "first-use" in str(w.message)]


class _Broken:
    """The interpreted kernel module with one function replaced."""

    def __init__(self, K, **replace):
        self._K, self._replace = K, replace

    def __getattr__(self, name):
        return self._replace.get(name, getattr(self._K, name))


def test_a_wrong_kernel_warns_once_with_both_values_and_falls_back(fresh_checks, monkeypatch):
    K = quant._GPU_KERNELS

    def off_by_one_step(x, wl, fl, rounding="stochastic", seed=None, out=None, **kw):
        y = K.fixed_point(x, wl, fl, rounding, seed, **kw)
        y.view(-1)[-1] += 2.0**-fl  # the last element of the last (partial) block
        return y if out is None else out.copy_(y)

    monkeypatch.setattr(quant, "_GPU_KERNELS", _Broken(K, fixed_point=off_by_one_step))
    x = torch.linspace(-3, 3, 101)
    with pytest.warns(RuntimeWarning, match=r"'fixed_point' \(torch.float32, nearest\) on cpu failed its first-use "
                                            r"check.*element 164: input .* gives .*, the whole-tensor reference"):
        warnings.filterwarnings("ignore", module="triton.runtime.interpreter")  # its NumPy warnings
        y = quant.fixed_point(x, 8, 4, "nearest")
    assert_same(y, torch.from_numpy(np_fixed_nearest(x.numpy(), 8, 4)))  # the whole-tensor ops' result
    assert fresh_checks[("fixed_point", x.device, x.dtype, "nearest", ())] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(quant.fixed_point(x, 8, 4, "nearest"), y)  # no second warning, still the ops


def test_a_kernel_that_raises_or_loses_extremes_falls_back(fresh_checks, monkeypatch):
    K = quant._GPU_KERNELS

    def cannot_compile(*args, **kwargs):
        raise RuntimeError("PassManager::run failed")

    def old_extremes(xs, **kw):  # what Triton before 3.4 gave for a block whose maximum is -0.0
        hi, lo = K.segment_extremes(xs, **kw)
        return torch.where(hi == 0, torch.full_like(hi, -1.5), hi), lo

    monkeypatch.setattr(quant, "_GPU_KERNELS", _Broken(K, fixed_point_segments=cannot_compile,
                                                        segment_extremes=old_extremes))
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(n, generator=g) for n in (100, 7)]
    with pytest.warns(RuntimeWarning, match="'segments'.*raised RuntimeError: PassManager::run failed"):
        warnings.filterwarnings("ignore", module="triton.runtime.interpreter")
        got = quant.fixed_point_many(xs, [quant.FixedPoint(8, 4)] * 2, "nearest")
    for x, y in zip(xs, got):  # the loop over fixed_point, whose own kernel passed its check
        assert_same(y, torch.from_numpy(np_fixed_nearest(x.numpy(), 8, 4)))
    with pytest.warns(RuntimeWarning, match=r"'dynamic_segments'.*gives -1\.5, the whole-tensor reference 0\.0"):
        warnings.filterwarnings("ignore", module="triton.runtime.interpreter")
        got = quant.dynamic_fixed_point_many(xs, 8, "nearest")
    for x, y in zip(xs, got):
        assert_same(y, quant._dynamic_fixed_point(x, 8, "nearest", False, None, False, False))


# --------------------------------------------------------------------------------------------------
# the benchmark's Triton branch
# --------------------------------------------------------------------------------------------------
def test_quantizer_benchmark_triton_dry_run():
    """``benchmarks/quantizer.py --triton-interpret`` runs its GPU-kernel rows on CPU (tiny sizes): it cannot
    break on the first GPU for lack of a run."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quantizer.py"), "--triton-interpret", "--sizes", "4096",
         "--repeats", "1", "--warmup", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("Triton fixed_point(8,4) nearest", "Triton fixed_point(8,4) stochastic",
                "whole-tensor fixed_point(8,4) nearest", "whole-tensor fixed_point(8,4) stochastic"):
        assert row in done.stdout, done.stdout
    assert "x clone" in done.stdout
