"""Quantized execution: run any plain ``nn.Module`` with per-layer fixed-point formats.

A :class:`QuantizedModel` attaches to an ordinary model (see :mod:`adapt.models`)
without changing its class or parameters' names:

* forward hooks on every quantizable layer (conv, linear, batch norm, average
  pooling) quantize the layer's **input** and **output** with its
  ``input_format`` / ``output_format`` (straight-through, as both official codes
  do by writing to ``.data``), and optionally the **gradient w.r.t. the layer
  input** with ``input_grad_format`` (MuPPET's backward hook);
* an optional ``input_format`` on the model itself quantizes each input batch
  (MuPPET quantizes every image with its own scale);
* every parameter tensor keeps an FP32 **master copy**. The optimizer updates
  the master; after each step :meth:`QuantizedModel.quantize_weights` writes
  ``Q(master)`` into the working parameter the forward pass uses, and before each
  step :meth:`QuantizedModel.quantize_grads` quantizes the weight gradients
  (docs/method.md §1.3 "What is quantized", §2.3).

Formats are plain attributes (``None`` = not quantized), so a precision policy
(:mod:`adapt.policies`) changes them between steps.  A model trained without a
``QuantizedModel`` is untouched float32: no hooks, no copies, no overhead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from adapt.quant import (DynamicFixedPoint, FixedPoint, dynamic_fixed_point_many, fixed_point_many, quantize_gradient,
                    quantize_ste, skip_draw)

#: Attribute a quantization hook sets on its output: ``(format, tensor._version)``.
_STAMP = "_adapt_quantized_as"


def _stamp(y: torch.Tensor, fmt) -> torch.Tensor:
    # Inference-mode tensors have no version counter, so they are never stamped (nor skipped).
    if isinstance(fmt, FixedPoint) and not y.is_inference():
        setattr(y, _STAMP, (fmt, y._version))
    return y


def _holds(x: torch.Tensor, fmt) -> bool:
    """``x`` came out of a quantization hook with a format that ``fmt`` contains, and was not modified since."""
    stamp = getattr(x, _STAMP, None)
    return (stamp is not None and stamp[1] == x._version and isinstance(fmt, FixedPoint)
            and fmt.contains(stamp[0]))

__all__ = ["QUANTIZABLE_LAYERS", "QuantLayer", "QuantParam", "QuantizedModel"]

#: Layer types whose inputs/outputs can be quantized: those the official codes
#: replace with quantized twins (QConv2d_FP, QLinear_FP, QBatchNorm2d_FP,
#: QAvgPool2d_FP; MuPPET's QuantConv2d/QuantLinear/QuantAvgPool2d/QuantAdaptiveAvgPool2d).
QUANTIZABLE_LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)

#: Layers whose backward never reads their output, so the output can be quantized in place
#: (``QuantizedModel(in_place_outputs=True)``).  From torch's ``tools/autograd/derivatives.yaml``:
#: ``convolution`` saves ``input`` and ``weight``; ``addmm``/``mm`` (``F.linear``) save ``mat1`` and
#: ``mat2``; ``native_batch_norm`` / ``_native_batch_norm_legit*`` save ``input``, ``weight``, the running
#: and the saved statistics; ``avg_pool2d`` and ``_adaptive_avg_pool2d`` save ``self`` (the input).
#: cuDNN's and oneDNN's convolution and batch norm keep the same inputs.  ``nn.ReLU``, whose backward
#: reads its result, is not among them (and is not a quantization point).
_OUTPUT_NOT_SAVED = QUANTIZABLE_LAYERS

#: Layers whose output values are some of their input values or zero: a ReLU's (``max(x, 0)``;
#: zero lies in every fixed-point range) and a max pooling's.  The output of such a layer fed by a
#: quantized tensor is on that tensor's grid and inside its range, so it carries the same stamp and the
#: next layer's input quantization with a containing format is skipped (``skip_requantization``).
_GRID_PRESERVING = (nn.ReLU, nn.MaxPool2d)


@dataclass(eq=False)
class QuantLayer:
    """One quantizable layer and its activation formats (``None`` = leave in float32)."""

    name: str
    module: nn.Module
    params: list = field(default_factory=list)  # names of this layer's own parameter tensors
    input_format: object = None
    output_format: object = None
    input_grad_format: object = None

    @property
    def kind(self) -> str:
        return type(self.module).__name__


@dataclass(eq=False)
class QuantParam:
    """One parameter tensor: the working copy the forward pass uses and its FP32 master."""

    name: str
    param: nn.Parameter
    master: torch.Tensor
    layer: Optional[str]  # owning quantizable layer, None if the module is not quantizable
    weight_format: object = None
    grad_format: object = None

    @property
    def is_weight(self) -> bool:
        """Tensors with more than one dimension: the ones AdaPT's heuristic adapts (docs/method.md §1.4)."""
        return self.param.dim() > 1


