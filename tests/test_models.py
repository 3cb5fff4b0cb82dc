"""Tests for adapt.models (docs/method.md §1.6 "Model definitions" and the init rules)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adapt.models import (
    INITS,
    MODELS,
    INPUT_SHAPES,
    AlexNetCIFAR,
    BasicBlock,
    ResNetCIFAR,
    alexnet_cifar,
    build_model,
    layer_kind,
    resnet20,
    truncated_normal_variance_scaling_,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def truncated_std(std: float, k: float) -> float:
    """Std of N(0, std^2) conditioned on |x| <= k*std."""
    z = math.erf(k / math.sqrt(2.0))
    phi = math.exp(-k * k / 2.0) / math.sqrt(2.0 * math.pi)
    return std * math.sqrt(1.0 - 2.0 * k * phi / z)


# ----------------------------------------------------------------------------- fixtures
# Module-scoped, read-only: tests that run a forward pass build their own model.
@pytest.fixture(scope="module")
def alex():
    torch.manual_seed(0)
    return alexnet_cifar(10)


@pytest.fixture(scope="module")
def res():
    torch.manual_seed(0)
    return resnet20(10)


# ----------------------------------------------------------------------------- parameter counts
# AlexNet, per layer: weight + bias.
ALEX_CONV = (
    (3 * 64 * 11 * 11 + 64)        # conv1   23,296
    + (64 * 192 * 5 * 5 + 192)     # conv2  307,392
    + (192 * 384 * 3 * 3 + 384)    # conv3  663,936
    + (384 * 256 * 3 * 3 + 256)    # conv4  884,992
    + (256 * 256 * 3 * 3 + 256)    # conv5  590,080
)


def alex_hand_count(c: int) -> int:
    return ALEX_CONV + (256 * c + c)  # classifier


def resnet20_hand_count(c: int) -> int:
    bn = lambda ch: 2 * ch  # noqa: E731  BN weight + bias
    stem = 3 * 16 * 3 * 3 + bn(16)                                      # 432 + 32
    stage1 = 3 * (16 * 16 * 9 + bn(16) + 16 * 16 * 9 + bn(16))           # 3 x 4,672
    stage2 = (
        (16 * 32 * 9 + bn(32) + 32 * 32 * 9 + bn(32) + 16 * 32 * 1 + bn(32))  # block with projection 14,528
        + 2 * (32 * 32 * 9 + bn(32) + 32 * 32 * 9 + bn(32))                     # 2 x 18,560
    )
    stage3 = (
        (32 * 64 * 9 + bn(64) + 64 * 64 * 9 + bn(64) + 32 * 64 * 1 + bn(64))  # 57,728
        + 2 * (64 * 64 * 9 + bn(64) + 64 * 64 * 9 + bn(64))                     # 2 x 73,984
    )
    fc = 64 * c + c
    return stem + stage1 + stage2 + stage3 + fc


def test_alexnet_param_count():
    assert ALEX_CONV == 2_469_696
    assert alex_hand_count(10) == 2_472_266
    assert alex_hand_count(100) == 2_469_696 + 25_700 == 2_495_396
    assert n_params(alexnet_cifar(10)) == 2_472_266
    assert n_params(alexnet_cifar(100)) == alex_hand_count(100)


def test_resnet20_param_count():
    assert resnet20_hand_count(10) == 272_474  # docs/method.md §1.6
    assert resnet20_hand_count(100) == 278_324
    assert n_params(resnet20(10)) == resnet20_hand_count(10)
    assert n_params(resnet20(100)) == resnet20_hand_count(100)


def test_resnet_structure():
    m = resnet20(init="torch")
    blocks = [b for stage in (m.layer1, m.layer2, m.layer3) for b in stage]
    assert len(blocks) == 9
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 1 + 9 * 2 + 2  # 19 weighted 3x3 convs + 2 projections
    assert all(c.bias is None for c in convs)
    with_proj = [name for name, b in m.named_modules() if isinstance(b, BasicBlock) and b.shortcut is not None]
    assert with_proj == ["layer2.0", "layer3.0"]
    assert m.layer2[0].shortcut.conv.kernel_size == (1, 1) and m.layer2[0].shortcut.conv.stride == (2, 2)
    assert isinstance(m.avgpool, nn.AvgPool2d) and m.avgpool.kernel_size == 8
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNetCIFAR(depth=21)
    assert n_params(ResNetCIFAR(depth=8, init="torch")) < n_params(m)


def test_alexnet_structure():
    m = alexnet_cifar(init="torch")
    assert not any(isinstance(x, (nn.BatchNorm2d, nn.Dropout)) for x in m.modules())
    layers = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 6 and all(x.bias is not None for x in layers)
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.modules()) == 3


# ----------------------------------------------------------------------------- forward / backward
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("classes", [10, 100])
def test_forward_backward_shapes_and_grads(name, classes):
    torch.manual_seed(1)
    m = build_model(name, classes)
    x = torch.randn(4, *INPUT_SHAPES[name])
    out = m(x)
    assert out.shape == (4, classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_alexnet_feature_map_sizes():
    m = alexnet_cifar(init="torch")
    sizes = {}
    for name, mod in m.features.named_children():
        mod.register_forward_hook(lambda mod, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[1:])))
    m(torch.randn(3, 3, 32, 32))
    assert sizes == {
        "conv1": (64, 8, 8), "relu1": (64, 8, 8), "pool1": (64, 4, 4),
        "conv2": (192, 4, 4), "relu2": (192, 4, 4), "pool2": (192, 2, 2),
        "conv3": (384, 2, 2), "relu3": (384, 2, 2),
        "conv4": (256, 2, 2), "relu4": (256, 2, 2),
        "conv5": (256, 2, 2), "relu5": (256, 2, 2), "pool3": (256, 1, 1),
    }


def test_resnet_feature_map_sizes():
    res = resnet20(init="torch")  # own model: a train-mode forward updates BN running stats
    sizes = {}
    hooks = [getattr(res, n).register_forward_hook(
        lambda mod, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[1:])))
        for n in ("relu", "layer1", "layer2", "layer3", "avgpool")]
    res(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert sizes == {"relu": (16, 32, 32), "layer1": (16, 32, 32), "layer2": (32, 16, 16),
                     "layer3": (64, 8, 8), "avgpool": (64, 1, 1)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_channels_last(name):
    torch.manual_seed(2)
    m = build_model(name, 10)
    x = torch.randn(3, *INPUT_SHAPES[name])
    ref = m(x)
    m_cl = build_model(name, 10).to(memory_format=torch.channels_last)
    m_cl.load_state_dict(m.state_dict())
    out = m_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in m_cl.parameters())


# ----------------------------------------------------------------------------- structural rules
class _ViewId(torch.autograd.Function):
    """Identity returning a view, like a quantization hook: in-place writes to it raise."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g


