"""The CUDA path on a GPU: compiled kernels against their interpreted copy, no host synchronisation, several
devices, the first-use self-checks, and the policies' multi-tensor steps.  Every test skips without CUDA.

``benchmarks/gpu_checks.sh`` runs this file first on a GPU machine; it needs pytest, NumPy, torch and Triton only
(no Hypothesis, no numba: CPU references are the interpreted kernels or the whole-tensor ops), so that it runs
with a machine's system ``python3``.  The interpreter tests
of the same kernels are in tests/test_triton_kernels.py; the CUDA cases of the quantizers' own tests
(``tests/test_quant.py -k cuda``) need Hypothesis and run where it is installed.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from adapt import quant
from triton_interpreted import load_interpreted

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")]
SEED = 0xDEADBEEF12345678
INF, NAN = float("inf"), float("nan")


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal dtype, shape and values on the CPU, NaN matching NaN, ``+0.0 == -0.0`` (tests/test_quant.py's rule)."""
    actual, expected = actual.cpu(), expected.cpu()
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.dtype, expected.dtype)
    assert torch.equal(actual.isnan(), expected.isnan()), "NaN positions differ"
    a, e = actual.nan_to_num(0.0), expected.nan_to_num(0.0)
    ok = (a == e) | (actual.isinf() & (actual == expected))
    assert bool(ok.all()), (f"values differ at {(~ok).nonzero()[:8].flatten().tolist()}: got "
                            f"{actual.flatten()[~ok.flatten()][:8].tolist()}, expected {expected.flatten()[~ok.flatten()][:8].tolist()}")


@pytest.fixture(scope="module")
def K():
    """The interpreted copy of the kernels (CPU), the reference of the compiled ones."""
    return load_interpreted("adapt._triton_kernels_interpreted_for_cuda")


@pytest.fixture(scope="module")
def G():
    kernels = quant._gpu_kernels()
    assert kernels is not None, "Triton does not import on this CUDA machine"
    return kernels


def inputs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 4
    x[:7] = torch.tensor([INF, -INF, NAN, -0.0, 0.0, 0.03125, -0.09375])  # specials and 8/4 ties
    return x


def test_compiled_kernels_equal_the_interpreted_ones(K, G):
    """Every kernel, nearest and stochastic, float32 (and the single-tensor kernel in float16, bfloat16 and
    float64), at sizes around the block (full and partial blocks) and at unaligned addresses: bit for bit what
    the interpreted copy gives on CPU with the same seed (the block sizes of the two modules differ; results
    do not depend on it)."""
    b = G.BLOCK
    base = inputs(3 * b + 41, 1)
    for offset in (0, 1):
        xs = [base[offset:offset + n] for n in (5, 2 * b, 2 * b + 37, 77)]
        gxs = [x.cuda() for x in xs]
        assert all((g.data_ptr() % 16 == 0) == (offset == 0) for g in gxs)
        formats = [(8, 4), (16, 10), (4, 2), (32, 16)]
        scales = torch.tensor([4.0, 16.0, 0.5, 2.0**-20])
        for rounding in ("nearest", "stochastic"):
            seed = SEED if rounding == "stochastic" else None
            pairs = [(K.fixed_point_segments(xs, formats, rounding, seed=seed),
                      G.fixed_point_segments(gxs, formats, rounding, seed=seed)),
                     (K.round_scaled_segments(xs, scales, rounding, seed=seed, clamp_bits=8),
                      G.round_scaled_segments(gxs, scales.cuda(), rounding, seed=seed, clamp_bits=8)),
                     (K.round_scaled_segments(xs, scales, rounding, seed=seed),
                      G.round_scaled_segments(gxs, scales.cuda(), rounding, seed=seed))]
            for k, (x, gx) in enumerate(zip(xs, gxs)):
                pairs.append(([K.fixed_point(x, 8, 4, rounding, seed=seed, stream=k)],
                              [G.fixed_point(gx, 8, 4, rounding, seed=seed, stream=k)]))
                pairs.append(([K.round_scaled(x, torch.tensor([8.0]), rounding, seed=seed, clamp_bits=6)],
                              [G.round_scaled(gx, torch.tensor([8.0], device="cuda"), rounding, seed=seed,
                                              clamp_bits=6)]))
            for expected, got in pairs:
                for e, a in zip(expected, got, strict=True):
                    assert_same(a, e)
        for e, a in zip(K.segment_extremes(xs), G.segment_extremes(gxs)):
            assert_same(a, e)
        d = torch.tensor([3.0, -0.0, 1e-38, 0.1])
        for e, a in zip(K.divide_segments(xs, d), G.divide_segments(gxs, d.cuda()), strict=True):
            assert_same(a, e)
            assert torch.equal(a.cpu().isnan(), e.isnan())
    x = inputs(2 * b + 37, 2)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        for rounding in ("nearest", "stochastic"):
            xd = x.to(dtype)
            assert_same(G.fixed_point(xd.cuda(), 10, 6, rounding, seed=SEED), K.fixed_point(xd, 10, 6, rounding, seed=SEED))


