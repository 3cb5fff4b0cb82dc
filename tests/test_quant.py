"""Tests of :mod:`adapt.quant`: fixed point (QPyTorch semantics) and MuPPET's dynamic fixed point.

References used here, all independent of the code under test:

* a NumPy model of QPyTorch's CPU kernel for nearest rounding (``np.rint`` is round half to even,
  as ``nearbyint`` is under the default rounding mode);
* QPyTorch itself (``qtorch.quant.fixed_point_quantize``), which the official AdaPT code calls;
* hand-computed dynamic-fixed-point cases, with the arithmetic written out.
"""
from __future__ import annotations

import math
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from adapt import quant
from adapt.quant import (
    ROUNDING_MODES,
    DynamicFixedPoint,
    FixedPoint,
    dynamic_fixed_point,
    fixed_point,
    quantize_gradient,
    quantize_ste,
)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA is not available on this machine")
INF = float("inf")
NAN = float("nan")
FLT_MAX = float(np.finfo(np.float32).max)
ALL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

# Deterministic properties: explore freely.  Probabilistic ones (stochastic rounding): derandomize
# so CI runs are reproducible.
EXACT = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RANDOM = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal dtype, shape and values, NaN matching NaN.  ``+0.0 == -0.0`` (as ``torch.equal``)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    a_nan, e_nan = actual.isnan(), expected.isnan()
    assert torch.equal(a_nan, e_nan), "NaN positions differ"
    a = torch.where(a_nan, torch.zeros_like(actual), actual)
    e = torch.where(e_nan, torch.zeros_like(expected), expected)
    if not torch.equal(a, e):
        bad = (a != e).nonzero()[:8].flatten().tolist()
        raise AssertionError(
            f"values differ at {bad}: got {actual.flatten()[bad].tolist()}, expected {expected.flatten()[bad].tolist()}"
        )


def np_fixed_nearest(x: np.ndarray, wl: int, fl: int) -> np.ndarray:
    """Independent NumPy reference: QPyTorch's ``fixed_point_quantize(..., clamp=True, symmetric=False,
    rounding="nearest")`` with exact round half to even (QPyTorch's own kernel adds two float32
    artifacts on top, see ``np_qtorch_nearest``).

    Works in ``x``'s dtype: scale by ``2**fl``, round half to even, unscale, then saturate to
    ``[t_min, t_max]``, where ``t_max = 2**(wl-fl-1) - 2**-fl`` is computed in double and stored to
    the working dtype, as ``fixed_min_max`` does (for float32 and wl >= 26 it rounds up to
    ``2**(wl-fl-1)``).  NaN passes the clamp (``a > max`` and ``a < min`` are both false).
    """
    dt = x.dtype.type
    t_min = dt(-math.ldexp(1.0, wl - fl - 1))
    t_max = dt(math.ldexp(1.0, wl - fl - 1) - math.ldexp(1.0, -fl))
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(x * dt(2.0**fl)) * dt(2.0**-fl)
        q = np.where(q > t_max, t_max, np.where(q < t_min, t_min, q))
    return q.astype(x.dtype)


def float32_values(wl: int, fl: int):
    """float32 values that stress a (wl, fl) quantizer: ties, near-ties, grid points, extremes, specials."""
    step = 2.0**-fl
    # |k + 0.5| <= 2**22 + 0.5 needs 24 significant bits, so every tie is exact in float32.
    ties = st.integers(-(2**22), 2**22).map(lambda k: np.float32((k + 0.5) * step))
    small_ties = st.integers(-(2 ** min(wl, 22)), 2 ** min(wl, 22)).map(lambda k: np.float32((k + 0.5) * step))
    near_ties = small_ties.flatmap(
        lambda t: st.sampled_from([np.nextafter(t, np.float32(-INF)), np.nextafter(t, np.float32(INF))])
    )
    grid = st.integers(-(2**24), 2**24).map(lambda k: np.float32(k * step))
    edges = st.sampled_from(
        [np.float32(v) for v in (
            -(2.0 ** (wl - fl - 1)), 2.0 ** (wl - fl - 1) - step, 2.0 ** (wl - fl - 1), -(2.0 ** (wl - fl - 1)) - step,
            0.0, -0.0, INF, -INF, NAN, FLT_MAX, -FLT_MAX, 1e-45, -1e-45,
        )]
    )
    big, small = float(np.float32(1e20)), float(np.float32(1e-20))
    huge = st.floats(big, FLT_MAX, width=32) | st.floats(-FLT_MAX, -big, width=32)
    tiny = st.floats(-small, small, width=32)
    anything = st.floats(width=32)
    return st.one_of(anything, ties, small_ties, near_ties, grid, edges, huge, tiny)


formats = st.tuples(st.integers(1, 32), st.integers(0, 32))


@st.composite
def format_and_array(draw):
    wl, fl = draw(formats)
    x = draw(hnp.arrays(np.float32, st.integers(1, 48), elements=float32_values(wl, fl)))
    return wl, fl, x


@pytest.fixture(scope="module")
def qtorch_fixed_point_quantize():
    """QPyTorch's ``fixed_point_quantize``; its C++ CPU extension compiles at first import (~20 s, cached).

    When CUDA is visible qtorch would also build its CUDA extension with nvcc at import (minutes).
    Parity is only checked on CPU, so CUDA is hidden during the import; qtorch then aliases its CUDA
    module to the CPU one, which these tests never call with CUDA tensors.
    """
    with mock.patch.object(torch.cuda, "is_available", return_value=False):
        from qtorch.quant import fixed_point_quantize
    return fixed_point_quantize


def qtorch_nearest(fpq, x: torch.Tensor, wl: int, fl: int) -> torch.Tensor:
    return fpq(x, wl, fl, clamp=True, symmetric=False, rounding="nearest")


def np_qtorch_nearest(x: np.ndarray, wl: int, fl: int) -> np.ndarray:
    """Exact NumPy model of qtorch 0.3.0's CPU arithmetic (``sim_helper.cpp``, ``round(a, 0.5, -fl)``).

    ``a = ldexp(a, fl)`` (float32), ``a = nearbyint(a + r - 0.5)`` with ``r = 0.5f``: ``a + r`` is a
    float32 addition, rounded *before* the double ``- 0.5``; then ``ldexp`` back and the clamp.
    """
    f32 = np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        a = x * f32(2.0**fl)
        s = (a + f32(0.5)).astype(np.float64)  # float + float stays float32
        q = np.rint(s - 0.5).astype(np.float32) * f32(2.0**-fl)
    t_min = f32(-math.ldexp(1.0, wl - fl - 1))
    t_max = f32(math.ldexp(1.0, wl - fl - 1) - math.ldexp(1.0, -fl))
    return np.where(q > t_max, t_max, np.where(q < t_min, t_min, q)).astype(np.float32)


