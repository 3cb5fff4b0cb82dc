"""adapt.experiments.compare: two run records, where they first differ, and the command's exit status."""
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapt.cli import compare_main as main
from adapt.experiments.compare import compare_records

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "results" / "smoke"
ADAPT_RUN = "adapt-alexnet_cifar-digits-reference-s0-f0"
MUPPET_RUN = "muppet-alexnet_cifar-digits-reference-s0-f0"
FLOAT_RUN = "float32-alexnet_cifar-digits-reference-s0-f0"


def committed(run_id: str) -> dict:
    return json.loads((SMOKE / run_id / "record.json").read_text())


@pytest.fixture
def record():
    return committed(ADAPT_RUN)


@pytest.fixture
def pair(tmp_path):
    """A committed record copied into tmp_path (its run folder) and a path for a variant."""
    folder = tmp_path / ADAPT_RUN
    folder.mkdir()
    shutil.copy(SMOKE / ADAPT_RUN / "record.json", folder / "record.json")
    return folder, tmp_path / "variant.json"


def write(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record))
    return path


# ----------------------------------------------------------------------------- the pure function
def test_identical_copies(record):
    c = compare_records(record, copy.deepcopy(record))
    assert c.identical and c.results_identical
    assert c.first_epoch is None and c.first_trace is None and not c.config and not c.other and not c.environment
    assert "IDENTICAL" in c.format()


def test_times_timestamps_and_environment_are_not_compared(record):
    b = copy.deepcopy(record)
    b["wall_time_s"] += 100.0
    b["started"], b["finished"] = "2030-01-01T00:00:00+00:00", "2030-01-01T01:00:00+00:00"
    for e in b["epochs"]:
        e["time_s"] *= 3
    b["environment"]["cpu_capability"] = "AVX2"
    b["environment"]["threads"] = 16
    c = compare_records(record, b)
    assert c.identical
    assert [k for k, _, _ in c.environment] == ["cpu_capability", "threads"]
    assert "cpu_capability" in c.format() and "threads" in c.format()


def test_first_differing_epoch_and_metric(record):
    b = copy.deepcopy(record)
    b["epochs"][3]["test_acc"] += 0.01
    b["epochs"][5]["train_loss"] += 1.0
    c = compare_records(record, b)
    assert not c.identical
    d = c.first_epoch
    assert (d.epoch, d.metric) == (3, "test_acc")
    assert (d.a, d.b) == (record["epochs"][3]["test_acc"], b["epochs"][3]["test_acc"])
    assert d.abs_diff == pytest.approx(0.01) and d.rel_diff == pytest.approx(0.01 / b["epochs"][3]["test_acc"])
    assert c.first_trace is None and not c.config
    assert "epoch 3, test_acc" in c.format()


def test_first_metric_in_record_order_and_the_others_listed(record):
    b = copy.deepcopy(record)
    b["epochs"][2]["test_acc"] += 0.1
    b["epochs"][2]["train_loss"] += 0.1
    d = compare_records(record, b).first_epoch
    assert (d.epoch, d.metric, d.others) == (2, "train_loss", ["test_acc"])


def test_final_epoch_summary(record):
    b = copy.deepcopy(record)
    b["epochs"][-1]["test_acc"] = 0.5
    b["final"]["final_test_acc"] = 0.5
    c = compare_records(record, b)
    assert c.final_epoch == [("test_acc", record["epochs"][-1]["test_acc"], 0.5)]
    assert ("final.final_test_acc", record["final"]["final_test_acc"], 0.5) in c.other
    assert c.first_epoch.epoch == len(record["epochs"]) - 1


def test_tolerance(record):
    b = copy.deepcopy(record)
    b["epochs"][3]["test_acc"] += 1e-9
    assert not compare_records(record, b).identical
    assert compare_records(record, b, atol=1e-6).identical
    assert compare_records(record, b, rtol=1e-6).identical
    assert not compare_records(record, b, atol=1e-12).identical
    with pytest.raises(ValueError):
        compare_records(record, b, atol=-1)


def test_tensor_trace_entry_names_series_step_and_tensor(record):
    b = copy.deepcopy(record)
    tt = b["traces"]["tensors"]
    i, j = 20, 3
    tt["sparsity"][i][j] += 1e-3
    c = compare_records(record, b)
    t = c.first_trace
    assert t.key == "tensors.sparsity" and t.index == i and t.tensor_index == j
    assert t.tensor == tt["names"][j]
    assert t.step == tt["step"][i] and t.previous_step == tt["step"][i - 1] and t.epoch == tt["epoch"][i]
    assert t.path == f"tensors.sparsity[{i}][{j}]"
    assert c.first_epoch is None  # only the trace changed
    assert f"step {tt['step'][i]}" in c.format() and tt["names"][j] in c.format()


def test_earliest_trace_difference_wins(record):
    b = copy.deepcopy(record)
    tt, switches = b["traces"]["tensors"], b["traces"]["switches"]
    late = max(range(len(tt["step"])), key=lambda i: tt["step"][i])
    tt["word_length"][late][0] += 1
    k = next(k for k, e in enumerate(switches) if e["step"] < tt["step"][late])
    switches[k]["gd"] += 1.0
    c = compare_records(record, b)
    assert c.first_trace.key == "switches" and c.first_trace.index == k
    assert c.first_trace.step == switches[k]["step"] and c.first_trace.tensor == switches[k]["tensor"]
    assert c.first_trace.path == f"switches[{k}].gd"
    assert {t.key for t in c.traces} == {"switches", "tensors.word_length"}


