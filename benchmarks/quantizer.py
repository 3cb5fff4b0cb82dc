"""Speed of adapt.quant's quantizers against the memory-copy and RNG floors and against QPyTorch.

Prints one table, measured in one run, for a float32 tensor on CPU (and on CUDA when available):
median wall time of ``x.clone()`` (the memory-copy floor), ``torch.rand_like(x)`` (the RNG floor),
``fixed_point`` nearest and stochastic (on CPU also through the whole-tensor ops that other devices
use, ``CPU_KERNEL = False``; and stochastic in place, ``out=x``, which saves the new tensor's
allocation: on CPU its fresh pages cost more than the rounding), ``dynamic_fixed_point`` (stochastic) and qtorch's
``fixed_point_quantize`` (both roundings), with the ratios the issue sets targets for:

* nearest <= 2x clone (CPU and CUDA);
* stochastic <= 1.3x (clone + rand_like);
* at least 5x faster than qtorch on CPU (both roundings).

On CPU each call is timed alone (``perf_counter``).  On CUDA every time in both tables is the median
of ``--repeats`` CUDA-event timings of ``--inner`` back-to-back calls, divided by ``--inner``: the host
enqueues the next call while the GPU runs the last one, as in training, so a 4M-float call measures
the kernel rather than one launch and one synchronisation.  On CUDA a second table compares the fused Triton kernels (``adapt._triton_kernels``, the default
CUDA path) with the whole-tensor ops (``GPU_KERNEL = False``) on each of ``--sizes`` (default 4M and
64M floats): ``fixed_point`` nearest and stochastic as a multiple of ``x.clone()`` (target for the
kernels: <= 1.3x).  These are timed with CUDA events around ``--inner`` back-to-back calls, so the
host's launch overhead overlaps the GPU work as in training.  ``--triton-interpret`` runs that table
on CPU tensors in Triton's interpreter (tiny ``--sizes``; a dry run that the GPU branch works, its
times mean nothing).

Usage::

    python benchmarks/quantizer.py [--numel 4000000] [--repeats 20] [--warmup 3] [--threads N] [--json PATH]
    python benchmarks/quantizer.py --device cuda --sizes 4000000 64000000   # the GPU kernels' table
    python benchmarks/quantizer.py --triton-interpret --sizes 4096 --repeats 1   # dry run on CPU

Needs torch only (and Triton for the CUDA kernels); numba, for the CPU kernels, is needed when CPU is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

if "--triton-interpret" in sys.argv:  # read when the kernels are decorated, i.e. before adapt imports them
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapt import quant  # noqa: E402
from adapt.quant import dynamic_fixed_point, fixed_point  # noqa: E402

WL, FL, BITS = 8, 4, 8  # AdaPT's initial format; MuPPET's first precision


def load_qtorch(want_cuda: bool):
    """Import qtorch's ``fixed_point_quantize``: (function or None, reason its CPU path is missing, reason CUDA is).

    qtorch builds its C++ extension at first import and, when CUDA is visible, also its CUDA one
    (nvcc; minutes).  If that fails, or ``want_cuda`` is false, retry with CUDA hidden so the CPU
    kernel is still measured.
    """
    cuda_reason = None
    if want_cuda and torch.cuda.is_available():
        try:
            from qtorch.quant import fixed_point_quantize

            return fixed_point_quantize, None, None
        except Exception as exc:  # noqa: BLE001 - any build failure means "n/a"
            cuda_reason = f"qtorch CUDA build failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
            for name in [m for m in sys.modules if m.startswith("qtorch")]:
                del sys.modules[name]
    elif torch.cuda.is_available():
        cuda_reason = "skipped (--skip-qtorch-cuda)"
    try:
        with mock.patch.object(torch.cuda, "is_available", return_value=False):
            from qtorch.quant import fixed_point_quantize
        return fixed_point_quantize, None, cuda_reason or "no CUDA"
    except Exception as exc:  # noqa: BLE001
        reason = f"qtorch unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        return None, reason, cuda_reason or reason


def median_ms(fn, device: torch.device, repeats: int, warmup: int) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_device(device: torch.device, numel: int, repeats: int, warmup: int, qtorch_fn, qtorch_reason, inner: int = 10):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(numel, generator=g, device=device) * 3
    gen = torch.Generator(device=device).manual_seed(1)
    if device.type == "cuda":  # back-to-back calls between CUDA events: the kernels, not a launch and a sync each
        timed = lambda fn, reps=repeats, warm=warmup: event_ms(fn, device, reps, warm, inner)  # noqa: E731
    else:
        timed = lambda fn, reps=repeats, warm=warmup: median_ms(fn, device, reps, warm)  # noqa: E731
    t = {}
    t["clone"] = timed(lambda: x.clone())
    t["rand_like"] = timed(lambda: torch.rand_like(x))
    t["nearest"] = timed(lambda: fixed_point(x, WL, FL, "nearest"))
    t["stochastic"] = timed(lambda: fixed_point(x, WL, FL, "stochastic", gen))
    buf = x.clone()  # rounded over and over in place: the values change, the work does not
    t["stochastic_in_place"] = timed(lambda: fixed_point(buf, WL, FL, "stochastic", gen, out=buf))
    t["dynamic"] = timed(lambda: dynamic_fixed_point(x, BITS, "stochastic", generator=gen))
    if device.type == "cpu":  # the whole-tensor ops that other devices use, for the kernel's speed-up
        with mock.patch.object(quant, "CPU_KERNEL", False):
            t["stochastic_ops"] = timed(lambda: fixed_point(x, WL, FL, "stochastic", gen))
    qt = {}
    for rounding in ("nearest", "stochastic"):
        if qtorch_fn is None:
            qt[rounding] = (None, qtorch_reason)
            continue
        try:
            f = lambda r=rounding: qtorch_fn(x, WL, FL, clamp=True, symmetric=False, rounding=r)  # noqa: E731
            qt[rounding] = (timed(f, max(3, repeats // 2), 1), None)
        except Exception as exc:  # noqa: BLE001
            qt[rounding] = (None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}")
    return t, qt


def event_ms(fn, device: torch.device, repeats: int, warmup: int, inner: int) -> float:
    """Median milliseconds per call of ``fn``: CUDA events around ``inner`` back-to-back calls (perf_counter off CUDA)."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        return median_ms(lambda: [fn() for _ in range(inner)], device, repeats, 0) / inner
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def gpu_kernel_rows(device: torch.device, sizes, repeats: int, warmup: int, inner: int, interpret: bool) -> list[dict]:
    """Triton kernels vs the whole-tensor ops, each as a multiple of ``x.clone()``, for every size."""
    if interpret:  # route CPU tensors through the (interpreted) kernels, as quant routes CUDA tensors
        from adapt import _triton_kernels

        kernel_path = dict(_on_gpu_kernel=lambda x: True, _GPU_KERNELS=_triton_kernels)
        ops_path = dict(CPU_KERNEL=False)
    else:
        if quant._gpu_kernels() is None:
            return [dict(device=device.type, measurement="Triton kernels", ms=None, note="n/a: Triton does not import")]
        kernel_path, ops_path = dict(GPU_KERNEL=True), dict(GPU_KERNEL=False)
    dev = device.type + (" (interpreted)" if interpret else "")
    rows = []
    for numel in sizes:
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(numel, generator=g, device=device) * 3
        gen = torch.Generator(device=device).manual_seed(1)
        clone = event_ms(lambda: x.clone(), device, repeats, warmup, inner)
        rows.append(dict(device=dev, measurement=f"x.clone() ({numel:,} floats)", ms=clone))
        for name, patches in (("Triton", kernel_path), ("whole-tensor", ops_path)):
            with mock.patch.multiple(quant, **patches):
                for rounding in ("nearest", "stochastic"):
                    ms = event_ms(lambda r=rounding: fixed_point(x, WL, FL, r, gen), device, repeats, warmup, inner)
                    row = dict(device=dev, measurement=f"{name} fixed_point({WL},{FL}) {rounding} ({numel:,})", ms=ms,
                               ratio=ms / clone, ratio_of="x clone")
                    if name == "Triton":
                        row.update(target="<= 1.3", ok=None if interpret else ms / clone <= 1.3)
                    rows.append(row)
    return rows


