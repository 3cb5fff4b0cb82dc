"""The documentation in docs/: every citation of it resolves, nothing cites sources outside the
repository, the worked example of docs/extending.md runs, and docs/results-format.md lists the fields
that run records carry.

Citations look like ``docs/method.md §1.4``, ``docs/method.md §1.3-1.6``, ``docs/method.md §1.3
"What is quantized", §2.3``, ``docs/method.md §4 item 8`` (or ``items 13-15``) and
``docs/method.md#<heading-anchor>``; a bare ``§N`` inside a docs/ file refers to that file.
Sections are the headings that start with ``§N.N``; items are the headings ``Item N`` under a
top-level section.  Every offending file and line is reported, not only the first.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
DOC_FILES = ("README.md", "method.md", "architecture.md", "running.md", "reproducibility.md", "extending.md",
             "results-format.md")

# Spelled in pieces so that this file does not match its own patterns.
PRIVATE_FOLDER = "shared" + "/" + "reference"
BARE_METHOD_REF = re.compile(r"(?<!docs/)(?<![\w/.-])method\.md\s*\u00a7")

SEC_TOKEN = re.compile(
    r"\s*\u00a7\s?(?P<start>\d+(?:\.\d+)*)(?:-(?P<end>\d+(?:\.\d+)*))?"
    r"(?:\s+items?\s+(?P<item>\d+)(?:-(?P<item_end>\d+))?)?"
    r"(?:\s+\"(?P<title>[^\"\n]+)\")?")
CHAIN_SEP = re.compile(r"\s*(?:,|\band\b|&)\s*(?=\u00a7)")
DOC_REF = re.compile(r"docs/(?P<file>[A-Za-z0-9_.-]+\.md)(?:#(?P<anchor>[\w-]+))?[`)\]*]*")
MD_LINK = re.compile(r"\]\((?P<target>[^)\s#]+\.md)(?:#(?P<anchor>[^)\s]+))?\)")
HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")


# ----------------------------------------------------------------------------- helpers
def scanned_files() -> list:
    """Every file whose citations are checked: the package, benchmarks, tools, tests, README, docs, notebooks."""
    files = []
    for folder in ("adapt", "benchmarks", "tools", "tests"):
        files += [p for p in sorted((REPO / folder).rglob("*.py")) if "__pycache__" not in p.parts]
    files.append(REPO / "README.md")
    files += sorted(DOCS.glob("*.md"))
    files += [p for p in sorted((REPO / "notebooks").glob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
    files += sorted((REPO / "notebooks").glob("*.md"))
    return [p for p in files if p.is_file()]


def file_text(path: Path) -> str:
    """The file's text; in a notebook (raw JSON) the escapes of quotes and non-ASCII characters are undone
    so that citations read as they do in the cells, line for line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text).replace('\\"', '"')
    return text


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return s.replace(" ", "-")


@lru_cache(maxsize=None)
def doc_index(name: str) -> dict:
    """``{"sections": {id: body}, "items": {(top, n): body}, "anchors": set}`` of docs/<name>."""
    path = DOCS / name
    lines = path.read_text(encoding="utf-8").splitlines()
    heads, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            heads.append((i, len(m.group("level")), m.group("title")))
    sections, items, anchors, seen = {}, {}, set(), {}
    top = None
    for k, (i, level, title) in enumerate(heads):
        end = next((j for j, lv, _ in heads[k + 1:] if lv <= level), len(lines))
        body = "\n".join(lines[i:end])
        a = slug(title)
        n = seen.get(a, 0)
        seen[a] = n + 1
        anchors.add(a if n == 0 else f"{a}-{n}")
        sec = re.match(r"\u00a7(\d+(?:\.\d+)*)\b", title)
        if sec:
            sections[sec.group(1)] = body
            if "." not in sec.group(1):
                top = sec.group(1)
        item = re.match(r"Item (\d+)\b", title)
        if item and top is not None:
            items[(top, int(item.group(1)))] = body
    return {"sections": sections, "items": items, "anchors": anchors}


