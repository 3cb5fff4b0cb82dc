"""LeNet-5 and the MNIST-input AlexNet / ResNet-20 of the SDM paper: structure, parameter counts
(by hand), quantized execution, the released AdaPT activation mapping, the cost model and the
integer export (in tests/test_export.py).

Official code: lorenz0890/AdaPT@81e54e0 models/lenet5.py L26-L41, models/lenet5_fp.py L33-L90,
models/alexnet_mnist.py L30, models/resnet_mnist.py L124.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adapt import costmodel as cm
from adapt.heuristic import AdaptPolicy, activation_sources
from adapt.layers import QuantizedModel
from adapt.models import INPUT_SHAPES, MODELS, LeNet5, build_model, input_shape_of, layer_kind
from adapt.quant import FixedPoint


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- structure and counts
def lenet_hand_count(classes: int) -> int:
    conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
    lin = lambda i, o: i * o + o  # noqa: E731
    return conv(1, 6, 5) + conv(6, 16, 5) + conv(16, 120, 5) + lin(120, 84) + lin(84, classes)


@pytest.mark.parametrize("classes", [10, 47])
def test_lenet5_parameter_count_by_hand(classes):
    # 156 + 2,416 + 48,120 + 10,164 + 85*C: 61,706 for 10 classes
    assert lenet_hand_count(10) == 156 + 2416 + 48120 + 10164 + 850 == 61_706
    assert n_params(build_model("lenet5", classes)) == lenet_hand_count(classes)


def test_lenet5_layers_match_the_official_definition():
    m = build_model("lenet5")
    kinds = [(name, type(mod).__name__) for name, mod in m.named_modules() if not isinstance(mod, (nn.Sequential, LeNet5))]
    assert [k for _, k in kinds] == ["Conv2d", "Tanh", "AvgPool2d", "Conv2d", "Tanh", "AvgPool2d", "Conv2d", "Tanh",
                                     "Linear", "Tanh", "Linear"]
    c1, c2, c3 = m.features.conv1, m.features.conv2, m.features.conv3
    assert (c1.in_channels, c1.out_channels, c1.kernel_size, c1.padding) == (1, 6, (5, 5), (0, 0))
    assert (c2.in_channels, c2.out_channels, c3.in_channels, c3.out_channels) == (6, 16, 16, 120)
    assert m.features.pool1.kernel_size == 2 and m.features.pool1.count_include_pad
    assert (m.classifier.fc1.in_features, m.classifier.fc1.out_features, m.classifier.fc2.in_features) == (120, 84, 84)
    out = m(torch.zeros(3, 1, 32, 32))
    assert out.shape == (3, 10)
    assert layer_kind(m.features.tanh1) == "tanh" and layer_kind(m.features.pool1) == "pool"
    assert input_shape_of(m) == INPUT_SHAPES["lenet5"] == (1, 32, 32)


def test_lenet5_paper_init():
    torch.manual_seed(0)
    m = build_model("lenet5", init="paper")
    for name, p in m.named_parameters():
        if name.endswith("bias"):
            assert p.abs().max() <= 0.5 and p.abs().max() > 0.05  # U(-0.5, 0.5)
        else:
            fan_in = p[0].numel()
            assert p.abs().max() <= np.sqrt(3 * 0.5 / fan_in) + 1e-7  # truncated at sqrt(3) std


@pytest.mark.parametrize("name,cifar,classes,expected", [
    ("alexnet_mnist", "alexnet_cifar", 10, 2_456_778), ("alexnet_mnist", "alexnet_cifar", 47, 2_466_287),
    ("resnet20_mnist", "resnet20", 10, 272_186), ("resnet20_mnist", "resnet20", 47, 274_591)])
def test_mnist_variants_differ_only_in_the_input_channels(name, cifar, classes, expected):
    m, c = build_model(name, classes), build_model(cifar, classes)
    first = m.features.conv1 if name == "alexnet_mnist" else m.conv1
    k = first.kernel_size[0]
    # by hand: the CIFAR count less the two input channels of conv1 (AlexNet 64 filters 11x11, ResNet 16 3x3)
    assert n_params(m) == n_params(c) - 2 * first.out_channels * k * k == expected
    assert first.in_channels == 1 and [n for n, _ in m.named_parameters()] == [n for n, _ in c.named_parameters()]
    assert m(torch.zeros(2, 1, 32, 32)).shape == (2, classes)
    assert set(MODELS) >= {"lenet5", "alexnet_mnist", "resnet20_mnist"}


# --------------------------------------------------------------------------- quantized execution
def test_lenet5_quantized_execution_and_released_activation_map():
    torch.manual_seed(0)
    m = build_model("lenet5")
    q = QuantizedModel(m, rounding="nearest")
    # Tanh stays float (nn.Tanh in QLeNet5_FP); convs, pools and linears are quantizable
    assert list(q.layers) == ["features.conv1", "features.pool1", "features.conv2", "features.pool2",
                              "features.conv3", "classifier.fc1", "classifier.fc2"]
    released = activation_sources(q, "released")
    # QLeNet5_FP.forward: perm keyed by module index, read by layer index, j never incremented
    assert released == {"features.conv1": None, "features.pool1": 0, "features.conv2": None, "features.pool2": 0,
                        "features.conv3": None, "classifier.fc1": 0, "classifier.fc2": 0}
    own = activation_sources(q, "own")
    assert own["features.conv2"] == 2 and own["features.pool2"] == 2 and own["classifier.fc2"] == 8
    policy = AdaptPolicy(min_lookback=2, max_lookback=4, min_resolution=5, max_resolution=10, loss_penalty=False)
    policy.setup(m, q, None)
    assert q.layers["features.conv3"].input_format == FixedPoint(8, 4)  # initial format, never changed
    x = torch.randn(4, 1, 32, 32)
    out = m(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- cost model
def test_lenet5_cost_tables_by_hand():
    m = build_model("lenet5", 10, init="torch")
    t = cm.layer_costs(m, (1, 32, 32), "corrected")
    macs = dict(zip(t["layer"], t["macs"]))
    assert macs["features.conv1"] == 28 * 28 * 6 * 25 and macs["features.conv2"] == 10 * 10 * 16 * 6 * 25
    assert macs["features.conv3"] == 120 * 16 * 25 and macs["classifier.fc1"] == 120 * 84
    assert int(t["macs"].sum()) == 416_520
    ref = cm.layer_costs(m, (1, 32, 32), "reference")
    assert int(ref["madds"].sum()) == cm.total_madds(m, None, "reference") > 0
    assert cm.RELEASED_LOG_KEEPS_BIASES["lenet5"] is True
