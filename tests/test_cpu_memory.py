"""Keeping freed CPU memory in the process (adapt.cpu_memory): page faults, the switch, the training loop.

The setting is process-wide and cannot be undone, so every check that applies it runs in a subprocess.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from adapt import cpu_memory, train
from adapt.experiments.configs import get_config

GLIBC = cpu_memory._glibc() is not None

# Page faults of a "step" that allocates, writes and frees three blocks of 64, 36 and 64 MiB, twelve times.
# glibc maps a block above 32 MiB by itself and unmaps it on free, so by default every step faults in
# all its pages again; with the heap kept, the freed blocks coalesce within a few steps and later steps
# write pages the process already has (aligned allocations do not fit the first freed holes exactly).
PROBE = textwrap.dedent("""
    import json, resource
    import torch
    from adapt.cpu_memory import keep_freed_memory
    state = keep_freed_memory()
    again = keep_freed_memory()
    def step():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.empty(n, dtype=torch.float32).fill_(1.0) for n in (16 * 2**20, 9 * 2**20, 16 * 2**20)]
        del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"state": state, "again": again, "faults": [step() for _ in range(12)]}))
""")

PAGES = (16 + 9 + 16) * 4 * 2**20 // os.sysconf("SC_PAGE_SIZE")  # pages written per step


def probe(env_value=None):
    env = {k: v for k, v in os.environ.items() if k != cpu_memory.ENV}
    if env_value is not None:
        env[cpu_memory.ENV] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's (Linux)")
def test_kept_memory_is_reused_without_page_faults():
    kept, system = probe(), probe("0")
    assert kept["state"].startswith("applied (glibc") and kept["again"] == kept["state"]
    assert system["state"] == f"not applied: {cpu_memory.ENV}=0"
    assert min(system["faults"][-3:]) > PAGES // 2  # the defaults: fresh pages in every step
    assert sum(kept["faults"][-3:]) < PAGES // 20  # kept: the last steps reuse the freed pages


def test_elsewhere_it_does_nothing_and_says_why(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_state", None)
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    monkeypatch.delenv(cpu_memory.ENV, raising=False)
    assert cpu_memory.keep_freed_memory().startswith("not applied: needs Linux with glibc")


def test_the_training_loop_keeps_memory_on_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append(1) or "applied")
    train.run(get_config("smoke/float32/alexnet_cifar/digits", epochs=1, batch_size=256, eval_batch_size=500),
              device="cpu")
    assert calls == [1]
