"""student_node as a real process over real DDS, run from the colcon install tree.

One node process serves most assertions (start-up costs seconds: rclpy + torch); it runs with
use_sim_time, and the test publishes /clock, so sim time is checked on the way.
"""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from mmkd_ros.deploy.classifier import Classifier
from ros_testing import NodeProcess, image_msg, wait_for_subscribers, wait_until

pytestmark = pytest.mark.slow

NODE = "/student"
INPUT = "/test_camera/image_raw"
COMPRESSED_INPUT = "/test_camera/image_raw/compressed"
ONLY_COMPRESSED = "/other_camera/image_raw/compressed"  # published as CompressedImage only
SIM_TIME_S = 4242


def frames(n: int, seed: int = 1) -> list[np.ndarray]:
    """Distinct 640x480 RGB frames (smooth colour fields, so the tiny model's scores differ)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        out.append(cv2.resize(small, (640, 480), interpolation=cv2.INTER_LINEAR))
    return out


@pytest.fixture(scope="module")
def student(colcon_install, student_ckpt, client, node_logs):
    """The node under test, with its outputs subscribed by the client."""
    client.subscribe(String, f"{NODE}/classification")
    client.subscribe(Image, f"{NODE}/image_annotated")
    client.subscribe(DiagnosticArray, "/diagnostics")
    args = [
        "-r",
        "__node:=student",
        "-r",
        f"image:={INPUT}",
        "-p",
        f"model_path:={student_ckpt}",
        "-p",
        "device:=cpu",
        "-p",
        "use_sim_time:=true",
        "-p",
        "diagnostics_period:=0.2",
    ]
    node = NodeProcess(colcon_install, "student_node", args, node_logs)
    # A second node, on CompressedImage, starts meanwhile (start-up is the slow part of these tests).
    client.subscribe(String, "/student_c/classification")
    compressed_args = [
        "-r",
        "__node:=student_c",
        "-r",
        f"image:={COMPRESSED_INPUT}",
        "-p",
        f"model_path:={student_ckpt}",
        "-p",
        "device:=cpu",
        "-p",
        "input_type:=compressed",
        "-p",
        "warmup_frames:=0",
        "-p",
        "inference:=worker",  # the student classifies in its callback by default; the worker path too
    ]
    compressed_node = NodeProcess(colcon_install, "student_node", compressed_args, node_logs)
    # A third node left at input_type raw on a topic that carries CompressedImage only.
    client.publisher(CompressedImage, ONLY_COMPRESSED, depth=1)
    mistyped_args = ["-r", "__node:=student_raw", "-r", f"image:={ONLY_COMPRESSED}", "-p",
                     f"model_path:={student_ckpt}", "-p", "device:=cpu", "-p", "warmup_frames:=0",
                     "-p", "diagnostics_period:=0.2"]
    mistyped_node = NodeProcess(colcon_install, "student_node", mistyped_args, node_logs)
    publisher = client.publisher(Image, INPUT, depth=1)
    clock = client.publisher(Clock, "/clock", depth=1)
    assert wait_for_subscribers(publisher, timeout=60), node.output()
    clock.publish(Clock(clock=Time(sec=SIM_TIME_S)))
    yield node, publisher, clock, compressed_node, mistyped_node
    compressed_node.interrupt()  # they exit side by side (interpreter teardown takes a second or two)
    mistyped_node.interrupt()
    assert mistyped_node.stop() == 0, mistyped_node.output()
    assert compressed_node.stop() == 0, compressed_node.output()
    assert node.stop() == 0, node.output()


def _classify(client, publisher, msg, timeout: float = 10.0) -> dict:
    """Publish one frame, wait for its classification (matched by stamp)."""
    topic = f"{NODE}/classification"
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)

    def match():
        for out in client.messages(topic):
            content = json.loads(out.data)
            if (content["header"]["stamp"]["sec"], content["header"]["stamp"]["nanosec"]) == stamp:
                return content
        return None

    # Republished if nothing comes back: right after discovery the node's reader may not have
    # matched our writer yet (the writer matches first), and that first sample is then lost.
    deadline = time.monotonic() + timeout
    content = None
    while content is None and time.monotonic() < deadline:
        publisher.publish(msg)
        content = wait_until(match, 1.5)
    assert content is not None, f"no classification for stamp {stamp}"
    return content


def test_classifications_match_inference_classifier(student, client, student_ckpt) -> None:
    node, publisher, _, _, _ = student
    reference = Classifier.load(student_ckpt, device="cpu")
    client.subscribe(Image, f"{NODE}/image_annotated")
    for i, array in enumerate(frames(4)):
        stamp_ns = 1_000_000_000 * (100 + i) + 123
        content = _classify(client, publisher, image_msg(array, "rgb8", stamp_ns, frame_id="cam_optical"))
        expected = reference.predict({"rgb": array})
        assert content["header"]["frame_id"] == "cam_optical"
        assert content["class_id"] == expected.class_index
        assert content["label"] == expected.label == reference.classes[expected.class_index]
        assert content["score"] == pytest.approx(expected.score, abs=1e-5)
        assert list(content["scores"]) == reference.classes
        assert list(content["scores"].values()) == pytest.approx(expected.scores, abs=1e-5)
        assert content["model"] == student_ckpt.name
        assert 0.0 < content["in_node_ms"] < 5000.0
        # latency_ms counts from the header stamp on the node's clock: sim time, held at SIM_TIME_S
        assert content["latency_ms"] == pytest.approx((SIM_TIME_S * 10**9 - stamp_ns) / 1e6, abs=1.0)
    # The same pixels as bgr8: the node must convert to RGB as training did, not feed BGR.
    array = frames(1, seed=7)[0]
    bgr = image_msg(array[:, :, ::-1], "bgr8", 2_000_000_000)
    content = _classify(client, publisher, bgr)
    assert list(content["scores"].values()) == pytest.approx(
        reference.predict({"rgb": array}).scores, abs=1e-5
    )
    assert "vision_msgs is not installed" in node.output()  # the one warning of the JSON fallback
    assert node.output().count("vision_msgs is not installed") == 1


def test_annotated_image_has_input_size_and_header(student, client) -> None:
    _, publisher, _, _, _ = student
    topic = f"{NODE}/image_annotated"
    wait_for_subscribers(publisher)
    stamp_ns = 3_000_000_000 + 77
    array = frames(1, seed=3)[0][:240, :320]  # another size than the other frames
    deadline = time.monotonic() + 10
    annotated = None
    while annotated is None and time.monotonic() < deadline:  # the node publishes it lazily
        _classify(client, publisher, image_msg(array, "rgb8", stamp_ns, frame_id="cam_a"))
        annotated = wait_until(
            lambda: next((m for m in client.messages(topic) if m.header.stamp.nanosec == 77), None), 1.0
        )
    assert annotated is not None
    assert (annotated.height, annotated.width, annotated.encoding, annotated.step) == (240, 320, "rgb8", 960)
    assert annotated.header.frame_id == "cam_a" and annotated.header.stamp.sec == 3
    pixels = np.frombuffer(annotated.data, np.uint8).reshape(240, 320, 3)
    assert not np.array_equal(pixels, array)  # the label was drawn
    assert np.array_equal(pixels[200:], array[200:])  # ... on a banner, the rest is the input


def _diagnostic_value(client, key: str) -> int:
    """Latest value of ``key`` in the node's /diagnostics (-1 before the first one)."""
    for diag in reversed(client.messages("/diagnostics")):
        for status in diag.status:
            if status.name.endswith(NODE):
                return int({kv.key: kv.value for kv in status.values}[key])
    return -1