def _expand_range(start: str, end) -> list:
    if end is None:
        return [start]
    if "." in start and "." not in end:  # §1.3-6 means §1.3 to §1.6
        end = start.rsplit(".", 1)[0] + "." + end
    return [start, end]


def check_chain(text: str, pos: int, doc: str, where: str) -> tuple:
    """Check the chain of § tokens at ``text[pos:]`` against docs/<doc>; returns (problems, end offset)."""
    index = doc_index(doc)
    problems = []
    while True:
        m = SEC_TOKEN.match(text, pos)
        if not m or not m.group(0).strip():
            break
        pos = m.end()
        for sec in _expand_range(m.group("start"), m.group("end")):
            if m.group("item"):
                lo = int(m.group("item"))
                hi = int(m.group("item_end") or lo)
                for n in range(lo, hi + 1):
                    if (sec, n) not in index["items"]:
                        problems.append(f"{where}: docs/{doc} has no \u00a7{sec} item {n}")
            elif sec not in index["sections"]:
                problems.append(f"{where}: docs/{doc} has no section \u00a7{sec}")
            elif m.group("title") and m.group("title").lower() not in index["sections"][sec].lower():
                problems.append(f"{where}: docs/{doc} \u00a7{sec} does not contain \"{m.group('title')}\"")
        sep = CHAIN_SEP.match(text, pos)
        if not sep:
            break
        pos = sep.end()
    return problems, pos


def citation_problems(path: Path) -> list:
    text = file_text(path)
    problems, consumed = [], []
    for m in DOC_REF.finditer(text):
        where = f"{rel(path)}:{line_of(text, m.start())}"
        name = m.group("file")
        if not (DOCS / name).is_file():
            problems.append(f"{where}: docs/{name} does not exist")
            continue
        if m.group("anchor") and m.group("anchor") not in doc_index(name)["anchors"]:
            problems.append(f"{where}: docs/{name} has no heading with anchor #{m.group('anchor')}")
        found, end = check_chain(text, m.end(), name, where)
        problems += found
        consumed.append((m.start(), end))
    if path.parent == DOCS:
        # Relative links between the docs, and bare § references to the file itself.
        for m in MD_LINK.finditer(text):
            target = (path.parent / m.group("target")).resolve()
            where = f"{rel(path)}:{line_of(text, m.start())}"
            if not target.is_file():
                problems.append(f"{where}: link to {m.group('target')}, which does not exist")
            elif m.group("anchor") and target.parent == DOCS and m.group("anchor") not in doc_index(target.name)["anchors"]:
                problems.append(f"{where}: {m.group('target')} has no heading with anchor #{m.group('anchor')}")
        pos = 0
        while True:
            k = text.find("\u00a7", pos)
            if k < 0:
                break
            if any(a <= k < b for a, b in consumed):
                pos = k + 1
                continue
            found, end = check_chain(text, k, path.name, f"{rel(path)}:{line_of(text, k)}")
            problems += found
            pos = max(end, k + 1)
    return problems


def table_fields(doc: str, section: str) -> list:
    """The backticked names in the first column of the tables of docs/<doc> §<section> (with their rows)."""
    rows = []
    for line in doc_index(doc)["sections"][section].splitlines():
        if not line.startswith("|") or set(line.replace("|", "").strip()) <= set("-: "):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        names = re.findall(r"`([^`]+)`", cells[0])
        if names:
            rows.append((names, cells))
    return rows


def field_names(doc: str, section: str) -> set:
    return {n for names, _ in table_fields(doc, section) for n in names}


def committed_records() -> list:
    paths = sorted((REPO / "results" / "smoke").glob("*/record.json"))
    return [(p, json.loads(p.read_text())) for p in paths]


# ----------------------------------------------------------------------------- the tests
def test_the_docs_exist():
    missing = [f for f in DOC_FILES if not (DOCS / f).is_file()]
    assert not missing, f"missing in docs/: {missing}"
    readme = (REPO / "README.md").read_text()
    assert "docs/method.md" in readme and "`docs/`" in readme


