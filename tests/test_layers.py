"""Quantized execution (adapt.layers) and the simple policies (adapt.policies)."""
import copy

import pytest
import torch
from torch import nn

from adapt.layers import QuantizedModel
from adapt.models import alexnet_cifar, resnet20
from adapt.policies import FixedPrecisionPolicy, Float32Policy, TensorTrace
from adapt.quant import DynamicFixedPoint, FixedPoint, fixed_point
from adapt.train import optimizer_step


def on_grid(x, fmt):
    """True where x is exactly representable in fmt (a fixed point with nearest rounding leaves it unchanged)."""
    return torch.equal(fixed_point(x, fmt.word_length, fmt.fractional_length, "nearest"), x)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


def record_io(model):
    """Each module's input and output as its forward hooks see them.  Copies: registered before a
    QuantizedModel, these hooks run before it quantizes the output in place."""
    seen = {}
    for name, m in model.named_modules():
        if name:
            m.register_forward_hook(lambda mod, a, out, name=name: seen.__setitem__(
                name, (a[0].detach().clone(), out.detach().clone())))
    return seen


def test_layers_and_params_in_registration_order():
    model = resnet20()
    q = QuantizedModel(model)
    assert list(q.params) == [n for n, _ in model.named_parameters()]
    kinds = {type(layer.module) for layer in q.layers.values()}
    assert kinds == {nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.AvgPool2d}
    for name, qp in q.params.items():
        assert qp.master.dtype == torch.float32 and torch.equal(qp.master, qp.param.detach())
        assert qp.master.data_ptr() != qp.param.data_ptr()
        assert name.startswith(qp.layer + ".")
    assert all(qp.is_weight == (qp.param.dim() > 1) for qp in q.params.values())


def test_no_formats_means_identical_outputs():
    torch.manual_seed(0)
    model = Tiny()
    plain = copy.deepcopy(model)
    QuantizedModel(model)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), plain(x))


def test_input_and_output_formats_are_applied_straight_through():
    torch.manual_seed(0)
    model = Tiny()
    seen = record_io(model)
    q = QuantizedModel(model, rounding="nearest")
    fmt_in, fmt_out = FixedPoint(8, 4), FixedPoint(10, 6)
    q.layers["conv"].input_format = fmt_in
    q.layers["conv"].output_format = fmt_out
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    model(x).sum().backward()
    conv_in, raw_out = seen["conv"]  # this hook was registered first, so it sees the raw output
    assert torch.equal(conv_in, fixed_point(x.detach(), 8, 4, "nearest"))
    bn_in, _ = seen["bn"]  # the next layer sees the quantized output
    assert torch.equal(bn_in, fixed_point(raw_out, 10, 6, "nearest"))
    assert not torch.equal(bn_in, raw_out)
    # straight through: the input gradient is the float gradient of the quantized graph
    x2 = fixed_point(x.detach(), 8, 4, "nearest").requires_grad_()
    q.layers["conv"].input_format = None
    model(x2).sum().backward()
    assert torch.allclose(x.grad, x2.grad)


def test_activation_gradient_quantization():
    torch.manual_seed(0)
    model = Tiny()
    q = QuantizedModel(model, rounding="nearest")
    fmt = FixedPoint(6, 5)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    model(x).sum().backward()
    reference = x.grad.clone()
    x.grad = None
    q.layers["conv"].input_grad_format = fmt
    model(x).sum().backward()
    assert torch.equal(x.grad, fixed_point(reference, 6, 5, "nearest"))


def test_model_input_format_per_sample():
    model = Tiny()
    seen = record_io(model)
    q = QuantizedModel(model, rounding="nearest")
    q.input_format = DynamicFixedPoint(8, per_sample=True)
    x = torch.randn(3, 3, 8, 8)
    x[1] *= 100
    model(x)
    conv_in = seen["conv"][0]
    for i in range(3):
        assert torch.equal(conv_in[i], DynamicFixedPoint(8).quantize(x[i], "nearest"))


