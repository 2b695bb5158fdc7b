#!/usr/bin/env python3
"""Export a student checkpoint to ONNX (dynamic batch, with metadata); check parity against PyTorch.

Example:
  training/export.py runs/demo/student/student.pt --out runs/demo/export
"""
import argparse
import sys
from pathlib import Path

from mmkd_ros.core.errors import run_cli
from mmkd_ros.tools.export import FORMATS, export_student


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="student checkpoint (.pt)")
    parser.add_argument("--out", type=Path, help="output folder (default: next to the checkpoint)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma list of %(default)s")
    parser.add_argument("--opset", type=int, default=18)
    args = parser.parse_args(argv)
    result = export_student(args.checkpoint, args.out or args.checkpoint.parent,
                            tuple(f.strip() for f in args.formats.split(",") if f.strip()), args.opset)
    for name, path in result.paths.items():
        print(f"{name}: {path}  parity max |diff| vs PyTorch = {result.max_abs_diff[name]:.3g}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
