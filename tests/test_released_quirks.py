"""The released model and layer quirks (docs/method.md §1.10): the LeNet-5's softmax output and
the layers' in-place input quantization, as config options, against independent references.

The references are plain torch code written from reading the released code
(``lorenz0890/AdaPT@81e54e0 models/lenet5_fp.py``, ``models/resnet_fp.py``,
``models/qlayers/*_fp.py``), with a deterministic quantizer (QPyTorch's nearest rounding: round
half to even, saturate), so that forward values and gradients can be compared exactly with
``adapt`` run with ``rounding="nearest"``.  tests/test_official.py compares with the released
modules themselves where a checkout is available.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapt.config import ExperimentConfig
from adapt.experiments.configs import CONFIGS, QUIRK_FIELDS, get_config, released_quirks
from adapt.layers import QuantizedModel
from adapt.models import BasicBlock, build_model, lenet5
from adapt.quant import FixedPoint
from adapt.train import build, l1_penalty

LENET = "mnist5k/adapt/lenet5/mnist5k"


def q(x: torch.Tensor, wl: int, fl: int) -> torch.Tensor:
    """QPyTorch's ``fixed_point_quantize(x, wl, fl, rounding="nearest")``: round half to even on the
    grid 2^-fl, saturate to [-2^(wl-fl-1), 2^(wl-fl-1) - 2^-fl] (docs/method.md §1.3)."""
    s = 2.0 ** fl
    return torch.clamp(torch.round(x * s), -2.0 ** (wl - 1), 2.0 ** (wl - 1) - 1) / s


def exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------ configs
def test_reference_configs_of_adapts_code_have_the_quirks_and_corrected_ones_not():
    for name in CONFIGS:
        method, model = name.split("/")[1], CONFIGS[name].model
        ref, cor = get_config(name, variant="reference"), get_config(name, variant="corrected")
        assert CONFIGS[name] == ref  # the registry holds the reference variant
        adapts_code = method in ("adapt", "fixed", "float32")
        assert ref.softmax_output == (adapts_code and model == "lenet5"), name
        assert ref.in_place_inputs == (method in ("adapt", "fixed")), name
        assert not cor.softmax_output and not cor.in_place_inputs, name
        assert released_quirks(name, "corrected") == {f: False for f in QUIRK_FIELDS}
    # MuPPET and its float32 baseline: neither quirk in either variant (not AdaPT's code).
    for name in ("mnist5k/muppet/lenet5/mnist5k", "mnist5k/float32-muppet/lenet5/mnist5k"):
        assert released_quirks(name, "reference") == {"softmax_output": False, "in_place_inputs": False}
    assert released_quirks("mnist5k/float32/lenet5/mnist5k", "reference") == {"softmax_output": True,
                                                                              "in_place_inputs": False}


def test_an_explicit_quirk_override_wins_over_the_variant():
    assert get_config(LENET, variant="corrected", softmax_output=True).softmax_output
    assert not get_config(LENET, variant="corrected", softmax_output=True).in_place_inputs
    assert not get_config(LENET, variant="reference", in_place_inputs=False).in_place_inputs
    assert not get_config(LENET, softmax_output=False).softmax_output  # no variant given: only the override
    with pytest.raises(ValueError, match="'variant'.*'bogus'"):
        get_config(LENET, variant="bogus")


@pytest.mark.parametrize("changes, field, words", [
    (dict(model="alexnet_cifar", softmax_output=True), "softmax_output", ["'alexnet_cifar'", "'lenet5'"]),
    (dict(model="lenet5", method="float32", in_place_inputs=True), "in_place_inputs", ["'float32'", "'adapt'"]),
    (dict(model="lenet5", method="muppet", in_place_inputs=True), "in_place_inputs", ["'muppet'"]),
    (dict(model="lenet5", softmax_output=1), "softmax_output", ["a bool"]),
    (dict(model="lenet5", method="adapt", in_place_inputs="yes"), "in_place_inputs", ["a bool"]),
])
def test_quirk_fields_are_validated(changes, field, words):
    with pytest.raises(ValueError, match=f"config field '{field}'") as err:
        ExperimentConfig(**changes)
    for w in words:
        assert w in str(err.value)


def test_build_wires_the_options():
    for variant, on in (("reference", True), ("corrected", False)):
        model, policy, qmodel, _ = build(get_config(LENET, variant=variant), 10, torch.device("cpu"))
        assert model.softmax_output is on and qmodel.in_place_inputs is on
    model, _, qmodel, _ = build(get_config("mnist5k/float32/lenet5/mnist5k"), 10, torch.device("cpu"))
    assert model.softmax_output and qmodel is None


def test_softmax_output_model():
    torch.manual_seed(0)
    plain = lenet5(10)
    probs = lenet5(10, softmax_output=True)
    probs.load_state_dict(plain.state_dict())
    x = torch.randn(3, 1, 32, 32)
    exact(probs(x), torch.softmax(plain(x), dim=1))
    assert probs(x).argmax(1).tolist() == plain(x).argmax(1).tolist()
    assert build_model("lenet5", 10, softmax_output=True).softmax_output
    with pytest.raises(ValueError, match="resnet20.*returns logits"):
        build_model("resnet20", 10, softmax_output=True)
    with pytest.raises(ValueError, match="softmax_output must be True or False"):
        lenet5(10, softmax_output="yes")


def test_the_double_softmax_loss_is_bounded():
    """docs/method.md §1.10: with C classes, cross_entropy(softmax(z), y) lies in
    [log(e + C - 1) - 1, log(e + C - 1)] (one-hot probabilities on the right / a wrong class)."""
    import math

    torch.manual_seed(0)
    z = torch.cat([torch.randn(2000, 10) * s for s in (0.1, 1.0, 10.0, 100.0)])
    y = torch.randint(0, 10, (len(z),))
    losses = F.cross_entropy(torch.softmax(z, 1), y, reduction="none")
    lo, hi = math.log(math.e + 9) - 1, math.log(math.e + 9)
    assert (losses >= lo - 1e-6).all() and (losses <= hi + 1e-6).all()
    assert losses.min() < lo + 1e-3 and losses.max() > hi - 1e-3  # both ends are reached
    assert round(lo, 3) == 1.461 and round(hi, 3) == 2.461


# ------------------------------------------------------------------ LeNet-5: one step against a reference
def released_lenet(W: dict, x: torch.Tensor, conv_fmt, other_fmt, softmax: bool = True) -> torch.Tensor:
    """``QLeNet5_FP.forward`` as read: every quantized layer does ``in_data.data = Q(in_data)``, its op,
    ``out.data = Q(out)`` with its (wl, fl) (``qconvd2d_fp.py L12-L16``); the three convs keep the
    initial format, the pools and linears take qmap entry 0's (``lenet5_fp.py L76-L90``); Tanh is not
    quantized; the result is ``softmax(logits)`` (``L91-L94``)."""

    def layer(inp, fmt, op):
        inp.data = q(inp.data, *fmt)
        out = op(inp)
        out.data = q(out.data, *fmt)
        return out

    h = layer(x, conv_fmt, lambda t: F.conv2d(t, W["features.conv1.weight"], W["features.conv1.bias"]))
    h = layer(torch.tanh(h), other_fmt, lambda t: F.avg_pool2d(t, 2))
    h = layer(h, conv_fmt, lambda t: F.conv2d(t, W["features.conv2.weight"], W["features.conv2.bias"]))
    h = layer(torch.tanh(h), other_fmt, lambda t: F.avg_pool2d(t, 2))
    h = layer(h, conv_fmt, lambda t: F.conv2d(t, W["features.conv3.weight"], W["features.conv3.bias"]))
    h = torch.flatten(torch.tanh(h), 1)
    h = layer(h, other_fmt, lambda t: F.linear(t, W["classifier.fc1.weight"], W["classifier.fc1.bias"]))
    h = layer(torch.tanh(h), other_fmt, lambda t: F.linear(t, W["classifier.fc2.weight"], W["classifier.fc2.bias"]))
    return torch.softmax(h, dim=1) if softmax else h


def _lenet_step(variant_fields: dict):
    """adapt's model, built from the mnist5k AdaPT config (reference formats, conv1.weight moved to
    10/6 so that the convs' 8/4 and the others' formats differ), one forward and backward; and the
    same with the reference on leaf copies of the same weights."""
    cfg = get_config(LENET, rounding="nearest", **variant_fields)
    model, policy, qmodel, _ = build(cfg, 10, torch.device("cpu"))
    policy.wl[0], policy.fl[0] = 10, 6
    policy._apply_formats()
    assert {n: (l.input_format.word_length, l.input_format.fractional_length) for n, l in qmodel.layers.items()} == {
        "features.conv1": (8, 4), "features.pool1": (10, 6), "features.conv2": (8, 4), "features.pool2": (10, 6),
        "features.conv3": (8, 4), "classifier.fc1": (10, 6), "classifier.fc2": (10, 6)}
    torch.manual_seed(1)
    x = torch.randn(16, 1, 32, 32) * 1.5
    y = torch.randint(0, 10, (16,))
    x_before = x.clone()
    out = model(x)
    loss = F.cross_entropy(out, y) + cfg.l1_decay * l1_penalty(model)
    loss.backward()
    assert torch.equal(x, x_before)  # the caller's batch is not re-pointed (the release's is, and never read again)
    W = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    ref_out = released_lenet(W, x.clone(), (8, 4), (10, 6), softmax=cfg.softmax_output)
    ref_loss = F.cross_entropy(ref_out, y) + cfg.l1_decay * sum(w.abs().sum() for w in W.values())
    ref_loss.backward()
    return model, out, loss, W, ref_out, ref_loss


def test_lenet5_reference_step_gives_the_released_forward_values_and_gradients():
    model, out, loss, W, ref_out, ref_loss = _lenet_step({})
    assert model.softmax_output
    exact(out, ref_out)
    assert torch.allclose(out.sum(1), torch.ones(16))  # probabilities: the loss is the double softmax
    exact(loss, ref_loss)
    for name, p in model.named_parameters():
        exact(p.grad, W[name].grad)


def test_lenet5_options_off_give_logits_and_the_ordinary_loss():
    model, out, loss, W, ref_out, ref_loss = _lenet_step(dict(softmax_output=False, in_place_inputs=False))
    exact(out, ref_out)  # the same quantized forward, without the final softmax
    exact(loss, ref_loss)
    for name, p in model.named_parameters():
        exact(p.grad, W[name].grad)
    on, out_on, loss_on, *_ = _lenet_step({})
    exact(out_on, torch.softmax(out, dim=1))
    assert float(loss_on.detach()) != pytest.approx(float(loss.detach()), abs=1e-3)  # the two losses differ ...
    assert not torch.equal(on.features.conv1.weight.grad, model.features.conv1.weight.grad)  # ... and so do the gradients


# ------------------------------------------------------------------ a residual block
class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, wl, fl):
        return q(x, wl, fl)

    @staticmethod
    def backward(ctx, g):
        return g, None, None


def ste(x, fmt):
    return _STE.apply(x, *fmt)


class Net(nn.Module):
    """A ReLU (whose saved output is the block input) and a BasicBlock."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.relu0 = nn.ReLU()
        self.block = BasicBlock(c_in, c_out, stride)

    def forward(self, z):
        return self.block(self.relu0(z))


