#!/usr/bin/env python3
"""The demo's figures over seeds: does the student beat the RGB-only baseline on unseen scenes?

Runs the offline part of ``training/demo.py`` (drives, extraction, teacher, baseline, student,
evaluation on the test drive; no live phase) for every seed and label share, then writes the
"Demo on the simulator" section of BENCHMARKS.md: mean ± std over seeds of the three models'
test accuracy and macro-F1, the gap closed, the paired student - baseline difference, and each
stage's median time; then, with ``--ceiling-scale`` (default 10), the RGB ceiling of each seed:
RGB-only models (the student's architecture, and the teacher's on RGB) trained with every label on
ten times the training drive, and the gap closed against that ceiling.

A finished cell (seed x share) is reused only when its ``eval/demo.json`` records this code
(the digest of the source, ``mmkd_ros.core.provenance``), this resolved config and this torch thread count
(``numerics``: it changes the trained models); otherwise its folder is deleted
and the cell runs again from the drives on.

    python bench/bench_demo.py                       # seeds 0 1 2, label shares 0.25 and 1
    python bench/bench_demo.py --seeds 0 --label-shares 0.25 --no-write
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from mmkd_ros.core.atomic import write_atomic
from mmkd_ros.core.provenance import code_version, made_by, numerics
from mmkd_ros.tools.demo import BASELINE, Drives, run_demo, runs_dir
from mmkd_ros.train import config as config_lib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.report_section import replace_section  # noqa: E402

TITLE = "Demo on the simulator: student vs RGB-only baseline vs teacher on unseen scenes"
STAGES = ("bags", "extraction", "teacher", "baseline", "student", "evaluation")


def cell_dir(work: Path, share: float, seed: int) -> Path:
    """The folder of one cell (label share x seed) under ``--work``."""
    return work / f"labels{share:g}_seed{seed}"


def run_cell(config: config_lib.Config, drives: Drives, work: Path) -> dict:
    """One demo run (offline), reused when its demo.json was made by this code and config."""
    record = work / "eval" / "demo.json"
    if record.is_file():
        done = json.loads(record.read_text())
        if (done.get("code") or {}).get("source") == code_version()["source"] and done.get("config") == config_lib.to_dict(config) \
                and done.get("drives") == drives.__dict__ and done.get("numerics") == numerics():
            print(f"[bench_demo] reusing {work} (same code, config and thread count)", file=sys.stderr)
            return done
        print(f"[bench_demo] {work} was made by other code, config or thread count: running it again", file=sys.stderr)
    if work.exists():
        shutil.rmtree(work)
    run_demo(config, work, drives, live=False)
    return json.loads(record.read_text())


def run_ceiling(config: config_lib.Config, seed: int, scale: float, epochs: int, teacher: Path,
                work: Path) -> dict:
    """The RGB ceiling of a seed: RGB-only models trained on ``scale`` times the training drive,
    every scene labelled, tested on the cell's own test drive (same seeds, same frames).

    ``ce`` is the student's architecture, ``twin`` the teacher's with RGB in both branches (width
    of the teacher). ``teacher`` only lends its input size and normalisation (``ce`` does not use
    the teacher otherwise). Reused when ``ceiling.json`` records this code and config.
    """
    from mmkd_ros.tools.demo import drives_dataset, write_drives
    from mmkd_ros.tools.evaluate import evaluate
    from mmkd_ros.train.distill import distill

    base = Drives(seed=seed, label_share=1.0)
    drives = Drives(seed=seed, label_share=1.0, train_s=base.train_s * scale)
    configs = {name: config_lib.replace(model, distill={"epochs": epochs})
               for name, model in (("ce", config_lib.with_method(config, "ce")), ("twin", config_lib.rgb_twin(config)))}
    key = {"code": code_version()["source"], "numerics": numerics(), "drives": drives.__dict__,
           "configs": {k: config_lib.to_dict(v) for k, v in configs.items()}}
    record = work / "ceiling.json"
    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("key") == key:
            print(f"[bench_demo] reusing {work} (same code and config)", file=sys.stderr)
            return done
    if work.exists():
        shutil.rmtree(work)
    began = time.perf_counter()
    dataset = drives_dataset(drives, write_drives(drives, work), work)
    for name, run_config in configs.items():
        distill(run_config, dataset, teacher, work / name)
    report = evaluate({name: work / name / "student.pt" for name in configs}, dataset, work / "eval",
                      split="test", device=config.device)
    done = {"key": key, "seconds": time.perf_counter() - began,
            "metrics": {name: {m: report["models"][name][m] for m in ("accuracy", "macro_f1")}
                        for name in configs}}
    write_atomic(work / "ceiling.json", json.dumps(done, indent=1))
    return done


def ceiling_lines(results: dict[float, list[dict]], ceilings: dict[int, dict], scale: float,
                  epochs: int) -> list[str]:
    """The RGB ceiling's rows and the gap each share's student closes against it."""
    seeds = sorted(ceilings)
    lines = [f"### The RGB ceiling: how much of the teacher's edge RGB can carry", "",
             f"RGB-only models trained with every label on {scale:g}x the training drive "
             f"({scale * Drives().train_s:g} s, about {scale:g}x the scenes), {epochs} epochs, tested on the same "
             "test drives; seeds " + ", ".join(map(str, seeds)) + ".", "",
             "| model | inputs | test accuracy | test macro-F1 |", "|---|---|---|---|"]
    names = {"ce": "`ce`, the student's architecture", "twin": "`twin`, the teacher's architecture on RGB"}
    for name in ("ce", "twin"):
        acc = [ceilings[s]["metrics"][name]["accuracy"] for s in seeds]
        f1 = [ceilings[s]["metrics"][name]["macro_f1"] for s in seeds]
        lines.append(f"| ceiling {names[name]} | RGB | {mean_std(acc)} | {mean_std(f1)} |")
    lines += ["", "Gap closed against the student architecture's ceiling, (student - baseline) / (ceiling `ce` - "
              "baseline) per seed, and the largest gap closed against the teacher that this ceiling allows, "
              "(ceiling `ce` - baseline) / (teacher - baseline):", ""]
    for share, cells in results.items():
        student = next(k for k in cells[0]["metrics"] if k.startswith("student"))
        against, allowed = [], []
        for c in cells:
            seed = c["drives"]["seed"]
            if seed not in ceilings:
                continue
            top = ceilings[seed]["metrics"]["ce"]["accuracy"]
            base, teacher = c["metrics"]["baseline"]["accuracy"], c["metrics"]["teacher"]["accuracy"]
            if top > base:
                against.append((c["metrics"][student]["accuracy"] - base) / (top - base))
            if teacher > base:
                allowed.append((top - base) / (teacher - base))
        lines.append(f"- {share:.0%} labelled: against the ceiling "
                     + (mean_std(against, "{:.2f}") if against else "- (the baseline reaches the ceiling)")
                     + "; the most the ceiling allows against the teacher "
                     + (mean_std(allowed, "{:.2f}") if allowed else "-"))
    return lines + [""]


def mean_std(values: list[float], fmt: str = "{:.3f}") -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.replace('+', '').format(std)}"


def share_table(cells: list[dict]) -> tuple[list[str], dict]:
    """Rows of one label share's table and its verdict figures."""
    student = next(k for k in cells[0]["metrics"] if k.startswith("student"))
    rows = []
    for key, name, inputs in (("teacher", "teacher", "RGB+NIR"), ("baseline", f"baseline `{BASELINE}`", "RGB"),
                              (student, f"student `{student[8:-1]}`", "RGB")):
        acc = [c["metrics"][key]["accuracy"] for c in cells]
        f1 = [c["metrics"][key]["macro_f1"] for c in cells]
        closed = "-" if key == "teacher" else "0 (baseline)" if key == "baseline" else \
            mean_std([c["gap_closed"]["accuracy"] for c in cells], "{:.2f}")
        closed_f1 = "-" if key == "teacher" else "0 (baseline)" if key == "baseline" else \
            mean_std([c["gap_closed"]["macro_f1"] for c in cells], "{:.2f}")
        val = [c["validation"][key]["accuracy"] for c in cells]
        rows.append(f"| {name} | {inputs} | {mean_std(acc)} | {mean_std(f1)} | {closed} | {closed_f1} | {mean_std(val)} |")
    acc = {k: [c["metrics"][k]["accuracy"] for c in cells] for k in ("baseline", student, "teacher")}
    diff = [s - b for s, b in zip(acc[student], acc["baseline"])]
    val_diff = [c["validation"][student]["accuracy"] - c["validation"]["baseline"]["accuracy"] for c in cells]
    spread = max(statistics.stdev(acc[student]), statistics.stdev(acc["baseline"])) if len(cells) > 1 else 0.0
    verdict = {
        "difference": mean_std(diff),
        "val_difference": mean_std(val_diff) + f" ({sum(d > 0 for d in val_diff)} of {len(cells)} seeds above)",
        "separated": statistics.mean(diff) > 2 * spread and len(cells) > 1,
        "spread": spread,
        "gap_closed": statistics.mean([c["gap_closed"]["accuracy"] for c in cells]),
        "student": statistics.mean(acc[student]), "baseline": statistics.mean(acc["baseline"]),
        "teacher": statistics.mean(acc["teacher"]),
        "baseline_epochs": sorted({c["baseline_epochs"] for c in cells}),
        "epochs": cells[0]["config"]["distill"]["epochs"],
        "test_scenes": [c["test_scenes"] for c in cells],
    }
    return rows, verdict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label-shares", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "train.yaml")
    parser.add_argument("--ceiling-scale", type=float, default=10.0,
                        help="the RGB ceiling's training drive, in training drives (every scene labelled; 0: "
                        "no ceiling; needs label share 1)")
    parser.add_argument("--ceiling-epochs", type=int, default=3, help="epochs of the ceiling's models")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results: dict[float, list[dict]] = {}
    for share in args.label_shares:
        for seed in args.seeds:
            config = config_lib.load(args.config, ["device=cpu", f"seed={seed}", *args.overrides])
            cell = run_cell(config, Drives(seed=seed, label_share=share), cell_dir(args.work, share, seed))
            results.setdefault(share, []).append(cell)
            print(f"[bench_demo] share {share:g} seed {seed}: {json.dumps(cell['metrics'])} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    ceilings: dict[int, dict] = {}
    if args.ceiling_scale > 0 and 1.0 in results:
        for cell in results[1.0]:
            seed = cell["drives"]["seed"]
            config = config_lib.load(args.config, ["device=cpu", f"seed={seed}", *args.overrides])
            teacher = runs_dir(cell_dir(args.work, 1.0, seed), Drives(**cell["drives"])) / "teacher" / "teacher.pt"
            ceilings[seed] = run_ceiling(config, seed, args.ceiling_scale, args.ceiling_epochs, teacher,
                                         args.work / f"ceiling{args.ceiling_scale:g}_seed{seed}")
            print(f"[bench_demo] ceiling seed {seed}: {json.dumps(ceilings[seed]['metrics'])} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    wall = time.perf_counter() - start
    command = "python bench/bench_demo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    first = next(iter(results.values()))[0]
    drives = Drives(**first["drives"])
    sims = drives.configs()
    lines = [
        f"Command: `{command.strip()}` ({wall / 60:.1f} min, {torch.get_num_threads()} CPU threads, "
        f"{platform.machine()}, torch {torch.__version__}; {made_by()}).",
        "",
        f"Drives per seed s (`mmkd_ros.tools.demo.Drives`): training {drives.train_s:g} s (seed s), validation "
        f"{drives.val_s:g} s (seed s+1000, model selection), test {drives.test_s:g} s (seed s+2000: scenes no model "
        f"saw); {sims['train'].width}x{sims['train'].height} at {sims['train'].rgb_rate_hz:g} Hz, scenes of "
        f"{sims['train'].scene_min_s:g}-{sims['train'].scene_max_s:g} s. Label share = share of the training "
        "drive's scenes whose label was published (the others carry an empty label). The teacher trains on the "
        "labelled frames; the student on every frame (its teacher terms need no label); the baseline on the "
        "labelled frames for as many optimiser steps as the student (more epochs when labels are scarce). "
        "Mean ± std over seeds " + ", ".join(map(str, args.seeds)) + ".",
        "",
    ]
    verdicts = {}
    for share, cells in results.items():
        rows, verdict = share_table(cells)
        verdicts[share] = verdict
        lines += [
            f"### {share:.0%} of the training scenes labelled",
            "",
            f"Test scenes per seed: {verdict['test_scenes']}; student {verdict['epochs']} epochs, baseline "
            f"{'/'.join(map(str, verdict['baseline_epochs']))} epochs (same steps).",
            "",
            "| model | inputs | test accuracy | test macro-F1 | gap closed (accuracy) | gap closed (macro-F1) "
            "| validation accuracy (kept epoch) |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Student - baseline, accuracy, paired by seed: {verdict['difference']} on the test drives "
            f"({'more' if verdict['separated'] else 'not more'} than two std of either model, "
            f"{2 * verdict['spread']:.3f}); {verdict['val_difference']} on the validation drives, which "
            "choose settings (the kept epoch's score, chosen on that drive: optimistic alike for both).",
            "",
        ]
    full = results.get(1.0)
    if full and len(results) > 1:
        ceiling = {c["drives"]["seed"]: c["metrics"]["baseline"]["accuracy"] for c in full}
        lines += ["Against the baseline trained with every label (same seed, same drives: what labels alone would "
                  "give this RGB model), accuracy:", ""]
        for share, cells in results.items():
            if share == 1.0:
                continue
            student = next(k for k in cells[0]["metrics"] if k.startswith("student"))
            closed = [(c["metrics"][student]["accuracy"] - c["metrics"]["baseline"]["accuracy"])
                      / (ceiling[c["drives"]["seed"]] - c["metrics"]["baseline"]["accuracy"])
                      for c in cells if ceiling.get(c["drives"]["seed"], 0) > c["metrics"]["baseline"]["accuracy"]]
            lines.append(f"- {share:.0%} labelled: student {verdicts[share]['student']:.3f}, baseline "
                         f"{verdicts[share]['baseline']:.3f}, baseline with every label "
                         f"{statistics.mean(ceiling.values()):.3f}; share of that gap the student closes: "
                         + (f"{mean_std(closed, '{:.2f}')} over {len(closed)} seeds" if closed else
                            "none (the fully labelled baseline is not ahead)"))
        lines.append("")
    if ceilings:
        lines += ceiling_lines(results, ceilings, args.ceiling_scale, args.ceiling_epochs)
    timings = {stage: statistics.median(c["timings"][stage] for cells in results.values() for c in cells)
               for stage in STAGES}
    lines += [
        "Stage times, median over the cells (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f"; total {sum(timings.values()):.0f} (the live phase is timed by `make demo`, below).",
        "",
        "Gap closed = (student - baseline) / (teacher - baseline) per seed, then mean ± std.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        replace_section(TITLE, body)


if __name__ == "__main__":
    main()
