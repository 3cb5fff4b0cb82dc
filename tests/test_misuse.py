"""Nothing lost, whatever the user does (issue 23): forced reruns, late validation, backup copies in the
results, custom runs, interrupts, rebuilt records, read-only folders.

Each test reproduces what a user (or a hostile tester) did and checks what is left on disk and what was
said.  Training is faked where the failure comes before training; real tiny runs (digits, 200 images,
batch 64) where the files a run leaves matter.
"""

import pytest

import adapt.train
from adapt.cli import grid_main, main as cli_main, parse_sets
from adapt.experiments import grid as G
from adapt.experiments import runner as R
from adapt.records import SCHEMA, atomic_write_json, load_record

NAME = "smoke/float32/alexnet_cifar/digits"
TINY = {"batch_size": 64, "epochs": 2, "subset": 200}


def finished_record(point, acc=0.8, epochs=2):
    """A completed record of ``point`` (as a finished grid run leaves it)."""
    cfg = point.config()
    return {"schema": SCHEMA, "name": cfg.name, "run_id": point.run_id, "overrides": point.override_dict,
            "status": "completed", "config": cfg.to_dict(), "environment": {},
            "epochs": [{"epoch": e, "test_acc": acc} for e in range(epochs)], "traces": {},
            "final": {"epochs_run": epochs, "final_test_acc": acc}, "policy": {}, "wall_time_s": 1.0,
            "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00", "message": ""}


def put_finished(point, root, **kw) -> tuple:
    path = point.out_dir(root) / "record.json"
    atomic_write_json(path, finished_record(point, **kw))
    return path, path.read_bytes()


# ----------------------------------------------------------------------------- 1. --force
def test_a_forced_run_that_fails_before_its_first_epoch_keeps_the_finished_record(tmp_path, monkeypatch):
    point = G.GridPoint(NAME, overrides=TINY)
    path, before = put_finished(point, tmp_path)

    def boom(self, epoch):
        raise RuntimeError("out of memory in epoch 0")

    monkeypatch.setattr(adapt.train.Training, "train_epoch", boom)
    with pytest.raises(RuntimeError, match="out of memory"):
        R.train_point(NAME, results_root=tmp_path, overrides=TINY, force=True, progress=False, device="cpu")
    assert path.read_bytes() == before
    row = R.run_point(point, tmp_path, executor="inline", force=True)
    assert row["status"] == "failed" and "out of memory" in row["message"] and "is kept" in row["message"]
    assert path.read_bytes() == before  # the grid's forced rerun too
    assert load_record(path)["status"] == "completed"


