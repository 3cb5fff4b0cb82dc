"""The networks of the AdaPT experiments, as plain ``nn.Module`` s.

The CIFAR pair (v4 and SDM) and, for the SDM paper's MNIST-family data (1x32x32
inputs), :func:`lenet5`, :func:`alexnet_mnist` and :func:`resnet20_mnist`.

Specification: docs/method.md §1.6 "Model definitions" and the
"Weight init" rules of the same section.

* :func:`alexnet_cifar` -- the CIFAR AlexNet both official codes use (``QAlexNet_FP``
  in AdaPT, ``models/cifar/alexnet.py`` in MuPPET): 5 convs 64-192-384-256-256,
  three 2x2 max-pools, one ``Linear(256, num_classes)``; biases everywhere, no
  BN, no dropout.  2,472,266 parameters for 10 classes, 2,495,396 for 100.
* :func:`resnet20` -- ResNet-20 for CIFAR (depth 6n+2, n=3, BasicBlocks with
  16/32/64 channels, projection shortcuts "option B" = 1x1 conv + BN on a shape
  change), ``AvgPool2d(8)`` and ``Linear(64, num_classes)``.  272,474 parameters
  for 10 classes, 278,324 for 100.
* :func:`build_model` -- builds either by name from :data:`MODELS`.
* :func:`layer_kind` -- "conv" / "linear" / "bn" / "pool" / "downsample" labels
  for per-layer plots (heatmap rows C, L, BN, D).

Quantization is attached from outside (:mod:`adapt.layers` hooks the modules), so
the models obey a few structural rules that the hooks rely on:

* every operation that may be quantized is a module of its own -- ``nn.Conv2d``,
  ``nn.Linear``, ``nn.BatchNorm2d``, ``nn.AvgPool2d``, ``nn.MaxPool2d``,
  ``nn.ReLU`` -- called through the module (no ``F.relu`` / ``F.avg_pool2d``),
  and every module instance is called exactly **once** per forward pass (each
  ReLU is a separate instance), so a hook sees one call per layer;
* every ``nn.ReLU`` has ``inplace=False`` and no tensor that is the output of a
  layer is modified in place (the residual add is ``out = out + shortcut``):
  quantization hooks return autograd views that must not be written to;
* ``model.named_parameters()`` lists the layers in **forward order**, weight
  before bias within a layer.  In a ResNet block the order is ``conv1, bn1,
  conv2, bn2`` and then, where present, the projection shortcut ``shortcut.conv,
  shortcut.bn``; the forward pass computes the shortcut after ``bn2`` to match.
  AdaPT's reference heuristic makes each 1-D tensor (bias, BN weight/bias) copy
  the format of the tensor *preceding* it in this order (docs/method.md §1.4), so the
  order is part of the behaviour: e.g. ``layer2.0.shortcut.conv.weight`` follows
  ``layer2.0.bn2.bias`` and ``layer2.0.shortcut.bn.weight`` copies
  ``layer2.0.shortcut.conv.weight``;
* flattening uses :func:`torch.flatten` (a reshape), so ``channels_last`` inputs
  and models work.

Initialisation (``init=``)
--------------------------
``"torch"``
    PyTorch's defaults, untouched: kaiming-uniform(a=sqrt(5)) weights, i.e.
    ``U(-1/sqrt(fan_in), +1/sqrt(fan_in))``, the same bound for biases, BN weight
    1 and bias 0.
``"paper"`` (default; the official AdaPT code, ``INITIALIZER_ARG = 0.5``)
    1. ResNet only: every conv weight first gets He-normal ``N(0, 2/(k*k*C_out))``,
       as the official ResNet constructor does.  Step 2 overwrites all of them;
       the draw is kept only so that the random stream is consumed as in the
       official code's order of operations.
    2. In ``named_parameters()`` order, every tensor with ``dim > 1`` gets
       :func:`truncated_normal_variance_scaling_` with gain 0.5, and every bias
       gets a uniform draw:

       * AlexNet: ``U(-1/sqrt(W.size(1)), +1/sqrt(W.size(1)))`` where ``W`` is
         the layer's weight.  For a conv ``W.size(1)`` is ``C_in`` (not
         ``C_in*k*k``); this is what the stated rule says and is kept literally.
       * ResNet: ``U(-0.5, 0.5)`` (= +-INITIALIZER_ARG).  This hits the FC bias
         and every BatchNorm bias (the ResNet convs have no bias).

    3. BatchNorm **weights** are 1-D and not biases, so no rule touches them: they
       keep PyTorch's 1.0 (our decision; the method text names no rule for them).
       BN running statistics keep their defaults (mean 0, var 1).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

__all__ = [
    "INITS",
    "INITIALIZER_ARG",
    "MODELS",
    "register_model",
    "SOFTMAX_OUTPUT_MODELS",
    "INPUT_SHAPES",
    "AlexNetCIFAR",
    "LeNet5",
    "lenet5",
    "alexnet_mnist",
    "resnet20_mnist",
    "input_shape_of",
    "BasicBlock",
    "ResNetCIFAR",
    "alexnet_cifar",
    "resnet20",
    "build_model",
    "layer_kind",
    "truncated_normal_variance_scaling_",
]

#: Allowed values of ``init=``.
INITS = ("paper", "torch")

#: The official configs' INITIALIZER_ARG: the gain of the variance scaling and the
#: half-width of the ResNet bias distribution.
INITIALIZER_ARG = 0.5


# --------------------------------------------------------------------------- helpers
def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return num_classes


def _check_channels(in_channels) -> int:
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    return in_channels


def _check_init(init) -> str:
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"init must be one of {', '.join(repr(i) for i in INITS)}, got {init!r}")
    return init


def _fan_in(tensor: torch.Tensor) -> int:
    """``size(1) * prod(size(2:))`` -- C_in*k_h*k_w for a conv, in_features for a linear."""
    return tensor.size(1) * math.prod(tensor.shape[2:])


@torch.no_grad()
def truncated_normal_variance_scaling_(tensor: torch.Tensor, gain: float = INITIALIZER_ARG) -> torch.Tensor:
    """Fill ``tensor`` (``dim > 1``) in place with a truncated normal; returns it.

    ``std = sqrt(gain / fan_in)`` with ``fan_in = tensor.size(1) * prod(tensor.shape[2:])``,
    truncated to ``+-sqrt(3 * gain / fan_in)`` = ``+-sqrt(3) * std``.

    "Truncated" here means a true truncated normal: :func:`torch.nn.init.trunc_normal_`
    with ``mean=0``, ``std=std``, ``a=-bound``, ``b=+bound``, which samples the normal
    *conditioned* on ``|w| <= bound``, not a clamp.  ``std`` is the standard deviation of the
    normal **before** truncation; cutting at +-sqrt(3) sigma leaves an actual standard deviation
    of about ``0.8146 * std``::

        k = sqrt(3); Z = erf(k / sqrt(2)); phi = exp(-k*k/2) / sqrt(2*pi)
        actual_std = std * sqrt(1 - 2*k*phi / Z)

    The released routine (``lorenz0890/AdaPT@81e54e0 initializers/custom_init.py L472-L477``,
    sampling in ``_no_grad_trunc_normal_`` ``L23-L55``) draws the same distribution with the same
    mean, std and bounds by the inverse CDF (uniform between the bounds' CDF values, inverse error
    function, scale, clamp); the installed torch's ``trunc_normal_`` samples it by rejection, so
    a seed gives other values than the release's (docs/method.md §1.10).
    """
    if tensor.dim() < 2:
        raise ValueError(f"variance scaling needs a tensor with dim > 1, got shape {tuple(tensor.shape)}")
    std = math.sqrt(gain / _fan_in(tensor))
    bound = math.sqrt(3.0) * std
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-bound, b=bound)


# --------------------------------------------------------------------------- AlexNet
class AlexNetCIFAR(nn.Module):
    """CIFAR AlexNet (docs/method.md §1.6); see :func:`alexnet_cifar`.

    Feature maps for a 32x32 input: conv1 8x8 -> pool1 4x4 -> conv2 4x4 -> pool2 2x2
    -> conv3/4/5 2x2 -> pool3 1x1 -> 256 features.
    Parameter names: ``features.conv1.weight, features.conv1.bias, ...,
    features.conv5.bias, classifier.weight, classifier.bias``.
    """

    def __init__(self, num_classes: int = 10, init: str = "paper", in_channels: int = 3):
        super().__init__()
        num_classes = _check_num_classes(num_classes)
        init = _check_init(init)
        self.in_channels = _check_channels(in_channels)
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(self.in_channels, 64, kernel_size=11, stride=4, padding=5)),
            ("relu1", nn.ReLU(inplace=False)),
            ("pool1", nn.MaxPool2d(kernel_size=2, stride=2)),
            ("conv2", nn.Conv2d(64, 192, kernel_size=5, padding=2)),
            ("relu2", nn.ReLU(inplace=False)),
            ("pool2", nn.MaxPool2d(kernel_size=2, stride=2)),
            ("conv3", nn.Conv2d(192, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU(inplace=False)),
            ("conv4", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu4", nn.ReLU(inplace=False)),
            ("conv5", nn.Conv2d(256, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU(inplace=False)),
            ("pool3", nn.MaxPool2d(kernel_size=2, stride=2)),
        ]))
        self.classifier = nn.Linear(256, num_classes)
        if init == "paper":
            self._init_paper()

    @torch.no_grad()
    def _init_paper(self) -> None:
        modules = dict(self.named_modules())
        for name, p in self.named_parameters():
            if p.dim() > 1:
                truncated_normal_variance_scaling_(p, INITIALIZER_ARG)
            elif name.endswith("bias"):
                # W.size(1): C_in for a conv (not C_in*k*k), in_features for a linear.
                weight = modules[name.rsplit(".", 1)[0]].weight
                bound = 1.0 / math.sqrt(weight.size(1))
                p.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------- ResNet
def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU.

    On a shape change (stride != 1 or channel change) the shortcut is the
    projection ``shortcut = Sequential(conv: 1x1 conv(stride, no bias), bn: BN)``
    ("option B"); otherwise it is the identity and no ``shortcut`` module is
    registered (``self.shortcut is None``).  Registration (= ``named_parameters``)
    order: conv1, bn1, conv2, bn2, shortcut.conv, shortcut.bn; forward computes
    them in that order.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)),
                ("bn", nn.BatchNorm2d(planes)),
            ]))
        else:
            self.shortcut = None
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = out + shortcut  # not in place: `out` may be a quantization hook's view
        return self.relu2(out)


class ResNetCIFAR(nn.Module):
    """CIFAR ResNet of depth 6n+2 with BasicBlocks (docs/method.md §1.6); see :func:`resnet20`.

    Layout: ``conv1`` (3x3, 3->16, no bias) - ``bn1`` - ``relu`` - ``layer1`` (n blocks,
    16 ch) - ``layer2`` (n blocks, 32 ch, first stride 2) - ``layer3`` (n blocks,
    64 ch, first stride 2) - ``avgpool`` (AvgPool2d(8)) - flatten - ``fc``.
    Blocks are ``layer{s}.{i}``; parameter names e.g. ``layer2.0.conv1.weight``,
    ``layer2.0.shortcut.conv.weight``, ``layer2.0.shortcut.bn.bias``.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, init: str = "paper", in_channels: int = 3):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth!r}")
        num_classes = _check_num_classes(num_classes)
        init = _check_init(init)
        n = (depth - 2) // 6
        self.depth = depth
        self.in_channels = _check_channels(in_channels)
        self.conv1 = _conv3x3(self.in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=False)
        self._in_planes = 16
        self.layer1 = self._make_stage(16, n, stride=1)
        self.layer2 = self._make_stage(32, n, stride=2)
        self.layer3 = self._make_stage(64, n, stride=2)
        del self._in_planes
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64 * BasicBlock.expansion, num_classes)
        if init == "paper":
            self._init_paper()

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlock(self._in_planes, planes, stride if i == 0 else 1))
            self._in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    @torch.no_grad()
    def _init_paper(self) -> None:
        # 1. The official constructor's He-normal on convs (overwritten below).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, math.sqrt(2.0 / n))
        # 2. The official initializer, in named_parameters order.
        for name, p in self.named_parameters():
            if p.dim() > 1:
                truncated_normal_variance_scaling_(p, INITIALIZER_ARG)
            elif name.endswith("bias"):  # fc.bias and every BN bias
                p.uniform_(-INITIALIZER_ARG, INITIALIZER_ARG)
            # BN weights (1-D, not biases): left at 1.0.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


