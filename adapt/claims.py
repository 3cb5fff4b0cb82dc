"""Claims: a point being trained is held by one process, so two grid processes never train it twice.

A claim is an exclusive, non-blocking ``flock`` (through the ``filelock`` package) on
``<run folder>/.claim.lock``, plus ``claim.json`` beside it saying who holds it (host,
pid, since when).  The operating system drops a ``flock`` when its process ends, by
``SIGKILL`` too, so a dead process never holds a claim: the next process that tries
gets it.  ``claim.json`` is only information; it may outlive its holder and is
overwritten by the next one.

Where this holds: one machine (any file system), and NFSv4 or other network file
systems whose client maps ``flock`` onto the server's byte-range locks (Linux does
since 2.6.12).  It does not hold on file systems that accept ``flock`` without
sharing it between hosts (some FUSE mounts, NFS mounted with ``nolock`` or
``local_lock=all``): there two hosts can claim the same point.

The training notebook runs in a Jupyter kernel, another process than the grid that
claimed the point: the grid tells it through ``$ADAPT_CLAIM_HELD`` (the run folder),
and :func:`claim` then does not try to take the claim a second time.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["HELD_ENV", "LOCK_NAME", "INFO_NAME", "PointClaimed", "claim", "holder", "held_by_caller"]

HELD_ENV = "ADAPT_CLAIM_HELD"
LOCK_NAME = ".claim.lock"
INFO_NAME = "claim.json"


class PointClaimed(RuntimeError):
    """Another live process holds the claim on this run folder."""

    def __init__(self, out_dir: Path, info: Optional[dict]):
        self.out_dir, self.info = Path(out_dir), info or {}
        who = describe(self.info)
        super().__init__(f"{self.out_dir} is being trained by {who}; it is skipped here "
                         f"(the claim ends when that process ends)")


def describe(info: Optional[dict]) -> str:
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


#: Run folders whose claim this process holds (a claim is re-entrant within its process).
_HELD = set()


def held_by_caller(out_dir) -> bool:
    """True when this process, or the process that started it, holds the claim on ``out_dir``."""
    key = Path(out_dir).resolve()
    if key in _HELD:
        return True
    held = os.environ.get(HELD_ENV, "")
    return bool(held) and Path(held).resolve() == key


def _info() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _read_info(out_dir: Path) -> Optional[dict]:
    try:
        info = json.loads((out_dir / INFO_NAME).read_text())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def claim(out_dir) -> Iterator[None]:
    """Hold the claim on ``out_dir`` for the ``with`` block; :class:`PointClaimed` if another process has it."""
    from filelock import FileLock, Timeout

    out_dir = Path(out_dir)
    if held_by_caller(out_dir):
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise PointClaimed(out_dir, _read_info(out_dir)) from None
    info_path = out_dir / INFO_NAME
    key = out_dir.resolve()
    _HELD.add(key)
    try:
        info_path.write_text(json.dumps(_info()) + "\n")
        yield
    finally:
        _HELD.discard(key)
        with contextlib.suppress(OSError):
            info_path.unlink()
        lock.release()


def holder(out_dir) -> Optional[dict]:
    """Who holds the claim on ``out_dir`` now (``claim.json``'s content), or ``None`` if nobody does."""
    from filelock import FileLock, Timeout

    out_dir = Path(out_dir)
    if not (out_dir / LOCK_NAME).exists():
        return None
    lock = FileLock(str(out_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return _read_info(out_dir) or {}
    lock.release()
    return None
