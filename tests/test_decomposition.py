"""`adapt decomposition`: notebook 40's arms trained from the command line (adapt.experiments.decomposition)."""
from __future__ import annotations

import json

from adapt.cli import main
from adapt.experiments import decomposition as D
from adapt.records import load_record


def test_list_names_every_arm_and_skips_held_final_without_the_grid(tmp_path, capsys):
    assert main(["decomposition", "--list", "--seeds", "0", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    labels = [a.label for a in D.arms() if a.label != "held-final"]
    assert all(f"{label} " in out or out.rstrip().endswith(label) for label in labels)
    assert "held-final" not in out  # needs the grid's reference AdaPT run of seed 0, which is not there
    assert "missing" in out and "completed" not in out
    assert not (tmp_path / "decomposition").exists()  # listing writes nothing


def test_bad_input_is_rejected_before_anything_is_written(tmp_path, capsys):
    assert main(["decomposition", "--arms", "nope", "--results", str(tmp_path)]) == 2
    assert "arms ['nope'] are not arms of the decomposition; valid:" in capsys.readouterr().err
    assert main(["decomposition", "--arms", "held-final", "--seeds", "0", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "arm held-final needs the finished reference AdaPT run of seed 0" in err and "adapt grid mnist5k" in err
    assert main(["decomposition", "--seeds", "0,x", "--results", str(tmp_path)]) == 2
    assert "--seeds must be comma-separated integers such as 0,1,2, got '0,x'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_one_arm_trains_into_the_decomposition_folder_and_is_skipped_once_finished(tmp_path, capsys, monkeypatch):
    # a one-epoch arm on 300 images keeps the test short; the command and the training are the real ones
    tiny = D.Arm("logits-tiny", D.ADAPT_CONFIG, {"softmax_output": False, "epochs": 1, "subset": 300})
    monkeypatch.setattr(D, "arms", lambda: [tiny])
    argv = ["decomposition", "--arms", "logits-tiny", "--seeds", "0", "--results", str(tmp_path)]
    assert main(argv) == 0
    (arm, point), = D.decomposition_points((0,), ["logits-tiny"], grid_root=tmp_path)
    path = point.out_dir(D.decomposition_root(tmp_path)) / "record.json"
    record = load_record(path)
    assert record["status"] == "completed" and record["config"]["softmax_output"] is False
    assert record["config"]["in_place_inputs"] is True and record["config"]["variant"] == "reference"
    assert record["config"]["method"] == "adapt" and record["final"]["epochs_run"] == 1
    before = json.loads(path.read_text())["finished"]
    capsys.readouterr()
    assert main(argv) == 0  # finished: not retrained
    assert json.loads(path.read_text())["finished"] == before
    records, status = D.load_decomposition([(arm, point)], tmp_path)
    assert list(status["status"]) == ["completed"] and records[0]["arm"] == "logits-tiny"
