"""The lean training step: grouped and serial CPU rounding, L1 as a gradient term, one transfer per step.

Every optimization here must leave CPU results bit-identical to the plain formulation it
replaces, so each test compares against that formulation written out independently:

* :func:`adapt.quant.fixed_point_many` against the loop over :func:`adapt.quant.fixed_point`
  (values and the generator's state afterwards), and the serial kernels against the parallel ones;
* :class:`adapt.train.L1Gradient` against ``loss = ce + l1_decay * sum |p|`` through autograd,
  with gradient accumulation over micro-batches;
* :func:`adapt.train.evaluate` against the Python float sum of the per-batch sums;
* the loop's divergence message against the batch that was made non-finite.
"""
from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapt import _cpu_kernels as kernels
from adapt import quant, train
from adapt.experiments.configs import get_config
from adapt.data.loader import DeviceLoader
from adapt.layers import QuantizedModel
from adapt.quant import SERIAL_BELOW, DynamicFixedPoint, FixedPoint, fixed_point, fixed_point_many
from adapt.train import L1Gradient, evaluate, prepare_data

SIZES = [0, 1, 16, 300, SERIAL_BELOW - 1, SERIAL_BELOW, 3 * quant._GROUP_BLOCK + 5]


def _tensors(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Values spanning several grid steps and beyond the range, plus the specials.
    out = [torch.randn(n, generator=g) * 4.0 for n in sizes]
    if out and out[-1].numel() > 3:
        out[-1][:3] = torch.tensor([math.inf, -math.inf, math.nan])
    return out


def _formats(n, seed=0):
    rng = np.random.default_rng(seed)
    return [FixedPoint(int(wl), int(fl)) for wl, fl in zip(rng.integers(2, 17, n), rng.integers(0, 14, n))]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("sizes", [SIZES, [16, 432, 64, 10], [SERIAL_BELOW // 4] * 3])
def test_fixed_point_many_equals_the_loop_and_draws_the_same(rounding, sizes):
    xs, fmts = _tensors(sizes), _formats(len(sizes))
    ga, gb = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    expected = [fixed_point(x, f.word_length, f.fractional_length, rounding, ga) for x, f in zip(xs, fmts)]
    got = fixed_point_many(xs, fmts, rounding, gb)
    assert all(_same(e, y) for e, y in zip(expected, got))
    assert torch.equal(ga.get_state(), gb.get_state())
    # in place (quantize_grads writes the gradient over itself), and into separate outputs
    inplace = [x.clone() for x in xs]
    assert fixed_point_many(inplace, fmts, rounding, torch.Generator().manual_seed(7), outs=inplace) == inplace
    assert all(_same(e, y) for e, y in zip(expected, inplace))
    outs = [torch.empty_like(x) for x in xs]
    fixed_point_many(xs, fmts, rounding, torch.Generator().manual_seed(7), outs=outs)
    assert all(_same(e, y) for e, y in zip(expected, outs))


def test_fixed_point_many_falls_back_to_the_loop():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(6, 5, generator=g).t(), torch.randn(7, dtype=torch.float64, generator=g),
          torch.randn(9, generator=g).half()]
    fmts = _formats(3, seed=1)
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    expected = [fixed_point(x, f.word_length, f.fractional_length, "stochastic", ga) for x, f in zip(xs, fmts)]
    got = fixed_point_many(xs, fmts, "stochastic", gb)
    assert all(torch.equal(e, y) and e.dtype == y.dtype for e, y in zip(expected, got))
    assert torch.equal(ga.get_state(), gb.get_state())
    # the whole-tensor path of the other devices, on CPU
    with mock.patch.object(quant, "CPU_KERNEL", False):
        xs = _tensors([5, 40])
        ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        expected = [fixed_point(x, f.word_length, f.fractional_length, "stochastic", ga) for x, f in zip(xs, fmts)]
        assert all(_same(e, y) for e, y in zip(expected, fixed_point_many(xs, fmts[:2], "stochastic", gb)))


def test_fixed_point_many_rejects_bad_arguments():
    xs = _tensors([4, 5])
    with pytest.raises(TypeError, match="FixedPoint"):
        fixed_point_many(xs, [FixedPoint(8, 4), DynamicFixedPoint(8)])
    with pytest.raises(ValueError, match="2 tensors"):
        fixed_point_many(xs, [FixedPoint(8, 4)])
    with pytest.raises(ValueError, match="outs has 1"):
        fixed_point_many(xs, _formats(2), outs=[xs[0]])
    with pytest.raises(ValueError, match="rounding"):
        fixed_point_many(xs, _formats(2), "up")
    assert fixed_point_many([], []) == []


def test_seed_block_equals_one_draw_per_call():
    ga, gb = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    one_by_one = [quant._seed_from(ga) for _ in range(70)]
    assert list(quant._seeds_from(gb, 70)) == one_by_one
    assert torch.equal(ga.get_state(), gb.get_state())


def test_serial_twins_compute_what_the_parallel_kernels_compute():
    x = _tensors([5000])[0].double().numpy()
    seed = np.uint64(0x0123456789ABCDEF)
    for serial, parallel, args in [
        (kernels.stochastic_round_flat_serial, kernels.stochastic_round_flat, (16.0, 1 / 16, -128.0, 127.0, seed)),
        (kernels.nearest_round_flat_serial, kernels.nearest_round_flat, (16.0, 1 / 16, -128.0, 127.0)),
    ]:
        a, b = np.empty_like(x), np.empty_like(x)
        serial(x, a, *args)
        parallel(x, b, *args)
        assert np.array_equal(a.view(np.int64), b.view(np.int64))
    rows = x.reshape(50, 100)
    scales = 2.0 ** np.arange(50, dtype=np.float64) / 2**20
    a, b = np.empty_like(rows), np.empty_like(rows)
    kernels.stochastic_round_rows_serial(rows, a, scales, 1 / scales, -math.inf, math.inf, seed)
    kernels.stochastic_round_rows(rows, b, scales, 1 / scales, -math.inf, math.inf, seed)
    assert np.array_equal(a.view(np.int64), b.view(np.int64))


@pytest.mark.parametrize("n", [SERIAL_BELOW - 1, SERIAL_BELOW])
def test_small_and_large_tensors_take_their_kernel(n):
    x = torch.randn(n)
    calls = []
    serial = n < SERIAL_BELOW
    for name in ("stochastic_round_flat", "stochastic_round_flat_serial"):
        real = getattr(kernels, name)
        calls_for = (lambda real, name: lambda *a: calls.append(name) or real(*a))(real, name)
        mock.patch.object(kernels, name, calls_for).start()
    try:
        fixed_point(x, 8, 4, "stochastic", torch.Generator().manual_seed(0))
    finally:
        mock.patch.stopall()
    assert calls == ["stochastic_round_flat_serial" if serial else "stochastic_round_flat"]


# --------------------------------------------------------------------------- QuantizedModel
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def test_grouped_weight_and_gradient_quantization_equals_the_per_tensor_loop():
    models = []
    for _ in range(2):
        q = QuantizedModel(_net(), generator=torch.Generator().manual_seed(5))
        for k, qp in enumerate(q.params.values()):
            qp.weight_format = None if k == 2 else FixedPoint(8, 2 + k)  # one float32 copy in between
            qp.grad_format = FixedPoint(6 + k, 5)
            qp.param.grad = torch.randn_like(qp.param)
            qp.master.add_(torch.randn_like(qp.master))
        models.append(q)
    grouped, ref = models
    grouped.quantize_grads()
    grouped.quantize_weights()
    with torch.no_grad():  # the plain loop, in parameter order
        for qp in ref.params.values():
            fixed_point(qp.param.grad, qp.grad_format.word_length, qp.grad_format.fractional_length,
                        "stochastic", ref.generator, out=qp.param.grad)
        for qp in ref.params.values():
            if qp.weight_format is None:
                qp.param.data.copy_(qp.master)
            else:
                fixed_point(qp.master, qp.weight_format.word_length, qp.weight_format.fractional_length,
                            "stochastic", ref.generator, out=qp.param.data)
    for a, b in zip(grouped.params.values(), ref.params.values()):
        assert _same(a.param.grad, b.param.grad) and _same(a.param.data, b.param.data)
    assert torch.equal(grouped.generator.get_state(), ref.generator.get_state())
    # the sparsity of the working tensors, one transfer for all
    ref_sparsity = {n: float((qp.param == 0).sum()) / qp.param.numel() for n, qp in ref.params.items()}
    assert grouped.sparsity() == ref_sparsity and any(v > 0 for v in ref_sparsity.values())


# --------------------------------------------------------------------------- L1 as a gradient term
@pytest.mark.parametrize("accum,l1_decay", [(3, 1e-4), (4, 1e-8), (5, 3e-3), (1, 7e-4)])
def test_l1_gradient_term_is_bit_identical_to_the_l1_loss(accum, l1_decay):
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g))
               for _ in range(2 * accum + 1)]  # a trailing partial group too
    ref, new = _net(), _net()
    with torch.no_grad():
        next(ref.parameters())[0, 0, 0, 0] = 0.0  # sign(0) = 0
        next(new.parameters())[0, 0, 0, 0] = 0.0
    l1 = L1Gradient(new, l1_decay, accum)
    ref_losses, new_losses = [], []
    for i, (x, y) in enumerate(batches):
        if i % accum == 0:
            ref.zero_grad(set_to_none=True)
            new.zero_grad(set_to_none=True)
            value = l1.begin_step()
        loss = F.cross_entropy(ref(x), y) + l1_decay * sum(p.abs().sum() for p in ref.parameters())
        (loss / accum).backward()
        ref_losses.append(loss.item())
        loss_new = F.cross_entropy(new(x), y) + value
        (loss_new / accum).backward()
        new_losses.append(loss_new.item())
        if (i + 1) % accum == 0 or i + 1 == len(batches):
            l1.end_step(i % accum + 1)
            for a, b in zip(ref.parameters(), new.parameters()):
                assert _same(a.grad, b.grad)
            with torch.no_grad():  # a step, so that the next group sees new weights
                for a, b in zip(ref.parameters(), new.parameters()):
                    a.sub_(0.1 * a.grad)
                    b.sub_(0.1 * b.grad)
    assert ref_losses == new_losses
    l1.remove()
    new.zero_grad(set_to_none=True)
    F.cross_entropy(new(batches[0][0]), batches[0][1]).backward()  # no term once removed
    ref.zero_grad(set_to_none=True)
    F.cross_entropy(ref(batches[0][0]), batches[0][1]).backward()
    assert all(_same(a.grad, b.grad) for a, b in zip(ref.parameters(), new.parameters()))


