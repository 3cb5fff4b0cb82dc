"""The experiment grid and its runner (adapt.experiments.grid): grid sizes, skip, resume, failure isolation, papermill."""
import json
import os

import nbformat
import pytest

import adapt.train
from adapt import paths
from adapt.cli import grid_main
from adapt.experiments import grid as G
from adapt.experiments import runner as R
from adapt.experiments.configs import CONFIGS
from adapt.records import SCHEMA, atomic_write_json, load_record, load_records
from adapt.analysis.tables import accuracy_table

# A real but tiny run: digits, 200 training images, 2 epochs (a few seconds on 2 cores).
TINY = (("batch_size", 64), ("epochs", 2), ("subset", 200))


def point(seed=0, name="smoke/float32/alexnet_cifar/digits", overrides=TINY, **kw):
    return G.GridPoint(name, seed=seed, overrides=overrides, **kw)


def fake_record(config, status="completed", acc=0.5, epochs=1):
    return {"schema": SCHEMA, "name": config.name, "status": status, "config": config.to_dict(),
            "environment": {}, "epochs": [{"epoch": e, "test_acc": acc} for e in range(epochs)], "traces": {},
            "final": {"epochs_run": epochs, "final_test_acc": acc}, "policy": {}, "wall_time_s": 1.0,
            "started": "2026-01-01T00:00:00+00:00", "finished": None, "message": ""}


class FakeTrain:
    """Stands in for adapt.train.run: seeds in ``raise_before`` fail before writing anything, seeds in
    ``raise_after`` fail after writing a ``running`` record (as a crash mid-training leaves it)."""

    def __init__(self, raise_before=(), raise_after=()):
        self.raise_before, self.raise_after = set(raise_before), set(raise_after)
        self.calls = []

    def __call__(self, config, out_dir=None, resume=True, force=False, progress=False, device=None, **kw):
        self.calls.append({"seed": config.seed, "force": force, "resume": resume})
        if config.seed in self.raise_before:
            raise RuntimeError(f"boom before training (seed {config.seed})")
        if config.seed in self.raise_after:
            atomic_write_json(os.path.join(out_dir, "record.json"), fake_record(config, "running", 0.3, 2))
            raise RuntimeError(f"boom during training (seed {config.seed})")
        rec = fake_record(config, acc=0.5 + config.seed / 100)
        atomic_write_json(os.path.join(out_dir, "record.json"), rec)
        return rec


# ----------------------------------------------------------------------------- the grids
def test_grid_sizes_and_composition():
    sizes = {p: len(G.grid(p)) for p in ("smoke", "quick", "paper")}
    assert sizes == {"smoke": 15, "quick": 16, "paper": 104}
    for profile in sizes:
        pts = G.grid(profile)
        ids = [p.run_id for p in pts]
        assert len(set(ids)) == len(ids), f"{profile}: duplicate run ids"
        for p in pts:
            cfg = p.config()
            assert (cfg.variant, cfg.seed, cfg.fold, cfg.profile) == (p.variant, p.seed, p.fold, profile)
            assert p.config_name in CONFIGS and p.method in G.GRID_METHODS
    smoke = G.grid("smoke")
    by = lambda pts, **kw: [p for p in pts if all(getattr(p, k) == v for k, v in kw.items())]
    assert len(by(smoke, model="alexnet_cifar")) == 10 and len(by(smoke, model="resnet20")) == 5
    assert len(by(smoke, method="adapt", variant="corrected")) == 3  # 2 AlexNet seeds + 1 ResNet seed
    assert not by(G.grid("quick"), variant="corrected")
    paper = G.grid("paper")
    for method in ("float32", "adapt"):  # AdaPT's protocol: 10 folds of seed 0
        pts = by(paper, method=method, model="resnet20", dataset="cifar100")
        assert sorted((p.seed, p.fold) for p in pts) == [(0, f) for f in range(10)]
    for method in ("float32-muppet", "muppet"):  # MuPPET's protocol: 3 seeds, fold 0
        pts = by(paper, method=method, model="alexnet_cifar", dataset="cifar10")
        assert sorted((p.seed, p.fold) for p in pts) == [(s, 0) for s in range(3)]


