"""Compare two run records and say where they first differ (``python -m adapt compare A B``).

Two runs of one config on one machine, with the same package versions and thread
count, give bit-identical records (README, "Reproducibility").  Across machines the
float32 kernels that torch, MKL and oneDNN pick (by CPU capability, BLAS build and
thread count) may round differently, and the difference grows through training.
This module tells the two cases apart:

* whether the records are identical in their results (everything but the fields that
  always differ: :data:`IGNORED_FIELDS` at the top and :data:`IGNORED_KEYS` anywhere);
* the config fields that differ;
* the first epoch and metric that differ, with both values and the absolute and
  relative difference, and the final epoch's metrics side by side;
* the first trace entry that differs: for a :class:`~adapt.policies.TensorTrace`
  (``traces["tensors"]``, logged every ``interval`` steps) the series, the logged step
  and the tensor; for event lists (``traces["switches"]``) the event and its step;
  for per-epoch series (``traces["muppet"]``) the epoch;
* the environment entries that differ (:func:`adapt.records.environment_info`:
  CPU model and capability, BLAS/oneDNN build, threads, versions, device), which may
  explain a difference.

:func:`compare_records` is the pure function (two record dicts in, a
:class:`Comparison` out); :func:`main` is the command line.  Exit status: 0 when the
records are identical (within ``--tolerance``/``--rtol`` if given), 1 when they
differ, 2 on a usage or file error.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple

from adapt.records import load_record

__all__ = [
    "IGNORED_FIELDS", "IGNORED_KEYS", "RESULT_FIELDS", "EpochDifference", "TraceDifference", "Comparison",
    "compare_records", "load", "UsageError",
]

#: Top-level record fields that differ between any two runs (times, timestamps, the machine).
IGNORED_FIELDS = ("wall_time_s", "started", "finished", "environment")
#: Keys ignored wherever they occur (wall-clock times).
IGNORED_KEYS = ("time_s", "wall_time_s", "elapsed")
#: Top-level fields compared as results besides ``epochs`` and ``traces``; any other field
#: (``schema``, ``name``, ``run_id``, ``overrides``...) is listed as metadata, and a
#: difference there does not make the records differ (``config`` says what was run).
RESULT_FIELDS = ("status", "message", "final", "policy")

#: Environment entries listed first (those that decide float32 rounding on a CPU or GPU).
_ENV_ORDER = ("cpu_model", "machine", "cpu_capability", "aten_cpu_capability_env", "cpu_flags", "blas", "lapack",
              "mkl", "mkldnn", "openmp", "parallel_backend", "threads", "interop_threads", "thread_env",
              "numba_threads", "numba_threading_layer", "device", "gpu", "cuda", "cudnn", "cudnn_deterministic",
              "cudnn_benchmark", "cuda_matmul_tf32", "cudnn_tf32", "deterministic_algorithms",
              "float32_matmul_precision", "torch", "torch_git", "numpy", "numba", "python", "adapt", "platform")
_MISSING = "(not recorded)"


# ----------------------------------------------------------------------------- value comparison
def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Close:
    """``a == b``, or for two numbers ``|a - b| <= atol + rtol * max(|a|, |b|)``."""

    def __init__(self, atol: float = 0.0, rtol: float = 0.0):
        if not (atol >= 0 and rtol >= 0):
            raise ValueError(f"tolerances must be >= 0, got atol={atol!r}, rtol={rtol!r}")
        self.atol, self.rtol = float(atol), float(rtol)

    def __call__(self, a, b) -> bool:
        if _is_number(a) and _is_number(b):
            if a == b:
                return True
            if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
                return True
            if not (math.isfinite(a) and math.isfinite(b)):
                return False
            return abs(a - b) <= self.atol + self.rtol * max(abs(a), abs(b))
        if isinstance(a, dict) and isinstance(b, dict):
            return _first_diff(a, b, self) is None
        if isinstance(a, list) and isinstance(b, list):
            return _first_diff(a, b, self) is None
        return a == b


def _drop_ignored(obj):
    if isinstance(obj, dict):
        return {k: _drop_ignored(v) for k, v in obj.items() if k not in IGNORED_KEYS}
    if isinstance(obj, list):
        return [_drop_ignored(v) for v in obj]
    return obj


def _first_diff(a, b, close, path: Tuple = ()) -> Optional[Tuple[Tuple, Any, Any]]:
    """The first ``(path, a_value, b_value)`` where ``a`` and ``b`` differ (depth first, a's key order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k in IGNORED_KEYS:
                continue
            if k not in a or k not in b:
                return path + (k,), a.get(k, _MISSING), b.get(k, _MISSING)
            found = _first_diff(a[k], b[k], close, path + (k,))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_diff(x, y, close, path + (i,))
            if found:
                return found
        if len(a) != len(b):
            i = min(len(a), len(b))
            return path + (i,), (a[i] if i < len(a) else _MISSING), (b[i] if i < len(b) else _MISSING)
        return None
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return (path, a, b) if a != b else None
    return None if close(a, b) else (path, a, b)


def _path_str(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _diffs(a, b) -> Tuple[Optional[float], Optional[float]]:
    if _is_number(a) and _is_number(b) and math.isfinite(a) and math.isfinite(b):
        d = abs(a - b)
        m = max(abs(a), abs(b))
        return d, (d / m if m else 0.0)
    return None, None


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str) and v == _MISSING:
        return v
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 120 else s[:117] + "..."


def _fmt_diff(d: Optional[float], r: Optional[float]) -> str:
    return f"  (abs {d:.3g}, rel {r:.3g})" if d is not None else ""


# ----------------------------------------------------------------------------- result types
@dataclass
class EpochDifference:
    """A metric that differs between the two records at one epoch."""

    epoch: int            #: position in ``record["epochs"]`` (the epoch's own ``epoch`` field where present)
    metric: str
    a: Any
    b: Any
    abs_diff: Optional[float] = None
    rel_diff: Optional[float] = None
    others: List[str] = field(default_factory=list)  #: the other metrics that differ at this epoch

    def format(self) -> str:
        diff = _fmt_diff(self.abs_diff, self.rel_diff)
        return f"epoch {self.epoch}, {self.metric}: a {_fmt(self.a)}  b {_fmt(self.b)}{diff}"


@dataclass
class TraceDifference:
    """The first entry of one trace (``record["traces"][key]``) that differs."""

    key: str                      #: trace and series, e.g. ``"tensors.word_length"``, ``"switches"``
    index: Optional[int]          #: position in the series or event list
    path: str                     #: full path of the first differing value, e.g. ``tensors.sparsity[30][2]``
    a: Any
    b: Any
    step: Optional[int] = None    #: optimizer step of the entry, where the layout records steps
    epoch: Optional[float] = None  #: epoch of the entry, where the layout records it
    tensor: Optional[str] = None  #: tensor name, where the entry is per tensor
    tensor_index: Optional[int] = None
    previous_step: Optional[int] = None  #: the last logged step before, where entries still agree
    abs_diff: Optional[float] = None
    rel_diff: Optional[float] = None

    def sort_key(self):
        inf = math.inf
        return (self.step if self.step is not None else inf, self.epoch if self.epoch is not None else inf)

    def format(self) -> str:
        where = [self.path]
        if self.step is not None:
            step = f"step {self.step}"
            if self.previous_step is not None:
                step += f" (equal at logged step {self.previous_step})"
            where.append(step)
        if self.epoch is not None:
            where.append(f"epoch {self.epoch:.4g}" if isinstance(self.epoch, float) else f"epoch {self.epoch}")
        if self.tensor is not None or self.tensor_index is not None:
            where.append(f"tensor {self.tensor_index} {self.tensor}" if self.tensor_index is not None
                         else f"tensor {self.tensor}")
        return f"{', '.join(where)}: a {_fmt(self.a)}  b {_fmt(self.b)}{_fmt_diff(self.abs_diff, self.rel_diff)}"


@dataclass
class Comparison:
    """What :func:`compare_records` found; :meth:`format` is the report the command prints."""

    a_label: str = "a"
    b_label: str = "b"
    atol: float = 0.0
    rtol: float = 0.0
    config: List[Tuple[str, Any, Any]] = field(default_factory=list)       #: (field, a, b)
    n_epochs: Tuple[int, int] = (0, 0)
    first_epoch: Optional[EpochDifference] = None
    final_epoch: List[Tuple[str, Any, Any]] = field(default_factory=list)  #: last epoch's differing metrics
    final_epoch_index: Tuple[Optional[int], Optional[int]] = (None, None)
    first_trace: Optional[TraceDifference] = None
    traces: List[TraceDifference] = field(default_factory=list)            #: first difference of every trace
    other: List[Tuple[str, Any, Any]] = field(default_factory=list)        #: status, final, policy... (path, a, b)
    metadata: List[Tuple[str, Any, Any]] = field(default_factory=list)     #: name, run_id, schema... (not results)
    environment: List[Tuple[str, Any, Any]] = field(default_factory=list)  #: (key, a, b)

    @property
    def results_identical(self) -> bool:
        """Epochs, traces, final statistics, policy summary and status all agree."""
        return (self.first_epoch is None and self.first_trace is None and not self.other
                and self.n_epochs[0] == self.n_epochs[1])

    @property
    def identical(self) -> bool:
        """Same config and identical results (wall times, timestamps and environment are not compared)."""
        return self.results_identical and not self.config

    def to_dict(self) -> dict:
        out = asdict(self)
        out["identical"] = self.identical
        out["results_identical"] = self.results_identical
        return out

    def format(self) -> str:
        lines = [f"a: {self.a_label}", f"b: {self.b_label}"]
        how = "bit for bit" if self.atol == 0 and self.rtol == 0 else f"within atol {self.atol:g}, rtol {self.rtol:g}"
        if self.identical:
            lines.append(f"IDENTICAL: same config and same results ({how}; wall times, timestamps and environment "
                         "not compared)")
        elif self.results_identical:
            lines.append(f"DIFFERENT configs, identical results ({how})")
        else:
            lines.append(f"DIFFERENT results (compared {how})")
        if self.config:
            lines.append(f"config differs in {len(self.config)} field(s):")
            lines += [f"  {k}: {_fmt(a)} vs {_fmt(b)}" for k, a, b in self.config]
        else:
            lines.append("config: identical")
        if self.n_epochs[0] != self.n_epochs[1]:
            lines.append(f"epochs: a has {self.n_epochs[0]}, b has {self.n_epochs[1]}")
        if self.first_epoch is not None:
            lines.append(f"first differing epoch: {self.first_epoch.format()}")
            if self.first_epoch.others:
                lines.append(f"  also differing at that epoch: {', '.join(self.first_epoch.others)}")
        elif self.n_epochs[0] or self.n_epochs[1]:
            lines.append("epochs: identical" if self.n_epochs[0] == self.n_epochs[1]
                         else "epochs: identical where both have them")
        if self.final_epoch:
            ia, ib = self.final_epoch_index
            lines.append(f"final epoch (a {ia}, b {ib}):")
            width = max(len(k) for k, _, _ in self.final_epoch)
            for k, a, b in self.final_epoch:
                lines.append(f"  {k:<{width}}  a {_fmt(a)}  b {_fmt(b)}{_fmt_diff(*_diffs(a, b))}")
        if self.first_trace is not None:
            lines.append(f"first differing trace entry: {self.first_trace.format()}")
            rest = [t for t in self.traces if t is not self.first_trace]
            if rest:
                lines.append("  first difference of the other traces:")
                lines += [f"  - {t.format()}" for t in rest]
        if self.other:
            lines.append("other result differences:")
            lines += [f"  {k}: {_fmt(a)} vs {_fmt(b)}" for k, a, b in self.other]
        if self.metadata:
            lines.append("record metadata differences (not results):")
            lines += [f"  {k}: {_fmt(a)} vs {_fmt(b)}" for k, a, b in self.metadata]
        if self.environment:
            lines.append("environment differences (may explain a difference):")
            for side, label in ((1, "a"), (2, "b")):
                missing = [e[0] for e in self.environment if e[side] == _MISSING]
                if missing:
                    lines.append(f"  - not recorded in {label} (an older record): {', '.join(missing)}")
            for k, a, b in self.environment:
                if _MISSING in (a, b):
                    continue
                if isinstance(a, list) and isinstance(b, list):
                    only_a = [x for x in a if x not in b]
                    only_b = [x for x in b if x not in a]
                    lines.append(f"  - {k}: only in a {_fmt(only_a)}, only in b {_fmt(only_b)}")
                else:
                    lines.append(f"  - {k}: {_fmt(a)} vs {_fmt(b)}")
        else:
            lines.append("environment: identical")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the parts
def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _config_diff(a: dict, b: dict, close) -> list:
    fa, fb = _flatten(a), _flatten(b)
    return [(k, fa.get(k, _MISSING), fb.get(k, _MISSING))
            for k in list(fa) + [k for k in fb if k not in fa]
            if k not in fa or k not in fb or not close(fa[k], fb[k])]


def _epoch_diff(ea: list, eb: list, close) -> Optional[EpochDifference]:
    for i, (x, y) in enumerate(zip(ea, eb)):
        x, y = x if isinstance(x, dict) else {"value": x}, y if isinstance(y, dict) else {"value": y}
        keys = [k for k in list(x) + [k for k in y if k not in x] if k not in IGNORED_KEYS]
        bad = [k for k in keys if k not in x or k not in y or not close(x[k], y[k])]
        if bad:
            k = bad[0]
            a, b = x.get(k, _MISSING), y.get(k, _MISSING)
            epoch = x.get("epoch", i) if _is_number(x.get("epoch", i)) else i
            return EpochDifference(epoch, k, a, b, *_diffs(a, b), others=bad[1:])
    return None


def _final_epoch_diff(ea: list, eb: list, close) -> list:
    if not ea or not eb:
        return []
    x, y = ea[-1], eb[-1]
    if not (isinstance(x, dict) and isinstance(y, dict)):
        return []
    keys = [k for k in list(x) + [k for k in y if k not in x] if k not in IGNORED_KEYS]
    return [(k, x.get(k, _MISSING), y.get(k, _MISSING)) for k in keys
            if k not in x or k not in y or not close(x[k], y[k])]


def _series_trace_diff(key: str, ta: dict, tb: dict, close) -> Optional[TraceDifference]:
    """A dict of parallel series indexed by ``step`` (TensorTrace, strategy log) or ``epoch`` (MuPPET)."""
    index_key = "step" if isinstance(ta.get("step"), list) else "epoch"
    n = len(ta.get(index_key) or [])
    names = ta.get("names") if isinstance(ta.get("names"), list) else None
    static_keys = ("names", "numel", "is_weight")  # per tensor, not per logged step
    series = [k for k in ta if isinstance(ta[k], list) and len(ta[k]) == n and k not in static_keys]
    # the static part first (names, numel, interval...): a different layout is the first difference
    static_a = {k: v for k, v in ta.items() if k not in series}
    static_b = {k: v for k, v in tb.items() if k not in series}
    found = _first_diff(static_a, static_b, close)
    if found:
        path, a, b = found
        return TraceDifference(key=f"{key}.{path[0]}" if path else key, index=None,
                               path=_path_str((key,) + path), a=a, b=b, **_num(a, b))
    m = max([n] + [len(tb[k]) for k in series if isinstance(tb.get(k), list)])
    steps_a, steps_b = ta.get("step") or [], tb.get("step") or []
    epochs_a, epochs_b = ta.get("epoch") or [], tb.get("epoch") or []
    for i in range(m):
        for k in series:
            sa, sb = ta.get(k), tb.get(k)
            sb = sb if isinstance(sb, list) else []
            x = sa[i] if i < len(sa) else _MISSING
            y = sb[i] if i < len(sb) else _MISSING
            found = _first_diff(x, y, close, (key, k, i)) if _MISSING not in (x, y) else ((key, k, i), x, y)
            if found is None:
                continue
            path, a, b = found
            step = _pick(steps_a, steps_b, i) if index_key == "step" else None
            epoch = _pick(epochs_a, epochs_b, i)
            prev = _pick(steps_a, steps_b, i - 1) if index_key == "step" and i > 0 else None
            j = path[3] if len(path) > 3 and isinstance(path[3], int) else None
            tensor = names[j] if j is not None and names and j < len(names) else None
            return TraceDifference(key=f"{key}.{k}", index=i, path=_path_str(path), a=a, b=b, step=step, epoch=epoch,
                                   tensor=tensor, tensor_index=j, previous_step=prev, **_num(a, b))
    return None


def _pick(xs, ys, i):
    for s in (xs, ys):
        if isinstance(s, list) and 0 <= i < len(s):
            return s[i]
    return None


def _num(a, b) -> dict:
    d, r = _diffs(a, b)
    return {"abs_diff": d, "rel_diff": r}


def _event_trace_diff(key: str, la: list, lb: list, close) -> Optional[TraceDifference]:
    """A list of events (dicts with ``step``/``epoch``/``tensor``: AdaPT's and MuPPET's switches)."""
    found = _first_diff(la, lb, close, (key,))
    if found is None:
        return None
    path, a, b = found
    i = path[1] if len(path) > 1 and isinstance(path[1], int) else None
    ev_a = la[i] if i is not None and i < len(la) else None
    ev_b = lb[i] if i is not None and i < len(lb) else None
    ev = ev_a if isinstance(ev_a, dict) else ev_b if isinstance(ev_b, dict) else {}
    # the earlier of the two events is where the lists part
    if isinstance(ev_a, dict) and isinstance(ev_b, dict) and _is_number(ev_a.get("step")) and \
            _is_number(ev_b.get("step")) and ev_b["step"] < ev_a["step"]:
        ev = ev_b
    if len(path) == 2:  # a missing event: show the whole event
        a, b = ev_a if ev_a is not None else _MISSING, ev_b if ev_b is not None else _MISSING
    tensor = ev.get("tensor") if isinstance(ev.get("tensor"), str) else None
    tidx = ev.get("index") if _is_number(ev.get("index")) and tensor is not None else None
    return TraceDifference(key=key, index=i, path=_path_str(path), a=a, b=b,
                           step=ev.get("step") if _is_number(ev.get("step")) else None,
                           epoch=ev.get("epoch") if _is_number(ev.get("epoch")) else None,
                           tensor=tensor, tensor_index=tidx, **_num(a, b))


def _trace_diffs(ta: dict, tb: dict, close) -> List[TraceDifference]:
    ta, tb = ta or {}, tb or {}
    out = []
    for key in list(ta) + [k for k in tb if k not in ta]:
        x, y = ta.get(key, _MISSING), tb.get(key, _MISSING)
        if isinstance(x, dict) and isinstance(y, dict) and (isinstance(x.get("step"), list)
                                                             or isinstance(x.get("epoch"), list)):
            d = _series_trace_diff(key, x, y, close)
        elif isinstance(x, list) and isinstance(y, list) and all(isinstance(e, dict) for e in x + y):
            d = _event_trace_diff(key, x, y, close)
        else:
            found = _first_diff(x, y, close, (key,))
            d = None
            if found:
                path, a, b = found
                idx = next((p for p in path if isinstance(p, int)), None)
                d = TraceDifference(key=key, index=idx, path=_path_str(path), a=a, b=b, **_num(a, b))
        if d is not None:
            out.append(d)
    return out


def _env_diff(a: dict, b: dict) -> list:
    a, b = a or {}, b or {}
    keys = [k for k in _ENV_ORDER if k in a or k in b]
    keys += [k for k in list(a) + list(b) if k not in keys]
    seen, out = set(), []
    for k in keys:
        if k in seen:
            continue
        seen.add(k)
        x, y = a.get(k, _MISSING), b.get(k, _MISSING)
        if x != y:
            out.append((k, x, y))
    return out


def compare_records(a: dict, b: dict, atol: float = 0.0, rtol: float = 0.0,
                    a_label: str = "a", b_label: str = "b") -> Comparison:
    """Compare run record ``a`` with ``b`` (dicts as :func:`adapt.records.load_record` returns).

    Numbers are equal when ``|a - b| <= atol + rtol * max(|a|, |b|)`` (default: exactly
    equal); everything else must be equal.  Wall times, timestamps and the environment
    are not compared for identity; the environment's differences are listed.
    """
    close = _Close(atol, rtol)
    ea = [e for e in (a.get("epochs") or [])]
    eb = [e for e in (b.get("epochs") or [])]
    cmp = Comparison(a_label=a_label, b_label=b_label, atol=float(atol), rtol=float(rtol))
    cmp.config = _config_diff(a.get("config") or {}, b.get("config") or {}, close)
    cmp.n_epochs = (len(ea), len(eb))
    cmp.first_epoch = _epoch_diff(ea, eb, close)
    cmp.final_epoch = _final_epoch_diff(ea, eb, close)
    last = lambda es: (es[-1].get("epoch", len(es) - 1) if es and isinstance(es[-1], dict) else None)
    cmp.final_epoch_index = (last(ea), last(eb))
    cmp.traces = sorted(_trace_diffs(a.get("traces"), b.get("traces"), close), key=TraceDifference.sort_key)
    cmp.first_trace = cmp.traces[0] if cmp.traces else None
    skip = set(IGNORED_FIELDS) | {"config", "epochs", "traces"}
    for key in list(a) + [k for k in b if k not in a]:
        if key in skip:
            continue
        x, y = _drop_ignored(a.get(key, _MISSING)), _drop_ignored(b.get(key, _MISSING))
        if isinstance(x, dict) and isinstance(y, dict):  # final, policy: the first difference of each entry
            parts = [((key, k), x.get(k, _MISSING), y.get(k, _MISSING)) for k in list(x) + [k for k in y if k not in x]]
        else:
            parts = [((key,), x, y)]
        for path, u, v in parts:
            found = _first_diff(u, v, close, path) if _MISSING not in (u, v) else (path, u, v)
            if found:
                (cmp.other if key in RESULT_FIELDS else cmp.metadata).append(
                    (_path_str(found[0]), found[1], found[2]))
    cmp.environment = _env_diff(a.get("environment"), b.get("environment"))
    return cmp


# ----------------------------------------------------------------------------- command line
class UsageError(Exception):
    """A record that cannot be read (exit status 2)."""


def load(path) -> Tuple[dict, Path]:
    """The record at ``path`` (a ``record.json`` or a run folder holding one) and the file it came from."""
    p = Path(path)
    if p.is_dir():
        p = p / "record.json"
    if not p.exists():
        where = f" (looked for record.json in the folder {path})" if Path(path).is_dir() else ""
        raise UsageError(f"no such file: {p}{where}")
    try:
        return load_record(p), p
    except (OSError, ValueError) as exc:  # unreadable, not JSON, not a run record
        msg = str(exc)
        raise UsageError(msg if str(p) in msg else f"{p}: {msg}") from exc