def test_l1_gradient_term_reaches_a_parameter_without_a_loss_gradient():
    net = nn.Linear(3, 2)
    spare = nn.Parameter(torch.tensor([-2.0, 0.0, 3.0]))
    net.register_parameter("spare", spare)  # not used by forward
    l1 = L1Gradient(net, 0.5, 2)
    value = l1.begin_step()
    assert value.item() == pytest.approx(0.5 * sum(p.abs().sum().item() for p in net.parameters()))
    for _ in range(2):
        net(torch.ones(1, 3)).sum().backward()
    l1.end_step(2)
    # two micro-batches, each d(0.5 * |p| / 2)/dp = 0.25 * sign(p)
    assert spare.grad.tolist() == [-0.5, 0.0, 0.5]


# --------------------------------------------------------------------------- evaluation and the loop
def test_evaluate_sums_like_the_python_float_sum():
    cfg = get_config("smoke/fixed/alexnet_cifar/digits")
    _, _, test, _ = prepare_data(cfg, "cpu")
    torch.manual_seed(0)
    model = _net_for_digits()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in DeviceLoader(test, 64, shuffle=False, augment=False):
            out = model(x)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    assert evaluate(model, test, 64) == (loss_sum / n, correct / n)


def _net_for_digits():
    return nn.Sequential(nn.Conv2d(3, 4, 5, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 10))


def test_divergence_names_the_batch_inside_an_optimizer_step():
    cfg = get_config("smoke/fixed/alexnet_cifar/digits", epochs=1, accumulation_steps=4, batch_size=32, subset=320,
                     test_subset=100)
    real = F.cross_entropy
    calls = []

    def poisoned(out, y, *args, **kwargs):
        loss = real(out, y, *args, **kwargs)
        calls.append(None)
        return loss * math.inf if len(calls) == 6 else loss  # batch 5: inside the second step

    with mock.patch.object(train.F, "cross_entropy", poisoned):
        record = train.run(cfg, device="cpu")
    assert record["status"] == "diverged"
    assert record["message"] == "non-finite training loss inf at epoch 0, batch 5"
    assert len(record["epochs"]) == 1 and math.isnan(record["epochs"][0]["train_loss"])
