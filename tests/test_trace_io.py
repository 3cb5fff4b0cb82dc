"""Per-epoch writes of a run: the journal (adapt.records.TraceJournal), the checkpoint without the
history, the running record without its traces, and resume from them."""
import copy
import io
import json
import math

import pytest
import torch

from adapt import records as results
from adapt.experiments.configs import get_config
from adapt.progress import ProgressPrinter
from adapt.records import JOURNAL, JournalError, TraceJournal, load_record, read_journal
from adapt.train import CheckpointError, run

# digits, 200 training images (160 after the 5-fold split), 4 optimizer steps per epoch
SMALL = dict(subset=200, test_subset=100, batch_size=40, eval_batch_size=500)


def text(obj) -> str:
    """JSON text with NaN: equal texts are equal values, NaN included (NaN != NaN as floats)."""
    return json.dumps(obj, sort_keys=True)


def results_of(record):
    """What must be equal between an interrupted-and-resumed run and an uninterrupted one."""
    strip = lambda e: {k: v for k, v in e.items() if k != "time_s"}
    return text({"status": record["status"], "epochs": [strip(e) for e in record["epochs"]],
                 "final": record["final"], "traces": record["traces"], "policy": record["policy"]})


# ----------------------------------------------------------------------------- the journal itself
def test_journal_rebuilds_every_snapshot_and_writes_only_what_is_new(tmp_path):
    path = tmp_path / JOURNAL
    journal = TraceJournal.start(path)
    snap = {"epochs": [], "traces": {}}
    expected, pointers, sizes = [], [], []

    def commit():
        sizes.append(journal.append(snap))
        expected.append(copy.deepcopy(snap))
        pointers.append(journal.pointer())

    commit()                                                      # nothing yet
    snap["traces"]["tensors"] = {"interval": 1, "names": ["a", "b"], "step": list(range(5000)),
                                 "word_length": [[8, 8]] * 5000}
    snap["epochs"].append({"epoch": 0, "loss": float("nan"), "acc": 0.5})
    commit()                                                      # a new key: written whole
    big = sizes[-1]
    for epoch in range(1, 4):                                     # growth at the end: only the new items
        snap["traces"]["tensors"]["step"].append(5000 + epoch)
        snap["traces"]["tensors"]["word_length"].append([7, epoch])
        snap["epochs"].append({"epoch": epoch, "loss": float("inf"), "acc": 0.1 * epoch})
        commit()
        assert sizes[-1] < 300 < big / 100
    snap["traces"]["tensors"]["interval"] = 2                     # a changed value
    snap["traces"]["switches"] = ({"step": 3, "new": (8, 4)},)    # a tuple: JSON writes a list
    commit()
    snap["traces"]["switches"] = [{"step": 3, "new": [8, 4]}]
    snap["traces"]["tensors"]["names"][-1] = "B"                  # the last known item changed
    snap["traces"]["tensors"]["step"] = snap["traces"]["tensors"]["step"][:10]   # shorter
    del snap["traces"]["tensors"]["word_length"]                  # a key that went away
    commit()
    for pointer, want in zip(pointers, expected):
        got = read_journal(path, pointer["lines"], pointer["bytes"])
        assert text(got) == text(json.loads(json.dumps(want)))
    assert math.isnan(got["epochs"][0]["loss"]) and got["epochs"][1]["loss"] == math.inf  # exact, not strings
    assert path.stat().st_size == pointers[-1]["bytes"] == sum(sizes)


def test_a_torn_tail_is_dropped_and_cut_off_on_resume(tmp_path):
    path = tmp_path / JOURNAL
    journal = TraceJournal.start(path)
    snap = {"epochs": [1]}
    journal.append(snap)
    snap["epochs"].append(2)
    journal.append(snap)
    committed = journal.pointer()
    snap["epochs"].append(3)
    journal.append(snap)                                         # appended, never checkpointed
    with open(path, "ab") as fh:
        fh.write(b'{"line":3,"ops":[[["epo')                     # killed while appending
    assert read_journal(path, committed["lines"], committed["bytes"]) == {"epochs": [1, 2]}
    resumed, snapshot = TraceJournal.resume(path, committed)
    assert snapshot == {"epochs": [1, 2]} and path.stat().st_size == committed["bytes"]
    snapshot["epochs"].append(30)
    resumed.append(snapshot)
    p = resumed.pointer()
    assert p["lines"] == 3 and read_journal(path, p["lines"], p["bytes"]) == {"epochs": [1, 2, 30]}