def test_forced_grid_checks_device_and_data_once_before_any_point(tmp_path, monkeypatch, capsys):
    # quick's CIFAR-10 points with a data root that is a file: the data set cannot be had (offline, no download)
    bad_root = tmp_path / "not-a-folder"
    bad_root.write_text("")
    monkeypatch.setenv("ADAPT_DATA", str(bad_root))
    monkeypatch.setenv("ADAPT_DEVICE", "cpu")  # grid_main sets it from --device: restored after the test
    ran = []
    monkeypatch.setattr(adapt.train, "run", lambda *a, **kw: ran.append(a))
    pts = [p for p in G.grid("quick") if p.dataset == "cifar10" and p.model == "alexnet_cifar"]
    kept = {p.run_id: put_finished(p, tmp_path) for p in pts}
    args = ["quick", "--executor", "inline", "--results", str(tmp_path), "--match", "*-alexnet_cifar-cifar10-*"]
    assert grid_main(args + ["--force"]) == 2
    err = capsys.readouterr().err
    assert "'cifar10'" in err and "no point was run and no record was changed" in err
    assert not ran and all(path.read_bytes() == data for path, data in kept.values())
    # without --force every point is finished: nothing needs the data, nothing fails
    assert grid_main(args) == 0 and not ran

    # a device that is not there (no CUDA here): refused once, before the loop
    monkeypatch.setattr(adapt.train.torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ADAPT_DATA", str(tmp_path / "data"))
    assert grid_main(args + ["--force", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not ran and all(path.read_bytes() == data for path, data in kept.values())


# ----------------------------------------------------------------------------- 5. validation
ADAPT = "smoke/adapt/alexnet_cifar/digits"


@pytest.mark.parametrize("argv, says", [
    (["--set", "policy.min_lookback=1000"], "min_lookback (1000) must be <= max_lookback (100)"),
    (["--set", "policy.min_lookback=abc"], "min_lookback"),
    (["--set", "policy.push_up_strategy=bogus"], "push_up_strategy must be one of ('min', 'mean', 'max'), got 'bogus'"),
    (["--seed", str(2**32)], "'seed' must be an integer in [0, 4294967295]"),
    (["--set", "lr=abc"], "'lr' must be a finite number > 0, got 'abc'"),
])
def test_adapt_run_and_adapt_grid_reject_a_bad_value_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                                                  argv, says):
    monkeypatch.setattr(adapt.train, "run", lambda *a, **kw: pytest.fail("trained with a bad value"))
    assert cli_main(["run", ADAPT, "--results", str(tmp_path), *argv]) == 2
    assert says in capsys.readouterr().err
    sets = [a for a in argv if a != "--set"] if "--set" in argv else None
    if sets:  # the same values in adapt grid --set: refused before listing, running or writing
        for extra in (["--list"], ["--executor", "inline"]):
            with pytest.raises(SystemExit) as stop:
                grid_main(["smoke", "--results", str(tmp_path), "--match", "adapt-*", "--set", *sets, *extra])
            assert stop.value.code == 2 and says in capsys.readouterr().err
        with pytest.raises(ValueError, match="must be"):  # and from Python, before the first point
            R.run_grid(points=[G.GridPoint(ADAPT, overrides=parse_sets(sets, ADAPT))], results_root=tmp_path,
                       executor="inline")
    assert not any(tmp_path.iterdir())  # no run folder, no failure record


def test_a_grid_whose_points_all_failed_exits_non_zero(tmp_path, monkeypatch, capsys):
    def boom(config, **kw):
        raise RuntimeError(f"boom (seed {config.seed})")

    monkeypatch.setattr(adapt.train, "run", boom)
    args = ["smoke", "--executor", "inline", "--results", str(tmp_path), "--match", "*muppet-resnet20-*"]
    assert grid_main(args) == 1
    assert "every point failed (2)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 2. copies and symlinks
def test_the_tables_read_each_run_once_and_name_the_copies_and_symlinks(tmp_path):
    import shutil

    from adapt.analysis.tables import accuracy_table, load_profile

    smoke = tmp_path / "smoke"
    pts = [p for p in G.grid("smoke") if p.method == "float32" and p.model == "alexnet_cifar"]  # seeds 0 and 1
    for p in pts:
        put_finished(p, tmp_path, acc=0.9 + p.seed / 100)
    s0 = pts[0].out_dir(tmp_path)
    shutil.copytree(s0, smoke / (s0.name + ".bak"))                      # a backup copy of a run folder
    shutil.copytree(s0, smoke / "old" / s0.name)                         # an old copy inside the results
    (smoke / "link-to-s0").symlink_to(s0, target_is_directory=True)      # a symlinked folder
    (smoke / "elsewhere").mkdir()
    (smoke / "elsewhere" / "record.json").symlink_to(s0 / "record.json")  # a symlinked record

    data = load_profile("smoke", tmp_path)
    assert sorted(r["config"]["seed"] for r in data.records) == [0, 1] and not data.others
    row = accuracy_table(data.records).iloc[0]
    assert row["runs"] == 2 and row["acc_mean_pct"] == pytest.approx(90.5)
    text = data.summary()
    assert "2 grid records" in text and "4 other record files not read" in text
    for name in (s0.name + ".bak", "old/" + s0.name, "link-to-s0", "elsewhere/record.json"):
        assert name in text, name


# ----------------------------------------------------------------------------- 3. custom runs beside the grid
def test_the_readme_example_custom_run_changes_nothing_the_readme_tests_check(tmp_path):
    """`adapt run smoke/adapt/alexnet_cifar/digits --set lr=0.001 epochs=2 --seed 3` writes into results/smoke/:
    the README's block and tests/test_readme.py's checks, run on a copy of the results with it, see what they
    see without it."""
    import importlib.util
    import shutil
    from pathlib import Path

    from adapt.analysis.tables import README_BEGIN, README_END, readme_block

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("readme_checks", root / "tests" / "test_readme.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    shutil.copytree(root / "results" / "smoke", tmp_path / "smoke", ignore=shutil.ignore_patterns("tables"))
    custom = G.GridPoint(ADAPT, seed=3, overrides={"lr": 0.001, "epochs": 2})
    put_finished(custom, tmp_path, acc=0.1)
    assert (tmp_path / "smoke" / custom.run_id / "record.json").exists()

    records = checks.grid_records(tmp_path)
    checks.assert_one_record_per_point(records)
    readme = (root / "README.md").read_text()
    start, end = readme.index(README_BEGIN) + len(README_BEGIN), readme.index(README_END)
    assert readme[start:end].strip() == readme_block(records).strip()
    # what tools/update_readme.py hands the block: every valid record of results/smoke, the custom run too
    from adapt.analysis.tables import load_profile
    data = load_profile("smoke", tmp_path)
    assert [r["run_id"] for r in data.others] == [custom.run_id]
    assert readme_block(data.records + data.others).strip() == readme[start:end].strip()


# ----------------------------------------------------------------------------- 7. Ctrl-C and notebook parameters
def ctrl_c_at_epoch(monkeypatch, at: int):
    """Training raises KeyboardInterrupt (Ctrl-C) when epoch ``at`` starts."""
    real = adapt.train.Training.train_epoch

    def train_epoch(self, epoch):
        if epoch == at:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(adapt.train.Training, "train_epoch", train_epoch)


def test_ctrl_c_prints_one_line_saying_what_was_kept_and_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    point = G.GridPoint(NAME, overrides=TINY)
    argv = ["run", NAME, "--set", "epochs=2", "subset=200", "batch_size=64", "--results", str(tmp_path),
            "--device", "cpu"]
    ctrl_c_at_epoch(monkeypatch, 1)
    assert cli_main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("adapt run: interrupted: " + point.run_id + " keeps 1 of 2 epoch(s)")
    assert err[0].endswith("run the same command again to resume") and "checkpoint.pt" in err[0]
    monkeypatch.undo()
    assert cli_main(argv) == 0
    record = load_record(point.out_dir(tmp_path) / "record.json")
    assert record["status"] == "completed" and len(record["epochs"]) == 2

    # the grid: the point in progress, and how many were done before it
    pts = [G.GridPoint(NAME, seed=s, overrides=TINY) for s in (0, 1)]
    ctrl_c_at_epoch(monkeypatch, 0)
    with pytest.raises(R.Interrupted, match=rf"interrupted: {pts[1].run_id} had not finished an epoch .*"
                                            r"1 of 2 point\(s\) done before it; run the same command again"):
        R.run_grid(points=pts, results_root=tmp_path, executor="inline", verbose=False)


def test_the_training_notebook_refuses_unknown_parameters(tmp_path):
    params = lambda **kw: dict({k: v for k, v in G.GridPoint(NAME).params(str(tmp_path)).items()}, **kw)
    assert set(G.GridPoint(NAME, overrides=TINY).params()) <= set(R.NOTEBOOK_PARAMETERS)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) 'epochs' of the training notebook: it takes "
                                         r"config_name, variant, seed, fold, results_root, force, overrides, device"):
        R.notebook_parameters(params(epochs=1))
    assert R.notebook_parameters(params(overrides='{"epochs": 1}'))["overrides"] == {"epochs": 1}
    with pytest.raises(ValueError, match=r"overrides=\['epochs', 1\] must be a dict"):
        R.notebook_parameters(params(overrides=["epochs", 1]))
    with pytest.raises(ValueError, match="is not JSON"):
        R.notebook_parameters(params(overrides="epochs=1"))

    # the notebook itself, as papermill runs it: stops before training, nothing written
    papermill = pytest.importorskip("papermill")
    from pathlib import Path
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "10-train.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter.*'epochs'"):
        papermill.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False,
                                   parameters={"results_root": str(tmp_path / "res"), "epochs": 1},
                                   cwd=str(nb.parent))
    assert not (tmp_path / "res").exists()