def _leaf_modules(model):
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hooked_views_survive_forward_backward(name):
    """Wrap every leaf module's input and output in a custom-Function view; any
    in-place op on a layer output (inplace ReLU, `out += shortcut`) would raise."""
    m = build_model(name, 10, init="torch")
    for _, mod in _leaf_modules(m):
        mod.register_forward_pre_hook(lambda mod, args: (_ViewId.apply(args[0]),) + tuple(args[1:]))
        mod.register_forward_hook(lambda mod, args, out: _ViewId.apply(out))
    out = m(torch.randn(2, *INPUT_SHAPES[name]))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("name,relus,pools", [("alexnet_cifar", 5, 3), ("resnet20", 1 + 2 * 9, 1),
                                              ("alexnet_mnist", 5, 3), ("resnet20_mnist", 1 + 2 * 9, 1),
                                              ("lenet5", 0, 2)])
def test_every_op_is_a_module_called_once(name, relus, pools):
    m = build_model(name, 10, init="torch")
    calls = {}
    for n, mod in _leaf_modules(m):
        mod.register_forward_hook(lambda mod, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
    m(torch.randn(2, *INPUT_SHAPES[name]))
    assert set(calls) == {n for n, _ in _leaf_modules(m)}  # every leaf runs...
    assert set(calls.values()) == {1}                       # ...exactly once
    mods = dict(m.named_modules())
    assert sum(isinstance(mods[n], nn.ReLU) for n in calls) == relus
    assert sum(isinstance(mods[n], (nn.MaxPool2d, nn.AvgPool2d)) for n in calls) == pools
    assert all(not r.inplace for r in m.modules() if isinstance(r, nn.ReLU))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_named_parameters_follow_forward_order(name):
    m = build_model(name, 10, init="torch")
    order = []
    for n, mod in m.named_modules():
        if list(mod.parameters(recurse=False)):
            mod.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
    m(torch.randn(2, *INPUT_SHAPES[name]))
    param_layers = []
    for pname, _ in m.named_parameters():
        layer = pname.rsplit(".", 1)[0]
        if not param_layers or param_layers[-1] != layer:
            param_layers.append(layer)
    assert order == param_layers
    # weight before bias within each layer
    names = [n for n, _ in m.named_parameters()]
    for i, n in enumerate(names):
        if n.endswith(".bias"):
            assert names[i - 1] == n[: -len("bias")] + "weight", n


def test_alexnet_parameter_names(alex):
    expected = []
    for i in range(1, 6):
        expected += [f"features.conv{i}.weight", f"features.conv{i}.bias"]
    expected += ["classifier.weight", "classifier.bias"]
    assert [n for n, _ in alex.named_parameters()] == expected


def test_resnet_parameter_names(res):
    names = [n for n, _ in res.named_parameters()]
    assert names[:12] == [
        "conv1.weight", "bn1.weight", "bn1.bias",
        "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
        "layer1.0.conv2.weight", "layer1.0.bn2.weight", "layer1.0.bn2.bias",
        "layer1.1.conv1.weight", "layer1.1.bn1.weight", "layer1.1.bn1.bias",
    ]
    i = names.index("layer2.0.conv1.weight")
    assert names[i:i + 9] == [
        "layer2.0.conv1.weight", "layer2.0.bn1.weight", "layer2.0.bn1.bias",
        "layer2.0.conv2.weight", "layer2.0.bn2.weight", "layer2.0.bn2.bias",
        "layer2.0.shortcut.conv.weight", "layer2.0.shortcut.bn.weight", "layer2.0.shortcut.bn.bias",
    ]
    assert names[-2:] == ["fc.weight", "fc.bias"]
    assert len(names) == 1 + 2 + 9 * 6 + 2 * 3 + 2  # 65 tensors


# ----------------------------------------------------------------------------- initialisation
def test_truncated_std_formula():
    # sanity of the analytic helper against a large sample
    g = torch.Generator().manual_seed(0)
    s = torch.empty(2_000_000)
    torch.nn.init.trunc_normal_(s, std=1.0, a=-math.sqrt(3), b=math.sqrt(3), generator=g)
    assert abs(s.std().item() - truncated_std(1.0, math.sqrt(3))) < 2e-3
    assert abs(truncated_std(1.0, math.sqrt(3)) - 0.8146) < 1e-3


@pytest.mark.parametrize("layer", ["conv2", "conv4", "conv5"])
def test_alexnet_paper_weight_stats(alex, layer):
    w = getattr(alex.features, layer).weight.detach()
    fan_in = w.size(1) * w.size(2) * w.size(3)  # C_in * k * k
    std = math.sqrt(0.5 / fan_in)
    bound = math.sqrt(3 * 0.5 / fan_in)
    expected = truncated_std(std, math.sqrt(3))
    assert abs(w.std().item() - expected) < 0.03 * expected
    assert abs(w.mean().item()) < 0.05 * expected
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.99 * bound  # the tails do reach the bound


def test_alexnet_paper_linear_and_bias_bounds(alex):
    w = alex.classifier.weight
    assert w.abs().max().item() <= math.sqrt(1.5 / 256)
    for name, mod in alex.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            # Stated rule U(-1/sqrt(W.size(1)), +): W.size(1) is C_in for a conv (not C_in*k*k),
            # in_features for the linear layer.
            bound = 1.0 / math.sqrt(mod.weight.size(1))
            b = mod.bias.detach()
            assert b.abs().max().item() <= bound, name
            # wider than PyTorch's default bound 1/sqrt(C_in*k*k) for convs
            torch_bound = 1.0 / math.sqrt(mod.weight[0].numel())
            if isinstance(mod, nn.Conv2d):
                assert b.abs().max().item() > torch_bound, name
    # conv1: 64 draws of U(-1/sqrt(3), 1/sqrt(3)), spread near the bound
    assert alex.features.conv1.bias.abs().max().item() > 0.8 / math.sqrt(3)


def test_resnet_paper_init(res):
    for name, p in res.named_parameters():
        p = p.detach()
        if p.dim() > 1:
            fan_in = p[0].numel()
            bound = math.sqrt(1.5 / fan_in)
            assert p.abs().max().item() <= bound, name  # He-normal was overridden
        elif name.endswith("bias"):
            assert p.abs().max().item() <= 0.5, name
            assert p.std().item() > 0.1, name  # U(-0.5, 0.5) has std 0.289, default zeros would be 0
        else:  # BN weights keep 1.0
            assert torch.equal(p, torch.ones_like(p)), name
    w = res.layer3[1].conv2.weight.detach()  # 64*64*9 = 36,864 weights, fan_in 576
    expected = truncated_std(math.sqrt(0.5 / 576), math.sqrt(3))
    assert abs(w.std().item() - expected) < 0.03 * expected
    bn_bias = torch.cat([m.bias.detach() for m in res.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn_bias.std().item() - 1 / math.sqrt(12)) < 0.03  # U(-0.5,0.5)
    for m in res.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))