def test_a_bad_journal_is_an_error_that_names_it(tmp_path):
    path = tmp_path / JOURNAL
    journal = TraceJournal.start(path)
    for n in range(3):
        journal.append({"epochs": list(range(n + 1))})
    p = journal.pointer()
    with pytest.raises(JournalError, match="expected 2"):
        read_journal(path, 2, p["bytes"])
    with pytest.raises(JournalError, match="truncated"):
        read_journal(path, 4, p["bytes"] + 10)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"line":1', b'"line":1x'))   # a committed line edited by hand
    with pytest.raises(JournalError, match="line 2 is not valid JSON") as err:
        read_journal(path, 3, len(data) + 1)
    assert err.value.path == path and str(path) in str(err.value)
    path.unlink()
    with pytest.raises(JournalError, match="missing"):
        read_journal(path, 3, p["bytes"])


def _running_record(folder, traces, epochs=1):
    """A running record and its journal as the loop writes them."""
    record = {"schema": results.SCHEMA, "name": "x", "status": "running", "config": {}, "environment": {},
              "epochs": [{"epoch": e} for e in range(epochs)], "traces": traces, "final": {}, "policy": {},
              "wall_time_s": 1.0, "started": "s", "finished": None, "message": ""}
    journal = TraceJournal.start(folder / JOURNAL)
    journal.append({"epochs": record["epochs"], "traces": traces})
    results.write_running_record(folder / "record.json", record, journal)
    return record, journal


def test_load_record_puts_the_traces_of_a_running_record_back(tmp_path):
    traces = {"tensors": {"step": [0, 1], "sparsity": [[0.5], [float("nan")]]}}
    record, _ = _running_record(tmp_path, traces)
    on_disk = json.loads((tmp_path / "record.json").read_text())
    assert on_disk["traces"] == {} and on_disk["journal"]["lines"] == 1
    loaded = load_record(tmp_path / "record.json")
    assert "journal" not in loaded
    # the layout and the NaN strings of a finished record (docs/results-format.md §1)
    assert loaded["traces"] == {"tensors": {"step": [0, 1], "sparsity": [[0.5], ["nan"]]}}
    assert [r["traces"] for r in results.load_records(tmp_path)] == [loaded["traces"]]
    # set aside (e.g. as record.json.previous), a running record keeps its traces without the journal
    kept = results.set_aside(tmp_path / "record.json", ".previous")
    (tmp_path / JOURNAL).unlink()
    assert not (tmp_path / "record.json").exists()
    assert load_record(kept) == loaded


def test_a_running_record_whose_journal_is_bad_is_set_aside_with_it(tmp_path):
    _running_record(tmp_path, {"tensors": {"step": [0]}})
    journal = tmp_path / JOURNAL
    journal.write_bytes(b"#" + journal.read_bytes()[1:])        # same length, no longer JSON
    with pytest.raises(JournalError, match=JOURNAL):
        load_record(tmp_path / "record.json")
    with pytest.warns(RuntimeWarning, match="skipping"):
        assert results.load_records(tmp_path) == []
    with pytest.warns(RuntimeWarning, match="journal.jsonl.corrupt"):
        assert results.read_record(tmp_path / "record.json") is None
    assert (tmp_path / "record.json.corrupt").exists() and (tmp_path / "journal.jsonl.corrupt").exists()