def test_bad_frames_are_counted_and_survived(student, client) -> None:
    node, publisher, _, _, _ = student
    good = frames(1, seed=5)[0]
    truncated = image_msg(good, "rgb8", 5_000_000_000)
    truncated.data = good.tobytes()[:1000]
    unknown = image_msg(good, "rgb8", 5_000_000_001)
    unknown.encoding = "yuv422_yuy2_weird"
    wrong_size = image_msg(good, "rgb8", 5_000_000_002)
    wrong_size.width = 4000
    mono_for_rgb_model = image_msg(good[:, :, :1], "mono8", 5_000_000_003)
    assert wait_until(lambda: _diagnostic_value(client, "bad_frames") >= 0, 5.0)
    for msg in (truncated, unknown, wrong_size, mono_for_rgb_model):
        # One at a time, each until it is counted (a burst would rightly be cut by depth-1 QoS).
        before = _diagnostic_value(client, "bad_frames")
        counted = None
        for _ in range(3):
            publisher.publish(msg)
            counted = wait_until(lambda b=before: _diagnostic_value(client, "bad_frames") > b, 2.0)
            if counted:
                break
        assert counted, f"bad frame {msg.header.stamp.nanosec} not counted"
    content = _classify(client, publisher, image_msg(good, "rgb8", 5_000_000_010))
    assert content["header"]["stamp"]["nanosec"] == 10
    assert node.alive()
    output = node.output()
    assert "bad frame skipped" in output and "Traceback" not in output
    assert "truncated rgb8 image" in output  # the first one is logged; the rest are throttled


