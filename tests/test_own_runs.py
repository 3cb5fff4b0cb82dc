"""A user's own runs and bad files: run ids of custom runs, paths, the `adapt` command, selection,
progress lines, claims between processes, corrupt checkpoints and records.

Real tiny runs: digits, 200 training images, batch 64, 1-2 epochs (seconds each on 2 cores).
"""
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import nbformat
import pytest

import adapt.train
from adapt.experiments import claims
from adapt import paths
from adapt.cli import grid_main
from adapt.experiments import grid as G
from adapt.experiments.configs import CONFIGS
from adapt.experiments import runner as R
from adapt.cli import main as cli_main, parse_sets
from adapt.records import SCHEMA, RecordError, atomic_write_json, load_record, load_records

ROOT = Path(__file__).resolve().parents[1]
TINY = {"batch_size": 64, "epochs": 2, "subset": 200}
NAME = "smoke/float32/alexnet_cifar/digits"


def grid_record(point, acc=0.8, epochs=8):
    """A finished record of a grid point (as the committed smoke records are)."""
    cfg = point.config()
    return {"schema": SCHEMA, "name": cfg.name, "status": "completed", "config": cfg.to_dict(), "environment": {},
            "epochs": [{"epoch": e, "test_acc": acc} for e in range(epochs)], "traces": {},
            "final": {"epochs_run": epochs, "final_test_acc": acc}, "policy": {}, "wall_time_s": 1.0,
            "started": "2026-01-01T00:00:00+00:00", "finished": None, "message": ""}


# ----------------------------------------------------------------------------- 1. custom runs
def test_a_custom_run_gets_its_own_folder_and_never_replaces_the_grid_record(tmp_path):
    grid_point = G.GridPoint(NAME)
    grid_path = grid_point.out_dir(tmp_path) / "record.json"
    atomic_write_json(grid_path, grid_record(grid_point))
    before = grid_path.read_bytes()

    rec = R.train_point(NAME, results_root=tmp_path, overrides={"epochs": 1, "subset": 200, "batch_size": 64},
                        force=True, progress=False, device="cpu")
    custom = G.GridPoint(NAME, overrides={"epochs": 1, "subset": 200, "batch_size": 64})
    assert rec["run_id"] == custom.run_id != grid_point.run_id
    assert rec["overrides"] == {"batch_size": 64, "epochs": 1, "subset": 200}
    assert (custom.out_dir(tmp_path) / "record.json").exists()
    assert grid_path.read_bytes() == before  # force=True on the custom run leaves the grid point alone

    records = load_records(tmp_path)
    grid_records, others = G.split_records(records, "smoke")
    assert [r["config"]["epochs"] for r in grid_records] == [8]
    assert [r["run_id"] for r in others] == [custom.run_id]
    # records written before run ids had overrides are classified from their config alone
    old_style = {k: v for k, v in rec.items() if k not in ("run_id", "overrides")}
    assert G.record_point(old_style).run_id == custom.run_id and not G.is_grid_record(old_style)


def test_override_tags_are_stable_and_registry_values_are_not_overrides():
    a = G.GridPoint(NAME, overrides={"lr": 0.001, "epochs": 15})
    b = G.GridPoint(NAME, overrides=(("epochs", 15), ("lr", 0.001)))
    assert a == b and a.run_id == b.run_id
    # sha256 of the canonical JSON, computed independently here
    import hashlib

    expected = "x" + hashlib.sha256(b'{"epochs":15,"lr":0.001}').hexdigest()[:8]
    assert a.run_id.endswith("-" + expected)
    same = G.GridPoint(NAME, overrides={"epochs": CONFIGS[NAME].epochs})
    assert not same.is_custom and same.run_id == G.GridPoint(NAME).run_id
    # an off-grid seed is not a grid record either
    assert not G.is_grid_record(grid_record(G.GridPoint(NAME, seed=7)))
    assert G.is_grid_record(grid_record(G.GridPoint(NAME, seed=1)))
    with pytest.raises(ValueError, match="seed is a grid point field"):
        G.GridPoint(NAME, overrides={"seed": 3})