class QuantizedModel:
    """Attach per-layer quantization to ``model``; see the module docstring.

    ``rounding`` applies to every quantization point; ``generator`` (a
    ``torch.Generator`` on the model's device) makes stochastic rounding
    reproducible.  Layers and parameters are kept in registration order, which is
    ``model.named_parameters()`` order.

    ``skip_requantization``: a layer input that is the unmodified output of the
    previous quantization hook, in a format the input format contains (a conv's
    output entering its BatchNorm with the same format), is passed on as it is,
    because quantizing it again is the identity (:meth:`FixedPoint.contains`).  The
    same holds after a ReLU or a max pooling fed by such an output
    (:data:`_GRID_PRESERVING`: their outputs are input values or zero), e.g. the second
    conv of a ResNet block, whose input is ``relu(bn1(...))``.  On CPU and with the CUDA
    kernels the skipped rounding still draws its random word (:func:`adapt.quant.skip_draw`),
    so results are bit-identical with ``False``; it only saves time and memory (at 8/4
    everywhere, 31 of ResNet-20's 88 quantization points per forward pass, 21 of them BatchNorm
    inputs, and 4 of AlexNet's 12).

    ``in_place_outputs``: a layer's output is rounded into its own memory instead of a
    new tensor, for the layer types whose backward does not read their output
    (:data:`_OUTPUT_NOT_SAVED`: all of :data:`QUANTIZABLE_LAYERS`) and outputs that are
    contiguous, not views and not leaves.  Values, gradients and random draws are
    identical with ``False``; it saves a tensor's memory and, on CPU with the C library's
    defaults, its fresh pages, which can cost more than the rounding (see
    :func:`adapt.quant.quantize_ste`).  The one visible difference: a
    forward hook registered on the layer *before* this object that keeps the output
    (``out.detach()`` shares memory) finds it quantized afterwards; such a hook should
    clone it, or pass ``False``.  Layer inputs' memory is never written: the previous layer (a
    ReLU) may have saved them for its backward.

    ``in_place_inputs`` (default ``False``; docs/method.md §1.10): the released layers quantize
    their input with ``in_data.data = quantizer(in_data, ...)`` (``lorenz0890/AdaPT@81e54e0
    models/qlayers/qconvd2d_fp.py L13``, the same line in ``qlinear_fp.py``, ``qbatchnorm2d_fp.py``,
    ``qavgpool2d_fp.py``): the input tensor *object* is re-pointed at the quantized values, so every
    other holder of that object sees them too.  In the released ResNet block ``residual = x``
    (``models/resnet_fp.py L48``) is such a holder: the identity shortcut adds the block input as
    conv1 quantized it (rounded and clipped to conv1's format), and the projection shortcut's conv
    quantizes that already quantized tensor again with its own format (``L54-L55``).  With ``True``
    the input hook does the same: the layer computes on the quantized tensor (straight-through, as
    without the option) and the caller's tensor object is re-pointed at those values (a ``.data``
    assignment, and the stamp of their format).  Tensors that autograd saved are not affected, as
    under the release's torch 1.8.1, whose saved tensors are shallow copies: a Tanh or ReLU before a
    quantized layer differentiates with its own unquantized output (a ReLU output that the next
    layer rounds to 0 still passes its gradient), and in a projection block conv1's weight gradient
    uses the input conv1 saw, not the shortcut's re-quantization of it.  (Running the released code
    under a recent torch differs in that last point: there a saved *input* is the tensor object
    itself.)  The model's own input tensor is left alone (the hook works on an alias of it): the
    release re-points the caller's batch too, but never reads it again.  With ``False`` the layer
    consumes a quantized copy and no other holder sees it.
    """

    def __init__(self, model: nn.Module, rounding: str = "stochastic", generator: Optional[torch.Generator] = None,
                 layer_types=QUANTIZABLE_LAYERS, skip_requantization: bool = True, in_place_outputs: bool = True,
                 in_place_inputs: bool = False):
        if rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding must be 'stochastic' or 'nearest', got {rounding!r}")
        self.model = model
        self.rounding = rounding
        self.generator = generator
        self.skip_requantization = bool(skip_requantization)
        self.in_place_outputs = bool(in_place_outputs)
        if not isinstance(in_place_inputs, bool):
            raise ValueError(f"in_place_inputs must be True or False, got {in_place_inputs!r}")
        self.in_place_inputs = in_place_inputs
        self.input_format = None
        self.layers: dict[str, QuantLayer] = {}
        self.params: dict[str, QuantParam] = {}
        owner = {}
        for name, module in model.named_modules():
            if isinstance(module, layer_types):
                own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
                self.layers[name] = QuantLayer(name, module, own)
                for p in own:
                    owner[p] = name
        for name, param in model.named_parameters():
            master = param.detach().clone().float()
            self.params[name] = QuantParam(name, param, master, owner.get(name))
        self._handles = [model.register_forward_pre_hook(self._model_input_hook)]
        for layer in self.layers.values():
            self._handles.append(layer.module.register_forward_pre_hook(self._make_input_hook(layer)))
            self._handles.append(layer.module.register_forward_hook(self._make_output_hook(layer)))
        for module in model.modules():
            if isinstance(module, _GRID_PRESERVING) and not isinstance(module, layer_types):
                self._handles.append(module.register_forward_hook(self._pass_stamp_on))

    # -- hooks -------------------------------------------------------------------------
    def _quantize_activation(self, x: torch.Tensor, fmt, in_place: bool = False) -> torch.Tensor:
        if self.skip_requantization and _holds(x, fmt):
            skip_draw(x, self.rounding, self.generator)
            return x
        return _stamp(quantize_ste(x, fmt, self.rounding, self.generator, in_place=in_place), fmt)

    @staticmethod
    def _pass_stamp_on(module, args, output):
        # A stamp whose version still matches: the input holds its format's values, so the output does.
        stamp = getattr(args[0], _STAMP, None) if args else None
        if stamp is not None and stamp[1] == args[0]._version and isinstance(output, torch.Tensor):
            _stamp(output, stamp[0])
        return None

    def _model_input_hook(self, module, args):
        if not args:
            return None
        x = args[0]
        if self.in_place_inputs and isinstance(x, torch.Tensor):
            # The first layer re-points the tensor object it is given: give it an alias of the
            # caller's batch (same memory, another object), so the caller's tensor is not changed.
            x = x.view_as(x)
        if self.input_format is not None:
            x = self._quantize_activation(x, self.input_format)
        return None if x is args[0] else (x,) + tuple(args[1:])

    @staticmethod
    def _re_point(x: torch.Tensor, q: torch.Tensor, fmt) -> None:
        """``x.data = q``, as the released layers do to their input: ``x`` (the object every alias holds)
        now reads the quantized values; autograd's saved tensors and ``x``'s graph edge are untouched."""
        x.data = q.detach()
        if getattr(q, _STAMP, None) is not None:
            _stamp(x, fmt)  # x now holds fmt's values (set_data keeps x's version counter)
        elif getattr(x, _STAMP, None) is not None:
            delattr(x, _STAMP)

    def _make_input_hook(self, layer: QuantLayer):
        def hook(module, args):
            if layer.input_format is None and layer.input_grad_format is None:
                return None
            x = args[0]
            if layer.input_grad_format is not None and torch.is_grad_enabled() and x.requires_grad:
                x = quantize_gradient(x, layer.input_grad_format, self.rounding, self.generator)
            if layer.input_format is not None:
                q = self._quantize_activation(x, layer.input_format)
                if self.in_place_inputs and q is not x:
                    self._re_point(args[0], q, layer.input_format)
                x = q
            return (x,) + tuple(args[1:])
        return hook

    def _make_output_hook(self, layer: QuantLayer):
        may_write = self.in_place_outputs and isinstance(layer.module, _OUTPUT_NOT_SAVED)

        def hook(module, args, output):
            if layer.output_format is None:
                return None
            in_place = (may_write and isinstance(output, torch.Tensor) and output._base is None
                        and output.is_contiguous() and (output.grad_fn is not None or not output.requires_grad))
            return self._quantize_activation(output, layer.output_format, in_place)
        return hook

    # -- optimizer side ----------------------------------------------------------------
    def master_parameters(self) -> list:
        """The FP32 master tensors, in ``named_parameters()`` order: give these to the optimizer."""
        return [qp.master for qp in self.params.values()]

    def _quantize_all(self, sources: list, formats: list, outs: list) -> None:
        """``outs[k] = formats[k].quantize(sources[k])`` in order: one grouped call when every format is
        fixed point (:func:`adapt.quant.fixed_point_many`) or every one is the same per-tensor dynamic
        fixed point (:func:`adapt.quant.dynamic_fixed_point_many`, MuPPET); on CPU these give the same
        results and random draws as one call per tensor, which is what other mixes get."""
        if not sources:
            return
        if all(isinstance(f, FixedPoint) for f in formats):
            fixed_point_many(sources, formats, self.rounding, self.generator, outs=outs)
            return
        first = formats[0]
        if isinstance(first, DynamicFixedPoint) and not first.per_sample and all(f == first for f in formats):
            dynamic_fixed_point_many(sources, first.bits, self.rounding, self.generator, clamp=first.clamp, outs=outs)
            return
        for x, fmt, out in zip(sources, formats, outs):
            fmt.quantize(x, self.rounding, self.generator, out=out)

    @torch.no_grad()
    def quantize_grads(self) -> None:
        """Quantize every weight gradient in place with its ``grad_format`` (before the optimizer step)."""
        grads, formats = [], []
        for qp in self.params.values():
            g = qp.param.grad
            if g is not None and qp.grad_format is not None:
                grads.append(g)
                formats.append(qp.grad_format)
        self._quantize_all(grads, formats, grads)

    def share_grads(self) -> None:
        """Point each master's ``.grad`` at the working parameter's gradient (no copy)."""
        for qp in self.params.values():
            qp.master.grad = qp.param.grad

    @torch.no_grad()
    def quantize_weights(self) -> None:
        """Write ``Q(master)`` into every working parameter (after each optimizer step).

        A tensor without a ``weight_format`` gets the master's float32 value: that is
        how MuPPET's switch to FP32 "copies the master weights in".
        """
        copy_to, copy_from, masters, formats, outs = [], [], [], [], []
        for qp in self.params.values():
            if qp.weight_format is None:  # draws nothing, so moving the copies first keeps every draw
                copy_to.append(qp.param.data)
                copy_from.append(qp.master)
            else:
                masters.append(qp.master)
                formats.append(qp.weight_format)
                outs.append(qp.param.data)
        if copy_to:
            torch._foreach_copy_(copy_to, copy_from)
        self._quantize_all(masters, formats, outs)

    @torch.no_grad()
    def sparsity(self) -> dict:
        """Fraction of exact zeros in each working (quantized) parameter tensor."""
        if not self.params:
            return {}
        # One device transfer for all tensors (exact integer counts, as before).
        zeros = torch.stack([(qp.param == 0).sum() for qp in self.params.values()]).tolist()
        return {name: float(z) / qp.param.numel() for (name, qp), z in zip(self.params.items(), zeros)}

    # -- bookkeeping -------------------------------------------------------------------
    def disable(self) -> None:
        """Turn every quantization point off (formats to ``None``); the hooks stay but cost nothing."""
        self.input_format = None
        for layer in self.layers.values():
            layer.input_format = layer.output_format = layer.input_grad_format = None
        for qp in self.params.values():
            qp.weight_format = qp.grad_format = None

    def remove(self) -> None:
        """Detach all hooks, leaving the model plain."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def state_dict(self) -> dict:
        return {"masters": {name: qp.master.detach().clone() for name, qp in self.params.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        masters = state["masters"]
        missing = set(self.params) - set(masters)
        if missing:
            raise KeyError(f"checkpoint has no master copy for {sorted(missing)}")
        for name, qp in self.params.items():
            qp.master.copy_(masters[name])
