"""Training throughput per image: float32 vs fixed 8/4 vs the AdaPT policy, measured in one run.

For each model (ResNet-20, CIFAR AlexNet) on synthetic CIFAR-shaped data, times whole
optimizer steps as the training loop (:func:`adapt.train.run`) takes them: ``accumulation``
micro-batches of ``batch`` images (forward, cross-entropy plus the config's L1 term,
backward), the step's one read of the losses, then :func:`adapt.train.optimizer_step`
(gradient quantization, the policy's ``before_step``, SGD on the masters, weight
quantization, ``after_step``).  Models, policies and optimizers are built from the paper
configs by :func:`adapt.train.build`:

* ``float32``    ``paper/float32/<model>/cifar10`` (no hooks, L1 1e-8 or 1e-4 as configured);
* ``fixed``      ``paper/adapt/<model>/cifar10`` with the fixed 8/4 policy: stochastic rounding
  at every layer's input and output, weights (from the FP32 master) and weight gradients;
* ``adapt``      ``paper/adapt/<model>/cifar10`` itself (reference variant): the same
  quantization points with per-tensor formats plus the AdaPT heuristic every step.  A few
  steps never reach a format switch (at least ``min_lookback`` = 25 steps per tensor), so
  PushDown's cost is not in this number; ``benchmarks/heuristic.py`` measures it;
* ``muppet``     ``paper/muppet/<model>/cifar10`` at its first precision (8-bit dynamic fixed point:
  each image with its own scale, every layer's output and input gradient, weights and weight
  gradients, the scale recomputed at every call);
* ``fixed-ops``  (opt-in, CPU) ``fixed`` through the whole-tensor ops instead of the CPU kernels
  and without skipping re-quantization: what the CPU path cost before the kernels;
* ``qtorch``     (opt-in) ``fixed``'s quantization points through QPyTorch's ``fixed_point_quantize``.

Modes are interleaved (one step of each mode per round) because a shared machine's speed
drifts; the table gives the median step time per training image and the median over rounds
of each round's ratio to float32, with the median page faults and system (kernel) CPU time per
step, which show what the C library's allocator costs.  Targets (issue 15) at the paper batch (512 x 4): ``adapt``
<= 1.15x float32 (CPU and GPU), ``fixed`` <= 1.15x and ``muppet`` <= 1.3x (GPU).  Synthetic data:
speed only, never a result.

On CPU the process keeps freed memory, as :func:`adapt.train.run` does there
(:func:`adapt.cpu_memory.keep_freed_memory`), for every mode alike; ``--system-malloc`` measures
with the C library's defaults instead, where page faults take a large, mode-dependent share.

    python benchmarks/train_step.py [--device cpu|cuda] [--batch 512] [--accumulation 4] [--rounds 5]
    python benchmarks/train_step.py --device cpu --system-malloc   # without keep_freed_memory
    python benchmarks/train_step.py --serial-threshold   # the CPU kernels' serial/parallel crossover
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapt import quant, train  # noqa: E402
from adapt.experiments.configs import get_config  # noqa: E402

MODES = ("float32", "fixed", "adapt", "muppet")
OPTIONAL_MODES = ("fixed-ops", "qtorch")
#: mode -> (target ratio to float32, devices it is set for)
TARGETS = {"adapt": (1.15, ("cpu", "cuda")), "fixed": (1.15, ("cuda",)), "muppet": (1.3, ("cuda",))}


def _qtorch_quantizer():
    from qtorch.quant import fixed_point_quantize

    def q(fmt, x, rounding, generator, out=None):
        y = fixed_point_quantize(x, fmt.word_length, fmt.fractional_length, rounding=rounding)
        if out is not None:
            out.copy_(y)
            return out
        return y

    return q


class _QtorchFormat:
    """A FixedPoint stand-in whose quantize() calls QPyTorch."""

    def __init__(self, fmt, impl):
        self.fmt, self.impl = fmt, impl
        self.bits = fmt.word_length

    def quantize(self, x, rounding="stochastic", generator=None, out=None):
        return self.impl(self.fmt, x, rounding, generator, out)


def _config(model_name: str, mode: str):
    if mode == "float32":
        return get_config(f"paper/float32/{model_name}/cifar10")
    if mode == "muppet":
        return get_config(f"paper/muppet/{model_name}/cifar10")
    cfg = get_config(f"paper/adapt/{model_name}/cifar10")
    if mode == "adapt":
        return cfg
    return cfg.replace(method="fixed", policy=dict(word_length=8, fractional_length=4))


class _Runner:
    """One mode's model, policy and optimizer, stepped as the training loop steps them."""

    def __init__(self, model_name, mode, device, accumulation):
        self.mode = mode
        self.cfg = _config(model_name, mode).replace(accumulation_steps=accumulation)
        self.model, self.policy, self.qmodel, self.optimizer = train.build(self.cfg, 10, device)
        if mode in ("fixed-ops", "qtorch"):
            q = self.qmodel
            if mode == "fixed-ops":
                q.skip_requantization = False
            else:
                fmt = _QtorchFormat(q.params[next(iter(q.params))].weight_format, _qtorch_quantizer())
                for layer in q.layers.values():
                    layer.input_format = layer.output_format = fmt
                for qp in q.params.values():
                    qp.weight_format = qp.grad_format = fmt
        self.accum = accumulation
        l1_gradient = getattr(train, "L1Gradient", None)  # absent in versions before issue 15
        self.l1 = None
        if self.cfg.l1_decay and l1_gradient is not None:
            self.l1 = l1_gradient(self.model, self.cfg.l1_decay, accumulation)
        self.step_index = 0

    def step(self, batches) -> None:
        with mock.patch.object(quant, "CPU_KERNEL", self.mode != "fixed-ops"):
            self._step(batches)

    def _step(self, batches) -> None:
        model, cfg = self.model, self.cfg
        model.zero_grad(set_to_none=True)
        l1_value = self.l1.begin_step() if self.l1 is not None else None
        losses = []
        for x, y in batches:
            out = model(x)
            loss = F.cross_entropy(out, y)
            if l1_value is not None:
                loss = loss + l1_value
            elif cfg.l1_decay:  # the formulation before issue 15
                loss = loss + cfg.l1_decay * train.l1_penalty(model)
            (loss / self.accum).backward()
            losses.append(loss.detach())
            (out.detach().argmax(1) == y).sum()
        values = torch.stack(losses).tolist()
        if self.l1 is not None:
            self.l1.end_step(len(batches))
        self.policy.epoch_float = 0.0
        train.optimizer_step(self.policy, self.optimizer, self.qmodel, self.step_index, values[-1] / self.accum)
        self.step_index += 1


