"""Operation budget of one training micro-batch and one optimizer step (ResNet-20, paper config, CPU).

Counted with a ``TorchDispatchMode``: every ATen operation that reaches the dispatcher below
autograd (views and ``detach`` included, since they cost a dispatch each), plus each call of a
numba rounding kernel counted as one operation (it is one kernel launch on a GPU), and the host
reads (``Tensor.tolist`` and ``item``/``float``/``int`` of a floating-point tensor).  The loop is
driven as :func:`adapt.train.run` drives it (L1 as a gradient term, the step's one read of the
losses, :func:`adapt.train.optimizer_step`), at batch 8: the counts do not depend on the batch size.

Counts of this counter at paper settings before issue 15 (L1 as a loss over every parameter, one
rounding call per parameter tensor, a host read per micro-batch): per micro-batch float32 773, AdaPT
1,506 (+ 67 kernel calls), MuPPET 1,764; per optimizer step float32 262, AdaPT 1,571 (+ 130 kernel
calls), MuPPET 4,552.  After: per micro-batch float32 380, AdaPT 1,112 (+ 67 kernel calls); per step float32
461, AdaPT 868 (+ 2).  With layer outputs rounded in place and the ReLU-fed inputs skipped, AdaPT's
micro-batch is 998 (+ 57 kernel calls).  The budgets below are those counts plus about 5%; a per-parameter L1 loss
(about 195 forward and 260 backward operations per micro-batch) or one rounding call per tensor
(130 calls and about 800 operations per step) breaks them.
"""
from __future__ import annotations

import collections
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from adapt import _cpu_kernels, train
from adapt.experiments.configs import get_config

BUDGET = {  # (operations per micro-batch, per optimizer step)
    "adapt": (1110, 915),
    "float32": (400, 485),
}
KERNEL_CALLS_PER_STEP = 2  # weight gradients, then weights: one grouped call each
KERNELS = [n for n in dir(_cpu_kernels) if n.endswith(("_flat", "_rows", "_serial", "_parallel"))]


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_floating_point():
            self.reads += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def counted():
    """``(start, stop)``: count operations, kernel calls and host reads between them."""
    state = {"kernels": 0, "tolist": 0, "mode": None}

    def wrap(real):
        def call(*args):
            state["kernels"] += 1
            return real(*args)
        return call

    real_tolist = torch.Tensor.tolist

    def tolist(self):
        state["tolist"] += 1
        return real_tolist(self)

    patches = [mock.patch.object(_cpu_kernels, n, wrap(getattr(_cpu_kernels, n))) for n in KERNELS]
    patches.append(mock.patch.object(torch.Tensor, "tolist", tolist))
    for p in patches:
        p.start()

    def start():
        state.update(kernels=0, tolist=0, mode=_Counter())
        state["mode"].__enter__()

    def stop():
        mode = state["mode"]
        mode.__exit__(None, None, None)
        return sum(mode.ops.values()), state["kernels"], mode.reads + state["tolist"], mode.ops

    yield start, stop
    for p in patches:
        p.stop()


def _loop(method):
    cfg = get_config(f"paper/{method}/resnet20/cifar10")
    model, policy, qmodel, optimizer = train.build(cfg, 10, torch.device("cpu"))
    l1 = train.L1Gradient(model, cfg.l1_decay, cfg.accumulation_steps)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    return cfg, model, policy, qmodel, optimizer, l1, x, y


@pytest.mark.parametrize("method", ["adapt", "float32"])
def test_micro_batch_and_step_stay_within_the_operation_budget(method, counted):
    start, stop = counted
    cfg, model, policy, qmodel, optimizer, l1, x, y = _loop(method)
    accum = cfg.accumulation_steps
    policy.epoch_float = 0.0
    for step in range(2):  # the first compiles the kernels and creates the optimizer's buffers
        start()
        model.zero_grad(set_to_none=True)
        value = l1.begin_step()
        begin = stop()
        losses = []
        for _ in range(accum):
            start()
            out = model(x)
            loss = F.cross_entropy(out, y) + value
            (loss / accum).backward()
            losses.append(loss.detach())
            (out.detach().argmax(1) == y).sum()
            micro = stop()
        start()
        values = torch.stack(losses).tolist()
        l1.end_step(accum)
        train.optimizer_step(policy, optimizer, qmodel, step, values[-1] / accum)
        end = stop()
    micro_ops, micro_kernels, micro_reads, ops = micro
    step_ops = begin[0] + end[0]
    step_kernels = begin[1] + end[1]
    budget_micro, budget_step = BUDGET[method]
    assert micro_reads == 0, "a host read in the micro-batch"
    assert ops["aten.abs"] == 0 and ops["aten.sgn"] == 0, "the L1 term is built per micro-batch"
    assert micro_ops + micro_kernels <= budget_micro, (micro_ops, micro_kernels, ops.most_common(12))
    assert step_ops + step_kernels <= budget_step, (step_ops, step_kernels, end[3].most_common(12))
    assert begin[2] + end[2] <= 2, "more than the loop's and the policy's one transfer each per step"
    assert step_kernels == (KERNEL_CALLS_PER_STEP if method == "adapt" else 0)


def test_the_loop_builds_the_l1_term_once_per_step_not_per_micro_batch():
    cfg = get_config("smoke/fixed/alexnet_cifar/digits", epochs=1, batch_size=32, accumulation_steps=3,
                     subset=200, test_subset=50, l1_decay=1e-4)
    mode = _Counter()
    with mode:
        record = train.run(cfg, device="cpu")
    steps = record["epochs"][-1]["steps"]
    n_params = len(list(train.build(cfg, 10, torch.device("cpu"))[0].parameters()))
    assert steps >= 2
    # the penalty's value, once per step (a per-micro-batch L1 loss: n_params per micro-batch, 3x as many;
    # the run has an abs or two of its own elsewhere)
    assert n_params * steps <= mode.ops["aten.abs"] <= n_params * steps + 2
    assert mode.ops["aten.sgn"] <= 2  # no L1 graph in backward (n_params per micro-batch); one elsewhere
    assert mode.ops["aten._foreach_sign"] == steps