def test_negative_zero_extremes(G):
    """The blocks that Triton before 3.4 got wrong (see tests/test_triton_kernels.py), on this GPU's Triton."""
    b = G.BLOCK
    xs = [torch.cat([torch.full((b,), -0.0), torch.full((b + 5,), -1.5)]),
          torch.cat([torch.full((b,), -3.0), torch.full((b,), -0.0), torch.full((7,), 2.0)])]
    hi, lo = G.segment_extremes([x.cuda() for x in xs])
    assert hi.tolist() == [0.0, 2.0] and lo.tolist() == [-1.5, -3.0]


def test_every_self_check_passes_on_this_gpu(G, monkeypatch):
    """The first-use checks of every kernel the package launches agree with the whole-tensor ops here (a
    failure names the kernel, the input and both values)."""
    monkeypatch.setattr(quant, "_KERNEL_CHECKS", {})
    x = torch.zeros(3, device="cuda")
    kinds = [("fixed_point", ()), ("round_scaled", (False, False)), ("round_scaled", (True, True)),
             ("segments", ()), ("dynamic_segments", (False,)), ("dynamic_segments", (True,))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for kind, variant in kinds:
            for rounding in ("nearest", "stochastic"):
                assert quant._kernel_ok(kind, x, rounding, variant)
        assert quant._kernel_ok("divide", x, "nearest")
        for dtype in (torch.float16, torch.bfloat16, torch.float64):
            assert quant._kernel_ok("fixed_point", x.to(dtype), "stochastic")


def _training_tensors(n_tensors=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 3, 3, 3), (64,), (128, 64, 3, 3), (128,), (10, 512), (10,)][:n_tensors]
    return [(torch.randn(s, generator=g) * 0.1).cuda() for s in shapes]


def test_grouped_quantization_never_synchronises(G):
    """fixed_point_many, dynamic_fixed_point_many, divide_many_, fixed_point and skip_draw under torch's
    synchronisation check ("error" raises on any blocking copy or host read): the first call over new tensors
    uploads its tables from pinned memory without blocking, later calls reuse them."""
    xs = _training_tensors()
    ys = [torch.empty_like(x) for x in xs]
    formats = [quant.FixedPoint(8, 4), quant.FixedPoint(16, 10)] * 3
    gen = torch.Generator(device="cuda").manual_seed(0)
    # compile the kernels and run the self-checks first (they read the device once, by design)
    quant.fixed_point_many(xs, formats, "stochastic", gen, outs=ys)
    quant.dynamic_fixed_point_many(xs, 8, "stochastic", gen, outs=ys)
    quant.fixed_point(xs[0], 8, 4, "stochastic", gen)
    quant.skip_draw(xs[0], "stochastic", gen)
    quant.divide_many_([y.clone() for y in ys], torch.ones(len(ys), device="cuda"))
    G.clear_table_cache()
    fresh = [x.clone() for x in xs]  # new addresses: new tables
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):  # the first uploads the tables, the second finds them cached
            quant.fixed_point_many(fresh, formats, "stochastic", gen, outs=fresh)
            quant.dynamic_fixed_point_many(fresh, 8, "stochastic", gen, outs=fresh)
            quant.fixed_point(fresh[2], 8, 4, "stochastic", gen, out=fresh[2])
            quant.skip_draw(fresh[2], "stochastic", gen)
            norms = torch.stack(torch._foreach_norm(fresh))
            quant.divide_many_(fresh, torch.where(norms > 0, norms, torch.ones_like(norms)))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


