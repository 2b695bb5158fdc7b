#!/usr/bin/env python3
"""Distillation methods at an equal budget on the synthetic demo bag, over several seeds.

Per seed: train the RGB+NIR teacher, ``twin`` (the teacher's architecture on RGB, cross-entropy),
then one RGB-only student per method (ce = the student alone, kd = Hinton, feat_l2 = FitNets-style
regression, adv = adversarial, adv+kd, adv+kd+feat), all with the same epochs, batch size and
optimiser; evaluate every model on the held-out test scenes. With ``--ceiling-scale`` (default 3)
also the RGB ceiling of each seed: ``ce`` and ``twin`` trained with every label on a recording of
that many times the scenes (fresh scenes of the same simulator), scored on the seed's own
validation and test scenes. Its recording is about 1 GB per simulated minute while it is
extracted (3x: 15 GB and about 7 minutes per seed on 2 CPU cores; 10x: 50 GB). Reports mean ± std of test accuracy and macro-F1, the share of the gap
between the RGB-only baseline (ce) and the teacher that each method closes, and against the RGB
ceiling (the ceiling's ``twin``), and student vs teacher parameters and FLOPs (the student must be
at most 1/5 of both). Writes its section of BENCHMARKS.md.

  .venv/bin/python bench/bench_distill.py                       # 3 seeds, defaults of config/train.yaml
  .venv/bin/python bench/bench_distill.py --seeds 0 --ceiling-scale 0 --no-write  # quick look
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable


import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmkd_ros.train import config as config_lib
from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.sim.synthetic import SyntheticConfig, write_bag
from mmkd_ros.tools.evaluate import evaluate, kept_validation
from mmkd_ros.core.atomic import write_atomic
from mmkd_ros.core.provenance import code_version, made_by
from bench.report_section import bar_chart, replace_section  # noqa: E402
from bench.runs import distilled, trained_teacher  # noqa: E402

TITLE = "Distillation methods at an equal budget (synthetic demo bag)"
CHART = REPO / "bench" / "figures" / "distill_synthetic.png"
METHODS = tuple(config_lib.METHODS)


def run_seed(config: config_lib.Config, dataset: Path, out: Path, methods: tuple[str, ...],
             reuse: bool = False, ceiling: Callable[[Path], dict[str, Path]] | None = None) -> dict:
    """Teacher, ``twin`` and every student for one seed; returns evaluate()'s report of the test split.

    ``reuse``: keep runs of ``out`` whose ``run.json`` records this code, config, inputs and thread count
    (:func:`~mmkd_ros.train.loop.claim_run`); any other run is made again. ``ceiling``: given the
    teacher, the checkpoints of the seed's RGB ceiling (:func:`run_ceiling`), scored here on this
    dataset's test and validation scenes.
    """
    teacher = trained_teacher(config, dataset, out / "teacher", reuse)
    checkpoints = {"teacher": teacher}
    runs = {"twin": config_lib.rgb_twin(config), **{m: config_lib.with_method(config, m) for m in methods}}
    for name, run_config in runs.items():
        checkpoints[name] = distilled(run_config, dataset, teacher, out / name, reuse)
    ceilings = ceiling(teacher) if ceiling else {}
    report = evaluate({**checkpoints, **ceilings}, dataset, out / "eval", split="test", latency_runs=30)
    report["validation"] = {name: kept_validation(path) for name, path in checkpoints.items()}
    if ceilings:  # trained on other scenes: scored on this seed's validation scenes, like the rest
        scored = evaluate(ceilings, dataset, out / "eval_ceiling_val", split="val", latency_runs=1)
        report["validation"].update({name: {m: scored["models"][name][m] for m in ("accuracy", "macro_f1")}
                                     for name in ceilings})
    return report


#: The ceiling's recordings use simulator seeds CEILING_SEED + s: scenes no seed's study drive holds.
CEILING_SEED = 5000


def run_ceiling(config: config_lib.Config, seed: int, duration: float, every: int, scale: float, epochs: int,
                teacher: Path, *, work: Path, reuse: bool) -> dict[str, Path]:
    """The RGB ceiling of a seed: ``ce`` and ``twin`` trained with every label on ``scale`` x
    ``duration`` s of fresh scenes, ``epochs`` epochs (the teacher lends input size and normalisation)."""
    sim = SyntheticConfig(seed=CEILING_SEED + seed, duration_s=duration * scale)
    dataset = work / f"pairs_seed{sim.seed}_{sim.duration_s:g}s_every{every}"
    made = {"code": code_version()["source"], "sim": asdict(sim), "every": every}
    if not (dataset / "made_by.json").is_file() or json.loads((dataset / "made_by.json").read_text()) != made:
        # The recording is about 1 GB per simulated minute: written, extracted, then deleted.
        bag = work / f"sim_seed{sim.seed}_{sim.duration_s:g}s"
        if bag.exists():
            shutil.rmtree(bag)
        write_bag(bag, sim)
        extract_bags([bag], dataset, BagOptions(every=every), force=True, progress=False)
        shutil.rmtree(bag)
        write_atomic(dataset / "made_by.json", json.dumps(made))
    models = {"ceiling_ce": config_lib.with_method(config, "ce"), "ceiling_twin": config_lib.rgb_twin(config)}
    return {name: distilled(config_lib.replace(model, distill={"epochs": epochs}), dataset, teacher,
                            work / f"seed{seed}" / name, reuse)
            for name, model in models.items()}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


CEILING = ("ceiling_ce", "ceiling_twin")  # the RGB ceiling's rows; "ceiling_twin" is the ceiling the gap is measured to


def summarise(reports: list[dict], methods: tuple[str, ...]) -> tuple[str, dict]:
    """Markdown table and a JSON-able summary over seeds."""
    ceiling = [n for n in CEILING if n in reports[0]["models"]]
    names = ["teacher", *(["twin"] if "twin" in reports[0]["models"] else []), *methods, *ceiling]
    summary: dict = {"models": {}}
    lines = ["| model | inputs | test accuracy | test macro-F1 | gap closed (accuracy) | gap to the RGB ceiling closed "
             "(accuracy) | validation accuracy (kept epoch) | gap closed on validation | gap to the RGB ceiling closed "
             "on validation | params | MFLOPs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        acc = [r["models"][name]["accuracy"] for r in reports]
        f1 = [r["models"][name]["macro_f1"] for r in reports]
        val = [r["validation"][name]["accuracy"] for r in reports]
        test_score = lambda r, m: r["models"][m]["accuracy"]  # noqa: E731
        val_score = lambda r, m: r["validation"][m]["accuracy"]  # noqa: E731
        gap, val_gap = closed_shares(reports, name, test_score), closed_shares(reports, name, val_score)
        top = "ceiling_twin" if "ceiling_twin" in ceiling and name != "ceiling_twin" else None
        gap_ceiling = closed_shares(reports, name, test_score, top) if top else []
        val_gap_ceiling = closed_shares(reports, name, val_score, top) if top else []
        first = reports[0]["models"][name]
        summary["models"][name] = {"accuracy": acc, "macro_f1": f1, "gap_closed": gap, "val_accuracy": val,
                                   "val_gap_closed": val_gap, "gap_closed_ceiling": gap_ceiling,
                                   "val_gap_closed_ceiling": val_gap_ceiling,
                                   "params": first["params"], "flops": first["flops"]}
        inputs = "RGB+NIR" if name == "teacher" else "RGB"
        baseline = "0 (baseline)" if name == "ce" else "-"
        shown = lambda values: mean_std(values) if values else baseline  # noqa: E731
        lines.append(f"| {name} | {inputs} | {mean_std(acc)} | {mean_std(f1)} | {shown(gap)} | {shown(gap_ceiling)} | "
                     f"{mean_std(val)} | {shown(val_gap)} | {shown(val_gap_ceiling)} | "
                     f"{first['params'] / 1e6:.2f} M | {first['flops'] / 1e6:.1f} |")
    return "\n".join(lines), summary


def closed_shares(reports: list[dict], name: str, score, top: str = "teacher") -> list[float]:
    """(name - ce) / (top - ce) per seed, seeds where ``top`` leads ``ce``; [] for ce, the teacher and ``top``."""
    if name in (top, "ce", "teacher"):
        return []
    return [(score(r, name) - score(r, "ce")) / (score(r, top) - score(r, "ce"))
            for r in reports if score(r, top) > score(r, "ce")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", type=Path, help="one bag for every seed (default: the demo bag's simulator, "
                                                 "seeded like the run, written into --work)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_distill")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--duration", type=float, default=270.0,
                        help="seconds of simulated recording per seed (default %(default)s: about 140 scenes, so "
                             "about 20 held-out test scenes per seed)")
    parser.add_argument("--every", type=int, default=6, help="keep every N-th pair (default %(default)s: "
                        "15 Hz frames of one scene are near-duplicates; more scenes, not more frames)")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "train.yaml")
    parser.add_argument("--ceiling-scale", type=float, default=3.0,
                        help="the RGB ceiling's recording, in --duration units of fresh scenes, every scene labelled "
                             "(default %(default)s; 0: no ceiling)")
    parser.add_argument("--ceiling-epochs", type=int, default=10, help="epochs of the ceiling's models")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --work (e.g. after "
                        "deleting one method's folders to redo it with new overrides)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    base = config_lib.load(args.config, ["device=cpu", *args.overrides])
    methods = tuple(args.methods)
    reports, pairs = [], []
    for seed in args.seeds:
        # Seed s = the demo bag's simulator with seed s (seed 0 is the demo bag itself): new scenes per
        # seed, so the spread covers the data as well as the initialisation.
        bag = args.bag or args.work / f"sim_seed{seed}_{args.duration:g}s"
        if args.bag is None and not bag.exists():
            write_bag(bag, SyntheticConfig(seed=seed, duration_s=args.duration))
        dataset = extract_bags([bag], args.work / f"pairs_seed{seed}_{args.duration:g}s_every{args.every}" if args.bag is None
                               else args.work / f"pairs_every{args.every}", BagOptions(every=args.every),
                               progress=False).path
        config = config_lib.replace(base, seed=seed)
        ceiling = None
        if args.ceiling_scale > 0:
            ceiling = functools.partial(run_ceiling, config, seed, args.duration, args.every, args.ceiling_scale,
                                        args.ceiling_epochs, work=args.work / "ceiling", reuse=args.reuse)
        reports.append(run_seed(config, dataset, args.work / f"seed{seed}", methods, args.reuse, ceiling))
        pairs.append(reports[-1]["num_pairs"])
        print(f"[bench_distill] seed {seed} done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
    table, summary = summarise(reports, methods)
    teacher = summary["models"]["teacher"]
    ratios = {m: (summary["models"][m]["params"] / teacher["params"], summary["models"][m]["flops"] / teacher["flops"])
              for m in methods}
    params_ratio, flops_ratio = next(iter(ratios.values()))
    within = params_ratio <= 0.2 and flops_ratio <= 0.2
    wall = time.perf_counter() - start
    command = "python bench/bench_distill.py " + " ".join(argv if argv is not None else sys.argv[1:])
    body = "\n".join([
        f"Command: `{command.strip()}` ({wall / 60:.1f} min on {torch.get_num_threads()} CPU threads, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}; {made_by()}).",
        "",
        f"Data: {'the bag ' + str(args.bag) if args.bag else f'the demo bag simulator (SyntheticConfig(seed=s, duration_s={args.duration:g}): scenes of 1.2-2.6 s, so about {args.duration / 1.9:.0f} scenes per bag)'}, "
        f"pairs extracted with every={args.every}, split by scene (70/15/15 % of the scenes of each class); "
        f"test pairs per seed: {pairs} (held-out scenes). Seeds {args.seeds}: one teacher per seed, every "
        f"student of a seed distilled from it with the same budget ({base.distill.epochs} epochs, batch "
        f"{base.data.batch_size}, input {base.data.input_size[0]}x{base.data.input_size[1]}). Teacher "
        f"`{base.teacher.arch}` (width {base.teacher.width}, fused after stage {base.teacher.fuse_at}), "
        f"student `{base.student.arch}` (width {base.student.width}). Mean ± std over seeds.",
        "",
        table,
        "",
        "`twin` = the teacher's architecture with RGB in both branches, trained with cross-entropy at the same "
        "budget. " + (f"RGB ceiling: `ce` (the student's architecture) and `twin` trained with every label on "
                      f"{args.ceiling_scale:g}x the recording ({args.ceiling_scale * args.duration:g} s of fresh scenes, "
                      f"simulator seed {CEILING_SEED} + s), {args.ceiling_epochs} epochs, scored on the seed's own "
                      "validation and test scenes; the gap to the RGB ceiling closed = (method - ce) / (ceiling_twin - "
                      "ce) per seed. " if args.ceiling_scale > 0 else "") +
        "Gap closed = (accuracy of the method - accuracy of ce) / (teacher accuracy - ce accuracy), per seed. "
        "Validation accuracy: the validation split's score of the epoch each run kept (that split picks the "
        "epoch and the settings; the test split only reports).",
        f"Student size: {params_ratio:.3f} of the teacher's parameters and {flops_ratio:.3f} of its FLOPs "
        f"({'within' if within else 'NOT within'} the 1/5 budget).",
    ])
    if not args.no_write:
        bar_chart({n: v["val_accuracy"] for n, v in summary["models"].items()},
                  f"synthetic bag: validation accuracy, {len(args.seeds)} seeds", "validation accuracy", CHART)
        body += f"\nChart (validation accuracy, mean ± std over seeds): `{CHART.relative_to(REPO)}`."
    print(body)
    (args.work / "summary.json").write_text(json.dumps({"summary": summary, "ratios": ratios, "wall_s": wall}, indent=2))
    if not args.no_write:
        replace_section(TITLE, body)


if __name__ == "__main__":
    main()
