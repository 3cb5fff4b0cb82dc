"""The analysis notebooks (00, 20, 21) on results they must survive, executed with papermill.

Three results roots, each notebook executed once per root (module-scoped fixtures):

* a copy of the committed smoke records with one ``record.json`` truncated, one holding
  ``[]``, and a 1-epoch custom run of a grid point beside its grid record;
* the ``quick`` profile with only failure records (what ``make grid PROFILE=quick``
  leaves offline);
* an empty root.

Every execution runs from a scratch working directory with ``$ADAPT_FIGURES`` pointing at a
scratch folder, so the test also checks that nothing depends on the cwd and that the committed
``figures/`` is left alone.
"""
import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SMOKE = ROOT / "results" / "smoke"
ANALYSIS = ("00-overview", "20-results", "21-figures")
FAILURE = "DatasetNotAvailable: CIFAR-10 is not available offline; put the archives into data/ by hand"

TRUNCATED = "muppet-resnet20-digits-reference-s0-f0"
EMPTY_LIST = "float32-muppet-alexnet_cifar-digits-reference-s1-f0"
CUSTOM_OF = "adapt-resnet20-digits-reference-s0-f0"


def _outputs(nb) -> str:
    """Every text a reader sees in the executed notebook's outputs (streams, plain text, Markdown)."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            data = out.get("data", {})
            for mime in ("text/markdown", "text/plain", "text/html"):
                if mime in data:
                    parts.append(data[mime] if isinstance(data[mime], str) else "".join(data[mime]))
            if out.get("output_type") == "error":
                parts.append("ERROR " + out.get("ename", "") + ": " + out.get("evalue", ""))
    return "\n".join(parts)


def _markdown_outputs(nb) -> list:
    return [out["data"]["text/markdown"] for cell in nb.cells for out in cell.get("outputs", [])
            if "text/markdown" in out.get("data", {})]


def _execute(names, tmp: Path, figures: Path, parameters: dict, env: dict = None) -> dict:
    import papermill

    work = tmp / "cwd"  # not notebooks/: paths must not depend on the working directory
    work.mkdir(exist_ok=True)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPT_FIGURES", str(figures))
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        for name in names:
            target = tmp / f"{name}.ipynb"
            papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(target), parameters=parameters,
                                       kernel_name="python3", cwd=str(work), progress_bar=False)
            out[name] = nbformat.read(target, as_version=4)
    return out


def _figure_mtimes():
    return {p.name: p.stat().st_mtime_ns for p in (ROOT / "figures").glob("*.p*")}


@pytest.fixture(scope="module")
def corrupt_smoke(tmp_path_factory):
    """Notebooks 00, 20, 21 on a smoke copy with a truncated record, a ``[]`` record and a custom run.

    The root is handed over as ``$ADAPT_RESULTS`` (``results_root`` left at its default ``None``).
    """
    from adapt.experiments.grid import GridPoint
    from adapt.records import atomic_write_json, load_record

    tmp = tmp_path_factory.mktemp("corrupt")
    root = tmp / "results"
    for src in SMOKE.glob("*/record.json"):
        dst = root / "smoke" / src.parent.name / "record.json"
        dst.parent.mkdir(parents=True)
        shutil.copyfile(src, dst)
    truncated = root / "smoke" / TRUNCATED / "record.json"
    truncated.write_text(truncated.read_text()[:500])
    empty_list = root / "smoke" / EMPTY_LIST / "record.json"
    empty_list.write_text("[]")
    # a 1-epoch custom run of a grid point: same config but epochs=1, its own run id and a low accuracy
    grid_record = load_record(root / "smoke" / CUSTOM_OF / "record.json")
    custom = json.loads(json.dumps(grid_record))
    custom["config"]["epochs"] = 1
    custom["epochs"] = custom["epochs"][:1]
    custom["final"]["final_test_acc"] = 0.0123
    point = GridPoint(custom["config"]["name"], "reference", 0, 0, {"epochs": 1})
    atomic_write_json(root / "smoke" / point.run_id / "record.json", custom)
    before = _figure_mtimes()
    figures = tmp / "figures"
    nbs = _execute(ANALYSIS, tmp, figures, {"profile": "smoke"}, env={"ADAPT_RESULTS": str(root)})
    return {"nbs": nbs, "root": root, "figures": figures, "truncated": truncated, "empty_list": empty_list,
            "custom_id": point.run_id, "grid_acc": grid_record["final"]["final_test_acc"],
            "figures_before": before}


@pytest.fixture(scope="module")
def failed_quick(tmp_path_factory):
    """Notebooks 00, 20, 21 on a quick profile whose every grid point left only a failure record."""
    from adapt.experiments import grid as G
    from adapt.records import atomic_write_json

    tmp = tmp_path_factory.mktemp("failed")
    root = tmp / "results"
    for p in G.grid("quick"):
        atomic_write_json(root / "quick" / p.run_id / "record.json", G.failure_record(p.config(), FAILURE))
    figures = tmp / "figures"
    nbs = _execute(ANALYSIS, tmp, figures, {"profile": "quick", "results_root": str(root)})
    return {"nbs": nbs, "root": root, "figures": figures}


@pytest.fixture(scope="module")
def empty_root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("empty")
    root = tmp / "results"
    root.mkdir()
    figures = tmp / "figures"
    nbs = _execute(ANALYSIS, tmp, figures, {"profile": "smoke", "results_root": str(root)})
    return {"nbs": nbs, "root": root, "figures": figures}


# ----------------------------------------------------------------------------- corrupt records, custom runs
@pytest.mark.parametrize("name", ANALYSIS)
def test_a_corrupt_record_is_skipped_with_a_warning_naming_it(corrupt_smoke, name):
    text = _outputs(corrupt_smoke["nbs"][name])
    assert "ERROR" not in text
    for bad in (corrupt_smoke["truncated"], corrupt_smoke["empty_list"]):
        assert str(bad) in text, f"{name} does not name {bad}"
    assert "RuntimeWarning" in text  # the warning itself is in the output, not only the summary
    assert "13 grid records of the 'smoke' profile" in text


@pytest.mark.parametrize("name", ANALYSIS)
def test_a_custom_run_is_listed_apart_and_left_out(corrupt_smoke, name):
    text = _outputs(corrupt_smoke["nbs"][name])
    assert "1 custom run is not in these tables:" in text
    assert corrupt_smoke["custom_id"] in text


def test_the_grid_tables_report_the_grid_record_not_the_custom_run(corrupt_smoke):
    acc = pd.read_csv(corrupt_smoke["root"] / "smoke" / "tables" / "accuracy.csv")
    row = acc[(acc.model == "resnet20") & (acc.method == "adapt") & (acc.variant == "reference")].iloc[0]
    assert row["runs"] == 1 and row["acc_mean_pct"] == pytest.approx(100 * corrupt_smoke["grid_acc"])
    # the skipped records' groups lose exactly those runs
    assert acc[(acc.model == "resnet20") & (acc.method == "muppet")].empty
    assert int(acc[(acc.model == "alexnet_cifar") & (acc.method == "float32-muppet")]["runs"].iloc[0]) == 1


def test_notebook_20_shows_the_iso_column_and_its_prose_comes_from_the_tables(corrupt_smoke):
    nb = corrupt_smoke["nbs"]["20-results"]
    tables_dir = corrupt_smoke["root"] / "smoke" / "tables"
    speed = pd.read_csv(tables_dir / "speedup_reference.csv")
    base = speed[speed["method"].isin(["float32", "float32-muppet"])]
    reached = base["iso_reached"] > 0
    assert reached.any() and (base.loc[reached, "train_speedup_iso"] == 1.0).all()  # a baseline against itself
    assert base.loc[~reached, "train_speedup_iso"].isna().all()  # no target reached: no iso speedup at all
    assert (base.loc[~reached, "iso_note"] == "target not reached").all()
    shown = [c for c in nb.cells if c.cell_type == "code" and "speedup_table(records, \"reference\"" in c.source]
    assert shown and "train_speedup_iso" in _outputs(nbformat.v4.new_notebook(cells=shown))
    head = pd.read_csv(tables_dir / "headline_reference.csv").set_index("metric")
    prose = "\n".join(_markdown_outputs(nb))
    for metric in ("train_speedup", "inference_speedup", "model_size"):
        assert f"{head.loc[metric, 'this_run']:.2f}" in prose, metric
    assert f"{head.loc['acc_diff_pp', 'this_run']:.2f} pp mean over runs" in prose
    assert "Runs that reach it:" in prose and "**Epochs trained**" in prose
    # no hand-typed claim about the data in the notebook's own Markdown cells
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "often reached in the first epoch" not in md and "100 epochs" not in md


def test_figures_go_to_adapt_figures_and_not_to_the_repository(corrupt_smoke):
    saved = {p.name for p in corrupt_smoke["figures"].iterdir()}
    assert {"20-accuracy-smoke.png", "21-curves-resnet20-smoke.png", "21-heatmaps-alexnet_cifar-smoke.pdf"} <= saved
    assert _figure_mtimes() == corrupt_smoke["figures_before"]


# ----------------------------------------------------------------------------- all failed, empty
@pytest.mark.parametrize("name", ANALYSIS)
def test_a_profile_of_failures_renders_and_lists_them(failed_quick, name):
    text = _outputs(failed_quick["nbs"][name])
    assert "ERROR" not in text
    assert "16 grid records of the 'quick' profile" in text and "16 failed" in text
    assert "no completed runs" in text
    assert FAILURE in text  # the failures are listed with their messages
    if name == "21-figures":
        assert "no completed AdaPT run" in text and "no learning curves" in text


def test_a_profile_of_failures_gets_a_placeholder_accuracy_figure(failed_quick):
    assert (failed_quick["figures"] / "20-accuracy-quick.png").exists()
    acc = pd.read_csv(failed_quick["root"] / "quick" / "tables" / "accuracy.csv")
    assert len(acc) == 16 and (acc["accuracy"] == "failed").all()


@pytest.mark.parametrize("name", ANALYSIS)
def test_an_empty_results_root_renders(empty_root, name):
    text = _outputs(empty_root["nbs"][name])
    assert "ERROR" not in text
    assert "no grid records of the 'smoke' profile" in text and "no completed runs" in text


# ----------------------------------------------------------------------------- committed notebooks
def test_committed_notebooks_hold_no_frozen_progress_widgets():
    """A stored ipywidgets progress bar renders as a frozen widget (or "Error displaying widget")."""
    found = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                    found.append(f"{path.name} cell {i}")
        if nb.metadata.get("widgets"):
            found.append(f"{path.name} metadata.widgets")
    assert not found, f"widget outputs in committed notebooks: {found}"


def test_analysis_notebooks_default_to_the_repository_paths():
    """results_root / figures_dir default to None (adapt.paths), never to a cwd-relative '../results'."""
    for name in ("00-overview", "01-fixed-point-quantization", "02-precision-heuristic", "20-results",
                 "21-figures", "30-ablation", "04-muppet"):
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert "../" not in params.source, name
        for key in ("results_root", "figures_dir"):
            if key in params.source:
                assert f"{key} = None" in params.source, (name, key)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "json.load" not in code, name