def test_every_citation_of_the_docs_resolves():
    problems = []
    for path in scanned_files():
        problems += citation_problems(path)
    assert not problems, "citations that point nowhere:\n" + "\n".join(problems)


def test_the_checker_catches_a_bad_citation(tmp_path):
    """The checker itself: a missing section, item, title, file and anchor are each reported."""
    d, m, s = "docs" + "/", "docs/method" + ".md", "\u00a7"  # assembled, so that this file cites nothing wrong
    bad = tmp_path / "bad.py"
    bad.write_text(f'"""{m} {s}9.9, {m} {s}4 item 99, {m} {s}1.3 "No such words",\n'
                   f'{d}nowhere.md, {m}#no-such-anchor, {m} {s}1.4 and {s}2.3."""\n')
    text = bad.read_text()
    found = []
    for m in DOC_REF.finditer(text):
        if not (DOCS / m.group("file")).is_file():
            found.append("file")
            continue
        if m.group("anchor") and m.group("anchor") not in doc_index(m.group("file"))["anchors"]:
            found.append("anchor")
        found += check_chain(text, m.end(), m.group("file"), "bad.py")[0]
    joined = "\n".join(str(f) for f in found)
    assert "no section \u00a79.9" in joined and "no \u00a74 item 99" in joined
    assert "does not contain \"No such words\"" in joined and "file" in found and "anchor" in found
    assert "1.4" not in joined and "2.3" not in joined


def test_nothing_cites_sources_outside_the_repository():
    offenders = []
    for path in scanned_files():
        for n, line in enumerate(file_text(path).splitlines(), 1):
            if PRIVATE_FOLDER in line or BARE_METHOD_REF.search(line):
                offenders.append(f"{rel(path)}:{n}: {line.strip()[:160]}")
    assert not offenders, ("cite docs/method.md (or another file of docs/) instead:\n" + "\n".join(offenders))


