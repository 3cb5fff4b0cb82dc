"""The set-up files agree with each other.

* ``environment.yml`` (conda) lists the same dependencies as ``pyproject.toml`` (core and every extra),
  with the same version ranges, except torch/torchvision, which it pins;
* those pins equal the Makefile's ``TORCH_PINS`` and lie inside pyproject's ranges;
* ``.ci/run`` runs exactly the test command that the README's "Quick start" shows, and every
  ``make`` target the README advertises exists;
* ``make test`` fails (with a message) when pytest collects no test, and passes pytest's own
  failures through.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PINNED = {"torch", "torchvision"}


def norm(name: str) -> str:
    """Lowercase, ``_`` and ``.`` to ``-`` (PEP 503)."""
    return canonicalize_name(name)


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def pyproject_requirements() -> dict[str, Requirement]:
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    reqs = [Requirement(line) for line in lines]
    # Extras that pull in the package itself (e.g. "adapt[test]") are not third-party dependencies.
    return {norm(r.name): r for r in reqs if norm(r.name) != norm(project["name"])}


def environment() -> dict:
    with open(ROOT / "environment.yml") as f:
        return yaml.safe_load(f)


def environment_pip_lines() -> list[str]:
    pip_sections = [d["pip"] for d in environment()["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml must have exactly one pip: section"
    return [str(line).strip() for line in pip_sections[0]]


def environment_requirements() -> dict[str, Requirement]:
    reqs = {}
    for line in environment_pip_lines():
        if line.startswith("-"):  # pip options such as "-e ."
            continue
        req = Requirement(line)
        assert norm(req.name) not in reqs, f"{req.name} listed twice in environment.yml"
        reqs[norm(req.name)] = req
    return reqs


def makefile_torch_pins() -> dict[str, Requirement]:
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^TORCH_PINS\s*[:?]?=\s*(.+)$", text, re.MULTILINE)
    assert m, "Makefile has no TORCH_PINS variable"
    return {norm(r.name): r for r in map(Requirement, m.group(1).split())}


def pinned_version(req: Requirement) -> Version:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not an exact pin"
    return Version(specs[0].version)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))


def readme_quick_start() -> list[str]:
    """The commands of the first fenced block under the README's "Quick start" heading."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.match(r"^#+\s*Quick start\s*$", line, re.IGNORECASE)),
        None,
    )
    assert start is not None, 'README.md has no "Quick start" heading'
    block, inside = [], False
    for line in lines[start + 1:]:
        if not inside and line.startswith("#"):
            break  # next heading before any block
        if line.strip().startswith("```"):
            if inside:
                break
            inside = True
            continue
        if inside:
            command = line.split("#", 1)[0].strip()
            if command:
                block.append(command)
    assert block, 'README.md has no fenced command block under "Quick start"'
    return block


def readme_test_command() -> str:
    commands = [c for c in readme_quick_start() if shlex.split(c)[:2] == ["make", "test"]]
    assert len(commands) == 1, f"Quick start should show one `make test` command, got {commands}"
    return commands[0]


def ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


# --- pyproject.toml <-> environment.yml <-> Makefile ------------------------------------------------


def test_environment_yml_lists_the_same_dependency_names_as_pyproject():
    in_pyproject = set(pyproject_requirements())
    in_env = set(environment_requirements())
    assert in_pyproject - in_env == set(), "in pyproject.toml but missing from environment.yml"
    assert in_env - in_pyproject == set(), "in environment.yml but missing from pyproject.toml"


def test_environment_yml_uses_pyprojects_version_ranges_except_for_the_pins():
    py, env = pyproject_requirements(), environment_requirements()
    for name in sorted(set(py) & set(env) - PINNED):
        assert env[name].specifier == py[name].specifier, (
            f"{name}: environment.yml has '{env[name].specifier}', pyproject.toml '{py[name].specifier}'"
        )


def test_torch_pins_agree_and_satisfy_pyproject_ranges():
    py, env, make = pyproject_requirements(), environment_requirements(), makefile_torch_pins()
    assert set(make) == PINNED, f"Makefile TORCH_PINS pins {sorted(make)}, expected {sorted(PINNED)}"
    for name in sorted(PINNED):
        assert pinned_version(env[name]) == pinned_version(make[name]), (
            f"{name}: environment.yml pins {env[name].specifier}, Makefile {make[name].specifier}"
        )
        version = pinned_version(make[name])
        assert py[name].specifier.contains(version, prereleases=True), (
            f"{name}=={version} lies outside pyproject.toml's range '{py[name].specifier}'"
        )


def test_environment_yml_python_satisfies_requires_python_and_installs_the_package():
    env = environment()
    assert env["name"] == "adapt"
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pythons = [d for d in conda if re.match(r"^python\s*[=<>]", d)]
    assert len(pythons) == 1, f"environment.yml should name one python version, got {pythons}"
    version = re.sub(r"^python\s*=*\s*", "", pythons[0])
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(version), f"python {version} does not satisfy requires-python '{requires}'"
    assert "pip" in conda
    assert "-e ." in environment_pip_lines(), "environment.yml should install adapt itself (-e .)"


# --- README <-> .ci/run <-> Makefile ------------------------------------------------------------------


def test_readme_quick_start_is_reproduce_then_test():
    """Two commands on a fresh machine: one sets up and runs the main job, one runs the tests."""
    assert readme_quick_start() == ["make reproduce", "make test"]


def test_ci_runs_exactly_the_readme_test_command():
    commands = ci_commands()
    assert "set -euo pipefail" in commands, ".ci/run must stop at the first failure"
    # The test command is the last thing the script does, so the script exits with its status.
    assert commands[-1] == readme_test_command()
    assert os.access(ROOT / ".ci" / "run", os.X_OK), ".ci/run is not executable"


def test_every_make_target_the_readme_mentions_exists():
    text = (ROOT / "README.md").read_text()
    # commands: in backticks or at the start of a line of a code block
    mentioned = set(re.findall(r"(?:^|`)make ([a-z][\w-]*)", text, re.MULTILINE))
    assert {"reproduce", "test"} <= mentioned
    missing = mentioned - makefile_targets()
    assert not missing, f"README mentions make targets the Makefile lacks: {sorted(missing)}"


# --- make test's exit status ------------------------------------------------------------------------


def run_make_test(tests_dir: Path) -> subprocess.CompletedProcess:
    """`make unit` (the pytest half of `make test`) on another test folder, with this interpreter and
    without re-running the set-up; the notebook half is exercised by CI itself."""
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}
    return subprocess.run(
        [
            "make", "--no-print-directory", "-C", str(ROOT),
            "-o", ".venv/.installed",  # treat the install stamp as up to date: never (re)install here
            "unit",
            f"PY={sys.executable}",
            f"TESTS={tests_dir}",
            "PYTEST_ARGS=-p no:cacheprovider -q",
        ],
        capture_output=True, text=True, env=env, timeout=300,
    )


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


@needs_make
def test_make_test_fails_when_no_test_is_collected(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_make_test(empty)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "no tests ran" in result.stderr


@needs_make
def test_make_test_passes_pytest_results_through(tmp_path):
    passing = tmp_path / "passing"
    passing.mkdir()
    (passing / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    result = run_make_test(passing)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout

    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    result = run_make_test(failing)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "1 failed" in result.stdout
