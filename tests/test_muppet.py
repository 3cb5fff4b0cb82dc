"""Tests for adapt.muppet: MuPPET's rules, quantization points, switching policy (docs/method.md §2.3)."""
from __future__ import annotations

import io
import math

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adapt.quant as quant_module
from adapt.experiments.configs import CONFIGS, get_config
from adapt.config import ExperimentConfig
from adapt.layers import QuantizedModel
from adapt.muppet import (
    EPOCHS_PER_PRECISION,
    FLOAT32,
    PRECISION_SCHEDULE,
    STATIC_SCHEDULES,
    MuppetPolicy,
    check_due,
    dfp_codes,
    fp32_lr_rule,
    fp32_lr_schedule,
    gd_check,
    gd_step,
    gradient_diversity,
    gradient_diversity_from_sums,
    mean_gradient_diversity,
    next_precision,
    patience_rule,
    precision_epochs,
    replay_checks,
    scale_exponent,
    switch_epochs_from_durations,
    threshold,
)
from adapt.quant import dynamic_fixed_point


# ============================================================================ pure rules
def test_precision_schedule():
    assert PRECISION_SCHEDULE == (8, 12, 14, 16, 32)
    assert FLOAT32 == 32


def test_threshold_hand_values():
    # T(e) = 1 + 1.5 * exp(-0.1 e)
    assert threshold(0) == pytest.approx(2.5)                        # 1 + 1.5 * 1
    assert threshold(5) == pytest.approx(1.0 + 1.5 * 0.6065306597)   # exp(-0.5) = 0.60653066
    assert threshold(10) == pytest.approx(1.5518191618)              # 1 + 1.5 * exp(-1) = 1 + 0.55181916
    assert threshold(20) == pytest.approx(1.2030029)                 # 1 + 1.5 * 0.13533528
    assert threshold(149) == pytest.approx(1.0 + 1.5 * math.exp(-14.9))
    # custom decay / scale: 1 + 2 * exp(-0.5 * 2) = 1 + 2 * 0.36787944 = 1.73575888
    assert threshold(2, decay=0.5, scale=2.0) == pytest.approx(1.7357588823)
    assert threshold(7, scale=0.0) == 1.0
    # strictly decreasing towards 1
    values = [threshold(e) for e in range(150)]
    assert all(a > b > 1.0 for a, b in zip(values, values[1:]))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            threshold(bad)


def test_gradient_diversity_hand_values():
    t = torch.tensor
    # scalars 1, -1, 1: (1 + 1 + 1) / (1 - 1 + 1)^2 = 3 / 1 = 3
    assert gradient_diversity([t([1.0]), t([-1.0]), t([1.0])]) == pytest.approx(3.0)
    # identical gradients: r * ||g||^2 / (r g)^2 = 1 / r
    assert gradient_diversity([t([1.0]), t([1.0]), t([1.0])]) == pytest.approx(1 / 3)
    # 2, -1, 1: (4 + 1 + 1) / (2)^2 = 6 / 4 = 1.5
    assert gradient_diversity([t([2.0]), t([-1.0]), t([1.0])]) == pytest.approx(1.5)
    # orthogonal (1,0), (0,1): (1 + 1) / ||(1,1)||^2 = 2 / 2 = 1
    assert gradient_diversity([t([1.0, 0.0]), t([0.0, 1.0])]) == pytest.approx(1.0)
    # (3,4), (0,5): (25 + 25) / ||(3,9)||^2 = 50 / 90 = 0.5555...
    assert gradient_diversity([t([3.0, 4.0]), t([0.0, 5.0])]) == pytest.approx(5 / 9)
    # matrices: [[1,2],[0,0]] and [[0,0],[2,1]]: (5 + 5) / (1 + 4 + 4 + 1) = 1
    assert gradient_diversity([t([[1.0, 2.0], [0.0, 0.0]]), t([[0.0, 0.0], [2.0, 1.0]])]) == pytest.approx(1.0)
    # a single gradient is always exactly 1: a resolution of 1 epoch can never violate
    g = torch.randn(7, 3)
    assert gradient_diversity([g]) == 1.0
    # a zero sum: x / 0 = inf; all zeros: 0 / 0 = nan (the release's tensor division)
    assert gradient_diversity([t([1.0]), t([-1.0])]) == math.inf
    assert math.isnan(gradient_diversity([t([0.0]), t([0.0])]))
    with pytest.raises(ValueError):
        gradient_diversity([])
    with pytest.raises(ValueError):
        gradient_diversity([t([1.0]), t([1.0, 2.0])])


def test_gd_check_if_elif():
    # meanGD >= maxGD: the maximum rises, never a violation (equality included)
    assert gd_check(2.0, 1.0, 1.1) == (2.0, False)
    assert gd_check(1.0, 1.0, 0.5) == (1.0, False)
    assert gd_check(0.3, 0.0, 1.0) == (0.3, False)      # the first check after a reset
    # elif maxGD / meanGD > T: 3 / 1 = 3 > 2.5 -> violation, max kept
    assert gd_check(1.0, 3.0, 2.5) == (3.0, True)
    # 3 / 1.5 = 2 < 2.5: no violation, max kept
    assert gd_check(1.5, 3.0, 2.5) == (3.0, False)
    # exactly at the threshold: 2 / 1 = 2, not > 2
    assert gd_check(1.0, 2.0, 2.0) == (2.0, False)
    # nan mean: neither branch fires
    assert gd_check(math.nan, 2.0, 1.0) == (2.0, False)


def test_fp32_lr_rule_hand_values():
    # 15 counted epochs per lr, lr 0.01, min 1e-4: counts 0..13 nothing happens
    lr, count = 0.01, 0
    for expected_count in range(1, 15):
        lr, stop, count = fp32_lr_rule(count, lr, 1e-4)
        assert (lr, stop, count) == (0.01, False, expected_count)
    # the 15th counted epoch (count 14): (14 + 1) % 15 == 0 and 0.01 > 1e-4 -> lr 0.001
    lr, stop, count = fp32_lr_rule(count, lr, 1e-4)
    assert lr == pytest.approx(1e-3) and not stop and count == 15
    # at the 45th counted epoch lr has reached 1e-4 = min: stop
    lr, stop, count = fp32_lr_rule(44, 1e-4, 1e-4)
    assert stop and count == 44
    # the float rounding of 0.1 * 0.1 * 0.1 = 0.0010000000000000002 > 0.001:
    lr3 = 0.1 * 0.1 * 0.1
    assert lr3 > 1e-3
    assert fp32_lr_rule(44, lr3, 1e-3)[1] is True                    # tolerant (default): stop
    lr_e, stop_e, _ = fp32_lr_rule(44, lr3, 1e-3, exact=True)       # released literal test: decay again
    assert not stop_e and lr_e == pytest.approx(1e-4)