def qtorch_artifacts(x: torch.Tensor, wl: int, fl: int) -> torch.Tensor:
    """Where qtorch's float32 ``a + 0.5f`` changes the result (``a = x * 2**fl``); see the test below.

    * ``a = 0.5 + 2**-24``: ``a + 0.5f = 1 + 2**-24`` is a float32 tie, rounds to 1, and
      ``nearbyint(0.5) = 0`` although ``a`` is above the tie (true result 1).
    * ``a`` an odd integer with ``2**23 <= |a| < 2**24`` (float32 spacing 1): ``a + 0.5f`` is a tie,
      rounds to the even ``a + 1``, and ``nearbyint(a + 0.5) = a + 1`` although ``a`` is on the grid.
      The clamp hides this unless ``wl >= 25``.
    """
    a = x.double() * 2.0**fl
    odd = (a.abs() >= 2.0**23) & (a.abs() < 2.0**24) & (torch.remainder(a, 2.0) == 1.0)
    return (a == 0.5 + 2.0**-24) | (odd & (wl >= 25))


def both_cpu_paths():
    """Yield inside each CPU implementation in turn: the kernel, then the whole-tensor ops (CUDA's code)."""
    for kernel in (True, False):
        with mock.patch.object(quant, "CPU_KERNEL", kernel):
            yield kernel


def check_qtorch_parity(fpq, x: torch.Tensor, wl: int, fl: int) -> None:
    theirs = qtorch_nearest(fpq, x, wl, fl)
    # 1. our understanding of qtorch is exact, and 2. we agree with it bit for bit outside the artifacts
    assert_same(theirs, torch.from_numpy(np_qtorch_nearest(x.numpy(), wl, fl)))
    keep = ~qtorch_artifacts(x, wl, fl)
    for _ in both_cpu_paths():
        assert_same(fixed_point(x, wl, fl, "nearest")[keep], theirs[keep])


# --------------------------------------------------------------------------------------------------
# formats
# --------------------------------------------------------------------------------------------------
def test_fixed_point_format_properties():
    f = FixedPoint(8, 4)
    assert (f.bits, f.step, f.min, f.max) == (8, 0.0625, -8.0, 7.9375)
    g = FixedPoint(4, 6)  # fl > wl: range inside (-1, 1), as in QPyTorch
    assert (g.min, g.max) == (-0.125, 0.125 - 2.0**-6)
    assert str(f) == "FixedPoint(8, 4)"
    assert FixedPoint(8, 4) == FixedPoint(8, 4) and hash(FixedPoint(8, 4)) == hash(FixedPoint(8, 4))
    with pytest.raises(Exception):
        f.word_length = 9  # frozen
    assert str(DynamicFixedPoint(8)) == "DynamicFixedPoint(8)"
    assert ROUNDING_MODES == ("stochastic", "nearest")


# --------------------------------------------------------------------------------------------------
# nearest rounding: NumPy reference and qtorch parity
# --------------------------------------------------------------------------------------------------
@EXACT
@given(format_and_array())
def test_nearest_matches_numpy_reference(case):
    wl, fl, x = case
    for _ in both_cpu_paths():
        got = fixed_point(torch.from_numpy(x), wl, fl, "nearest")
        assert_same(got, torch.from_numpy(np_fixed_nearest(x, wl, fl)))


@EXACT
@given(formats, hnp.arrays(np.float64, st.integers(1, 32), elements=st.floats(allow_nan=True)))
def test_nearest_float64_matches_numpy_reference(fmt, x):
    wl, fl = fmt
    for _ in both_cpu_paths():
        got = fixed_point(torch.from_numpy(x), wl, fl, "nearest")
        assert_same(got, torch.from_numpy(np_fixed_nearest(x, wl, fl)))


def random_float32_bits(n: int, seed: int) -> torch.Tensor:
    """Uniform random float32 bit patterns: every exponent, subnormals, +-inf and NaN included."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**31), 2**31, (n,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)


def dense_ties(wl: int, fl: int) -> torch.Tensor:
    """Every half-step tie, grid point and their float32 neighbours across the format's range and a bit beyond."""
    hi = min(2 ** (wl - 1) + 2, 2**12)
    k = torch.arange(-hi, hi, dtype=torch.float64)
    v = torch.cat([k, k + 0.5]).mul(2.0**-fl).float()
    return torch.cat([v, torch.nextafter(v, torch.tensor(INF)), torch.nextafter(v, torch.tensor(-INF))])


NEAREST_FORMATS = [(1, 0), (1, 32), (2, 1), (4, 6), (8, 4), (8, 0), (12, 8), (16, 10), (23, 11), (24, 12),
                   (25, 0), (26, 3), (31, 16), (32, 0), (32, 16), (32, 32)]


@pytest.mark.parametrize("wl,fl", NEAREST_FORMATS)
def test_nearest_numpy_reference_bit_patterns_and_ties(wl, fl):
    for x in (random_float32_bits(20_000, seed=wl * 100 + fl), dense_ties(wl, fl)):
        for _ in both_cpu_paths():
            assert_same(fixed_point(x, wl, fl, "nearest"), torch.from_numpy(np_fixed_nearest(x.numpy(), wl, fl)))


@pytest.mark.parametrize("wl,fl", NEAREST_FORMATS)
def test_nearest_matches_qtorch_bit_patterns_and_ties(qtorch_fixed_point_quantize, wl, fl):
    for x in (random_float32_bits(20_000, seed=wl * 100 + fl + 1), dense_ties(wl, fl)):
        check_qtorch_parity(qtorch_fixed_point_quantize, x, wl, fl)


@EXACT
@given(format_and_array())
def test_nearest_matches_qtorch(qtorch_fixed_point_quantize, case):
    wl, fl, x = case
    check_qtorch_parity(qtorch_fixed_point_quantize, torch.from_numpy(x), wl, fl)


def test_qtorch_known_divergences(qtorch_fixed_point_quantize):
    """The only inputs where we deliberately differ from qtorch 0.3.0's CPU kernel (``qtorch_artifacts``).

    Both are float32 double rounding in qtorch's ``nearbyint(a + 0.5f - 0.5)``; we round half to even
    exactly, as the NumPy reference does.
    """
    # a = x * 2**fl = 0.5 + 2**-24 is above the tie 0.5: nearest is 1 code; qtorch gives 0.
    for wl, fl in [(8, 4), (2, 0), (16, 10), (32, 32)]:
        x = torch.tensor([(0.5 + 2.0**-24) * 2.0**-fl], dtype=torch.float32)
        assert_same(fixed_point(x, wl, fl, "nearest"), torch.tensor([2.0**-fl]))
        assert_same(qtorch_nearest(qtorch_fixed_point_quantize, x, wl, fl), torch.tensor([0.0]))
    # c * 2**-fl with c an odd integer in [2**23, 2**24) is exactly representable in the format, so
    # nearest must return it unchanged; qtorch moves it one code towards +inf (wl >= 25 only).
    c = torch.tensor([2.0**23 + 1, 2.0**23 + 3, 2.0**24 - 1, -(2.0**23 + 1), 2.0**23 + 2], dtype=torch.float64)
    for wl, fl in [(32, 0), (26, 3), (28, 10)]:
        x = (c * 2.0**-fl).float()
        assert_same(fixed_point(x, wl, fl, "nearest"), x)
        expected_qtorch = ((c + torch.tensor([1, 1, 1, 1, 0])) * 2.0**-fl).float()
        assert_same(qtorch_nearest(qtorch_fixed_point_quantize, x, wl, fl), expected_qtorch)


