#!/usr/bin/env python3
"""Node latency and sustainable rate: student_node vs teacher_node, real processes, real DDS.

The nodes run from a colcon install tree (built here unless ``--install`` is given) with
``device:=cpu``; this script publishes 640x480 rgb8 frames (and, for the teacher, 640x480 mono16
NIR frames with the same stamps, as from hardware-synchronised cameras, so a pair is final at once)
stamped with the wall clock at publication, and reads ``~/classification``:

- latency = arrival of the classification - header stamp of its frame: decoding, preprocessing,
  inference, JSON and both DDS hops included (the String reply is tiny);
- rate ladder: each rate for ``--seconds``; drops = frames without a classification; the highest
  rate with under 1 % drops is "held". The publisher shares the 2 CPU cores with the node, as a
  camera driver would.

Models: the training config's default architectures and input size, random weights (inference cost
does not depend on the weights), built through the registry and saved as checkpoints; or trained
ones with ``--student`` / ``--teacher``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

import numpy as np

import ros_testing  # noqa: E402  (process, domain and client helpers shared with the node tests)

from mmkd_ros.nodes.common import FRAME_STAGES as STAGES, stage_key  # noqa: E402  (/diagnostics stages)
from report_section import replace_section

TITLE = "ROS 2 nodes: latency and sustainable rate (student vs teacher)"
RATES = (5, 10, 15, 20, 30, 45, 60, 90)
WIDTH, HEIGHT = 640, 480


def default_checkpoints(out: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Student and teacher of the default training config, random weights, saved as checkpoints."""
    import torch

    from mmkd_ros.train.config import Config
    from mmkd_ros.models import build_model
    from mmkd_ros.core.artifact import make_checkpoint, save_checkpoint

    config = Config()
    classes = [f"class_{i}" for i in range(7)]
    size = list(config.data.input_size)
    norm = {"rgb": {"mean": [0.45] * 3, "std": [0.25] * 3}, "nir": {"mean": [0.5], "std": [0.25]}}
    torch.manual_seed(0)
    student_args = {"num_classes": len(classes), "in_channels": 3, "width": config.student.width}
    student = build_model(config.student.arch, **student_args)
    teacher_args = {
        "num_classes": len(classes),
        "rgb_channels": 3,
        "nir_channels": 1,
        "width": config.teacher.width,
        "fuse_at": config.teacher.fuse_at,
    }
    teacher = build_model(config.teacher.arch, **teacher_args)
    student_path = save_checkpoint(
        make_checkpoint(
            role="student",
            arch=config.student.arch,
            arch_args=student_args,
            model=student,
            classes=classes,
            modalities=["rgb"],
            channels={"rgb": 3},
            input_size=size,
            normalization={"rgb": norm["rgb"]},
            config={},
        ),
        out / "student.pt",
    )
    teacher_path = save_checkpoint(
        make_checkpoint(
            role="teacher",
            arch=config.teacher.arch,
            arch_args=teacher_args,
            model=teacher,
            classes=classes,
            modalities=["rgb", "nir"],
            channels={"rgb": 3, "nir": 1},
            input_size=size,
            normalization=norm,
            config={},
        ),
        out / "teacher.pt",
    )
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    info = {
        "input_size": size,
        "student": f"{config.student.arch} (width {config.student.width}, {params(student) / 1e6:.2f} M params)",
        "teacher": f"{config.teacher.arch} (width {config.teacher.width}, {params(teacher) / 1e6:.2f} M params)",
    }
    return student_path, teacher_path, info