def test_switch_epochs_and_presets():
    # 16, 10, 14, 14 epochs: cumulative 16, 26, 40, 54 -> switch after epochs 15, 25, 39, 53
    assert switch_epochs_from_durations((16, 10, 14, 14, 45)) == (15, 25, 39, 53)
    # 22, 22, 10, 15: cumulative 22, 44, 54, 69 -> 21, 43, 53, 68
    assert switch_epochs_from_durations((22, 22, 10, 15, 45)) == (21, 43, 53, 68)
    assert EPOCHS_PER_PRECISION["adapt-paper-alexnet"] == (16, 10, 14, 14, 45)
    assert EPOCHS_PER_PRECISION["adapt-paper-resnet"] == (22, 22, 10, 15, 45)
    assert STATIC_SCHEDULES["adapt-paper-alexnet"] == (15, 25, 39, 53)
    assert STATIC_SCHEDULES["adapt-paper-resnet"] == (21, 43, 53, 68)
    # the released Prec_Epoch_Schedule values (docs/method.md §2.3 table)
    assert STATIC_SCHEDULES["muppet-alexnet-cifar100"] == (41, 50, 59, 71)
    assert STATIC_SCHEDULES["muppet-resnet-cifar100"] == (29, 47, 59, 71)
    assert STATIC_SCHEDULES["muppet-googlenet-cifar100"] == (44, 53, 65, 77)
    assert STATIC_SCHEDULES["muppet-resnet-cifar10"] == (20, 38, 50, 62)
    assert STATIC_SCHEDULES["muppet-googlenet-cifar10"] == (32, 41, 50, 59)
    assert precision_epochs([8, 8, 12, 12, 12, 32]) == [[8, 2], [12, 3], [32, 1]]
    assert precision_epochs([]) == []


def test_scale_exponent_hand_values():
    t = torch.tensor
    # 8 bits: maxVal 127.5, minVal -128.5.  [0.3, -1.2, 0.01]: |127.5 / 0.3| = 425, |-128.5 / -1.2| = 107.08;
    # log2(107.08) = 6.74 -> sf 6
    assert float(scale_exponent(t([0.3, -1.2, 0.01]), 8)) == 6.0
    # [40, -3, 0.5]: 127.5 / 40 = 3.19 (log2 1.67), 128.5 / 3 = 42.8 -> sf 1; at 12 bits 2047.5 / 40 = 51.2 -> 5
    assert float(scale_exponent(t([40.0, -3.0, 0.5]), 8)) == 1.0
    assert float(scale_exponent(t([40.0, -3.0, 0.5]), 12)) == 5.0
    # a large tensor gets a negative exponent: 127.5 / 1000 = 0.1275, log2 = -2.97 -> sf -3 (step 8)
    assert float(scale_exponent(t([1000.0, 3.0]), 8)) == -3.0
    # all zeros: sf 0 (quantize.py L31-L32)
    assert float(scale_exponent(torch.zeros(3), 8)) == 0.0
    # per sample: image 0 all 0.2 -> min(637.5, 642.5) = 637.5, log2 9.32 -> 9; image 1 all 50 -> 2.55 -> 1.
    # One scale for the batch: max 50 sets it (1), and the 0.2 image rounds to 0.2 * 2 = 0.4 -> code 0.
    images = torch.stack([torch.full((2, 2), 0.2), torch.full((2, 2), 50.0)])
    assert scale_exponent(images, 8, per_sample=True).tolist() == [9.0, 1.0]
    assert float(scale_exponent(images, 8)) == 1.0
    for bad in (1, 33, 8.0, True):
        with pytest.raises(ValueError, match="bits"):
            scale_exponent(t([1.0]), bad)
    with pytest.raises(TypeError):
        scale_exponent(torch.tensor([1, 2]), 8)
    with pytest.raises(ValueError, match="non-empty"):
        scale_exponent(torch.zeros(0), 8)


def test_scale_exponent_is_the_quantizers_scale():
    """adapt.quant.dynamic_fixed_point's output is k * 2**-sf with k = round(x * 2**sf), sf = scale_exponent."""
    g = torch.Generator().manual_seed(3)
    for bits in (8, 12, 16):
        for x in (torch.randn(50, generator=g) * 0.01, torch.randn(4, 3, 5, generator=g) * 30,
                  torch.rand(20, generator=g) + 0.5):
            for per_sample in (False, True):
                sf = scale_exponent(x, bits, per_sample)
                view = (-1,) + (1,) * (x.dim() - 1) if per_sample else ()
                scale = torch.exp2(sf.double()).reshape(view)
                codes = dynamic_fixed_point(x, bits, "nearest", per_sample) * scale
                assert torch.equal(codes, torch.round(x.double() * scale)), (bits, per_sample)
                # the extreme lands in the top half of the range: a finer scale would leave it
                top = (x.double().reshape(x.shape[0], -1) if per_sample else x.double().reshape(1, -1))
                ext = (top * scale.reshape(-1, 1)).abs().amax(1)
                assert bool(((ext > 2 ** (bits - 2) - 1) & (ext <= 2 ** (bits - 1) + 0.5)).all())


def test_no_clamp_one_code_out_of_range():
    """127.4 at 8 bits: sf = floor(log2(127.5 / 127.4)) = 0; stochastic rounding gives 128 with p = 0.4."""
    x = torch.full((20_000,), 127.4)
    assert float(scale_exponent(x, 8)) == 0.0
    codes = dynamic_fixed_point(x, 8, "stochastic", generator=torch.Generator().manual_seed(0))
    share = float((codes == 128).float().mean())
    assert set(codes.unique().tolist()) == {127.0, 128.0}
    assert abs(share - 0.4) < 0.02     # 4.6 standard errors of a binomial(20000, 0.4) share
    clamped = dynamic_fixed_point(x, 8, "stochastic", generator=torch.Generator().manual_seed(0), clamp=True)
    assert float(clamped.max()) == 127.0


def test_dfp_codes_hand_values():
    # 8 bits, sf 6 (see above): 0.3 * 64 = 19.2 -> 19, -1.2 * 64 = -76.8 -> -77, 0.01 * 64 = 0.64 -> 1
    k, sf = dfp_codes(torch.tensor([0.3, -1.2, 0.01]), 8, "nearest")
    assert float(sf) == 6.0 and k.tolist() == [19.0, -77.0, 1.0]
    # per sample: 0.2 * 2**9 = 102.4 -> 102; 50 * 2 = 100
    images = torch.stack([torch.full((2, 2), 0.2), torch.full((2, 2), 50.0)])
    k, sf = dfp_codes(images, 8, "nearest", per_sample=True)
    assert sf.tolist() == [9.0, 1.0] and k[:, 0, 0].tolist() == [102.0, 100.0]
    # stochastic: each code is the floor or the ceiling of x * 2**sf
    x = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    k, sf = dfp_codes(x, 8, generator=torch.Generator().manual_seed(2))
    v = x.double() * 2.0 ** float(sf)
    assert bool(((k == torch.floor(v)) | (k == torch.ceil(v))).all())
    assert float(k.abs().max()) <= 128