def test_weights_from_master_and_gradients():
    torch.manual_seed(0)
    model = Tiny()
    q = QuantizedModel(model, rounding="nearest")
    fmt = FixedPoint(8, 4)
    for qp in q.params.values():
        qp.weight_format = qp.grad_format = fmt
    q.quantize_weights()
    for qp in q.params.values():
        assert torch.equal(qp.param.detach(), fixed_point(qp.master, 8, 4, "nearest"))
    assert not torch.equal(q.params["conv.weight"].master, q.params["conv.weight"].param.detach())
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    raw = {n: qp.param.grad.clone() for n, qp in q.params.items()}
    q.quantize_grads()
    q.share_grads()
    for n, qp in q.params.items():
        assert torch.equal(qp.param.grad, fixed_point(raw[n], 8, 4, "nearest"))
        assert qp.master.grad is qp.param.grad
    # switching a tensor to float32 copies its master in exactly
    q.params["fc.weight"].weight_format = None
    q.quantize_weights()
    assert torch.equal(q.params["fc.weight"].param.detach(), q.params["fc.weight"].master)


def test_sparsity_disable_remove_and_state():
    model = Tiny()
    q = QuantizedModel(model)
    with torch.no_grad():
        q.params["fc.weight"].param.zero_()
    sp = q.sparsity()
    assert sp["fc.weight"] == 1.0 and sp["conv.weight"] == 0.0
    q.layers["conv"].output_format = FixedPoint(8, 4)
    q.params["conv.weight"].weight_format = FixedPoint(8, 4)
    q.disable()
    assert q.layers["conv"].output_format is None and q.params["conv.weight"].weight_format is None
    state = q.state_dict()
    other = QuantizedModel(Tiny())
    other.load_state_dict(state)
    assert all(torch.equal(other.params[n].master, state["masters"][n]) for n in state["masters"])
    with pytest.raises(KeyError, match="no master copy"):
        other.load_state_dict({"masters": {}})
    q.layers["conv"].output_format = FixedPoint(2, 0)
    q.remove()
    x = torch.randn(1, 3, 8, 8)
    plain = copy.deepcopy(model)
    assert torch.equal(model(x), plain(x))


def test_rounding_validated():
    with pytest.raises(ValueError, match="rounding"):
        QuantizedModel(Tiny(), rounding="up")


def test_fixed_precision_policy_sets_every_point():
    model = alexnet_cifar()
    q = QuantizedModel(model, rounding="nearest")
    policy = FixedPrecisionPolicy(8, 4, quantize_activation_grads=True, log_interval=1)
    policy.setup(model, q, None)
    fmt = FixedPoint(8, 4)
    assert all(l.input_format == fmt and l.output_format == fmt and l.input_grad_format == fmt for l in q.layers.values())
    assert all(qp.weight_format == fmt and qp.grad_format == fmt for qp in q.params.values())
    assert all(on_grid(qp.param.detach(), fmt) for qp in q.params.values())
    policy.epoch_float = 0.5
    policy.after_step(0)
    trace = policy.traces()["tensors"]
    assert trace["names"] == list(q.params) and trace["step"] == [0] and trace["epoch"] == [0.5]
    assert trace["word_length"][0] == [8] * len(q.params) and trace["fractional_length"][0] == [4] * len(q.params)
    dyn = FixedPrecisionPolicy(bits=12)
    assert dyn.format == DynamicFixedPoint(12)
    assert Float32Policy().quantized is False


def test_tensor_trace_interval_validated():
    with pytest.raises(ValueError, match="log interval"):
        TensorTrace(0)


def _train_steps(model, q, policy, opt, steps=2):
    outs = []
    for i in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(i))
        y = torch.tensor([0, 1, 2, 3])
        model.zero_grad(set_to_none=True)
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        optimizer_step(policy, opt, q, i, loss.item())
        outs.append(out.detach())
    return outs


@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_skip_requantization_is_bit_identical_and_skips_bn_and_relu_fed_inputs(rounding, monkeypatch):
    import adapt.layers as layers

    calls = {True: 0, False: 0}
    runs = {}
    for skip in (True, False):
        real = layers.quantize_ste

        def counting(*args, _skip=skip, _real=real, **kwargs):
            calls[_skip] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(layers, "quantize_ste", counting)
        torch.manual_seed(0)
        model = resnet20()
        q = QuantizedModel(model, rounding=rounding, generator=torch.Generator().manual_seed(1),
                           skip_requantization=skip)
        policy = FixedPrecisionPolicy(8, 4)

        class Cfg:
            lr, momentum, weight_decay, nesterov = 0.05, 0.9, 1e-4, False

        policy.setup(model, q, Cfg)
        opt = policy.make_optimizer(q.master_parameters(), Cfg)
        runs[skip] = (_train_steps(model, q, policy, opt), [qp.master.clone() for qp in q.params.values()])
        monkeypatch.setattr(layers, "quantize_ste", real)
    for a, b in zip(runs[True][0] + runs[True][1], runs[False][0] + runs[False][1]):
        assert torch.equal(a, b)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in resnet20().modules())
    assert n_bn == 21
    # Convs fed by a ReLU of a quantized BN output: conv2 of each of the 9 blocks, and layer1.0.conv1 after
    # the stem's relu(bn1(conv1(x))).  (A block's conv1 otherwise reads relu(out + shortcut): not skipped.)
    n_relu_fed = 9 + 1
    assert calls[False] - calls[True] == 2 * (n_bn + n_relu_fed)  # two forward passes