def _batches(batch, accumulation, device):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (batch,), generator=g).to(device))
            for _ in range(accumulation)]


def _usage():
    """(minor page faults, system CPU seconds) of this process so far; zeros where ``resource`` is missing."""
    try:
        import resource
    except ImportError:  # Windows
        return 0, 0.0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_minflt, ru.ru_stime


def measure(model_name, modes, device, batch, accumulation, rounds, warmup=1, usage=None) -> dict:
    """``{mode: [seconds per training image, one per round]}``, modes interleaved within each round.

    ``usage`` (a dict), if given, receives ``{mode: [(page faults, system seconds) per step, ...]}``."""
    runners = {m: _Runner(model_name, m, device, accumulation) for m in modes}
    data = _batches(batch, accumulation, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {m: [] for m in modes}
    for r in range(warmup + rounds):
        for m in modes:
            sync()
            faults, system = _usage()
            t0 = time.perf_counter()
            runners[m].step(data)
            sync()
            if r >= warmup:
                times[m].append((time.perf_counter() - t0) / (batch * accumulation))
                if usage is not None:
                    f1, s1 = _usage()
                    usage.setdefault(m, []).append((f1 - faults, s1 - system))
    return times


def serial_threshold(max_power=20, repeats=30) -> None:
    """Median time of the parallel and the serial stochastic-rounding kernel per tensor size."""
    kernels = quant._cpu_kernels()
    seed = np.uint64(1)
    print(f"stochastic rounding kernel, median of {repeats} calls, {torch.get_num_threads()} threads; "
          f"adapt.quant.SERIAL_BELOW = {quant.SERIAL_BELOW}")
    for p in range(6, max_power + 1):
        x = np.random.default_rng(0).random(2**p, dtype=np.float32)
        out = np.empty_like(x)
        row = []
        for f in (kernels.stochastic_round_flat, kernels.stochastic_round_flat_serial):
            f(x, out, 16.0, 1 / 16, -128.0, 127.0, seed)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                f(x, out, 16.0, 1 / 16, -128.0, 127.0, seed)
                ts.append(time.perf_counter() - t0)
            row.append(statistics.median(ts) * 1e6)
        print(f"2**{p:<2d} elements: parallel {row[0]:10.1f} us   serial {row[1]:10.1f} us")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: both where available)")
    parser.add_argument("--batch", type=int, default=512, help="micro-batch size (paper: 512)")
    parser.add_argument("--accumulation", type=int, default=4, help="micro-batches per optimizer step (paper: 4)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (one step of every mode each)")
    parser.add_argument("--models", default="resnet20,alexnet_cifar")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, float32 first; also {', '.join(OPTIONAL_MODES)}")
    parser.add_argument("--serial-threshold", action="store_true", help="only time the CPU kernels per size")
    parser.add_argument("--json", default=None, help="also write the table as JSON")
    parser.add_argument("--system-malloc", action="store_true",
                        help="do not keep freed CPU memory (adapt.cpu_memory); the C library's defaults")
    args = parser.parse_args(argv)
    malloc = "system malloc (--system-malloc)"
    if not args.system_malloc:
        try:
            from adapt.cpu_memory import keep_freed_memory
        except ImportError:  # versions before it
            malloc = "system malloc (this version has no adapt.cpu_memory)"
        else:
            malloc = f"keep_freed_memory: {keep_freed_memory()}"
    if args.serial_threshold:
        serial_threshold()
        return []
    modes = args.modes.split(",")
    if modes[0] != "float32" or any(m not in MODES + OPTIONAL_MODES for m in modes):
        parser.error(f"--modes must start with float32 and name modes from {MODES + OPTIONAL_MODES}, got {args.modes}")
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    try:
        threading = f"CPU kernels on numba's {quant.cpu_kernel_threading()!r} threading layer"
    except ImportError as exc:  # a GPU machine without numba: the CUDA path does not need it
        threading = f"no CPU kernels ({exc})"
    gpu = f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    print(f"train-step benchmark: {args.batch} x {args.accumulation} images per step, {args.rounds} interleaved "
          f"rounds; torch {torch.__version__}{gpu}, {threading}, {torch.get_num_threads()} CPU threads; "
          f"synthetic data; {malloc}")
    print(f"{'device':6s}  {'model':14s}  {'mode':10s}  {'ms/image':>9s}  {'x float32':>9s}  {'faults/step':>11s}  "
          f"{'sys s/step':>10s}  target")
    for dev_name in devices:
        device = torch.device(dev_name)
        for model_name in args.models.split(","):
            dev_modes = [m for m in modes if dev_name == "cpu" or m != "fixed-ops"]
            usage = {}
            times = measure(model_name, dev_modes, device, args.batch, args.accumulation, args.rounds, usage=usage)
            for mode in dev_modes:
                ratio = statistics.median(t / b for t, b in zip(times[mode], times["float32"]))
                per_image = statistics.median(times[mode])
                target = ""
                limit, target_devices = TARGETS.get(mode, (None, ()))
                if dev_name in target_devices:
                    target = f"<= {limit}  {'PASS' if ratio <= limit else 'MISS'}"
                faults = statistics.median(f for f, _ in usage[mode])
                system = statistics.median(s for _, s in usage[mode])
                rows.append({"device": dev_name, "model": model_name, "mode": mode, "s_per_image": per_image,
                             "time_ratio_vs_float32": ratio, "rounds": times[mode],
                             "page_faults_per_step": faults, "system_s_per_step": system})
                print(f"{dev_name:6s}  {model_name:14s}  {mode:10s}  {1e3 * per_image:9.3f}  {ratio:9.2f}  "
                      f"{faults:11,.0f}  {system:10.2f}  {target}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
