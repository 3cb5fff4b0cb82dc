"""The precision-policy interface, and its two simplest members: float32 and fixed precision.

One training loop (:func:`adapt.train.run`) serves every method; what differs is a
*policy* object that the loop calls at fixed points of each optimizer step and
epoch (docs/extending.md §4 says what each call may do)::

    policy.setup(model, qmodel, config)          # initial formats
    optimizer = policy.make_optimizer(params, config)
    for each optimizer step:
        forward / loss / backward (accumulated over config.accumulation_steps)
        qmodel.quantize_grads()                  # weight gradients, current formats
        policy.before_step(step, loss)           # gradients visible: AdaPT adapts here
        optimizer.step()                         # on the FP32 masters
        qmodel.quantize_weights()                # new formats apply to the new weights
        policy.after_step(step)                  # traces
    at each epoch end:
        stop = policy.end_epoch(epoch, metrics, optimizer)   # MuPPET switches (and sets the lr) here

AdaPT (:mod:`adapt.heuristic`) and MuPPET (:mod:`adapt.muppet`) are policies too.
``loss`` handed to :meth:`PrecisionPolicy.before_step` is the value the official
AdaPT optimizer's closure returns: the last micro-batch's loss divided by the
number of accumulation steps, regularizers included.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch

from adapt.quant import DynamicFixedPoint, FixedPoint, divide_many_

__all__ = ["PrecisionPolicy", "Float32Policy", "FixedPrecisionPolicy", "TensorTrace", "format_bits", "normalize_gradients_"]


def format_bits(fmt) -> int:
    """Bits per value of a format; ``None`` (not quantized) is float32."""
    return 32 if fmt is None else int(fmt.bits)


def _fractional(fmt):
    return getattr(fmt, "fractional_length", None)


class TensorTrace:
    """Per-tensor precision trace, logged every ``interval`` optimizer steps.

    The layout (JSON-ready, what ``record["traces"]["tensors"]`` holds and what the
    cost model and heatmaps read)::

        interval                  optimizer steps between logged points
        names, numel, is_weight   one entry per parameter tensor (named_parameters order)
        step, epoch               one entry per logged point
        word_length, fractional_length, sparsity, <extra...>
                                  one list per logged point, one entry per tensor
    """

    def __init__(self, interval: int = 10):
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f"log interval must be a positive integer, got {interval!r}")
        self.interval = interval
        self.data: dict = {}

    def due(self, step: int) -> bool:
        return step % self.interval == 0

    def log(self, step: int, epoch: float, qmodel, extra: Optional[dict] = None) -> None:
        if not self.data:
            self.data = {
                "interval": self.interval,
                "names": list(qmodel.params),
                "numel": [qp.param.numel() for qp in qmodel.params.values()],
                "is_weight": [qp.is_weight for qp in qmodel.params.values()],
                "step": [], "epoch": [], "word_length": [], "fractional_length": [], "sparsity": [],
            }
        d = self.data
        d["step"].append(int(step))
        d["epoch"].append(float(epoch))
        d["word_length"].append([format_bits(qp.weight_format) for qp in qmodel.params.values()])
        d["fractional_length"].append([_fractional(qp.weight_format) for qp in qmodel.params.values()])
        d["sparsity"].append(list(qmodel.sparsity().values()))
        for key, values in (extra or {}).items():
            d.setdefault(key, []).append(list(values))

    def state_dict(self) -> dict:
        return {"interval": self.interval, "data": self.data}

    def load_state_dict(self, state: dict) -> None:
        self.interval = state["interval"]
        self.data = state["data"]

    def state_from_data(self, data: dict) -> dict:
        """The :meth:`state_dict` whose ``data`` is ``data`` (this trace's layout, e.g. a record's
        ``traces["tensors"]``); the interval is this trace's, as the logged ``interval`` says."""
        if data and data.get("interval") != self.interval:
            raise ValueError(f"the trace was logged every {data.get('interval')!r} steps, this policy logs every "
                             f"{self.interval}")
        return {"interval": self.interval, "data": {k: list(v) if isinstance(v, list) else v for k, v in data.items()}}


