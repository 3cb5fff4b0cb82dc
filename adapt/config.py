"""What one training run is: the :class:`ExperimentConfig` dataclass and its validation.

The named configs with the papers' hyperparameters (the registry ``CONFIGS``) are experiment
machinery and live in :mod:`adapt.experiments.configs`; this module is what the training loop
needs, and it validates every field against the code that consumes it.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Optional

from adapt import heuristic, models
from adapt.data.base import DATASETS
from adapt.methods import METHODS

__all__ = ["ExperimentConfig", "allowed_values", "quantizes_inputs", "SCHEDULERS", "PROTOCOLS", "MAX_SEED"]

SCHEDULERS = ("plateau", "step", "none")
#: The largest seed a config takes: 2**32 - 1, the largest that NumPy's legacy seeding and scikit-learn's
#: splits take (a larger one would pass here and fail once the run folder exists).
MAX_SEED = 2**32 - 1
PROTOCOLS = ("kfold", "holdout", "none")


def allowed_values() -> dict:
    """``{"model": names, "dataset": names, "init": ..., "variant": ..., "method": names, "policy": {method:
    option names}, "softmax_models": ...}``: what :meth:`ExperimentConfig.validate` accepts.

    Read from the code that consumes each field, so that validation cannot drift from it: the model
    table (:data:`adapt.models.MODELS`), the data set table (:data:`adapt.data.base.DATASETS`), the
    heuristic's variants and the method registry (:data:`adapt.methods.METHODS`; a method's options
    are its policy class's :meth:`~adapt.policies.PrecisionPolicy.option_names`).  Read afresh at
    every validation, so an entry registered at run time is accepted at once.
    """
    return {"model": tuple(models.MODELS), "dataset": tuple(DATASETS), "init": tuple(models.INITS),
            "variant": tuple(heuristic.VARIANTS), "method": tuple(METHODS),
            "policy": {m: cls.option_names() for m, cls in METHODS.items()},
            "softmax_models": tuple(models.SOFTMAX_OUTPUT_MODELS)}


def quantizes_inputs(method: str) -> bool:
    """Whether the quantized layers of ``method``'s policy quantize their inputs (its class's
    ``quantizes_inputs``): where ``in_place_inputs`` can apply (MuPPET's layers quantize outputs only,
    docs/method.md §2.3.2; float32 quantizes nothing)."""
    return bool(getattr(METHODS.get(method), "quantizes_inputs", False))


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one training run.  ``policy`` holds the method's own options."""

    name: str = "custom"
    model: str = "alexnet_cifar"
    dataset: str = "digits"
    method: str = "float32"
    variant: str = "reference"
    profile: str = "custom"
    epochs: int = 10
    batch_size: int = 32
    accumulation_steps: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    l1_decay: float = 0.0
    scheduler: str = "none"
    plateau_patience: int = 10
    plateau_threshold: float = 1e-6
    plateau_factor: float = 0.1
    step_milestones: tuple = (50, 100)
    step_gamma: float = 0.1
    protocol: str = "kfold"
    n_folds: int = 10
    fold: int = 0
    val_fraction: float = 0.2
    subset: Optional[int] = None
    test_subset: Optional[int] = None
    init: str = "paper"
    seed: int = 0
    rounding: str = "stochastic"
    augment: bool = True
    eval_batch_size: int = 500
    target_accuracy: Optional[float] = None
    policy: dict = field(default_factory=dict)
    # -- The released model and layer quirks (docs/method.md §1.10).  Off by default: a custom
    # config gets the corrected behaviour; the named configs of AdaPT's code turn them on in the
    # reference variant (adapt.experiments.configs.released_quirks).
    #: The model returns ``softmax(logits)`` and the loop's cross-entropy applies a second softmax, as
    #: the released LeNet-5 (``lorenz0890/AdaPT@81e54e0 models/lenet5_fp.py L91-L94, L141``,
    #: ``models/lenet5.py L71-L74, L114``).  Model ``lenet5`` only.
    softmax_output: bool = False
    #: Each quantized layer writes its quantized input back into the input tensor object, as the
    #: released layers' ``in_data.data = quantizer(in_data, ...)`` (``models/qlayers/qconvd2d_fp.py
    #: L13``): every alias of that tensor (a residual shortcut) sees the quantized values.  Methods
    #: whose layers quantize inputs (``adapt``, ``fixed``) only.
    in_place_inputs: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, its value and what is allowed."""
        allowed_names = allowed_values()

        def need(cond, fieldname, allowed, hint=""):
            if not cond:
                raise ValueError(f"config field {fieldname!r} must be {allowed}, got {getattr(self, fieldname)!r}{hint}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def integer(fieldname, low=1):
            v = getattr(self, fieldname)
            need(is_int(v) and v >= low, fieldname, "a positive integer" if low == 1 else f"an integer >= {low}")

        def number(fieldname, ok, allowed):
            v = getattr(self, fieldname)
            need(is_number(v) and ok(v), fieldname, f"a finite number {allowed}")

        def one_of(fieldname, values):
            v = getattr(self, fieldname)
            need(isinstance(v, str) and v in values, fieldname, f"one of {tuple(values)}")

        for f in ("name", "profile"):
            need(isinstance(getattr(self, f), str) and getattr(self, f) != "", f, "a non-empty string")
        one_of("model", allowed_names["model"])
        one_of("dataset", allowed_names["dataset"])
        one_of("method", allowed_names["method"])
        one_of("variant", allowed_names["variant"])
        one_of("scheduler", SCHEDULERS)
        one_of("protocol", PROTOCOLS)
        one_of("rounding", ("stochastic", "nearest"))
        one_of("init", allowed_names["init"])
        for f in ("epochs", "batch_size", "accumulation_steps", "eval_batch_size", "plateau_patience", "n_folds"):
            integer(f)
        if self.protocol == "kfold":
            need(self.n_folds >= 2, "n_folds", "an integer >= 2 with protocol 'kfold'")
        need(is_int(self.fold) and 0 <= self.fold < self.n_folds, "fold", f"an integer in [0, {self.n_folds - 1}]")
        need(is_int(self.seed) and 0 <= self.seed <= MAX_SEED, "seed",
             f"an integer in [0, {MAX_SEED}] (2**32 - 1, the largest seed scikit-learn's splits take)")
        for f in ("subset", "test_subset"):
            v = getattr(self, f)
            need(v is None or (is_int(v) and v >= 1), f, "None or a positive integer")
        number("lr", lambda v: v > 0, "> 0")
        number("momentum", lambda v: 0 <= v < 1, "in [0, 1)")
        for f in ("weight_decay", "l1_decay", "plateau_threshold"):
            number(f, lambda v: v >= 0, ">= 0")
        number("plateau_factor", lambda v: 0 < v < 1, "in (0, 1)")
        number("step_gamma", lambda v: 0 < v <= 1, "in (0, 1]")
        number("val_fraction", lambda v: 0 < v < 1, "in (0, 1)")
        need(self.target_accuracy is None or (is_number(self.target_accuracy) and 0 < self.target_accuracy <= 1),
             "target_accuracy", "None or a finite number in (0, 1]")
        for f in ("nesterov", "augment"):
            need(isinstance(getattr(self, f), bool), f, "a bool (True or False)")
        need(not self.nesterov or self.momentum > 0, "nesterov", "False when momentum is 0 (SGD's rule)",
             f" with momentum {self.momentum!r}")
        m = self.step_milestones
        need(isinstance(m, (tuple, list)) and all(is_int(e) and e >= 1 for e in m)
             and all(a <= b for a, b in zip(m[:-1], m[1:])), "step_milestones",
             "a tuple (or list) of non-decreasing integers >= 1 (epochs)")
        self._validate_policy(need, allowed_names["policy"][self.method])
        self._validate_released_quirks(need, allowed_names)

    def _validate_policy(self, need, options: tuple) -> None:
        policy, method = self.policy, self.method
        need(isinstance(policy, dict), "policy", "a dict of the method's options")
        if not options:
            need(not policy, "policy", f"empty for method {method!r} (its policy takes no options)")
            return
        what = f"a dict of the options of method {method!r} ({', '.join(options)})"
        need(all(isinstance(k, str) for k in policy), "policy", what, ": option names are strings")
        unknown = [k for k in policy if k not in options]
        if unknown:
            notes = []
            for k in unknown:
                close = difflib.get_close_matches(k, options, n=1)
                notes.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            need(False, "policy", what, f"; unknown option{'s' if len(unknown) > 1 else ''} {', '.join(notes)}")
        try:
            json.dumps(policy)
        except (TypeError, ValueError) as exc:  # the run record stores the config as JSON
            need(False, "policy", "a dict of JSON values (numbers, strings, booleans, None, lists, dicts)",
                 f": {exc}")
        # The values: the policy's own constructor checks them (ranges, choices), here, before a run
        # folder exists, rather than when the run starts.
        try:
            METHODS[method].from_config(self)
        except (TypeError, ValueError) as exc:
            need(False, "policy", f"options of method {method!r} with valid values", f": {exc}")

    def _validate_released_quirks(self, need, allowed_names: dict) -> None:
        """The released model and layer quirks (docs/method.md §1.10): booleans, and only where the
        released code has them (a quirk that would do nothing is refused, so a record never claims it)."""
        for f in ("softmax_output", "in_place_inputs"):
            need(isinstance(getattr(self, f), bool), f, "a bool (True or False)")
        softmax_models = allowed_names["softmax_models"]
        need(not self.softmax_output or self.model in softmax_models, "softmax_output",
             f"False for model {self.model!r} (True only for {', '.join(map(repr, softmax_models))}: "
             f"the released LeNet-5 returns softmax(logits); the released AlexNet and ResNet return logits)")
        need(not self.in_place_inputs or quantizes_inputs(self.method), "in_place_inputs",
             f"False for method {self.method!r} (True only for "
             f"{', '.join(repr(m) for m in METHODS if quantizes_inputs(m))}, whose quantized layers quantize their inputs)")

    def replace(self, **changes) -> "ExperimentConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)}; valid: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-ready dict: tuples (also inside ``policy``) become lists, so a record's
        config compares equal to the config it was written from."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        d = dict(d)
        if "step_milestones" in d:
            d["step_milestones"] = tuple(d["step_milestones"])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)}")
        return cls(**d)
