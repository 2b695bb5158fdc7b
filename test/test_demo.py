"""The demo end to end with a tiny budget: real bags, real training, real node processes over DDS.

``training/demo.py`` runs as a user runs it (a subprocess); the test reads what it printed and wrote.
"""
from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys

import pytest
import torch

from mmkd_ros.sim.synthetic import SyntheticConfig
from mmkd_ros.tools import demo
from mmkd_ros.tools.launch_spec import read_nodes
from ros_testing import REPO_ROOT, ROS_ENV

TINY = [  # the demo's method and terms, tiny networks and budget
    "data.input_size=[32,32]", "data.batch_size=16",
    "teacher.arch=teacher_resnet_tiny", "teacher.width=0.125", "teacher.epochs=2", "teacher.warmup_epochs=0",
    "student.arch=student_tiny", "student.width=0.5", "distill.epochs=2", "distill.warmup_epochs=0",
    "distill.disc_hidden=16",
]
SUMMARY = re.compile(
    r"^demo: student (?P<student>[\d.]+) vs RGB-only baseline (?P<baseline>[\d.]+) vs teacher (?P<teacher>[\d.]+) "
    r"accuracy on (?P<scenes>\d+) unseen scenes \(gap closed (?P<closed>-?\d+%|nan%)\); "
    r"live student: (?P<frames>\d+) frames, accuracy (?P<live_acc>[\d.]+|nan), latency p50 (?P<p50>[\d.]+) ms; "
    r"report (?P<report>\S+)$", re.M)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    env = {**__import__("os").environ, **ROS_ENV, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "training" / "demo.py"), "--out", str(out),
                           "--scale", "0.12", "--rate", "4", "device=cpu", *TINY],
                          capture_output=True, text=True, env=env, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_demo_prints_the_summary_line_with_every_figure(demo_run):
    out, stdout = demo_run
    match = SUMMARY.search(stdout)
    assert match, stdout[-2000:]
    figures = {k: float(match[k]) for k in ("student", "baseline", "teacher", "live_acc", "p50")}
    assert all(0.0 <= figures[k] <= 1.0 for k in ("student", "baseline", "teacher"))
    record = json.loads((out / "eval" / "demo.json").read_text())
    assert int(match["scenes"]) == record["test_scenes"] > 5
    # The printed figures are the recorded ones, and the live stream covered the test drive.
    assert figures["student"] == pytest.approx(record["metrics"][next(k for k in record["metrics"]
                                                                    if k.startswith("student"))]["accuracy"], abs=0.006)
    assert figures["baseline"] == pytest.approx(record["metrics"]["baseline"]["accuracy"], abs=0.006)
    test_frames = int(demo.Drives(seed=0).test_s * 0.12 * SyntheticConfig(rgb_rate_hz=5.0).rgb_rate_hz)
    assert 0.9 * test_frames <= int(match["frames"]) <= test_frames
    assert 0.0 <= figures["live_acc"] <= 1.0 and 0.0 < figures["p50"] < 1000.0
    assert match["report"] == str(out / "eval" / "report.md")
    timings = re.search(r"^stage times: (.*)$", stdout, re.M)[1]
    for stage in ("bags", "extraction", "teacher", "baseline", "student", "evaluation", "live", "total"):
        assert re.search(rf"\b{stage} \d+ s", timings), timings


def test_demo_report_holds_the_three_models_and_the_chart(demo_run):
    out, _ = demo_run
    report = (out / "eval" / "report.md").read_text()
    rows = [line for line in report.splitlines() if re.match(r"^\| (teacher|baseline\[ce\]|student\[[^]]+\]) \|", line)]
    assert [r.split("|")[1].strip().split("[")[0] for r in rows[:3]] == ["teacher", "baseline", "student"], report
    assert "| teacher | rgb+nir |" in rows[0] and "| rgb |" in rows[1] and "| rgb |" in rows[2]
    assert (out / "eval" / "demo.png").stat().st_size > 5000
    record = json.loads((out / "eval" / "demo.json").read_text())
    m = record["metrics"]
    student = next(k for k in m if k.startswith("student"))
    expected = demo.gap_closed(m[student]["accuracy"], m["baseline"]["accuracy"], m["teacher"]["accuracy"])
    assert (math.isnan(expected) and math.isnan(record["gap_closed"]["accuracy"])) or \
        record["gap_closed"]["accuracy"] == pytest.approx(expected)
    # The baseline had the student's optimiser steps: more epochs, since most frames are unlabelled.
    assert record["baseline_epochs"] > record["config"]["distill"]["epochs"]
    # Validation figures (which choose settings) are those of the epoch each run kept: the best
    # validation score of its metrics.csv, by the config's select_by.
    assert set(record["validation"]) == set(m)
    key = {"accuracy": "val_acc", "macro_f1": "val_macro_f1"}[record["config"]["select_by"]]
    runs = demo.runs_dir(out, demo.Drives(**record["drives"]))
    for name, run in (("teacher", "teacher"), ("baseline", "baseline"), (student, "student")):
        with open(runs / run / "metrics.csv") as f:
            best = max(float(row[key]) for row in csv.DictReader(f))
        assert record["validation"][name][record["config"]["select_by"]] == pytest.approx(best)
    # The thread count the runs were trained under is recorded (reuse requires the same count).
    assert record["numerics"] == {"torch_threads": torch.get_num_threads()}


def test_demo_starts_the_nodes_of_the_demo_launch_file():
    """The live phase reads launch/demo.launch.py: its node names, topics, parameter files and clock."""
    specs = read_nodes(demo.DEMO_LAUNCH)
    assert {"student", "teacher", demo.REPLAY_NODE} <= set(specs)
    student, teacher = specs["student"], specs["teacher"]
    assert student.remappings == {"image": "/camera/color/image_raw"}
    assert teacher.remappings == {"rgb/image": "/camera/color/image_raw", "nir/image": "/camera/nir/image_raw"}
    assert student.parameters["use_sim_time"] is True and teacher.parameters["use_sim_time"] is True
    assert student.parameter_files == (REPO_ROOT / "config" / "student.yaml",)
    args = student.ros_args(model_path="m.onnx", device="cpu")
    assert args[:4] == ["-r", "__node:=student", "-r", "image:=/camera/color/image_raw"]
    assert args[-4:] == ["-p", "model_path:=m.onnx", "-p", "device:=cpu"]
    for spec in specs.values():
        __import__(spec.module)  # every executable is a module of the package


def test_training_drive_shape_flags():
    drives = demo.Drives(seed=2, train_s=30.0, train_scene_min_s=0.2, train_scene_max_s=0.4)
    train = drives.configs()["train"]
    assert (train.duration_s, train.scene_min_s, train.scene_max_s) == (30.0, 0.2, 0.4)
    assert drives.configs()["test"].scene_min_s == demo.Drives().train_scene_min_s  # only the training drive
    assert drives.bag_name("train").endswith("_scenes0.2-0.4s") and "scenes" not in demo.Drives().bag_name("train")
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "training" / "demo.py"), "--train-scenes-s", "0.4", "0.2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--train-scenes-s needs 0 < MIN <= MAX" in bad.stderr
