"""Integer export and integer-arithmetic inference (adapt.export)."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from adapt import export as ex
from adapt.layers import QuantizedModel
from adapt.models import alexnet_cifar, resnet20
from adapt.policies import FixedPrecisionPolicy
from adapt.quant import DynamicFixedPoint, FixedPoint, fixed_point


# --------------------------------------------------------------------------- helpers
def fmt_for(t: torch.Tensor, wl: int) -> FixedPoint:
    """Max-abs calibration: the largest FL whose range still holds max|t|."""
    mx = float(t.abs().max())
    fl = wl - 1 - (math.ceil(math.log2(mx)) if mx > 0 else 0)
    return FixedPoint(wl, max(0, min(32, fl)))


@torch.no_grad()
def calibrate(model, qmodel, x, wl_w=8, wl_a=12):
    """Per-layer formats from one calibration batch (what a trained AdaPT model ends with: mixed formats)."""
    seen = {}
    hooks = [layer.module.register_forward_hook(lambda m, a, o, n=name: seen.__setitem__(n, (a[0], o)))
             for name, layer in qmodel.layers.items()]
    model(x)
    for h in hooks:
        h.remove()
    for name, layer in qmodel.layers.items():
        layer.input_format = fmt_for(seen[name][0], wl_a)
        layer.output_format = fmt_for(seen[name][1], wl_a)
    for qp in qmodel.params.values():
        qp.weight_format = fmt_for(qp.master, wl_w)
    qmodel.quantize_weights()


@torch.no_grad()
def fit_head(model, head, x, y):
    """A cheap stand-in for training: BN statistics from a batch, then a ridge-regression classifier head."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if bns:
        for m in bns:
            m.momentum = None
            m.reset_running_stats()
        model.train()
        model(x[:128])
    model.eval()
    feats = []
    h = head.register_forward_hook(lambda m, a, o: feats.append(a[0]))
    model(x)
    h.remove()
    X = torch.cat([feats[0], torch.ones(len(x), 1)], 1).double()
    Y = nn.functional.one_hot(y, 10).double()
    W = torch.linalg.solve(X.T @ X + 0.1 * torch.eye(X.shape[1], dtype=torch.float64), X.T @ Y)
    head.weight.copy_(W[:-1].T.float())
    head.bias.copy_(W[-1].float())


@torch.no_grad()
def fake_quant(model, x):
    """The fake-quantized model's logits in float32 and in float64 (float64 accumulates these integers exactly)."""
    model.eval()
    l32 = model(x).numpy()
    model.double()
    try:
        l64 = model(x.double()).numpy()
    finally:
        model.float()
    return l32, l64


@pytest.fixture(scope="module")
def digits():
    from adapt.data.datasets import load_digits
    from adapt.data.loader import normalize

    train, test = load_digits()
    return normalize(train.images), train.labels, normalize(test.images), test.labels


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=1, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2, 2)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