def cpu_threading() -> str:
    """numba's threading layer for the CPU kernels, or why there is none (a GPU machine without numba)."""
    try:
        return quant.cpu_kernel_threading()
    except ImportError as exc:
        return f"n/a ({exc})"


def _triton_version():
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def rows_for(dev: str, t: dict, qt: dict) -> list[dict]:
    floor_sr = t["clone"] + t["rand_like"]
    rows = [
        dict(device=dev, measurement="x.clone()", ms=t["clone"]),
        dict(device=dev, measurement="torch.rand_like(x)", ms=t["rand_like"]),
        dict(device=dev, measurement=f"fixed_point({WL},{FL}) nearest", ms=t["nearest"],
             ratio=t["nearest"] / t["clone"], ratio_of="x clone", target="<= 2", ok=t["nearest"] / t["clone"] <= 2),
        dict(device=dev, measurement=f"fixed_point({WL},{FL}) stochastic", ms=t["stochastic"],
             ratio=t["stochastic"] / floor_sr, ratio_of="x (clone+rand_like)", target="<= 1.3",
             ok=t["stochastic"] / floor_sr <= 1.3 if dev == "cpu" else None),
        dict(device=dev, measurement=f"fixed_point({WL},{FL}) stochastic, in place (out=x)",
             ms=t["stochastic_in_place"], ratio=t["stochastic_in_place"] / t["stochastic"],
             ratio_of="x into a new tensor"),
        dict(device=dev, measurement=f"dynamic_fixed_point({BITS}) stochastic", ms=t["dynamic"],
             ratio=t["dynamic"] / floor_sr, ratio_of="x (clone+rand_like)"),
    ]
    if "stochastic_ops" in t:
        rows.append(dict(device=dev, measurement=f"fixed_point({WL},{FL}) stochastic, tensor ops (CPU_KERNEL=False)",
                         ms=t["stochastic_ops"], ratio=t["stochastic_ops"] / t["stochastic"],
                         ratio_of="x the kernel (speed-up)"))
    if dev != "cpu":  # the CUDA target is nearest <= 2x clone only; show the stochastic ratio for information
        rows[3].pop("target"), rows[3].pop("ok")
    for rounding, ours in (("nearest", t["nearest"]), ("stochastic", t["stochastic"])):
        ms, reason = qt[rounding]
        row = dict(device=dev, measurement=f"qtorch fixed_point_quantize {rounding}", ms=ms)
        if ms is None:
            row["note"] = f"n/a: {reason}"
        else:
            row.update(ratio=ms / ours, ratio_of="x ours (speed-up)")
            if dev == "cpu":
                row.update(target=">= 5", ok=ms / ours >= 5)
        rows.append(row)
    return rows