def test_nearest_hand_cases(cpu_path):
    # FixedPoint(8, 4): step 1/16, range [-8, 7.9375].
    x = torch.tensor([0.03125, 0.09375, -0.03125, -0.09375, 0.1, 7.97, 8.5, -8.03125, -9.0, 0.0, -0.0])
    # 0.03125*16 = 0.5 -> 0 (even); 0.09375*16 = 1.5 -> 2 (even) = 0.125; negatives mirror;
    # 0.1*16 = 1.6 -> 2 = 0.125; 7.97*16 = 127.52 -> 128 -> saturates at 127/16 = 7.9375; 8.5 saturates;
    # -8.03125*16 = -128.5 -> -128 (even) = -8; -9 saturates at -8.
    expected = torch.tensor([0.0, 0.125, 0.0, -0.125, 0.125, 7.9375, 7.9375, -8.0, -8.0, 0.0, 0.0])
    assert_same(fixed_point(x, 8, 4, "nearest"), expected)
    assert_same(FixedPoint(8, 4).quantize(x, "nearest"), expected)
    # wl = 1: codes {-1, 0}: range [-2**-fl, 0].
    assert_same(fixed_point(torch.tensor([0.7, -0.3, -0.6, -5.0]), 1, 0, "nearest"), torch.tensor([0.0, 0.0, -1.0, -1.0]))


# --------------------------------------------------------------------------------------------------
# stochastic rounding
# --------------------------------------------------------------------------------------------------
def codes_bounds(x: torch.Tensor, wl: int, fl: int):
    """floor(x * 2**fl) and ceil(x * 2**fl), clamped to the code range, in float64 (exact)."""
    a = x.double() * 2.0**fl
    lo, hi = -(2.0 ** (wl - 1)), 2.0 ** (wl - 1) - 1
    return torch.floor(a).clamp(lo, hi), torch.ceil(a).clamp(lo, hi)


@RANDOM
@given(formats, st.data(), st.integers(0, 2**32))
def test_stochastic_outputs_are_grid_neighbours_float64(fmt, data, seed):
    """float64: the output is floor or ceil of the clamped x*2**fl, exactly (float64 holds x*2**fl + u)."""
    wl, fl = fmt
    bound = 2.0 ** (22 - fl)  # keeps |x * 2**fl| <= 2**22, so u's 53 bits survive the addition
    elems = st.floats(-bound, bound) | st.sampled_from([INF, -INF, 1e300, -1e300, 0.0])
    x = torch.from_numpy(data.draw(hnp.arrays(np.float64, st.integers(1, 64), elements=elems)))
    lo, hi = codes_bounds(x, wl, fl)
    for kernel in (True, False):
        with mock.patch.object(quant, "CPU_KERNEL", kernel):
            y = fixed_point(x, wl, fl, "stochastic", generator=torch.Generator().manual_seed(seed))
        assert y.dtype == torch.float64
        code = y * 2.0**fl
        assert bool(((code == lo) | (code == hi)).all()), (kernel, x, y)


@RANDOM
@given(format_and_array(), st.integers(0, 2**32))
def test_stochastic_outputs_are_grid_neighbours_float32(case, seed):
    """float32: output code is floor(x*2**fl) or floor(x*2**fl) + 1 (clamped); NaN stays NaN.

    For x off the grid these are floor and ceil.  For x *on* the grid float32's rounding of
    ``x*2**fl + u`` can move it one code up (see ``test_stochastic_float32_grid_values_can_move``).
    """
    wl, fl, x = case
    xt = torch.from_numpy(x)
    a = xt.double() * 2.0**fl
    # The top code 2**(wl-1) - 1 is stored to float32 by the clamp, as in qtorch: 2**(wl-1) for wl >= 26.
    lo_code, hi_code = -(2.0 ** (wl - 1)), float(np.float32(2.0 ** (wl - 1) - 1))
    floor_ = torch.floor(a).clamp(lo_code, hi_code)
    up = (torch.floor(a) + 1).clamp(lo_code, hi_code)
    for kernel in (True, False):
        with mock.patch.object(quant, "CPU_KERNEL", kernel):
            y = fixed_point(xt, wl, fl, "stochastic", generator=torch.Generator().manual_seed(seed))
        assert y.dtype == torch.float32
        assert torch.equal(y.isnan(), xt.isnan())
        code = y.double() * 2.0**fl
        ok = (code == floor_) | (code == up) | xt.isnan()
        assert bool(ok.all()), (kernel, xt[~ok], y[~ok])


@pytest.fixture(params=["kernel", "tensor_ops"])
def cpu_path(request, monkeypatch):
    """Run a test through both implementations: the CPU kernel and the whole-tensor ops
    that CUDA/MPS use (forced on CPU with ``CPU_KERNEL = False``)."""
    monkeypatch.setattr(quant, "CPU_KERNEL", request.param == "kernel")
    return request.param


def test_stochastic_grid_values_stay_on_cpu_kernel_and_can_move_with_float32_ops(cpu_path):
    """float32 arithmetic rounds ``x*2**fl + u`` before ``floor``; the CPU kernel's float64 does not.

    For x = 2**20 (wl 32, fl 0) float32's spacing near 2**20 is 1/8, so with the
    whole-tensor ops (CUDA's path, QPyTorch's and MuPPET's arithmetic) ``2**20 + u``
    rounds to ``2**20 + 1`` whenever ``u >= 15/16``: a grid value moves up with
    probability 1/16, a bias of about ``|x*2**fl| * 2**-24`` codes (<= 2**-9 at wl 16).
    The kernel keeps every grid value.
    """
    x = torch.full((100_000,), 2.0**20)
    moved = (fixed_point(x, 32, 0, generator=torch.Generator().manual_seed(0)) != x).double().mean().item()
    if cpu_path == "kernel":
        assert moved == 0.0
    else:
        assert 0.055 < moved < 0.07
    # Small codes: the effect is far below the statistical resolution of the unbiasedness tests.
    x = torch.full((100_000,), 100.0 / 16)
    assert (fixed_point(x, 8, 4, generator=torch.Generator().manual_seed(0)) != x).sum().item() <= 2


@pytest.mark.parametrize("wl,fl,dtype", [(8, 4, torch.float32), (16, 10, torch.float32), (4, 0, torch.float32),
                                         (12, 14, torch.float64), (8, 4, torch.float16)])
