#!/usr/bin/env python3
"""Train the two-branch RGB+NIR teacher on an extracted pair dataset.

Examples:
  training/train_teacher.py --data data/demo_pairs --out runs/teacher
  training/train_teacher.py --data data/demo_pairs --out runs/teacher teacher.epochs=20 teacher.fuse_at=3
  torchrun --nproc_per_node=2 training/train_teacher.py --data data/demo_pairs --out runs/teacher
  training/train_teacher.py --data data/demo_pairs --out runs/teacher --resume
"""
import argparse
import sys
from pathlib import Path

from mmkd_ros.train import config as config_lib
from mmkd_ros.core.atomic import check_writable
from mmkd_ros.core.errors import quiet_native_logs, run_cli
from mmkd_ros.train.teacher import train_teacher

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "train.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="extracted pair dataset (training/extract.py)")
    parser.add_argument("--out", type=Path, default=Path("runs/teacher"), help="run folder (default %(default)s)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML (default config/train.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last.pt (overrides must agree with its recorded "
                             "config; teacher.epochs may grow)")
    parser.add_argument("--seed", type=int, help="shortcut for seed=N")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. teacher.epochs=20")
    args = parser.parse_args(argv)
    quiet_native_logs()
    check_writable(args.out)
    overrides = args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])
    best = train_teacher(config_lib.load(args.config, overrides), args.data, args.out, resume=args.resume,
                         given=config_lib.override_keys(overrides))
    print(f"teacher checkpoint: {best}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
