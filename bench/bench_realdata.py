#!/usr/bin/env python3
"""The method study on real RGB/red + NIR bags (CWFID, Houston 2018), one command per dataset.

Per seed: the RGB+NIR teacher, the RGB-only ``ce`` baseline, an RGB-only model as large as the
teacher (``rgb_twin_resnet18_mid``: is the teacher's edge NIR or capacity?), and the students
``kd``, ``feat_l2``, ``adv``, ``adv+kd`` and ``adv+kd+feat``, each trained twice: on every paired
frame of the training bags (labelled or not; cross-entropy only where a label exists) and on the
labelled frames only. Everything at one budget; evaluated on the validation bags (the converters'
image / block split). Reports accuracy and macro-F1 (mean ± std over seeds, and a 95 % interval
over the validation bags, drawn with replacement), the share of the ce-to-teacher
gap each closes, parameters, FLOPs and CPU latency, writes a bar chart PNG and its section of
BENCHMARKS.md.

  python bench/realdata/convert_cwfid.py --out /tmp/cwfid          # once: bags + splits.json
  python bench/bench_realdata.py --conversion /tmp/cwfid --name cwfid
  python bench/bench_realdata.py --conversion /tmp/houston --name houston --every 1

``--label-share 0.25`` keeps the labels of a quarter of the training bags only (the others become
unlabelled drives), the setting of a robot that records far more than anyone annotates.
Runs already finished in ``--work`` are reused, and an interrupted one continues, only when their
``run.json`` records the same source, resolved config, inputs (dataset, teacher file) and torch thread count; any other
run is deleted and made again.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench.* when run as a script

from mmkd_ros.train import config as config_lib
from mmkd_ros.core.atomic import atomic_path, write_atomic
from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.data.manifest import MANIFEST_NAME, read_manifest, write_manifest
from mmkd_ros.data.splits import read_bag_splits
from mmkd_ros.core.errors import DatasetError, run_cli
from mmkd_ros.core.provenance import made_by
from bench.report_section import bar_chart, replace_section  # noqa: E402
from bench.runs import distilled, trained_teacher  # noqa: E402

STUDENTS = ("kd", "feat_l2", "adv", "adv+kd", "adv+kd+feat", "adv_task", "adv_task+kd+feat", "kd+hall",
            "adv+kd+feat+hall")  # with a teacher term
# Study budget (overridable with key=value): small inputs so 3 seeds x 13 runs fit a CPU afternoon.
STUDY_OVERRIDES = ["device=cpu", "select_by=macro_f1", "data.class_balanced=true", "data.input_size=[32, 32]",
                   "data.batch_size=64", "teacher.epochs=8", "distill.epochs=8"]


def run_name(method: str, unlabelled: bool) -> str:
    return method if unlabelled or method in ("ce", "twin", "teacher") else f"{method}-labelled"


def plan(methods: tuple[str, ...], has_unlabelled: bool, variant: str = "") -> list[tuple[str, str, bool]]:
    """(run name, method, keeps unlabelled pairs) of every student run of one seed.

    A ``variant`` (an ablation run with extra overrides) suffixes the distilled students' names;
    the teacher, ``ce`` and ``twin`` runs are shared with the main study.
    """
    runs = [("ce", "ce", False), ("twin", "ce", False)]
    suffix = f"[{variant}]" if variant else ""
    for method in methods:
        runs.append((run_name(method, True) + suffix, method, True))
        if has_unlabelled:
            runs.append((run_name(method, False) + suffix, method, False))
    return runs


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def train_teacher_job(config_tree: dict, dataset: str, out: str) -> str:
    """The teacher of a seed (:func:`bench.runs.trained_teacher`, in a worker process)."""
    return str(trained_teacher(config_lib.from_dict(config_tree), dataset, out))


def distill_job(config_tree: dict, dataset: str, teacher: str, out: str) -> str:
    """A student, ``ce`` or ``twin`` (:func:`bench.runs.distilled`, in a worker process)."""
    return str(distilled(config_lib.from_dict(config_tree), dataset, teacher, out))


def evaluate_job(checkpoints: dict[str, str], dataset: str, out: str) -> dict:
    from mmkd_ros.tools.evaluate import evaluate

    return evaluate(checkpoints, dataset, out, split="val", latency_runs=30)


def scarce_labels(dataset: Path, out: Path, share: float) -> Path:
    """A copy of ``dataset`` (images linked) where only ``share`` of the training bags keep labels.

    Bags are taken in name order, every k-th one, so the choice is reproducible and spread over
    the recording; validation keeps all its labels.
    """
    rows = read_manifest(dataset)
    train_bags = sorted({r["group"] for r in rows if r["split"] == "train"})
    step = max(1, round(1 / share))
    keep = set(train_bags[::step])
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("rgb", "nir"):
        link = out / sub
        if not link.exists():
            link.symlink_to((dataset / sub).resolve())
    for row in rows:
        if row["split"] == "train" and row["group"] not in keep:
            row["label"] = ""
    info = json.loads((dataset / "dataset.json").read_text())
    info["cache_key"] = f"{info.get('cache_key', '')}:labels-{len(keep)}-of-{len(train_bags)}"
    info["label_share"] = {"kept_bags": sorted(keep), "train_bags": len(train_bags)}
    with atomic_path(out / MANIFEST_NAME) as tmp:
        write_manifest(tmp, rows)
    write_atomic(out / "dataset.json", json.dumps(info, indent=1))
    return out


def count_frames(dataset: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in read_manifest(dataset):
        split = counts.setdefault(row["split"], {"labelled": 0, "unlabelled": 0})
        split["labelled" if row["label"] else "unlabelled"] += 1
    return counts


def mean_std(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * scale:.1f}"
    return f"{statistics.mean(values) * scale:.1f} ± {statistics.stdev(values) * scale:.1f}"


def gap_shares(reports: list[dict], name: str, key: str, top_name: str = "teacher") -> list[float]:
    """Per seed, (name - ce) / (top - ce): the share of the gap from ``ce`` to ``top_name`` that ``name`` closes
    (seeds where ``top_name`` is not above ``ce`` are left out)."""
    shares = []
    for r in reports:
        base, top = r["models"]["ce"][key], r["models"][top_name][key]
        if top > base:
            shares.append((r["models"][name][key] - base) / (top - base))
    return shares


def bag_intervals(reports: list[dict], names: list[str], rounds: int = 1000) -> dict[str, dict[str, tuple]]:
    """95 % intervals of each model's seed-mean macro-F1, and of its difference to ``ce``, when the
    validation bags (images, blocks) are drawn with replacement: the spread the choice of validation
    images adds, which mean ± std over seeds does not show."""
    import numpy as np

    from mmkd_ros.core.metrics import group_bootstrap, weighted_macro_f1

    samples = reports[0]["samples"]
    if any(r["samples"] != samples for r in reports):
        raise DatasetError("the seeds' reports were scored on different validation frames; run the study again")
    true, k = np.asarray(samples["labels"]), len(reports[0]["classes"])
    preds = {n: [np.asarray(r["models"][n]["predictions"]) for r in reports] for n in names}

    def seed_mean(name: str, weights: np.ndarray) -> float:
        return float(np.mean([weighted_macro_f1(p, true, k, weights) for p in preds[name]]))

    out = {}
    for name in names:
        out[name] = {"macro_f1": group_bootstrap(samples["groups"], lambda w: seed_mean(name, w), rounds)}
        if name != "ce":
            out[name]["minus_ce"] = group_bootstrap(
                samples["groups"], lambda w: seed_mean(name, w) - seed_mean("ce", w), rounds)
    return out


def interval(bounds: tuple[float, float], signed: bool = False) -> str:
    low, high = (100 * b for b in bounds)
    return f"[{low:+.1f}, {high:+.1f}]" if signed else f"[{low:.1f}, {high:.1f}]"


def summarise(reports: list[dict], names: list[str]) -> tuple[str, dict]:
    bags = len(set(reports[0]["samples"]["groups"]))
    lines = ["| model | inputs | unlabelled frames | accuracy % | macro-F1 % | macro-F1, 95 % interval over "
             f"the {bags} val bags | minus ce, 95 % interval | gap closed, macro-F1 | "
             "gap closed, accuracy | gap to twin closed, macro-F1 | params | MFLOPs | CPU ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary: dict = {}
    intervals = bag_intervals(reports, names)
    for name in names:
        acc = [r["models"][name]["accuracy"] for r in reports]
        f1 = [r["models"][name]["macro_f1"] for r in reports]
        first = reports[0]["models"][name]
        lat = statistics.median(r["models"][name]["latency_ms"] for r in reports)
        special = name in ("teacher", "ce")
        gap_f1 = [] if special else gap_shares(reports, name, "macro_f1")
        gap_acc = [] if special else gap_shares(reports, name, "accuracy")
        # against the teacher-sized RGB model on the same labels: the RGB ceiling at this input size
        gap_twin = [] if special or name == "twin" or "twin" not in names else gap_shares(reports, name, "macro_f1", "twin")
        summary[name] = {"accuracy": acc, "macro_f1": f1, "gap_macro_f1": gap_f1, "gap_accuracy": gap_acc,
                         "gap_twin_macro_f1": gap_twin,
                         "params": first["params"], "flops": first["flops"], "latency_ms": lat,
                         "bag_interval": intervals[name]}
        inputs = "RGB+NIR" if name == "teacher" else "RGB"
        unl = "-" if name in ("teacher", "ce", "twin") else ("no" if "-labelled" in name else "yes")
        base_text = "0 (baseline)" if name == "ce" else "-"
        minus_ce = interval(intervals[name]["minus_ce"], signed=True) if "minus_ce" in intervals[name] else "-"
        lines.append(
            f"| {name} | {inputs} | {unl} | {mean_std(acc)} | {mean_std(f1)} | {interval(intervals[name]['macro_f1'])} | "
            f"{minus_ce} | "
            f"{mean_std(gap_f1, 1.0) if gap_f1 else base_text} | {mean_std(gap_acc, 1.0) if gap_acc else base_text} | "
            f"{mean_std(gap_twin, 1.0) if gap_twin else base_text} | {first['params'] / 1e6:.2f} M | {first['flops'] / 1e6:.1f} | {lat:.2f} |")
    return "\n".join(lines), summary


def study_configs(overrides: list[str], shared: list[str], variant: bool
                  ) -> tuple[config_lib.Config, config_lib.Config]:
    """(config of teacher, twin and ce; config of the distilled students).

    ``shared`` overrides every run; ``overrides`` every run too, except under a variant, whose
    overrides touch its students only (so teacher, ce and twin are reused from the main study).
    """
    base = config_lib.load(REPO / "config" / "train.yaml", [*STUDY_OVERRIDES, *shared, *([] if variant else overrides)])
    students = config_lib.load(REPO / "config" / "train.yaml", [*STUDY_OVERRIDES, *shared, *overrides])
    return base, students


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversion", type=Path, required=True,
                        help="converter output: bags/ and splits.json (bench/realdata/convert_*.py)")
    parser.add_argument("--name", required=True, help="dataset name for the report (cwfid, houston)")
    parser.add_argument("--work", type=Path, default=None,
                        help="where datasets and runs go (default: $TMPDIR/mmkd_ros_study/NAME, outside "
                             "the project: the data are research-only)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", default=list(STUDENTS), choices=STUDENTS,
                        help="students to distil (default all); none (a bare --methods): teacher, twin and ce "
                        "only, e.g. to choose the study's input size by them")
    parser.add_argument("--every", type=int, default=2, help="keep every N-th frame of a bag (default "
                        "%(default)s: neighbouring frames overlap by half)")
    parser.add_argument("--label-share", type=float, default=1.0,
                        help="keep labels on this share of the training bags (default all)")
    parser.add_argument("--variant", default="", help="name of an ablation: the overrides apply to the "
                        "distilled students only, whose runs get this suffix; teacher, ce and twin are reused")
    parser.add_argument("--shared", nargs="+", default=[], metavar="key=value",
                        help="config overrides for every run, teacher, ce and twin included, also with "
                        "--variant (e.g. the study's input size); put it after the positional overrides")
    parser.add_argument("--all-frames-only", action="store_true",
                        help="skip the students trained on labelled frames only (the ablation of unlabelled frames)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel training processes, one thread each")
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch BENCHMARKS.md or the chart")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if not 0.0 < args.label_share <= 1.0:
        raise DatasetError(f"--label-share {args.label_share} must be in (0, 1]")
    splits_file = args.conversion / "splits.json"
    splits = read_bag_splits(splits_file)
    bags = sorted(p for p in (args.conversion / "bags").iterdir() if p.name in splits)
    if not bags:
        raise DatasetError(f"{args.conversion}/bags holds none of the bags {splits_file} lists: "
                           "point --conversion at a converter's --out folder")
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / "mmkd_ros_study" / args.name
    label_tag = "" if args.label_share >= 1.0 else f"_labels{args.label_share:g}"
    report_tag = label_tag + (f"_{args.variant}" if args.variant else "")
    dataset = extract_bags(bags, work / f"pairs_every{args.every}",
                           BagOptions(every=args.every, splits=str(splits_file)), progress=False).path
    if label_tag:
        dataset = scarce_labels(dataset, work / f"pairs_every{args.every}{label_tag}", args.label_share)
    frames = count_frames(dataset)
    train = frames.get("train", {"labelled": 0, "unlabelled": 0})
    # "Labelled only" runs are worth their time when unlabelled frames are more than a sliver of the data.
    has_unlabelled = train["unlabelled"] >= 0.05 * (train["labelled"] + train["unlabelled"])
    with_labelled_only = has_unlabelled and not args.all_frames_only
    base, variant_base = study_configs(args.overrides, args.shared, bool(args.variant))
    runs = plan(tuple(args.methods), with_labelled_only, args.variant)
    names = ["teacher", "twin", "ce"] + [r[0] for r in runs[2:]]

    reports: dict[int, dict] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_worker_init) as pool:
        pending: dict[Future, tuple[str, int, str]] = {}
        students: dict[int, dict[str, str]] = {}
        for seed in args.seeds:
            config = config_lib.replace(base, seed=seed)
            out = work / f"runs{label_tag}" / f"seed{seed}"
            fut = pool.submit(train_teacher_job, config_lib.to_dict(config), str(dataset), str(out / "teacher"))
            pending[fut] = ("teacher", seed, "teacher")
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                kind, seed, name = pending.pop(fut)
                path = fut.result()  # a failed run stops the study with its own error
                print(f"[bench_realdata] seed {seed} {name} done at {time.perf_counter() - start:.0f} s",
                      file=sys.stderr)
                out = work / f"runs{label_tag}" / f"seed{seed}"
                if kind == "teacher":
                    students[seed] = {"teacher": path}
                    for run, method, unlabelled in runs:
                        config = config_lib.replace(base if run in ("ce", "twin") else variant_base, seed=seed)
                        method_config = (config_lib.rgb_twin(config) if run == "twin"
                                         else config_lib.with_method(config, method))
                        run_config = config_lib.replace(method_config, data={"unlabelled": unlabelled})
                        f = pool.submit(distill_job, config_lib.to_dict(run_config), str(dataset), path,
                                        str(out / run.replace("+", "_").replace("[", "_").rstrip("]")))
                        pending[f] = ("student", seed, run)
                elif kind == "student":
                    students[seed][name] = path
                    if len(students[seed]) == len(runs) + 1:
                        ordered = {n: students[seed][n] for n in names}
                        f = pool.submit(evaluate_job, ordered, str(dataset), str(out / "eval"))
                        pending[f] = ("eval", seed, "eval")
                else:
                    reports[seed] = path  # evaluate's report
    ordered_reports = [reports[s] for s in args.seeds]
    table, summary = summarise(ordered_reports, names)
    figure = REPO / "bench" / "figures" / f"realdata_{args.name}{report_tag}.png"
    if not args.no_write:  # a look at other settings leaves the committed chart alone
        bar_chart({n: [100 * v for v in summary[n]["macro_f1"]] for n in names},
                  f"{args.name}{report_tag}: validation macro-F1, {len(args.seeds)} seeds "
                  f"(green: with unlabelled frames, orange: labelled only)", "validation macro-F1 (%)", figure)
    wall = time.perf_counter() - start
    write_atomic(work / f"summary{report_tag}.json", json.dumps({"summary": summary, "frames": frames,
                                                               "wall_s": wall}, indent=2))
    shown = shlex.join(argv if argv is not None else sys.argv[1:])  # quoted: pastes back into a shell
    teacher = summary["teacher"]
    ratio_p = summary["ce"]["params"] / teacher["params"]
    ratio_f = summary["ce"]["flops"] / teacher["flops"]
    body = "\n".join([
        f"Command: `python bench/bench_realdata.py {shown}` ({wall / 60:.1f} min, {args.jobs} processes x 1 "
        f"thread, {platform.machine()}; {made_by()}).",
        "",
        f"Frames (every {args.every}-th of each bag): " + "; ".join(
            f"{split}: {c['labelled']} labelled, {c['unlabelled']} unlabelled" for split, c in sorted(frames.items()))
        + f". Split by bag as the converter's splits.json says; evaluated on the validation bags. Seeds {args.seeds}: one "
        f"teacher per seed, every student of a seed distilled from it at the same budget ({base.distill.epochs} epochs, "
        f"batch {base.data.batch_size}, input {base.data.input_size[0]}x{base.data.input_size[1]}, class-balanced "
        "sampling, checkpoint kept by validation macro-F1). `twin` = the teacher's architecture with RGB in both "
        "branches, trained with cross-entropy. `-labelled` = the same method trained on labelled frames only.",
        "",
        table,
        "",
        "Intervals: the validation bags (images or blocks) drawn with replacement, 1000 times, each draw scoring "
        "the seed-mean macro-F1 on the frames of the bags drawn (a bag drawn twice counts twice); 2.5-97.5 % "
        "percentiles. An interval of \"minus ce\" that excludes 0 separates a method from the baseline for "
        "these validation images, not only for these seeds.",
        "",
        "Gap closed = (method - ce) / (teacher - ce), per seed, then mean ± std; gap to twin closed = (method - ce) / "
        "(twin - ce), against the teacher-sized RGB model trained on the same labels (with every label, the RGB "
        f"ceiling at this input size; seeds where twin is not above ce are left out). Student: {ratio_p:.3f} of the "
        f"teacher's parameters, {ratio_f:.3f} of its FLOPs. Chart: `bench/figures/{figure.name}`.",
    ])
    print(body)
    if not args.no_write:
        replace_section(f"Real data: {args.name}{report_tag} method study", body)


if __name__ == "__main__":
    sys.exit(run_cli(main))
