"""The main job end to end on the simulator: does distillation pay where labels are scarce?

1. **Drives.** Three simulated drives with different seeds (:mod:`mmkd_ros.sim.synthetic`), many
   short scenes each: a *training* drive whose label topic covers only ``label_share`` of the
   scenes (the rest recorded with an empty label, as in the field), a fully labelled
   *validation* drive (model selection) and a fully labelled *test* drive of scenes no model saw.
2. **Offline.** One pair dataset split by drive (``--splits``); the RGB+NIR teacher on the labelled
   frames, the RGB-only baseline ``ce`` on the labelled frames, and the default student, which
   also learns from every unlabelled frame through the teacher's terms; the same budget for both
   RGB models. Each run is reused only when its recorded config equals this one.
3. **Evaluation** of the three on the test drive: ``eval/report.md`` (three rows), confusion
   matrices, ``eval/demo.png`` (accuracy, macro-F1, gap closed) and the summary line.
4. **Live.** The test drive replayed into ``student_node`` (and ``teacher_node`` on request) as real
   ROS processes with the node names and topics of ``launch/demo.launch.py``; this process
   listens to ``~/classification`` like any consumer, scores it against the drive's labels and
   shows live accuracy and latency with a progress bar.

The nodes run from this source tree's Python environment (``python -m mmkd_ros.nodes.<node>``),
the same code the colcon install tree holds.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from tqdm import tqdm

from mmkd_ros.core import artifact
from mmkd_ros.core.atomic import atomic_path, write_atomic
from mmkd_ros.core.errors import MmkdError
from mmkd_ros.core.provenance import code_version, numerics
from mmkd_ros.core.topics import LABEL_TOPIC, NIR_TOPIC, RGB_TOPIC
from mmkd_ros.data.bag import BagReader
from mmkd_ros.data.dataset import open_dataset
from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.data.splits import write_bag_splits
from mmkd_ros.nodes.common import percentile
from mmkd_ros.nodes.outputs import classification_output
from mmkd_ros.sim.synthetic import SyntheticConfig, plan_recording, write_bag
from mmkd_ros.tools.evaluate import evaluate, kept_validation
from mmkd_ros.tools.launch_spec import read_nodes
from mmkd_ros.train import config as config_lib
from mmkd_ros.train.config import Config
from mmkd_ros.train.distill import distill, uses_unlabelled
from mmkd_ros.train.loop import LAST_NAME, run_finished
from mmkd_ros.train.teacher import train_teacher

REPO_ROOT = Path(__file__).resolve().parents[2]
BASELINE = "ce"
#: The launch file whose nodes the live phase starts (names, remappings, parameter files, sim time).
DEMO_LAUNCH = REPO_ROOT / "launch" / "demo.launch.py"
REPLAY_NODE = "replay"
RENDER_WORKERS = 8  # processes that render a drive's scenes, at most
PARALLEL_RENDER_SCENES = 150  # drives with fewer scenes render in this process (starting workers costs ~1 s)


@dataclass(frozen=True)
class Drives:
    """The simulated drives of the demo: many short scenes, a few frames each (5 Hz).

    Frames are 320x240 (the simulator scales its textures with the frame, so this is the 640x480
    camera downsized, four times cheaper to render); the models see 96x96 either way.
    """

    seed: int = 0
    label_share: float = 0.25  # of the training drive's scenes; 1.0: the fully labelled variant
    train_s: float = 200.0  # about 220 scenes
    val_s: float = 40.0
    test_s: float = 80.0  # about 90 scenes
    # Scene lengths of the training drive (the validation and test drives keep 0.6-1.2 s). Shorter
    # scenes: more scenes for the same frames. A fixed length equal to the frame period (0.2 s) puts
    # every scene start on an RGB frame time, so jittered NIR frames pair across scenes (BENCHMARKS.md).
    train_scene_min_s: float = 0.6
    train_scene_max_s: float = 1.2

    def configs(self) -> dict[str, SyntheticConfig]:
        common = {"rgb_rate_hz": 5.0, "nir_rate_hz": 5.0, "scene_min_s": 0.6, "scene_max_s": 1.2,
                  "width": 320, "height": 240}
        train = {**common, "scene_min_s": self.train_scene_min_s, "scene_max_s": self.train_scene_max_s}
        return {"train": SyntheticConfig(seed=self.seed, duration_s=self.train_s, label_share=self.label_share,
                                         **train),
                "val": SyntheticConfig(seed=self.seed + 1000, duration_s=self.val_s, **common),
                "test": SyntheticConfig(seed=self.seed + 2000, duration_s=self.test_s, **common)}

    def bag_name(self, split: str) -> str:
        share = f"_labels{self.label_share:g}" if split == "train" else ""
        scenes = (self.train_scene_min_s, self.train_scene_max_s)
        if split == "train" and scenes != (Drives.train_scene_min_s, Drives.train_scene_max_s):
            share += f"_scenes{scenes[0]:g}-{scenes[1]:g}s"
        seconds = {"train": self.train_s, "val": self.val_s, "test": self.test_s}[split]
        return f"{split}_seed{self.seed}_{seconds:g}s{share}"


@dataclass
class DemoResult:
    """What the demo measured; ``summary`` is its one-line verdict."""

    report: Path
    metrics: dict[str, dict[str, float]]  # model -> accuracy, macro_f1 on the test drive
    test_scenes: int
    gap_closed: float  # (student - baseline) / (teacher - baseline), accuracy
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    live: dict[str, "LiveScore"] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        m = self.metrics
        student = next(k for k in m if k.startswith("student"))
        line = (f"demo: student {m[student]['accuracy']:.2f} vs RGB-only baseline {m['baseline']['accuracy']:.2f} "
                f"vs teacher {m['teacher']['accuracy']:.2f} accuracy on {self.test_scenes} unseen scenes "
                f"(gap closed {self.gap_closed:.0%})")
        for name, score in self.live.items():
            line += (f"; live {name}: {score.received} frames, accuracy {score.accuracy:.2f}, "
                     f"latency p50 {score.latency(50):.1f} ms")
        return f"{line}; report {self.report}"


def gap_closed(student: float, baseline: float, teacher: float) -> float:
    """Share of the teacher's lead over the baseline that the student recovers (NaN without a lead)."""
    return (student - baseline) / (teacher - baseline) if teacher > baseline else math.nan