def test_run_id_and_out_dir_layout(tmp_path):
    p = G.GridPoint("smoke/adapt/resnet20/digits", "reference", 0, 0)
    assert p.run_id == "adapt-resnet20-digits-reference-s0-f0"
    assert p.out_dir(tmp_path) == tmp_path / "smoke" / "adapt-resnet20-digits-reference-s0-f0"
    q = G.GridPoint("smoke/float32-muppet/resnet20/digits", "reference", 1, 0)
    assert q.run_id == "float32-muppet-resnet20-digits-reference-s1-f0" and q.config().method == "float32"
    # a relative results root is the repository's, whatever the working directory
    assert G.GridPoint("quick/adapt/alexnet_cifar/cifar10", "corrected", 2, 3).out_dir("results") == \
        paths.base_dir() / "results/quick/adapt-alexnet_cifar-cifar10-corrected-s2-f3"
    # overrides reach the config and the run id (a stable hash of them); a dict is normalized to sorted pairs
    o = G.GridPoint("smoke/adapt/resnet20/digits", overrides={"subset": 100, "epochs": 1})
    assert o.overrides == (("epochs", 1), ("subset", 100)) and o.is_custom
    assert o.run_id == p.run_id + "-" + G.overrides_tag({"epochs": 1, "subset": 100})
    assert (o.config().epochs, o.config().subset) == (1, 100)
    with pytest.raises(ValueError, match="unknown config"):
        G.GridPoint("smoke/adapt/vgg/digits")


# ----------------------------------------------------------------------------- skip and resume (real runs)
def test_interrupted_point_resumes_and_a_finished_point_is_skipped(tmp_path):
    p = point()
    out = p.out_dir(tmp_path)
    cut = adapt.train.run(p.config(), out_dir=out, epoch_limit=1, device="cpu")
    assert cut["status"] == "interrupted" and (out / "checkpoint.pt").exists()

    first = R.run_point(p, tmp_path, executor="inline")
    assert (first["status"], first["action"]) == ("completed", "ran")
    rec = load_record(out / "record.json")
    assert len(rec["epochs"]) == 2
    # continued from the checkpoint: epoch 0 is the interrupted run's, the start time is kept
    strip = lambda e: {k: v for k, v in e.items() if k != "time_s"}
    assert strip(rec["epochs"][0]) == strip(cut["epochs"][0])
    assert rec["started"] == cut["started"]

    mtime = (out / "record.json").stat().st_mtime_ns
    again = R.run_point(p, tmp_path, executor="inline")
    assert (again["status"], again["action"]) == ("completed", "skipped")
    assert (out / "record.json").stat().st_mtime_ns == mtime


# ----------------------------------------------------------------------------- failure isolation (fake training)
def test_a_failing_point_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch, capsys):
    fake = FakeTrain(raise_before={1}, raise_after={2})
    monkeypatch.setattr(adapt.train, "run", fake)
    pts = [point(s) for s in (0, 1, 2, 3)]
    frame = R.run_grid(points=pts, results_root=tmp_path, executor="inline")
    assert list(frame["status"]) == ["completed", "failed", "failed", "completed"]
    assert list(frame["action"]) == ["ran", "failed", "failed", "ran"]
    assert "boom before training (seed 1)" in frame.loc[1, "message"]
    printed = capsys.readouterr().out
    # a "starting" line and a result line per point, then the summary
    assert printed.count(": starting (") == 4 and printed.count("\n") == 9
    assert "failed" in printed and "completed 2" in printed

    # seed 1 failed before training: a minimal failure record of the same schema and config
    r1 = load_record(pts[1].out_dir(tmp_path) / "record.json")
    assert r1["status"] == "failed" and r1["epochs"] == [] and "RuntimeError: boom before" in r1["message"]
    assert r1["config"] == json.loads(json.dumps(pts[1].config().to_dict()))
    # seed 2 failed mid-training: its record keeps the epochs and is marked failed
    r2 = load_record(pts[2].out_dir(tmp_path) / "record.json")
    assert r2["status"] == "failed" and len(r2["epochs"]) == 2 and "during training" in r2["message"]

    # the tables list the failures instead of dropping them
    acc = accuracy_table(load_records(tmp_path))
    assert len(acc) == 1
    row = acc.iloc[0]
    assert (row["runs"], row["completed"], row["failed"]) == (4, 2, 2)
    assert row["acc_mean_pct"] == pytest.approx((50.0 + 53.0) / 2)
    assert row["accuracy"].endswith("(2 failed)")

    # a second pass skips the finished points and retries the failed ones (afresh: no checkpoint)
    fake2 = FakeTrain()
    monkeypatch.setattr(adapt.train, "run", fake2)
    frame2 = R.run_grid(points=pts, results_root=tmp_path, executor="inline", verbose=False)
    assert list(frame2["action"]) == ["skipped", "ran", "ran", "skipped"]
    assert list(frame2["status"]) == ["completed"] * 4
    # train.run decides to start them afresh (no checkpoint): the runner does not force them
    assert [c["seed"] for c in fake2.calls] == [1, 2] and not any(c["force"] for c in fake2.calls)


