"""AdaPT's pure rules (adapt.heuristic) against values computed by hand from docs/method.md §1.4.

Every expected value is derived in the comment next to it from the released formula.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adapt.heuristic import (
    G_TEST,
    KL_ALPHA,
    KL_EPSILON,
    gradient_diversity,
    information_loss,
    loss_free_threshold,
    next_lookback,
    next_resolution,
    next_strategy,
    push_down,
    push_up,
)
from adapt.quant import fixed_point


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def grid(k, half_range=1.0):
    """Every multiple of 2**-k in [-half_range, half_range]: N = 2*half_range*2**k + 1 values.

    With ``resolution = N`` histogram bins over [min, max] each value has a bin of its own
    (bin width 2*half_range/N is below the spacing 2**-k), so *any* value that moves changes
    the histogram.  The tensor is exactly representable at FL >= k (stochastic rounding of
    an on-grid value is the identity) and needs WL >= FL + 2 to hold +half_range = 1.
    """
    n = int(half_range * 2 ** k)
    return torch.arange(-n, n + 1, dtype=torch.float32) * 2.0 ** -k


# --------------------------------------------------------------------------- gradient diversity
def test_gradient_diversity_hand_values():
    # ||(3, 4)|| = 5, so GD = 4 / 5 = 0.8 (float32).
    assert gradient_diversity(4, torch.tensor([3.0, 4.0])) == pytest.approx(0.8, rel=1e-7)
    # Four orthonormal unit gradients: S = (1, 1, 1, 1), ||S|| = 2, GD = 4 / 2 = 2.
    assert gradient_diversity(4, torch.ones(4)) == 2.0


def test_gradient_diversity_edges():
    # GD = 1: three identical unit gradients (0.6, 0.8): S = (1.8, 2.4), ||S|| = 3, GD = 3 / 3.
    g = torch.tensor([0.6, 0.8])
    assert gradient_diversity(3, 3 * g) == pytest.approx(1.0, rel=1e-6)
    # GD = inf: the gradients cancel, ||S|| = 0.
    assert gradient_diversity(2, torch.zeros(5)) == math.inf
    # count 0 and S = 0: 0 / 0.
    assert math.isnan(gradient_diversity(0, torch.zeros(3)))
    # Unnormalized gradients: pass sum ||g_k|| (= 5 + 5) instead of the count; S = (6, 8) -> 10 / 10.
    assert gradient_diversity(10.0, torch.tensor([6.0, 8.0])) == pytest.approx(1.0, rel=1e-6)


def test_gradient_diversity_validation():
    with pytest.raises(ValueError, match="count"):
        gradient_diversity(-1, torch.ones(2))
    with pytest.raises(ValueError, match="grad_sum"):
        gradient_diversity(1, [1.0, 2.0])


# --------------------------------------------------------------------------- lookback
@pytest.mark.parametrize("lookback, gd, lo, hi, m, expected", [
    # LB_new = ceil(clip(100 / 2, 25, 100)) = 50; ceil(50 * 0.33 + 25 * 0.67) = ceil(16.5 + 16.75) = 34
    (25, 2.0, 25, 100, 0.33, 34),
    # momentum 1: LB = LB_new = 50
    (25, 2.0, 25, 100, 1.0, 50),
    # momentum 0: LB keeps its value
    (25, 2.0, 25, 100, 0.0, 25),
    # 100 / 3 = 33.33 -> 34; ceil(34 * 0.5 + 30 * 0.5) = 32
    (30, 3.0, 25, 100, 0.5, 32),
    # GD = 1 (identical gradients): 100 / 1 = 100, the upper bound
    (25, 1.0, 25, 100, 1.0, 100),
    # GD = 8: 100 / 8 = 12.5 is clipped to the lower bound 25
    (60, 8.0, 25, 100, 1.0, 25),
    # GD = inf: 100 / inf = 0 -> 25; ceil(25 * 0.33 + 40 * 0.67) = ceil(8.25 + 26.8) = 36
    (40, math.inf, 25, 100, 0.33, 36),
    # GD beyond float32's range: inf in float32, 100 / inf = 0 -> MIN_LB
    (30, 1e300, 25, 100, 1.0, 25),
    # GD = 0 is not > 0: LB_new = MAX_LB
    (25, 0.0, 25, 100, 1.0, 100),
    # GD = nan is not > 0 either
    (25, float("nan"), 25, 100, 1.0, 100),
    # at the upper bound with the blend: ceil(100 * 0.9 + 100 * 0.1) = 100
    (100, 1.0, 25, 100, 0.9, 100),
])
def test_next_lookback_hand_values(lookback, gd, lo, hi, m, expected):
    assert next_lookback(lookback, gd, lo, hi, m) == expected


def test_next_lookback_is_stationary_at_its_target():
    # lb_new == lb (forced by MIN_LB == MAX_LB == lb) gives lb back for the configs' momenta:
    # the float64 blend lb*m + lb*(1-m) never rounds above lb there, so ceil does not creep.
    for m in (0.33, 0.9, 1.0):
        for lb in range(1, 301):
            assert next_lookback(lb, 2.0, lb, lb, m) == lb


def test_next_lookback_divides_in_float32():
    # GD = float32(10/3) = 3.3333332538604736.  MAX_LB / GD: in float64 30.0000007 (ceil 31), in float32
    # exactly 30.0 (ceil 30).  The release divides a float32 tensor, so LB_new = 30.
    gd = 3.3333332538604736
    assert float(np.float32(gd)) == gd and 100.0 / gd > 30.0
    assert float(np.float32(100.0) / np.float32(gd)) == 30.0
    assert next_lookback(40, gd, 25, 100, 1.0) == 30


def test_next_lookback_validation():
    with pytest.raises(ValueError, match="lookback"):
        next_lookback(-1, 2.0, 25, 100, 0.5)
    with pytest.raises(ValueError, match="min_lookback"):
        next_lookback(30, 2.0, 100, 25, 0.5)
    with pytest.raises(ValueError, match="min_lookback"):
        next_lookback(30, 2.0, -5, 25, 0.5)
    with pytest.raises(ValueError, match="momentum"):
        next_lookback(30, 2.0, 25, 100, 1.5)
    with pytest.raises(ValueError, match="gd"):
        next_lookback(30, -2.0, 25, 100, 0.5)


# --------------------------------------------------------------------------- resolution
@pytest.mark.parametrize("res, lb, expected", [
    (77, 100, 78),   # LB == MAX_LB: res + 1
    (150, 100, 150),  # ... clipped at MAX_RES
    (60, 25, 59),    # LB == MIN_LB: res - 1
    (50, 25, 50),    # ... clipped at MIN_RES
    (77, 50, 77),    # LB strictly inside: unchanged
    (20, 50, 20),    # unchanged even outside [MIN_RES, MAX_RES] (no clip unless LB is at a bound)
])
def test_next_resolution_hand_values(res, lb, expected):
    assert next_resolution(res, lb, 25, 100, 50, 150) == expected


def test_next_resolution_both_branches_when_bounds_coincide():
    # MIN_LB == MAX_LB == LB: +1 then -1.  From 60: 61 then 60.  From MAX_RES 150: clip(151) = 150, then 149.
    assert next_resolution(60, 30, 30, 30, 50, 150) == 60
    assert next_resolution(150, 30, 30, 30, 50, 150) == 149


def test_next_resolution_validation():
    with pytest.raises(ValueError, match="min_resolution"):
        next_resolution(60, 30, 25, 100, 150, 50)
    with pytest.raises(ValueError, match="min_lookback"):
        next_resolution(60, 30, 100, 25, 50, 150)
    with pytest.raises(ValueError, match="resolution"):
        next_resolution(0, 30, 25, 100, 50, 150)
    with pytest.raises(ValueError, match="lookback"):
        next_resolution(60, -3, 25, 100, 50, 150)


# --------------------------------------------------------------------------- information loss
def test_information_loss_reference_hand_value():
    # w = (0, 1, 2, 3), WL = 2, FL = 0: range [-2, 1], so 2 and 3 saturate to 1 (integers are
    # on the grid: stochastic rounding leaves them); w_hat = (0, 1, 1, 1).
    # 3 bins over [0, 3]:  P = (1, 1, 2) / 4,  Q = (1, 3, 0) / 4.
    # (1/3) * [e^.25 (.25 - .25) + e^.75 (.75 - .25) + e^0 (0 - .5)] = (1/3)(1.0585000 - .5) = 0.1861667
    w = torch.tensor([0.0, 1.0, 2.0, 3.0])
    expected = (math.exp(0.75) * 0.5 - 0.5) / 3
    assert information_loss(w, 2, 0, 3, generator=gen()) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.1861667, abs=1e-7)


def test_information_loss_reference_drops_values_outside_the_float_range():
    # w = (0, 0.3), WL 4, FL 0: 0.3 rounds to 0 or to 1; either way Q over [0, 0.3] with 2 bins
    # is (1, 0) (a 1 falls outside and is dropped; a 0 joins the first bin), P = (.5, .5):
    # (1/2) * [e^1 (1 - .5) + e^0 (0 - .5)] = (1/2)(1.3591409 - .5) = 0.4295705
    for seed in range(5):
        assert information_loss(torch.tensor([0.0, 0.3]), 4, 0, 2, generator=gen(seed)) == pytest.approx(
            0.4295705, abs=1e-6)
    # All quantized values outside [0.1, 0.2]: sum(Q) = 0 and the value is nan ("no loss" for the test).
    assert math.isnan(information_loss(torch.tensor([0.1, 0.2]), 4, 0, 2, generator=gen()))


def test_information_loss_reference_is_the_released_expression():
    # Random weights: compare with (1/res) sum exp(Q)(Q - P) computed here from the same w_hat.
    # It is not a divergence: at a fine step (FL 9) a few values cross bin edges and the value
    # comes out negative for some inputs (3 of these 20).
    signs = set()
    for seed in range(20):
        w = torch.randn(300, generator=gen(100 + seed)) * 0.1
        value = information_loss(w, 16, 9, 20, generator=gen(seed))
        w_hat = fixed_point(w, 16, 9, "stochastic", gen(seed))
        p = np.histogram(w.numpy(), bins=20, range=(float(w.min()), float(w.max())))[0].astype(float)
        q = torch.histc(w_hat, 20, float(w.min()), float(w.max())).double().numpy()
        p, q = p / p.sum(), q / q.sum()
        assert value == pytest.approx(float(np.sum(np.exp(q) * (q - p)) / 20), abs=1e-6)
        signs.add(value > 0)
    assert signs == {True, False}


def test_information_loss_zero_when_quantization_is_exact():
    w = grid(5)
    for variant in ("reference", "corrected"):
        assert information_loss(w, 12, 5, w.numel(), variant, gen()) == 0.0


def test_information_loss_corrected_hand_value():
    # Same w, w_hat as the reference hand value; common range [min(w, w_hat), max(w, w_hat)] = [0, 3]:
    # P = (.25, .25, .5), Q = (.25, .75, 0), smoothed (p + e) / (1 + 3e) with e = 1e-10:
    # D = .25 log(.25/.75) + .5 log(.5 / 1e-10) = -0.2746531 + 11.1663519 = 10.8916988
    w = torch.tensor([0.0, 1.0, 2.0, 3.0])
    value = information_loss(w, 2, 0, 3, "corrected", gen())
    assert value == pytest.approx(0.25 * math.log(1 / 3) + 0.5 * math.log(0.5 / KL_EPSILON), rel=1e-7)
    assert value == pytest.approx(10.8916988, rel=1e-7)


def test_information_loss_corrected_counts_saturated_values():
    # w = (-4, 0, 4) at WL 3, FL 0 (range [-4, 3]): 4 saturates to 3.  Over the common range
    # [-4, 4] with 2 bins nothing changes bins, so D = 0; the reference range is the same here.
    w = torch.tensor([-4.0, 0.0, 4.0])
    assert information_loss(w, 3, 0, 2, "corrected", gen()) == 0.0
    # With 16 bins (width 0.5) 4 (last bin [3.5, 4]) moves to 3 (bin [3, 3.5)): a loss.
    assert information_loss(w, 3, 0, 16, "corrected", gen()) > 0


def test_information_loss_validation():
    w = torch.ones(4)
    for kwargs, name in [(dict(wl=0), "wl"), (dict(wl=33), "wl"), (dict(fl=-1), "fl"), (dict(fl=33), "fl"),
                         (dict(resolution=0), "resolution"), (dict(variant="exact"), "variant")]:
        args = dict(w=w, wl=8, fl=4, resolution=10)
        args.update(kwargs)
        with pytest.raises(ValueError, match=name):
            information_loss(**args)
    with pytest.raises(ValueError, match="w"):
        information_loss(torch.ones(0), 8, 4, 10)


# --------------------------------------------------------------------------- push down
def test_push_down_reference_probes_the_lower_bound_and_returns_the_lower_bracket():
    # Values on the 2^-6 grid in [-1, 1], one bin each (129 bins).  Loss iff FL < 6 or +1 saturates
    # across a bin (WL <= FL + 1 at FL = 6, WL <= FL at FL > 6).  Start (WL, FL) = (24, 16).
    # FL loop, lo=4, hi=16:  mid=10, probe lo=4: loss -> lo=10;  mid=13, probe 10: none -> hi=13;
    #                        mid=12, probe 10 -> hi=12;  mid=11, probe 10 -> hi=11;  FL' = lo = 10
    #   (the smallest loss-free FL is 6).
    # WL loop at FL'=10, lo=10, hi=24:  mid=17 none -> hi=17; mid=14 -> 14; mid=12 -> 12; mid=11 (+1 saturates
    #   to 1 - 2^-10, same bin) -> hi=11;  WL' = lo = 10, never tested, and lossy (range [-.5, .5)).
    w = grid(6)
    assert push_down(w, 24, 16, w.numel(), generator=gen()) == (10, 10)
    assert information_loss(w, 10, 10, w.numel(), generator=gen()) > 0  # the returned format loses information
    # The corrected variant: the smallest loss-free FL at WL 24 is 6; at FL 6, WL 7 saturates +1 to the
    # neighbouring grid value (another bin), WL 8 holds it: (8, 6).
    assert push_down(w, 24, 16, w.numel(), "corrected", generator=gen()) == (8, 6)


def test_push_down_reference_on_a_coarse_grid():
    # 2^-3 grid (17 values, 17 bins).  FL loop: probe 4 (no loss) every time: hi 16 -> 10 -> 7 -> 6 -> 5, FL' = 4.
    # WL loop at FL 4, lo=4, hi=24: 14, 9, 7, 6, 5 all loss-free (WL 5: +1 -> 0.9375, same last bin) -> WL' = 4.
    w = grid(3)
    assert push_down(w, 24, 16, w.numel(), generator=gen()) == (4, 4)
    # corrected: FL: lo=3 (sentinel), hi=16: mid 10, 7, 5, 4 all loss-free -> FL = 4 (the floor; 3 is never tried);
    # WL: lo=3, hi=24: 14, 9, 6, 5 loss-free, 4 lossy (range [-.5, .5)) -> WL = 5.
    assert push_down(w, 24, 16, w.numel(), "corrected", generator=gen()) == (5, 4)


def test_push_down_fl_at_or_below_the_floor():
    w = grid(6)
    n = w.numel()
    # Reference, FL = 4: the FL loop is empty (range(0)), FL' = 4.  WL loop lo=4, hi=8: mid 6 lossy (FL 4 < 6)
    # -> lo=6; mid 7 lossy -> lo=7: (7, 4).
    assert push_down(w, 8, 4, n, generator=gen()) == (7, 4)
    # Reference, FL = 2 < floor: FL' = 4 (PushDown *raises* FL), then the same WL loop: (7, 4).
    assert push_down(w, 8, 2, n, generator=gen()) == (7, 4)
    # Corrected never raises: FL 2 stays; WL: lo=1, hi=8: 5 lossy, 7 lossy -> 8 (unchanged).
    assert push_down(w, 8, 2, n, "corrected", generator=gen()) == (8, 2)
    # Corrected at the floor: FL 4 stays, WL 6, 7 lossy -> 8.
    assert push_down(w, 8, 4, n, "corrected", generator=gen()) == (8, 4)
    # fl_floor is a parameter: with floor 6 the reference FL loop starts at lo=6 (loss-free probes): FL' = 6.
    assert push_down(w, 24, 16, n, fl_floor=6, generator=gen())[1] == 6


def test_push_down_options_one_by_one():
    w = grid(6)
    n = w.numel()
    # Reference with the mid probe only: FL lo=4, hi=16: mid 10 none -> hi=10; mid 7 none -> 7; mid 6 none -> 6;
    # mid 5 lossy -> lo=5; FL' = lo = 5 (the lower bracket: lossy).  WL at FL 5 loses at every WL
    # (FL 5 < 6): lo=5, hi=24: mid 15 -> lo=15; 20 -> 20; 22 -> 22; 23 -> 23: (23, 5).
    assert push_down(w, 24, 16, n, probe="mid", generator=gen()) == (23, 5)
    # Mid probe + first-loss-free return = the corrected search.
    assert push_down(w, 24, 16, n, probe="mid", bisection_return="first_loss_free", generator=gen()) == (8, 6)
    # Corrected with the reference KL expression: same answer on this tensor (uniform P: the
    # reference value is > 0 exactly when the histogram changes).
    assert push_down(w, 24, 16, n, "corrected", kl="reference", generator=gen()) == (8, 6)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(4, 8), extra_fl=st.integers(0, 4), extra_wl=st.integers(0, 6), seed=st.integers(0, 2 ** 31))
def test_push_down_corrected_finds_the_minimal_loss_free_format(k, extra_fl, extra_wl, seed):
    # On the 2^-k grid in [-1, 1] the minimal loss-free format is FL = k, WL = k + 2.
    w = grid(k)
    fl = k + extra_fl
    wl = fl + 2 + extra_wl
    assert push_down(w, wl, fl, w.numel(), "corrected", generator=gen(seed)) == (k + 2, k)


@settings(max_examples=25, deadline=None)
@given(wl=st.integers(1, 32), fl=st.integers(0, 32), seed=st.integers(0, 2 ** 31))
def test_push_down_corrected_never_raises(wl, fl, seed):
    w = torch.randn(64, generator=gen(seed))
    new_wl, new_fl = push_down(w, wl, fl, 16, "corrected", generator=gen(seed))
    assert new_fl <= fl and new_wl <= max(wl, 1)
    assert new_fl >= min(fl, 4)


def test_push_down_validation():
    w = grid(3)
    for kwargs, name in [(dict(wl=0), "wl"), (dict(fl=40), "fl"), (dict(resolution=0), "resolution"),
                         (dict(variant="x"), "variant"), (dict(fl_floor=33), "fl_floor"),
                         (dict(probe="hi"), "probe"), (dict(bisection_return="upper"), "bisection_return"),
                         (dict(kl="js"), "kl")]:
        args = dict(w=w, wl=8, fl=4, resolution=10)
        args.update(kwargs)
        with pytest.raises(ValueError, match=name):
            push_down(**args)


# --------------------------------------------------------------------------- the loss-free threshold
# Independent of scipy: chi-square with 1 degree of freedom is Z^2, so its upper alpha-quantile is
# z_{alpha/2}^2 (z_0.025 = 1.959963984540054, z_0.005 = 2.5758293035489004); with 2 degrees of freedom
# the survival function is exp(-x/2), so the quantile is -2 ln(alpha).
@pytest.mark.parametrize("n, k, alpha, expected", [
    (1000, 2, 0.05, 1.959963984540054 ** 2 / 2000),      # 3.8414588 / 2000 = 1.9207e-3
    (1, 2, 0.05, 1.959963984540054 ** 2 / 2),
    (500, 2, 0.01, 2.5758293035489004 ** 2 / 1000),
    (1000, 3, 0.05, -2 * math.log(0.05) / 2000),          # 5.9914645 / 2000
    (10, 3, 0.2, -2 * math.log(0.2) / 20),
    (7, 1, 0.05, 0.0),                                    # one bin: D_KL = 0 exactly, threshold 0
])
def test_loss_free_threshold_hand_values(n, k, alpha, expected):
    assert loss_free_threshold(n, k, alpha) == pytest.approx(expected, rel=1e-12, abs=0)


def test_loss_free_threshold_default_and_monotonicity():
    assert KL_ALPHA == 0.05 and G_TEST == "g_test"
    assert loss_free_threshold(1000, 2) == loss_free_threshold(1000, 2, 0.05)
    # Wilson-Hilferty: chi2_{k-1} upper quantile ~ d (1 - 2/(9d) + z sqrt(2/(9d)))^3, d = k - 1 (k = 100).
    d, z = 99, 1.6448536269514722
    assert loss_free_threshold(10 ** 4, 100) == pytest.approx(d * (1 - 2 / (9 * d) + z * math.sqrt(2 / (9 * d))) ** 3
                                                             / 2e4, rel=1e-3)
    assert loss_free_threshold(100, 50) > loss_free_threshold(1000, 50)          # more values: finer
    assert loss_free_threshold(1000, 100) > loss_free_threshold(1000, 50)        # more bins: more noise
    assert loss_free_threshold(1000, 50, 0.01) > loss_free_threshold(1000, 50, 0.05)


def test_loss_free_threshold_validation():
    for args, name in [((0, 10), "n"), ((1.5, 10), "n"), ((10, 0), "resolution"), ((10, 5, 0.0), "alpha"),
                       ((10, 5, 1.0), "alpha"), ((10, 5, "x"), "alpha")]:
        with pytest.raises(ValueError, match=name):
            loss_free_threshold(*args)


def test_g_test_is_loss_free_where_only_sampling_noise_moves_the_histogram():
    w = torch.randn(20000, generator=gen(1)) * 0.25
    res = 50
    thr = loss_free_threshold(w.numel(), res)
    # Already representable (nearest-quantized to (16, 8)): stochastic rounding is the identity, D = 0.
    exact = fixed_point(w, 16, 8, "nearest")
    assert information_loss(exact, 16, 8, res, "corrected", gen()) == 0.0
    # Steps far below the bin width (2^-14 against about 2/50): D > 0, so the strict test calls it lossy,
    # yet it is below the threshold.
    fine = information_loss(w, 24, 14, res, "corrected", gen())
    assert 0 < fine < thr
    # One or two fractional bits (steps 0.5, 0.25 against a std of 0.25): far above it.
    for fl in (1, 2):
        assert information_loss(w, 24, fl, res, "corrected", gen()) > 100 * thr


def test_push_down_g_test_threshold_and_record():
    w = torch.randn(20000, generator=gen(2)) * 0.25
    res = 50
    thr = loss_free_threshold(w.numel(), res, 0.01)
    rec_named, rec_value = [], []
    named = push_down(w, 24, 14, res, "corrected", generator=gen(), threshold=G_TEST, alpha=0.01, record=rec_named)
    value = push_down(w, 24, 14, res, "corrected", generator=gen(), threshold=thr, record=rec_value)
    assert named == value and rec_named == rec_value
    assert all(r["threshold"] == thr for r in rec_named)
    # Strict (threshold 0): at FL <= 14 some value crosses a bin edge at every probe (D > 0), nothing moves.
    assert push_down(w, 24, 14, res, "corrected", generator=gen(), threshold=0.0) == (24, 14)
    # The G-test lowers it, to a format whose own probe passed the test.
    wl, fl = named
    assert fl < 14 and wl < 24
    assert any(r["stage"] == "fl" and r["fractional_length"] == fl and not r["lossy"] for r in rec_named)
    assert any(r["stage"] == "fl" and r["fractional_length"] == fl - 1 and r["lossy"] for r in rec_named)
    # alpha is only used by "g_test": a float threshold ignores it.
    assert push_down(w, 24, 14, res, "corrected", generator=gen(), threshold=thr, alpha=0.5) == value


def test_push_down_record_lists_every_probe():
    # The probe sequence of test_push_down_reference_probes_the_lower_bound_and_returns_the_lower_bracket.
    w = grid(6)
    n = w.numel()
    record = []
    assert push_down(w, 24, 16, n, generator=gen(), record=record) == (10, 10)
    assert [(r["stage"], r["word_length"], r["fractional_length"], r["lossy"]) for r in record] == [
        ("fl", 24, 4, True), ("fl", 24, 10, False), ("fl", 24, 10, False), ("fl", 24, 10, False),
        ("wl", 17, 10, False), ("wl", 14, 10, False), ("wl", 12, 10, False), ("wl", 11, 10, False)]
    assert set(record[0]) == {"stage", "word_length", "fractional_length", "value", "threshold", "lossy"}
    for r in record:  # each value is the test's own (on-grid values: no random numbers involved)
        assert r["threshold"] == 0.0 and r["lossy"] == (r["value"] > 0.0)
        assert r["value"] == information_loss(w, r["word_length"], r["fractional_length"], n, generator=gen())
    # Corrected: FL probes mid (10, 7, 5, 6), then WL (15, 11, 9, 8, 7): (8, 6), the last loss-free probes.
    record = []
    assert push_down(w, 24, 16, n, "corrected", generator=gen(), record=record) == (8, 6)
    fl_probes = [(r["fractional_length"], r["lossy"]) for r in record if r["stage"] == "fl"]
    assert fl_probes == [(10, False), (7, False), (5, True), (6, False)]
    wl_probes = [(r["word_length"], r["lossy"]) for r in record if r["stage"] == "wl"]
    assert min(x for x, lossy in wl_probes if not lossy) == 8 and (7, True) in wl_probes
    with pytest.raises(ValueError, match="record"):
        push_down(w, 24, 16, n, record=())


def _digits_weight(steps=100):
    """The first layer of a small MLP trained with SGD on scikit-learn's digits (8x8 images): real weights."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = gen(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    acc = (model(x).argmax(1) == y).float().mean().item()
    return model[0].weight.detach().clone(), acc