def test_default_paths_are_the_repository_s_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.RESULTS_ENV, raising=False)
    monkeypatch.delenv(paths.FIGURES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.results_root() == ROOT / "results"
    assert paths.figures_root() == ROOT / "figures"
    assert paths.results_root("results/x") == ROOT / "results/x"
    assert G.GridPoint(NAME).out_dir() == ROOT / "results/smoke" / G.GridPoint(NAME).run_id
    monkeypatch.setenv(paths.RESULTS_ENV, str(tmp_path / "elsewhere"))
    assert paths.results_root() == tmp_path / "elsewhere"
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv(paths.RESULTS_ENV, str(tmp_path / "afile"))
    with pytest.raises(ValueError, match=r"ADAPT_RESULTS=.*afile.* is a file, not a folder"):
        paths.results_root()


def test_the_training_notebook_run_from_the_repository_root_writes_where_it_should(tmp_path, monkeypatch):
    """papermill started from the repository root (not notebooks/): the record lands in $ADAPT_RESULTS."""
    import papermill

    monkeypatch.setenv(paths.RESULTS_ENV, str(tmp_path / "res"))
    monkeypatch.chdir(ROOT)
    papermill.execute_notebook("notebooks/10-train.ipynb", str(tmp_path / "out.ipynb"), kernel_name="python3",
                               parameters={"config_name": NAME, "overrides": dict(TINY, epochs=1), "device": "cpu"},
                               progress_bar=False)
    point = G.GridPoint(NAME, overrides=dict(TINY, epochs=1))
    assert load_record(tmp_path / "res" / "smoke" / point.run_id / "record.json")["status"] == "completed"
    assert not (ROOT.parent / "results" / "smoke" / point.run_id).exists()
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "epoch 1/1" in text and "completed after" in text
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for c in executed.cells if c.cell_type == "code" for o in c.outputs)