def test_gradient_diversity_from_sums_and_mean():
    # sums of (1, -1, 1): norms 3, sum 1 -> 3; of (1, 1, 1): 3 / 9
    assert gradient_diversity_from_sums(3.0, torch.tensor([1.0])) == 3.0
    assert gradient_diversity_from_sums(3.0, torch.tensor([3.0])) == pytest.approx(1 / 3)
    assert gradient_diversity_from_sums(2.0, torch.tensor([0.0, 0.0])) == math.inf
    assert math.isnan(gradient_diversity_from_sums(0.0, torch.tensor([0.0])))
    # mean over tensors: (3 + 1/3) / 2 = 5/3; a mapping counts its values
    assert mean_gradient_diversity([3.0, 1 / 3]) == pytest.approx(5 / 3)
    assert mean_gradient_diversity({"a": 3.0, "b": 1.0, "c": 2.0}) == pytest.approx(2.0)
    assert math.isnan(mean_gradient_diversity([]))
    assert mean_gradient_diversity([1.0, math.inf]) == math.inf
    # the list form and the sums agree: (2, -1, 1) -> (4 + 1 + 1) / 2^2 = 1.5
    grads = [torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([1.0])]
    assert gradient_diversity(grads) == gradient_diversity_from_sums(6.0, torch.tensor([2.0])) == 1.5


def test_check_due():
    assert [e for e in range(10) if check_due(e, 3)] == [2, 5, 8]
    assert [e for e in range(7) if check_due(e, 2)] == [1, 3, 5]
    assert all(check_due(e, 1) for e in range(5))
    for bad in ((-1, 3), (1.0, 3), (2, 0), (2, True)):
        with pytest.raises(ValueError):
            check_due(*bad)


def test_patience_rule():
    assert patience_rule(0, True, 2) == (1, False)
    assert patience_rule(1, True, 2) == (2, True)
    assert patience_rule(1, False, 2) == (1, False)     # a clean check does not reset the count
    assert patience_rule(0, True, 1) == (1, True)
    assert patience_rule(0, False, 1) == (0, False)
    with pytest.raises(ValueError, match="patience"):
        patience_rule(0, True, 0)
    with pytest.raises(ValueError, match="violations"):
        patience_rule(-1, True, 2)


def test_gd_step_hand_values():
    # window B of the script below: mean 1/3, max 3 -> ratio 9 > T(5) = 1 + 1.5 exp(-0.5) = 1.9098
    s = gd_step(5, 1 / 3, 3.0, 0, 2)
    assert s["gd_threshold"] == pytest.approx(1.9097959896) and s["gd_ratio"] == pytest.approx(9.0)
    assert (s["max_gd"], s["violated"], s["gd_violations"], s["switch"]) == (3.0, True, 1, False)
    # the second violation at patience 2 switches; the logged count is 2 (before the reset)
    s = gd_step(8, 1.5, 3.0, 1, 2)
    assert s["gd_ratio"] == pytest.approx(2.0) and s["gd_threshold"] == pytest.approx(1.0 + 1.5 * math.exp(-0.8))
    assert (s["violated"], s["gd_violations"], s["switch"]) == (True, 2, True)
    # a rising mean: new maximum, ratio 1, never a violation
    s = gd_step(1, 1.27, 0.0, 0, 1, threshold_scale=0.0)
    assert (s["max_gd"], s["gd_ratio"], s["gd_threshold"], s["switch"]) == (1.27, 1.0, 1.0, False)
    # flat threshold 1 (scale 0): 1.34 / 0.78 = 1.718 > 1 -> violation -> switch at patience 1
    s = gd_step(5, 0.78, 1.34, 0, 1, threshold_scale=0.0)
    assert s["gd_threshold"] == 1.0 and s["gd_ratio"] == pytest.approx(1.34 / 0.78) and s["switch"]
    # the same drop under the released T(5) = 1.91 is no violation
    assert not gd_step(5, 0.78, 1.34, 0, 1)["violated"]


def test_next_precision():
    seq, b = [], 8
    while b is not None:
        seq.append(b)
        b = next_precision(PRECISION_SCHEDULE, b)
    assert seq == [8, 12, 14, 16, 32]
    assert next_precision([8, 12], 12) is None
    with pytest.raises(ValueError, match="not in the schedule"):
        next_precision(PRECISION_SCHEDULE, 10)


def test_fp32_lr_schedule_hand_values():
    # AlexNet: 0.01 -> 1e-4, 15 per lr: 15 counted epochs at each of 0.01, 1e-3, 1e-4, stop at the 45th
    lrs = fp32_lr_schedule(0.01, 1e-4)
    assert len(lrs) == 45
    assert lrs[:15] == [0.01] * 15
    assert lrs[15:30] == pytest.approx([1e-3] * 15) and lrs[30:] == pytest.approx([1e-4] * 15)
    # the smoke profile: 2 per lr -> 6 counted epochs
    assert fp32_lr_schedule(0.01, 1e-4, 2) == pytest.approx([0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4])
    # ResNet, 0.1 -> 1e-3: 45 tolerant, 60 with the release's literal float test (a fourth lr 1e-4)
    assert len(fp32_lr_schedule(0.1, 1e-3)) == 45
    assert len(fp32_lr_schedule(0.1, 1e-3, exact=True)) == 60
    # lr already at the minimum: one block of epochs_per_lr, then stop
    assert fp32_lr_schedule(1e-4, 1e-4, 3) == [1e-4] * 3
    with pytest.raises(ValueError, match="did not stop"):
        fp32_lr_schedule(1.0, 1e-300, max_epochs=50)
    for bad in (dict(lr=0.0, min_lr=1e-4), dict(lr=0.01, min_lr=-1.0), dict(lr=0.01, min_lr=1e-4, epochs_per_lr=0),
                dict(lr=0.01, min_lr=1e-4, gamma=1.0)):
        with pytest.raises(ValueError):
            fp32_lr_schedule(**bad)


SMOKE_RECORD = "results/smoke/muppet-alexnet_cifar-digits-reference-s0-f0/record.json"