def test_diagnostics_under_sim_time(student, client) -> None:
    _, _, clock, _, _ = student
    clock.publish(Clock(clock=Time(sec=SIM_TIME_S)))

    def ours():
        for diag in reversed(client.messages("/diagnostics")):
            if diag.header.stamp.sec == SIM_TIME_S and diag.status[0].name.endswith(NODE):
                return diag
        return None

    diag = wait_until(ours, 5.0)
    assert diag is not None, "no /diagnostics stamped with the sim time from /clock"
    status = diag.status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.hardware_id == values["device"] == "cpu"
    assert {
        "latency_p50_ms",
        "latency_p95_ms",
        "rate_hz",
        "frames_dropped",
        "bad_frames",
        "frames_classified",
        "model",
    } <= set(values)
    assert float(values["latency_p50_ms"]) > 0 and int(values["frames_classified"]) >= 5
    assert float(values["latency_p95_ms"]) >= float(values["latency_p50_ms"])
    # where a frame's time goes, stage by stage; their sum is the in-node figure (give or take
    # the medians of different frames and the publish stage, which comes after it)
    stages = {name: float(values[f"stage_{name}_p50_ms"])
              for name in ("wait", "decode", "predict", "publish")}
    assert all(ms >= 0 for ms in stages.values()) and stages["predict"] > 0, stages
    assert stages["wait"] + stages["decode"] + stages["predict"] <= \
        2 * float(values["latency_p95_ms"]), (stages, values["latency_p95_ms"])


def test_stale_frames_are_dropped_not_queued(student, client) -> None:
    """A burst faster than inference: frames are skipped (and counted), never queued behind."""
    _, publisher, _, _, _ = student
    topic = f"{NODE}/classification"
    client.clear(topic)
    burst = [image_msg(a, "rgb8", 6_000_000_000 + i) for i, a in enumerate(frames(40, seed=9))]
    for msg in burst:
        publisher.publish(msg)
    # A frame sent right after the burst is classified at once: nothing of the burst waits in line.
    marker = image_msg(frames(1, seed=10)[0], "rgb8", 7_000_000_000)
    start = time.monotonic()
    _classify(client, publisher, marker)
    assert time.monotonic() - start < 5.0
    burst_stamps = [
        json.loads(m.data)["header"]["stamp"]["nanosec"]
        for m in client.messages(topic)
        if json.loads(m.data)["header"]["stamp"]["sec"] == 6
    ]
    assert burst_stamps == sorted(burst_stamps)  # newest first would mean a queue was reordered
    assert len(burst_stamps) < len(burst)  # 40 frames at once: most had to be skipped

    dropped = wait_until(lambda: _diagnostic_value(client, "frames_dropped") > 0, 5.0)
    assert dropped, "skipped frames were not counted as dropped"


