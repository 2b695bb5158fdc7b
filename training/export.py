#!/usr/bin/env python3
"""Export a student checkpoint to ONNX (dynamic batch, with metadata) and TorchScript; check parity.

Example:
  training/export.py runs/demo/student/student.pt --out runs/demo/export
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Idle OpenMP threads sleep instead of spinning: on a shared CPU, spinning made training 10-60x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mmkd_ros.errors import run_cli  # noqa: E402
from mmkd_ros.export import FORMATS, export_student  # noqa: E402


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
