#!/usr/bin/env python3
"""Give a dataset extracted from converter bags the converter's split (group = bag = image/block).

Usage: bench/realdata/apply_splits.py DATASET_DIR CONVERSION_DIR/splits.json
See :func:`bench.realdata.common.apply_splits` for why the extractor's default groups do not do
here. Extracting with ``training/extract.py --bag OUT/bags/* --splits OUT/splits.json`` gives the
same manifest in one step.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.realdata.common import apply_splits
from mmkd_ros.core.errors import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="extracted pair dataset folder")
    parser.add_argument("splits", type=Path, help="splits.json written by a converter")
    args = parser.parse_args(argv)
    counts = apply_splits(args.dataset, args.splits)
    print(f"{args.dataset}: " + ", ".join(f"{n} pairs in {s}" for s, n in sorted(counts.items())))


if __name__ == "__main__":
    sys.exit(run_cli(main))