def _fixed_formats(q, fmt):
    for layer in q.layers.values():
        layer.input_format = layer.output_format = fmt
    return q


@pytest.mark.parametrize("fmt", [FixedPoint(8, 4), DynamicFixedPoint(8)], ids=["fixed", "dynamic"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_in_place_outputs_are_bit_identical_and_reuse_the_layer_output(fmt, memory_format):
    """Outputs, input and parameter gradients and the generator's state after a forward and backward pass
    of ResNet-20 are identical with and without writing layer outputs in place; with it, a conv's output
    memory is the quantized output's (no new tensor), except for outputs it may not write (channels-last
    outputs are not contiguous)."""
    runs, ptrs = {}, {}
    for in_place in (True, False):
        torch.manual_seed(0)
        model = resnet20()
        raw, quantized = {}, {}
        model.conv1.register_forward_hook(lambda m, a, out: raw.__setitem__("conv1", out.data_ptr()))
        gen = torch.Generator().manual_seed(1)
        q = _fixed_formats(QuantizedModel(model, generator=gen, in_place_outputs=in_place), fmt)
        q.layers["conv1"].input_format = None  # else the quantized (contiguous) input makes the output contiguous
        model.conv1.register_forward_hook(lambda m, a, out: quantized.__setitem__("conv1", out.data_ptr()))
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(memory_format=memory_format)
        x.requires_grad_()
        out = model(x)
        out.square().sum().backward()
        runs[in_place] = [out.detach(), x.grad] + [p.grad for p in model.parameters()] + [gen.get_state()]
        ptrs[in_place] = raw["conv1"] == quantized["conv1"]
        model.eval()
        with torch.no_grad():  # evaluation: no graph, the same rule
            runs[in_place].append(model(x.detach()))
        with torch.inference_mode():  # no version counters: nothing is stamped or skipped, still identical
            runs[in_place].append(model(x.detach()))
    for a, b in zip(runs[True], runs[False], strict=True):
        assert torch.equal(a, b)
    assert ptrs == {True: memory_format == torch.contiguous_format, False: False}


def test_in_place_outputs_never_write_a_layer_input():
    """A quantized layer input (here the ReLU output that conv2 reads, which the ReLU saved for its
    backward) keeps its float values: inputs are quantized into a new tensor."""
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.relu, self.conv2 = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)

        def forward(self, x):
            self.hidden = self.relu(self.conv1(x))
            return self.conv2(self.hidden)

    torch.manual_seed(0)
    model = Chain()
    q = QuantizedModel(model, rounding="nearest")
    q.layers["conv2"].input_format = FixedPoint(8, 4)
    out = model(torch.randn(2, 3, 8, 8))
    hidden = model.hidden.detach().clone()
    assert not on_grid(hidden, FixedPoint(8, 4))  # still the float ReLU output
    out.sum().backward()  # the ReLU's saved result was not modified (no version error)


def test_skip_requantization_requantizes_a_tensor_modified_in_place():
    class Nudge(Tiny):
        def forward(self, x):
            y = self.conv(x)
            y.add_(1 / 64)  # off the 1/16 grid, after the output hook quantized it
            return self.fc(torch.flatten(self.pool(self.relu(self.bn(y))), 1))

    torch.manual_seed(0)
    model = Nudge()
    seen = record_io(model)
    q = QuantizedModel(model, rounding="nearest")
    fmt = FixedPoint(8, 4)
    q.layers["conv"].output_format = q.layers["bn"].input_format = fmt
    model(torch.randn(2, 3, 8, 8))
    bn_in = seen["bn"][0]
    assert on_grid(bn_in, fmt)  # the stamp's version no longer matches, so the BN input hook re-quantized