def ros_environment() -> dict[str, str]:
    """Environment for the node processes: loopback discovery and the large-frame Fast DDS profile.

    Settings the user already made (domain, RMW, profile file) are kept.
    """
    env = dict(os.environ)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_large_data.xml"))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@contextmanager
def _ros_settings() -> Iterator[None]:
    """The ROS/DDS variables of :func:`ros_environment` set in this process only while inside (restored after)."""
    wanted = {k: v for k, v in ros_environment().items() if k.startswith(("ROS_", "RMW_", "FASTDDS_"))}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class LiveScore:
    """Running accuracy and latency of the classification stream against the bag's labels."""

    classes: list[str]
    correct: int = 0
    labelled: int = 0
    received: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, label: str, truth: str | None, latency_ms: float) -> None:
        self.received += 1
        self.latencies_ms.append(latency_ms)
        if truth is not None:
            self.labelled += 1
            self.correct += int(label == truth)

    @property
    def accuracy(self) -> float:
        return self.correct / self.labelled if self.labelled else float("nan")

    def latency(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q) if self.latencies_ms else float("nan")


def _content(msg: Any) -> tuple[int, str, float]:
    """(stamp_ns, label, in-node ms) of a ~/classification message, JSON fallback or vision_msgs.

    The node's own receive -> publish time (``in_node_ms``): a replayed bag's header stamps are
    the recording's, so ``latency_ms`` (from the stamp) would count the time since recording."""
    if hasattr(msg, "data"):  # std_msgs/String carrying the JSON content
        content = json.loads(msg.data)
        stamp = content["header"]["stamp"]
        return stamp["sec"] * 1_000_000_000 + stamp["nanosec"], content["label"], content["in_node_ms"]
    best = msg.results[0]  # vision_msgs/Classification: hypotheses best first, no latency field
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, best.class_id, float("nan")


def _start(module: str, ros_args: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], env=ros_environment(),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C and ros2 launch send
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


def _tail(log: Path, lines: int = 5) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:]) if log.is_file() else ""


def run_live(bag: Path, models: dict[str, Path], log_dir: Path, rate: float = 1.0, device: str = "auto",
             max_seconds: float = 900.0) -> dict[str, LiveScore]:
    """Replay ``bag`` into the nodes named in ``models`` (``student``, ``teacher``: node names of DEMO_LAUNCH).

    Returns each node's :class:`LiveScore` against the bag's labels.
    """
    with _ros_settings():  # the in-process listener joins the nodes' loopback DDS domain
        return _run_live(bag, models, log_dir, rate, device, max_seconds)


