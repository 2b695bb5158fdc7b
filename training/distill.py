#!/usr/bin/env python3
"""Distill the RGB-only student from the RGB+NIR teacher; with --bag, run the whole offline chain.

Given only a bag: extract the pairs (cached by the bag's content), train the teacher unless
--teacher is given, distill the student, export it to OUT/student/student.onnx (checked against
PyTorch; student_node runs it without torch; --no-onnx skips it), evaluate both (report in
OUT/eval/report.md). With --data, --teacher and --no-eval it distills only (OUT/student.pt),
nothing else.

Without --resume every run in OUT is trained afresh; the extraction in OUT/dataset is reused while
the bags and the extraction options are unchanged, and --force extracts again regardless. --resume
continues the runs in OUT with their recorded config: key=value overrides (and --method, --seed)
that differ from it are refused, except teacher.epochs / distill.epochs, which extend a run.

Examples:
  training/distill.py --bag data/demo_bag --out runs/demo
  training/distill.py --bag bags/* --splits splits.json --out runs/real   # split by bag
  training/distill.py --data data/demo_pairs --teacher runs/teacher/teacher.pt --method adv+kd
  training/distill.py --data data/demo_pairs --teacher runs/teacher/teacher.pt --no-eval --out runs/s
  training/distill.py --bag data/demo_bag --out runs/demo distill.w_adv=1.0 distill.gan_loss=hinge
  training/distill.py --bag data/demo_bag --out runs/demo --resume distill.epochs=20   # extend a run
  torchrun --nproc_per_node=2 training/distill.py --bag data/demo_bag --out runs/demo
"""
import argparse
import sys
from pathlib import Path

from mmkd_ros.train import config as config_lib
from mmkd_ros.core.atomic import check_writable
from mmkd_ros.core.errors import ConfigError, quiet_native_logs, run_cli
from mmkd_ros.data.extract import BagOptions
from mmkd_ros.tools.pipeline import run_chain
from mmkd_ros.train.distill import distill

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
    parser.add_argument("--method", choices=list(config_lib.METHODS), help="shortcut for distill.method=...")
    parser.add_argument("--resume", action="store_true",
                        help="continue the runs in --out (overrides must agree with their recorded config; "
                             "teacher.epochs and distill.epochs may grow)")
    parser.add_argument("--force", action="store_true",
                        help="extract the bags again even when --out holds their cached pair dataset")
    parser.add_argument("--seed", type=int, help="shortcut for seed=N")
    parser.add_argument("--group-by", choices=("segment", "bag"),
                        help="extraction groups: <bag>:<label segment> (default) or whole bags")
    parser.add_argument("--splits", type=Path, metavar="FILE",
                        help="bag-splits JSON giving every bag its split (groups become bag names)")
    parser.add_argument("--no-onnx", action="store_true",
                        help="do not export student.onnx beside student.pt (the node then runs the .pt with torch)")
    parser.add_argument("--no-eval", action="store_true",
                        help="distill only (needs --data and --teacher): no report, no other stage")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. distill.w_adv=1.0")
    args = parser.parse_args(argv)
    quiet_native_logs()
    overrides = list(args.overrides)
    misplaced = [b for b in args.bag or [] if "=" in str(b) and not b.exists()]
    if misplaced:  # --bag takes every following word: an override there is no bag
        parser.error(f"--bag {misplaced[0]}: no such bag; a key=value override after --bag is read as a bag, "
                     "so put overrides before --bag or after another option such as --out")
    if args.bag is None and (args.splits is not None or args.group_by is not None):
        parser.error("--splits and --group-by apply to --bag only")
    if args.no_eval and (args.data is None or args.teacher is None):
        parser.error("--no-eval distills only: give --data DATASET_DIR and --teacher CKPT")
    if args.resume and args.force:
        raise ConfigError("--resume continues the runs in --out and --force starts them afresh; give one of them")
    check_writable(args.out)
    bag_options = None
    if args.bag and (args.splits is not None or args.group_by is not None):
        bag_options = BagOptions(group_by=args.group_by or "segment",
                                 splits=None if args.splits is None else str(args.splits))
    overrides += [f"distill.method={args.method}"] if args.method else []
    overrides += [f"seed={args.seed}"] if args.seed is not None else []
    config = config_lib.load(args.config, overrides)
    given = config_lib.override_keys(overrides)
    if args.no_eval:
        student = distill(config, args.data, args.teacher, args.out, resume=args.resume, given=given)
        print(f"student checkpoint: {student}")
        return
    result = run_chain(config, args.out, bag=args.bag, data=args.data, teacher=args.teacher, resume=args.resume,
                       bag_options=bag_options, force=args.force, given=given, export_onnx=not args.no_onnx)
    if result.report is not None:
        print(f"student checkpoint: {result.student}\nreport: {result.report}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
