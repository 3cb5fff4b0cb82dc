"""adapt/_triton_kernels.py loaded as a separate module whose kernels run in Triton's interpreter (CPU tensors).

Shared by tests/test_triton_kernels.py and tests/test_cuda.py (which compares the compiled kernels with
this copy); imports nothing beyond torch and Triton, so the GPU tests run where only pytest is added.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_interpreted(name: str = "adapt._triton_kernels_interpreted"):
    """A fresh copy of the kernel module, loaded with ``TRITON_INTERPRET=1`` set while its kernels are decorated.

    Triton itself is imported first, without the variable: imported under it, Triton's own standard library
    would be built as interpreted functions, which its compiled launches (and a later interpreted one) reject.
    """
    import triton  # noqa: F401
    import triton.language  # noqa: F401

    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "adapt" / "_triton_kernels.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old
    assert type(module._round_kernel).__name__ == "InterpretedFunction"
    return module
