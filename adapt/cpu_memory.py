"""Keep freed memory inside the process while training on CPU (glibc's ``malloc``, Linux).

Why: PyTorch's CPU tensors come from the C library's ``malloc``, which hands a large block
(above 32 MB at most, for example one ResNet-20 stage-1 activation at batch 512) back to the
operating system when it is freed and maps fresh pages for the next one; smaller blocks are
returned when the top of the heap is free.  Every fresh page costs a page fault the first time
it is written.  A training step allocates and frees the same sizes over and over, so on CPU a
large share of a step can be spent in the kernel: measured on a 2-core EPYC VM (2026-12-02,
``python benchmarks/train_step.py --device cpu --system-malloc`` against the default, which
print page faults and system time per step), a ResNet-20 step at 512 x 4 images took 1.1-2.0 M
page faults and 2.6-6.7 s of system time in 6.8-11.6 s.  The quantized steps are hit harder
than float32 (they allocate a new tensor for every quantized layer input): AdaPT measured 1.27x
float32 with the defaults and 1.11-1.14x with the memory kept.

What :func:`keep_freed_memory` does: ``mallopt(M_MMAP_MAX, 0)`` (no block gets its own
mapping; all come from the heap) and ``mallopt(M_TRIM_THRESHOLD, INT_MAX)`` (the heap is not
shrunk until 2 GiB at its top are free).  Within a few steps the freed blocks coalesce into
holes that fit every request, and from then on a step reuses the pages the process already
has (the benchmark's ``faults/step`` column, after its warm-up step: 0 to 43,000 per ResNet-20
step against 1.1-2.0 million with the defaults).  The cost: the process keeps its peak memory
until it exits (the next step needs it again anyway).  Results do not change: only where the
bytes live changes.

:func:`adapt.train.run` calls it when it trains on CPU; ``ADAPT_KEEP_CPU_MEMORY=0`` in the
environment turns it off.  On other C libraries (macOS, musl) and other systems it does
nothing and says why.  It changes the whole process, once; it cannot be undone except by
starting a new one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory", "ENV"]

#: Environment variable: ``0`` turns :func:`keep_freed_memory` off.
ENV = "ADAPT_KEEP_CPU_MEMORY"

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

_state: str | None = None  # what the first call did, for every later call


def _glibc() -> str | None:
    """``"glibc 2.x"`` when this process runs on glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return None
    return version if version and version.startswith("glibc") else None


def keep_freed_memory() -> str:
    """Tune glibc's ``malloc`` to keep freed memory (see the module docstring); returns what happened.

    Idempotent: the first call decides, later calls return the same sentence.  Never raises:
    on a system where it cannot apply, the sentence says why and nothing changes.
    """
    global _state
    if _state is not None:
        return _state
    if os.environ.get(ENV, "1").strip() == "0":
        _state = f"not applied: {ENV}=0"
        return _state
    libc_version = _glibc()
    if libc_version is None:
        _state = f"not applied: needs Linux with glibc (this is {sys.platform})"
        return _state
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:
        _state = f"not applied: {libc_version} without a usable mallopt ({exc})"
        return _state
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    _state = (f"applied ({libc_version}): freed CPU memory stays in the process" if ok
              else f"not applied: {libc_version} refused mallopt")
    return _state
