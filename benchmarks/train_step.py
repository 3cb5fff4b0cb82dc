"""Training throughput: float32 vs quantized execution, measured in one run.

For each model (ResNet-20, CIFAR AlexNet) on synthetic CIFAR-shaped data, times
full training steps (forward, loss, backward, SGD step) of:

* ``float32``   plain model, no hooks;
* ``fixed 8/4`` adapt's quantized execution (:class:`adapt.layers.QuantizedModel` with
  :class:`adapt.policies.FixedPrecisionPolicy`), stochastic rounding on layer inputs,
  outputs, weights (from the FP32 master after every step) and weight gradients;
* ``fixed-ops`` (CPU only) the same, through the whole-tensor ops instead of the fused CPU
  kernel and without skipping re-quantization (``adapt.quant.CPU_KERNEL = False``,
  ``skip_requantization=False``): what the CPU path cost before the kernel;
* ``qtorch 8/4`` the same quantization points through QPyTorch's
  ``fixed_point_quantize`` (what the official AdaPT code calls): the anchor.

Target (issue 3): fixed 8/4 <= 1.3x float32 for ResNet-20 on CPU.  Prints one table
with images/s and ratios to float32.  Synthetic data: speed only, never a result.

    python benchmarks/train_step.py [--device cpu|cuda] [--batch 128] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import time
from unittest import mock

import torch
import torch.nn.functional as F

from adapt import quant
from adapt.layers import QuantizedModel
from adapt.models import build_model
from adapt.policies import FixedPrecisionPolicy


class _Cfg:  # the few fields FixedPrecisionPolicy.setup / make_optimizer read
    lr, momentum, weight_decay, nesterov = 0.01, 0.9, 1e-4, False


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


def _setup(model_name, mode, device):
    torch.manual_seed(0)
    model = build_model(model_name, 10, "torch").to(device)
    if mode == "float32":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        return model, None, opt
    gen = torch.Generator(device=device).manual_seed(1)
    q = QuantizedModel(model, rounding="stochastic", generator=gen, skip_requantization=mode != "fixed-ops")
    policy = FixedPrecisionPolicy(8, 4)
    policy.setup(model, q, _Cfg)
    if mode == "qtorch":
        impl = _qtorch_quantizer()
        fmt = _QtorchFormat(policy.format, impl)
        for layer in q.layers.values():
            layer.input_format = layer.output_format = fmt
        for qp in q.params.values():
            qp.weight_format = qp.grad_format = fmt
    opt = policy.make_optimizer(q.master_parameters(), _Cfg)
    return model, q, opt


def _step(model, q, opt, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    if q is not None:
        q.quantize_grads()
        q.share_grads()
    opt.step()
    if q is not None:
        q.quantize_weights()


def measure(model_name, mode, device, batch, steps, warmup=3):
    with mock.patch.object(quant, "CPU_KERNEL", mode != "fixed-ops"):
        return _measure(model_name, mode, device, batch, steps, warmup)


def _measure(model_name, mode, device, batch, steps, warmup):
    model, q, opt = _setup(model_name, mode, device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        _step(model, q, opt, x, y)
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        _step(model, q, opt, x, y)
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return batch / times[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: both where available)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--models", default="resnet20,alexnet_cifar")
    parser.add_argument("--skip-qtorch", action="store_true")
    parser.add_argument("--json", default=None, help="also write the table as JSON")
    args = parser.parse_args(argv)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    print(f"train-step benchmark: batch {args.batch}, median of {args.steps} steps; torch {torch.__version__}, "
          f"CPU kernels on numba's {quant.cpu_kernel_threading()!r} threading layer, "
          f"{torch.get_num_threads()} CPU threads; synthetic data")
    print(f"{'device':6s}  {'model':14s}  {'mode':10s}  {'img/s':>9s}  {'x float32 time':>14s}  target")
    for dev_name in devices:
        device = torch.device(dev_name)
        for model_name in args.models.split(","):
            modes = (["float32", "fixed"] + (["fixed-ops"] if dev_name == "cpu" else [])
                     + ([] if args.skip_qtorch else ["qtorch"]))
            base = None
            for mode in modes:
                try:
                    ips = measure(model_name, mode, device, args.batch, args.steps)
                except Exception as exc:  # qtorch's extension may not build (e.g. no nvcc)
                    print(f"{dev_name:6s}  {model_name:14s}  {mode:10s}  {'n/a':>9s}  ({type(exc).__name__}: {exc})")
                    continue
                base = ips if mode == "float32" else base
                ratio = base / ips
                target = ""
                if mode == "fixed" and model_name == "resnet20" and dev_name == "cpu":
                    target = f"<= 1.3  {'PASS' if ratio <= 1.3 else 'MISS'}"
                rows.append({"device": dev_name, "model": model_name, "mode": mode, "images_per_s": ips,
                             "time_ratio_vs_float32": ratio})
                print(f"{dev_name:6s}  {model_name:14s}  {mode:10s}  {ips:9.0f}  {ratio:14.2f}  {target}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
