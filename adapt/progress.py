"""Progress lines: one when a run starts, one per epoch, one when it ends.

Plain text lines, flushed as they are written, so they appear live in a terminal, in
a Jupyter cell, in papermill's log and in a batch job's log file alike, and an
executed notebook keeps readable text instead of a frozen progress widget.

    [adapt-alexnet_cifar-digits-reference-s0-f0] start: epochs 0..8 of 8 on cpu -> results/smoke/...
    [adapt-alexnet_cifar-digits-reference-s0-f0] epoch 3/8  loss 1.234  train 61.2%  val 60.1%  test 59.8%  WL 9.4  1m12s, ~2m00s left
    [adapt-alexnet_cifar-digits-reference-s0-f0] completed in 3m05s: test 63.2%

The estimate of the time left is the mean epoch time of this call times the epochs
still to run; for MuPPET (whose policy ends the run) it is an upper bound, written
``<=``.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from adapt.paths import display

__all__ = ["ProgressPrinter", "format_duration", "precision_summary"]


def format_duration(seconds: float) -> str:
    """``3m05s``, ``1h02m``, ``12s``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _pct(v) -> Optional[str]:
    return None if v is None else f"{100 * v:.1f}%"


def precision_summary(metrics: dict) -> Optional[str]:
    """The precision part of an epoch line: AdaPT's mean weight WL, MuPPET's bit width, or None (float32)."""
    wl = metrics.get("adapt_mean_weight_wl")
    if wl is not None:
        return f"WL {wl:.1f}"
    bits = metrics.get("bits")
    if bits is not None:
        return "float32" if bits >= 32 else f"{int(bits)}-bit"
    return None


class ProgressPrinter:
    """Writes the progress lines of one run to ``stream`` (default: ``sys.stdout`` at each write)."""

    def __init__(self, label: str, stream: Optional[TextIO] = None, open_ended: bool = False):
        self.label, self.stream, self.open_ended = label, stream, open_ended
        self._t0 = time.time()
        self._epoch_times = []

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(f"[{self.label}] {text}\n")
        stream.flush()

    def start(self, start_epoch: int, epochs: int, device, out_dir=None) -> None:
        self._t0 = time.time()

        where = f" -> {display(out_dir)}" if out_dir is not None else ""
        resumed = f"resuming at epoch {start_epoch + 1}" if start_epoch else "from scratch"
        cap = " (at most; the policy ends the run)" if self.open_ended else ""
        self._write(f"start: {epochs} epochs{cap}, {resumed}, on {device}{where}")

    def epoch(self, metrics: dict, epochs: int, epoch_seconds: float) -> None:
        self._epoch_times.append(epoch_seconds)
        done = metrics["epoch"] + 1
        parts = [f"epoch {done}/{epochs}", f"loss {metrics['train_loss']:.4g}"]
        for key, name in (("train_acc", "train"), ("val_acc", "val"), ("test_acc", "test")):
            v = _pct(metrics.get(key))
            if v is not None:
                parts.append(f"{name} {v}")
        prec = precision_summary(metrics)
        if prec:
            parts.append(prec)
        elapsed = time.time() - self._t0
        left = (epochs - done) * (sum(self._epoch_times) / len(self._epoch_times))
        bound = "<=" if self.open_ended else "~"
        parts.append(f"{format_duration(elapsed)}, {bound}{format_duration(left)} left")
        self._write("  ".join(parts))

    def end(self, status: str, message: str = "", final: Optional[dict] = None) -> None:
        acc = _pct((final or {}).get("final_test_acc"))
        tail = f": test {acc}" if acc else ""
        why = f" ({message})" if message else ""
        self._write(f"{status} after {format_duration(time.time() - self._t0)}{tail}{why}")
