"""Run records: versioned JSON written atomically and loaded back (tables: :mod:`adapt.tables`).

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
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Optional

__all__ = [
    "SCHEMA", "RecordError", "atomic_write_json", "atomic_save", "environment_info", "load_record", "load_records",
    "set_aside", "read_record",
]

SCHEMA = "adapt.run/1"


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


def atomic_write_json(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (the old file or the new one, never a partial one)."""
    data = json.dumps(_sanitize(obj), indent=1, default=_json_default, allow_nan=False).encode()
    _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_save(obj, path) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def environment_info(device=None) -> dict:
    """What decides a run's numbers beyond its config: versions, CPU, kernels, threads, device.

    Stored as every record's ``environment``.  Same values (and the same config) give
    bit-identical CPU records; a different CPU capability, BLAS/oneDNN build or thread
    count can change the float32 rounding of convolutions and matrix products, and
    ``python -m adapt.compare`` lists the entries that differ between two records.

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
        from . import __version__

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


def load_record(path) -> dict:
    """The run record at ``path``; :class:`RecordError` (naming the file) when it is not one."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise RecordError(path, f"not a text file ({exc})") from exc
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

    Nothing is deleted: the file stays beside the run for inspection.
    """
    path = Path(path)
    target = path.with_name(path.name + suffix)
    k = 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}{suffix}-{k}")
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
        warnings.warn(f"{exc}; set aside as {kept.name}, the run will be recomputed "
                      f"(from its checkpoint if it has a valid one)", RuntimeWarning, stacklevel=2)
        return None


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
