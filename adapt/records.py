"""Run records: versioned JSON written atomically and loaded back (tables: :mod:`adapt.analysis.tables`).

One training run produces one record (``record.json``)::

    schema        "adapt.run/1"
    name          the config's name
    status        "running" | "completed" | "diverged" | "interrupted" | "failed"
    config        the ExperimentConfig as a dict
    environment   package versions, device, platform
    epochs        one dict per epoch: epoch, lr, train_loss, train_acc, val_loss, val_acc,
                  test_loss, test_acc, time_s, plus the policy's per-epoch fields
    traces        what the policy recorded (adapt.policies.TensorTrace layout under "tensors")
    final         final statistics (see adapt.train)
    policy        the policy's summary (e.g. final formats)
    wall_time_s, started, finished, message

Nothing is lost on a crash: :func:`atomic_write_json` and :func:`atomic_save`
write to a temporary file in the same directory, fsync it, then ``os.replace`` it
over the target, so a reader sees the previous file or the new one, never half.

While a run trains, what grows with it goes to an append-only journal beside the
record (:class:`TraceJournal`, ``journal.jsonl``: one compact JSON line per epoch
with that epoch's new epochs entry and trace points), so that the traces are not
rewritten every epoch.  The record is then rewritten per epoch without its traces (``traces`` is ``{}`` and ``journal`` says how many lines of the
journal belong to it), and :func:`load_record` puts the traces back; the record
written at the end holds everything.  The journal of a finished run then gets one last
line holding the rest of that record (:meth:`TraceJournal.finish`), so that a lost or
damaged ``record.json`` of a finished run is written back exactly as it was from the
journal alone (:func:`finished_record`, :func:`run_state` kind ``"rebuildable"``;
docs/results-format.md §1, §11).
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from adapt import __version__

__all__ = [
    "SCHEMA", "RecordError", "JournalError", "RECORD", "CHECKPOINT", "JOURNAL", "TraceJournal", "read_journal",
    "atomic_write_json", "atomic_write_text", "atomic_save", "write_running_record", "environment_info", "load_record", "load_records",
    "set_aside", "read_record", "jsonable", "RUNNING", "COMPLETED", "DIVERGED", "INTERRUPTED", "FAILED", "STATUSES",
    "FINISHED", "RunState", "run_state", "utc_now", "finished_record", "leftovers", "ReadOnlyError", "check_writable",
]

SCHEMA = "adapt.run/1"

#: The files of a run folder: the record, the last epoch's checkpoint and, while it runs, the journal.
RECORD = "record.json"
CHECKPOINT = "checkpoint.pt"
JOURNAL = "journal.jsonl"

#: The status words of a record (defined here only; every module asks this one).
RUNNING, COMPLETED, DIVERGED, INTERRUPTED, FAILED = "running", "completed", "diverged", "interrupted", "failed"
STATUSES = (RUNNING, COMPLETED, DIVERGED, INTERRUPTED, FAILED)
#: A run with one of these statuses is done: it is never resumed, and only ``force`` retrains it.
FINISHED = (COMPLETED, DIVERGED)


def utc_now() -> str:
    """The time stamps of a record (``started``, ``finished``): UTC, ISO 8601, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def jsonable(obj):
    """``obj`` as it reads back from a run record (tuples become lists, NaN and inf strings).

    Two configs are the same run when their ``jsonable`` forms are equal: a record's config is
    compared with a config built now this way."""
    return json.loads(json.dumps(_sanitize(obj), default=_json_default))


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to a run record")


