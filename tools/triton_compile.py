"""Compile adapt's Triton kernels for an NVIDIA architecture without a GPU, and report their memory accesses.

Triton compiles on any machine that has it (it ships ``ptxas``); only running a kernel needs a GPU.
For every specialisation the training loop launches (float32, nearest and stochastic, fixed point
and MuPPET's scales, the extremes and the division), this prints the PTX global loads and stores:
``ld.global.v4.b32`` is a 16-byte vector access, ``ld.global.b32`` a scalar one.  The tables'
kernels read a few scalars (table rows, block pairs, the seed) and should move the tensors' data in
16-byte vectors when the addresses are aligned (``ALIGNED``); ``tests/test_triton_kernels.py``
checks that with the installed Triton.

    python tools/triton_compile.py [--arch 90] [--all-dtypes]   # the installed Triton
    PYTHONPATH=/tmp/triton30 python tools/triton_compile.py   # another Triton, e.g. torch 2.4's 3.0

Handles Triton 3.0 (``ASTSource(fn, signature by index, constants, AttrsDescriptor)``) and the
current API (``ASTSource(fn, signature by name, constexprs, attrs)``); exits 1 if a kernel fails.
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402

from adapt import _triton_kernels as K  # noqa: E402

P16 = "p16"  # a pointer argument whose address is a multiple of 16 (what Triton specialises on)


def specs(dtypes=("fp32",)) -> dict:
    """``{name: (kernel, [(argument, type or P16 or constexpr value)])}``: what the training loop launches (float32),
    and with other ``dtypes`` ("fp16", "bf16", "fp64") the rounding kernels in those too."""
    seg = lambda **c: [("table_ptr", P16 + "*i64"), ("blocks_ptr", P16 + "*i32"), ("like_ptr", P16 + "*fp32"),  # noqa: E731
                       *c.items()]
    out = {}
    for dt in dtypes:
        if dt == "fp32":
            continue
        for stochastic in (False, True):
            r = "stochastic" if stochastic else "nearest"
            out[f"fixed_point {r} {dt}"] = (K._round_kernel, [
                ("x_ptr", P16 + "*" + dt), ("y_ptr", P16 + "*" + dt), ("n", "i32"), ("scale", "fp32"),
                ("inv_scale", "fp32"), ("low", "i32"), ("high", "i32"), ("scale_ptr", P16 + "*" + dt),
                ("row_len", "i32"), ("seed_ptr", P16 + "*i64"), ("stream", "i32"), ("STOCHASTIC", stochastic),
                ("DYNAMIC", False), ("PER_ROW", False), ("CLAMP", True), ("F64", dt == "fp64"), ("I64", False),
                ("BLOCK", K.BLOCK)])
            out[f"fixed_point_segments {r} {dt}"] = (K._segments_kernel, [
                ("table_ptr", P16 + "*i64"), ("blocks_ptr", P16 + "*i32"), ("like_ptr", P16 + "*" + dt),
                ("seed_ptr", P16 + "*i64"), ("scale_ptr", P16 + "*fp32"), ("low", "i32"), ("high", "i32"),
                ("STOCHASTIC", stochastic), ("DYNAMIC", False), ("CLAMP", True), ("F64", dt == "fp64"),
                ("ALIGNED", True), ("BLOCK", K.BLOCK)])
    for stochastic in (False, True):
        r = "stochastic" if stochastic else "nearest"
        out[f"fixed_point {r}"] = (K._round_kernel, [
            ("x_ptr", P16 + "*fp32"), ("y_ptr", P16 + "*fp32"), ("n", "i32"), ("scale", "fp32"), ("inv_scale", "fp32"),
            ("low", "i32"), ("high", "i32"), ("scale_ptr", P16 + "*fp32"), ("row_len", "i32"),
            ("seed_ptr", P16 + "*i64"), ("stream", "i32"), ("STOCHASTIC", stochastic), ("DYNAMIC", False),
            ("PER_ROW", False), ("CLAMP", True), ("F64", False), ("I64", False), ("BLOCK", K.BLOCK)])
        for dynamic in (False, True):
            name = f"{'round_scaled' if dynamic else 'fixed_point'}_segments {r}"
            out[name] = (K._segments_kernel, seg(
                seed_ptr=P16 + "*i64", scale_ptr=P16 + "*fp32", low="i32", high="i32", STOCHASTIC=stochastic,
                DYNAMIC=dynamic, CLAMP=not dynamic, F64=False, ALIGNED=True, BLOCK=K.BLOCK))
    out["segment_extremes"] = (K._segments_extremes_kernel, seg(
        hi_ptr=P16 + "*fp32", lo_ptr=P16 + "*fp32", nan_ptr=P16 + "*i32", ALIGNED=True, BLOCK=K.BLOCK))
    out["divide_segments"] = (K._segments_divide_kernel, seg(div_ptr=P16 + "*fp32", ALIGNED=True, BLOCK=K.BLOCK))
    return out


def _source(kernel, args):
    from triton.compiler import ASTSource

    typed = [(i, name, v) for i, (name, v) in enumerate(args)]
    params = inspect.signature(ASTSource.__init__).parameters
    if "constexprs" in params:  # current API: names, "constexpr" in the signature, hints as attributes
        signature = {name: ("constexpr" if not isinstance(v, str) else v.removeprefix(P16)) for _, name, v in typed}
        constexprs = {name: v for _, name, v in typed if not isinstance(v, str)}
        attrs = {(i,): [["tt.divisibility", 16]] for i, _, v in typed if isinstance(v, str) and v.startswith(P16)}
        return ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    from triton.compiler.compiler import AttrsDescriptor  # Triton 3.0

    signature = {i: v.removeprefix(P16) for i, _, v in typed if isinstance(v, str)}
    constants = {i: v for i, _, v in typed if not isinstance(v, str)}
    attrs = AttrsDescriptor(divisible_by_16={i for i, _, v in typed if isinstance(v, str) and v.startswith(P16)})
    return ASTSource(kernel, signature, constants=constants, attrs=attrs)


def compile_ptx(kernel, args, arch: int = 90) -> str:
    """The PTX of ``kernel`` specialised to ``args`` for ``sm_<arch>``."""
    from triton.backends.compiler import GPUTarget

    compiled = triton.compile(_source(kernel, args), target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": K._NUM_WARPS})
    return compiled.asm["ptx"]


def accesses(ptx: str) -> tuple:
    """``(loads, stores)``: the distinct PTX global load and store forms, e.g. ``ld.global.v4.b32``."""
    forms = lambda op: sorted(set(re.findall(rf"{op}\.global(?:\.[a-z0-9]+)*", ptx)))  # noqa: E731
    return forms("ld"), forms("st")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability without the dot (default 90: H100)")
    ap.add_argument("--all-dtypes", action="store_true", help="also the rounding kernels in float16, bfloat16, float64")
    args = ap.parse_args(argv)
    print(f"Triton {triton.__version__}, sm_{args.arch}")
    failed = 0
    for name, (kernel, kargs) in specs(("fp32", "fp16", "bf16", "fp64") if args.all_dtypes else ("fp32",)).items():
        t0 = time.perf_counter()
        try:
            loads, stores = accesses(compile_ptx(kernel, kargs, args.arch))
        except Exception as exc:  # noqa: BLE001 - report every kernel
            failed += 1
            print(f"  {name}: FAILED {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc) else ''}")
            continue
        print(f"  {name} ({time.perf_counter() - t0:.1f} s): loads {' '.join(loads)}; stores {' '.join(stores)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
