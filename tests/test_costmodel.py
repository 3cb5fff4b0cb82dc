"""The analytical cost model (adapt.costmodel): MAdds tables, and every figure on hand-computed traces."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from adapt import costmodel as cm
from adapt.models import alexnet_cifar, resnet20


# --------------------------------------------------------------------------- tiny nets
class TinyA(nn.Module):
    """conv(1->2, k3, p1, bias) - ReLU - MaxPool(2) - flatten - Linear(8 -> 3), input 1x4x4."""

    def __init__(self, act=nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = act()
        self.pool = nn.MaxPool2d(2, 2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


class TinyB(nn.Module):
    """conv(2->4, k3, s2, p1, no bias) - BN - ReLU - AvgPool(2) - flatten - Linear(16 -> 2), input 2x8x8."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


def test_tiny_a_reference_by_hand():
    t = cm.layer_costs(TinyA(), (1, 4, 4), "reference")
    # carried size (H, W, C) starts at (4, 4, 1)
    # conv pass 1: 2*H*W*(C_in*k_h + 1)*C_out*C = 2*4*4*(1*3+1)*2*1 = 256; next is ReLU: + Ho*Wo*C = 4*4*1 = 16
    # conv pass 2 on the carried (4, 4, 2): 2*4*4*4*2*2 = 512; + 4*4*2 = 32
    # pool on (4, 4, 2): Ho*Wo*C = 2*2*2 = 8 (next is the linear: no term)
    # linear 8 -> 3: 2*m*n - m = 48 - 8 = 40
    assert t["madds"].tolist() == [272, 544, 8, 40]
    assert t["act_term"].tolist() == [16, 32, 0, 0]
    assert t["pass"].tolist() == [1, 2, 1, 1]
    assert t["tensor_size"].tolist() == [18, 18, 32, 8]  # k*k*C_out twice; H*W*C of the carried map
    assert cm.total_madds(TinyA(), (1, 4, 4), "reference") == 864


def test_tiny_a_tanh_term_is_four_per_element():
    t = cm.layer_costs(TinyA(act=nn.Tanh), (1, 4, 4), "reference")
    assert t["act_term"].tolist() == [4 * 16, 4 * 32, 0, 0]


def test_tiny_a_corrected_by_hand():
    t = cm.layer_costs(TinyA(), (1, 4, 4), "corrected")
    assert t["layer"].tolist() == ["conv", "act", "pool", "fc"]
    # conv: Ho*Wo*C_out*C_in*k*k = 4*4*2*1*9 = 288 MACs; bias 4*4*2 = 32
    # ReLU: 2*4*4 = 32; MaxPool 2x2: outputs 2*2*2 = 8, 3 comparisons each = 24
    # linear: 8*3 = 24 MACs; bias 3
    assert t["macs"].tolist() == [288, 0, 0, 24]
    assert t["small_ops"].tolist() == [32, 32, 24, 3]
    assert int(t["madds"].sum()) == 403
    assert t["needs_input_grad"].tolist() == [False, True, True, True]
    assert cm.flop_counter_macs(TinyA(), (1, 4, 4)) == 312


def test_tiny_b_both_variants_by_hand():
    ref = cm.layer_costs(TinyB(), (2, 8, 8), "reference")
    # (8, 8, 2): conv pass 1: 2*8*8*(2*3+1)*4*2 = 7168 -> (4, 4, 4) [(8+2-3)//2+1 = 4]; next is BN: no term
    # conv pass 2 on (4, 4, 4): 2*4*4*7*4*4 = 3584 -> (2, 2, 4): the doubled conv shrinks the map twice
    # BN on (2, 2, 4): 4*2*2*4 = 64, next ReLU + 2*2*4 = 16
    # AvgPool(2) on (2, 2, 4): 1*1*4 = 4; linear 16 -> 2: 2*16*2 - 16 = 48
    assert ref["madds"].tolist() == [7168, 3584, 80, 4, 48]
    assert ref["ref_out"].tolist()[:2] == [(4, 4, 4), (2, 2, 4)]
    cor = cm.layer_costs(TinyB(), (2, 8, 8), "corrected")
    # conv 4*4*4*2*9 = 1152; BN 4*4*4 = 64; ReLU 64; AvgPool outputs 4*2*2 = 16 times 4 = 64; linear 32 + 2
    assert cor["macs"].tolist() == [1152, 0, 0, 0, 32]
    assert cor["small_ops"].tolist() == [0, 64, 64, 64, 2]
    assert cor["output_shape"].tolist()[0] == (4, 4, 4)