def test_stochastic_is_unbiased_inside_range(wl, fl, dtype, cpu_path):
    step = 2.0**-fl
    lo, hi = -(2.0 ** (wl - fl - 1)), 2.0 ** (wl - fl - 1) - step
    fracs = torch.tensor([0.0, 0.01, 0.1, 0.25, 0.5, 0.7, 0.9, 0.99])
    starts = torch.tensor([lo, lo + 3 * step, -step, 0.0, step, hi / 3, hi - step]).div(step).floor()
    x = ((starts[:, None] + fracs[None, :]).flatten() * step).to(dtype)
    x = x[(x >= lo) & (x <= hi)]
    x = torch.cat([x, torch.tensor([hi, lo], dtype=dtype)])
    n = 20_000
    draws = fixed_point(x.expand(n, -1).contiguous(), wl, fl, "stochastic", torch.Generator().manual_seed(7))
    assert draws.dtype == dtype
    mean = draws.double().mean(0)
    xd = x.double()
    p = torch.remainder(xd / step, 1.0)
    se = step * torch.sqrt(p * (1 - p) / n)
    err = (mean - xd).abs()
    # float32 rounds x*2**fl + u to its own spacing, at most 2**-22 * |code| (see the test above):
    # a deterministic bias of at most that many codes, on top of 4 standard errors.
    tol = 4 * se + step * ((xd / step).abs() + 1) * 2.0**-22
    assert bool((err <= tol).all()), list(zip(xd[err > tol].tolist(), mean[err > tol].tolist()))


def test_stochastic_generator_reproducibility():
    x = torch.linspace(-3, 3, 1001)  # almost no value on the 1/16 grid
    a = fixed_point(x, 8, 4, generator=torch.Generator().manual_seed(123))
    b = fixed_point(x, 8, 4, generator=torch.Generator().manual_seed(123))
    c = fixed_point(x, 8, 4, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # A generator advances: two calls with the same generator differ.
    g = torch.Generator().manual_seed(5)
    assert not torch.equal(fixed_point(x, 8, 4, generator=g), fixed_point(x, 8, 4, generator=g))
    # Without a generator, the global RNG is used (torch.manual_seed reproduces it).
    torch.manual_seed(99)
    d = fixed_point(x, 8, 4)
    torch.manual_seed(99)
    assert torch.equal(d, fixed_point(x, 8, 4))
    # Same for the dynamic quantizer.
    e = dynamic_fixed_point(x, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(e, dynamic_fixed_point(x, 8, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(e, dynamic_fixed_point(x, 8, generator=torch.Generator().manual_seed(2)))


def test_contains_hand_cases():
    f84 = FixedPoint(8, 4)  # [-8, 7.9375], step 1/16
    assert f84.contains(FixedPoint(8, 4))
    assert f84.contains(FixedPoint(6, 2))  # [-8, 7.75], step 1/4
    assert f84.contains(FixedPoint(1, 0))  # {-1, 0}
    assert not f84.contains(FixedPoint(8, 5))  # finer step
    assert not f84.contains(FixedPoint(9, 4))  # wider range
    assert not f84.contains(FixedPoint(5, 0))  # [-16, 15]
    assert not f84.contains(DynamicFixedPoint(8))
    assert not f84.contains(None)


@RANDOM
@given(st.integers(1, 24), st.integers(0, 20), st.integers(0, 4), st.integers(0, 4), st.integers(0, 2**32))
def test_quantizing_with_a_containing_format_is_the_identity(wl, fl, more_int, more_frac, seed):
    a = FixedPoint(wl, fl)
    b = FixedPoint(wl + more_int + more_frac, fl + more_frac)  # more bits on either side of the point
    assert b.contains(a)
    assert a.contains(b) == (more_int == more_frac == 0)
    x = torch.randn(2000, generator=torch.Generator().manual_seed(seed)) * 2.0 ** (wl - fl - 1)
    qa = a.quantize(x, "stochastic", torch.Generator().manual_seed(seed))
    for rounding in ROUNDING_MODES:
        assert_same(b.quantize(qa, rounding, torch.Generator().manual_seed(seed + 1)), qa)


# --------------------------------------------------------------------------------------------------
# the CPU kernel, against an independent NumPy reference
# --------------------------------------------------------------------------------------------------
def np_splitmix64(seed: int, n: int) -> np.ndarray:
    """Outputs 0..n-1 of SplitMix64 seeded with ``seed`` (Steele, Lea & Flood 2014; Vigna's splitmix64.c)."""
    z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def test_splitmix64_reference_matches_published_outputs():
    # The first outputs of splitmix64.c with state 0 (also xoshiro's documented seeding values).
    assert np_splitmix64(0, 4).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4,
                                            0x06C45D188009454F, 0xF88BB8A8724C81EC]


def first_word(seed: int) -> int:
    """The 64-bit word a kernel call draws first from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=g)) & (2**64 - 1)


def np_stochastic(x: np.ndarray, scale: np.ndarray, low: float, high: float, seed_word: int) -> np.ndarray:
    """``clamp(floor(x * scale + u), low, high) / scale`` in float64, ``u = (bits >> 40 + 1/2) * 2**-24``
    from SplitMix64 output ``i`` for flat element ``i``; ``scale`` broadcasts per element."""
    u = ((np_splitmix64(seed_word, x.size) >> np.uint64(40)).astype(np.float64) + 0.5) * 2.0**-24
    s = np.broadcast_to(scale, x.shape).reshape(-1)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # signalling NaNs, inf * 0
        flat = x.reshape(-1).astype(np.float64)
        v = np.floor(flat * s + u)
        v = np.where(v < low, low, np.where(v > high, high, v))  # NaN passes both comparisons
        return (v * (1.0 / s)).astype(x.dtype).reshape(x.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("wl,fl", [(8, 4), (4, 0), (16, 10), (12, 14), (24, 12), (2, 1)])
def test_cpu_kernel_fixed_point_equals_numpy_reference(dtype, wl, fl):
    x = random_float32_bits(5_000, seed=wl + fl).to(dtype)
    x = torch.cat([x, (torch.randn(20_000, generator=torch.Generator().manual_seed(wl)) * 2.0 ** (wl - fl - 2)).to(dtype),
                   torch.tensor([INF, -INF, NAN, 0.0, -0.0], dtype=dtype)])
    got = fixed_point(x, wl, fl, "stochastic", generator=torch.Generator().manual_seed(wl * 7 + fl))
    expected = np_stochastic(x.numpy(), np.float64(2.0**fl), -(2.0 ** (wl - 1)), 2.0 ** (wl - 1) - 1,
                             first_word(wl * 7 + fl))
    assert_same(got, torch.from_numpy(expected))


def np_muppet_scale(x: np.ndarray, bits: int) -> float:
    """MuPPET's scale ``2**floor(log2(min(|maxVal / max|, |minVal / min|)))``, 1 for an all-zero x."""
    hi, lo = float(x.max()), float(x.min())
    if hi == 0 and lo == 0:
        return 1.0
    with np.errstate(divide="ignore"):
        best = min(abs((2.0 ** (bits - 1) - 0.5) / hi), abs((-(2.0 ** (bits - 1)) - 0.5) / lo))
    return 2.0 ** math.floor(math.log2(best))


def test_dynamic_fixed_point_many_on_cpu_is_the_loop():
    """On CPU the grouped call is one dynamic_fixed_point per tensor: the same results and random draws."""
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(n, generator=g) * s for n, s in ((10, 0.01), (5000, 3.0), (1, 1.0))] + [torch.zeros(4)]
    for rounding, clamp in (("stochastic", False), ("stochastic", True), ("nearest", False)):
        a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        got = quant.dynamic_fixed_point_many(xs, 8, rounding, a, clamp=clamp)
        expected = [quant.dynamic_fixed_point(x, 8, rounding, generator=b, clamp=clamp) for x in xs]
        for y, e in zip(got, expected, strict=True):
            assert torch.equal(y, e)
        assert torch.equal(a.get_state(), b.get_state())
    outs = [torch.empty_like(x) for x in xs]
    assert all(y is o for y, o in zip(quant.dynamic_fixed_point_many(xs, 8, "nearest", outs=outs), outs))
    with pytest.raises(ValueError, match="outs has 1"):
        quant.dynamic_fixed_point_many(xs, 8, outs=outs[:1])


@pytest.mark.parametrize("clamp", [False, True])
def test_cpu_kernel_dynamic_fixed_point_equals_numpy_reference(clamp):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, 5, 5, generator=g) * torch.logspace(-3, 3, 16).reshape(-1, 1, 1, 1)
    x[4] = 0.0
    low, high = (-128.0, 127.0) if clamp else (-INF, INF)
    got = dynamic_fixed_point(x, 8, "stochastic", generator=torch.Generator().manual_seed(5), clamp=clamp)
    scale = np.float64(np_muppet_scale(x.numpy(), 8))
    assert_same(got, torch.from_numpy(np_stochastic(x.numpy(), scale, low, high, first_word(5))))
    got = dynamic_fixed_point(x, 8, "stochastic", per_sample=True, generator=torch.Generator().manual_seed(6),
                              clamp=clamp)
    scales = np.array([np_muppet_scale(xi, 8) for xi in x.numpy()]).reshape(-1, 1, 1, 1)
    assert_same(got, torch.from_numpy(np_stochastic(x.numpy(), scales, low, high, first_word(6))))


def test_cpu_kernel_is_independent_of_thread_count_and_draws_one_word():
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(fixed_point(x, 8, 4, generator=torch.Generator().manual_seed(1)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    # One call consumes exactly one 64-bit word of the generator, whatever the tensor's size.
    g = torch.Generator().manual_seed(1)
    fixed_point(x, 8, 4, generator=g)
    after = int(torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=g))
    ref = torch.Generator().manual_seed(1)
    torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=ref)
    assert after == int(torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=ref))