def _sanitize(obj):
    """JSON has no NaN/inf: write them as strings so a diverged run's numbers survive a round trip."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; records and checkpoints are ordinary files
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ReadOnlyError(PermissionError):
    """A folder that a run or a table would be written into but that this process cannot write.

    The message is one line: which folder, why (read-only, not permitted) and what to do instead.
    """


def check_writable(folder, what: str = "write into it") -> Path:
    """Raise :class:`ReadOnlyError` unless a file can be created in ``folder`` (or, while it does not exist,
    in the nearest folder above it that does, where it would be created); returns that folder.

    Tried, not guessed from permission bits: a temporary file is created and removed, so a read-only
    mount, an immutable folder and a missing permission are all found, for any user.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ReadOnlyError(f"{existing} is a file, not a folder: cannot {what} ({folder})")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".adapt-write-test.", dir=existing)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = folder if existing == folder else f"{existing} (where {folder} would be created)"
        raise ReadOnlyError(f"{where} is read-only for this process ({exc.strerror or exc}): cannot {what}") from None
    return existing


def atomic_write_json(path, obj, indent: Optional[int] = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (the old file or the new one, never a partial one).

    ``indent=None`` writes it compactly (one line, no spaces), as the record of a running run is.
    """
    separators = (",", ":") if indent is None else None
    data = json.dumps(_sanitize(obj), indent=indent, separators=separators, default=_json_default,
                      allow_nan=False).encode()
    _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`atomic_write_json` does (tables, notes)."""
    data = text.encode()
    _atomic_write(Path(path), lambda fh: fh.write(data))


def write_running_record(path, record: dict, journal: "TraceJournal") -> None:
    """The per-epoch record of a running run: ``record`` without its traces, compact, atomically.

    ``traces`` is written as ``{}`` and ``journal`` (``{"file", "lines", "bytes"}``) says which
    part of ``journal.path`` holds them; :func:`load_record` reads them back from there.  What is
    left is of constant size per epoch except ``epochs`` (one small entry per epoch), which the
    tools that follow a running run read from this file directly.
    """
    running = {k: v for k, v in record.items() if k != "traces"}
    running["traces"] = {}
    running["journal"] = journal.pointer()
    atomic_write_json(path, running, indent=None)


def atomic_save(obj, path) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def environment_info(device=None) -> dict:
    """What decides a run's numbers beyond its config: versions, CPU, kernels, threads, device.

    Stored as every record's ``environment``.  Same values (and the same config) give
    bit-identical CPU records; a different CPU capability, BLAS/oneDNN build or thread
    count can change the float32 rounding of convolutions and matrix products, and
    ``python -m adapt compare`` lists the entries that differ between two records.

    Keys (``None`` where a probe does not apply or fails; this never raises and reads
    no host or user names):

    ``adapt``, ``python``, ``torch``, ``numpy``, ``numba`` versions (numba from its
    package metadata, without importing it); ``platform``, ``machine`` (e.g. x86_64),
    ``cpu_model`` (/proc/cpuinfo "model name", else ``platform.processor()``),
    ``cpu_count``, ``cpu_flags`` (the SIMD flags of /proc/cpuinfo that select kernels);
    ``cpu_capability`` (``torch.backends.cpu.get_cpu_capability()``: the vectorised ATen
    kernels in use) and ``aten_cpu_capability_env`` (``$ATEN_CPU_CAPABILITY``, which
    lowers it); ``blas``, ``lapack``, ``mkl``, ``mkldnn`` (oneDNN) and ``openmp`` from
    torch's build (``torch.__config__.show()``), ``mkl_available``, ``mkldnn_available``,
    ``parallel_backend``, ``torch_git``; ``device``, ``threads`` (intra-op),
    ``interop_threads``, ``thread_env`` (the thread/ISA environment variables that are
    set); ``numba_threads`` and ``numba_threading_layer`` (only once numba is imported and
    has run a parallel kernel); ``deterministic_algorithms``,
    ``deterministic_warn_only``, ``float32_matmul_precision``; on CUDA ``gpu``, ``cuda``,
    ``cudnn``, ``cudnn_deterministic``, ``cudnn_benchmark``, ``cuda_matmul_tf32`` and
    ``cudnn_tf32``.
    """
    import re

    def probe(fn, default=None):
        try:
            return fn()
        except Exception:  # a probe must never stop a run
            return default

    torch = probe(lambda: __import__("torch"))
    numpy = probe(lambda: __import__("numpy"))

    def adapt_version():
        return __version__

    def cpuinfo_text():
        with open("/proc/cpuinfo") as fh:
            return fh.read(1 << 20)

    cpuinfo = probe(cpuinfo_text, "") if sys.platform.startswith("linux") else ""

    def cpuinfo_field(name):
        m = re.search(rf"^{name}\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
        return m.group(1).strip() if m else None

    def cpu_model():
        return cpuinfo_field("model name") or platform.processor() or None

    def cpu_flags():
        flags = set((cpuinfo_field("flags") or cpuinfo_field("Features") or "").split())
        simd = re.compile(r"^(sse\d?|ssse3|sse4_[12]|avx.*|fma|f16c|amx.*|neon|asimd.*|sve.*)$")
        return sorted(f for f in flags if simd.match(f)) or None

    config_text = probe(lambda: torch.__config__.show(), "") or ""
    parallel_text = probe(lambda: torch.__config__.parallel_info(), "") or ""

    def build_setting(key):
        m = re.search(rf"\b{key}=([^,\s]+)", config_text)
        return m.group(1) if m else None

    def config_line(pattern):
        for line in config_text.splitlines():
            if re.search(pattern, line):
                return line.strip(" -\t")
        return None

    def parallel_backend():
        m = re.search(r"ATen parallel backend:\s*(.+)", parallel_text)
        return m.group(1).strip() if m else None

    env_names = ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                 "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                 "NUMBA_THREADING_LAYER", "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES")

    def numba_version():
        from importlib.metadata import version

        return version("numba")

    numba = sys.modules.get("numba")  # not imported here: importing numba costs ~0.2-0.3 s

    info = {
        "adapt": probe(adapt_version),
        "python": probe(lambda: sys.version.split()[0]),
        "torch": probe(lambda: torch.__version__),
        "numpy": probe(lambda: numpy.__version__),
        "numba": probe(numba_version),
        "platform": probe(platform.platform),
        "machine": probe(platform.machine) or None,
        "cpu_model": probe(cpu_model),
        "cpu_count": probe(os.cpu_count),
        "cpu_flags": probe(cpu_flags),
        "cpu_capability": probe(lambda: str(torch.backends.cpu.get_cpu_capability())),
        "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY"),
        "blas": probe(lambda: build_setting("BLAS_INFO")),
        "lapack": probe(lambda: build_setting("LAPACK_INFO")),
        "mkl": probe(lambda: config_line(r"Math Kernel Library|\bMKL\b(?!-DNN)")),
        "mkldnn": probe(lambda: config_line(r"MKL-DNN|oneDNN")),
        "openmp": probe(lambda: config_line(r"^\s*-?\s*OpenMP")),
        "mkl_available": probe(lambda: bool(torch.backends.mkl.is_available())),
        "mkldnn_available": probe(lambda: bool(torch.backends.mkldnn.is_available())),
        "parallel_backend": probe(parallel_backend),
        "torch_git": probe(lambda: torch.version.git_version),
        "device": str(device) if device is not None else None,
        "threads": probe(lambda: int(torch.get_num_threads())),
        "interop_threads": probe(lambda: int(torch.get_num_interop_threads())),
        "thread_env": {k: os.environ[k] for k in env_names if k in os.environ},
        "numba_threads": probe(lambda: int(numba.config.NUMBA_NUM_THREADS)) if numba is not None else None,
        "numba_threading_layer": probe(lambda: str(numba.threading_layer())) if numba is not None else None,
        "deterministic_algorithms": probe(lambda: bool(torch.are_deterministic_algorithms_enabled())),
        "deterministic_warn_only": probe(lambda: bool(torch.is_deterministic_algorithms_warn_only_enabled())),
        "float32_matmul_precision": probe(lambda: str(torch.get_float32_matmul_precision())),
    }
    if device is not None and str(device).startswith("cuda") and probe(lambda: torch.cuda.is_available(), False):
        info.update({
            "gpu": probe(lambda: torch.cuda.get_device_name(torch.device(device))),
            "cuda": probe(lambda: torch.version.cuda),
            "cudnn": probe(lambda: torch.backends.cudnn.version()),
            "cudnn_deterministic": probe(lambda: bool(torch.backends.cudnn.deterministic)),
            "cudnn_benchmark": probe(lambda: bool(torch.backends.cudnn.benchmark)),
            "cuda_matmul_tf32": probe(lambda: bool(torch.backends.cuda.matmul.allow_tf32)),
            "cudnn_tf32": probe(lambda: bool(torch.backends.cudnn.allow_tf32)),
        })
    return info


class RecordError(ValueError):
    """A ``record.json`` that cannot be used: not JSON, empty, not an object, or another schema.

    ``path`` is the file; the message names it and says what is wrong.
    """

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class JournalError(RecordError):
    """A journal (``journal.jsonl``) that does not hold what the record or checkpoint beside it refer to.

    Missing, shorter than the committed part, a committed line that is not JSON (torn or
    edited), lines out of order or an operation that does not apply.  A torn line *after* the
    committed part (a run killed while appending) is no error: it is not part of the run and
    is dropped on resume.  ``path`` is the journal.
    """


def _dumps(obj) -> str:
    """Compact JSON; NaN and infinities as Python's ``json`` writes them, so floats come back exactly."""
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def _shape(value):
    """What :func:`_diff` compares the next snapshot against: dict keys, list lengths and last items, values.

    Its size is the number of dicts, lists and values in the snapshot's dicts, plus one list
    item per list, whatever the lists' lengths.
    """
    if isinstance(value, dict):
        return ("dict", {k: _shape(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return ("list", len(value), _dumps(value[-1]) if value else None)
    return ("value", _dumps(value))


def _diff(shape, value, path: list, ops: list) -> None:
    """Append to ``ops`` the operations that turn the snapshot ``shape`` was taken of into ``value``.

    Lists are taken to grow at the end (every trace and the epochs do): the new items are an
    ``extend``.  A list that got shorter or whose last known item changed, a value that changed
    and a new key are written whole (``set``); a key that went away is a ``del``.
    """
    kind = shape[0] if shape is not None else None
    if isinstance(value, dict) and kind == "dict":
        known = shape[1]
        for key in known:
            if key not in value:
                ops.append([path + [key], "del", None])
        for key, item in value.items():
            if key in known:
                _diff(known[key], item, path + [key], ops)
            else:
                ops.append([path + [key], "set", item])
        return
    if isinstance(value, (list, tuple)) and kind == "list":
        n, last = shape[1], shape[2]
        if n <= len(value) and (n == 0 or _dumps(value[n - 1]) == last):
            if len(value) > n:
                ops.append([path, "extend", list(value[n:])])
            return
    elif not isinstance(value, (dict, list, tuple)) and kind == "value" and _dumps(value) == shape[1]:
        return
    ops.append([path, "set", value])


def _apply(root, op, where: str):
    """``root`` after one journal operation ``[path, "set" | "extend" | "del", value]``."""
    if not (isinstance(op, list) and len(op) == 3 and isinstance(op[0], list) and op[1] in ("set", "extend", "del")):
        raise ValueError(f"{where}: not an operation [path, 'set'|'extend'|'del', value]: {str(op)[:80]}")
    path, kind, value = op
    if not path:
        if kind != "set":
            raise ValueError(f"{where}: {kind!r} on the whole snapshot")
        return value
    parent = root
    for key in path[:-1]:
        if not isinstance(parent, dict) or key not in parent:
            raise ValueError(f"{where}: path {path} does not exist")
        parent = parent[key]
    key = path[-1]
    if not isinstance(parent, dict):
        raise ValueError(f"{where}: path {path} is not inside an object")
    if kind == "set":
        parent[key] = value
    elif kind == "del":
        parent.pop(key, None)
    else:
        if not isinstance(parent.get(key), list) or not isinstance(value, list):
            raise ValueError(f"{where}: 'extend' of {path}, which is not a list")
        parent[key].extend(value)
    return root


def _check_pointer(path: Path, pointer) -> tuple:
    ok = (isinstance(pointer, dict) and isinstance(pointer.get("file"), str) and pointer["file"]
          and Path(pointer["file"]).name == pointer["file"]
          and all(isinstance(pointer.get(k), int) and not isinstance(pointer.get(k), bool) and pointer[k] >= 0
                  for k in ("lines", "bytes")))
    if not ok:
        raise RecordError(path, f"its 'journal' field is not {{'file': <name>, 'lines': n, 'bytes': n}}: {pointer!r}")
    return pointer["file"], pointer["lines"], pointer["bytes"]


def read_journal(path, lines: int, nbytes: int) -> dict:
    """The snapshot that the first ``lines`` lines (``nbytes`` bytes) of the journal at ``path`` build.

    Bytes after ``nbytes`` (later lines, or a torn last line of a run killed while appending)
    are not read.  :class:`JournalError` says what is wrong otherwise.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(nbytes)
    except FileNotFoundError:
        raise JournalError(path, f"missing; the run's record or checkpoint refers to its first {lines} line(s)") from None
    if len(data) < nbytes:
        raise JournalError(path, f"{len(data)} bytes, but its first {lines} line(s) were written as {nbytes} bytes: "
                                 f"truncated or replaced")
    parts = data.split(b"\n")
    if parts[-1] != b"" and nbytes:
        raise JournalError(path, f"its first {nbytes} bytes do not end at a line end: not the journal that was written")
    parts = parts[:-1] if nbytes else []
    if len(parts) != lines:
        raise JournalError(path, f"{len(parts)} line(s) in its first {nbytes} bytes, expected {lines}")
    root = None
    for i, raw in enumerate(parts):
        try:
            entry = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JournalError(path, f"line {i + 1} is not valid JSON ({exc}): torn or edited") from exc
        if not isinstance(entry, dict) or entry.get("line") != i or not isinstance(entry.get("ops"), list):
            raise JournalError(path, f"line {i + 1} is not journal line {i} ({raw[:80]!r}...)")
        try:
            for op in entry["ops"]:
                root = _apply(root, op, f"line {i + 1}")
        except ValueError as exc:
            raise JournalError(path, str(exc)) from exc
    return {} if root is None else root


class TraceJournal:
    """The append-only journal of one run's growing history: per epoch one line of what is new.

    :meth:`append` takes a *snapshot* (the loop's ``{"epochs": record["epochs"], "traces":
    policy.traces()}``) and writes one compact JSON line ``{"line": k, "ops": [...]}`` holding only
    what changed since the previous snapshot (:func:`_diff`: new list items, changed values),
    then flushes it to disk (``fsync``); the bytes written are those of the new epoch entry and
    trace points, whatever the epoch number.  :meth:`pointer` (``file``, ``lines``, ``bytes``) is what the
    checkpoint and the running record store: :func:`read_journal` rebuilds the snapshot from
    exactly that many lines, so a line appended after the last checkpoint (a crash between the
    two) is never read, and :meth:`resume` cuts it off before appending again.

    Numbers are written as Python's ``json`` writes them, NaN and infinities included (not
    strict JSON: the file is read by :func:`read_journal`, not by other tools), so every float
    comes back bit for bit and a resumed run continues from exactly the state it left.
    """

    def __init__(self, path, lines: int = 0, nbytes: int = 0, shape=None):
        self.path = Path(path)
        self.lines, self.bytes = int(lines), int(nbytes)
        self._shape = shape

    @classmethod
    def start(cls, path) -> "TraceJournal":
        """A new journal at ``path``.  Nothing is written yet: the first :meth:`append` replaces an
        old file there atomically, so a run killed before its first epoch ends leaves it as it was."""
        return cls(path)

    @classmethod
    def resume(cls, path, pointer: dict) -> tuple:
        """``(journal, snapshot)`` from the part of ``path`` that ``pointer`` commits; later bytes are cut off."""
        path = Path(path)
        _, lines, nbytes = _check_pointer(path, pointer)
        snapshot = read_journal(path, lines, nbytes)
        if path.stat().st_size > nbytes:
            with open(path, "r+b") as fh:
                fh.truncate(nbytes)
                fh.flush()
                os.fsync(fh.fileno())
        return cls(path, lines, nbytes, _shape(snapshot) if lines else None), snapshot

    def intact(self) -> bool:
        """Whether the file still holds exactly what this object wrote (its committed bytes, nothing else)."""
        if self.lines == 0:
            return True
        try:
            return self.path.stat().st_size == self.bytes
        except FileNotFoundError:
            return False

    def restart(self) -> None:
        """Forget what was written: the next :meth:`append` writes the whole snapshot as line 0, replacing
        the file (a journal deleted or replaced while its run trained is written again from memory)."""
        self.lines, self.bytes, self._shape = 0, 0, None

    def append(self, snapshot: dict) -> int:
        """Write one line with what ``snapshot`` adds to the previous one; returns the bytes written."""
        ops: list = []
        _diff(self._shape, snapshot, [], ops)
        line = (_dumps({"line": self.lines, "ops": ops}) + "\n").encode()
        if self.lines == 0:
            _atomic_write(self.path, lambda fh: fh.write(line))
        else:
            # r+b at the committed end, not "ab": whatever follows it (a torn line) is overwritten.
            with open(self.path, "r+b") as fh:
                fh.seek(self.bytes)
                fh.write(line)
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
        self.lines += 1
        self.bytes += len(line)
        self._shape = _shape(snapshot)
        return len(line)

    def pointer(self) -> dict:
        return {"file": self.path.name, "lines": self.lines, "bytes": self.bytes}

    def finish(self, record: dict) -> int:
        """Append the last line of a finished run: the snapshot with ``record``'s epochs and traces and, under
        ``"record"``, the rest of it (its keys in order, ``epochs`` and ``traces`` as ``None``).

        Written after the final ``record.json``: the journal then holds that whole record, and
        :func:`finished_record` rebuilds it, byte for byte once written, when ``record.json`` is lost
        or damaged (the checkpoint of the last epoch alone cannot: it holds no history)."""
        rest = {k: (None if k in _JOURNALED else v) for k, v in record.items()}
        return self.append({"epochs": record.get("epochs", []), "traces": record.get("traces", {}), "record": rest})

    def remove(self) -> None:
        """Delete the file."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


#: The record fields that a run's journal holds (the rest of a finished record is in its last line).
_JOURNALED = ("epochs", "traces")


def finished_record(journal_path) -> Optional[dict]:
    """The whole record of a finished run, rebuilt from its journal (:meth:`TraceJournal.finish`), else ``None``.

    ``None`` when there is no journal, when its complete lines do not form a journal (a torn last
    line is not read), or when it does not end with a finished run's last line.  The record is
    returned as :func:`load_record` reads the file that held it (NaN and infinities as strings).
    """
    path = Path(journal_path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    nbytes = data.rfind(b"\n") + 1
    try:
        snapshot = read_journal(path, data[:nbytes].count(b"\n"), nbytes)
    except JournalError:
        return None
    rest = snapshot.get("record") if isinstance(snapshot, dict) else None
    if not isinstance(rest, dict) or rest.get("schema") != SCHEMA or rest.get("status") not in FINISHED:
        return None
    record = {k: (snapshot.get(k) if k in _JOURNALED else v) for k, v in rest.items()}
    return _sanitize(record)


def load_record(path, traces: bool = True) -> dict:
    """The run record at ``path``; :class:`RecordError` (naming the file) when it is not one.

    The record of a running run refers to its journal for its traces (``journal``, see
    :func:`write_running_record`): they are read from there and the record returned has the
    layout of a finished one (``traces`` filled, no ``journal``); :class:`JournalError` when the
    journal does not hold them.  ``traces=False`` returns the file as it is.
    """
    path = Path(path)
    text = _read_record_text(path)
    record = _parse_record(path, text)
    if not traces or "journal" not in record:
        return record
    for attempt in (0, 1):
        try:
            return _with_journal(path, record)
        except JournalError:
            # A run that started afresh replaces its journal before its record: read both again.
            again = _read_record_text(path)
            if attempt or again == text:
                raise
            text, record = again, _parse_record(path, again)
            if "journal" not in record:
                return record


def _with_journal(path: Path, record: dict) -> dict:
    name, lines, nbytes = _check_pointer(path, record["journal"])
    snapshot = read_journal(path.with_name(name), lines, nbytes)
    epochs = snapshot.get("epochs", []) if isinstance(snapshot, dict) else None
    if not isinstance(epochs, list) or len(epochs) != len(record.get("epochs") or []):
        raise JournalError(path.with_name(name), f"its first {lines} line(s) hold "
                           f"{len(epochs) if isinstance(epochs, list) else 'no'} epoch(s), the record {path.name} "
                           f"{len(record.get('epochs') or [])}")
    record = dict(record)
    record["traces"] = _sanitize(snapshot.get("traces", {}))
    del record["journal"]
    return record


def _read_record_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise RecordError(path, f"not a text file ({exc})") from exc


def _parse_record(path: Path, text: str) -> dict:
    if not text.strip():
        raise RecordError(path, "empty file (a run killed while writing it, or a disk that filled up)")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}; "
                                f"{len(text)} characters): truncated or edited by hand") from exc
    if not isinstance(record, dict):
        raise RecordError(path, f"holds a JSON {type(record).__name__}, not a run record object")
    if record.get("schema") != SCHEMA:
        raise RecordError(path, f"not an adapt run record (schema {record.get('schema')!r}, expected {SCHEMA!r})")
    return record


def set_aside(path, suffix: str = ".corrupt") -> Path:
    """Rename a bad file to ``<name><suffix>`` (``<name><suffix>-1``, ... if taken) and return the new path.

    Nothing is deleted: the file stays beside the run for inspection.  The record of a running
    run (which refers to its journal for its traces) is kept whole: ``<name><suffix>`` gets the
    record with its traces and no longer depends on a journal that the next run replaces.
    """
    path = Path(path)
    target = path.with_name(path.name + suffix)
    k = 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}{suffix}-{k}")
    whole = None
    if path.suffix == ".json":
        try:
            if "journal" in load_record(path, traces=False):
                whole = load_record(path)
        except (RecordError, OSError):
            pass  # not a usable record: the file is kept as it is
    if whole is not None:
        atomic_write_json(target, whole)
        os.unlink(path)
    else:
        os.replace(path, target)
    return target