def test_adapt_run_trains_a_custom_run_with_set(tmp_path, capsys):
    args = ["run", NAME, "--set", "epochs=1", "subset=200", "batch_size=64", "lr=0.02", "--seed", "3",
            "--results", str(tmp_path), "--device", "cpu"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    point = G.GridPoint(NAME, seed=3, overrides={"epochs": 1, "subset": 200, "batch_size": 64, "lr": 0.02})
    assert f"custom run {point.run_id}" in out and "epoch 1/1" in out and "loss " in out and "left" in out
    rec = load_record(point.out_dir(tmp_path) / "record.json")
    assert rec["config"]["lr"] == 0.02 and rec["config"]["seed"] == 3
    assert cli_main(args) == 0 and "already completed" in capsys.readouterr().out  # not retrained


def test_set_parses_values_and_merges_policy_options():
    got = parse_sets(["lr=0.001", "epochs=15", "scheduler=step", "step_milestones=[3, 6]", "augment=false",
                      "policy.min_lookback=10"], "smoke/adapt/alexnet_cifar/digits")
    assert got["lr"] == 0.001 and got["epochs"] == 15 and got["scheduler"] == "step"
    assert got["step_milestones"] == [3, 6] and got["augment"] is False
    assert got["policy"] == dict(CONFIGS["smoke/adapt/alexnet_cifar/digits"].policy, min_lookback=10)
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        parse_sets(["lr"], NAME)


def test_adapt_run_rejects_a_bad_field_before_writing_anything(tmp_path, capsys):
    assert cli_main(["run", NAME, "--set", "epoch=3", "--results", str(tmp_path)]) == 2
    assert "epoch" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_the_console_entry_point_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["adapt"] == "adapt.cli:main"
    exe = Path(sys.executable).with_name("adapt")
    if exe.exists():  # installed by `make setup` (pip install -e .)
        out = subprocess.run([str(exe), "grid", "smoke", "--match", "muppet-*", "--list"], capture_output=True,
                             text=True, check=True).stdout
        assert out.splitlines()[-1] == "3 point(s)"


# ----------------------------------------------------------------------------- 2. selection and progress
def test_only_is_exact_and_match_takes_patterns():
    pts = G.grid("paper")
    assert [p.run_id for p in G.select(pts, only="adapt-resnet20-cifar10-reference-s0-f3")] == \
        ["adapt-resnet20-cifar10-reference-s0-f3"]
    hits = G.select(pts, match="adapt-resnet20-cifar10-*")
    assert len(hits) == 10 and all(p.dataset == "cifar10" for p in hits)  # cifar100 not matched
    assert len(G.select(pts, match="paper/muppet/*")) == 12
    with pytest.raises(ValueError) as err:
        G.select(pts, only="adapt-resnet20-cifar10")
    assert "adapt-resnet20-cifar10-reference-s0-f0" in str(err.value) and "--match" in str(err.value)
    with pytest.raises(ValueError, match="matches no point"):
        G.select(pts, match="vgg-*")


def test_cli_selection_that_matches_nothing_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        grid_main(["smoke", "--only", "adapt-resnet20-digits", "--list"])
    assert exit_.value.code == 2
    assert "adapt-resnet20-digits-reference-s0-f0" in capsys.readouterr().err


def test_the_grid_prints_a_start_line_and_one_line_per_epoch(tmp_path, capsys):
    pts = [G.GridPoint(NAME, overrides=TINY), G.GridPoint("smoke/adapt/alexnet_cifar/digits", overrides=TINY)]
    R.run_grid(points=pts, results_root=tmp_path, executor="inline")
    out = capsys.readouterr().out
    assert out.count(": starting (") == 2
    lines = [l for l in out.splitlines() if "] epoch " in l]
    assert len(lines) == 4 and all("loss " in l and "test " in l and "left" in l for l in lines)
    assert sum("WL " in l for l in lines) == 2  # the quantized run shows its mean weight word length


def test_the_papermill_executor_forwards_the_epoch_lines(tmp_path, capsys):
    p = G.GridPoint(NAME, overrides=dict(TINY, epochs=1))
    frame = R.run_grid(points=[p], results_root=tmp_path, executor="papermill")
    assert list(frame["status"]) == ["completed"]
    out = capsys.readouterr().out
    assert "starting (" in out and f"[{p.run_id}] epoch 1/1" in out


# ----------------------------------------------------------------------------- 3. bad files
def test_a_corrupt_checkpoint_is_named_set_aside_and_the_history_kept(tmp_path):
    p = G.GridPoint(NAME, overrides=dict(TINY, epochs=3))
    out = p.out_dir(tmp_path)
    adapt.train.run(p.config(), out_dir=out, epoch_limit=2, device="cpu", run_info={"run_id": p.run_id})
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as a full disk or a kill mid-copy leaves it

    first = R.run_point(p, tmp_path, executor="inline")
    assert (first["status"], first["action"]) == ("failed", "failed")
    assert str(ckpt) in first["message"] and "--force" in first["message"] and "checkpoint.pt.corrupt" in first["message"]
    rec = load_record(out / "record.json")
    assert rec["status"] == "failed" and len(rec["epochs"]) == 2  # the history survives the failure
    assert (out / "checkpoint.pt.corrupt").exists() and not ckpt.exists()

    second = R.run_point(p, tmp_path, executor="inline")  # restarts from scratch, cleanly
    assert (second["status"], second["action"]) == ("completed", "ran")
    assert len(load_record(out / "record.json")["epochs"]) == 3
    assert len(load_record(out / "record.json.previous")["epochs"]) == 2


@pytest.mark.parametrize("content", ["", '{"schema": "adapt.run/1", "status": "compl', "[]", '"text"'])
def test_a_bad_record_is_set_aside_and_recomputed(tmp_path, content):
    p = G.GridPoint(NAME, overrides=dict(TINY, epochs=1))
    path = p.out_dir(tmp_path) / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.warns(RuntimeWarning, match="set aside as record.json.corrupt"):
        res = R.run_point(p, tmp_path, executor="inline")
    assert (res["status"], res["action"]) == ("completed", "ran")
    assert (path.parent / "record.json.corrupt").read_text() == content
    assert load_record(path)["status"] == "completed"


def test_load_record_names_the_file_and_the_problem(tmp_path):
    for content, problem in [("", "empty file"), ("{", "not valid JSON"), ("[]", "JSON list, not a run record"),
                             ('{"schema": "other"}', "not an adapt run record")]:
        path = tmp_path / "record.json"
        path.write_text(content)
        with pytest.raises(RecordError) as err:
            load_record(path)
        assert str(path) in str(err.value) and problem in str(err.value)
    with pytest.warns(RuntimeWarning, match="skipping .*record.json"):
        assert load_records(tmp_path) == []


def test_the_whole_failure_message_is_recorded(tmp_path, monkeypatch):
    from adapt.data.base import DatasetNotAvailable

    message = "CIFAR-10 is not available: no network.\n  Missing from /x: data_batch_1\nor point $ADAPT_DATA at it"

    def offline(*args, **kwargs):
        raise DatasetNotAvailable(message)

    monkeypatch.setattr(adapt.train, "run", offline)
    p = G.GridPoint(NAME, overrides=TINY)
    res = R.run_point(p, tmp_path, executor="inline")
    assert res["status"] == "failed" and message in res["message"]
    assert message in load_record(p.out_dir(tmp_path) / "record.json")["message"]


# ----------------------------------------------------------------------------- claims
HOLD = textwrap.dedent("""
    import sys, time
    from adapt.experiments import claims
    with claims.claim(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_point_claimed_by_a_live_process_is_skipped_and_freed_when_it_is_killed(tmp_path):
    p = G.GridPoint(NAME, overrides=dict(TINY, epochs=1))
    out = p.out_dir(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        info = claims.holder(out)
        assert info["pid"] == holder.pid
        res = R.run_point(p, tmp_path, executor="inline")
        assert (res["status"], res["action"]) == ("claimed", "skipped") and str(holder.pid) in res["message"]
        assert not (out / "record.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert claims.holder(out) is None  # a dead process holds nothing
    assert R.run_point(p, tmp_path, executor="inline")["status"] == "completed"


# ----------------------------------------------------------------------------- the README's commands
def _readme_commands(prefix):
    import re
    import shlex

    # the README and the docs it links to; placeholders (`adapt run ... --set`, `<profile>`, `NAME`) are prose
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    inline = re.findall(r"`([^`\n]+)`", text)
    lines = [l.split("#")[0].strip() for b in blocks for l in b.splitlines()] + [l.strip() for l in inline]
    return [shlex.split(l)[len(prefix.split()):] for l in lines
            if l.startswith(prefix + " ") and "..." not in l and "<" not in l and not re.search(r"\b[A-Z]{3,}\b", l)]


def test_every_grid_command_in_the_readme_selects_points(capsys):
    commands = _readme_commands("python -m adapt grid")
    assert len(commands) >= 3
    for argv in commands:
        argv = [a for a in argv if a != "--list"] + ["--list"]
        assert grid_main(argv) == 0, argv
        assert not capsys.readouterr().out.endswith("\n0 point(s)\n"), argv


def test_every_adapt_run_command_in_the_readme_builds_its_config():
    from adapt.cli import build_parser

    commands = _readme_commands("adapt run")
    assert commands
    for argv in commands:
        args = build_parser().parse_args(["run"] + argv)
        G.GridPoint(args.config, args.variant, args.seed, args.fold, parse_sets(args.set or [], args.config)).config()


# ----------------------------------------------------------------------------- shards, status, workers
def test_shards_partition_the_grid_deterministically():
    pts = G.grid("paper")
    shards = [G.shard(pts, f"{k}/8") for k in range(1, 9)]
    ids = [p.run_id for s in shards for p in s]
    assert sorted(ids) == sorted(p.run_id for p in pts) and len(set(ids)) == len(pts)
    assert [p.run_id for p in G.shard(pts, "3/8")] == [p.run_id for p in pts[2::8]]
    for bad in ("0/8", "9/8", "3", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            G.shard(pts, bad)


def test_status_reads_the_results_folder(tmp_path, capsys):
    pts = [G.GridPoint(NAME, seed=s, overrides=TINY) for s in range(5)]
    atomic_write_json(pts[0].out_dir(tmp_path) / "record.json", dict(grid_record(pts[0], epochs=2)))
    running = dict(grid_record(pts[1], epochs=1), status="running")
    atomic_write_json(pts[1].out_dir(tmp_path) / "record.json", running)
    failed = dict(grid_record(pts[2], epochs=0), status="failed", message="DatasetNotAvailable: no\nmore")
    atomic_write_json(pts[2].out_dir(tmp_path) / "record.json", failed)
    pts[3].out_dir(tmp_path).mkdir(parents=True)
    (pts[3].out_dir(tmp_path) / "record.json").write_text("{")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(pts[1].out_dir(tmp_path))], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        frame = R.status_frame(pts, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert list(frame["state"]) == ["completed", "claimed", "failed", "corrupt", "queued"]
    assert frame.loc[1, "epoch"] == 1 and frame.loc[1, "epochs"] == 2 and str(holder.pid) in frame.loc[1, "holder"]
    assert frame.loc[2, "message"] == "DatasetNotAvailable: no"
    assert R.status_frame(pts[1:2], tmp_path).loc[0, "state"] == "interrupted"  # its holder is dead


def test_devices_run_one_worker_each_and_train_every_point_once(tmp_path, capsys):
    """Two real grid processes on one results folder: every point is trained exactly once."""
    argv = ["smoke", "--match", "float32*alexnet_cifar-*", "--executor", "inline", "--results", str(tmp_path),
            "--set", "epochs=1", "subset=200", "batch_size=64", "--devices", "cpu,cpu"]
    assert grid_main(argv) == 0
    out = capsys.readouterr().out
    ids = [p.run_id for p in G.select(G.grid("smoke"), match="float32*alexnet_cifar-*")]
    assert len(ids) == 4
    ran = [l for l in out.splitlines() if l.startswith("[cpu#") and " ran " in l]
    assert len(ran) == 4 and {l.split()[2] for l in ran} == {i + "-" + G.overrides_tag(
        {"epochs": 1, "subset": 200, "batch_size": 64}) for i in ids}
    assert "[cpu#0]" in out and "[cpu#1]" in out
    assert out.rstrip().splitlines()[-1] == "4 point(s): completed 4"


def test_the_executed_training_notebooks_hold_text_progress_not_frozen_widgets():
    executed = sorted((ROOT / "results").glob("*/*/10-train.ipynb"))
    assert executed, "no executed training notebooks under results/"
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), path
        text = "".join(o.get("text", "") for o in outputs)
        assert "] start:" in text and "] epoch 1/" in text, path
        assert str(ROOT) not in path.read_text(), f"{path}: a machine-specific path (outputs or papermill metadata)"