# --------------------------------------------------------------------------- LeNet-5
class LeNet5(nn.Module):
    """LeNet-5 of the official SDM code (``models/lenet5.py`` / ``models/lenet5_fp.py``).

    ``lorenz0890/AdaPT@81e54e0 models/lenet5.py L26-L41``: Conv 1->6 k5, Tanh, AvgPool 2,
    Conv 6->16 k5, Tanh, AvgPool 2, Conv 16->120 k5, Tanh, Linear 120->84, Tanh,
    Linear 84->classes, no padding, for a 1x32x32 input (the official transforms resize
    MNIST-family images to 32x32, ``utils/factory.py L155-L160``).  Feature maps:
    conv1 6x28x28 -> pool1 6x14x14 -> conv2 16x10x10 -> pool2 16x5x5 -> conv3 120x1x1.
    61,706 parameters for 10 classes (hand count in ``tests/test_lenet.py``), 64,851 for 47.

    Parameter names: ``features.conv1.weight, features.conv1.bias, ...,
    features.conv3.bias, classifier.fc1.weight, ..., classifier.fc2.bias``; each Tanh and
    pool is a module of its own, called once (the structural rules of this module).

    ``softmax_output`` (default ``False``): the released LeNet-5 returns ``softmax(logits)``, and
    its training and validation steps apply ``F.cross_entropy`` to those probabilities, a second
    softmax (``lorenz0890/AdaPT@81e54e0 models/lenet5_fp.py L91-L94, L141, L164``; the float32 model
    likewise, ``models/lenet5.py L71-L74, L114, L129``).  With ``True`` ``forward`` returns the
    probabilities, so the training loop's ``F.cross_entropy`` is the released double-softmax loss
    (its gradient, which AdaPT's heuristic reads, is that of the released loss: bounded, and small
    once the probabilities saturate); with ``False`` it returns the logits, like the other models,
    and the loss is the ordinary cross-entropy.  Predictions (the argmax) are the same either way.
    The reference variant of AdaPT's configs turns it on (docs/method.md §1.10).

    ``init="paper"`` (the official ``initialize_weights``, ``models/lenet5.py L53-L59``
    with ``INITIALIZER_ARG = 0.5``): every weight with ``dim > 1`` the truncated
    variance scaling with gain 0.5, every bias ``U(-0.5, 0.5)``, in registration order.
    """

    def __init__(self, num_classes: int = 10, init: str = "paper", in_channels: int = 1,
                 softmax_output: bool = False):
        super().__init__()
        num_classes = _check_num_classes(num_classes)
        init = _check_init(init)
        self.in_channels = _check_channels(in_channels)
        if not isinstance(softmax_output, bool):
            raise ValueError(f"softmax_output must be True or False, got {softmax_output!r}")
        self.softmax_output = softmax_output
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(self.in_channels, 6, kernel_size=5, stride=1, padding=0)),
            ("tanh1", nn.Tanh()),
            ("pool1", nn.AvgPool2d(kernel_size=2)),
            ("conv2", nn.Conv2d(6, 16, kernel_size=5, stride=1, padding=0)),
            ("tanh2", nn.Tanh()),
            ("pool2", nn.AvgPool2d(kernel_size=2)),
            ("conv3", nn.Conv2d(16, 120, kernel_size=5, stride=1, padding=0)),
            ("tanh3", nn.Tanh()),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(120, 84)),
            ("tanh4", nn.Tanh()),
            ("fc2", nn.Linear(84, num_classes)),
        ]))
        if init == "paper":
            self._init_paper()

    @torch.no_grad()
    def _init_paper(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() > 1:
                truncated_normal_variance_scaling_(p, INITIALIZER_ARG)
            elif name.endswith("bias"):
                p.uniform_(-INITIALIZER_ARG, INITIALIZER_ARG)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        # The released forward ends in F.softmax(logits, dim=1) (models/lenet5_fp.py L92).
        return torch.softmax(x, dim=1) if self.softmax_output else x


# --------------------------------------------------------------------------- factories
def alexnet_cifar(num_classes: int = 10, init: str = "paper") -> AlexNetCIFAR:
    """CIFAR AlexNet: 2,472,266 parameters for 10 classes (2,469,696 conv + 256*C + C)."""
    return AlexNetCIFAR(num_classes=num_classes, init=init)


def resnet20(num_classes: int = 10, init: str = "paper") -> ResNetCIFAR:
    """ResNet-20 with projection shortcuts: 272,474 parameters for 10 classes (271,824 + 65*C)."""
    return ResNetCIFAR(depth=20, num_classes=num_classes, init=init)


def lenet5(num_classes: int = 10, init: str = "paper", softmax_output: bool = False) -> LeNet5:
    """LeNet-5 for 1x32x32 inputs: 61,706 parameters for 10 classes (60,856 + 85*C).
    ``softmax_output``: return the released ``softmax(logits)`` (see :class:`LeNet5`)."""
    return LeNet5(num_classes=num_classes, init=init, softmax_output=softmax_output)


def alexnet_mnist(num_classes: int = 10, init: str = "paper") -> AlexNetCIFAR:
    """The CIFAR AlexNet with one input channel (``AlexNet_MNIST`` / ``QAlexNet_MNIST_FP``,
    ``lorenz0890/AdaPT@81e54e0 models/alexnet_mnist.py L30``): the official EMNIST/MNIST
    AlexNet differs from the CIFAR one only in ``conv1``'s 1 input channel (the rest of the
    file is the CIFAR model).  2,456,778 parameters for 10 classes (the CIFAR count less 2 x 64 x 11 x 11), 2,466,287 for 47."""
    return AlexNetCIFAR(num_classes=num_classes, init=init, in_channels=1)


def resnet20_mnist(num_classes: int = 10, init: str = "paper") -> ResNetCIFAR:
    """ResNet-20 with one input channel (``ResNet_MNIST`` / ``QResNet_MNIST_FP``,
    ``lorenz0890/AdaPT@81e54e0 models/resnet_mnist.py L124``): only ``conv1`` (1->16) differs
    from the CIFAR model.  272,186 parameters for 10 classes (the CIFAR count less 2 x 16 x 3 x 3), 274,591 for 47."""
    return ResNetCIFAR(depth=20, num_classes=num_classes, init=init, in_channels=1)


#: Name -> constructor ``f(num_classes, init)``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "alexnet_cifar": alexnet_cifar,
    "resnet20": resnet20,
    "lenet5": lenet5,
    "alexnet_mnist": alexnet_mnist,
    "resnet20_mnist": resnet20_mnist,
}

