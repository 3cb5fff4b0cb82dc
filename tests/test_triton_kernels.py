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

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed (it ships with torch's CUDA builds)")

from adapt import quant  # noqa: E402
from test_quant import INF, NAN, assert_same, np_fixed_nearest, np_muppet_scale  # noqa: E402

# The interpreter evaluates the kernels with NumPy, which warns where the kernels compute inf - inf or
# inf * 0 on purpose (then replaced or saturated).
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")
ROOT = Path(__file__).resolve().parents[1]
TEST_BLOCK = 16384


@pytest.fixture(scope="module")
def K():
    """adapt/_triton_kernels.py loaded as a separate module with its kernels in Triton's interpreter."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec = importlib.util.spec_from_file_location("adapt._triton_kernels_interpreted",
                                                      ROOT / "adapt" / "_triton_kernels.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old
    assert type(module._round_kernel).__name__ == "InterpretedFunction"
    module.BLOCK = TEST_BLOCK
    return module


@pytest.fixture
def via_kernels(K, monkeypatch):
    """Route adapt.quant's CPU tensors through the interpreted Triton kernels (as it routes CUDA tensors)."""
    monkeypatch.setattr(quant, "_GPU_KERNELS", K)
    monkeypatch.setattr(quant, "_on_gpu_kernel", lambda x: True)
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_compiled_many_tensor_kernels_equal_the_interpreted_ones(K):
    """On a GPU: the compiled segments kernels give bit for bit what the interpreted copy gives on CPU
    (the compiled module has its own block size; results do not depend on it)."""
    G = quant._gpu_kernels()
    g = torch.Generator().manual_seed(12)
    xs = [torch.randn(n, generator=g) * 3 for n in (5, 5000, 77)]
    xs[1][:3] = torch.tensor([INF, -INF, NAN])
    gpu_xs = [x.cuda() for x in xs]
    scales = torch.tensor([4.0, 16.0, 0.5])
    for rounding in ("nearest", "stochastic"):
        pairs = [(K.fixed_point_segments(xs, [(8, 4), (16, 10), (4, 2)], rounding, seed=SEED),
                  G.fixed_point_segments(gpu_xs, [(8, 4), (16, 10), (4, 2)], rounding, seed=SEED)),
                 (K.round_scaled_segments(xs, scales, rounding, seed=SEED, clamp_bits=8),
                  G.round_scaled_segments(gpu_xs, scales.cuda(), rounding, seed=SEED, clamp_bits=8))]
        for expected, got in pairs:
            for e, a in zip(expected, got, strict=True):
                assert_same(a.cpu(), e)
    for e, a in zip(K.segment_extremes(xs), G.segment_extremes(gpu_xs)):
        assert_same(a.cpu(), e)


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