def test_committed_smoke_record_follows_the_pure_rules():
    """Replaying the committed smoke record's mean GD through the pure rules gives its logged fields and switches."""
    from pathlib import Path

    from adapt.records import load_record

    rec = load_record(Path(__file__).resolve().parents[1] / SMOKE_RECORD)
    pol = rec["config"]["policy"]
    decay = pol.get("threshold_decay", MuppetPolicy().threshold_decay)
    scale = pol.get("threshold_scale", MuppetPolicy().threshold_scale)
    assert scale == 0.0     # the smoke profile's flat threshold T = 1
    mt = rec["traces"]["muppet"]
    checks = [(e, g) for e, g in zip(mt["epoch"], mt["mean_gd"]) if g is not None]
    fp32_from = mt["bits"].index(FLOAT32)
    assert [e for e, _ in checks] == [e for e in mt["epoch"][:fp32_from] if check_due(e, pol["resolution"])]
    rows = replay_checks(checks, pol["patience"], decay, scale, pol["schedule"])
    assert len(rows) == 11
    for row in rows:
        i = mt["epoch"].index(row["epoch"])
        assert row["bits"] == mt["bits"][i] and row["switched_to"] == mt["switched_to"][i], row["epoch"]
        for key in ("gd_threshold", "max_gd", "gd_ratio", "gd_violations"):
            assert row[key] == pytest.approx(mt[key][i], rel=1e-12), (row["epoch"], key)
    assert [(s["epoch"], s["to_bits"]) for s in rec["traces"]["switches"]] == \
        [(r["epoch"], r["switched_to"]) for r in rows if r["switched_to"]]
    # the float32 phase: the lr of each counted epoch, from the switch epoch on, then the stop
    first = rec["traces"]["switches"][-1]["epoch"]
    lrs = fp32_lr_schedule(rec["config"]["lr"], pol["min_lr"], pol["fp32_epochs_per_lr"], pol["gamma"])
    assert [ep["lr"] for ep in rec["epochs"][first:]] == pytest.approx(lrs)
    assert len(rec["epochs"]) == first + len(lrs)


def test_policy_mean_gd_is_the_pure_functions_on_its_window():
    """The policy's streaming sums give exactly mean_gradient_diversity of gradient_diversity per tensor."""
    q, pol, opt = make(Scripted(), resolution=2, patience=5)
    g = torch.Generator().manual_seed(0)
    window = {"a": [], "b": []}
    for e in range(2):
        a, b = torch.randn(1, generator=g), torch.randn(2, generator=g)
        window["a"].append(a)
        window["b"].append(b)
        q.params["a"].param.grad = a.clone()
        q.params["b"].param.grad = b.clone()
        pol.end_epoch(e, {}, opt)
    expected = mean_gradient_diversity({n: gradient_diversity(v) for n, v in window.items()})
    assert pol.history[-1]["mean_gd"] == expected


# ============================================================================ helpers
class Tiny(nn.Module):
    """conv - BN - ReLU - avgpool - conv - ReLU - adaptive avgpool - linear: every MuPPET layer kind."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.gap(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class Scripted(nn.Module):
    """Two bare parameter tensors whose gradients the tests write by hand."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(1))
        self.b = nn.Parameter(torch.zeros(2))


def make(model, lr=0.1, weight_decay=1e-2, epochs=150, **policy):
    cfg = ExperimentConfig(method="muppet", lr=lr, weight_decay=weight_decay, epochs=epochs, policy=policy)
    pol = MuppetPolicy.from_config(cfg)
    q = QuantizedModel(model, rounding="stochastic", generator=torch.Generator().manual_seed(1))
    pol.setup(model, q, cfg)
    opt = pol.make_optimizer(q.master_parameters(), cfg)
    return q, pol, opt