@pytest.mark.parametrize("make", [alexnet_cifar, resnet20, TinyA, TinyB])
def test_corrected_macs_equal_the_flop_counter(make):
    model = make() if make in (TinyA, TinyB) else make(10)
    shape = {TinyA: (1, 4, 4), TinyB: (2, 8, 8)}.get(make, (3, 32, 32))
    t = cm.layer_costs(model, shape, "corrected")
    assert int(t["macs"].sum()) == cm.flop_counter_macs(model, shape)
    # backward: the activation-gradient GEMM (not for a layer fed by the input) + the weight-gradient GEMM
    bwd = (t["macs"] * t["needs_input_grad"] + t["macs"] * t["has_weight"]).sum()
    assert int(bwd) == cm.flop_counter_macs(model, shape, backward=True)


@pytest.mark.parametrize("name", ["lenet5", "alexnet_mnist", "resnet20_mnist"])
def test_corrected_macs_equal_the_flop_counter_on_the_sdm_models(name):
    """The SDM models (1x32x32 inputs; LeNet-5's Tanh and AvgPool), forward and backward."""
    from adapt.models import build_model

    model, shape = build_model(name, 10, init="torch"), (1, 32, 32)
    t = cm.layer_costs(model, None, "corrected")  # the input shape is taken from conv1
    assert tuple(t["input_shape"].iloc[0]) == shape
    assert int(t["macs"].sum()) == cm.flop_counter_macs(model, shape)
    bwd = (t["macs"] * t["needs_input_grad"] + t["macs"] * t["has_weight"]).sum()
    assert int(bwd) == cm.flop_counter_macs(model, shape, backward=True)


def test_model_totals_and_released_quirks():
    alex, res = alexnet_cifar(10), resnet20(10)
    a_ref, a_cor = cm.layer_costs(alex, variant="reference"), cm.layer_costs(alex, variant="corrected")
    r_ref, r_cor = cm.layer_costs(res, variant="reference"), cm.layer_costs(res, variant="corrected")
    assert int(a_cor["macs"].sum()) == 14_957_056 and int(a_cor["madds"].sum()) == 14_984_714
    assert int(r_cor["macs"].sum()) == 40_813_184 and int(r_cor["madds"].sum()) == 41_206_410
    assert int(a_ref["madds"].sum()) == 62_756_352
    assert int(r_ref["madds"].sum()) == 445_481_408
    # every conv twice: AlexNet 5 convs -> 10 rows + 3 pools + 1 linear; ResNet 21 convs -> 42 + 21 BN + pool + fc
    assert len(a_ref) == 14 and (a_ref["kind"] == "conv").sum() == 10
    assert len(r_ref) == 65 and (r_ref["kind"] == "conv").sum() == 42
    # AlexNet conv1 (stride 4): pass 1 on 32x32 -> 8x8, pass 2 on the shrunk 8x8 -> 2x2; the maps then
    # reach 0x0 at pool2 and conv3..conv5 and pool3 contribute nothing
    assert a_ref["ref_out"].tolist()[:2] == [(8, 8, 64), (2, 2, 64)]
    assert a_ref.loc[a_ref["layer"].isin(["features.conv3", "features.conv4", "features.conv5"]), "madds"].sum() == 0
    assert int(a_ref.iloc[0]["madds"]) == 2 * 32 * 32 * (3 * 11 + 1) * 64 * 3 + 8 * 8 * 3
    # ResNet: the stride-2 conv of layer2.0 halves the map twice (32 -> 16 -> 8)
    row = r_ref[r_ref["layer"] == "layer2.0.conv1"]
    assert row["ref_out"].tolist() == [(16, 16, 32), (8, 8, 32)]