class TinyRes(nn.Module):
    """conv-BN-ReLU, conv-BN + identity, ReLU, AvgPool(4), linear: every op of ResNet-20."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.relu2 = nn.ReLU()
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        h = self.relu1(self.bn1(self.conv1(x)))
        h = self.relu2(self.bn2(self.conv2(h)) + h)
        return self.fc(torch.flatten(self.pool(h), 1))


def tiny_conv_quantized(bias_fl=20):
    torch.manual_seed(0)
    model = TinyConv().eval()
    q = QuantizedModel(model, rounding="nearest")
    q.layers["conv"].input_format, q.layers["conv"].output_format = FixedPoint(8, 5), FixedPoint(10, 6)
    q.layers["fc"].input_format, q.layers["fc"].output_format = FixedPoint(6, 3), FixedPoint(16, 9)
    q.params["conv.weight"].weight_format = FixedPoint(8, 7)
    q.params["conv.bias"].weight_format = FixedPoint(16, bias_fl)  # FL above the accumulator's 5 + 7
    q.params["fc.weight"].weight_format = FixedPoint(20, 17)  # stored as int32
    q.params["fc.bias"].weight_format = FixedPoint(12, 4)
    q.quantize_weights()
    return model, q


# --------------------------------------------------------------------------- integer helpers
def test_round_shift_is_round_half_to_even():
    x = np.array([5, 7, -5, -7, 6, 3, -3, 1, -1, 4], dtype=np.int64)  # /2: 2.5 3.5 -2.5 -3.5 3 1.5 -1.5 .5 -.5 2
    assert ex.round_shift(x, 1).tolist() == [2, 4, -2, -4, 3, 2, -2, 0, 0, 2]
    assert ex.round_shift(np.array([3, -3]), -2).tolist() == [12, -12]
    rng = np.random.default_rng(0)
    vals = rng.integers(-(2 ** 20), 2 ** 20, 5000)
    for shift in (1, 3, 7):
        want = fixed_point(torch.tensor(vals * 2.0 ** -shift, dtype=torch.float64), 32, 0, "nearest")
        assert np.array_equal(ex.round_shift(vals, shift), want.numpy().astype(np.int64))
    assert ex.requantize(np.array([1000, -1000, 40]), 2, (6, 1)).tolist() == [31, -32, 20]  # saturates to 6 bits


def test_int_dtype_for():
    assert [ex.int_dtype_for(w) for w in (1, 8, 9, 16, 17, 32)] == ["int8", "int8", "int16", "int16", "int32", "int32"]


# --------------------------------------------------------------------------- tiny models
@pytest.mark.parametrize("bias_fl", [20, 8])
def test_tiny_conv_integer_equals_fake_quant_exactly(tmp_path, bias_fl):
    model, q = tiny_conv_quantized(bias_fl)
    x = torch.randn(16, 3, 8, 8)
    l32, l64 = fake_quant(model, x)
    ex.export_model(model, q, tmp_path, input_shape=(3, 8, 8))
    e = ex.load_export(tmp_path)
    for backend in ex.BACKENDS:
        li = ex.integer_logits(e, x, backend=backend)
        assert np.array_equal(li, l64), backend
    assert np.array_equal(ex.integer_predict(e, x), l32.argmax(1))


def test_tiny_resnet_ops_with_batchnorm(tmp_path):
    torch.manual_seed(1)
    model = TinyRes()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    model.eval()
    q = QuantizedModel(model, rounding="nearest")
    x = torch.randn(64, 3, 8, 8)
    calibrate(model, q, x)
    l32, l64 = fake_quant(model, x)
    ex.export_model(model, q, tmp_path, input_shape=(3, 8, 8))
    e = ex.load_export(tmp_path)
    assert {"bn1.bn_multiplier", "bn1.bn_offset"} <= set(e.tensors)
    li = ex.integer_logits(e, x)
    lsb = 2.0 ** -e.meta["layers"]["fc"]["output_format"][1]
    # BN constants are rounded (30-bit multiplier): a BN output may differ by one unit where the exact value
    # sits on a rounding boundary; tolerate a few output units, and equal predictions
    assert np.abs(li - l64).max() <= 4 * lsb
    assert np.array_equal(li.argmax(1), l32.argmax(1))
    assert np.array_equal(ex.integer_logits(e, x[:8], backend="numpy"), li[:8])


def test_fixed_precision_policy_model_exports(tmp_path):
    torch.manual_seed(0)
    model = TinyConv().eval()
    q = QuantizedModel(model, rounding="nearest")
    FixedPrecisionPolicy(word_length=8, fractional_length=4).setup(model, q, None)
    x = torch.randn(8, 3, 8, 8)
    _, l64 = fake_quant(model, x)
    sizes = ex.export_model(model, q, tmp_path, input_shape=(3, 8, 8))
    assert sizes["stored_bytes"] == sizes["parameters"]  # every tensor int8
    assert np.array_equal(ex.integer_logits(ex.load_export(tmp_path), x), l64)


def test_round_trip_and_size_accounting(tmp_path):
    model, q = tiny_conv_quantized()
    sizes = ex.export_model(model, q, tmp_path, input_shape=(3, 8, 8), model_info={"name": "tiny"})
    e = ex.load_export(tmp_path)
    assert e.meta["model"] == {"name": "tiny"} and e.meta["input_shape"] == [3, 8, 8]
    expected_dtype = {"conv.weight": np.int8, "conv.bias": np.int16, "fc.weight": np.int32, "fc.bias": np.int16}
    for name, qp in q.params.items():
        fmt = qp.weight_format
        arr = e.tensors[name]
        assert arr.dtype == expected_dtype[name]
        assert np.array_equal(arr.astype(np.float64) * 2.0 ** -fmt.fractional_length, qp.param.detach().double().numpy())
        spec = e.meta["tensors"][name]
        assert (spec["word_length"], spec["fractional_length"]) == (fmt.word_length, fmt.fractional_length)
    assert e.meta["layers"]["conv"]["input_format"] == [8, 5] and e.meta["layers"]["fc"]["output_format"] == [16, 9]
    # parameters: conv 4*3*3*3 = 108 + 4, fc 64*5 = 320 + 5  -> 437
    # stored: 108 int8 + 4 int16 + 320 int32 + 5 int16 = 108 + 8 + 1280 + 10 = 1406 bytes; float32 4*437 = 1748
    # packed: 108*8 + 4*16 + 320*20 + 5*12 = 7388 bits = 923.5 bytes
    assert sizes["parameters"] == 437 and sizes["float32_bytes"] == 1748
    assert sizes["stored_bytes"] == 1406 and sizes["packed_bytes"] == 923.5
    assert sizes["stored_ratio"] == pytest.approx(1406 / 1748)
    assert ex.export_size(e) == {k: v for k, v in sizes.items() if k != "file_bytes"}
    assert sizes["file_bytes"] > 0
    meta_text = (tmp_path / "meta.json").read_text()
    assert json.loads(meta_text)["format"] == "adapt.export/1"


# --------------------------------------------------------------------------- corrupted exports
def _rewrite(tmp_path, meta_fn=None, arrays_fn=None):
    meta = json.loads((tmp_path / "meta.json").read_text())
    with np.load(tmp_path / "tensors.npz") as z:
        arrays = {k: z[k] for k in z.files}
    if meta_fn:
        meta_fn(meta)
    if arrays_fn:
        arrays_fn(arrays)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    np.savez(tmp_path / "tensors.npz", **arrays)


def _set(d, key, value):
    d[key] = value


CORRUPTIONS = {
    "format tag": (lambda m: _set(m, "format", "other/1"), None, "format tag"),
    "missing meta key": (lambda m: m.pop("layers"), None, "missing key 'layers'"),
    "missing tensor": (None, lambda a: a.pop("fc.bias"), r"missing from tensors.npz"),
    "extra tensor": (None, lambda a: _set(a, "junk", np.zeros(2, np.int8)), "undeclared"),
    "dtype vs declared": (None, lambda a: _set(a, "conv.weight", a["conv.weight"].astype(np.int16)),
                          "does not match the declared int8"),
    "dtype too wide for WL": (lambda m: _set(m["tensors"]["conv.weight"], "dtype", "int16"),
                              lambda a: _set(a, "conv.weight", a["conv.weight"].astype(np.int16)),
                              "must be stored as int8"),
    "float dtype": (lambda m: _set(m["tensors"]["conv.weight"], "dtype", "float32"),
                    lambda a: _set(a, "conv.weight", a["conv.weight"].astype(np.float32)), "must be stored as int8"),
    "shape": (lambda m: _set(m["tensors"]["fc.weight"], "shape", [5, 65]), None, "shape"),
    "WL out of range": (lambda m: _set(m["tensors"]["conv.bias"], "word_length", 40), None, "word length 40"),
    "FL out of range": (lambda m: _set(m["tensors"]["conv.bias"], "fractional_length", -1), None, "fractional length"),
    "values beyond WL": (lambda m: _set(m["tensors"]["conv.weight"], "word_length", 3), None, "outside the 3-bit range"),
    "layer format": (lambda m: _set(m["layers"]["conv"], "input_format", [0, 4]), None, "word length 0"),
    "graph reference": (lambda m: _set(m["graph"][1], "module", "nope"), None, "unknown layer 'nope'"),
    "graph order": (lambda m: m["graph"].reverse(), None, "before it is computed"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_load_rejects_corrupted_exports(tmp_path, case):
    model, q = tiny_conv_quantized()
    ex.export_model(model, q, tmp_path, input_shape=(3, 8, 8))
    meta_fn, arrays_fn, message = CORRUPTIONS[case]
    _rewrite(tmp_path, meta_fn, arrays_fn)
    with pytest.raises(ex.ExportError, match=message):
        ex.load_export(tmp_path)


def test_load_rejects_missing_files_and_pickles(tmp_path):
    with pytest.raises(ex.ExportError, match="missing meta.json"):
        ex.load_export(tmp_path)
    model, q = tiny_conv_quantized()
    ex.export_model(model, q, tmp_path, input_shape=(3, 8, 8))
    _rewrite(tmp_path, arrays_fn=lambda a: _set(a, "conv.bias", np.array([{"x": 1}], dtype=object)))
    with pytest.raises(ex.ExportError, match="without pickle"):
        ex.load_export(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ex.ExportError, match="not valid JSON"):
        ex.load_export(tmp_path)


def test_export_refuses_what_has_no_integer_form(tmp_path):
    model, q = tiny_conv_quantized()
    q.layers["fc"].output_format = None
    with pytest.raises(ex.ExportError, match="output of layer 'fc' has no format"):
        ex.export_model(model, q, tmp_path)
    model, q = tiny_conv_quantized()
    q.params["fc.weight"].weight_format = DynamicFixedPoint(8)
    with pytest.raises(ex.ExportError, match="DynamicFixedPoint"):
        ex.export_model(model, q, tmp_path)
    model, q = tiny_conv_quantized()
    q.params["fc.weight"].param.data += 1e-3  # off the grid
    with pytest.raises(ex.ExportError, match="quantize_weights"):
        ex.export_model(model, q, tmp_path)
    model, q = tiny_conv_quantized()
    model.relu = nn.Sigmoid()
    with pytest.raises(ex.ExportError, match="Sigmoid"):
        ex.export_model(model, q, tmp_path)


# --------------------------------------------------------------------------- the two CIFAR models on digits
@pytest.fixture(scope="module")
def alexnet_export(digits, tmp_path_factory):
    xtr, ytr, xte, yte = digits
    torch.manual_seed(0)
    model = alexnet_cifar(10)
    fit_head(model, model.classifier, xtr[:256], ytr[:256])
    q = QuantizedModel(model, rounding="nearest")
    calibrate(model, q, xtr[:128])
    path = tmp_path_factory.mktemp("alexnet")
    sizes = ex.export_model(model, q, path, model_info={"name": "alexnet_cifar", "num_classes": 10})
    return model, q, ex.load_export(path), sizes


def test_alexnet_integer_inference_on_the_digits_test_set(alexnet_export, digits):
    model, q, e, sizes = alexnet_export
    _, _, xte, yte = digits
    l32, l64 = fake_quant(model, xte)
    assert len(set(l32.argmax(1).tolist())) == 10 and (l32.argmax(1) == yte.numpy()).mean() > 0.5  # a real classifier
    li = ex.integer_logits(e, xte, backend="float64")
    # conv/linear/ReLU/max-pool only: the integer result equals the float64 fake-quantized model exactly, and the
    # predictions equal the float32 fake-quantized model's on all 360 test images
    assert np.array_equal(li, l64)
    assert np.array_equal(li.argmax(1), l32.argmax(1))
    # float32 accumulation may round a sum across a requantization boundary: allow 4 output units (none seen)
    lsb = 2.0 ** -e.meta["layers"]["classifier"]["output_format"][1]
    assert np.abs(li - l32).max() <= 4 * lsb
    # the int64 backends compute the same integers
    assert np.array_equal(ex.integer_logits(e, xte[:16], backend="torch"), li[:16])
    assert np.array_equal(ex.integer_logits(e, xte[:2], backend="numpy"), li[:2])
    # size: 8-bit weights -> int8 containers, a quarter of float32
    assert sizes["parameters"] == 2_472_266 and sizes["stored_bytes"] == 2_472_266
    assert sizes["stored_ratio"] == 0.25


@pytest.fixture(scope="module")
def resnet_export(digits, tmp_path_factory):
    xtr, ytr, xte, yte = digits
    torch.manual_seed(0)
    model = resnet20(10)
    fit_head(model, model.fc, xtr[:160], ytr[:160])
    q = QuantizedModel(model, rounding="nearest")
    calibrate(model, q, xtr[:64])
    path = tmp_path_factory.mktemp("resnet")
    ex.export_model(model, q, path, model_info={"name": "resnet20", "num_classes": 10})
    return model, q, ex.load_export(path)


def _check_resnet(model, e, x):
    l32, l64 = fake_quant(model, x)
    li = ex.integer_logits(e, x, backend="float64")
    lsb = 2.0 ** -e.meta["layers"]["fc"]["output_format"][1]
    # BN in fixed point with rounded constants: equal to the float64 fake-quantized model up to rare last-place
    # differences (none seen; 4 output units allowed), and the same predictions
    assert np.abs(li - l64).max() <= 4 * lsb
    assert np.array_equal(li.argmax(1), l64.argmax(1))
    # float32 BN and float32 accumulation round differently: a unit in the last place here and there, which
    # 20 layers carry to the logits (tens of output units) and which can flip a near-tie prediction
    # (1 of the 360 digits test images with this model): at least 99% equal
    assert np.abs(li - l32).max() <= 64 * lsb
    assert (li.argmax(1) == l32.argmax(1)).mean() >= 0.99
    return li, l32


def test_resnet20_integer_inference_with_batchnorm(resnet_export, digits):
    model, q, e = resnet_export
    _, _, xte, _ = digits
    x = xte[:32]
    li, l32 = _check_resnet(model, e, x)
    assert np.array_equal(li.argmax(1), l32.argmax(1))  # on this subset: all equal
    assert len(set(li.argmax(1).tolist())) > 3
    assert np.array_equal(ex.integer_logits(e, x[:8], backend="torch"), li[:8])
    assert sum(1 for n in e.meta["graph"] if n["op"] == "add") == 9
    assert sum(1 for n in e.meta["graph"] if n["op"] == "batchnorm2d") == 21


@pytest.mark.slow
def test_resnet20_integer_inference_full_digits_test_set(resnet_export, digits):
    model, q, e = resnet_export
    _, _, xte, _ = digits
    li, l32 = _check_resnet(model, e, xte)
    assert np.array_equal(ex.integer_logits(e, xte[:64], backend="torch"), li[:64])


# --------------------------------------------------------------------------- LeNet-5 (Tanh, average pooling)
def test_lenet5_integer_export_matches_the_fake_quantized_model(tmp_path):
    torch.manual_seed(0)
    from adapt.models import build_model

    m = build_model("lenet5").eval()
    q = QuantizedModel(m, rounding="nearest")
    FixedPrecisionPolicy(word_length=12, fractional_length=8).setup(m, q, None)
    q.quantize_weights()
    x = torch.randn(64, 1, 32, 32)
    with torch.no_grad():
        l32 = m(x).numpy()
    sizes = ex.export_model(m, q, tmp_path, model_info={"name": "lenet5", "num_classes": 10})
    e = ex.load_export(tmp_path)
    assert e.meta["input_shape"] == [1, 32, 32]
    assert [n["op"] for n in e.meta["graph"]].count("tanh") == 4
    li = ex.integer_logits(e, x)
    # tanh is a table rounded to 2**-30, then requantized: equal to float32 tanh up to rare ties
    assert (li.argmax(1) == l32.argmax(1)).mean() >= 0.95
    lsb = 2.0 ** -e.meta["layers"]["classifier.fc2"]["output_format"][1]
    assert np.median(np.abs(li - l32)) <= lsb
    assert sizes["parameters"] == 61_706