def _run_live(bag: Path, models: dict[str, Path], log_dir: Path, rate: float, device: str,
              max_seconds: float) -> dict[str, LiveScore]:
    with BagReader(bag) as reader:
        timeline = reader.label_timeline(LABEL_TOPIC)
        frames = reader.topics[RGB_TOPIC].count
    scores = {name: LiveScore(classes=[]) for name in models}
    lock = threading.Lock()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mmkd_demo_listener", context=context)
    _, msg_type, _ = classification_output()
    for name in models:
        def on_classification(msg: Any, score: LiveScore = scores[name]) -> None:
            stamp_ns, label, latency_ms = _content(msg)
            with lock:
                score.add(label, timeline.label_at(stamp_ns), latency_ms)

        node.create_subscription(msg_type, f"/{name}/classification", on_classification,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    specs = read_nodes(DEMO_LAUNCH)
    missing = [name for name in (*models, REPLAY_NODE) if name not in specs]
    if missing:
        raise MmkdError(f"{DEMO_LAUNCH} starts no node named {', '.join(missing)}; nodes there: {', '.join(specs)}")
    procs: dict[str, subprocess.Popen] = {}
    for name, model in models.items():
        procs[name] = _start(specs[name].module, specs[name].ros_args(model_path=model, device=device),
                             log_dir / f"{name}.log")
    subscriptions = sum(len(specs[name].remappings) for name in models)  # one per input topic
    replay = specs[REPLAY_NODE]
    procs[REPLAY_NODE] = _start(replay.module, replay.ros_args(
        bag=bag, rate=rate, loop=False, wait_for_subscribers=subscriptions,
        topics=[RGB_TOPIC, NIR_TOPIC, LABEL_TOPIC]), log_dir / f"{REPLAY_NODE}.log")
    print(f"live: replaying {bag.name} ({frames} frames) into {', '.join(models)}; logs in {log_dir}", flush=True)
    bar = tqdm(total=frames, desc="live", unit="frame", file=sys.stdout, mininterval=1.0, dynamic_ncols=True)
    start = time.monotonic()
    try:
        while procs[REPLAY_NODE].poll() is None and time.monotonic() - start < max_seconds:
            executor.spin_once(timeout_sec=0.1)
            for name in models:
                if procs[name].poll() is not None:
                    raise MmkdError(f"{name} node exited with {procs[name].returncode}: "
                                    f"{_tail(log_dir / f'{name}.log')}")
            with lock:
                lead = max(score.received for score in scores.values())
                bar.update(lead - bar.n)
                bar.set_postfix({name: f"acc {sc.accuracy:.2f} p50 {sc.latency(50):.0f} ms"
                                 for name, sc in scores.items() if sc.received}, refresh=False)
        drain_until = time.monotonic() + 2.0  # the last frames are still in flight
        while time.monotonic() < drain_until:
            executor.spin_once(timeout_sec=0.05)
        if procs[REPLAY_NODE].returncode not in (0, None):
            raise MmkdError(f"replay_node exited with {procs[REPLAY_NODE].returncode}: "
                            f"{_tail(log_dir / f'{REPLAY_NODE}.log')}")
    finally:
        bar.close()
        for proc in procs.values():
            _stop(proc)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    for name, score in scores.items():
        if score.received == 0:
            raise MmkdError(f"no classification arrived on /{name}/classification; see {log_dir}/{name}.log")
    return scores


def _reusable(run_dir: Path, config: Config, epochs: int) -> bool:
    """A finished run made by this code with exactly ``config`` (its last.pt records both)."""
    if not run_finished(run_dir, epochs):
        return False
    last = artifact.load_checkpoint(run_dir / LAST_NAME)
    return last["config"] == config_lib.to_dict(config) and (last.get("code") or {}).get("source") == \
        code_version()["source"] and last.get("numerics") == numerics()


def baseline_config(config: Config, dataset: Path) -> Config:
    """The RGB-only baseline at the student's budget: as many optimiser steps, on the labelled frames.

    A student that learns from unlabelled frames draws every training pair per epoch, the baseline
    only the labelled ones; same epochs would hand the student several times the updates, and a
    gain that is only more training would pass for distillation.
    """
    baseline = config_lib.with_method(config, BASELINE)
    if not uses_unlabelled(config):
        return baseline
    train = open_dataset(dataset).split("train")
    labelled = sum(r.label >= 0 for r in train)
    if labelled == 0:
        raise MmkdError(f"{dataset}: no labelled training pair; the baseline cannot train")
    epochs = math.ceil(config.distill.epochs * len(train) / labelled)
    return config_lib.replace(baseline, distill={"epochs": epochs})


def _bar_chart(metrics: dict[str, dict[str, float]], closed: dict[str, float], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.38
    for k, key in enumerate(("accuracy", "macro_f1")):
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        bars = ax.bar(xs, [metrics[n][key] for n in names], width, label=key.replace("_", "-"))
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test drive")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{title}\ngap closed by the student: accuracy {closed['accuracy']:.0%}, "
                 f"macro-F1 {closed['macro_f1']:.0%}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _cores() -> int:
    """CPU cores this process may run on (its affinity, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_drives(drives: Drives, out: Path, progress: bool = False) -> dict[str, Path]:
    """The drives' bags under ``out/bags`` (split -> bag; a bag already there is kept).

    A drive of many scenes is rendered on every core (:data:`RENDER_WORKERS` at most): the same bag, sooner.
    """
    bags = {split: out / "bags" / drives.bag_name(split) for split in ("train", "val", "test")}
    for split, sim in drives.configs().items():
        if not bags[split].exists():
            print(f"writing the {split} drive: {bags[split]}", flush=True)
            many = len(plan_recording(sim).scenes) >= PARALLEL_RENDER_SCENES
            write_bag(bags[split], sim, progress=progress,
                      workers=min(_cores(), RENDER_WORKERS) if many else 1)
    return bags


def drives_dataset(drives: Drives, bags: dict[str, Path], out: Path, progress: bool = False) -> Path:
    """The pair dataset of :func:`write_drives`' bags, one split per bag (cached by extraction)."""
    splits = write_bag_splits(out / "bags" / f"splits_{drives.bag_name('train')}.json",
                              {path.name: split for split, path in bags.items()})
    return extract_bags(list(bags.values()), out / f"dataset_{drives.bag_name('train')}",
                        BagOptions(splits=str(splits), group_by="bag"), progress=progress).path


def runs_dir(out: Path, drives: Drives) -> Path:
    """Where :func:`run_demo` keeps the teacher, baseline and student runs of ``drives`` under ``out``."""
    return out / f"runs_{drives.bag_name('train')}"


def run_demo(config: Config, out: Path, drives: Drives = Drives(), live: bool = True, live_teacher: bool = False,
             rate: float = 4.0) -> DemoResult:
    """The whole main job (see the module doc); prints each stage and returns the result."""
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - began

    out = Path(out)
    with stage("bags"):
        bags = write_drives(drives, out, progress=sys.stdout.isatty())
    with stage("extraction"):
        dataset = drives_dataset(drives, bags, out, progress=sys.stdout.isatty())
    runs = runs_dir(out, drives)
    baseline = baseline_config(config, dataset)
    with stage("teacher"):
        teacher_dir = runs / "teacher"
        if not _reusable(teacher_dir, config, config.teacher.epochs):
            train_teacher(config, dataset, teacher_dir)
        teacher = teacher_dir / "teacher.pt"
    checkpoints = {"teacher": teacher}
    for name, run_config in (("baseline", baseline), ("student", config)):
        with stage(name):
            run_dir = runs / name
            if not _reusable(run_dir, run_config, run_config.distill.epochs):
                distill(run_config, dataset, teacher, run_dir)
            checkpoints[name] = run_dir / "student.pt"
    with stage("evaluation"):
        names = {"teacher": "teacher", "baseline": f"baseline[{BASELINE}]",
                 "student": f"student[{config.distill.method}]"}
        report = evaluate({names[k]: v for k, v in checkpoints.items()}, dataset, out / "eval", split="test",
                          device=config.device)
        metrics = {names[k] if k == "student" else k: {m: report["models"][names[k]][m] for m in ("accuracy", "macro_f1")}
                   for k in checkpoints}
        validation = {names[k] if k == "student" else k: kept_validation(path) for k, path in checkpoints.items()}
        student = names["student"]
        closed = {m: gap_closed(metrics[student][m], metrics["baseline"][m], metrics["teacher"][m])
                  for m in ("accuracy", "macro_f1")}
        test_scenes = len(plan_recording(drives.configs()["test"]).scenes)
        title = (f"{drives.label_share:.0%} of the training scenes labelled; "
                 f"{test_scenes} unseen test scenes (seed {drives.seed})")
        _bar_chart(metrics, closed, title, out / "eval" / "demo.png")
        result = DemoResult(out / "eval" / "report.md", metrics, test_scenes, closed["accuracy"], timings)
    print(f"offline: {result.summary}", flush=True)
    if live:
        with stage("live"):
            models = {"student": checkpoints["student"]}
            if live_teacher:
                models["teacher"] = checkpoints["teacher"]
            result.live = run_live(bags["test"], models, out / "live", rate=rate, device=config.device)
    result.timings = timings
    write_atomic(out / "eval" / "demo.json", json.dumps(
        {"drives": drives.__dict__, "metrics": metrics, "validation": validation, "gap_closed": closed,
         "test_scenes": test_scenes,
         "method": config.distill.method, "baseline_epochs": baseline.distill.epochs, "timings": timings,
         "live": {name: {"frames": sc.received, "accuracy": sc.accuracy, "latency_p50_ms": sc.latency(50)}
                  for name, sc in result.live.items()},
         "code": code_version(), "numerics": numerics(), "config": config_lib.to_dict(config)}, indent=1))
    print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f", total {sum(timings.values()):.0f} s", flush=True)
    return result
