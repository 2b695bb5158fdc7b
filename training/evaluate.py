#!/usr/bin/env python3
"""Compare checkpoints on one split: accuracy, macro-F1, per-class F1, params, FLOPs, CPU latency.

Examples:
  training/evaluate.py --data data/demo_pairs --out runs/eval runs/teacher/teacher.pt runs/student/student.pt
  training/evaluate.py --data data/demo_pairs --out runs/eval teacher=runs/t/teacher.pt ce=runs/ce/student.pt
"""
import argparse
import sys
from pathlib import Path

from mmkd_ros.core.atomic import check_writable
from mmkd_ros.core.errors import quiet_native_logs, run_cli
from mmkd_ros.tools.evaluate import evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="[NAME=]CKPT", help="checkpoints to compare")
    parser.add_argument("--data", type=Path, required=True, help="extracted pair dataset")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="report folder (default %(default)s)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] (latency is always CPU)")
    args = parser.parse_args(argv)
    quiet_native_logs()
    check_writable(args.out)
    named = [c.split("=", 1) if "=" in c else (None, c) for c in args.checkpoints]
    checkpoints = {name: path for name, path in named} if all(n for n, _ in named) else [p for _, p in named]
    evaluate(checkpoints, args.data, args.out, split=args.split, device=args.device)
    print(f"report: {args.out / 'report.md'}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
