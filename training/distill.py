#!/usr/bin/env python3
"""Distill the RGB-only student from the RGB+NIR teacher; with --bag, run the whole offline chain.

Given only a bag: extract the pairs (cached by the bag's content), train the teacher unless
--teacher is given, distill the student, evaluate both (report in OUT/eval/report.md).

Examples:
  training/distill.py --bag data/demo_bag --out runs/demo
  training/distill.py --bag bags/* --splits splits.json --out runs/real   # split by bag
  training/distill.py --data data/demo_pairs --teacher runs/teacher/teacher.pt --method adv+kd
  training/distill.py --bag data/demo_bag --out runs/demo distill.w_adv=1.0 distill.gan_loss=hinge
  torchrun --nproc_per_node=2 training/distill.py --bag data/demo_bag --out runs/demo
"""
import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Idle OpenMP threads sleep instead of spinning: on a shared CPU, spinning made training 10-60x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mmkd_ros import config as config_lib  # noqa: E402
from mmkd_ros.errors import run_cli  # noqa: E402
from mmkd_ros.train.pipeline import run_chain  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "train.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bag", action="extend", nargs="+", type=Path, metavar="BAG",
                        help="rosbag2 folder(s) or ROS 1 .bag(s) with RGB, NIR and label topics; several per flag")
    source.add_argument("--data", type=Path, help="already extracted pair dataset")
    parser.add_argument("--teacher", type=Path, help="teacher checkpoint (default: train one)")
    parser.add_argument("--out", type=Path, default=Path("runs/distill"), help="output folder (default %(default)s)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML (default config/train.yaml)")
    parser.add_argument("--method", choices=config_lib.METHODS, help="shortcut for distill.method=...")
    parser.add_argument("--resume", action="store_true", help="continue the runs in --out")
    parser.add_argument("--seed", type=int, help="shortcut for seed=N")
    parser.add_argument("--group-by", choices=("segment", "bag"),
                        help="extraction groups: <bag>:<label segment> (default) or whole bags")
    parser.add_argument("--splits", type=Path, metavar="FILE",
                        help="bag-splits JSON giving every bag its split (groups become bag names)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. distill.w_adv=1.0")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.bag:
        # `--bag B key=value` would read the override as a second bag: give it back to overrides.
        is_override = [re.fullmatch(r"[A-Za-z_][\w.]*=.*", str(b)) is not None and not b.exists() for b in args.bag]
        overrides = [str(b) for b, o in zip(args.bag, is_override) if o] + overrides
        args.bag = [b for b, o in zip(args.bag, is_override) if not o]
        if not args.bag:
            parser.error("--bag needs a bag path")
    elif args.splits is not None or args.group_by is not None:
        parser.error("--splits and --group-by apply to --bag only")
    bag_options = None
    if args.bag and (args.splits is not None or args.group_by is not None):
        from mmkd_ros.data.extract import BagOptions

        bag_options = BagOptions(group_by=args.group_by or "segment",
                                 splits=None if args.splits is None else str(args.splits))
    overrides += [f"distill.method={args.method}"] if args.method else []
    overrides += [f"seed={args.seed}"] if args.seed is not None else []
    result = run_chain(config_lib.load(args.config, overrides), args.out, bag=args.bag, data=args.data,
                       teacher=args.teacher, resume=args.resume, bag_options=bag_options)
    if result.report is not None:
        print(f"student checkpoint: {result.student}\nreport: {result.report}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