BAD_PARAMETERS = {
    "missing-model": ({"model_path": "/nonexistent/student.pt"}, "does not exist"),
    "empty-model": ({"model_path": ""}, "parameter 'model_path' is empty"),
    "bad-device": ({"device": "tpu"}, "parameter 'device'"),
    "bad-input-type": ({"input_type": "h264"}, "parameter 'input_type'"),
    "bad-inference": ({"inference": "gpu"}, "parameter 'inference'"),
    "negative-warmup": ({"warmup_frames": -1}, "parameter 'warmup_frames'"),
    "wrong-type": ({"diagnostics_period": "often"}, "parameter 'diagnostics_period'"),
    "junk-model": ({"model_path": "JUNK"}, "not an mmkd_ros checkpoint"),
    "teacher-model": ({"model_path": "TEACHER"}, "use teacher_node"),
}


def test_bad_parameters_exit_with_one_line(
    colcon_install, student_ckpt, teacher_ckpt, node_logs, tmp_path
) -> None:
    """Each bad parameter: exit status 2 and ONE fatal line naming it, no traceback.

    The processes run side by side (each pays for importing rclpy and torch).
    """
    import torch

    junk = tmp_path / "junk.pt"
    torch.save({"hello": "world"}, junk)
    replace = {"JUNK": str(junk), "TEACHER": str(teacher_ckpt)}
    nodes = {}
    for case, (params, _) in BAD_PARAMETERS.items():
        values = {"model_path": str(student_ckpt), "device": "cpu", **params}
        values["model_path"] = replace.get(values["model_path"], values["model_path"])
        args = [a for k, v in values.items() for a in ("-p", f"{k}:={v}" if v != "" else f"{k}:=''")]
        nodes[case] = NodeProcess(colcon_install, "student_node", args, node_logs)
    failures = []
    for case, node in nodes.items():
        status = node.wait(timeout=90)
        output = node.output()
        node.stop()
        fatal = [line for line in output.splitlines() if "cannot start" in line]
        message = BAD_PARAMETERS[case][1]
        if status != 2 or len(fatal) != 1 or message not in fatal[0] or "Traceback" in output:
            failures.append(f"{case}: status {status}, output:\n{output}")
    assert not failures, "\n".join(failures)


def test_compressed_input(student, client, student_ckpt) -> None:
    """input_type:=compressed subscribes to CompressedImage; a png frame gives the same scores
    (this node classifies in its worker thread: inference:=worker)."""
    node = student[3]
    publisher = client.publisher(CompressedImage, COMPRESSED_INPUT, depth=1)
    assert wait_for_subscribers(publisher, timeout=60), node.output()
    array = frames(1, seed=11)[0]
    ok, png = cv2.imencode(".png", array[:, :, ::-1])  # lossless, so scores can be compared
    msg = CompressedImage(header=Header(stamp=Time(sec=9), frame_id="c"), format="rgb8; png compressed bgr8")
    msg.data = png.tobytes()
    publisher.publish(msg)
    out = wait_until(lambda: client.messages("/student_c/classification"), 10.0)
    assert out, node.output()
    content = json.loads(out[0].data)
    expected = Classifier.load(student_ckpt, device="cpu").predict({"rgb": array})
    assert list(content["scores"].values()) == pytest.approx(expected.scores, abs=1e-5)


def test_raw_input_on_a_compressed_topic_says_so(student, client) -> None:
    """ROS 2 delivers nothing to a subscription of the wrong type, silently: the node names the
    topic's type and the parameter that fixes it, in /diagnostics and once in its log."""
    node = student[4]
    expected = (f"{ONLY_COMPRESSED} is published as sensor_msgs/msg/CompressedImage but this node "
                "subscribes sensor_msgs/msg/Image (input_type raw), so it receives nothing: set "
                "input_type:=compressed")

    def warned():
        for diag in reversed(client.messages("/diagnostics")):
            for status in diag.status:
                if status.name.endswith("/student_raw"):
                    return status.message
        return None

    assert wait_until(lambda: warned() == expected, 60.0), (warned(), node.output())
    assert wait_until(lambda: node.output().count(expected) == 1, 10.0), node.output()
