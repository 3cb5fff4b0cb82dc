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

__all__ = [
    "SCHEMA", "atomic_write_json", "atomic_save", "environment_info", "load_record", "load_records",
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
    import numpy
    import torch

    from . import __version__

    info = {
        "adapt": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device) if device is not None else None,
        "threads": torch.get_num_threads(),
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def load_record(path) -> dict:
    with open(path) as fh:
        record = json.load(fh)
    if record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an adapt run record (schema {record.get('schema')!r}, expected {SCHEMA!r})")
    return record


def load_records(root, pattern: str = "**/record.json") -> list:
    """Every record under ``root`` (sorted by path)."""
    return [load_record(p) for p in sorted(Path(root).glob(pattern))]