# ----------------------------------------------------------------------------- in the training loop
class _Sizes(ProgressPrinter):
    """Reads the run's files after every epoch's writes (the loop reports an epoch after them)."""

    def __init__(self, folder):
        super().__init__("sizes", stream=io.StringIO())
        self.folder, self.rows = folder, []

    def epoch(self, metrics, epochs, epoch_seconds):
        f = self.folder
        on_disk = json.loads((f / "record.json").read_text())
        self.rows.append({"journal": (f / JOURNAL).stat().st_size, "checkpoint": (f / "checkpoint.pt").stat().st_size,
                          "record": (f / "record.json").stat().st_size, "on_disk": on_disk,
                          "loaded": load_record(f / "record.json")})


def test_bytes_written_per_epoch_do_not_grow_with_the_epoch(tmp_path):
    cfg = get_config("smoke/fixed/alexnet_cifar/digits", epochs=8, **SMALL,
                     policy={"word_length": 8, "fractional_length": 4, "log_interval": 1})
    sizes = _Sizes(tmp_path)
    rec = run(cfg, out_dir=tmp_path, device="cpu", progress=sizes)
    rows = sizes.rows
    assert rec["status"] == "completed" and len(rows) == 8
    steps = rec["epochs"][0]["steps"]
    appended = [b - a for a, b in zip([0] + [r["journal"] for r in rows], [r["journal"] for r in rows])]
    # every epoch after the first (which also writes names, numel, is_weight) appends the same
    # number of points: the same bytes, give or take the digits of the numbers
    assert max(appended[1:]) < 1.1 * min(appended[1:])
    ckpts = [r["checkpoint"] for r in rows]
    assert max(ckpts) - min(ckpts) < 100
    # the running record grows by its new epoch entry only (and a few digits)
    for k in range(1, 8):
        entry = len(json.dumps(rec["epochs"][k], separators=(",", ":")))
        assert rows[k]["record"] - rows[k - 1]["record"] < entry + 64
    # what each epoch rewrote before, the whole trace (indent=1 in the record, and again in the
    # checkpoint), is at the last epoch many times what that epoch now writes of the trace
    whole_trace = len(json.dumps(rec["traces"], indent=1))
    assert appended[-1] < whole_trace / 5
    # readers of a running record: epochs and final on disk, the traces through load_record
    for k, row in enumerate(rows):
        assert row["on_disk"]["status"] == "running" and row["on_disk"]["traces"] == {}
        assert len(row["on_disk"]["epochs"]) == k + 1 == row["on_disk"]["final"]["epochs_run"]
        assert row["loaded"]["traces"]["tensors"]["step"] == list(range((k + 1) * steps))
        assert text(row["loaded"]["traces"]["tensors"]["word_length"]) == text(
            rec["traces"]["tensors"]["word_length"][:(k + 1) * steps])
    # the record written at the end holds everything, and the journal's last line the rest of it:
    # the journal alone rebuilds the finished record (issue 23)
    final = json.loads((tmp_path / "record.json").read_text())
    assert "journal" not in final and final["traces"] == json.loads(json.dumps(results._sanitize(rec["traces"])))
    assert results.finished_record(tmp_path / JOURNAL) == load_record(tmp_path / "record.json")
    assert "journal" in torch.load(tmp_path / "checkpoint.pt", weights_only=True)


def _adapt_config(epochs):
    base = get_config("smoke/adapt/alexnet_cifar/digits")
    return base.replace(epochs=epochs, **SMALL, policy={**base.policy, "min_lookback": 2, "max_lookback": 6,
                                                         "log_interval": 3})