# ----------------------------------------------------------------------------- 4. rebuilt records, checkpoints
def no_training(monkeypatch):
    monkeypatch.setattr(adapt.train.Training, "train_epoch",
                        lambda self, epoch: pytest.fail(f"trained epoch {epoch}: the record should be written back"))


def test_a_finished_run_whose_record_is_damaged_or_lost_is_written_back_without_training(tmp_path, monkeypatch):
    point = G.GridPoint(NAME, overrides=TINY)
    out = point.out_dir(tmp_path)
    first = R.train_point(NAME, results_root=tmp_path, overrides=TINY, progress=False, device="cpu")
    assert first["status"] == "completed" and (out / "journal.jsonl").exists()
    whole = load_record(out / "record.json")
    no_training(monkeypatch)

    text = (out / "record.json").read_text()
    (out / "record.json").write_text(text[: len(text) // 2])  # truncated
    with pytest.warns(RuntimeWarning, match=r"record.json.corrupt; journal.jsonl holds the whole finished run"):
        row = R.run_point(point, tmp_path, executor="inline")
    assert row["status"] == "completed"
    assert load_record(out / "record.json") == whole
    assert (out / "checkpoint.pt").exists() and not (out / "checkpoint.pt.corrupt").exists()

    (out / "record.json").unlink()  # lost
    assert R.point_status(point, tmp_path)["state"] == "completed"
    assert R.run_point(point, tmp_path, executor="inline")["status"] == "completed"
    assert load_record(out / "record.json") == whole


def test_a_loadable_checkpoint_is_never_called_corrupt_and_the_message_says_what_is_left(tmp_path, monkeypatch):
    point = G.GridPoint(NAME, overrides=TINY)
    out = point.out_dir(tmp_path)
    R.train_point(NAME, results_root=tmp_path, overrides=TINY, progress=False, device="cpu")
    (out / "journal.jsonl").unlink()  # as a finished run left it before its journal was kept
    (out / "record.json").write_text('{"schema": "adapt.run/1", "na')
    no_training(monkeypatch)
    with pytest.warns(RuntimeWarning, match="record.json.corrupt"):
        with pytest.raises(adapt.train.CheckpointError) as err:
            R.train_point(NAME, results_root=tmp_path, overrides=TINY, progress=False, device="cpu")
    message = str(err.value)
    assert "loads, but journal.jsonl" in message and "kept as checkpoint.pt.previous" in message
    assert "No record is left (the unreadable one is record.json.corrupt)" in message
    assert "corrupt" not in message.replace("record.json.corrupt", "")
    assert (out / "checkpoint.pt.previous").exists() and not list(out.glob("checkpoint.pt.corrupt*"))


def test_a_journal_deleted_while_the_run_trains_loses_no_epoch(tmp_path, monkeypatch):
    point = G.GridPoint(NAME, overrides=dict(TINY, epochs=3))
    out = point.out_dir(tmp_path)
    real = adapt.train.Training.save

    def save(self, epoch):
        if epoch == 1:
            (out / "journal.jsonl").unlink()
        return real(self, epoch)

    monkeypatch.setattr(adapt.train.Training, "save", save)
    with pytest.warns(RuntimeWarning, match="deleted or changed while the run trained .*nothing is lost"):
        record = R.train_point(NAME, results_root=tmp_path, overrides=point.override_dict, progress=False,
                               device="cpu")
    assert record["status"] == "completed" and len(record["epochs"]) == 3 and record["final"]["epochs_run"] == 3
    on_disk = load_record(out / "record.json")
    assert len(on_disk["epochs"]) == 3 and on_disk["final"]["epochs_run"] == 3
    (out / "record.json").unlink()  # and the journal written again holds the whole run
    monkeypatch.undo()
    no_training(monkeypatch)
    assert R.train_point(NAME, results_root=tmp_path, overrides=point.override_dict, progress=False,
                         device="cpu") == on_disk


# ----------------------------------------------------------------------------- 6. read-only results
@pytest.fixture
def read_only():
    """Make a folder read-only for this process: permissions for a user, a read-only bind mount for root
    (whom permissions do not stop); restored afterwards."""
    import contextlib
    import os
    import stat
    import subprocess

    undo = []

    def make(folder):
        folder = str(folder)
        if os.geteuid() != 0:
            for dirpath, _, _ in os.walk(folder):
                mode = os.stat(dirpath).st_mode
                os.chmod(dirpath, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
                undo.append(lambda d=dirpath, m=mode: os.chmod(d, m))
        else:
            try:
                subprocess.run(["mount", "--bind", folder, folder], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                pytest.skip(f"running as root and cannot bind-mount read-only: {exc}")
            undo.append(lambda: subprocess.run(["umount", folder], check=True))
            subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True, capture_output=True)

    yield make
    for step in reversed(undo):
        with contextlib.suppress(Exception):
            step()


def test_read_only_results_are_read_and_analysed_and_writing_says_in_one_line_what_is_read_only(
        tmp_path, monkeypatch, capsys, read_only):
    from adapt.analysis.plots import save_figure
    from adapt.analysis.tables import accuracy_table, load_profile, save_tables
    from matplotlib.figure import Figure

    done = G.GridPoint(NAME)
    put_finished(done, tmp_path)
    (done.out_dir(tmp_path) / ".claim.lock").write_text("")  # as a finished run leaves it
    monkeypatch.setattr(adapt.train, "run", lambda *a, **kw: pytest.fail("trained in a read-only folder"))
    read_only(tmp_path)
    with pytest.raises(OSError):
        (tmp_path / "probe").write_text("")

    # adapt run of the finished run: its record, no claim needed
    assert cli_main(["run", NAME, "--results", str(tmp_path)]) == 0
    assert "already completed" in capsys.readouterr().out
    # a run that would have to be written: one line naming the folder, exit 1
    assert cli_main(["run", NAME, "--seed", "1", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is read-only" in err[0] and "--results DIR" in err[0], err
    # the grid: finished points skipped, --status read, points to train refused before the loop in one line
    only = ["smoke", "--executor", "inline", "--results", str(tmp_path)]
    assert grid_main(only + ["--only", done.run_id]) == 0
    assert grid_main(["smoke", "--status", "--results", str(tmp_path), "--only", done.run_id]) == 0
    assert "completed" in capsys.readouterr().out
    assert grid_main(only + ["--match", "float32-alexnet_cifar-*"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is read-only" in err[0] and "no point was run" in err[0], err

    # the analysis: read, computed, and the copies on disk skipped with one line each
    data = load_profile("smoke", tmp_path)
    assert [r["config"]["name"] for r in data.records] == [NAME]
    acc = accuracy_table(data.records)
    assert save_tables({"accuracy": acc}, tmp_path / "smoke" / "tables") == []
    assert save_figure(Figure(), "accuracy", tmp_path / "figures") == []
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith("tables not saved: ") and out[1].startswith("figure not saved: ")
    assert all("read-only" in line for line in out)


# ----------------------------------------------------------------------------- 8. smaller gaps
def test_custom_runs_show_in_status_and_finished_checkpoints_can_be_pruned(tmp_path, capsys):
    custom = G.GridPoint(NAME, overrides=TINY)
    R.train_point(NAME, results_root=tmp_path, overrides=TINY, progress=False, device="cpu")
    ckpt = custom.out_dir(tmp_path) / "checkpoint.pt"
    assert ckpt.exists()
    assert grid_main(["smoke", "--status", "--results", str(tmp_path), "--match", "float32-alexnet_cifar-*"]) == 0
    out = capsys.readouterr().out
    assert custom.run_id in out and "completed" in out.split(custom.run_id)[1].splitlines()[0]
    assert out.strip().splitlines()[-1] == "3 point(s): queued 2, completed 1"

    unfinished = G.GridPoint(NAME, seed=1, overrides=TINY)
    adapt.train.run(unfinished.config(), out_dir=unfinished.out_dir(tmp_path), epoch_limit=1, device="cpu",
                    run_info={"run_id": unfinished.run_id, "overrides": unfinished.override_dict})
    assert grid_main(["smoke", "--prune-checkpoints", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 checkpoint(s) of finished runs removed" in out and custom.run_id in out
    assert not ckpt.exists() and (unfinished.out_dir(tmp_path) / "checkpoint.pt").exists()  # still resumable
    assert load_record(custom.out_dir(tmp_path) / "record.json")["status"] == "completed"


def test_a_nan_accuracy_in_a_completed_record_is_left_out_of_the_mean_with_a_note():
    from adapt.analysis.tables import accuracy_table

    pts = [p for p in G.grid("smoke") if p.method == "float32" and p.model == "alexnet_cifar"]
    records = [finished_record(p, acc=0.9) for p in pts]
    records[1]["final"]["final_test_acc"] = "nan"  # as load_record reads a NaN
    row = accuracy_table(records).iloc[0]
    assert row["runs"] == 2 and row["completed"] == 2 and row["acc_mean_pct"] == pytest.approx(90.0)
    assert row["accuracy"] == "90.00 (1 completed without an accuracy (NaN))"


def test_an_unloadable_checkpoint_message_does_not_repeat_torchs_unsafe_advice(tmp_path):
    import datetime

    import torch

    point = G.GridPoint(NAME, overrides=dict(TINY, epochs=3))
    out = point.out_dir(tmp_path)
    adapt.train.run(point.config(), out_dir=out, epoch_limit=1, device="cpu", run_info={"run_id": point.run_id})
    torch.save({"config": point.config().to_dict(), "when": datetime.datetime(2026, 1, 1)}, out / "checkpoint.pt")
    with pytest.raises(adapt.train.CheckpointError) as err:
        adapt.train.run(point.config(), out_dir=out, device="cpu")
    message = str(err.value)
    assert "holds a datetime.datetime object" in message and "set aside as checkpoint.pt.corrupt" in message
    assert "will likely succeed" not in message and "trusted source" not in message
    assert "do not load a file of unknown origin with weights_only=False" in message
    assert "\n" not in message