def test_torch_init_is_pytorch_default():
    torch.manual_seed(0)
    a = alexnet_cifar(init="torch")
    w = a.features.conv4.weight.detach()
    fan_in = 384 * 9
    kaiming_bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)): gain*sqrt(3/fan_in) = 1/sqrt(fan_in)
    assert w.abs().max().item() <= kaiming_bound
    assert w.abs().max().item() > 0.999 * kaiming_bound
    assert abs(w.std().item() - kaiming_bound / math.sqrt(3)) < 0.01 * kaiming_bound  # uniform std
    assert a.features.conv1.bias.abs().max().item() <= 1.0 / math.sqrt(3 * 121)
    # identical to building the layers by hand after the same seed
    torch.manual_seed(0)
    ref_conv1 = nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=5)
    torch.manual_seed(0)
    a2 = alexnet_cifar(init="torch")
    assert torch.equal(a2.features.conv1.weight, ref_conv1.weight)
    r = resnet20(init="torch")
    for m in r.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    assert r.layer3[1].conv2.weight.abs().max().item() <= 1.0 / math.sqrt(576)


def test_truncated_normal_variance_scaling_helper():
    w = torch.empty(128, 64)
    truncated_normal_variance_scaling_(w, gain=2.0)
    assert w.abs().max().item() <= math.sqrt(3 * 2.0 / 64)
    with pytest.raises(ValueError, match="dim > 1"):
        truncated_normal_variance_scaling_(torch.empty(5))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("init", INITS)