def train_step(model, q, pol, opt, x, y, step=0):
    """One optimizer step in the training loop's call order (adapt.policies docstring)."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    q.quantize_grads()
    pol.before_step(step, loss.item())
    q.share_grads()
    opt.step()
    q.quantize_weights()
    pol.after_step(step)


def on_grid(t: torch.Tensor, bits: int) -> bool:
    """True iff ``t = k * 2**-s`` for one integer s and integers |k| <= 2**(bits-1) + 1.

    That is MuPPET's unclamped b-bit dynamic-fixed-point grid.  If the true scale is
    sf, then max|t| * 2**sf <= 2**(b-1) + 1, so the finest s the range allows is >= sf
    and t * 2**s is an integer too: testing that one s suffices.
    """
    t = t.detach().double()
    m = float(t.abs().max())
    if m == 0:
        return True
    s = math.floor(math.log2((2 ** (bits - 1) + 1) / m))
    k = t * 2.0 ** s
    return bool(torch.equal(k, torch.round(k)))


# ============================================================================ quantization points
def test_every_quantization_point_in_order(monkeypatch):
    """Record every dynamic-fixed-point call of one training step: what, in which order, at what precision."""
    torch.manual_seed(0)
    model = Tiny()
    q, pol, opt = make(model)
    calls = []
    original = quant_module.dynamic_fixed_point

    def recorder(x, bits, rounding="stochastic", per_sample=False, generator=None, clamp=False):
        calls.append((tuple(x.shape), bits, per_sample, rounding, clamp))
        return original(x, bits, rounding, per_sample, generator, clamp)

    monkeypatch.setattr(quant_module, "dynamic_fixed_point", recorder)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 3])
    train_step(model, q, pol, opt, x, y)
    B = 2
    param_shapes = [tuple(p.shape) for p in model.parameters()]
    expected = (
        [((B, 3, 8, 8), 8, True)]                      # the input batch, one scale per image
        + [((B, 4, 8, 8), 8, False),                    # conv1 output (BN output: not quantized)
           ((B, 4, 4, 4), 8, False),                    # avgpool output
           ((B, 6, 4, 4), 8, False),                    # conv2 output
           ((B, 6, 1, 1), 8, False),                    # adaptive avgpool output
           ((B, 5), 8, False)]                          # linear output
        + [((B, 6), 8, False),                          # backward: grad w.r.t. fc input
           ((B, 6, 4, 4), 8, False),                    # grad w.r.t. adaptive-avgpool input
           ((B, 4, 4, 4), 8, False),                    # grad w.r.t. conv2 input
           ((B, 4, 8, 8), 8, False)]                    # grad w.r.t. avgpool input (conv1's input needs none)
        + [(s, 8, False) for s in param_shapes]         # weight gradients, BN included
        + [(s, 8, False) for s in param_shapes]         # weights from the FP32 masters
    )
    assert [c[:3] for c in calls] == expected
    assert all(c[3] == "stochastic" and c[4] is False for c in calls)   # stochastic rounding, no clamp
    # evaluation: the layers still quantize their outputs, the input is fed in float (released inference loop)
    calls.clear()
    model.eval()
    with torch.no_grad():
        model(x)
    assert [c[:3] for c in calls] == expected[1:6]


def test_quantized_values_on_the_grid():
    """Values seen through hooks: layer outputs, input images, activation and weight gradients, weights."""
    torch.manual_seed(0)
    model = Tiny()
    q, pol, opt = make(model, weight_decay=0.0)
    seen, grads = {}, {}

    def keep_output(name):
        def hook(module, args, output):
            seen[name] = output.detach().clone()
            if output.requires_grad:
                output.register_hook(lambda g: grads.__setitem__(name, g.detach().clone()))
        return hook

    for name in ("conv1", "bn1", "relu1", "pool", "conv2", "gap", "fc"):
        getattr(model, name).register_forward_hook(keep_output(name))   # after the QuantizedModel's hooks
    model.conv1.register_forward_pre_hook(lambda m, args: seen.__setitem__("input", args[0].detach().clone()))
    # image 0 spans ~1000, image 1 ~0.001: one scale for the batch would flatten image 1 to zero
    x = torch.randn(2, 3, 8, 8)
    x[0] *= 1000.0
    x[1] *= 0.001
    y = torch.tensor([1, 4])
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()

    # per-image input scales
    xi = seen["input"]
    for i in range(2):
        assert on_grid(xi[i], 8) and not torch.equal(xi[i], x[i])
        assert float((xi[i] - x[i]).abs().max()) <= float(x[i].abs().max()) / 2 ** 6   # one step of 8 bits
    assert float(xi[1].abs().max()) > 0
    assert not on_grid(xi, 8)   # the batch as a whole is not on one 8-bit grid
    # outputs of conv, avgpool, adaptive avgpool, linear: exactly 8 bits (on the grid, not on a 7-bit one)
    for name in ("conv1", "pool", "conv2", "fc"):
        assert on_grid(seen[name], 8), name
        assert not on_grid(seen[name], 7), name
    assert on_grid(seen["gap"], 8)
    # BN is not quantized (its output is not on any coarse grid)
    assert not on_grid(seen["bn1"], 16)
    # activation gradients: the gradient reaching relu1's output is the avgpool input gradient -> quantized;
    # the gradient reaching conv1's output has gone through (unquantized) BN -> not on a grid
    assert on_grid(grads["relu1"], 8) and not on_grid(grads["relu1"], 7)
    assert on_grid(grads["gap"], 8)       # the fc input gradient, reshaped
    assert not on_grid(grads["conv1"], 16)
    # weight gradients (no weight decay in this test): every tensor on its own 8-bit grid
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    q.quantize_grads()
    pol.before_step(0, 0.0)
    for n, p in model.named_parameters():
        assert on_grid(p.grad, 8), n
        assert float((p.grad - raw[n]).abs().max()) <= float(raw[n].abs().max()) / 2 ** 6, n
    # weights: Q(master) after the step, at most one 8-bit step from the master
    q.share_grads()
    opt.step()
    q.quantize_weights()
    for n, qp in q.params.items():
        assert on_grid(qp.param, 8), n
        assert float((qp.param.detach() - qp.master).abs().max()) <= float(qp.master.abs().max()) / 2 ** 6, n
        assert not torch.equal(qp.param, qp.master) or qp.param.numel() <= 6


def test_weight_decay_is_added_to_the_quantized_gradient_with_the_quantized_weights():
    torch.manual_seed(0)
    model = Tiny()
    wd = 0.05
    q, pol, opt = make(model, weight_decay=wd)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)    # the optimizer adds none itself
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(torch.randn(3, 3, 8, 8)), torch.tensor([0, 1, 2])).backward()
    q.quantize_grads()
    quantized = {n: p.grad.clone() for n, p in model.named_parameters()}
    pol.before_step(0, 0.0)
    for n, qp in q.params.items():
        assert on_grid(qp.param, 8)                                    # p.data: the quantized weights
        expected = quantized[n].clone().add_(qp.param.data, alpha=wd)
        assert torch.equal(qp.param.grad, expected), n
        assert not torch.equal(qp.param.data, qp.master) or qp.param.numel() <= 6


def test_eval_inputs_option():
    torch.manual_seed(0)
    model = Tiny()
    q, pol, opt = make(model, quantize_eval_inputs=True)
    got = {}
    model.conv1.register_forward_pre_hook(lambda m, args: got.__setitem__("x", args[0].clone()))
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        model(x)
    assert on_grid(got["x"][0], 8) and not torch.equal(got["x"], x)


def test_switch_to_float32_copies_the_masters_and_stops_quantizing():
    torch.manual_seed(0)
    model = Tiny()
    q, pol, opt = make(model, static_schedule=[0, 1, 2, 3])
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    for epoch, bits in enumerate((8, 12, 14, 16)):
        assert pol.bits == bits
        train_step(model, q, pol, opt, x, y, step=epoch)
        for qp in q.params.values():
            assert qp.weight_format.bits == bits and qp.grad_format.bits == bits
        assert on_grid(q.params["conv2.weight"].param, bits)
        assert not on_grid(q.params["conv2.weight"].param, bits - 1)
        pol.end_epoch(epoch, {}, opt)
    assert pol.bits == 32 and pol.in_float32
    for qp in q.params.values():
        assert torch.equal(qp.param.data, qp.master)
        assert qp.weight_format is None and qp.grad_format is None
    assert q.input_format is None
    assert all(l.output_format is None and l.input_grad_format is None for l in q.layers.values())
    # a float32 step: unquantized outputs and gradients; weights stay equal to the masters
    q.remove()
    plain = Tiny()
    plain.load_state_dict(model.state_dict())
    model.train()
    plain.train()
    torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)


# ============================================================================ scripted policy
def feed(pol, q, opt, epoch, a, b=(0.5, 0.5)):
    """End epoch ``epoch`` with last-mini-batch gradients ``a`` (tensor a) and ``b`` (tensor b)."""
    q.params["a"].param.grad = torch.tensor([float(a)])
    q.params["b"].param.grad = torch.tensor([float(v) for v in b])
    return pol.end_epoch(epoch, {}, opt)


def test_mean_over_tensors():
    q, pol, opt = make(Scripted(), resolution=3, patience=2)
    # tensor a: 1, 1, 1 -> 3 / 9 = 1/3; tensor b: (1,0), (0,1), (0,0) -> 2 / ||(1,1)||^2 = 1; mean 2/3
    for e, (a, b) in enumerate([(1, (1, 0)), (1, (0, 1)), (1, (0, 0))]):
        feed(pol, q, opt, e, a, b)
    h = pol.history[-1]
    assert h["mean_gd"] == pytest.approx(2 / 3)
    assert h["max_gd"] == pytest.approx(2 / 3) and h["gd_ratio"] == pytest.approx(1.0)
    assert h["gd_threshold"] == pytest.approx(threshold(2))
    assert [x["mean_gd"] for x in pol.history[:2]] == [None, None]   # no check before (e+1) % 3 == 0


def test_grads_are_cloned():
    q, pol, opt = make(Scripted(), resolution=3, patience=2)
    feed(pol, q, opt, 0, 1.0)
    q.params["a"].param.grad.fill_(-100.0)      # the next epoch writes in place into the same tensor
    feed(pol, q, opt, 1, q.params["a"].param.grad.fill_(1.0).item())
    feed(pol, q, opt, 2, 1.0)
    # a: 1, 1, 1 -> 1/3; b: three times (0.5, 0.5) -> 1/3
    assert pol.history[-1]["mean_gd"] == pytest.approx(1 / 3)


# Windows of 3 epochs (resolution 3, patience 2); the same gradient for every b epoch (GD_b = 1/3 each
# window) is avoided by giving tensor b the same sequence as a, so mean GD = GD_a.
WINDOWS = [
    # (gradients of the window's 3 epochs, GD = sum g^2 / (sum g)^2)
    ((1, -1, 1), 3.0),          # A e0-2:   3/1; first check: max 0 -> 3
    ((1, 1, 1), 1 / 3),         # B e3-5:   3/9; 3 / (1/3) = 9 > T(5) = 1.9098 -> violation 1
    ((2, -1, 1), 1.5),          # C e6-8:   6/4; 3 / 1.5 = 2 > T(8) = 1.6740 -> violation 2 -> 8 -> 12 after e8
    ((2, -1, 1), 1.5),          # D e9-11:  max reset to 0 -> 1.5
    ((1, 1, 1), 1 / 3),         # E e12-14: 1.5 / (1/3) = 4.5 > T(14) = 1.3699 -> violation 1
    ((1, -1, 1), 3.0),          # F e15-17: 3 >= 1.5 -> max 3, no violation; violations stay 1 (cumulative)
    ((3, -1, 1), 11 / 9),       # G e18-20: 11/9; 3 / (11/9) = 2.4545 > T(20) = 1.2030 -> 2 -> 12 -> 14 after e20
    ((2, -1, 1), 1.5),          # H e21-23: max reset -> 1.5
    ((2, -1, 1.1), 6.21 / 4.41),  # I e24-26: 6.21/4.41 = 1.40816; 1.5 / 1.40816 = 1.0652 < T(26) = 1.1114: none
    ((1, 1, 1), 1 / 3),         # J e27-29: 4.5 > T(29) = 1.0825 -> violation 1
    ((1, 1, 1), 1 / 3),         # K e30-32: 4.5 > T(32) -> violation 2 -> 14 -> 16 after e32
    ((2, -1, 1), 1.5),          # L e33-35: max reset -> 1.5
    ((1, 1, 1), 1 / 3),         # M e36-38: violation 1
    ((1, 1, 1), 1 / 3),         # N e39-41: violation 2 -> 16 -> float32 after e41
]
EXPECTED_VIOLATIONS = [0, 1, 2, 0, 1, 1, 2, 0, 0, 1, 2, 0, 1, 2]   # logged at each check (before a reset)
EXPECTED_SWITCHES = {8: 12, 20: 14, 32: 16, 41: 32}


def run_script(pol, q, opt, windows=WINDOWS, b_same=True):
    epoch = 0
    for grads, _ in windows:
        for g in grads:
            feed(pol, q, opt, epoch, g, (g, g) if b_same else (0.5, 0.5))
            epoch += 1
    return epoch


def test_scripted_adaptive_switches_at_the_rule_epochs():
    q, pol, opt = make(Scripted(), lr=0.01, resolution=3, patience=2)
    run_script(pol, q, opt)
    checks = [h for h in pol.history if h["mean_gd"] is not None]
    assert [h["epoch"] for h in checks] == [3 * i + 2 for i in range(len(WINDOWS))]
    for h, (grads, gd), v in zip(checks, WINDOWS, EXPECTED_VIOLATIONS):
        assert h["mean_gd"] == pytest.approx(gd, rel=1e-6), h
        assert h["gd_threshold"] == pytest.approx(threshold(h["epoch"]))
        assert h["gd_violations"] == v, h
    switches = {s["epoch"]: s["to_bits"] for s in pol.switches}
    assert switches == EXPECTED_SWITCHES
    bits = [h["bits"] for h in pol.history]
    # 8 bits for epochs 0-8, 12 for 9-20, 14 for 21-32, 16 for 33-41
    assert precision_epochs(bits) == [[8, 9], [12, 12], [14, 12], [16, 9]]
    assert pol.bits == 32
    # in float32 no gradient diversity is computed any more
    stop = feed(pol, q, opt, 42, 5.0)
    assert pol.history[-1]["mean_gd"] is None and not stop


def test_replay_checks_gives_the_scripted_switches():
    """replay_checks on the windows' hand-computed GDs: the violations and switches derived in WINDOWS."""
    checks = [(3 * i + 2, gd) for i, (_, gd) in enumerate(WINDOWS)]
    rows = replay_checks(checks, patience=2)
    assert [r["gd_violations"] for r in rows] == EXPECTED_VIOLATIONS
    assert {r["epoch"]: r["switched_to"] for r in rows if r["switched_to"]} == EXPECTED_SWITCHES
    assert [r["bits"] for r in rows][:4] == [8, 8, 8, 12]
    assert rows[3]["max_gd"] == pytest.approx(1.5)           # window D: max reset to 0 by the switch -> 1.5
    assert rows[1]["gd_threshold"] == pytest.approx(threshold(5))
    # and the policy fed the same gradients logs the same fields
    q, pol, opt = make(Scripted(), lr=0.01, resolution=3, patience=2)
    run_script(pol, q, opt)
    logged = [h for h in pol.history if h["mean_gd"] is not None]
    for r, h in zip(rows, logged):
        for key in ("bits", "max_gd", "gd_ratio", "gd_threshold", "gd_violations", "switched_to"):
            assert r[key] == pytest.approx(h[key], rel=1e-6) if isinstance(h[key], float) else r[key] == h[key], key
    # nothing is checked in float32 (the switch after epoch 41 ends the replay), and epochs must increase
    assert len(replay_checks(checks + [(44, 0.1), (47, 0.1)], patience=2)) == len(WINDOWS)
    with pytest.raises(ValueError, match="increasing"):
        replay_checks([(2, 1.0), (2, 1.0)], patience=2)
    # a schedule that ends before float32 stays at its last entry; the count still restarts
    rows = replay_checks([(1, 2.0), (3, 1.0), (5, 2.0), (7, 1.0)], patience=1, threshold_scale=0.0, schedule=(8, 12))
    assert [r["switched_to"] for r in rows] == [None, 12, None, None]
    assert [r["bits"] for r in rows] == [8, 8, 12, 12] and rows[-1]["switch"] and rows[-1]["gd_violations"] == 1