def test_method_doc_names_the_upstream_commits_and_cites_lines():
    text = (DOCS / "method.md").read_text()
    for full in ("81e54e02c53858d4d9010f24cb16c0db6dbdbdfb", "a5cbb1318dcbd371e98cd7acf35d7773fedf68ba"):
        assert full in text
    index = doc_index("method.md")
    # Every rule section cites lines of the official code.
    for sec in ("1.3", "1.4.2", "1.4.3", "1.4.4", "1.4.5", "1.4.6", "1.4.7", "1.4.8", "1.4.9", "1.4.10", "1.5",
                "1.6", "1.7", "2.3.1", "2.3.2", "2.3.3", "2.3.4", "2.3.5", "2.3.6"):
        assert re.search(r"\bL\d+", index["sections"][sec]), f"\u00a7{sec} cites no line"
    # The option table names every reference/corrected option of the heuristic with both values.
    from adapt.heuristic import VARIANT_OPTIONS

    options = {names[0]: cells for names, cells in table_fields("method.md", "1.4.12")}
    for key, value in VARIANT_OPTIONS["reference"].items():
        assert key in options, f"option {key} missing from \u00a71.4.12"
        for v in (value, VARIANT_OPTIONS["corrected"][key]):
            shown = json.dumps(v) if isinstance(v, str) else str(v)
            assert shown in options[key][1] + options[key][2], f"{key}: {shown} not in its row"
    # Every numbered decision from 1 to the last exists.
    numbers = sorted(n for (top, n) in index["items"] if top == "4")
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """Run every ```python block of docs/extending.md, in order, in a fresh interpreter in an empty folder."""
    text = (DOCS / "extending.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 4, "docs/extending.md should hold its worked example in ```python blocks"
    folder = tmp_path_factory.mktemp("extending")
    script = folder / "example.py"
    script.write_text("\n\n".join(blocks))
    env = dict(os.environ, ADAPT_DEVICE="cpu", ADAPT_RESULTS=str(folder / "results"))
    proc = subprocess.run([sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"the worked example failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return folder


def test_the_worked_example_of_extending_runs(example_run):
    assert (example_run / "runs" / "float32" / "record.json").is_file()
    assert (example_run / "runs" / "stepup" / "record.json").is_file()
    assert (example_run / "results" / "smoke" / "float32-tiny_cnn-quadrants-reference-s1-f0" / "record.json").is_file()


def test_results_format_lists_the_fields_of_records(example_run):
    from adapt.config import ExperimentConfig
    from adapt.experiments.configs import get_config
    from adapt.experiments.grid import failure_record
    from adapt.records import SCHEMA, environment_info

    text = (DOCS / "results-format.md").read_text()
    assert f"`{SCHEMA}`" in text and "adapt.records.SCHEMA" in text
    rows = table_fields("results-format.md", "3")
    documented = {n for names, _ in rows for n in names}
    always = {n for names, cells in rows if cells[2].lower().startswith("yes") for n in names}
    problems = []

    failure = failure_record(get_config("smoke/adapt/alexnet_cifar/digits"), "boom")
    if set(failure) != always:
        problems.append(f"failure_record keys {sorted(failure)} != the 'every record' fields {sorted(always)}")
    fresh = json.loads((example_run / "results" / "smoke" / "float32-tiny_cnn-quadrants-reference-s1-f0"
                        / "record.json").read_text())
    # policy_class is only in the record of a run trained with a policy object (tests/test_registries.py)
    if set(fresh) != documented - {"policy_class"}:
        problems.append(f"a record written by adapt.experiments.grid has {sorted(fresh)}, the doc lists {sorted(documented)}")

    records = committed_records()
    assert records, "no committed record under results/smoke/"
    records += [(example_run / "runs" / d / "record.json", None) for d in ("float32", "stepup")]
    config_fields = {f for f in ExperimentConfig.__dataclass_fields__}
    if field_names("results-format.md", "4") != config_fields:
        problems.append(f"\u00a74 lists {sorted(field_names('results-format.md', '4'))}, "
                        f"ExperimentConfig has {sorted(config_fields)}")
    epoch_fields = field_names("results-format.md", "6")
    final_fields = field_names("results-format.md", "8")
    env_fields = field_names("results-format.md", "5")
    missing_env = set(environment_info("cpu")) - env_fields
    if missing_env:
        problems.append(f"environment_info keys not in \u00a75: {sorted(missing_env)}")
    for path, record in records:
        record = record if record is not None else json.loads(path.read_text())
        name = rel(path) if path.is_relative_to(REPO) else path.name
        if record.get("schema") != SCHEMA:
            problems.append(f"{name}: schema {record.get('schema')!r}")
        if not always <= set(record) or not set(record) <= documented:
            problems.append(f"{name}: top-level keys {sorted(record)} do not match \u00a73")
        custom = {"stepup_next_format"}  # the example policy's own epoch field
        for e in record["epochs"]:
            extra = set(e) - epoch_fields - custom
            if extra:
                problems.append(f"{name}: epoch {e.get('epoch')} has fields not in \u00a76: {sorted(extra)}")
                break
        if set(record["final"]) - final_fields:
            problems.append(f"{name}: final fields not in \u00a78: {sorted(set(record['final']) - final_fields)}")
        if set(record["environment"]) - env_fields:
            problems.append(f"{name}: environment fields not in \u00a75: {sorted(set(record['environment']) - env_fields)}")
    assert not problems, "\n".join(problems)


def test_every_notebook_links_the_method_doc():
    """Each numbered notebook links docs/method.md (its anchors are checked by the citation test above)."""
    missing = [p.name for p in sorted((REPO / "notebooks").glob("[0-9][0-9]-*.ipynb"))
               if "](../docs/method.md" not in file_text(p)]
    assert not missing, f"notebooks without a link to docs/method.md: {missing}"