class PrecisionPolicy:
    """Base class and the float32 (no-op) policy.

    Attributes a subclass may set:

    * ``quantized`` -- the loop wraps the model in a :class:`~adapt.layers.QuantizedModel`;
    * ``controls_lr`` -- the policy sets the learning rate itself in :meth:`end_epoch`
      and the loop's scheduler is off (MuPPET).
    """

    name = "float32"
    quantized = False
    controls_lr = False
    #: Whether the policy's quantized layers quantize their inputs (where ``in_place_inputs`` applies).
    quantizes_inputs = False

    #: Config fields that :meth:`from_config` passes to the constructor itself (AdaPT: ``variant``
    #: and ``seed``); every other constructor parameter is an option of ``config.policy``.
    config_fields: tuple = ()

    @classmethod
    def from_config(cls, config) -> "PrecisionPolicy":
        """``cls(**{field: config.field for field in config_fields}, **config.policy)``."""
        return cls(**{f: getattr(config, f) for f in cls.config_fields}, **dict(config.policy))

    @classmethod
    def option_names(cls) -> tuple:
        """The options ``config.policy`` may set: the constructor's parameters less :attr:`config_fields`.

        What config validation accepts for a method of this class (:mod:`adapt.methods`)."""
        params = inspect.signature(cls).parameters.values()
        return tuple(p.name for p in params
                     if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in cls.config_fields)

    def setup(self, model, qmodel, config) -> None:
        self.model, self.qmodel, self.config = model, qmodel, config
        self.epoch_float = 0.0

    def make_optimizer(self, params, config) -> torch.optim.Optimizer:
        """SGD with momentum and weight decay on ``params`` (the FP32 masters when quantized)."""
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.nesterov)

    def loss_penalty(self) -> float:
        """A constant added to the reported training loss (AdaPT's precision penalty); no gradient."""
        return 0.0

    def before_step(self, step: int, loss: float) -> None:
        """Gradients are in ``param.grad`` (already quantized by the loop); adapt formats here."""

    def after_step(self, step: int) -> None:
        """Weights were just re-quantized from the masters."""

    def end_epoch(self, epoch: int, metrics: dict, optimizer) -> bool:
        """Called after evaluation; return True to end training."""
        return False

    def epoch_log(self) -> dict:
        """Extra per-epoch fields merged into the run record's epoch metrics."""
        return {}

    def traces(self) -> dict:
        return {}

    def summary(self) -> dict:
        """Final per-run facts for the record (e.g. final formats)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    #: Keys of :meth:`state_dict` whose content :meth:`traces` holds too.  The loop's checkpoint
    #: leaves them out (the run's journal has the traces, :class:`adapt.records.TraceJournal`), and
    #: :meth:`state_from_traces` rebuilds them on resume.  A policy that leaves this empty is
    #: checkpointed with its whole :meth:`state_dict`, which is always correct.
    trace_state_keys: tuple = ()

    def state_from_traces(self, traces: dict, state: dict) -> dict:
        """The :attr:`trace_state_keys` entries of :meth:`state_dict`, rebuilt from ``traces``.

        ``traces`` is what :meth:`traces` returned at the checkpoint, after a JSON round trip;
        ``state`` is the rest of that checkpoint's state.
        """
        return {}

    def checkpoint_state(self) -> dict:
        """What the loop's checkpoint stores: :meth:`state_dict` without :attr:`trace_state_keys`."""
        state = self.state_dict()
        for key in self.trace_state_keys:
            del state[key]
        return state

    def load_checkpoint_state(self, state: dict, traces: dict) -> None:
        """Inverse of :meth:`checkpoint_state`, given the :meth:`traces` of the same moment."""
        if self.trace_state_keys:
            state = {**state, **self.state_from_traces(traces, state)}
        self.load_state_dict(state)