def test_non_cumulative_reading_would_not_switch_at_20():
    """Window F does not violate; had it reset the count, G would be the first violation, not the second."""
    q, pol, opt = make(Scripted(), lr=0.01, resolution=3, patience=2)
    run_script(pol, q, opt, WINDOWS[:7])
    assert [s["epoch"] for s in pol.switches] == [8, 20]
    assert pol.violations == 0


def test_scripted_float32_stop_rule_after_adaptive_switches():
    # continue the script into float32: the count starts in the switch epoch 41 (trained at 16 bits)
    q, pol, opt = make(Scripted(), lr=0.01, resolution=3, patience=2, min_lr=1e-4)
    epoch = run_script(pol, q, opt)
    assert epoch == 42 and pol.history[-1]["fp32_epochs_counted"] == 1
    lrs = {}
    while True:
        lrs[epoch] = opt.param_groups[0]["lr"]
        if feed(pol, q, opt, epoch, 1.0):
            break
        epoch += 1
        assert epoch < 200
    # counted epochs 41..85 = 45: lr x0.1 after the 15th (epoch 55) and 30th (epoch 70); stop at the 45th (85)
    assert epoch == 41 + 44 == 85
    assert lrs[55] == pytest.approx(0.01) and lrs[56] == pytest.approx(1e-3)
    assert lrs[70] == pytest.approx(1e-3) and lrs[71] == pytest.approx(1e-4)
    assert lrs[85] == pytest.approx(1e-4)
    assert pol.history[-1]["stop"] and pol.history[-1]["fp32_epochs_counted"] == 45
    assert pol.summary()["stopped_by_policy"]


