"""The grid beyond one process: submitit's local executor (real subprocesses, requeue after a
pre-emption), a worker killed with SIGKILL mid-point, claims across hosts (heartbeats)."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pytest
import torch

import adapt.train
from adapt.experiments import claims
from adapt.experiments import grid as G
from adapt.experiments import runner as R
from adapt.records import load_record

submitit = pytest.importorskip("submitit")

NAME = "smoke/float32/alexnet_cifar/digits"
TINY = {"batch_size": 64, "subset": 200}


def results_of(record):
    """What must be equal between an interrupted-and-resumed run and an uninterrupted one."""
    strip = lambda e: {k: v for k, v in e.items() if k != "time_s"}
    return {"status": record["status"], "epochs": [strip(e) for e in record["epochs"]], "final": record["final"],
            "traces": record["traces"], "policy": record["policy"]}


def wait_for_epochs(path, n, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            rec = json.loads(path.read_text())
            if len(rec["epochs"]) >= n:
                return rec
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {n} epoch(s) in {timeout}s")


def test_submitit_local_grid_requeues_a_preempted_job_and_records_a_failure(tmp_path):
    points = [G.GridPoint(NAME, seed=0, overrides=dict(TINY, epochs=4)),
              G.GridPoint(NAME, seed=1, overrides=dict(TINY, epochs=1)),
              G.GridPoint(NAME, seed=2, overrides=dict(TINY, epochs=1, lr=-1.0))]  # fails by itself
    submitted = dict((p.run_id, job) for p, job in
                     G_submit(points, tmp_path / "res"))
    victim = points[0]
    wait_for_epochs(victim.out_dir(tmp_path / "res") / "record.json", 1)
    # what SLURM does before it pre-empts a job: signal the job's process (the claim names it)
    os.kill(claims.holder(victim.out_dir(tmp_path / "res"))["pid"], signal.SIGUSR2)
    from adapt.experiments.cluster import wait_jobs

    summaries = wait_jobs([(p, submitted[p.run_id]) for p in points], verbose=False)
    assert [s["status"] for s in summaries] == ["completed", "completed", "failed"]
    failed = load_record(points[2].out_dir(tmp_path / "res") / "record.json")
    assert failed["status"] == "failed" and "lr" in failed["message"]
    log = "".join(f.read_text() for f in (victim.out_dir(tmp_path / "res") / "slurm").glob("*_log.*"))
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log  # submitit's own log of the requeue
    assert "resuming at epoch" in log
    # the requeued job resumed from the epoch checkpoint: the result equals an uninterrupted run's
    reference = adapt.train.run(victim.config(), out_dir=tmp_path / "ref", device="cpu")
    resumed = load_record(victim.out_dir(tmp_path / "res") / "record.json")
    assert results_of(resumed) == results_of(reference)
    torch.load(victim.out_dir(tmp_path / "res") / "checkpoint.pt", weights_only=True)  # whole, loadable


def G_submit(points, root):
    from adapt.experiments.cluster import submit_points

    return submit_points(points, root, kind="submitit-local", timeout_min=5, verbose=False)


def test_finished_and_claimed_points_are_not_submitted(tmp_path):
    from adapt.experiments.cluster import submit_points

    done = G.GridPoint(NAME, seed=0, overrides=dict(TINY, epochs=1))
    R.train_point(NAME, seed=0, overrides=dict(TINY, epochs=1), results_root=tmp_path, progress=False, device="cpu")
    assert submit_points([done], tmp_path, kind="submitit-local", verbose=False) == []


WORKER = textwrap.dedent("""
    import sys
    from adapt.experiments import grid as G, runner as R
    p = G.GridPoint("smoke/float32/alexnet_cifar/digits", seed=0, overrides={"batch_size": 64, "subset": 200,
                    "epochs": 4})
    R.run_grid(points=[p], results_root=sys.argv[1], executor="inline")
""")


def test_a_worker_killed_mid_point_is_resumed_by_another(tmp_path):
    point = G.GridPoint(NAME, seed=0, overrides=dict(TINY, epochs=4))
    out = point.out_dir(tmp_path / "res")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "res")], stdout=subprocess.DEVNULL,
                              env=dict(os.environ, ADAPT_DEVICE="cpu"))
    try:
        wait_for_epochs(out / "record.json", 2)
        assert claims.holder(out)["pid"] == worker.pid
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert claims.holder(out) is None  # the dead worker's claim is gone (its claim.json may remain)
    rec = load_record(out / "record.json")  # atomic: whole, whatever the moment of the kill
    assert rec["status"] == "running" and 2 <= len(rec["epochs"]) < 4
    res = R.run_point(point, tmp_path / "res", executor="inline")
    assert (res["status"], res["action"]) == ("completed", "ran")
    resumed = load_record(out / "record.json")
    assert resumed["started"] == rec["started"]  # resumed from the checkpoint, not restarted
    reference = adapt.train.run(point.config(), out_dir=tmp_path / "ref", device="cpu")
    assert results_of(resumed) == results_of(reference)


def _claim_file(out, host, age_s):
    out.mkdir(parents=True, exist_ok=True)
    beat = (datetime.now(timezone.utc) - timedelta(seconds=age_s)).isoformat(timespec="seconds")
    (out / claims.INFO_NAME).write_text(json.dumps({"host": host, "pid": 4242, "since": beat, "heartbeat": beat}))


def test_a_claim_of_another_host_holds_while_its_heartbeat_is_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.TIMEOUT_ENV, "60")
    out = tmp_path / "run"
    _claim_file(out, "node-17", age_s=5)
    with pytest.raises(claims.PointClaimed, match="pid 4242 on node-17"):
        with claims.claim(out):
            pass
    assert claims.holder(out)["host"] == "node-17"
    _claim_file(out, "node-17", age_s=120)  # older than the timeout: that host is gone
    assert claims.holder(out) is None
    with claims.claim(out):
        info = json.loads((out / claims.INFO_NAME).read_text())
        assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
    # a stale claim.json of this host is never trusted: the lock alone decides here
    _claim_file(out, socket.gethostname(), age_s=1)
    with claims.claim(out):
        pass


def test_a_held_claim_beats(tmp_path):
    out = tmp_path / "run"
    with claims.claim(out, heartbeat_s=0.05):
        first = json.loads((out / claims.INFO_NAME).read_text())["heartbeat"]
        time.sleep(1.2)
        second = json.loads((out / claims.INFO_NAME).read_text())["heartbeat"]
    assert second > first
    assert not (out / claims.INFO_NAME).exists()


def test_the_claim_timeout_must_be_a_positive_number(monkeypatch):
    monkeypatch.setenv(claims.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="ADAPT_CLAIM_TIMEOUT_S='soon'"):
        claims.claim_timeout()


def test_slurm_executor_gets_the_partition_gpus_time_and_array_parallelism(tmp_path, monkeypatch):
    from adapt.experiments.cluster import make_executor

    fake_bin = tmp_path / "bin"  # submitit looks for `srun` on PATH before it builds a SLURM executor
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")

    ex = make_executor("slurm", tmp_path / "slurm", timeout_min=720, partition="gpu", gpus_per_job=1,
                       cpus_per_job=8, array_parallelism=16, name="adapt-paper")
    params = ex._executor.parameters
    assert params["partition"] == "gpu" and params["gpus_per_node"] == 1 and params["cpus_per_task"] == 8
    assert params["time"] == 720 and params["array_parallelism"] == 16
    text = ex._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --time=720" in text and "#SBATCH --gpus-per-node=1" in text
    assert "#SBATCH --signal=USR2@" in text  # the pre-emption/time-out signal submitit's checkpointing needs
