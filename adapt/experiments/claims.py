"""Claims: a point being trained is held by one process, so no two processes train it twice.

A claim has two parts, both in the run folder:

* an exclusive, non-blocking ``flock`` on ``.claim.lock`` (through the ``filelock``
  package).  The operating system drops it when its process ends, ``SIGKILL``
  included, so on one machine a dead process never holds a claim;
* ``claim.json``: who holds it (host, pid, since) and a **heartbeat**, the time of
  the holder's last sign of life, rewritten every :data:`HEARTBEAT_S` seconds by a
  background thread while the claim is held.

A process that gets the lock still treats the point as claimed when ``claim.json``
names *another host* whose heartbeat is younger than the claim timeout
(``$ADAPT_CLAIM_TIMEOUT_S``, default :data:`DEFAULT_TIMEOUT_S` = 10 minutes).  That
covers results folders on network file systems whose locks are not shared between
hosts.  A holder on another host that died is taken over once its heartbeat is older
than the timeout; one on the same host as soon as it is dead (its lock is free).

What this assumes of a network file system (NFS, Lustre, GPFS, CephFS):
``flock`` works on each host (Linux maps it onto the server's byte-range locks on
NFSv4, which the server drops when a client's lease expires); where locks are not
shared between hosts (NFS mounted ``nolock`` or ``local_lock=all``), the heartbeat
alone decides, and two hosts that look at an unclaimed point within the same
fraction of a second can both take it (``claim.json`` is replaced atomically, but
reading and replacing it is not one step).  Clocks of the hosts must agree to well
within the timeout.

The training notebook runs in a Jupyter kernel, a child of the grid process that
claimed the point: the grid tells it through ``$ADAPT_CLAIM_HELD`` (the run folder),
and :func:`claim` does not try to take the claim a second time.  Within one process
a claim is re-entrant.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from adapt.records import atomic_write_json

__all__ = ["HELD_ENV", "TIMEOUT_ENV", "LOCK_NAME", "INFO_NAME", "HEARTBEAT_S", "DEFAULT_TIMEOUT_S", "PointClaimed",
           "claim", "holder", "held_by_caller", "describe", "claim_timeout"]

HELD_ENV = "ADAPT_CLAIM_HELD"
TIMEOUT_ENV = "ADAPT_CLAIM_TIMEOUT_S"
LOCK_NAME = ".claim.lock"
INFO_NAME = "claim.json"
#: Seconds between two heartbeats of a held claim.
HEARTBEAT_S = 60.0
#: A claim of another host whose heartbeat is older than this is taken over (seconds).
DEFAULT_TIMEOUT_S = 600.0

#: Run folders whose claim this process holds.
_HELD = set()


class PointClaimed(RuntimeError):
    """Another live process holds the claim on this run folder."""

    def __init__(self, out_dir: Path, info: Optional[dict]):
        self.out_dir, self.info = Path(out_dir), info or {}
        super().__init__(f"{self.out_dir} is being trained by {describe(self.info)}; it is skipped here "
                         f"(the claim ends when that process ends)")


def describe(info: Optional[dict]) -> str:
    """``pid 123 on host since 2026-...`` (plus the heartbeat's age when known)."""
    if not info:
        return "another process"
    text = f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
    age = _age(info)
    return text if age is None else f"{text}, heartbeat {age:.0f}s ago"


def claim_timeout() -> float:
    """``$ADAPT_CLAIM_TIMEOUT_S`` or :data:`DEFAULT_TIMEOUT_S`."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        timeout = float(value)
    except ValueError:
        raise ValueError(f"${TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if not timeout > 0:
        raise ValueError(f"${TIMEOUT_ENV}={value!r} must be > 0 seconds")
    return timeout


def held_by_caller(out_dir) -> bool:
    """True when this process, or the process that started it, holds the claim on ``out_dir``."""
    key = Path(out_dir).resolve()
    if key in _HELD:
        return True
    held = os.environ.get(HELD_ENV, "")
    return bool(held) and Path(held).resolve() == key


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _age(info: dict) -> Optional[float]:
    try:
        return (_now() - datetime.fromisoformat(info["heartbeat"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _read_info(out_dir: Path) -> Optional[dict]:
    try:
        info = json.loads((out_dir / INFO_NAME).read_text())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def _write_info(out_dir: Path, info: dict) -> None:
    atomic_write_json(out_dir / INFO_NAME, dict(info, heartbeat=_now().isoformat(timespec="seconds")))


def _alive_elsewhere(info: Optional[dict], timeout: float) -> bool:
    """A claim of another host whose heartbeat is fresh (on this host the lock decides)."""
    if not info or info.get("host") == socket.gethostname():
        return False
    age = _age(info)
    return age is not None and age < timeout


class _Heartbeat(threading.Thread):
    def __init__(self, out_dir: Path, info: dict, every: float):
        super().__init__(daemon=True, name=f"adapt-claim-heartbeat {out_dir.name}")
        self.out_dir, self.info, self.every = out_dir, info, every
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            with contextlib.suppress(OSError):
                _write_info(self.out_dir, self.info)


@contextlib.contextmanager
def claim(out_dir, heartbeat_s: Optional[float] = None) -> Iterator[None]:
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
    key = out_dir.resolve()
    beat = None
    try:
        previous = _read_info(out_dir)
        if _alive_elsewhere(previous, claim_timeout()):
            raise PointClaimed(out_dir, previous)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now().isoformat(timespec="seconds")}
        _write_info(out_dir, info)
        _HELD.add(key)
        beat = _Heartbeat(out_dir, info, HEARTBEAT_S if heartbeat_s is None else heartbeat_s)
        beat.start()
        try:
            yield
        finally:
            beat.stop.set()
            beat.join()
            _HELD.discard(key)
            with contextlib.suppress(OSError):
                (out_dir / INFO_NAME).unlink()
    finally:
        lock.release()


def holder(out_dir) -> Optional[dict]:
    """Who holds the claim on ``out_dir`` now (``claim.json``'s content), or ``None`` if nobody does."""
    from filelock import FileLock, Timeout

    out_dir = Path(out_dir)
    if not (out_dir / LOCK_NAME).exists() and not (out_dir / INFO_NAME).exists():
        return None
    info = _read_info(out_dir)
    lock = FileLock(str(out_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return info or {}
    except OSError:  # a read-only folder (someone else's results): the lock cannot be tried, claim.json can
        return info if _alive_elsewhere(info, claim_timeout()) else None
    lock.release()
    return info if _alive_elsewhere(info, claim_timeout()) else None