def test_slow_threading_layer_warns_once(monkeypatch):
    import numba

    assert quant.cpu_kernel_threading() in ("omp", "tbb", "workqueue")
    monkeypatch.setattr(quant, "_LAYER_CHECKED", False)
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", max(2, numba.config.NUMBA_NUM_THREADS))
    with pytest.warns(RuntimeWarning, match="workqueue"):
        fixed_point(torch.randn(10), 8, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed_point(torch.randn(10), 8, 4)  # once per process


def test_generator_draws_per_call_kernel_one_word_tensor_ops_one_per_element():
    x = torch.randn(1000)
    for kernel, words in ((True, 1), (False, 1000)):
        g = torch.Generator().manual_seed(0)
        with mock.patch.object(quant, "CPU_KERNEL", kernel):
            fixed_point(x, 8, 4, generator=g)
        ref = torch.Generator().manual_seed(0)
        if kernel:
            torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=ref)
        else:
            torch.rand(words, generator=ref)
        assert torch.equal(g.get_state(), ref.get_state())


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_saturation_inf_nan(rounding, cpu_path):
    # FixedPoint(8, 4): range [-8, 7.9375].  Values beyond, huge values and +-inf hit the ends;
    # values just beyond the ends (x*16 = 127.3 or -128.3) can only round to the end or past it.
    x = torch.tensor([7.95625, 8.0, 100.0, 3e38, INF, -8.01875, -8.5, -1e30, -INF, NAN] * 50)
    y = fixed_point(x, 8, 4, rounding, generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([7.9375] * 5 + [-8.0] * 4 + [NAN]).repeat(50)
    assert_same(y, expected)
    for wl, fl in [(32, 0), (32, 32), (1, 0), (25, 3)]:
        z = fixed_point(torch.tensor([INF, -INF, NAN]), wl, fl, rounding, generator=torch.Generator().manual_seed(0))
        t_max = float(torch.tensor(2.0 ** (wl - fl - 1) - 2.0**-fl, dtype=torch.float32))
        assert_same(z, torch.tensor([t_max, -(2.0 ** (wl - fl - 1)), NAN]))


# --------------------------------------------------------------------------------------------------
# dynamic fixed point (MuPPET)
# --------------------------------------------------------------------------------------------------
def test_dynamic_hand_computed_cases():
    # b = 8: maxVal = 127 + 0.5 = 127.5, minVal = -128 - 0.5 = -128.5.
    # x = [0.3, -1.7, 2.9, 0]: max 2.9, min -1.7.
    #   |127.5 / 2.9| = 43.97, |-128.5 / -1.7| = 75.59 -> rangeBest = 43.97, log2 = 5.46, sf = 5.
    #   x * 32 = [9.6, -54.4, 92.8, 0] -> round [10, -54, 93, 0] -> / 32 = [0.3125, -1.6875, 2.90625, 0].
    x = torch.tensor([0.3, -1.7, 2.9, 0.0])
    assert_same(dynamic_fixed_point(x, 8, "nearest"), torch.tensor([0.3125, -1.6875, 2.90625, 0.0]))
    # b = 4: maxVal = 7.5, minVal = -8.5.  x = [0.05, -0.02]:
    #   |7.5 / 0.05| = 150, |8.5 / 0.02| = 425 -> rangeBest 150, log2 = 7.23, sf = 7.
    #   x * 128 = [6.4, -2.56] -> [6, -3] -> [6/128, -3/128] = [0.046875, -0.0234375].
    x = torch.tensor([0.05, -0.02])
    assert_same(dynamic_fixed_point(x, 4, "nearest"), torch.tensor([0.046875, -0.0234375]))
    # Large values, negative sf.  b = 8, x = [1000, -3000]:
    #   |127.5 / 1000| = 0.1275, |128.5 / 3000| = 0.04283 -> rangeBest 0.04283, log2 = -4.55, sf = -5.
    #   x / 32 = [31.25, -93.75] -> [31, -94] -> * 32 = [992, -3008].
    x = torch.tensor([1000.0, -3000.0])
    assert_same(dynamic_fixed_point(x, 8, "nearest"), torch.tensor([992.0, -3008.0]))
    # All positive (min > 0 gives a large |minVal/min|).  b = 8, x = [1.01, 2]:
    #   |127.5 / 2| = 63.75, |128.5 / 1.01| = 127.2 -> rangeBest 63.75, log2 = 5.99, sf = 5.
    #   x * 32 = [32.32, 64] -> [32, 64] -> [1, 2].
    assert_same(dynamic_fixed_point(torch.tensor([1.01, 2.0]), 8, "nearest"), torch.tensor([1.0, 2.0]))
    # All negative (max < 0).  b = 6: maxVal 31.5, minVal -32.5.  x = [-0.5, -0.1]:
    #   |31.5 / -0.1| = 315, |-32.5 / -0.5| = 65 -> rangeBest 65, log2 = 6.02, sf = 6.
    #   x * 64 = [-32, -6.4] -> [-32, -6] -> [-0.5, -0.09375].
    assert_same(dynamic_fixed_point(torch.tensor([-0.5, -0.1]), 6, "nearest"), torch.tensor([-0.5, -0.09375]))
    # Ties go to even.  b = 8, x = [1.9921875, -0.1]  (1.9921875 = 127.5 / 64):
    #   |127.5 / 1.9921875| = 64 exactly, |128.5 / 0.1| = 1285 -> rangeBest 64, sf = 6.
    #   x * 64 = [127.5, -6.4] -> [128, -6] -> [2.0, -0.09375].  Code 128 = 2**(b-1): MuPPET does not clamp.
    x = torch.tensor([1.9921875, -0.1])
    assert_same(dynamic_fixed_point(x, 8, "nearest"), torch.tensor([2.0, -0.09375]))
    #   clamp=True saturates code 128 to 127: 127 / 64 = 1.984375.
    assert_same(dynamic_fixed_point(x, 8, "nearest", clamp=True), torch.tensor([1.984375, -0.09375]))
    assert_same(DynamicFixedPoint(8, clamp=True).quantize(x, "nearest"), torch.tensor([1.984375, -0.09375]))
    # Tiny values, large sf.  b = 8, x = [3e-6, -1e-6]:
    #   |127.5 / 3e-6| = 4.25e7, |128.5 / 1e-6| = 1.285e8 -> log2(4.25e7) = 25.34, sf = 25.
    #   x * 2**25 = [100.66, -33.55] -> [101, -34] -> [101, -34] * 2**-25.
    x = torch.tensor([3e-6, -1e-6])
    assert_same(dynamic_fixed_point(x, 8, "nearest"), torch.tensor([101 * 2.0**-25, -34 * 2.0**-25]))


def test_dynamic_stochastic_vs_nearest():
    # Same scale as the first hand case (sf = 5): stochastic codes are floor/ceil of x*32, unbiased.
    x = torch.tensor([0.3, -1.7, 2.9, 0.0, 1.0 / 64])
    n = 20_000
    draws = dynamic_fixed_point(x.expand(n, -1).contiguous(), 8, "stochastic", per_sample=True,
                                generator=torch.Generator().manual_seed(3))
    a = x.double() * 32
    code = draws.double() * 32
    assert bool(((code == a.floor()) | (code == a.ceil())).all())
    p = a - a.floor()
    se = torch.sqrt(p * (1 - p) / n) / 32
    assert bool(((draws.double().mean(0) - x.double()).abs() <= 4 * se + 1e-9).all())
    # Nearest is one of the two neighbours too, and both modes share the grid.
    near = dynamic_fixed_point(x, 8, "nearest").double() * 32
    assert bool(((near == a.floor()) | (near == a.ceil())).all())
    # A whole-tensor (not per-sample) stochastic call uses the same scale.
    one = dynamic_fixed_point(x, 8, "stochastic", generator=torch.Generator().manual_seed(4)).double() * 32
    assert bool(((one == a.floor()) | (one == a.ceil())).all())


def test_dynamic_no_clamp_reaches_one_code_beyond():
    # b = 8, sf = 6 (see the tie case above): x * 64 = [127.5, -128.5, 0.5].
    # Stochastic floor(127.5 + u) is 127 or 128 and floor(-128.5 + u) is -129 or -128, each half the time,
    # so MuPPET's unclamped quantizer produces codes 2**(b-1) = 128 and -2**(b-1) - 1 = -129.
    x = torch.tensor([127.5, -128.5, 0.5]) / 64
    n = 4000
    xs = x.expand(n, -1).contiguous()
    codes = dynamic_fixed_point(xs, 8, per_sample=True, generator=torch.Generator().manual_seed(0)) * 64
    assert set(codes[:, 0].unique().tolist()) == {127.0, 128.0}
    assert set(codes[:, 1].unique().tolist()) == {-129.0, -128.0}
    clamped = dynamic_fixed_point(xs, 8, per_sample=True, generator=torch.Generator().manual_seed(0), clamp=True) * 64
    assert clamped.max().item() == 127.0 and clamped.min().item() == -128.0
    assert set(clamped[:, 0].unique().tolist()) == {127.0}
    # Nearest: 127.5 -> 128 (even) overflows; -128.5 -> -128 (even) does not.
    assert_same(dynamic_fixed_point(x, 8, "nearest") * 64, torch.tensor([128.0, -128.0, 0.0]))
    assert_same(dynamic_fixed_point(x, 8, "nearest", clamp=True) * 64, torch.tensor([127.0, -128.0, 0.0]))


def test_dynamic_per_sample_scales():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, 4, generator=g)
    x[0] *= 1e-3
    x[1] *= 1e3
    x[2] = 0.0  # an all-zero sample comes back unchanged
    x[3] = x[3].abs()
    for bits in (4, 8, 16):
        per = dynamic_fixed_point(x, bits, "nearest", per_sample=True)
        assert per.shape == x.shape
        for i in range(x.shape[0]):
            assert_same(per[i], dynamic_fixed_point(x[i], bits, "nearest"))
        assert_same(per[2], torch.zeros(3, 4, 4))
        # One per-tensor scale is set by sample 1 and flushes sample 0 (|x| ~ 1e-3) to zero at 8 bits.
        whole = dynamic_fixed_point(x, bits, "nearest")
        assert not torch.equal(whole[0], per[0])
    assert_same(DynamicFixedPoint(8, per_sample=True).quantize(x, "nearest"),
                dynamic_fixed_point(x, 8, "nearest", per_sample=True))
    # Stochastic per-sample: each slice lies on its own 2**-sf grid, within one step of x.
    y = dynamic_fixed_point(x, 8, "stochastic", per_sample=True, generator=torch.Generator().manual_seed(1))
    for i in range(x.shape[0]):
        xi = x[i].double()
        m_hi, m_lo = xi.max().item(), xi.min().item()
        if m_hi == 0 and m_lo == 0:
            assert_same(y[i], x[i])
            continue
        r = min(abs(127.5 / m_hi) if m_hi else INF, abs(-128.5 / m_lo) if m_lo else INF)
        sf = math.floor(math.log2(r))
        a = xi * 2.0**sf
        code = y[i].double() * 2.0**sf
        assert bool(((code == a.floor()) | (code == a.ceil())).all())
    # A non-contiguous input (per-sample reshape copies) gives the same result.
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)
    assert not xt.is_contiguous()
    assert_same(dynamic_fixed_point(xt, 8, "nearest", per_sample=True), dynamic_fixed_point(x, 8, "nearest", per_sample=True))


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_dynamic_all_zero_and_empty(rounding):
    z = torch.zeros(4, 7)
    for per_sample in (False, True):
        assert_same(dynamic_fixed_point(z, 8, rounding, per_sample=per_sample, generator=torch.Generator()), z)
    e = torch.empty(0, 3)
    assert dynamic_fixed_point(e, 8, rounding, per_sample=True).shape == (0, 3)
    assert_same(dynamic_fixed_point(torch.tensor(0.0), 8, rounding), torch.tensor(0.0))
    assert_same(dynamic_fixed_point(torch.tensor(1.5), 8, "nearest"), torch.tensor(1.5))  # 0-d, per tensor


