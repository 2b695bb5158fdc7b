#!/usr/bin/env python3
"""The main job on the simulator: does the teacher help an RGB-only student where labels are scarce?

Writes three simulated drives (training: a quarter of its scenes labelled, validation, test: scenes
no model saw), trains the RGB+NIR teacher, the RGB-only baseline and the distilled student at the
same budget, evaluates all three on the test drive (OUT/eval/report.md, OUT/eval/demo.png), then
replays the test drive into student_node as real ROS processes; ends with one line.

Examples:
  training/demo.py --out runs/demo
  training/demo.py --out runs/demo --full-labels            # the fully labelled variant
  training/demo.py --out runs/demo --live-teacher --rate 1  # teacher_node live too
  training/demo.py --out runs/demo --seed 3 distill.epochs=12
"""
import argparse
import sys
from pathlib import Path

from mmkd_ros.core.errors import run_cli
from mmkd_ros.tools.demo import Drives, run_demo
from mmkd_ros.train import config as config_lib

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "train.yaml"
DEFAULTS = Drives()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default %(default)s)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drives and of training (default 0)")
    parser.add_argument("--label-share", type=float, default=DEFAULTS.label_share,
                        help="share of the training drive's scenes that are labelled (default %(default)s)")
    parser.add_argument("--full-labels", action="store_true", help="label every training scene (--label-share 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="drive lengths times this (default 1: 200 s / 40 s / 80 s at 5 Hz)")
    parser.add_argument("--train-s", type=float, help="length of the training drive in s (default: 200 x --scale)")
    parser.add_argument("--train-scenes-s", type=float, nargs=2, metavar=("MIN", "MAX"),
                        default=(DEFAULTS.train_scene_min_s, DEFAULTS.train_scene_max_s),
                        help="scene lengths of the training drive in s (default %(default)s; shorter: more scenes, same frames)")
    parser.add_argument("--rate", type=float, default=4.0, help="live replay speed factor (default %(default)s)")
    parser.add_argument("--live-teacher", action="store_true", help="run teacher_node live beside student_node")
    parser.add_argument("--no-live", action="store_true", help="stop after the offline evaluation")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    share = 1.0 if args.full_labels else args.label_share
    if not 0.0 < share <= 1.0 or not args.scale > 0 or not args.rate > 0:
        parser.error("--label-share must be in (0, 1], --scale and --rate > 0")
    if args.train_s is not None and not args.train_s > 0:
        parser.error("--train-s must be > 0")
    if not 0 < args.train_scenes_s[0] <= args.train_scenes_s[1]:
        parser.error("--train-scenes-s needs 0 < MIN <= MAX")
    config = config_lib.load(args.config, [f"seed={args.seed}", *args.overrides])
    drives = Drives(seed=args.seed, label_share=share,
                    train_s=args.train_s if args.train_s is not None else DEFAULTS.train_s * args.scale,
                    val_s=DEFAULTS.val_s * args.scale, test_s=DEFAULTS.test_s * args.scale,
                    train_scene_min_s=args.train_scenes_s[0], train_scene_max_s=args.train_scenes_s[1])
    result = run_demo(config, args.out, drives, live=not args.no_live, live_teacher=args.live_teacher,
                      rate=args.rate)
    print(result.summary)


if __name__ == "__main__":
    sys.exit(run_cli(main))
