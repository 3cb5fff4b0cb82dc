"""``adapt`` against the released AdaPT code itself (``lorenz0890/AdaPT@81e54e0``), read at run time.

These tests run only where a local checkout is given in ``ADAPT_OFFICIAL_REPO`` (the released code
has no licence and is not part of this repository; adapt.experiments.official loads it); the model
tests also need ``qtorch`` 0.3.0 importable (``pip install --target DIR qtorch==0.3.0 ninja``, ``DIR``
on ``PYTHONPATH`` and ``DIR/bin`` on ``PATH``).  Elsewhere they are skipped, with the reason.

* the rules: ``MSGD_FP``'s private methods (gradient diversity, lookback, resolution, the
  information-loss test, PushDown, PushUp, the strategy rule) against ``adapt.heuristic`` on random
  inputs; where a rule quantizes, both sides are given the same stochastic quantizer with
  generators in the same state, so they must agree exactly;
* the models: the released ``QLeNet5_FP`` training step and ``QBasicBlock_FP`` against ``adapt``'s
  reference (``softmax_output``, ``in_place_inputs``; docs/method.md §1.10) on identical weights and
  inputs, with QPyTorch's nearest rounding;
* a lockstep run: one epoch of the released ``QLeNet5_FP`` + ``MSGD_FP`` and of ``adapt``'s
  reference on mnist5k with deterministic rounding and PushDown's random numbers shared
  (tools/official_crosscheck.py ``--rounding nearest``): the same switch events, step by step.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adapt import heuristic as H
from adapt.experiments.official import ENV_VAR, official_repo, qtorch_available
from adapt.quant import fixed_point

try:
    ROOT = official_repo()
    WHY = f"{ENV_VAR} is not set (a local checkout of lorenz0890/AdaPT)" if ROOT is None else ""
except FileNotFoundError as exc:
    ROOT, WHY = None, str(exc)

needs_checkout = pytest.mark.skipif(ROOT is None, reason=WHY or "no checkout")
needs_qtorch = pytest.mark.skipif(ROOT is None or not qtorch_available(),
                                  reason=WHY or "qtorch 0.3.0 does not import (pip install --target DIR qtorch ninja)")

LENET = "mnist5k/adapt/lenet5/mnist5k"


@pytest.fixture(scope="module")
def rules():
    from adapt.experiments.official import load_official

    return load_official(ROOT, models=False)


@pytest.fixture(scope="module")
def official():
    from adapt.experiments.official import load_official

    return load_official(ROOT)


def _msgd(official, **kw):
    p = torch.nn.Parameter(torch.zeros(2, 2))
    args = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, max_lookback=150, min_lookback=25, max_resolution=150,
                min_resolution=50, push_up_strategy="min", quant_grads=True, results_buffer=8, lookback_momentum=0.9)
    args.update(kw)
    return official.MSGD_FP([p], **args)


def _shared_quantizers(seed):
    """Two stochastic quantizers with generators in the same state: the released code calls
    ``quantizer(w, wl, fl, rounding=...)``, adapt.heuristic ``fixed_point(w, wl, fl, 'stochastic', g)``."""
    g_released, g_adapt = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)

    def released(x, wl, fl, rounding="stochastic"):
        return fixed_point(x, wl, fl, "stochastic", g_released)

    return released, g_adapt


def _random_weights(rng, k):
    shape = [(6, 1, 5, 5), (16, 6, 5, 5), (84, 120), (10, 84), (64, 64, 3, 3)][k % 5]
    scale = float(rng.choice([0.01, 0.05, 0.2, 1.0, 3.0]))
    w = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) * scale
    if k % 3 == 0:
        w = torch.from_numpy(rng.uniform(-scale, scale, shape).astype(np.float32))
    return w


# ------------------------------------------------------------------ the rules
@needs_checkout
def test_gradient_diversity_lookback_and_resolution(rules):
    rng = np.random.default_rng(0)
    for k in range(200):
        opt = _msgd(rules, max_lookback=int(rng.integers(50, 200)), min_lookback=int(rng.integers(1, 50)),
                    lookback_momentum=float(rng.choice([0.33, 0.9, 1.0, float(rng.uniform())])),
                    min_resolution=int(rng.integers(1, 60)), max_resolution=int(rng.integers(60, 160)))
        mn, mx = opt._MSGD_FP__min_lookback, opt._MSGD_FP__max_lookback
        count = int(rng.integers(1, 160))
        s = torch.from_numpy(rng.standard_normal(int(rng.integers(5, 500))).astype(np.float32)) * float(rng.uniform(0.1, 20))
        g_list = [(count, s)]
        gd = float(opt._MSGD_FP__g_div(g_list))
        # `Tensor.norm(2.0)` (the release) and torch.linalg.vector_norm (adapt) are different kernels
        # here: they may differ in the last bit of the float32 norm.
        assert H.gradient_diversity(count, s) == pytest.approx(gd, rel=2 ** -22)
        lb = int(rng.integers(mn, mx + 1))
        assert opt._MSGD_FP__adapt_lookback(g_list, lb) == H.next_lookback(lb, gd, mn, mx,
                                                                           opt._MSGD_FP__lookback_momentum)
        res = int(rng.integers(1, 170))
        for lb_ in (mn, mx, (mn + mx) // 2):
            assert opt._MSGD_FP__adapt_resolution(lb_, res) == H.next_resolution(
                res, lb_, mn, mx, opt._MSGD_FP__min_resolution, opt._MSGD_FP__max_resolution)


@needs_checkout
def test_information_loss_and_push_down(rules):
    rng = np.random.default_rng(1)
    opt = _msgd(rules)
    for k in range(60):
        w = _random_weights(rng, k).flatten()[: int(rng.integers(20, 3000))]
        wl = int(rng.integers(5, 25))
        fl = int(rng.integers(0, wl))
        res = int(rng.integers(2, 160))
        released, g = _shared_quantizers(k)
        value = opt._MSGD_FP__fpq_loss(w, wl, fl, released, res)
        assert float(value) == H.information_loss(w, wl, fl, res, "reference", g) or (
            math.isnan(float(value)))
        released, g = _shared_quantizers(1000 + k)
        # MSGD_FP.step: __push_down(w, fl_min=4, fl_mid=FL, fl_max=FL, wl_mid=WL, wl_max=WL, ...) (L367-L373)
        out = opt._MSGD_FP__push_down(w, 4, fl, fl, wl, wl, released, res)
        assert tuple(out) == H.push_down(w, wl, fl, res, "reference", fl_floor=4, generator=g)


@needs_checkout
def test_push_up_every_strategy(rules):
    rng = np.random.default_rng(2)
    for k in range(300):
        rb = int(rng.choice([0, 4, 8, 12]))
        strategy = str(rng.choice(["min", "mean", "max"]))
        opt = _msgd(rules, results_buffer=rb)
        opt._MSGD_FP__push_up_strategy = strategy
        wl = int(rng.integers(2, 33))
        fl = int(rng.integers(0, wl + 1))
        count = int(rng.integers(1, 200))
        s = torch.from_numpy(rng.standard_normal(int(rng.integers(2, 400))).astype(np.float32))
        s = s * float(rng.choice([1e-3, 0.1, 1.0, 10.0]))
        out = opt._MSGD_FP__push_up([(count, s)], wl, fl, None, 50)
        gd = float(opt._MSGD_FP__g_div([(count, s)]))  # the release's own GD (see the first test)
        assert tuple(out) == H.push_up(wl, fl, gd, strategy, rb)


@needs_checkout
def test_strategy_rule_over_a_loss_sequence(rules):
    rng = np.random.default_rng(3)
    for trial in range(20):
        opt = _msgd(rules)
        lbs = [int(v) for v in rng.integers(25, 150, size=4)]
        qmap = {"lb": lbs}
        strategy, hist = "min", []
        avg_lb = int(sum(lbs) / len(lbs))
        for step in range(avg_lb + 40):
            loss = torch.tensor(float(rng.uniform(0.5, 2.5)), dtype=torch.float32)
            opt._MSGD_FP__adapt_strategy(qmap, loss)
            strategy, hist = H.next_strategy(strategy, hist, float(loss), avg_lb)
            assert opt._MSGD_FP__push_up_strategy == strategy


# ------------------------------------------------------------------ the models
def _nearest(official):
    def q(x, wl, fl, rounding="stochastic"):
        return official.fixed_point_quantize(x, wl, fl, rounding="nearest")
    return q


@needs_qtorch
def test_qtorch_nearest_is_adapts_nearest(official):
    rng = np.random.default_rng(4)
    for k in range(50):
        x = torch.from_numpy(rng.standard_normal(1000).astype(np.float32)) * float(rng.choice([0.01, 1.0, 50.0]))
        wl = int(rng.integers(2, 25))
        fl = int(rng.integers(0, wl))
        assert torch.equal(official.fixed_point_quantize(x, wl, fl, rounding="nearest"),
                           fixed_point(x, wl, fl, "nearest"))


@needs_qtorch
def test_released_lenet5_training_step_equals_the_reference(official):
    """The released ``training_step`` (forward with the released activation formats and the softmax,
    ``cross_entropy`` on the probabilities, the L1 term, backward) against ``adapt``'s reference
    variant on the same weights and batch."""
    from adapt.experiments.configs import get_config
    from adapt.experiments.official import released_lenet5
    from adapt.train import build, l1_penalty

    cfg = get_config(LENET, rounding="nearest")
    model, policy, qmodel, _ = build(cfg, 10, torch.device("cpu"))
    policy.wl[0], policy.fl[0] = 10, 6  # qmap entry 0, which the released pools and linears read
    policy._apply_formats()
    # accumulation_steps=2 and batch_idx 0: the released step divides the loss by 2 and neither steps
    # nor zeroes the gradients, which a factor 2 (exact) undoes.
    released = released_lenet5(official, cfg.replace(accumulation_steps=2), "copy", 10)
    for m in released.modules():
        if "quantizer" in vars(m):
            m.quantizer = _nearest(official)

    class Idle:
        param_groups = [{"lr": cfg.lr}]

        def step(self, *args, **kwargs):
            raise AssertionError("the released step must not reach the optimizer here")

    released.attach_optimizer(Idle())
    released.setup("fit")
    released.qmap["qwl"][0], released.qmap["qfl"][0] = 10, 6
    torch.manual_seed(1)
    x = torch.randn(16, 1, 32, 32) * 1.5
    y = torch.randint(0, 10, (16,))
    out = model(x)
    loss = F.cross_entropy(out, y) + cfg.l1_decay * l1_penalty(model)
    loss.backward()
    released_loss = released.training_step((x.clone(), y), 0)
    assert torch.equal(2 * released_loss.detach(), loss.detach())
    for (name, p), (rname, rp) in zip(model.named_parameters(), released.named_parameters()):
        assert torch.equal(2 * rp.grad, p.grad), (name, rname)
    released.stage = "validation"
    with torch.no_grad():
        assert torch.equal(released(x.clone()), model(x))


@needs_qtorch
@pytest.mark.parametrize("projection", [False, True])
def test_released_basic_block_equals_the_reference(official, projection):
    """``QBasicBlock_FP`` (residual = x, in-place input quantization) against ``adapt``'s BasicBlock with
    ``in_place_inputs``: equal outputs and gradients, except, in a projection block run by a torch
    that saves inputs as the tensor itself, conv1's weight gradient (docs/method.md §1.10; adapt
    keeps torch 1.8.1's)."""
    from test_released_quirks import FORMATS, Net

    from adapt.layers import QuantizedModel
    from adapt.quant import FixedPoint

    c_in, c_out, stride = (4, 6, 2) if projection else (4, 4, 1)
    torch.manual_seed(3)
    net = Net(c_in, c_out, stride)
    qm = QuantizedModel(net, rounding="nearest", in_place_inputs=True)
    for name, layer in qm.layers.items():
        layer.input_format = layer.output_format = FixedPoint(*FORMATS[name])
    qargs = dict(quantizer=_nearest(official), wl=8, fl=4, quant_in=True, quant_out=True)
    downsample = None
    if projection:
        downsample = torch.nn.Sequential(
            official.QConv2d_FP(c_in, c_out, kernel_size=1, stride=stride, padding=0, bias=False, **qargs),
            official.QBatchNorm2d_FP(c_out, **qargs))
    block = official.QBasicBlock_FP(c_in, c_out, stride, downsample, **qargs)
    ours = [m for n, m in net.named_modules() if n in FORMATS]
    theirs = [block.conv1, block.bn1, block.conv2, block.bn2] + (list(downsample) if projection else [])
    for m, r, name in zip(ours, theirs, [n for n in FORMATS if projection or "shortcut" not in n]):
        r.wl, r.fl = FORMATS[name]
        r.load_state_dict(m.state_dict())
    z = (torch.randn(5, c_in, 6, 6) * 1.5).requires_grad_()
    w = torch.randn(5, c_out, 6 // stride, 6 // stride)
    out = net(z)
    (out * w).sum().backward()
    z2 = z.detach().clone().requires_grad_()
    ref = block(torch.relu(z2))
    (ref * w).sum().backward()
    assert torch.equal(out, ref)
    assert torch.equal(z.grad, z2.grad)
    for (name, p), (rname, rp) in zip(net.block.named_parameters(), block.named_parameters()):
        if projection and name == "conv1.weight":
            assert not torch.equal(p.grad, rp.grad)
        else:
            assert torch.equal(p.grad, rp.grad), (name, rname)


# ------------------------------------------------------------------ a lockstep run
@needs_qtorch
def test_lockstep_epoch_has_the_same_switch_events(official):
    """One epoch of mnist5k (57 optimizer steps, the first switches at about step 27 and 55) with the
    released code and with adapt's reference, deterministic rounding and PushDown's draws shared:
    every switch event (step, tensor, old / pushed-down / new format, lookback, resolution,
    strategy) is the same, and so is the test accuracy."""
    from adapt.experiments.configs import get_config
    from adapt.experiments.official import compare_switches, train_adapt, train_released

    cfg = get_config(LENET, variant="reference", rounding="nearest", epochs=1)
    released = train_released(official, cfg)
    ours = train_adapt(cfg, "reference")
    cmp = compare_switches(released, ours)
    assert cmp["identical"] and cmp["events"][0] >= 5, cmp
    assert released["epochs"][0]["test_acc"] == pytest.approx(ours["epochs"][0]["test_acc"], abs=1e-6)
    logits = train_adapt(cfg.replace(softmax_output=False), "reference-logits")
    assert not compare_switches(released, logits)["identical"]  # the double softmax matters to the heuristic