def read_record(path) -> Optional[dict]:
    """The record at ``path``; ``None`` when there is none or it was bad.

    A bad record (see :class:`RecordError`) is renamed ``record.json.corrupt`` (kept,
    never deleted) with a ``RuntimeWarning`` saying so, so that the run that follows
    recomputes it instead of failing on it again.
    """
    import warnings

    path = Path(path)
    if not path.exists():
        return None
    try:
        return load_record(path)
    except RecordError as exc:
        kept = set_aside(path)
        also = ""
        if isinstance(exc, JournalError) and exc.path.exists():
            also = f" and its journal as {set_aside(exc.path).name}"
        warnings.warn(f"{exc}; set aside as {kept.name}{also}; {leftovers(path.parent)}", RuntimeWarning,
                      stacklevel=2)
        return None


def leftovers(out_dir) -> str:
    """What a run folder without a usable ``record.json`` still holds, and what the next run does with it.

    Read only (:func:`run_state`); one of: the finished run's journal (the record is rebuilt from
    it), a checkpoint (the run resumes from it if it loads), or nothing (retrained from scratch).
    """
    out_dir = Path(out_dir)
    kind = run_state(out_dir).kind
    if kind == "rebuildable":
        return f"{JOURNAL} holds the whole finished run, from which the record is written back (nothing is retrained)"
    if kind == "resumable" and not (out_dir / JOURNAL).exists():
        return (f"{CHECKPOINT} is left without the {JOURNAL} that holds its epochs: the next run keeps it as "
                f"{CHECKPOINT}.previous and says so, and the run after it retrains the point from scratch")
    if kind == "resumable":
        return f"{CHECKPOINT} and {JOURNAL} are left, from which the run resumes if they load"
    return f"no {CHECKPOINT} and no {JOURNAL} of a finished run are left: the run is retrained from scratch"