def format_table(rows: list[dict], header: str) -> str:
    cols = ["device", "measurement", "median ms", "ratio", "target", "status"]
    body = []
    for r in rows:
        ratio = f"{r['ratio']:.2f} {r['ratio_of']}" if r.get("ratio") is not None else r.get("note", "")
        status = {True: "PASS", False: "MISS", None: ""}[r.get("ok")]
        ms = f"{r['ms']:.3f}" if r.get("ms") is not None else "n/a"
        body.append([r["device"], r["measurement"], ms, ratio, r.get("target", ""), status])
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()
    out = [header, line(cols), line(["-" * w for w in widths])] + [line(b) for b in body]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numel", type=int, default=4_000_000, help="elements of the float32 tensor (default 4,000,000)")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per measurement; the median is reported")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls before each measurement")
    ap.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                    help="'all' = CPU, plus CUDA when available")
    ap.add_argument("--skip-qtorch-cuda", action="store_true",
                    help="do not build qtorch's CUDA extension (nvcc, minutes); its CUDA rows print n/a")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    ap.add_argument("--json", type=Path, help="also write the table (and run metadata) as JSON here")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4_000_000, 64_000_000],
                    help="tensor sizes of the GPU kernels' table (default 4M and 64M floats)")
    ap.add_argument("--inner", type=int, default=10, help="back-to-back calls per timing in the GPU kernels' table")
    ap.add_argument("--triton-interpret", action="store_true",
                    help="dry run: only the GPU kernels' table, on CPU tensors in Triton's interpreter (use tiny --sizes)")
    args = ap.parse_args(argv)
    if args.triton_interpret:
        rows = gpu_kernel_rows(torch.device("cpu"), args.sizes, args.repeats, args.warmup, 1, interpret=True)
        print(format_table(rows, "adapt.quant GPU kernels, dry run in Triton's interpreter on CPU (times mean nothing)"))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(dict(meta=dict(dry_run="Triton's interpreter on CPU", torch=torch.__version__,
                                                            triton=_triton_version(), sizes=args.sizes), rows=rows),
                                            indent=2) + "\n")
            print(f"wrote {args.json}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = []
    if args.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if not devices:
        ap.error("CUDA requested but not available")
    has_cuda = any(d.type == "cuda" for d in devices)
    qtorch_fn, cpu_reason, cuda_reason = load_qtorch(want_cuda=has_cuda and not args.skip_qtorch_cuda)

    rows = []
    for device in devices:
        t, qt = bench_device(device, args.numel, args.repeats, args.warmup, qtorch_fn,
                             cpu_reason if device.type == "cpu" else cuda_reason, args.inner)
        if device.type == "cuda" and cuda_reason is not None:
            qt = {k: (None, cuda_reason) for k in qt}
        rows += rows_for(device.type, t, qt)
    gpu_rows = []
    if has_cuda:
        gpu_rows = gpu_kernel_rows(torch.device("cuda"), args.sizes, args.repeats, args.warmup, args.inner, False)

    meta = dict(
        numel=args.numel, dtype="float32", repeats=args.repeats, warmup=args.warmup,
        torch=torch.__version__, python=platform.python_version(), cpu_threads=torch.get_num_threads(),
        machine=platform.machine(), cuda_device=torch.cuda.get_device_name() if has_cuda else None,
        format=f"FixedPoint({WL}, {FL}); DynamicFixedPoint({BITS})",
        cpu_kernel_threading=cpu_threading(),
        triton=_triton_version(), cuda_timing=f"CUDA events around {args.inner} back-to-back calls" if has_cuda else None,
    )
    header = (f"adapt.quant benchmark: {args.numel:,} float32 elements, median of {args.repeats} timings "
              f"after {args.warmup} warm-up calls; torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
              f"CPU kernels on numba's {meta['cpu_kernel_threading']!r} threading layer"
              + (f", {meta['cuda_device']}, Triton {meta['triton']}; CUDA times per call from {args.inner} "
                 f"back-to-back calls between CUDA events" if has_cuda else ""))
    print(format_table(rows, header))
    if gpu_rows:
        print()
        print(format_table(gpu_rows, f"CUDA: Triton kernels vs whole-tensor ops, median of {args.repeats} timings of "
                                     f"{args.inner} back-to-back calls (CUDA events), {meta['cuda_device']}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(meta=meta, rows=rows + gpu_rows), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
