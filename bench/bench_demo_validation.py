#!/usr/bin/env python3
"""Finished demo cells on one long validation drive: choose demo settings on validation, not test.

The demo's own validation drive (40 s, about 45 scenes) picks each run's epoch; it is too short to
tell two settings apart by a few points of accuracy. This script writes one longer drive of fresh
scenes (the validation drive's simulator settings, its own seed: no training, validation or test
drive of any seed shares it), extracts it, and evaluates the teacher, the baseline and the student
of every finished cell of ``bench/bench_demo.py`` work folders on it. Each folder is one setting;
cells of the same seed and label share are paired across folders. It reads the runs as they are and
names the commit, source digest and KD temperature each cell recorded in its ``eval/demo.json``.

    python bench/bench_demo_validation.py T4=/tmp/bench_demo_t4 T2=/tmp/bench_demo_t2 --out /tmp/long_val
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from mmkd_ros.core.atomic import write_atomic
from mmkd_ros.core.provenance import made_by
from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.data.splits import write_bag_splits
from mmkd_ros.sim.synthetic import plan_recording, write_bag
from mmkd_ros.tools.demo import Drives, runs_dir
from mmkd_ros.tools.evaluate import evaluate, kept_validation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_demo import mean_std  # noqa: E402

MODELS = {"teacher": ("teacher", "teacher.pt"), "baseline": ("baseline", "student.pt"), "student": ("student", "student.pt")}


def long_drive(out: Path, seconds: float, seed: int) -> Path:
    """The long validation drive's pair dataset (every pair in the val split), made once under ``out``."""
    sim = Drives(seed=seed, val_s=seconds).configs()["val"]  # the validation drive's settings, seed + 1000
    bag = out / f"val_seed{sim.seed}_{seconds:g}s"
    if not bag.exists():
        write_bag(bag, sim, workers=2)
    splits = write_bag_splits(out / f"splits_{bag.name}.json", {bag.name: "val"})
    return extract_bags([bag], out / f"dataset_{bag.name}", BagOptions(splits=str(splits), group_by="bag"),
                        progress=False).path


def cells(work: Path) -> dict[str, dict]:
    """``labels<share>_seed<s>`` -> its demo.json, for the finished cells of a bench_demo work folder."""
    found = {}
    for record in sorted(work.glob("labels*_seed*/eval/demo.json")):
        done = json.loads(record.read_text())
        found[record.parent.parent.name] = {**done, "runs": runs_dir(record.parent.parent, Drives(**done["drives"]))}
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="+", metavar="NAME=WORK", help="a bench_demo work folder per setting; "
                        "the first is the reference of the paired differences")
    parser.add_argument("--out", type=Path, required=True, help="folder for the drive, its pairs and the reports")
    parser.add_argument("--seconds", type=float, default=400.0, help="length of the drive (default %(default)s s)")
    parser.add_argument("--seed", type=int, default=6000, help="drive seed (default %(default)s; the simulator "
                        "gets seed + 1000, clear of every demo drive of seeds below 1000)")
    args = parser.parse_args(argv)
    settings = dict(s.split("=", 1) for s in args.settings)
    if any(not Path(w).is_dir() for w in settings.values()):
        parser.error("each setting is NAME=WORK with WORK a bench_demo work folder")
    start = time.perf_counter()
    dataset = long_drive(args.out, args.seconds, args.seed)
    scenes = len(plan_recording(Drives(seed=args.seed, val_s=args.seconds).configs()["val"]).scenes)
    found = {name: cells(Path(work)) for name, work in settings.items()}
    shared = sorted(set.intersection(*(set(c) for c in found.values())))
    if not shared:
        parser.error("the work folders have no finished cell (label share x seed) in common")
    scores: dict[str, dict[str, dict[str, float]]] = {name: {} for name in settings}
    own: dict[str, dict[str, dict[str, float]]] = {name: {} for name in settings}  # the cell's own drives
    provenance = []
    for name, by_cell in found.items():
        for cell in shared:
            done = by_cell[cell]
            report = evaluate({m: done["runs"] / run / ckpt for m, (run, ckpt) in MODELS.items()}, dataset,
                              args.out / "eval" / name / cell, split="val", latency_runs=0)
            scores[name][cell] = {m: report["models"][m]["accuracy"] for m in MODELS}
            student = next(k for k in done["metrics"] if k.startswith("student"))
            own[name][cell] = {"validation": kept_validation(done["runs"] / "student" / "student.pt")["accuracy"],
                               "test": done["metrics"][student]["accuracy"]}
            provenance.append(f"{name} {cell}: commit {done['code']['commit'][:12]}, source {done['code']['source']}, "
                              f"KD temperature {done['config']['distill']['kd_temperature']:g}")
            print(f"[bench_demo_validation] {name} {cell}: {scores[name][cell]}", file=sys.stderr)
    reference = next(iter(settings))
    lines = [
        f"Command: `python bench/bench_demo_validation.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"({(time.perf_counter() - start) / 60:.1f} min, torch threads {torch.get_num_threads()}, {platform.machine()}; "
        f"{made_by()}).", "",
        f"One validation drive of {args.seconds:g} s ({scenes} scenes, simulator seed {args.seed + 1000}), accuracy; "
        f"cells {', '.join(shared)}.", "",
        f"| setting | teacher | baseline `ce` | student | student - baseline, paired | gap closed | student - {reference}, paired |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in settings:
        s = scores[name]
        col = {m: [s[c][m] for c in shared] for m in MODELS}
        lead = [s[c]["student"] - s[c]["baseline"] for c in shared]
        gap = [(s[c]["student"] - s[c]["baseline"]) / (s[c]["teacher"] - s[c]["baseline"])
               for c in shared if s[c]["teacher"] > s[c]["baseline"]]
        diff = [s[c]["student"] - scores[reference][c]["student"] for c in shared]
        versus = "-" if name == reference else (f"{mean_std(diff, '{:+.3f}')} ({sum(d > 0 for d in diff)} of "
                                                f"{len(diff)} above)")
        lines.append(f"| {name} | {mean_std(col['teacher'])} | {mean_std(col['baseline'])} | {mean_std(col['student'])} "
                     f"| {mean_std(lead, '{:+.3f}')} ({sum(d > 0 for d in lead)} of {len(lead)} above) | "
                     f"{mean_std(gap, '{:.2f}') if gap else '-'} | {versus} |")
    lines += ["", "The same students on each cell's own drives (accuracy; the 40 s validation drive scored at the "
              "epoch it chose, and the test drive, which only reports):", "",
              f"| setting | student, own validation drive | student - {reference}, paired | student, test drive | "
              f"student - {reference}, paired |", "|---|---|---|---|---|"]
    for name in settings:
        row = [f"| {name}"]
        for drive in ("validation", "test"):
            values = [own[name][c][drive] for c in shared]
            diff = [own[name][c][drive] - own[reference][c][drive] for c in shared]
            row += [mean_std(values), "-" if name == reference else
                    f"{mean_std(diff, '{:+.3f}')} ({sum(d > 0 for d in diff)} of {len(diff)} above)"]
        lines.append(" | ".join(row) + " |")
    lines += ["", "Cells evaluated: " + "; ".join(provenance) + "."]
    body = "\n".join(lines)
    print(body)
    write_atomic(args.out / "summary.json", json.dumps({"scores": scores, "own": own, "cells": shared}, indent=1) + "\n")


if __name__ == "__main__":
    main()
