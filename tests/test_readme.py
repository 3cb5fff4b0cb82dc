"""The README and the committed notebooks agree with what the committed smoke records give."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

from adapt.analysis.tables import README_BEGIN, README_END, load_profile, readme_block, run_id

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "results" / "smoke"


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def records():
    found = grid_records(ROOT / "results")
    assert found, f"no committed smoke records under {RECORDS}"
    return found


def grid_records(results_root) -> list:
    """The smoke grid's records as the README's block reads them (tools/update_readme.py): a user's custom
    runs beside them in results/smoke/ are not among them."""
    return load_profile("smoke", results_root).records


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
    assert_one_record_per_point(records)


def assert_one_record_per_point(records):
    from adapt.experiments.grid import grid

    assert sorted(run_id(r) for r in records) == sorted(p.run_id for p in grid("smoke"))
    assert all(r["status"] in ("completed", "diverged") for r in records)


def test_readme_figures_exist():
    readme = (ROOT / "README.md").read_text()
    for path in re.findall(r"\((figures/[^)]+\.png)\)", readme):
        assert (ROOT / path).exists(), path


def test_committed_notebooks_are_clean():
    tool = _load_tool("notebooks")
    import nbformat

    notebooks = tool.numbered()
    readme = (ROOT / "README.md").read_text()
    assert len(notebooks) >= 10 and all(p.stem in readme for p in notebooks), "every notebook is listed in the README"
    for path in notebooks:
        assert tool.problems(nbformat.read(path, as_version=4)) == [], path.name


def test_a_custom_run_beside_the_grid_changes_nothing_of_the_block(records):
    """A 1-epoch custom run of a grid point is neither tabulated nor named: the README describes the grid."""
    grid_record = next(r for r in records if r["name"] == "smoke/adapt/resnet20/digits"
                       and r["config"]["variant"] == "reference")
    custom = json.loads(json.dumps(grid_record))
    custom["config"]["epochs"] = 1
    custom["final"]["final_test_acc"] = 0.0123
    assert readme_block(records + [custom], "smoke") == readme_block(records, "smoke")


def _readme_figures():
    """The figure files notebooks/README.md's figures table lists (``<model>`` expanded), with the notebook it names."""
    from adapt.experiments.grid import MODELS

    text = (ROOT / "notebooks" / "README.md").read_text()
    section = text[text.index("## Figures"):]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`figures/" in line]
    out = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for path in re.findall(r"`(figures/[^`]+\.png)`", cells[1]):
            for model in (MODELS if "<model>" in path else ("",)):
                out[path.replace("<model>", model)] = cells[2]
    return out


def _make_figures_notebooks():
    """The notebooks the smoke branch of `make figures` executes (``$(ANALYSIS)`` expanded)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    analysis = re.search(r"^ANALYSIS\s*=\s*(.+)$", text, re.MULTILINE).group(1).split()
    recipe = text[text.index("\nfigures:"):]
    recipe = recipe[:recipe.index("\nelse")]
    names = re.findall(r"notebooks/(\d\d)-[\w-]+\.ipynb", recipe.replace("$(ANALYSIS)", " ".join(analysis)))
    return set(names)


def test_make_figures_regenerates_every_figure_the_readme_lists():
    listed = _readme_figures()
    assert listed, "no figures table in notebooks/README.md"
    run = _make_figures_notebooks()
    for path, notebook in listed.items():
        assert (ROOT / path).exists(), path
        assert Path(path).name.startswith(notebook + "-"), (path, notebook)
        assert notebook in run, f"{path}: notebook {notebook} is not run by `make figures` (runs {sorted(run)})"
    # and every committed figure is listed
    on_disk = {f"figures/{p.name}" for p in (ROOT / "figures").glob("*.png")}
    assert on_disk == set(listed), sorted(on_disk ^ set(listed))


def test_notebooks_test_keeps_figures_out_of_the_repository():
    """`make notebooks-test` executes and nbval-checks notebooks with $ADAPT_FIGURES in the ignored folder."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = text[text.index("\nnotebooks-test:"):]
    recipe = recipe[:recipe.index("\n\n")]
    commands = [line for line in recipe.splitlines()[1:] if "tools/notebooks.py run" in line or "--nbval" in line]
    assert len(commands) == 2
    for line in commands:
        assert "ADAPT_FIGURES=$(CURDIR)/notebooks/executed/figures" in line, line
    assert "notebooks/executed/" in (ROOT / ".gitignore").read_text()


def test_the_readme_is_a_few_screens():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; details belong in docs/ (at most 200)"


def markdown_links(path: Path) -> list:
    """``(target, anchor)`` of every relative markdown link in ``path`` (not inside code blocks)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    links = []
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        links.append((file, anchor))
    return links


def heading_anchors(path: Path) -> set:
    """GitHub's anchors of the headings of a markdown file."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


@pytest.mark.parametrize("doc", ["README.md", "docs/README.md", "docs/method.md", "docs/architecture.md",
                                 "docs/running.md", "docs/reproducibility.md", "docs/extending.md",
                                 "docs/results-format.md", "benchmarks/README.md", "notebooks/README.md",
                                 "results/README.md"])
def test_every_link_resolves(doc):
    path = ROOT / doc
    broken = []
    for file, anchor in markdown_links(path):
        target = (path.parent / file).resolve() if file else path
        if not target.exists():
            broken.append(f"{file} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target):
            broken.append(f"{file}#{anchor} (no such heading)")
    assert not broken, f"{doc}: broken links: {broken}"


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\nsee [b](b.md) and [t](#title) and [x](#nowhere)\n")
    assert markdown_links(tmp_path / "a.md") == [("b.md", ""), ("", "title"), ("", "nowhere")]
    assert heading_anchors(tmp_path / "a.md") == {"title"}


def test_readme_verdict_block_is_what_the_records_give():
    from adapt.analysis.verdict import VERDICT_BEGIN, VERDICT_END

    tool = _load_tool("update_readme")
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(VERDICT_BEGIN) + len(VERDICT_BEGIN), readme.index(VERDICT_END)
    assert readme[start:end].strip() == tool.verdict(ROOT / "results").strip(), (
        "README.md's verdict differs from what results/mnist5k and results/smoke give: run python tools/update_readme.py")
    assert readme.index(VERDICT_BEGIN) < readme.index(README_BEGIN), "the README's results lead with the verdict"
