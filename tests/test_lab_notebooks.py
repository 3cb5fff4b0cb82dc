"""Notebooks 00-04 as a lab (issue 24): what a lecturer relies on is there in every one of them.

Objectives and a measured run time at the top, typeset formulas with their upstream source lines,
a summary, exercises whose solution cells (tagged ``solution``) check themselves with ``assert``,
the statement that everything is simulated in float32 (01-03), and a navigation that reaches every
notebook.  The notebooks themselves are executed by CI (papermill, nbval); this checks their text.
"""
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LAB = ("00-overview", "01-fixed-point-quantization", "02-precision-heuristic", "03-cost-model", "04-muppet")


def load(name):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("name", LAB)
def test_objectives_run_time_summary_and_exercises(name):
    nb = load(name)
    top = nb.cells[0].source
    assert "Objectives" in top, name
    assert re.search(r"run time", top, re.IGNORECASE), name
    assert re.search(r"\d+ s\b", top), f"{name}: no measured run time (seconds) at the top"
    assert "RUNTIME" not in top and not re.search(r"\bRT0\d\b", top), f"{name}: a run-time placeholder is left"
    text = markdown(nb)
    assert "\n## Summary" in text and "\n## Exercises" in text, name


@pytest.mark.parametrize("name", LAB)
def test_every_exercise_has_a_solution_cell_that_checks_itself(name):
    nb = load(name)
    text = markdown(nb)
    exercises = re.findall(r"\*\*Exercise (\d+\.\d+)\b", text)
    solutions = [c for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])]
    assert exercises, f"{name}: no exercise"
    assert len(solutions) >= len(exercises), (name, exercises, len(solutions))
    for cell in solutions:
        assert re.search(r"^\s*assert\b", cell.source, re.MULTILINE), f"{name}: a solution cell without a check"
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: a stored solution cell failed"


@pytest.mark.parametrize("name", LAB[1:])
def test_formulas_are_typeset_and_sourced(name):
    text = markdown(load(name))
    assert text.count("$$") >= 8, f"{name}: fewer than four display formulas"
    assert re.search(r"`[^`]*L\d+-L\d+`", text), f"{name}: no upstream file and lines cited"
    assert "docs/method.md" in text


@pytest.mark.parametrize("name", LAB[1:4])
def test_01_to_03_say_that_everything_is_simulated_in_float32(name):
    top = load(name).cells[0].source
    assert re.search(r"simulated in float32", top), name
    assert re.search(r"faster than float32", top), name


def test_the_lab_cites_its_background():
    text = markdown(load("00-overview"))
    for reference in ("Gupta", "1502.02551", "Yin", "1706.05699"):
        assert reference in text, reference
    assert "Gupta" in load("01-fixed-point-quantization").cells[0].source
    assert "Yin" in load("02-precision-heuristic").cells[0].source


def test_navigation_reaches_every_notebook_and_the_lab_in_order():
    overview = markdown(load("00-overview"))
    numbered = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    missing = [n for n in numbered if n != "00-overview.ipynb" and f"({n})" not in overview]
    assert not missing, f"00 does not link {missing}"
    for here, nxt in zip(LAB[1:], LAB[2:]):
        nexts = re.findall(r"\*\*Next:\*\*\s*\[[^\]]*\]\(([^)]+)\)", markdown(load(here)))
        assert nexts and nexts[0] == f"{nxt}.ipynb", (here, nexts)
    assert "(00-overview.ipynb)" in markdown(load("04-muppet"))
