"""The README and the committed notebooks agree with what the committed smoke records give."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

from adapt.results import load_records
from adapt.tables import README_BEGIN, README_END, readme_block

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "results" / "smoke"


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def records():
    found = load_records(RECORDS)
    assert found, f"no committed smoke records under {RECORDS}"
    return found


def test_readme_results_block_is_what_the_records_give(records):
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(README_BEGIN) + len(README_BEGIN), readme.index(README_END)
    assert readme[start:end].strip() == readme_block(records).strip(), (
        "README.md quotes numbers that differ from results/smoke: run python tools/update_readme.py")


def test_every_number_in_the_block_comes_from_the_records(records):
    """A changed record changes the block: the numbers are computed, not typed."""
    changed = json.loads(json.dumps(records))
    target = next(r for r in changed if r["status"] == "completed")
    target["final"]["final_test_acc"] = 0.123456
    assert readme_block(changed) != readme_block(records)


def test_committed_smoke_grid_is_complete(records):
    from adapt.grid import grid

    ids = {p.run_id for p in grid("smoke")}
    on_disk = {p.parent.name for p in RECORDS.glob("*/record.json")}
    assert ids == on_disk
    assert all(r["status"] in ("completed", "diverged") for r in records)


def test_readme_figures_exist():
    readme = (ROOT / "README.md").read_text()
    for path in re.findall(r"\((figures/[^)]+\.png)\)", readme):
        assert (ROOT / path).exists(), path


def test_committed_notebooks_are_clean():
    tool = _load_tool("notebooks")
    import nbformat

    notebooks = tool.numbered()
    assert len(notebooks) == 8
    for path in notebooks:
        assert tool.problems(nbformat.read(path, as_version=4)) == [], path.name