def test_dynamic_inf_nan_make_nan():
    # inf sets rangeBest = 0, 2**sf = 0 and the (per-sample) output NaN, as in MuPPET (a diverged run).
    for rounding in ROUNDING_MODES:
        for bad in (INF, -INF, NAN):
            y = dynamic_fixed_point(torch.tensor([bad, 1.0, -2.0, 0.0]), 8, rounding)
            assert bool(y.isnan().all()), (bad, y)
            x = torch.tensor([[bad, 1.0], [0.5, -0.25]])
            y = dynamic_fixed_point(x, 8, rounding, per_sample=True)
            assert bool(y[0].isnan().all())
            assert not bool(y[1].isnan().any())
            if rounding == "nearest":
                assert_same(y[1], dynamic_fixed_point(x[1], 8, rounding))


def test_dynamic_per_sample_0d_raises():
    with pytest.raises(ValueError, match="per_sample"):
        dynamic_fixed_point(torch.tensor(1.0), 8, per_sample=True)
    with pytest.raises(ValueError, match="per_sample"):
        DynamicFixedPoint(8, per_sample=True).quantize(torch.tensor(1.0))


# --------------------------------------------------------------------------------------------------
# dtype and device
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_dtype_and_device_preserved(dtype, rounding, cpu_path, device="cpu"):
    check_dtype_and_device(dtype, rounding, device)