class Bench:
    """One node process plus the publishing/collecting client."""

    def __init__(
        self, client: ros_testing.RosClient, role: str, node: ros_testing.NodeProcess, annotated: bool
    ):
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.client, self.role, self.node = client, role, node
        self.out_topic = f"/bench_{role}/classification"
        client.subscribe(String, self.out_topic)
        from diagnostic_msgs.msg import DiagnosticArray

        client.subscribe(DiagnosticArray, "/diagnostics")
        if annotated:
            client.subscribe(Image, f"/bench_{role}/image_annotated", qos=_best_effort_qos())
        self.rgb_pub = client.publisher(Image, f"/bench/{role}/rgb", depth=1, reliable=False)
        self.nir_pub = (
            client.publisher(Image, f"/bench/{role}/nir", depth=1, reliable=False)
            if role == "teacher"
            else None
        )
        rng = np.random.default_rng(0)
        self.rgb = [
            ros_testing.image_msg(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), "rgb8", 0)
            for _ in range(4)
        ]
        self.nir = [
            ros_testing.image_msg(rng.integers(0, 65536, (HEIGHT, WIDTH, 1), dtype=np.uint16), "mono16", 0)
            for _ in range(4)
        ]

    def wait_ready(self) -> None:
        pubs = [self.rgb_pub] + ([self.nir_pub] if self.nir_pub else [])
        if not all(ros_testing.wait_for_subscribers(p, timeout=120) for p in pubs):
            raise RuntimeError(f"{self.role} node did not subscribe:\n{self.node.output()}")
        time.sleep(1.0)  # let the node's readers finish matching our writers
        self.run(rate=5, seconds=1.0)  # warm the path (first samples after discovery)

    def run(self, rate: float, seconds: float) -> dict[str, Any]:
        """Publish at ``rate`` for ``seconds``; return latencies (ms) and the drop fraction."""
        self.client.clear(self.out_topic)
        period = 1.0 / rate
        sent: dict[int, float] = {}
        publish_ms: list[float] = []
        self.client.clear("/diagnostics")
        start = time.perf_counter()
        k = 0
        while True:
            due = start + k * period
            now = time.perf_counter()
            if due - start >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            stamp_ns = time.time_ns()
            stamp = (stamp_ns // 10**9, stamp_ns % 10**9)
            rgb = self.rgb[k % len(self.rgb)]
            rgb.header.stamp.sec, rgb.header.stamp.nanosec = stamp
            self.rgb_pub.publish(rgb)
            if self.nir_pub is not None:
                nir = self.nir[k % len(self.nir)]
                nir.header.stamp.sec, nir.header.stamp.nanosec = stamp
                self.nir_pub.publish(nir)
            sent[stamp_ns] = time.perf_counter()
            publish_ms.append((time.time_ns() - stamp_ns) / 1e6)  # the camera side's publish()
            k += 1
        achieved = k / (time.perf_counter() - start)
        time.sleep(1.0)  # the tail
        latencies, in_node = [], []
        for arrival_wall_ns, stamp_ns, node_ms in self._outputs():
            if stamp_ns in sent:
                latencies.append((arrival_wall_ns - stamp_ns) / 1e6)
                in_node.append(node_ms)
        got = len(latencies)
        return {
            "rate": rate,
            "achieved": achieved,
            "sent": len(sent),
            "classified": got,
            "drop": 1.0 - got / max(1, len(sent)),
            "latencies": latencies,
            "in_node": in_node,
            "publish_ms": publish_ms,
            "stages": self._stages(),
        }

    def _stages(self) -> dict[str, float]:
        """The node's last /diagnostics stage p50s (ms): wait, decode, predict, publish."""
        for msg in reversed(self.client.messages("/diagnostics")):
            for status in msg.status:
                if f"bench_{self.role}" in status.name:
                    values = {kv.key: kv.value for kv in status.values}
                    return {stage: float(values[stage_key(stage)]) for stage in STAGES
                            if stage_key(stage) in values}
        return {}

    def _outputs(self) -> list[tuple[int, int, float]]:
        """(arrival wall ns, frame stamp ns, the node's own receive->publish latency in ms)."""
        out = []
        for arrival_perf, msg in self.client.timed(self.out_topic):
            content = json.loads(msg.data)
            stamp_ns = content["header"]["stamp"]["sec"] * 10**9 + content["header"]["stamp"]["nanosec"]
            # perf_counter arrival -> wall clock (same offset for all samples of a run)
            arrival_wall = time.time_ns() - int((time.perf_counter() - arrival_perf) * 1e9)
            out.append((arrival_wall, stamp_ns, content["in_node_ms"]))
        return out


ONNX_LABEL = "student_node (.onnx, onnxruntime)"  # the node the robot-side goals are about


def _best_effort_qos() -> Any:
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


def predict_baseline(model: Path, role: str, repeats: int = 50, rate: float = 0.0) -> float:
    """Median ms of ``Classifier.predict`` on a 640x480 frame in this process, 1 thread:
    the model's share of the node latency (the rest is ROS: decode, copies, DDS, JSON).

    ``rate`` 0: back to back on one frame (hot caches, the CPU busy); else one call per
    ``1/rate`` s on 4 frames in turn, as the node sees a camera (the CPU idles in between)."""
    import torch

    from mmkd_ros.deploy.classifier import Classifier

    torch.set_num_threads(1)
    classifier = Classifier.load(model, device="cpu", cpu_threads=1)  # as the node: one thread
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(1 if rate <= 0 else 4):
        frame = {"rgb": rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)}
        if role == "teacher":
            frame["nir"] = rng.integers(0, 65536, (HEIGHT, WIDTH, 1), dtype=np.uint16)
        frames.append(frame)
    classifier.warmup(3)
    times = []
    for k in range(repeats):
        if rate > 0:
            time.sleep(1.0 / rate)
        start = time.perf_counter()
        classifier.predict(frames[k % len(frames)])
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def prepare_baseline(size: tuple[int, int], repeats: int = 200) -> float:
    """Median ms of the torch-free preprocessing (``prepare_array``) of one 640x480 rgb8 frame to
    the model input: the ONNX node's resize + normalise, measured alone."""
    from mmkd_ros.core.preprocess import prepare_array

    frame = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    prepare_array(frame, size, [0.5] * 3, [0.25] * 3)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        prepare_array(frame, size, [0.5] * 3, [0.25] * 3)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), MB; NaN when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