@torch.no_grad()
def normalize_gradients_(grads: list, norms: Optional[list] = None) -> list:
    """Divide every gradient by its L2 norm, in place, where the norm is > 0 (``MSGD_FP.step``).

    AdaPT's released optimizer does this to every parameter's gradient before SGD, which turns the
    learning rate into a step length per tensor (docs/method.md §1.4.3).  ``norms``: the gradients'
    norms as 0-d tensors if already computed.  Returns the norms.  A 0-d float32 divisor divides
    exactly as the Python float of its value does; dividing by 1 elsewhere is exact.
    """
    if not grads:
        return []
    norms = list(torch._foreach_norm(grads)) if norms is None else list(norms)
    stacked = torch.stack(norms)
    # On CUDA one launch for all tensors (adapt.quant.divide_many_), on CPU a loop of div_ (bit-identical).
    divide_many_(grads, torch.where(stacked > 0, stacked, torch.ones_like(stacked)))
    return norms


class Float32Policy(PrecisionPolicy):
    """Plain float32 training: no quantization anywhere.

    ``normalize_gradients=True`` trains with AdaPT's optimizer instead of plain SGD: every gradient is
    divided by its L2 norm before the step (:func:`normalize_gradients_`), and nothing is quantized.
    That separates what AdaPT's optimizer does to accuracy from what its quantization does
    (notebook 40's decomposition).
    """

    def __init__(self, normalize_gradients: bool = False):
        if not isinstance(normalize_gradients, bool):
            raise ValueError(f"normalize_gradients must be True or False, got {normalize_gradients!r}")
        self.normalize_gradients = normalize_gradients

    def before_step(self, step: int, loss: float) -> None:
        if self.normalize_gradients:
            normalize_gradients_([p.grad for p in self.model.parameters() if p.grad is not None])

    def summary(self) -> dict:
        return {"normalize_gradients": True} if self.normalize_gradients else {}


class FixedPrecisionPolicy(PrecisionPolicy):
    """One static format for every layer: fixed point ``(word_length, fractional_length)``,
    or dynamic fixed point with ``bits`` (MuPPET's format at one precision).

    Quantizes weights (from the FP32 master), weight gradients, and layer inputs and
    outputs; activation gradients only when ``quantize_activation_grads``.  For
    ablations, tests and the speed benchmark.
    """

    name = "fixed"
    quantized = True
    quantizes_inputs = True

    def __init__(self, word_length: Optional[int] = 8, fractional_length: Optional[int] = 4,
                 bits: Optional[int] = None, quantize_inputs: bool = True, quantize_outputs: bool = True,
                 quantize_weight_grads: bool = True, quantize_activation_grads: bool = False,
                 log_interval: int = 10):
        if bits is not None:
            self.format = DynamicFixedPoint(bits)
        else:
            self.format = FixedPoint(word_length, fractional_length)
        self.quantize_inputs = quantize_inputs
        self.quantize_outputs = quantize_outputs
        self.quantize_weight_grads = quantize_weight_grads
        self.quantize_activation_grads = quantize_activation_grads
        self.trace = TensorTrace(log_interval)

    def setup(self, model, qmodel, config) -> None:
        super().setup(model, qmodel, config)
        fmt = self.format
        for layer in qmodel.layers.values():
            layer.input_format = fmt if self.quantize_inputs else None
            layer.output_format = fmt if self.quantize_outputs else None
            layer.input_grad_format = fmt if self.quantize_activation_grads else None
        for qp in qmodel.params.values():
            qp.weight_format = fmt
            qp.grad_format = fmt if self.quantize_weight_grads else None
        qmodel.quantize_weights()

    def after_step(self, step: int) -> None:
        if self.trace.due(step):
            self.trace.log(step, self.epoch_float, self.qmodel)

    def traces(self) -> dict:
        return {"tensors": self.trace.data}

    def summary(self) -> dict:
        return {"format": str(self.format)}

    def state_dict(self) -> dict:
        return {"trace": self.trace.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.trace.load_state_dict(state["trace"])

    trace_state_keys = ("trace",)

    def state_from_traces(self, traces: dict, state: dict) -> dict:
        return {"trace": self.trace.state_from_data(traces.get("tensors", {}))}
