"""Rewrite the results block of README.md from the committed smoke records.

    python tools/update_readme.py [--profile smoke] [--check]

The block lies between the markers of ``adapt.tables.README_BEGIN`` / ``README_END``;
``--check`` exits 1 if the README differs from what the records give (tests/test_readme.py
does the same check).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.results import load_records
from adapt.tables import README_BEGIN, README_END, readme_block

ROOT = Path(__file__).resolve().parents[1]


def render(readme: str, block: str) -> str:
    start, end = readme.index(README_BEGIN), readme.index(README_END)
    return readme[: start + len(README_BEGIN)] + "\n" + block + "\n" + readme[end:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    readme = path.read_text()
    new = render(readme, readme_block(load_records(ROOT / "results" / args.profile), args.profile))
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