def load_records(root, pattern: str = "**/record.json", on_error: str = "warn") -> list:
    """Every record under ``root`` (sorted by path).

    ``on_error="warn"`` (the default, what the analysis notebooks and ``make figures``
    use) skips a file that is not a valid record with a ``RuntimeWarning`` naming it;
    ``"raise"`` raises its :class:`RecordError`.  A missing ``root`` gives an empty list.
    """
    import warnings

    if on_error not in ("warn", "raise"):
        raise ValueError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
    records = []
    for p in sorted(Path(root).glob(pattern)):
        try:
            records.append(load_record(p))
        except (RecordError, OSError) as exc:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping {exc} (rerun its grid point to recompute it)", RuntimeWarning, stacklevel=2)
    return records


# ----------------------------------------------------------------------------- the state of a run folder
@dataclass(frozen=True)
class RunState:
    """What a run folder holds for one config, and so what the next call does with it.

    ``kind``:

    * ``"new"`` -- no record and no checkpoint: the run starts from scratch;
    * ``"finished"`` -- a record of this config whose status is in :data:`FINISHED`: returned as it
      is, retrained only with ``force``;
    * ``"resumable"`` -- an unfinished run (``running`` after a kill, ``interrupted``, ``failed``)
      with a ``checkpoint.pt``: it continues from there (or a checkpoint without a record);
    * ``"restart"`` -- an unfinished record without a checkpoint (a failure record, a run killed
      before its first epoch ended, a checkpoint set aside): it starts from scratch, its old
      record kept as ``record.json.previous`` when it holds epochs;
    * ``"stale"`` -- a record of another config: left alone unless ``force``;
    * ``"corrupt"`` -- a record that cannot be read (``message`` says why): set aside when the
      run starts, which then rebuilds it from the journal of a finished run, or resumes from its
      checkpoint if there is one;
    * ``"rebuildable"`` -- no ``record.json``, but the journal of a finished run of this config
      (:func:`finished_record`): the record is written back from it, nothing is trained.

    ``record`` is the record as read or rebuilt (``None`` for ``new`` and ``corrupt``).
    """

    kind: str
    record: Optional[dict] = None
    message: str = ""

    @property
    def status(self) -> Optional[str]:
        """The record's status word, if there is a readable record."""
        return None if self.record is None else self.record.get("status")