def check_dtype_and_device(dtype, rounding, device):
    g0 = torch.Generator().manual_seed(0)
    base = torch.randn(257, generator=g0) * 4
    base[:4] = torch.tensor([INF, -INF, NAN, 100.0])
    x = base.to(dtype=dtype, device=device)
    gen = lambda: torch.Generator(device=device).manual_seed(11)  # noqa: E731
    # FixedPoint(8, 4): every value of the format is exact in float16 and bfloat16.
    y = fixed_point(x, 8, 4, rounding, gen())
    assert y.dtype == dtype and y.device == x.device
    assert_same(y[:4].float().cpu(), torch.tensor([7.9375, -8.0, NAN, 7.9375]))
    if dtype in (torch.float16, torch.bfloat16):
        # computed in float32, on the same random stream as a float32 input
        assert_same(y, fixed_point(x.float(), 8, 4, rounding, gen()).to(dtype))
    elif dtype == torch.float64 and rounding == "nearest":
        assert_same(y.cpu(), torch.from_numpy(np_fixed_nearest(x.cpu().numpy(), 8, 4)))
    codes = y[4:].double() * 16
    lo, hi = codes_bounds(x[4:], 8, 4)
    assert bool(((codes == lo) | (codes == hi)).all())
    d = dynamic_fixed_point(x[4:], 8, rounding, generator=gen())
    assert d.dtype == dtype and d.device == x.device
    if dtype in (torch.float16, torch.bfloat16):
        assert_same(d, dynamic_fixed_point(x[4:].float(), 8, rounding, generator=gen()).to(dtype))
    dp = dynamic_fixed_point(x[4:].reshape(-1, 1, 1), 8, rounding, per_sample=True, generator=gen())
    assert dp.dtype == dtype and dp.device == x.device and dp.shape == (253, 1, 1)
    assert bool(dynamic_fixed_point(x, 8, rounding, generator=gen()).isnan().all())  # inf inside


# --------------------------------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_out_argument(dtype, rounding, cpu_path):
    x = (torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    expected = fixed_point(x, 8, 4, rounding, torch.Generator().manual_seed(1))
    out = torch.full_like(x, 12345.0)
    r = fixed_point(x, 8, 4, rounding, torch.Generator().manual_seed(1), out=out)
    assert r is out or r.data_ptr() == out.data_ptr()
    assert_same(out, expected)
    out2 = torch.empty_like(x)
    r2 = FixedPoint(8, 4).quantize(x, rounding, torch.Generator().manual_seed(1), out=out2)
    assert r2.data_ptr() == out2.data_ptr()
    assert_same(out2, expected)
    # in place: out=x
    xc = x.clone()
    fixed_point(xc, 8, 4, rounding, torch.Generator().manual_seed(1), out=xc)
    assert_same(xc, expected)
    # dynamic fixed point format object
    out3 = torch.empty_like(x)
    r3 = DynamicFixedPoint(8).quantize(x, rounding, torch.Generator().manual_seed(1), out=out3)
    assert r3.data_ptr() == out3.data_ptr()
    assert_same(out3, dynamic_fixed_point(x, 8, rounding, generator=torch.Generator().manual_seed(1)))


# --------------------------------------------------------------------------------------------------
# autograd
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [FixedPoint(8, 4), DynamicFixedPoint(8), DynamicFixedPoint(6, per_sample=True)])
def test_quantize_ste(fmt):
    x = (torch.randn(6, 10, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_()
    y = quantize_ste(x, fmt, "nearest")
    assert_same(y.detach(), fmt.quantize(x.detach(), "nearest"))
    assert y.requires_grad
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
    (y * w).sum().backward()
    assert_same(x.grad, w)  # straight through, unquantized
    ys = quantize_ste(x, fmt, "stochastic", torch.Generator().manual_seed(5))
    assert_same(ys.detach(), fmt.quantize(x.detach(), "stochastic", torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("fmt", [FixedPoint(8, 4), FixedPoint(6, 10), DynamicFixedPoint(8),
                                 DynamicFixedPoint(6, per_sample=True)])
def test_quantize_gradient(fmt):
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)).requires_grad_()
    y = quantize_gradient(x, fmt, "nearest")
    assert_same(y.detach(), x.detach())  # identity forward
    assert y.requires_grad
    g = torch.randn(6, 10, generator=torch.Generator().manual_seed(1)) * 0.05
    y.backward(g)
    assert_same(x.grad, fmt.quantize(g, "nearest"))
    assert not torch.equal(x.grad, g)
    # Stochastic, with a generator: reproducible and equal to quantizing the gradient directly.
    x.grad = None
    quantize_gradient(x, fmt, "stochastic", torch.Generator().manual_seed(9)).backward(g)
    assert_same(x.grad, fmt.quantize(g, "stochastic", torch.Generator().manual_seed(9)))
    # Non-contiguous incoming gradient.
    x2 = torch.randn(10, 6, generator=torch.Generator().manual_seed(2)).requires_grad_()
    quantize_gradient(x2, fmt, "nearest").backward(g.t())
    assert_same(x2.grad, fmt.quantize(g.t().contiguous(), "nearest"))


def test_quantizers_compose_in_a_graph():
    """Activation STE followed by a gradient quantizer: grad is quantized once, by the gradient quantizer."""
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    h = quantize_gradient(quantize_ste(x, FixedPoint(8, 4), "nearest"), FixedPoint(8, 6), "nearest")
    g = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    (h * g).sum().backward()
    assert_same(x.grad, fixed_point(g, 8, 6, "nearest"))


# --------------------------------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wl,fl,name", [
    (0, 0, "word_length"), (33, 0, "word_length"), (8.0, 4, "word_length"), (True, 0, "word_length"),
    ("8", 4, "word_length"), (None, 4, "word_length"),
    (8, -1, "fractional_length"), (8, 33, "fractional_length"), (8, 4.0, "fractional_length"),
    (8, False, "fractional_length"),
])
def test_invalid_fixed_point_format(wl, fl, name):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=name) as e1:
        FixedPoint(wl, fl)
    with pytest.raises(ValueError, match=name) as e2:
        fixed_point(x, wl, fl)
    bad = wl if name == "word_length" else fl
    for e in (e1, e2):
        assert repr(bad) in str(e.value) or str(bad) in str(e.value)
        assert ("1, 32" in str(e.value)) or ("0, 32" in str(e.value))  # the allowed range