def test_resume_after_a_crash_between_journal_and_checkpoint_is_exact(tmp_path):
    """A line appended after the last checkpoint (and a torn one after it) is not part of the run."""
    cfg = _adapt_config(3)
    whole = run(cfg, out_dir=tmp_path / "whole", device="cpu")
    cut = tmp_path / "cut"
    assert run(cfg, out_dir=cut, device="cpu", epoch_limit=1)["status"] == "interrupted"
    ckpt, record = (cut / "checkpoint.pt").read_bytes(), (cut / "record.json").read_bytes()
    committed = (cut / JOURNAL).stat().st_size
    run(cfg, out_dir=cut, device="cpu", epoch_limit=1)           # epoch 1 reaches the journal ...
    (cut / "checkpoint.pt").write_bytes(ckpt)                    # ... but not the checkpoint
    (cut / "record.json").write_bytes(record)
    with open(cut / JOURNAL, "ab") as fh:
        fh.write(b'{"line":2,"ops":[[["traces","tens')
    assert (cut / JOURNAL).stat().st_size > committed
    resumed = run(cfg, out_dir=cut, device="cpu")
    assert resumed["status"] == "completed"
    assert whole["traces"]["switches"] and whole["policy"]["switch_events"] == len(whole["traces"]["switches"])
    assert results_of(resumed) == results_of(whole)
    assert results_of(load_record(cut / "record.json")) == results_of(load_record(tmp_path / "whole" / "record.json"))


def test_a_checkpoint_written_before_the_journal_resumes_exactly(tmp_path):
    """Old checkpoints hold ``epochs`` and the policy's whole state; the record its whole traces."""
    from adapt.train import build, prepare_data

    base = get_config("smoke/muppet/alexnet_cifar/digits")
    # a static schedule switches at given epochs: before and after the cut at 2 epochs
    cfg = base.replace(epochs=4, **SMALL, policy={**base.policy, "static_schedule": [0, 1, 2, 3], "log_interval": 3})
    whole = run(cfg, out_dir=tmp_path / "whole", device="cpu")
    old = tmp_path / "old"
    run(cfg, out_dir=old, device="cpu", epoch_limit=2)
    ckpt = torch.load(old / "checkpoint.pt", weights_only=True)
    snapshot = read_journal(old / JOURNAL, ckpt["journal"]["lines"], ckpt["journal"]["bytes"])
    *_, classes = prepare_data(cfg, "cpu")
    _, policy, _, _ = build(cfg, classes, "cpu")
    policy.load_checkpoint_state(ckpt["policy"], snapshot["traces"])
    state = policy.state_dict()
    assert set(state) - set(ckpt["policy"]) == set(policy.trace_state_keys)
    del ckpt["journal"]
    torch.save({**ckpt, "policy": state, "epochs": snapshot["epochs"]}, old / "checkpoint.pt")
    results.atomic_write_json(old / "record.json", dict(load_record(old / "record.json"), status="running"))
    (old / JOURNAL).unlink()
    resumed = run(cfg, out_dir=old, device="cpu")
    assert [s["epoch"] for s in whole["traces"]["switches"]] == [0, 1, 2, 3] and len(whole["epochs"]) == 4
    assert results_of(resumed) == results_of(whole)


def test_a_journal_that_does_not_match_the_checkpoint_sets_both_aside(tmp_path):
    cfg = get_config("smoke/fixed/alexnet_cifar/digits", epochs=3, **SMALL)
    run(cfg, out_dir=tmp_path, device="cpu", epoch_limit=1)
    (tmp_path / JOURNAL).write_bytes(b"")                        # lost (e.g. copied without it)
    with pytest.raises(CheckpointError, match="journal.jsonl.corrupt") as err:
        run(cfg, out_dir=tmp_path, device="cpu")
    assert "missing" in str(err.value.__cause__) or "bytes" in str(err.value.__cause__)
    # the checkpoint itself loads: not called corrupt, kept as .previous (issue 23)
    assert (tmp_path / "checkpoint.pt.previous").exists() and not (tmp_path / "checkpoint.pt").exists()
    assert not (tmp_path / "checkpoint.pt.corrupt").exists() and "loads, but" in str(err.value)
    record = load_record(tmp_path / "record.json")
    assert record["status"] == "failed" and len(record["epochs"]) == 1 and "1 epoch(s)" in record["message"]
    again = run(cfg, out_dir=tmp_path, device="cpu", force=True)  # what the message says to do
    assert again["status"] == "completed" and len(again["epochs"]) == 3