def test_determinism(name, init):
    torch.manual_seed(123)
    a = build_model(name, 10, init).state_dict()
    torch.manual_seed(123)
    b = build_model(name, 10, init).state_dict()
    torch.manual_seed(124)
    c = build_model(name, 10, init).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    head = list(a)[-2]  # the last layer's weight
    assert not torch.equal(a[head], c[head])


# ----------------------------------------------------------------------------- registry and errors
def test_build_model_registry():
    assert set(MODELS) == {"alexnet_cifar", "resnet20", "lenet5", "alexnet_mnist", "resnet20_mnist"}
    assert isinstance(build_model("alexnet_cifar", 10, "torch"), AlexNetCIFAR)
    r = build_model("resnet20", 100, "paper")
    assert isinstance(r, ResNetCIFAR) and r.fc.out_features == 100
    assert build_model("resnet20").fc.out_features == 10


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'vgg16'; valid names: alexnet_cifar, alexnet_mnist, lenet5, resnet20, resnet20_mnist"):
        build_model("vgg16", 10)


@pytest.mark.parametrize("init", ["he", "PAPER", None, ""])
def test_bad_init(init):
    msg = r"init must be one of 'paper', 'torch'"
    with pytest.raises(ValueError, match=msg):
        build_model("resnet20", 10, init)
    with pytest.raises(ValueError, match=msg):
        alexnet_cifar(10, init=init)
    with pytest.raises(ValueError, match=msg):
        resnet20(10, init=init)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, 10.0, "10", True, None])
def test_bad_num_classes(bad):
    msg = r"num_classes must be an integer >= 2"
    for fn in (lambda: build_model("alexnet_cifar", bad), lambda: alexnet_cifar(bad), lambda: resnet20(bad)):
        with pytest.raises(ValueError, match=msg):
            fn()


def test_two_classes_is_allowed():
    assert resnet20(2, init="torch")(torch.randn(2, 3, 32, 32)).shape == (2, 2)


# ----------------------------------------------------------------------------- labels
def test_layer_kind(alex, res):
    kinds = {n: layer_kind(m, n) for n, m in res.named_modules()}
    assert kinds["conv1"] == "conv"
    assert kinds["bn1"] == "bn"
    assert kinds["layer2.0.conv1"] == "conv"
    assert kinds["layer2.0.shortcut.conv"] == "downsample"
    assert kinds["layer3.0.shortcut.conv"] == "downsample"
    assert kinds["layer2.0.shortcut.bn"] == "bn"
    assert kinds["avgpool"] == "pool"
    assert kinds["fc"] == "linear"
    assert kinds["relu"] == "relu"
    assert kinds["layer1"] == "other" and kinds[""] == "other"
    assert sum(k == "downsample" for k in kinds.values()) == 2
    assert sum(k == "conv" for k in kinds.values()) == 19
    akinds = {n: layer_kind(m, n) for n, m in alex.named_modules()}
    assert [akinds[f"features.conv{i}"] for i in range(1, 6)] == ["conv"] * 5
    assert akinds["features.pool3"] == "pool" and akinds["classifier"] == "linear"
    assert "downsample" not in akinds.values()
    # without a name a shortcut conv is just a conv; a downsample-named one is recognised
    assert layer_kind(res.layer2[0].shortcut.conv) == "conv"
    assert layer_kind(nn.Conv2d(4, 8, 1), "block.downsample.0") == "downsample"