# conv1 at 5/3 clips the block input to [-2, 1.875]; the shortcut conv's 6/1 is coarser than conv1's
# grid, so quantizing the already quantized input again changes it.
FORMATS = {"block.conv1": (5, 3), "block.bn1": (8, 4), "block.conv2": (8, 4), "block.bn2": (7, 3),
           "block.shortcut.conv": (6, 1), "block.shortcut.bn": (8, 4)}


def _bn(h, P, name):
    return F.batch_norm(h, torch.zeros(h.shape[1]), torch.ones(h.shape[1]), P[f"{name}.weight"], P[f"{name}.bias"],
                        training=True, momentum=0.1, eps=1e-5)


def reference_block(z, P, projection: bool, stride: int, in_place: bool):
    """The block with the release's aliasing as torch 1.8.1 ran it, written out: conv1's input is
    ``Q1(x)``; with the in-place input quantization the shortcut holds the same object, so it reads
    ``Q1(x)`` too (the projection's conv quantizes that again); autograd's saved tensors are copies,
    so the ReLUs differentiate with their own outputs and conv1 with the input it saw.  Without it the
    shortcut reads ``x``."""
    f = FORMATS
    x = torch.relu(z)
    xq = ste(x, f["block.conv1"])
    h = ste(F.conv2d(xq, P["block.conv1.weight"], stride=stride, padding=1), f["block.conv1"])
    h = ste(_bn(ste(h, f["block.bn1"]), P, "block.bn1"), f["block.bn1"])
    h = torch.relu(h)
    h = ste(F.conv2d(ste(h, f["block.conv2"]), P["block.conv2.weight"], padding=1), f["block.conv2"])
    h = ste(_bn(ste(h, f["block.bn2"]), P, "block.bn2"), f["block.bn2"])
    alias = xq if in_place else x
    if projection:
        s = ste(F.conv2d(ste(alias, f["block.shortcut.conv"]), P["block.shortcut.conv.weight"], stride=stride),
                f["block.shortcut.conv"])
        r = ste(_bn(ste(s, f["block.shortcut.bn"]), P, "block.shortcut.bn"), f["block.shortcut.bn"])
    else:
        r = alias
    return torch.relu(h + r)


