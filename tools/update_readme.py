"""Rewrite the generated blocks of README.md: the verdict (mnist5k, smoke and decomposition records) and the smoke results.

    python tools/update_readme.py [--profile smoke] [--results DIR] [--check]

The block lies between the markers of ``adapt.analysis.tables.README_BEGIN`` / ``README_END``;
``--check`` exits 1 if the README differs from what the records give (tests/test_readme.py
does the same check).  The records are read from ``<repo>/results/<profile>`` (the
committed ones the README describes; ``--results`` names another root) with
``adapt.analysis.tables.load_profile``, which reads each run from its ``<run_id>/record.json``
only and skips a bad one with a warning naming it; only the profile's grid records enter the tables (``adapt.analysis.tables.readme_block``),
and other records there (custom runs) are named below the block's first line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.analysis.tables import README_BEGIN, README_END, load_profile, readme_block
from adapt.analysis.verdict import VERDICT_BEGIN, VERDICT_END, verdict_block
from adapt.experiments.decomposition import decomposition_points, load_decomposition

ROOT = Path(__file__).resolve().parents[1]


def render(readme: str, block: str, begin: str = README_BEGIN, end_marker: str = README_END) -> str:
    start, end = readme.index(begin), readme.index(end_marker)
    return readme[: start + len(begin)] + "\n" + block + "\n" + readme[end:]


def verdict(results: Path) -> str:
    """The verdict block from the mnist5k grid and the smoke grid's AlexNet records under ``results``."""
    mnist = load_profile("mnist5k", results).records
    digits = [r for r in load_profile("smoke", results).records if r["config"]["model"] == "alexnet_cifar"]
    decomposition, _ = load_decomposition(decomposition_points(grid_root=results, missing="skip"), results)
    return verdict_block(mnist, digits, decomposition)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--results", default=str(ROOT / "results"),
                        help="results root holding <profile>/*/record.json (default: the repository's results/)")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    readme = path.read_text()
    data = load_profile(args.profile, Path(args.results))
    new = render(readme, readme_block(data.records + data.others, args.profile))
    new = render(new, verdict(Path(args.results)), VERDICT_BEGIN, VERDICT_END)
    if args.check:
        if new != readme:
            print("README.md results block is out of date: run python tools/update_readme.py", file=sys.stderr)
            return 1
        return 0
    if new != readme:
        path.write_text(new)
        print("README.md results block updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
