"""The training methods: one registry from a method name to its precision-policy class.

A config's ``method`` names an entry here; :func:`make_policy` builds that entry's policy from
the config, and :meth:`adapt.config.ExperimentConfig.validate` accepts exactly the registered
names and, for each, the options its policy class declares
(:meth:`~adapt.policies.PrecisionPolicy.option_names`).  Adding a method is one call::

    from adapt.methods import register_method
    from adapt.policies import PrecisionPolicy

    class StepUpPolicy(PrecisionPolicy):
        ...

    register_method("stepup", StepUpPolicy)

after which configs with ``method="stepup"`` validate, train (:func:`adapt.train.run`) and show in
the tables and figures (a method without a colour of its own gets one from a fallback palette).
docs/extending.md §4 walks through a complete example.  For a one-off experiment,
``adapt.train.run(config, policy=obj)`` trains with a policy object instead of the registry's.
"""
from __future__ import annotations

import difflib

from adapt.heuristic import AdaptPolicy
from adapt.muppet import MuppetPolicy
from adapt.policies import FixedPrecisionPolicy, Float32Policy, PrecisionPolicy

__all__ = ["METHODS", "register_method", "policy_class", "make_policy"]

#: method name -> precision-policy class.  Read it; change it with :func:`register_method`.
METHODS: dict[str, type] = {}


def register_method(name: str, policy: type, *, replace: bool = False) -> None:
    """Register ``policy`` (a :class:`~adapt.policies.PrecisionPolicy` subclass) as method ``name``.

    ``ValueError`` when the name is taken (``replace=True`` replaces it) or is not a non-empty
    string without ``/`` (config names are ``<profile>/<method>/<model>/<dataset>``);
    ``TypeError`` when ``policy`` is not a policy class.
    """
    if not isinstance(name, str) or not name or "/" in name or name != name.strip():
        raise ValueError(f"method name must be a non-empty string without '/' or surrounding spaces, got {name!r}")
    if not (isinstance(policy, type) and issubclass(policy, PrecisionPolicy)):
        raise TypeError(f"method {name!r}: expected a subclass of adapt.policies.PrecisionPolicy, got {policy!r}")
    if name in METHODS and METHODS[name] is not policy and not replace:
        raise ValueError(f"method {name!r} is registered already (as {METHODS[name].__name__}); "
                         f"pass replace=True to replace it")
    METHODS[name] = policy


def policy_class(method: str) -> type:
    """The policy class registered as ``method``; ``ValueError`` naming the registered ones otherwise."""
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {method!r}{hint}; registered: {', '.join(METHODS)} "
                         f"(adapt.methods.register_method adds one)") from None


def make_policy(config) -> PrecisionPolicy:
    """The precision policy of ``config.method``, built from the config (``config.policy`` holds its options)."""
    return policy_class(config.method).from_config(config)


register_method("float32", Float32Policy)
register_method("fixed", FixedPrecisionPolicy)
register_method("adapt", AdaptPolicy)
register_method("muppet", MuppetPolicy)