def released_style_block(z, P, projection: bool, stride: int):
    """``QBasicBlock_FP.forward`` (``models/resnet_fp.py L47-L58``) with layers that do what the
    released ones do (``in_data.data = Q(in_data)``, op, ``out.data = Q(out)``), run by *this* torch."""
    f = FORMATS

    def layer(inp, fmt, op):
        inp.data = q(inp.data, *fmt)
        out = op(inp)
        out.data = q(out.data, *fmt)
        return out

    x = torch.relu(z)
    residual = x
    out = layer(x, f["block.conv1"], lambda t: F.conv2d(t, P["block.conv1.weight"], stride=stride, padding=1))
    out = torch.relu_(layer(out, f["block.bn1"], lambda t: _bn(t, P, "block.bn1")))
    out = layer(out, f["block.conv2"], lambda t: F.conv2d(t, P["block.conv2.weight"], padding=1))
    out = layer(out, f["block.bn2"], lambda t: _bn(t, P, "block.bn2"))
    if projection:
        r = layer(x, f["block.shortcut.conv"], lambda t: F.conv2d(t, P["block.shortcut.conv.weight"], stride=stride))
        residual = layer(r, f["block.shortcut.bn"], lambda t: _bn(t, P, "block.shortcut.bn"))
    out += residual
    return torch.relu_(out)