def test_missing_switch_event(record):
    b = copy.deepcopy(record)
    del b["traces"]["switches"][10:]
    t = compare_records(record, b).first_trace
    assert t.key == "switches" and t.index == 10 and t.b == "(not recorded)"
    assert t.step == record["traces"]["switches"][10]["step"]


def test_muppet_trace_is_indexed_by_epoch():
    a = committed(MUPPET_RUN)
    b = copy.deepcopy(a)
    b["traces"]["muppet"]["gd_ratio"][5] = 9.0
    t = compare_records(a, b).first_trace
    assert (t.key, t.index, t.epoch, t.step) == ("muppet.gd_ratio", 5, a["traces"]["muppet"]["epoch"][5], None)


def test_config_differences(record):
    b = copy.deepcopy(record)
    b["config"]["lr"] = 0.1
    b["config"]["policy"]["min_lookback"] = 7
    c = compare_records(record, b)
    assert c.config == [("lr", record["config"]["lr"], 0.1),
                        ("policy.min_lookback", record["config"]["policy"]["min_lookback"], 7)]
    assert not c.identical and c.results_identical
    assert "lr: 0.005 vs 0.1" in c.format()


def test_fewer_epochs(record):
    b = copy.deepcopy(record)
    del b["epochs"][-2:]
    c = compare_records(record, b)
    assert c.n_epochs == (len(record["epochs"]), len(record["epochs"]) - 2)
    assert not c.identical


def test_float32_record_without_traces_and_older_environment():
    a = committed(FLOAT_RUN)
    for key in ("cpu_model", "cpu_capability"):  # a record written before these were stored
        a["environment"].pop(key, None)
    b = copy.deepcopy(a)
    b["environment"].update(cpu_model="Some CPU", cpu_capability="AVX512")
    c = compare_records(a, b)
    assert c.identical and c.first_trace is None
    assert "not recorded in a" in c.format()


def test_to_dict_is_json(record):
    b = copy.deepcopy(record)
    b["epochs"][1]["val_acc"] = 0.0
    d = compare_records(record, b).to_dict()
    assert json.loads(json.dumps(d))["first_epoch"]["metric"] == "val_acc" and d["identical"] is False


# ----------------------------------------------------------------------------- the command
def test_cli_identical_copy_exits_0(pair, capsys):
    folder, variant = pair
    shutil.copy(folder / "record.json", variant)
    assert main([str(folder), str(variant)]) == 0
    assert "IDENTICAL" in capsys.readouterr().out


def test_cli_changed_epoch_exits_1(pair, capsys):
    folder, variant = pair
    rec = json.loads((folder / "record.json").read_text())
    rec["epochs"][3]["test_acc"] += 0.01
    assert main([str(folder / "record.json"), str(write(variant, rec))]) == 1
    out = capsys.readouterr().out
    assert "first differing epoch: epoch 3, test_acc" in out
    assert main([str(folder), str(variant), "--tolerance", "0.1"]) == 0
    assert main([str(folder), str(variant), "--rtol", "0.5"]) == 0


def test_cli_changed_trace_config_and_environment(pair, capsys):
    folder, variant = pair
    rec = json.loads((folder / "record.json").read_text())
    rec["traces"]["tensors"]["word_length"][12][4] += 1
    rec["config"]["batch_size"] = 64
    rec["environment"]["cpu_capability"] = "DEFAULT"
    rec["environment"]["torch"] = "0.0"
    assert main([str(folder), str(write(variant, rec))]) == 1
    out = capsys.readouterr().out
    step = rec["traces"]["tensors"]["step"][12]
    name = rec["traces"]["tensors"]["names"][4]
    assert f"first differing trace entry: tensors.word_length[12][4], step {step}" in out and name in out
    assert "batch_size: 32 vs 64" in out
    assert "cpu_capability" in out and "torch:" in out


def test_cli_json(pair, capsys):
    folder, variant = pair
    rec = json.loads((folder / "record.json").read_text())
    rec["epochs"][0]["lr"] = 1.0
    assert main([str(folder), str(write(variant, rec)), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["first_epoch"]["epoch"] == 0


def test_cli_missing_file_exits_2(pair, capsys):
    folder, _ = pair
    missing = folder.parent / "nowhere" / "record.json"
    assert main([str(folder), str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    empty = folder.parent / "empty_run"
    empty.mkdir()
    assert main([str(empty), str(folder)]) == 2
    assert str(empty / "record.json") in capsys.readouterr().err


def test_cli_unreadable_or_foreign_file_exits_2(pair, capsys):
    folder, variant = pair
    variant.write_text("{ not json")
    assert main([str(folder), str(variant)]) == 2
    assert str(variant) in capsys.readouterr().err
    variant.write_text(json.dumps({"schema": "something/else"}))
    assert main([str(folder), str(variant)]) == 2
    assert str(variant) in capsys.readouterr().err


def test_cli_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["only-one"])
    assert exc.value.code == 2


def test_python_dash_m(pair):
    folder, variant = pair
    shutil.copy(folder / "record.json", variant)
    done = subprocess.run([sys.executable, "-m", "adapt", "compare", str(folder), str(variant)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "IDENTICAL" in done.stdout