@pytest.mark.parametrize("bits", [0, 1, 33, 8.0, True, "8"])
def test_invalid_bits(bits):
    with pytest.raises(ValueError, match="bits") as e1:
        DynamicFixedPoint(bits)
    with pytest.raises(ValueError, match="bits") as e2:
        dynamic_fixed_point(torch.zeros(3), bits)
    for e in (e1, e2):
        assert repr(bits) in str(e.value) and "2, 32" in str(e.value)


@pytest.mark.parametrize("rounding", ["Nearest", "round", "", None, "stochastic "])
def test_invalid_rounding(rounding):
    x = torch.zeros(3)
    for call in (lambda: fixed_point(x, 8, 4, rounding), lambda: dynamic_fixed_point(x, 8, rounding),
                 lambda: FixedPoint(8, 4).quantize(x, rounding), lambda: DynamicFixedPoint(8).quantize(x, rounding)):
        with pytest.raises(ValueError, match="rounding") as e:
            call()
        assert repr(rounding) in str(e.value)


@pytest.mark.parametrize("x", [torch.arange(3), torch.zeros(3, dtype=torch.int8), torch.ones(3, dtype=torch.bool),
                               torch.zeros(3, dtype=torch.complex64)])
def test_non_float_tensor_raises_type_error(x):
    for call in (lambda: fixed_point(x, 8, 4), lambda: fixed_point(x, 8, 4, "nearest"),
                 lambda: dynamic_fixed_point(x, 8), lambda: quantize_ste(x, FixedPoint(8, 4))):
        with pytest.raises(TypeError, match="dtype"):
            call()


@pytest.mark.parametrize("x", [[1.0, 2.0], 1.5, np.ones(3, dtype=np.float32), None])
def test_non_tensor_raises_type_error(x):
    with pytest.raises(TypeError, match="torch.Tensor"):
        fixed_point(x, 8, 4)
    with pytest.raises(TypeError, match="torch.Tensor"):
        dynamic_fixed_point(x, 8)


# --------------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("wl,fl", NEAREST_FORMATS)
def test_cuda_nearest_matches_cpu(wl, fl):
    for x in (random_float32_bits(200_000, seed=wl * 7 + fl), dense_ties(wl, fl)):
        cpu = fixed_point(x, wl, fl, "nearest")
        gpu = fixed_point(x.cuda(), wl, fl, "nearest")
        assert gpu.device.type == "cuda"
        assert_same(gpu.cpu(), cpu)
        assert_same(fixed_point(x.double().cuda(), wl, fl, "nearest").cpu(), fixed_point(x.double(), wl, fl, "nearest"))


@needs_cuda
def test_cuda_stochastic_generator():
    x = (torch.linspace(-9, 9, 100_001) + 1e-3).cuda()
    g = lambda s: torch.Generator(device="cuda").manual_seed(s)  # noqa: E731
    a = fixed_point(x, 8, 4, "stochastic", g(1))
    assert a.device == x.device
    assert torch.equal(a, fixed_point(x, 8, 4, "stochastic", g(1)))
    assert not torch.equal(a, fixed_point(x, 8, 4, "stochastic", g(2)))
    lo, hi = codes_bounds(x.cpu(), 8, 4)
    code = a.cpu().double() * 16
    assert bool(((code == lo) | (code == hi)).all())
    n = 20_000
    v = torch.tensor([0.01, 0.5, -3.3, 7.9], device="cuda")
    mean = fixed_point(v.expand(n, -1).contiguous(), 8, 4, "stochastic", g(3)).double().mean(0).cpu()
    p = torch.remainder(v.cpu().double() * 16, 1.0)
    se = torch.sqrt(p * (1 - p) / n) / 16
    assert bool(((mean - v.cpu().double()).abs() <= 4 * se + 1e-9).all())
    d = dynamic_fixed_point(x.reshape(1, -1), 8, "stochastic", per_sample=True, generator=g(4))
    assert d.device == x.device
    assert torch.equal(d, dynamic_fixed_point(x.reshape(1, -1), 8, "stochastic", per_sample=True, generator=g(4)))


@needs_cuda
def test_cuda_dynamic_matches_cpu():
    x = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, 8)[:, None, None, None]
    x[5] = 0
    for per_sample in (False, True):
        for bits in (4, 8, 16):
            assert_same(dynamic_fixed_point(x.cuda(), bits, "nearest", per_sample=per_sample).cpu(),
                        dynamic_fixed_point(x, bits, "nearest", per_sample=per_sample))


@needs_cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_cuda_dtype_and_device_preserved(dtype, rounding):
    check_dtype_and_device(dtype, rounding, "cuda")


@needs_cuda
def test_cuda_generator_on_wrong_device_raises():
    with pytest.raises(ValueError, match="generator"):
        fixed_point(torch.zeros(3), 8, 4, "stochastic", torch.Generator(device="cuda"))
    with pytest.raises(ValueError, match="generator"):
        fixed_point(torch.zeros(3, device="cuda"), 8, 4, "stochastic", torch.Generator())
    with pytest.raises(ValueError, match="generator"):
        dynamic_fixed_point(torch.ones(3, device="cuda"), 8, "stochastic", generator=torch.Generator())


@needs_cuda
def test_cuda_autograd():
    x = torch.randn(4, 8, device="cuda").requires_grad_()
    g = torch.randn(4, 8, device="cuda") * 0.1
    quantize_gradient(quantize_ste(x, FixedPoint(8, 4), "nearest"), FixedPoint(8, 6), "nearest").backward(g)
    assert x.grad.device == x.device
    assert_same(x.grad, fixed_point(g, 8, 6, "nearest"))
