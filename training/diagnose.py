#!/usr/bin/env python3
"""Before distilling: does NIR help on this dataset, and how much of it does RGB carry?

Trains small probe CNNs on the train split and measures on val (a couple of minutes on a CPU for
about 1000 pairs): R^2 of NIR predicted from RGB; RGB-only vs RGB+NIR classifier accuracy and
macro-F1; an RGB-only model fed its NIR estimate; with --teacher, R^2 of the teacher's features
predicted from RGB. Prints the numbers in plain words (see mmkd_ros/diagnose.py for their meaning).

Examples:
  training/diagnose.py --data data/demo_pairs
  training/diagnose.py --data data/pairs --teacher runs/teacher/teacher.pt --json diag.json
"""
import argparse
import json
import sys
from pathlib import Path

from mmkd_ros.tools.diagnose import DiagnoseOptions, diagnose, render
from mmkd_ros.core.atomic import check_writable, write_atomic
from mmkd_ros.core.errors import quiet_native_logs, run_cli

DEFAULTS = DiagnoseOptions()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="extracted pair dataset")
    parser.add_argument("--teacher", type=Path, help="teacher checkpoint (adds the feature measurement)")
    parser.add_argument("--size", type=int, default=DEFAULTS.size, help="probe input size, px (default %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps, help="optimizer steps per probe (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=DEFAULTS.seeds, help="classifier seeds (default %(default)s)")
    parser.add_argument("--max-train", type=int, default=DEFAULTS.max_train, help="train pairs drawn at most (default %(default)s)")
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads, help="torch CPU threads (default %(default)s: the probes are tiny)")
    parser.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        options = DiagnoseOptions(size=args.size, steps=args.steps, seeds=args.seeds, max_train=args.max_train,
                                  threads=args.threads)
    except ValueError as exc:
        parser.error(str(exc))
    quiet_native_logs()
    if args.json:  # before minutes of probes, not after
        check_writable(args.json, "--json", folder=False)
    result = diagnose(args.data, options, args.teacher, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(render(result))
    if args.json:
        write_atomic(args.json, json.dumps(result.to_dict(), indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(run_cli(main))