def run_state(out_dir, config: Optional[dict] = None) -> RunState:
    """The :class:`RunState` of ``out_dir`` for a run of ``config`` (a config dict; ``None``: any config).

    Read only (nothing is renamed or written), so it may be asked while another process trains.
    The one place that decides whether a run is finished, resumable, stale or new: the training
    loop, the grid runner, ``--status`` and the cluster submission all ask it.
    """
    out_dir = Path(out_dir)
    has_checkpoint = (out_dir / CHECKPOINT).exists()
    path = out_dir / RECORD
    if not path.exists():
        rebuilt = finished_record(out_dir / JOURNAL) if (out_dir / JOURNAL).exists() else None
        if rebuilt is not None:
            if config is not None and jsonable(rebuilt.get("config")) != jsonable(config):
                return RunState("stale", rebuilt, f"{out_dir / JOURNAL} holds a finished run of another config")
            return RunState("rebuildable", rebuilt, f"no {RECORD}; {JOURNAL} holds the finished run whole")
        return RunState("resumable" if has_checkpoint else "new")
    try:
        record = load_record(path)
    except RecordError as exc:
        return RunState("corrupt", None, exc.problem)
    if config is not None and jsonable(record.get("config")) != jsonable(config):
        return RunState("stale", record, f"{path} holds a run of another config")
    if record.get("status") in FINISHED:
        return RunState("finished", record)
    return RunState("resumable" if has_checkpoint else "restart", record)