#: Models whose released forward returns ``softmax(logits)`` (``build_model(..., softmax_output=True)``).
SOFTMAX_OUTPUT_MODELS = ("lenet5",)

#: Input shape (C, H, W) of each model (MNIST-family data are resized to 32x32, 1 channel).
INPUT_SHAPES: dict[str, tuple] = {
    "alexnet_cifar": (3, 32, 32), "resnet20": (3, 32, 32),
    "lenet5": (1, 32, 32), "alexnet_mnist": (1, 32, 32), "resnet20_mnist": (1, 32, 32),
}


def input_shape_of(model: nn.Module, size: int = 32) -> tuple:
    """``(C, size, size)`` with ``C`` the input channels of the model's first conv (3 if none)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return (int(first.in_channels) if first is not None else 3, size, size)


def register_model(name: str, factory: Callable[..., nn.Module], *, replace: bool = False) -> None:
    """Add ``factory`` (``factory(num_classes=..., init=...)`` -> a plain ``nn.Module``) to :data:`MODELS`.

    The model must follow the rules of this module's docstring (every quantizable operation a module
    of its own, called once; parameters in forward order; no in-place writes into a layer's output).
    ``ValueError`` when ``name`` is taken (``replace=True`` replaces it) or not a non-empty string.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"model name must be a non-empty string without '/', got {name!r}")
    if not callable(factory):
        raise TypeError(f"model {name!r}: expected a callable factory(num_classes=..., init=...), got {factory!r}")
    if name in MODELS and MODELS[name] is not factory and not replace:
        raise ValueError(f"model {name!r} is registered already; pass replace=True to replace it")
    MODELS[name] = factory