def start_node(install: Path, role: str, model: Path, logs: Path) -> ros_testing.NodeProcess:
    remaps = (
        ["-r", f"image:=/bench/{role}/rgb"]
        if role == "student"
        else ["-r", f"rgb/image:=/bench/{role}/rgb", "-r", f"nir/image:=/bench/{role}/nir"]
    )
    args = ["-r", f"__node:=bench_{role}", *remaps, "-p", f"model_path:={model}", "-p", "device:=cpu"]
    return ros_testing.NodeProcess(install, f"{role}_node", args, logs)


def measure(
    client,
    install: Path,
    role: str,
    model: Path,
    logs: Path,
    seconds: float,
    latency_rate: float,
    annotated: bool = False,
    ladder: bool = True,
    latency_seconds: float = 20.0,
    repeats: int = 1,
) -> dict[str, Any]:
    node = start_node(install, role, model, logs)
    try:
        bench = Bench(client, role, node, annotated)
        bench.wait_ready()
        latency_run = bench.run(latency_rate, latency_seconds)
        latency_run["rss_mb"] = rss_mb(node.proc.pid)
        # further latency runs of the same node: how far one run's p50/p99 can be trusted
        runs = [latency_run] + [bench.run(latency_rate, latency_seconds) for _ in range(repeats - 1)]
        steps = []
        held: Optional[float] = None
        failures = 0
        for rate in RATES if ladder else ():
            step = bench.run(rate, seconds)
            steps.append(step)
            print(
                f"  {role}: {rate:>3} Hz (achieved {step['achieved']:.1f}) -> {step['classified']}/{step['sent']} "
                f"classified, drop {100 * step['drop']:.1f} %, p50 {pct(step['latencies'], 50):.1f} ms",
                flush=True,
            )
            if step["drop"] < 0.01 and step["achieved"] >= 0.97 * rate:
                held, failures = rate, 0
            else:
                failures += 1
                if failures >= 2:
                    break
        return {"latency": latency_run, "runs": runs, "steps": steps, "held": held}
    finally:
        node.stop()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--install", type=Path, help="existing colcon install base (default: build one)")
    parser.add_argument(
        "--student", type=Path, help="student checkpoint/onnx (default: untrained default arch)"
    )
    parser.add_argument("--teacher", type=Path, help="teacher checkpoint (default: untrained default arch)")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each rate step")
    parser.add_argument("--latency-rate", type=float, default=30.0, help="rate of the latency run (Hz)")
    parser.add_argument("--latency-seconds", type=float, default=20.0,
                        help="duration of the latency run (s; 20 s at 30 Hz = 600 frames, enough for a p99)")
    parser.add_argument("--goal-runs", type=int, default=5,
                        help="latency runs of the ONNX student node, the one the goals are about (the "
                        "verdicts use their median p50 and p99)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = parser.parse_args(argv)

    ros_testing.use_test_domain()
    work = Path(tempfile.mkdtemp(prefix="bench_nodes_"))
    install = args.install or ros_testing.colcon_build(work / "colcon")
    student_ckpt, teacher_ckpt, info = default_checkpoints(work)
    if args.student:
        student_ckpt, info["student"] = args.student, str(args.student)
    if args.teacher:
        teacher_ckpt, info["teacher"] = args.teacher, str(args.teacher)
    variants = [
        ("student_node (.pt, torch)", "student", student_ckpt, {}),
        ("teacher_node (.pt, torch)", "teacher", teacher_ckpt, {}),
    ]
    try:
        from mmkd_ros.tools.export import export_student

        onnx_path = export_student(student_ckpt, work / "onnx", formats=("onnx",)).paths["onnx"]
        variants.insert(1, (ONNX_LABEL, "student", onnx_path, {}))
    except Exception as exc:  # the export is another module's: report, do not fail the bench
        print(f"no ONNX variant: {exc}", flush=True)
    variants.append(
        (
            "student_node (.pt) + ~/image_annotated subscriber",
            "student",
            student_ckpt,
            {"annotated": True, "ladder": False, "latency_rate": 30.0},
        )
    )
    models = {str(model): (model, role) for _, role, model, _ in variants}  # each model once
    baseline = {key: predict_baseline(model, role) for key, (model, role) in models.items()}
    spaced = {key: predict_baseline(model, role, repeats=60, rate=args.latency_rate)
              for key, (model, role) in models.items()}
    prepare_ms = prepare_baseline(tuple(info["input_size"]))
    load_before = os.getloadavg()
    client = ros_testing.RosClient("bench_nodes")
    results: dict[str, dict[str, Any]] = {}
    try:
        for label, role, model, options in variants:
            print(f"{label}: {model.name}", flush=True)
            results[label] = measure(
                client,
                install,
                role,
                model,
                work / "logs",
                args.seconds,
                options.get("latency_rate", args.latency_rate),
                annotated=options.get("annotated", False),
                ladder=options.get("ladder", True),
                latency_seconds=args.latency_seconds,
                repeats=args.goal_runs if label == ONNX_LABEL else 1,
            )
            results[label]["rate"] = options.get("latency_rate", args.latency_rate)
            results[label]["model"] = model
    finally:
        client.close()
    load_after = os.getloadavg()

    def row(label: str) -> str:
        r = results[label]
        lat, in_node = r["latency"]["latencies"], r["latency"]["in_node"]
        held = "-" if r.get("held") is None else f"{r['held']:g} Hz"
        outside = [t - n for t, n in zip(lat, in_node)]
        forward = baseline[str(r["model"])]
        stages = r["latency"]["stages"]
        stage_text = " / ".join(f"{stages.get(k, float('nan')):.2f}" for k in STAGES)
        return (
            f"| {label} | {r['rate']:g} Hz | {pct(lat, 50):.1f} | {pct(lat, 99):.1f} | {pct(in_node, 50):.1f} | "
            f"{stage_text} | {pct(outside, 50):.1f} | {pct(r['latency']['publish_ms'], 50):.2f} | "
            f"{forward:.1f} | {spaced[str(r['model'])]:.1f} | "
            f"{100 * r['latency']['drop']:.1f} % | {r['latency']['rss_mb']:.0f} | {held} |"
        )

    teacher_held = results["teacher_node (.pt, torch)"]["held"]
    ratios = ", ".join(
        f"{label.split(' ', 1)[1]} {(r['held'] or 0) / teacher_held:.1f}x"
        for label, r in results.items()
        if label.startswith("student") and r["steps"] and teacher_held
    )
    cores = os.cpu_count()
    from mmkd_ros.core.provenance import code_version

    lines = [
        f"Command: `.venv/bin/python bench/bench_nodes.py` (code {code_version()['commit'][:12]}, "
        f"{time.strftime('%Y-%m-%d')}, {cores} CPU cores, "
        f"device cpu, node default cpu_threads 1 for torch and onnxruntime alike). Load average "
        f"before/after: {load_before[0]:.1f} / {load_after[0]:.1f} (the machine was shared with other jobs: "
        "absolute figures are pessimistic and noisy; compare rows of one run).",
        "",
        f"Input 640x480 rgb8 (+ 640x480 mono16 NIR, same stamps, for the teacher), model input "
        f"{info['input_size'][0]}x{info['input_size'][1]}. Student: {info['student']}. Teacher: {info['teacher']}.",
        f"Latency run: {args.latency_seconds:g} s at the rate given per row "
        f"({args.latency_seconds * args.latency_rate:.0f} frames at {args.latency_rate:g} Hz). "
        "Latency = classification arrival - frame header stamp (decode, resize, inference, publish, both DDS "
        "hops); in node = the node's own receive -> result time (``in_node_ms`` of the output, beside "
        "``latency_ms``, the node's own stamp -> result figure); predict() alone = ``Classifier.predict`` "
        "in the bench process (torch: 1 thread), before the nodes start.",
        "Held = highest rate of the ladder "
        + ", ".join(f"{r}" for r in RATES)
        + f" Hz ({args.seconds:g} s each) with under 1 % frames unclassified and the publisher on time.",
        "",
        "Breakdown: in node = the node's receive -> result (``in_node_ms``); its stages, p50 of each from "
        "the node's /diagnostics (``stage_*_p50_ms``): wait = receive -> inference starts (the hand-over "
        "to the worker thread with ``inference:=worker``, the teacher's default; about 0 when the node "
        "classifies in its callback, the student's default), decode = message -> array, predict = ``Classifier.predict`` (resize, normalise, forward), "
        "publish = building and publishing the classification (after ``in_node_ms`` is taken); outside = "
        "latency - in node (the camera side's publish(), DDS in and out, the executor's wake-up, the "
        "client's callback); camera publish() = the bench's own ``publish()`` call of the 900 KB frame, "
        "inside outside. predict() alone: back to back on one frame (hot caches, busy CPU) and at the "
        "latency run's rate on 4 frames in turn (the CPU idles between frames, as in the node). RSS = "
        "the node process's resident memory after the latency run.",
        "",
        "| node | latency run | p50 (ms) | p99 (ms) | in node p50 (ms) | wait / decode / predict / publish "
        "p50 (ms) | outside p50 (ms) | camera publish() p50 (ms) | predict() alone, back to back (ms) "
        f"| predict() alone at {args.latency_rate:g} Hz (ms) | unclassified | RSS (MB) | held |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[row(label) for label in results],
        "",
        f"Sustainable rate, student / teacher: {ratios}.",
        "",
        "Rate ladder (classified / sent, p50 ms):",
        "",
    ]
    for label, r in results.items():
        if r["steps"]:
            steps = ", ".join(
                f"{st['rate']} Hz: {st['classified']}/{st['sent']} ({pct(st['latencies'], 50):.0f} ms)"
                for st in r["steps"]
            )
            lines.append(f"- {label}: {steps}")
    if ONNX_LABEL in results:
        r = results[ONNX_LABEL]
        lat, in_node = r["latency"]["latencies"], r["latency"]["in_node"]
        runs = r["runs"]
        p50 = statistics.median(pct(run["latencies"], 50) for run in runs)
        p99 = statistics.median(pct(run["latencies"], 99) for run in runs)
        rss = r["latency"]["rss_mb"]
        drop = 100 * max(run["drop"] for run in runs)
        stages = r["latency"]["stages"]

        def verdict(value: float, goal: float, unit: str) -> str:
            return f"{value:.1f} {unit} ({'meets' if value <= goal else 'MISSES'} the {goal:g} {unit} goal)"

        each = "; ".join(f"{pct(run['latencies'], 50):.1f} / {pct(run['latencies'], 99):.1f}"
                         for run in runs)
        lines += [
            "",
            f"Against the robot-side goals (the ONNX student node at {r['rate']:g} Hz, 640x480 rgb8, "
            f"this {cores}-core machine; median of {len(runs)} latency runs of {args.latency_seconds:g} s, "
            f"p50 / p99 ms of each: {each}; unclassified: the worst run): p50 {verdict(p50, 5, 'ms')}, "
            f"p99 {verdict(p99, 10, 'ms')}, RSS {verdict(rss, 250, 'MB')}, {verdict(drop, 1, '%')} "
            f"unclassified. Where the first run's {pct(lat, 50):.1f} ms go (p50 of each part): in the "
            f"node {pct(in_node, 50):.1f} ms = "
            + ", ".join(f"{k} {stages.get(k, float('nan')):.2f}" for k in STAGES[:3])
            + f" ms; predict() is {spaced[str(r['model'])]:.1f} ms at {r['rate']:g} Hz in the bench "
            f"process too, against {baseline[str(r['model'])]:.1f} ms back to back (the torch-free "
            f"resize + normalise of the full frame, `prepare_array`, {prepare_ms:.2f} ms back to back "
            "when timed alone): between frames the CPU idles and the next frame meets cold caches "
            f"and clocks. After it, publish {stages.get('publish', float('nan')):.2f} ms. "
            f"Outside the node {pct([t - n for t, n in zip(lat, in_node)], 50):.1f} ms, of it "
            f"{pct(r['latency']['publish_ms'], 50):.2f} ms the camera side's own publish() of the "
            "frame; the rest is the two DDS hops (shared memory), the executors' wake-ups and "
            "the conversion of the 900 KB message to Python in the node.",
        ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        replace_section(TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