def test_resolution_one_never_switches():
    """A 1-epoch window has GD = ||g||^2 / ||g||^2 = 1 exactly at every check: never a violation."""
    q, pol, opt = make(Scripted(), resolution=1, patience=1)
    for e in range(20):
        feed(pol, q, opt, e, (-1) ** e * (e + 1), (e + 1, -3 * e - 2))
    assert all(h["mean_gd"] == 1.0 for h in pol.history)
    assert pol.switches == [] and pol.bits == 8


@pytest.mark.parametrize("lr,min_lr,exact,stop_epoch", [
    (0.01, 1e-4, False, 47),   # AlexNet: switch after e3, counted epochs 3..47 = 45
    (0.01, 1e-4, True, 47),    # 0.01 * 0.1 * 0.1 == 1e-4 exactly: same
    (0.1, 1e-3, False, 47),    # ResNet, tolerant: 45 counted epochs
    (0.1, 1e-3, True, 62),     # ResNet, literal float test: a third decay, 60 counted epochs (3..62)
])
def test_static_float32_stop_rule(lr, min_lr, exact, stop_epoch):
    q, pol, opt = make(Scripted(), lr=lr, static_schedule=[0, 1, 2, 3], min_lr=min_lr, exact_lr_compare=exact)
    lrs, epoch = [], 0
    while True:
        lrs.append(opt.param_groups[0]["lr"])
        if feed(pol, q, opt, epoch, 1.0):
            break
        epoch += 1
        assert epoch < 200
    assert epoch == stop_epoch
    assert [h["bits"] for h in pol.history[:5]] == [8, 12, 14, 16, 32]
    # lr constant until the 15th counted epoch (epoch 17) has ended
    assert all(x == lr for x in lrs[:18])
    assert lrs[18] == pytest.approx(lr * 0.1) and lrs[33] == pytest.approx(lr * 0.01)
    assert all(h["mean_gd"] is None for h in pol.history)    # static mode computes no GD


@pytest.mark.parametrize("preset", sorted(STATIC_SCHEDULES))
def test_static_presets_switch_at_their_epochs(preset):
    q, pol, opt = make(Scripted(), lr=0.01, static_schedule=preset)
    epoch = 0
    while not feed(pol, q, opt, epoch, 1.0):
        epoch += 1
    switch_epochs = list(STATIC_SCHEDULES[preset])
    assert [s["epoch"] for s in pol.switches] == switch_epochs
    assert [s["to_bits"] for s in pol.switches] == [12, 14, 16, 32]
    assert epoch == switch_epochs[-1] + 44                      # 45 counted epochs from the switch epoch
    per = precision_epochs([h["bits"] for h in pol.history])
    if preset in EPOCHS_PER_PRECISION:
        # AdaPT's table: 16/10/14/14 at 8/12/14/16 bits; its 45 float32 epochs count the switch epoch,
        # which MuPPET trains at 16 bits: 44 are trained in float32
        durations = EPOCHS_PER_PRECISION[preset]
        assert per == [[8, durations[0]], [12, durations[1]], [14, durations[2]], [16, durations[3]],
                       [32, durations[4] - 1]]


def test_static_schedule_validation():
    with pytest.raises(ValueError, match="unknown static schedule"):
        MuppetPolicy(static_schedule="nope")
    with pytest.raises(ValueError, match="one per switch"):
        MuppetPolicy(static_schedule=[1, 2, 3])
    with pytest.raises(ValueError, match="increasing"):
        MuppetPolicy(static_schedule=[1, 1, 2, 3])
    with pytest.raises(ValueError):
        MuppetPolicy(schedule=(8, 32, 16))
    with pytest.raises(ValueError):
        MuppetPolicy(resolution=0)
    assert MuppetPolicy(schedule=(8, 12, -1)).schedule == [8, 12, 32]
    with pytest.raises(ValueError, match="bogus"):  # the config rejects it at construction already
        ExperimentConfig(method="muppet", policy={"resolution": 3, "bogus": 1})
    with pytest.raises(ValueError, match="bogus"):  # and so does the policy, given a config that got past
        MuppetPolicy.from_config(types.SimpleNamespace(policy={"resolution": 3, "bogus": 1}, lr=0.1))


def test_named_configs_build():
    names = [n for n in CONFIGS if "/muppet/" in n]
    assert names
    for n in names:
        cfg = get_config(n)
        pol = MuppetPolicy.from_config(cfg)
        assert pol.schedule == [8, 12, 14, 16, 32] and pol.controls_lr
        if n.startswith("paper/"):
            assert (pol.resolution, pol.patience, pol.fp32_epochs_per_lr, pol.gamma) == (3, 2, 15, 0.1)
            assert pol.static_schedule is None
            assert cfg.batch_size == 128 and cfg.momentum == 0.9 and cfg.weight_decay == 1e-4
            assert pol.min_lr_option == pytest.approx(cfg.lr / 100)
    pol = MuppetPolicy.from_config(get_config("paper/muppet/alexnet_cifar/cifar10").replace(
        policy={"static_schedule": "adapt-paper-alexnet"}))
    assert pol.static_schedule == [15, 25, 39, 53]