def build_model(name: str, num_classes: int = 10, init: str = "paper", softmax_output: bool = False) -> nn.Module:
    """Build ``MODELS[name](num_classes=num_classes, init=init)``.

    ``softmax_output=True`` builds the released LeNet-5's probability output (only for the
    models of :data:`SOFTMAX_OUTPUT_MODELS`; docs/method.md §1.10).

    Raises ``ValueError`` for an unknown name (listing the valid ones), an init
    other than ``"paper"``/``"torch"``, ``num_classes`` not an integer >= 2, or
    ``softmax_output=True`` for a model without that released quirk.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    _check_num_classes(num_classes)
    _check_init(init)
    if not isinstance(softmax_output, bool):
        raise ValueError(f"softmax_output must be True or False, got {softmax_output!r}")
    if softmax_output:
        if name not in SOFTMAX_OUTPUT_MODELS:
            raise ValueError(f"softmax_output=True is the released LeNet-5's output; model {name!r} returns logits "
                             f"as released (allowed for: {', '.join(SOFTMAX_OUTPUT_MODELS)})")
        return MODELS[name](num_classes=num_classes, init=init, softmax_output=True)
    return MODELS[name](num_classes=num_classes, init=init)


# --------------------------------------------------------------------------- labels
_SHORTCUT_WORDS = ("shortcut", "downsample")


def layer_kind(module: nn.Module, name: str = "") -> str:
    """Label of a layer for per-layer plots.

    ``"conv"`` (``nn.Conv2d``), ``"downsample"`` (an ``nn.Conv2d`` whose dotted
    module ``name`` -- as given by ``model.named_modules()`` -- contains
    ``"shortcut"`` or ``"downsample"``, e.g. ResNet's ``layer2.0.shortcut.conv``),
    ``"linear"``, ``"bn"`` (``nn.BatchNorm*``), ``"pool"`` (max/avg pooling);
    ``"relu"`` for ``nn.ReLU`` and ``"other"`` for anything else (containers,
    identity, ...).  The shortcut's BN is labelled ``"bn"``.
    """
    if isinstance(module, nn.Conv2d):
        if any(word in name.lower() for word in _SHORTCUT_WORDS):
            return "downsample"
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "bn"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return "pool"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Tanh):
        return "tanh"
    return "other"
