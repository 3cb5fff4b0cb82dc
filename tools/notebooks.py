"""Execute the numbered notebooks with papermill and keep their committed form clean.

    python tools/notebooks.py run   [NOTEBOOK ...] [--out DIR] [-p NAME VALUE ...]
    python tools/notebooks.py clean [NOTEBOOK ...]
    python tools/notebooks.py check [NOTEBOOK ...]

``run`` executes each notebook at its parameter defaults (kernel ``python3``, working
directory ``notebooks/``) into ``--out`` (default: in place), cleans the result and fails
on the first error.  ``clean`` strips what changes on every execution and would make
diffs unreadable: papermill's metadata and timestamps, execution counts of unchanged
cells stay, the kernelspec is normalised to ``python3``.  ``check`` reports notebooks
that are not clean (used by the tests).

Where the notebooks read and write does not depend on the working directory: their path
parameters ``results_root`` and ``figures_dir`` default to ``None``, meaning
``adapt.paths.results_root()`` (``$ADAPT_RESULTS``, else ``<repo>/results``) and
``adapt.paths.figures_root()`` (``$ADAPT_FIGURES``, else ``<repo>/figures``).  Override
them per run (``-p results_root /tmp/copy``; a relative value is taken relative to the
repository) or for every notebook through the environment, which the kernels inherit
(``ADAPT_FIGURES=$PWD/notebooks/executed/figures``, as ``make notebooks-test`` does so that
a test run leaves the committed ``figures/`` alone).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from adapt.experiments.runner import KERNEL_ARGUMENTS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def numbered(paths=None) -> list:
    if paths:
        return [Path(p).resolve() for p in paths]
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


def clean(nb) -> bool:
    """Strip run-specific metadata in place; return True if anything changed."""
    before = nbformat.writes(nb)
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    for key in list(nb.metadata.get("language_info", {})):
        if key not in ("name", "pygments_lexer", "codemirror_mode", "file_extension", "mimetype", "nbconvert_exporter"):
            nb.metadata["language_info"].pop(key)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill draws a new random id on every run
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                out.get("metadata", {}).pop("papermill", None)
    return nbformat.writes(nb) != before


def problems(nb) -> list:
    found = []
    if "papermill" in nb.metadata:
        found.append("papermill metadata")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        found.append("kernelspec is not python3")
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        found.append("no cell tagged 'parameters'")
    for c in nb.cells:
        if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", [])):
            found.append("a stored output is an error")
            break
    return found


def run(paths, out_dir=None, parameters=None) -> None:
    import papermill

    for path in numbered(paths):
        target = (Path(out_dir) / path.name) if out_dir else path
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"executing {path.relative_to(ROOT)} -> {target}", flush=True)
        papermill.execute_notebook(str(path), str(target), parameters=parameters or {}, kernel_name="python3",
                                   cwd=str(NOTEBOOKS), progress_bar=False, log_output=False,
                                   extra_arguments=list(KERNEL_ARGUMENTS))
        # in place or not (results/<profile>/notebooks/ are committed too): no timestamps, no paths
        nb = nbformat.read(target, as_version=4)
        clean(nb)
        nbformat.write(nb, target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "clean", "check"))
    parser.add_argument("notebooks", nargs="*")
    parser.add_argument("--out", default=None, help="write executed copies here instead of in place")
    parser.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                        help="papermill parameter (value parsed as Python literal when possible)")
    args = parser.parse_args(argv)
    if args.command == "run":
        import ast

        params = {}
        for name, value in args.p:
            try:
                params[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                params[name] = value
        run(args.notebooks, args.out, params)
        return 0
    bad = 0
    for path in numbered(args.notebooks):
        nb = nbformat.read(path, as_version=4)
        if args.command == "clean":
            if clean(nb):
                nbformat.write(nb, path)
                print(f"cleaned {path.name}")
        else:
            for p in problems(nb):
                print(f"{path.name}: {p}")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