class _ReleasedBlock(nn.Module):
    """The released QBasicBlock_FP's registration order: one shared ReLU registered after bn1."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _ReleasedResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks.append(nn.Sequential(*[_ReleasedBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                          for i in range(3)]))
            cin = cout
        self.layer1, self.layer2, self.layer3 = blocks
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_reference_on_the_released_module_order():
    # The released QResNet_FP registers one ReLU per block (after bn1); ours registers a second one after the
    # shortcut, so the last BN of each block gains the ReLU term H*W*C of its carried map:
    # layer1: 3 * 32*32*16; layer2: 3 * 2*2*32; layer3: 3 * 1*1*64 (carried sizes of the reference walk)
    released = cm.total_madds(_ReleasedResNet20(), variant="reference")
    ours = cm.total_madds(resnet20(10), variant="reference")
    assert ours - released == 3 * 32 * 32 * 16 + 3 * 2 * 2 * 32 + 3 * 1 * 1 * 64
    assert released == 445_431_680
    # the corrected count does not depend on registration order
    assert cm.total_madds(_ReleasedResNet20(), variant="corrected") == cm.total_madds(resnet20(10), variant="corrected")


def test_layer_costs_validation():
    with pytest.raises(ValueError, match="variant"):
        cm.layer_costs(TinyA(), (1, 4, 4), "exact")
    with pytest.raises(ValueError, match="input_shape"):
        cm.layer_costs(TinyA(), (4, 4))

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(4, 2)

        def forward(self, x):
            return self.emb(x.long().clamp(0, 3))

    with pytest.raises(NotImplementedError, match="Embedding"):
        cm.layer_costs(Odd(), (1, 2, 2))


# --------------------------------------------------------------------------- released pieces
def test_marvin_step_by_hand():
    # T=18, lb=10, res=5, nz=1, wl=8: bisect=1 -> 3*18*1*5 + 11*18 + 1 = 469
    assert cm.marvin_step(18, 10, 5, 1.0, 8) == 469
    # wl=16: bisect = 2*log2(8) = 6 -> 3*18*6*5 + 199 = 1819
    assert cm.marvin_step(18, 10, 5, 1.0, 16) == pytest.approx(1819)
    # wl=12, nz=0.5: bisect = 4 -> 3*18*4*5*0.5 + 199 = 739
    assert cm.marvin_step(18, 10, 5, 0.5, 12) == pytest.approx(739)


def test_iso_accuracy_index_rule():
    r = cm.iso_accuracy([0.5, 0.9, 0.95], 0.85, max_epochs=3)
    assert (r["index"], r["fraction"], r["epoch"], r["reached"]) == (1, 1 / 3, 2, True)  # int(3*1/3)+1
    r = cm.iso_accuracy([0.5, 0.6, 0.7, 0.8], 0.75, max_epochs=100)
    assert (r["index"], r["fraction"], r["epoch"]) == (3, 0.75, 76)
    r = cm.iso_accuracy([0.5, 0.6], 0.99)  # never reached: fraction 1 as released
    assert (r["index"], r["fraction"], r["reached"]) == (None, 1.0, False)
    r = cm.iso_accuracy([0.9, 0.95], 0.85)  # reached at index 0: fraction 0 (the release divides by it)
    assert r["fraction"] == 0.0
    assert cm.TARGET_ACCURACY[("alexnet_cifar", "cifar10")] == 0.731
    assert cm.TARGET_ACCURACY[("resnet20", "cifar100")] == 0.643


# --------------------------------------------------------------------------- synthetic records
def tiny_record(lookback=False, **cfg_changes):
    """TinyA traced at steps 0 and 10 of a 30-step run (3 epochs of 10 steps)."""
    model = TinyA()
    names = [n for n, _ in model.named_parameters()]  # conv.weight, conv.bias, fc.weight, fc.bias
    trace = {
        "names": names, "numel": [18, 2, 24, 3], "is_weight": [True, False, True, False],
        "step": [0, 10], "epoch": [0.1, 1.1],
        "word_length": [[8, 8, 16, 16], [12, 12, 8, 8]],
        "fractional_length": [[4, 4, 6, 6], [6, 6, 4, 4]],
        "sparsity": [[0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.25, 0.0]],
    }
    if lookback:
        trace["lookback"] = [[10] * 4] * 2
        trace["resolution"] = [[5] * 4] * 2
    cfg = {"model": "tiny", "dataset": "cifar10", "method": "adapt", "epochs": 3, "batch_size": 2,
           "accumulation_steps": 1, "momentum": 0.9, "target_accuracy": 0.85, "policy": {}}
    cfg.update(cfg_changes)
    epochs = [{"epoch": e, "val_acc": a, "test_acc": a, "steps": 10 * (e + 1)} for e, a in enumerate([0.5, 0.9, 0.95])]
    return {"name": "tiny", "config": cfg, "epochs": epochs, "traces": {"tensors": trace, "interval": 10}}, model


SHAPE = (1, 4, 4)


def test_reference_figures_by_hand():
    rec, model = tiny_record()
    f = cm.run_figures(rec, "reference", model=model, input_shape=SHAPE)
    # entries (biases dropped, as the official logger does for parameter-named qmaps): conv.weight, fc.weight,
    # matched by position to reference rows 0 and 1: MAdds 272 (conv pass 1) and 544 (conv pass 2)
    # point 0: WL 8 and 16, dense: q = 272*8 + 544*16 = 10880;  fp32 = (272+544)*32 = 26112
    # point 1: WL 12 and 8, nz 0.5 and 0.75: q = 0.5*272*12 + 0.75*544*8 = 1632 + 3264 = 4896
    q, fp = 10880 + 4896, 2 * 26112
    assert f["train_speedup"] == pytest.approx(2 * fp / (q + fp))  # 1.536
    assert f["train_speedup"] == pytest.approx(1.536)
    assert f["inference_speedup"] == pytest.approx(26112 / 4896)
    # size: final (12 + 8) * mean(0.5, 0.75) / (32 * 2) = 12.5 / 64; first 24 / 64
    assert f["model_size"] == pytest.approx(12.5 / 64)
    assert f["memory_footprint"] == pytest.approx(1 + 2 * (24 + 12.5) / 128)
    assert f["final_sparsity"] == pytest.approx(0.375) and f["avg_sparsity"] == pytest.approx(0.1875)
    # iso: val_acc [0.5, 0.9, 0.95] >= 0.85 first at index 1 -> 1/3; SU_iso = SU * 3; epoch int(3/3) + 1 = 2
    assert f["iso_index"] == 1 and f["iso_epoch"] == 2
    assert f["train_speedup_iso"] == pytest.approx(1.536 * 3)
    # vs MuPPET's baseline: (150/3) * 2F / (Q + F * (1/ACCUM) * 128/BATCH) with ACCUM 1, BATCH 2
    assert f["speedup_vs_muppet_baseline"] == pytest.approx(50 * 2 * fp / (q + fp * 64))
    assert f["overhead"] == 0 and f["madds"] == 864


def test_reference_switching_overhead_by_hand():
    rec, model = tiny_record(lookback=True)
    c = cm.trace_costs(rec, "reference", model=model, input_shape=SHAPE)
    # overhead = 32 * marvin * INTERVAL / (LB * ACCUM) = 32 * marvin with INTERVAL = LB = 10, ACCUM = 1
    # tensor size T = 18 for both rows (the conv's k*k*C_out, twice)
    # point 0: marvin(WL 8) = 469 -> 15008; marvin(WL 16) = 1819 -> 58208
    # point 1: marvin(WL 12, nz .5) = 739 -> 23648; marvin(WL 8, nz .75) = 3*18*5*.75 + 199 = 401.5 -> 12848
    assert c["overhead"].tolist() == pytest.approx([15008 + 58208, 23648 + 12848])
    assert c["cost_q"].tolist() == pytest.approx([10880 + 15008 + 58208, 4896 + 0.5 * 23648 + 0.75 * 12848])
    f = cm.run_figures(rec, "reference", model=model, input_shape=SHAPE)
    # released share: the summed overhead (not sparsity-weighted) over the summed cost_q
    assert f["overhead_share"] == pytest.approx(109712 / (84096 + 26356))
    # the logging interval comes from the record
    rec["traces"]["interval"] = 5
    c5 = cm.trace_costs(rec, "reference", model=model, input_shape=SHAPE)
    assert c5["overhead"].tolist() == pytest.approx([(15008 + 58208) / 2, (23648 + 12848) / 2])


def test_corrected_figures_by_hand():
    rec, model = tiny_record()
    f = cm.run_figures(rec, "corrected", model=model, input_shape=SHAPE)
    # rows: conv (288 MACs + 32 bias, first layer: no activation gradient), ReLU 32, MaxPool 24 (both take the
    # conv's bits), fc (24 MACs + 3 bias).  AdaPT: activation gradients float32, so g = 32.
    # point 0 (conv 8 bits, fc 16 bits, dense), per sample:
    #   forward  (288+32)*8 + 32*8 + 24*8 + (24+3)*16 = 3440
    #   backward conv (0 + 288 + 32)*32 + 32*32 + 24*32 + fc (24 + 24 + 3)*32 = 13664
    # float32: forward 403*32 = 12896, backward 13664 -> 26560
    # per step: 2 samples + SGD update 4*P*32 = 4*47*32 = 6016
    q0 = 2 * (3440 + 13664) + 6016  # 40224
    fp = 2 * 26560 + 6016  # 59136
    # point 1 (conv 12 bits nz .5, fc 8 bits nz .75):
    #   forward (.5*288 + 32)*12 + 32*12 + 24*12 + (.75*24 + 3)*8 = 2952
    #   backward 10240 + 1024 + 768 + (.75*24 + 24 + 3)*32 = 13472
    q1 = 2 * (2952 + 13472) + 6016  # 38864
    # points at steps 0 and 10 of a 30-step run stand for 10 and 20 steps
    Q, F = 10 * q0 + 20 * q1, 30 * fp
    assert f["train_speedup"] == pytest.approx(F / Q)
    # iso: target reached at epoch index 1, i.e. after step 20: 10*q0 + 10*q1 against the whole float32 run
    assert f["train_speedup_iso"] == pytest.approx(F / (10 * q0 + 10 * q1))
    # inference (final state, forward only): 403*32 / 2952
    assert f["inference_speedup"] == pytest.approx(12896 / 2952)
    # size: sum n*nz*WL / (32*P): 18*.5*12 + 2*12 + 24*.75*8 + 3*8 = 300 over 32*47; dense 456 / 1504
    assert f["model_size"] == pytest.approx(300 / 1504)
    assert f["model_size_dense"] == pytest.approx(456 / 1504)
    # memory (momentum on): quantized tensor 32 (master) + 2*WL + 32 (momentum); float32 96 per element
    m0 = (18 * 80 + 2 * 80 + 24 * 96 + 3 * 96) / (47 * 96)
    m1 = (18 * 88 + 2 * 88 + 24 * 80 + 3 * 80) / (47 * 96)
    assert f["memory_footprint"] == pytest.approx((10 * m0 + 20 * m1) / 30)
    # sparsity, parameter-weighted: final (18*.5 + 24*.25) / 47; average over steps
    assert f["final_sparsity"] == pytest.approx(15 / 47)
    assert f["avg_sparsity"] == pytest.approx(20 / 30 * 15 / 47)
    # vs MuPPET's baseline: 150 epochs of N = 10 steps * 2 samples = 20 samples, batch 128 -> 1 step per epoch
    assert f["speedup_vs_muppet_baseline"] == pytest.approx(150 * (20 * 26560 + 1 * 6016) / Q)


def test_corrected_switching_overhead_by_hand():
    rec, model = tiny_record(lookback=True)
    c = cm.trace_costs(rec, "corrected", model=model, input_shape=SHAPE)
    # per step and weight tensor (n elements, first slice n0, LB 10, res 5):
    #   4n + (E*(5*n0 + 3*res) + 2)/LB, E = ceil(log2(FL-4)) + ceil(log2(WL-FL)) bisection steps
    # conv.weight n 18, n0 9; fc.weight n 24, n0 8
    # point 0: conv WL 8 FL 4: E = 0 + 2 -> 72 + 122/10;  fc WL 16 FL 6: E = 1 + 4 -> 96 + 277/10
    # point 1: conv WL 12 FL 6: E = 1 + 3 -> 72 + 242/10; fc WL 8 FL 4: E = 0 + 2 -> 96 + 112/10
    expected = [32 * (72 + 12.2 + 96 + 27.7), 32 * (72 + 24.2 + 96 + 11.2)]
    assert c["overhead"].tolist() == pytest.approx(expected)
    f = cm.run_figures(rec, "corrected", model=model, input_shape=SHAPE)
    Q = 10 * (40224 + expected[0]) + 20 * (38864 + expected[1])
    assert f["overhead_share"] == pytest.approx((10 * expected[0] + 20 * expected[1]) / Q)
    assert f["train_speedup"] == pytest.approx(30 * 59136 / Q)


def test_muppet_like_record_prices_backward_at_the_low_bits():
    rec, model = tiny_record()
    rec["config"]["policy"] = {"quantize_activation_grads": True}
    rec["config"]["method"] = "fixed"
    c = cm.trace_costs(rec, "corrected", model=model, input_shape=SHAPE)
    # point 0 with g = b: backward conv (288+32)*8, ReLU 32*8, pool 24*8, fc 51*16
    assert c["cost_q"].iloc[0] == pytest.approx(2 * (3440 + 320 * 8 + 32 * 8 + 24 * 8 + 51 * 16) + 6016)


def test_reference_alignment_on_alexnet_and_resnet():
    for make, name, n_entries in ((alexnet_cifar, "alexnet_cifar", 12), (resnet20, "resnet20", 43)):
        model = make(10)
        names = [n for n, _ in model.named_parameters()]
        entries = cm.reference_entries(names, name)
        assert len(entries) == n_entries
        rec = {"config": {"model": name, "dataset": "cifar10", "method": "adapt", "epochs": 1, "batch_size": 512,
                          "accumulation_steps": 4},
               "epochs": [], "traces": {"tensors": {
                   "names": names, "numel": [p.numel() for p in model.parameters()],
                   "is_weight": [p.dim() > 1 for p in model.parameters()], "step": [0], "epoch": [0.0],
                   "word_length": [[32] * len(names)], "fractional_length": [[None] * len(names)],
                   "sparsity": [[0.0] * len(names)]}}}
        c = cm.trace_costs(rec, "reference", model=model)
        table = cm.layer_costs(model, variant="reference")
        # entry j takes reference row j whatever layer it is: the first n_entries rows are used
        assert c["cost_fp32"].iloc[0] == 32 * table["madds"].iloc[:n_entries].sum()
        assert c["cost_q"].iloc[0] == c["cost_fp32"].iloc[0]


# --------------------------------------------------------------------------- MuPPET
def test_muppet_presets_reference():
    a = cm.muppet_figures("alexnet_cifar", variant="reference")
    # AlexNet (8,16),(12,10),(14,14),(16,14),(32,45): 99 epochs, sum bits*epochs = 2108
    assert a["epochs"] == 99
    assert a["train_speedup"] == pytest.approx(2 * 32 * 99 / (2108 + 32 * 99))  # 1.2009
    assert a["memory_footprint"] == pytest.approx(1 + 2 * 2108 / (99 * 32))
    assert a["model_size"] == 1.0 and a["inference_speedup"] == 1.0
    r = cm.muppet_figures("resnet20", variant="reference")
    # ResNet (8,22),(12,22),(14,10),(16,15),(32,45): 114 epochs, sum = 2260
    assert r["epochs"] == 114
    assert r["train_speedup"] == pytest.approx(2 * 32 * 114 / (2260 + 32 * 114))  # 1.2349
    bug = cm.muppet_figures("resnet20", variant="reference", released_resnet_bug=True)
    assert bug["train_speedup"] == pytest.approx(a["train_speedup"]) and bug["epochs"] == 99
    with pytest.raises(ValueError, match="reference"):
        cm.muppet_figures("resnet20", variant="corrected", released_resnet_bug=True)
    assert cm.MUPPET_SCHEDULES["alexnet_cifar"] == ((8, 16), (12, 10), (14, 14), (16, 14), (32, 45))
    assert cm.MUPPET_SCHEDULES["resnet20"] == ((8, 22), (12, 22), (14, 10), (16, 15), (32, 45))


def test_muppet_static_schedule_corrected_by_hand():
    f = cm.muppet_figures(schedule=[(8, 1), (32, 1)], variant="corrected", model=TinyA(), input_shape=SHAPE)
    # per sample at b bits (g = b): (403 forward + 427 backward ops)*b + SGD update 4*47*32/128 = 47
    q = (830 * 8 + 47) + (830 * 32 + 47)
    fp_epoch = 830 * 32 + 47
    assert f["train_speedup"] == pytest.approx(2 * fp_epoch / q)
    assert f["speedup_vs_muppet_baseline"] == pytest.approx(150 * fp_epoch / q)
    assert f["model_size"] == 1.0 and f["inference_speedup"] == 1.0
    with pytest.raises(ValueError, match="schedule"):
        cm.muppet_figures(schedule=[(40, 2)], model=TinyA(), input_shape=SHAPE)


def test_muppet_record_schedule_and_figures():
    rec, model = tiny_record()
    rec["config"]["method"] = "muppet"
    for e, b in zip(rec["epochs"], [8, 8, -1]):
        e["bits"] = b
    assert cm.muppet_schedule_from_record(rec) == [(8, 2), (32, 1)]
    f = cm.run_figures(rec, "reference", model=model, input_shape=SHAPE)
    assert f["schedule"] == [[8, 2], [32, 1]]
    # released MuPPET pricing: 2*32*3 / (8+8+32 + 32*3)
    assert f["train_speedup"] == pytest.approx(192 / 144)
    assert f["train_speedup_iso"] == pytest.approx(192 / 144 * 3)
    g = cm.run_figures(rec, "corrected", model=model, input_shape=SHAPE)
    assert g["train_speedup"] > 1 and "model_size_dense" in g


# --------------------------------------------------------------------------- whole records
def test_run_figures_on_synthetic_alexnet_record_both_variants():
    model = alexnet_cifar(10)
    names = [n for n, _ in model.named_parameters()]
    k = len(names)
    rng = np.random.default_rng(0)
    trace = {"names": names, "numel": [p.numel() for p in model.parameters()],
             "is_weight": [p.dim() > 1 for p in model.parameters()], "step": [0, 10, 20], "epoch": [0.3, 0.6, 1.0],
             "word_length": rng.integers(8, 33, (3, k)).tolist(), "fractional_length": [[4] * k] * 3,
             "sparsity": (rng.random((3, k)) * 0.2).tolist(), "lookback": [[25] * k] * 3, "resolution": [[50] * k] * 3}
    rec = {"name": "a", "config": {"model": "alexnet_cifar", "dataset": "cifar10", "method": "adapt", "epochs": 1,
                                   "batch_size": 512, "accumulation_steps": 4, "momentum": 0.9,
                                   "target_accuracy": None, "policy": {}},
           "epochs": [{"epoch": 0, "val_acc": 0.8, "test_acc": 0.8, "steps": 30}],
           "traces": {"tensors": trace}}
    rows = cm.figures_frame([rec], "reference")
    ref = rows.iloc[0]
    assert ref["iso_target"] == 0.731 and ref["iso_fraction"] == 0.0 and math.isinf(ref["train_speedup_iso"])
    assert 1 < ref["train_speedup"] < 2 and ref["madds"] == 62_756_352
    cor = cm.run_figures(rec, "corrected")
    assert cor["madds"] == 14_984_714 and 1 < cor["train_speedup"] < 2
    assert cor["train_speedup_iso"] == pytest.approx(cor["train_speedup"])  # target reached in the only epoch
    for key in ("inference_speedup", "model_size", "memory_footprint", "final_sparsity", "avg_sparsity",
                "overhead_share", "speedup_vs_muppet_baseline", "model_size_vs_muppet_baseline"):
        assert isinstance(ref[key], float) and isinstance(cor[key], float), key


def test_float32_record_and_errors():
    rec = {"name": "f", "config": {"model": "alexnet_cifar", "dataset": "cifar10", "method": "float32", "epochs": 2,
                                   "target_accuracy": None},
           "epochs": [{"epoch": 0, "val_acc": 0.5, "steps": 5}, {"epoch": 1, "val_acc": 0.8, "steps": 10}],
           "traces": {}}
    f = cm.run_figures(rec, "corrected")
    assert f["train_speedup"] == 1.0 and f["model_size"] == 1.0 and f["train_speedup_iso"] == pytest.approx(1.0)
    assert cm.run_figures(rec, "reference")["train_speedup_iso"] == pytest.approx(2.0)  # SU / (1/2)
    rec["config"]["method"] = "adapt"
    with pytest.raises(ValueError, match="trace"):
        cm.run_figures(rec)
    bad, model = tiny_record()
    bad["traces"]["tensors"]["numel"][0] = 99
    with pytest.raises(ValueError, match="conv.weight"):
        cm.trace_costs(bad, model=model, input_shape=SHAPE)
    with pytest.raises(ValueError, match="variant"):
        cm.run_figures(bad, "paper", model=model, input_shape=SHAPE)