def _block_run(projection: bool, in_place: bool, reference):
    c_in, c_out, stride = (4, 6, 2) if projection else (4, 4, 1)
    torch.manual_seed(3)
    net = Net(c_in, c_out, stride)
    assert (net.block.shortcut is not None) == projection
    qm = QuantizedModel(net, rounding="nearest", in_place_inputs=in_place)
    for name, layer in qm.layers.items():
        layer.input_format = layer.output_format = FixedPoint(*FORMATS[name])
    z = (torch.randn(5, c_in, 6, 6) * 1.5).requires_grad_()
    w = torch.randn(5, c_out, 6 // stride, 6 // stride)
    out = net(z)
    (out * w).sum().backward()
    P = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    z2 = z.detach().clone().requires_grad_()
    ref = reference(z2, P, projection, stride) if reference is released_style_block else \
        reference(z2, P, projection, stride, in_place)
    (ref * w).sum().backward()
    return net, z, out, P, z2, ref


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("in_place", [True, False])
def test_residual_block_step_against_the_reference(projection, in_place):
    net, z, out, P, z2, ref = _block_run(projection, in_place, reference_block)
    exact(out, ref)
    exact(z.grad, z2.grad)  # the ReLU before the block passes the gradient of every positive input
    for name, p in net.named_parameters():
        exact(p.grad, P[name].grad)


def test_in_place_inputs_change_what_the_shortcut_adds():
    """The options matter where they should: the same weights and input give another block output
    with the in-place quantization (the shortcut adds Q1(x), clipped to conv1's range)."""
    for projection in (False, True):
        on = _block_run(projection, True, reference_block)[2]
        off = _block_run(projection, False, reference_block)[2]
        assert not torch.equal(on, off)


def test_identity_block_matches_the_released_style_code_run_by_this_torch():
    net, z, out, P, z2, ref = _block_run(False, True, released_style_block)
    exact(out, ref)
    exact(z.grad, z2.grad)
    for name, p in net.named_parameters():
        exact(p.grad, P[name].grad)


def test_projection_block_differs_from_the_released_style_code_under_this_torch_only_in_conv1():
    """In a projection block the shortcut's conv re-points the block input after conv1 has used it.
    torch 1.8.1 (the release's) saved conv1's input as a shallow copy, so conv1's weight gradient used
    what conv1 saw; this torch saves an input as the tensor object itself, so the released-style code
    run here gets conv1's weight gradient from the shortcut's re-quantized input.  ``adapt`` keeps the
    1.8.1 behaviour (test above); everything else agrees with the released-style code."""
    net, z, out, P, z2, ref = _block_run(True, True, released_style_block)
    exact(out, ref)
    exact(z.grad, z2.grad)
    for name, p in net.named_parameters():
        if name == "block.conv1.weight":
            assert not torch.equal(p.grad, P[name].grad)
        else:
            exact(p.grad, P[name].grad)


# ------------------------------------------------------------------ what `.data =` does to autograd
def test_a_data_assignment_leaves_saved_outputs_alone_and_re_points_saved_inputs():
    """The facts the emulation rests on, checked on this torch.  Saved *outputs* (Tanh's, ReLU's) are
    shallow copies: re-pointing the output tensor at quantized values does not change its backward
    (a ReLU output rounded to 0 still passes its gradient).  A saved *input* is the tensor object
    itself here (torch 1.8.1 kept a shallow copy of every saved tensor)."""
    z = torch.tensor([0.3, -0.02, 0.01, 1.2], requires_grad=True)
    t = torch.tanh(z)
    t.data = q(t.data, 4, 2)
    t.sum().backward()
    torch.testing.assert_close(z.grad, 1 - torch.tanh(z.detach()) ** 2)  # not 1 - Q(tanh)^2:
    assert (z.grad - (1 - q(torch.tanh(z.detach()), 4, 2) ** 2)).abs().max() > 0.05
    z.grad = None
    r = torch.relu(z)
    r.data = q(r.data, 4, 2)  # 0.01 -> 0
    r.sum().backward()
    exact(z.grad, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    w = torch.tensor([2.0, 3.0], requires_grad=True)
    x = torch.tensor([1.3, 0.7]) * 1.0
    y = x * w  # saves x for w's gradient
    x.data = torch.round(x.data)
    y.sum().backward()
    exact(w.grad, torch.tensor([1.0, 1.0]))


def test_in_place_inputs_through_a_tanh_and_the_model_input():
    """adapt's hook with the option: the Tanh before a quantized pool differentiates with its own
    output; the tensor the caller passed in keeps its values; an alias inside the model sees the
    quantized ones."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.tanh = nn.Tanh()
            self.pool = nn.AvgPool2d(1)

        def forward(self, x):
            h = self.tanh(x)
            self.alias = h
            return self.pool(h)

    m = M()
    qm = QuantizedModel(m, rounding="nearest", in_place_inputs=True)
    qm.layers["pool"].input_format = FixedPoint(4, 2)
    z = torch.tensor([[[[0.3, -0.02], [0.01, 1.2]]]], requires_grad=True)
    m(z).sum().backward()
    torch.testing.assert_close(z.grad, 1 - torch.tanh(z.detach()) ** 2)
    exact(m.alias.detach(), q(torch.tanh(z.detach()), 4, 2))

    class First(nn.Module):  # the first quantized layer is handed the caller's batch
        def __init__(self):
            super().__init__()
            self.pool = nn.AvgPool2d(1)

        def forward(self, x):
            return self.pool(x)

    f = First()
    qf = QuantizedModel(f, rounding="nearest", in_place_inputs=True)
    qf.layers["pool"].input_format = FixedPoint(4, 2)
    x = torch.full((1, 1, 2, 2), 0.3)
    before = x.clone()
    exact(f(x), q(before, 4, 2))
    exact(x, before)


@pytest.mark.parametrize("name", ["lenet5", "alexnet_cifar"])
def test_in_place_inputs_change_nothing_where_no_tensor_has_a_second_holder(name):
    """LeNet-5 and AlexNet are chains: no layer input is read by anything else, so the option gives
    bit-identical outputs, gradients and random draws (stochastic rounding, the same generator)."""
    results = []
    for in_place in (False, True):
        torch.manual_seed(0)
        model = build_model(name, 10)
        qm = QuantizedModel(model, generator=torch.Generator().manual_seed(5), in_place_inputs=in_place)
        for layer in qm.layers.values():
            layer.input_format = layer.output_format = FixedPoint(8, 4)
        torch.manual_seed(1)
        x = torch.randn(4, 1 if name == "lenet5" else 3, 32, 32)
        out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()], qm.generator.get_state()))
    exact(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        exact(a, b)
    assert torch.equal(results[0][2], results[1][2])