def test_corrected_push_down_lowers_formats_on_trained_weights():
    w, acc = _digits_weight()
    assert acc > 0.9  # trained, not random
    res = 50
    for start in [(16, 12), (24, 16), (32, 24)]:
        g_test = push_down(w, *start, res, "corrected", generator=gen(), threshold=G_TEST)
        assert g_test[0] < start[0] and g_test[1] < start[1]
        if start[1] <= 16:  # below 2^-16 no value may cross a bin edge, and D = 0 exactly
            strict = push_down(w, *start, res, "corrected", generator=gen(), threshold=0.0)
            assert strict == start  # a true divergence is practically never 0: nothing is loss-free
    # Two fractional bits are lossy at the G-test scale too.
    assert information_loss(w, 32, 2, res, "corrected", gen()) > loss_free_threshold(w.numel(), res)


def test_push_down_threshold_validation():
    w = grid(3)
    for kwargs, name in [(dict(threshold=-0.1), "threshold"), (dict(threshold="chi2"), "threshold"),
                         (dict(threshold=float("nan")), "threshold"), (dict(threshold=True), "threshold"),
                         (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha")]:
        with pytest.raises(ValueError, match=name):
            push_down(w, 8, 4, 10, **kwargs)


# --------------------------------------------------------------------------- push up
# GD = 5: t = ln 5 - 1 = 0.6094379, t^2 = 0.3714146; s1 = max(ceil(1 / t^2 = 2.6924), 1) = 3;
# s2 = max(min(ceil(32 t^2 = 11.885), 32) - FL, 0) = 12 - FL.
@pytest.mark.parametrize("wl, fl, gd, strategy, rb, expected", [
    # FL 4: s2 = 8.  min: s = 3, FL 7, WL = min(max(8, 7) + 1, 32) = 9; buffer 8: WL = max(7 + 8, 9) = 15
    (8, 4, 5.0, "min", 8, (15, 7)),
    # mean: s = ceil((3 + 8) / 2) = 6: FL 10, WL 11 -> buffer: max(18, 11) = 18
    (8, 4, 5.0, "mean", 8, (18, 10)),
    # max: s = 8: FL 12, WL 13 -> max(20, 13) = 20
    (8, 4, 5.0, "max", 8, (20, 12)),
    # results buffer 4: FL 7, WL 9 -> max(min(11, 32), 9) = 11
    (8, 4, 5.0, "min", 4, (11, 7)),
    # FL 12 already: s2 = 0.  min: s = 0, FL 12, WL min(max(20, 12) + 1, 32) = 21; buffer: max(20, 21) = 21
    (20, 12, 5.0, "min", 8, (21, 12)),
    # mean: s = ceil(1.5) = 2 -> FL 14, WL 21 -> max(22, 21) = 22;  max: s = 3 -> FL 15, WL 21 -> 23
    (20, 12, 5.0, "mean", 8, (22, 14)),
    (20, 12, 5.0, "max", 8, (23, 15)),
    # GD = 1: t = -1 <= 0, s = 1: FL 5, WL 9; buffer 8 -> 13, buffer 4 -> 9
    (8, 4, 1.0, "min", 8, (13, 5)),
    (8, 4, 1.0, "max", 4, (9, 5)),
    # GD = e: t = 0 (float32: 0 or -6e-8), not > 0: s = 1
    (8, 4, math.e, "max", 8, (13, 5)),
    # GD = inf, 0 and nan fail 0 < GD < inf: s = 1
    (8, 4, math.inf, "max", 8, (13, 5)),
    (8, 4, 0.0, "max", 8, (13, 5)),
    (8, 4, float("nan"), "mean", 8, (13, 5)),
    # GD = 1000: t = 5.9077553, t^2 = 34.90; s1 = max(ceil(0.0287), 1) = 1; s2 = min(1117, 32) - 4 = 28.
    #   min: s = 1 -> (13, 5);  mean: s = ceil(14.5) = 15 -> FL 19, WL 20 -> max(27, 20) = 27
    (8, 4, 1000.0, "min", 8, (13, 5)),
    (8, 4, 1000.0, "mean", 8, (27, 19)),
    # max: s = 28 -> FL = min(32, 32) = 32, WL = min(33, 32) = 32; buffer 8 caps FL at 24: (32, 24); buffer 4: (32, 28)
    (8, 4, 1000.0, "max", 8, (32, 24)),
    (8, 4, 1000.0, "max", 4, (32, 28)),
    # a GD beyond float32's range is inf in float32, as in the release: s = 1
    (8, 4, 1e300, "max", 8, (13, 5)),
    # caps at 32 without a buffer: FL 30 + 1 = 31, WL min(33, 32) = 32;  FL 32 + 1 -> 32
    (32, 30, 1.0, "min", 0, (32, 31)),
    (32, 32, 1.0, "min", 0, (32, 32)),
])
def test_push_up_hand_values(wl, fl, gd, strategy, rb, expected):
    assert push_up(wl, fl, gd, strategy, rb) == expected


@settings(max_examples=200, deadline=None)
@given(wl=st.integers(1, 32), fl=st.integers(0, 32), gd=st.floats(0) | st.just(float("nan")),
       strategy=st.sampled_from(["min", "mean", "max"]), rb=st.integers(0, 32))
def test_push_up_invariants(wl, fl, gd, strategy, rb):
    new_wl, new_fl = push_up(wl, fl, gd, strategy, rb)
    assert new_wl <= 32 and new_fl <= 32 - rb
    assert new_wl >= min(new_fl + rb, 32)
    assert new_fl >= min(fl, 32 - rb)  # push-up never lowers FL except through the buffer cap


def test_push_up_validation():
    for args, name in [((0, 4, 2.0), "wl"), ((8, 33, 2.0), "fl"), ((8, 4, -1.0), "gd")]:
        with pytest.raises(ValueError, match=name):
            push_up(*args)
    with pytest.raises(ValueError, match="strategy"):
        push_up(8, 4, 2.0, "median")
    with pytest.raises(ValueError, match="results_buffer"):
        push_up(8, 4, 2.0, "min", 33)


# --------------------------------------------------------------------------- strategy
def test_next_strategy_short_history_only_appends():
    # len(hist) = 2 is not > avg_lb = 2: no comparison.
    hist = [1.0, 2.0]
    assert next_strategy("min", hist, 3.0, 2) == ("min", [1.0, 2.0, 3.0])
    assert hist == [1.0, 2.0]  # the input is not modified


@pytest.mark.parametrize("strategy, loss, expected", [
    # hist = (1, 2, 3), avg_lb 2: A = |6 / 2| = 3 (three losses over two), L = |loss|.
    ("min", 3.0, "mean"),   # A <= L: min -> mean (one step only)
    ("mean", 3.0, "max"),   # mean -> max
    ("max", 3.5, "max"),    # max stays
    ("max", 2.9, "min"),    # A > L: back to min
    ("mean", 2.9, "min"),
    ("min", 2.9, "min"),
])
def test_next_strategy_escalation(strategy, loss, expected):
    new, hist = next_strategy(strategy, [1.0, 2.0, 3.0], loss, 2)
    assert new == expected
    assert hist == [2.0, 3.0, loss]  # trimmed to the last avg_lb, then the new loss


def test_next_strategy_uses_absolute_values():
    # hist (-1, -2, -3): A = |-6 / 2| = 3;  loss -4: L = 4 >= A -> escalate;  loss -2: L = 2 < A -> min.
    assert next_strategy("min", [-1.0, -2.0, -3.0], -4.0, 2)[0] == "mean"
    assert next_strategy("max", [-1.0, -2.0, -3.0], -2.0, 2)[0] == "min"


def test_next_strategy_corrected_average():
    # released: A = (1 + 2 + 3) / 2 = 3 > 2.7 -> min;  "mean": A = (2 + 3) / 2 = 2.5 <= 2.7 -> escalate.
    assert next_strategy("min", [1.0, 2.0, 3.0], 2.7, 2)[0] == "min"
    assert next_strategy("min", [1.0, 2.0, 3.0], 2.7, 2, average="mean")[0] == "mean"


def test_next_strategy_validation():
    with pytest.raises(ValueError, match="strategy"):
        next_strategy("median", [], 1.0, 2)
    with pytest.raises(ValueError, match="average_lookback"):
        next_strategy("min", [1.0], 1.0, 0)
    with pytest.raises(ValueError, match="loss_history"):
        next_strategy("min", None, 1.0, 2)
    with pytest.raises(ValueError, match="average"):
        next_strategy("min", [], 1.0, 2, average="median")