def test_stale_record_is_left_alone_unless_forced(tmp_path, monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(adapt.train, "run", fake)
    p = point()
    old = p.config().replace(epochs=5)  # the grid changed since this record was written
    path = p.out_dir(tmp_path) / "record.json"
    atomic_write_json(path, fake_record(old))
    res = R.run_point(p, tmp_path, executor="inline")
    assert (res["status"], res["action"]) == ("stale", "skipped") and "force" in res["message"]
    assert load_record(path)["config"]["epochs"] == 5 and not fake.calls
    res = R.run_point(p, tmp_path, executor="inline", force=True)
    assert (res["status"], res["action"]) == ("completed", "ran") and fake.calls[-1]["force"]
    assert load_record(path)["config"]["epochs"] == 2


def test_cli_lists_filters_and_reports(tmp_path, monkeypatch, capsys):
    assert grid_main(["smoke", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "15 point(s)" and out[0].startswith("float32-alexnet_cifar-digits-reference-s0-f0")
    fake = FakeTrain(raise_before={0})
    monkeypatch.setattr(adapt.train, "run", fake)
    args = ["smoke", "--executor", "inline", "--results", str(tmp_path), "--match", "*muppet-alexnet_cifar-*"]
    assert grid_main(args) == 0  # failures are reported, not fatal: the analysis still runs
    assert len(fake.calls) == 4  # float32-muppet-alexnet_cifar and muppet-alexnet_cifar, seeds 0 and 1
    assert "2 point(s) failed or stale" in capsys.readouterr().err
    assert grid_main(args + ["--strict"]) == 1


# ----------------------------------------------------------------------------- papermill
TRAIN_NB_CODE = """\
from adapt.experiments.grid import GridPoint, failure_record
from adapt.records import atomic_write_json
p = GridPoint(config_name, variant, seed, fold, overrides)
if seed == 1:
    raise RuntimeError("boom in the notebook")
rec = failure_record(p.config(), "")
rec.update(status="completed", final={"final_test_acc": 0.5})
atomic_write_json(p.out_dir(results_root) / "record.json", rec)
"""


def test_papermill_executor_runs_the_notebook_and_isolates_a_failure(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'config_name = "smoke/float32/alexnet_cifar/digits"\nvariant = "reference"\nseed = 0\nfold = 0\n'
        'results_root = "../results"\nforce = False\noverrides = {}')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(TRAIN_NB_CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    nbformat.write(nb, nb_dir / "10-train.ipynb")
    root = tmp_path / "results"
    pts = [point(0), point(1)]
    frame = R.run_grid(points=pts, results_root=root, executor="papermill", notebook=nb_dir / "10-train.ipynb",
                       verbose=False)
    assert list(frame["status"]) == ["completed", "failed"]
    assert "RuntimeError" in frame.loc[1, "message"] and "boom in the notebook" in frame.loc[1, "message"]
    failed = load_record(pts[1].out_dir(root) / "record.json")
    assert failed["status"] == "failed" and "boom in the notebook" in failed["message"]
    for p in pts:  # the executed copy is kept beside the record, with a relative results root
        executed = nbformat.read(p.out_dir(root) / "10-train.ipynb", as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        # a results root outside the repository is handed over as an absolute path
        assert len(injected) == 1 and f'results_root = "{root}"' in injected[0].source


def test_a_results_root_inside_the_repository_reaches_the_notebook_relative():
    assert R._notebook_results_root(paths.base_dir() / "results") == "results"
    assert R._notebook_results_root(paths.base_dir() / "results" / "x") == "results/x"