def test_grouped_nearest_rounding_is_captured_in_a_cuda_graph():
    """Once its tables exist, fixed_point_many launches nothing but its kernel: a CUDA graph captures it and a
    replay rounds the tensors' new values."""
    xs = _training_tensors(seed=4)
    ys = [torch.empty_like(x) for x in xs]
    formats = [quant.FixedPoint(8, 4)] * len(xs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on the capture stream: compile, self-check, tables
        quant.fixed_point_many(xs, formats, "nearest", outs=ys)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        quant.fixed_point_many(xs, formats, "nearest", outs=ys)
    for x in xs:
        x.mul_(3.0)
    graph.replay()
    torch.cuda.synchronize()
    for x, y in zip(xs, ys):  # the whole-tensor ops as the reference (no numba needed on a GPU machine)
        assert_same(y, quant._fixed_point(x.cpu(), 8, 4, "nearest", None, None, False))


def test_skip_draw_advances_the_generator_as_a_draw_without_a_launch():
    x = torch.zeros(10, device="cuda")
    for make in (lambda: torch.Generator(device="cuda").manual_seed(7), None):
        if make is None:  # the default generator of the device
            torch.cuda.manual_seed(7)
            state = torch.cuda.get_rng_state()
            quant.fixed_point(x, 8, 4, "stochastic")
            drawn = torch.cuda.get_rng_state()
            torch.cuda.set_rng_state(state)
            quant.skip_draw(x, "stochastic")
            assert torch.equal(torch.cuda.get_rng_state(), drawn)
            continue
        a, b = make(), make()
        quant.fixed_point(x, 8, 4, "stochastic", a)
        quant.skip_draw(x, "stochastic", b)
        assert torch.equal(a.get_state(), b.get_state())
        y = torch.linspace(-1, 1, 1000, device="cuda") + 1e-3
        assert torch.equal(quant.fixed_point(y, 8, 4, "stochastic", a), quant.fixed_point(y, 8, 4, "stochastic", b))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_tensors_on_another_device_than_the_current_one(K):
    """With cuda:0 current, tensors on cuda:1 are rounded on cuda:1 (the launches make their device current):
    the results equal the interpreted kernels', for every entry point."""
    torch.cuda.set_device(0)
    dev = torch.device("cuda", 1)
    xs = [inputs(n, 5 + n) for n in (5, 3000, 1100)]
    gxs = [x.to(dev) for x in xs]
    gen = torch.Generator(device=dev).manual_seed(0)
    assert_same(quant.fixed_point(gxs[1], 8, 4, "nearest"), K.fixed_point(xs[1], 8, 4, "nearest"))
    got = quant.fixed_point_many(gxs, [quant.FixedPoint(8, 4)] * 3, "nearest")
    for x, y in zip(xs, got):
        assert y.device == dev
        assert_same(y, K.fixed_point(x, 8, 4, "nearest"))
    got = quant.dynamic_fixed_point_many(gxs, 8, "nearest")
    for x, y in zip(xs, got):
        assert_same(y, quant._dynamic_fixed_point(x, 8, "nearest", False, None, False, False))
    quant.fixed_point_many(gxs, [quant.FixedPoint(8, 4)] * 3, "stochastic", gen, outs=gxs)
    torch.cuda.synchronize(dev)
    assert torch.cuda.current_device() == 0


def test_policy_steps_match_the_per_tensor_loops():
    """AdaPT's gradient normalisation (one launch) and MuPPET's weight decay (one multi-tensor op) give the
    per-tensor loops' values bit for bit on CUDA; the L1 penalty's one reduction agrees to float32 rounding."""
    xs = _training_tensors(seed=6)
    norms = torch.stack(torch._foreach_norm(xs))
    norms[1] = 0.0
    div = torch.where(norms > 0, norms, torch.ones_like(norms))
    ys = [x.clone() for x in xs]
    quant.divide_many_(ys, div)
    for x, y, d in zip(xs, ys, div):
        assert torch.equal(y, x / d)
    from adapt.experiments.configs import get_config
    from adapt import train

    cfg = get_config("paper/muppet/resnet20/cifar10")
    model, policy, qmodel, _ = train.build(cfg, 10, torch.device("cuda"))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    loop = [p.grad.clone().add_(p.data, alpha=policy.weight_decay) for p in model.parameters()]  # the former loop
    policy.before_step(0, 1.0)
    for p, e in zip(model.parameters(), loop):
        # torch's multi-tensor and single-tensor kernels both compute g + wd * w in float32, fused into one FMA
        # or not as nvcc compiled each: equal, or apart by the rounding of wd * w
        ulp = 2**-23 * float(p.data.abs().max()) * policy.weight_decay
        assert torch.allclose(p.grad, e, rtol=2**-23, atol=ulp)
    l1 = train.L1Gradient(model, 1e-4, 4)
    value = l1.begin_step()
    reference = 1e-4 * train.l1_penalty(model)  # the same float32 sums, added in another order
    assert torch.allclose(value, reference, rtol=1e-5, atol=0)
    l1.remove()