def _plain(obj):
    """Only tensors, ints, floats, str, bool, None, lists and dicts (str keys)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return obj is None or isinstance(obj, (torch.Tensor, int, float, str, bool))


def test_state_dict_round_trip():
    q, pol, opt = make(Scripted(), lr=0.01, resolution=3, patience=2)
    windows = WINDOWS
    # stop in the middle of window E (after e13): window sums are non-empty, one violation pending
    epoch = 0
    flat = [g for grads, _ in windows for g in grads]
    for g in flat[:14]:
        feed(pol, q, opt, epoch, g, (g, g))
        epoch += 1
    state = pol.state_dict()
    assert _plain(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    q2, pol2, opt2 = make(Scripted(), lr=0.01, resolution=3, patience=2)
    pol2.load_state_dict(loaded)
    assert pol2.bits == 12 and q2.params["a"].weight_format.bits == 12
    assert pol2.window_size == 2
    for g in flat[14:]:
        feed(pol, q, opt, epoch, g, (g, g))
        feed(pol2, q2, opt2, epoch, g, (g, g))
        epoch += 1
    assert pol2.history == pol.history
    assert pol2.switches == pol.switches
    assert pol2.summary() == pol.summary()


def test_epoch_log_and_traces_fields():
    q, pol, opt = make(Scripted(), lr=0.01, resolution=3, patience=2)
    run_script(pol, q, opt, WINDOWS[:3])
    log = pol.epoch_log()
    assert set(log) == {"bits", "mean_gd", "max_gd", "gd_ratio", "gd_threshold", "gd_violations", "switched_to"}
    assert log["bits"] == 8 and log["switched_to"] == 12 and log["gd_violations"] == 2
    tr = pol.traces()
    assert set(tr) == {"tensors", "muppet", "switches"}
    assert tr["muppet"]["bits"] == [8] * 9 and tr["muppet"]["epoch"] == list(range(9))
    assert tr["switches"] == [{"epoch": 8, "step": 0, "from_bits": 8, "to_bits": 12}]


# ============================================================================ end to end
def _strip_times(record):
    out = dict(record)
    for k in ("wall_time_s", "started", "finished", "environment"):
        out.pop(k, None)
    out["epochs"] = [{k: v for k, v in e.items() if k != "time_s"} for e in record["epochs"]]
    return out


@pytest.mark.slow
def test_smoke_end_to_end_on_digits():
    """The registered smoke config through adapt.train.run: climb, stop rule, traces, reproducibility.

    About 23 AlexNet epochs on digits (~35 s on 2 idle cores) plus a 7-epoch rerun with the same seed,
    which must reproduce the first 7 epochs exactly (they include a check without a switch, the first
    switch 8 -> 12 and a 12-bit epoch).  Resuming from a checkpoint is the loop's test; the policy's
    checkpoint round trip is test_state_dict_round_trip.
    """
    from adapt.models import alexnet_cifar
    from adapt.train import run

    cfg = get_config("smoke/muppet/alexnet_cifar/digits")
    rec = run(cfg, device="cpu")
    assert rec["status"] == "completed" and rec["message"] == "stopped by the precision policy"
    epochs = rec["epochs"]
    bits = [e["bits"] for e in epochs]
    # the precision climbs through the whole schedule, in order, and ends in float32
    assert [b for i, b in enumerate(bits) if i == 0 or b != bits[i - 1]] == [8, 12, 14, 16, 32]
    assert all(a <= b for a, b in zip(bits, bits[1:]))
    switches = rec["traces"]["switches"]
    assert [s["to_bits"] for s in switches] == [12, 14, 16, 32]
    for s in switches:
        e = epochs[s["epoch"]]
        # each switch at a check epoch ((e + 1) % 2 == 0) with a violation: max / mean > T = 1
        assert (s["epoch"] + 1) % 2 == 0 and e["switched_to"] == s["to_bits"]
        assert e["gd_violations"] == 1 and e["gd_ratio"] > e["gd_threshold"] == 1.0
    # float32 stop rule at 2 epochs per lr, lr 0.01 -> 1e-4: 6 counted epochs from the switch epoch
    fp32_switch = switches[-1]["epoch"]
    assert len(epochs) == fp32_switch + 6
    assert [e["lr"] for e in epochs[fp32_switch + 1:]] == pytest.approx([0.01, 1e-3, 1e-3, 1e-4, 1e-4])
    assert all(e["lr"] == 0.01 for e in epochs[: fp32_switch + 2])
    # traces: per-epoch MuPPET fields and the per-tensor trace the cost model reads
    mt = rec["traces"]["muppet"]
    assert mt["bits"] == bits and len(mt["mean_gd"]) == len(epochs)
    assert all((g is not None) == ((i + 1) % 2 == 0 and i <= fp32_switch) for i, g in enumerate(mt["mean_gd"]))
    tt = rec["traces"]["tensors"]
    assert tt["names"] == [n for n, _ in alexnet_cifar(10).named_parameters()]
    steps_per_epoch = epochs[0]["steps"]
    for step, row, frac in zip(tt["step"], tt["word_length"], tt["fractional_length"]):
        assert len(set(row)) == 1 and all(f is None for f in frac)          # one global precision
        assert row[0] == bits[step // steps_per_epoch]
    assert set(r[0] for r in tt["word_length"]) == {8, 12, 14, 16, 32}
    assert rec["policy"]["epochs_per_precision"][-1][0] == 32 and rec["policy"]["stopped_by_policy"]
    # accuracy: chance is 0.10; the bar 0.5 is far below what the run reaches (about 0.94 on the
    # reference machine, and above 0.7 from the 12-bit phase on), so it fails only on a real break
    assert rec["final"]["final_test_acc"] >= 0.5
    # same seed -> the same record: a rerun stopped after 7 epochs matches the first 7 epochs exactly
    assert switches[0]["epoch"] < 6
    part = run(cfg, device="cpu", epoch_limit=7)
    assert part["status"] == "interrupted" and len(part["epochs"]) == 7
    assert _strip_times(part)["epochs"] == _strip_times(rec)["epochs"][:7]
    assert part["traces"]["muppet"] == {k: v[:7] for k, v in mt.items()}
    assert part["traces"]["switches"] == [s for s in switches if s["epoch"] < 7]
    n = len(part["traces"]["tensors"]["step"])
    assert n > 0 and part["traces"]["tensors"] == {
        k: (v[:n] if isinstance(v, list) and k not in ("names", "numel", "is_weight") else v) for k, v in tt.items()}


def test_trace_figure_draws_the_released_threshold_beside_the_runs():
    """released_threshold=True adds T(e) = 1 + 1.5 exp(-0.1 e) over the fixed-point epochs; the run's line stays."""
    from pathlib import Path

    from adapt.analysis import plots
    from adapt.records import load_record

    rec = load_record(Path(__file__).resolve().parents[1] / SMOKE_RECORD)
    fixed = [e for e, b in zip(rec["traces"]["muppet"]["epoch"], rec["traces"]["muppet"]["bits"]) if b != FLOAT32]
    bottom = plots.muppet_trace_figure(rec, released_threshold=True).axes[1]
    lines = {line.get_label(): line for line in bottom.get_lines()}
    released = lines["released T(e) = 1 + 1.5·exp(−0.1·e)"]
    assert list(released.get_xdata()) == [e + 1.0 for e in fixed]             # x = epochs completed
    assert list(released.get_ydata()) == pytest.approx([1 + 1.5 * math.exp(-0.1 * e) for e in fixed])
    assert set(lines["threshold T(e)"].get_ydata()) == {1.0}                   # the run's own: flat at 1
    default = plots.muppet_trace_figure(rec).axes[1]
    assert not any(line.get_label().startswith("released") for line in default.get_lines())
