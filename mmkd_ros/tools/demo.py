"""The main job end to end, on a bag (by default the synthetic demo bag the project writes itself).

1. write the synthetic dual-camera bag if it is not there yet (:mod:`mmkd_ros.sim.synthetic`);
2. the offline chain of ``training/distill.py --bag``: extract pairs, train the teacher, distill the
   student, evaluate (:func:`mmkd_ros.tools.pipeline.run_chain`; finished stages are reused);
3. the robot side as real ROS processes: ``student_node`` on the RGB topic and ``replay_node``
   playing the bag; this process listens to ``~/classification`` like any consumer would, scores
   each classification against the bag's label at the frame's stamp, prints the stream (a line per
   second) and ends with a one-line summary when the replay ends.

The nodes run from this source tree's Python environment (``python -m mmkd_ros.nodes.<node>``),
the same code the colcon install tree holds.
"""
from __future__ import annotations

import json
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

from mmkd_ros.core.errors import MmkdError
from mmkd_ros.core.topics import LABEL_TOPIC, RGB_TOPIC
from mmkd_ros.data.bag import BagReader
from mmkd_ros.deploy.classifier import Classifier
from mmkd_ros.nodes.common import percentile
from mmkd_ros.nodes.outputs import classification_output
from mmkd_ros.sim.synthetic import SyntheticConfig, write_bag
from mmkd_ros.tools.pipeline import run_chain
from mmkd_ros.train.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION_TOPIC = "/student_node/classification"


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
    """(stamp_ns, label, latency_ms) of a ~/classification message, JSON fallback or vision_msgs."""
    if hasattr(msg, "data"):  # std_msgs/String carrying the JSON content
        content = json.loads(msg.data)
        stamp = content["header"]["stamp"]
        return stamp["sec"] * 1_000_000_000 + stamp["nanosec"], content["label"], content["latency_ms"]
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


def run_live(bag: Path, model: Path, log_dir: Path, rate: float = 1.0, device: str = "auto",
             max_seconds: float = 600.0) -> LiveScore:
    """Replay ``bag`` into ``student_node`` running ``model``; score its output against the labels."""
    with _ros_settings():  # the in-process listener joins the nodes' loopback DDS domain
        return _run_live(bag, model, log_dir, rate, device, max_seconds)


def _run_live(bag: Path, model: Path, log_dir: Path, rate: float, device: str, max_seconds: float) -> LiveScore:
    with BagReader(bag) as reader:
        timeline = reader.label_timeline(LABEL_TOPIC)
    score = LiveScore(classes=Classifier.load(model, device="cpu").classes)
    lock = threading.Lock()

    def on_classification(msg: Any) -> None:
        stamp_ns, label, latency_ms = _content(msg)
        with lock:
            score.add(label, timeline.label_at(stamp_ns), latency_ms)

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mmkd_demo_listener", context=context)
    _, msg_type, _ = classification_output()
    node.create_subscription(msg_type, CLASSIFICATION_TOPIC, on_classification,
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    student = _start("mmkd_ros.nodes.student_node",
                     ["-r", f"image:={RGB_TOPIC}", "-p", f"model_path:={model}", "-p", f"device:={device}"],
                     log_dir / "student_node.log")
    replay = _start("mmkd_ros.nodes.replay_node",
                    ["-p", f"bag:={bag}", "-p", f"rate:={rate}", "-p", "wait_for_subscribers:=1",
                     "-p", f"topics:=[{RGB_TOPIC}, {LABEL_TOPIC}]"], log_dir / "replay_node.log")
    print(f"live: replaying {bag} into student_node ({model.name}); logs in {log_dir}")
    start, last_print = time.monotonic(), time.monotonic()
    try:
        while replay.poll() is None and time.monotonic() - start < max_seconds:
            executor.spin_once(timeout_sec=0.1)
            if student.poll() is not None:
                raise MmkdError(f"student_node exited with {student.returncode}: {_tail(log_dir / 'student_node.log')}")
            if time.monotonic() - last_print >= 1.0:
                last_print = time.monotonic()
                with lock:
                    if score.received == 0:
                        print(f"  t={last_print - start:5.1f}s  waiting for student_node (model loading, warm-up)")
                        continue
                    print(f"  t={last_print - start:5.1f}s  frames {score.received:5d}  "
                          f"accuracy {score.accuracy:6.1%}  latency p50 {score.latency(50):6.1f} ms", flush=True)
        drain_until = time.monotonic() + 2.0  # the last frames are still in flight
        while time.monotonic() < drain_until:
            executor.spin_once(timeout_sec=0.05)
        if replay.returncode not in (0, None):
            raise MmkdError(f"replay_node exited with {replay.returncode}: {_tail(log_dir / 'replay_node.log')}")
    finally:
        _stop(student)
        _stop(replay)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    if score.received == 0:
        raise MmkdError(f"no classification arrived on {CLASSIFICATION_TOPIC}; see {log_dir}/student_node.log")
    return score


def run_demo(config: Config, bag: Path, out: Path, rate: float = 1.0, live: bool = True) -> str:
    """The whole main job; returns the one-line summary."""
    if not bag.exists():
        print(f"writing the synthetic demo bag to {bag}")
        write_bag(bag, SyntheticConfig(seed=config.seed), progress=True)
    chain = run_chain(config, out, bag=bag, resume=True)
    print(f"offline chain done: report {chain.report}")
    if not live:
        return f"demo: student {chain.student}; report {chain.report}"
    score = run_live(bag, chain.student, out / "live", rate=rate, device=config.device)
    return (f"demo: {score.received} frames classified live by the RGB-only student, accuracy "
            f"{score.accuracy:.1%} on {score.labelled} labelled frames, latency p50 {score.latency(50):.1f} ms "
            f"p95 {score.latency(95):.1f} ms; report {chain.report}")
