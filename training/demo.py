#!/usr/bin/env python3
"""The main job on a bag (default: the synthetic demo bag, written when absent).

Bag -> pair dataset -> teacher -> adversarially distilled student -> report, then the bag replayed
into the student node as real ROS processes with live accuracy and latency; ends with one line.

Examples:
  training/demo.py --bag data/demo_bag --out runs/demo
  training/demo.py --bag data/demo_bag --out runs/demo --rate 2.0 distill.epochs=4
"""
import argparse
import sys
from pathlib import Path

from mmkd_ros.train import config as config_lib
from mmkd_ros.tools.demo import run_demo
from mmkd_ros.core.errors import run_cli

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "train.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", type=Path, default=Path("data/demo_bag"), help="bag (written if absent)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default %(default)s)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default %(default)s)")
    parser.add_argument("--no-live", action="store_true", help="stop after the offline chain")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    config = config_lib.load(args.config, list(args.overrides))
    print(run_demo(config, args.bag, args.out, rate=args.rate, live=not args.no_live))


if __name__ == "__main__":
    sys.exit(run_cli(main))
