"""Message builders (outputs.py) and the shared plumbing (common.py), without processes."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import ReliabilityPolicy
from std_msgs.msg import Header

from mmkd_ros.nodes import outputs
from mmkd_ros.nodes.common import (
    LatestSlot,
    ParameterError,
    ParamSpec,
    SequenceGapCounter,
    camera_qos,
    declare_parameters,
    percentile,
)

CLASSES = ["soil", "water", "asphalt"]
HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_color_optical_frame")


def content(**overrides):
    args = dict(
        header=HEADER,
        class_index=1,
        label="water",
        score=0.7,
        scores=[0.2, 0.7, 0.1],
        classes=CLASSES,
        model="student.pt",
        latency_ms=4.5,
        in_node_ms=3.0,
    )
    args.update(overrides)
    return outputs.classification_content(**args)


def test_content_is_json_ready_and_complete() -> None:
    c = content()
    assert c == json.loads(json.dumps(c))
    assert c["header"] == {"stamp": {"sec": 12, "nanosec": 345}, "frame_id": "camera_color_optical_frame"}
    assert (c["class_id"], c["label"], c["score"], c["model"], c["latency_ms"], c["in_node_ms"]) == (
        1,
        "water",
        0.7,
        "student.pt",
        4.5,
        3.0,
    )
    assert c["scores"] == {"soil": 0.2, "water": 0.7, "asphalt": 0.1}
    with pytest.raises(ValueError):
        content(scores=[0.5, 0.5])


def test_json_fallback_carries_the_content() -> None:
    assert json.loads(outputs.content_to_json(content()).data) == content()


# vision_msgs is not installable here; these stand-ins have the fields of vision_msgs 4
# (Classification: header, results[]; ObjectHypothesis: class_id string, score float64).
@dataclass
class ObjectHypothesis:
    class_id: str = ""
    score: float = 0.0


@dataclass
class Classification:
    header: Header = field(default_factory=Header)
    results: list = field(default_factory=list)


def test_vision_msg_from_the_same_content() -> None:
    msg = outputs.content_to_vision_msg(content(), Classification, ObjectHypothesis)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345, HEADER.frame_id)
    assert [(h.class_id, h.score) for h in msg.results] == [("water", 0.7), ("soil", 0.2), ("asphalt", 0.1)]


def test_output_kind_here_is_json() -> None:
    kind, msg_type, to_msg = outputs.classification_output()
    try:
        import vision_msgs  # noqa: F401
    except ImportError:
        assert kind == outputs.OUTPUT_JSON and msg_type.__name__ == "String"
    else:
        assert kind == outputs.OUTPUT_VISION_MSGS


@pytest.mark.parametrize(
    "image",
    [
        np.full((48, 64, 3), 200, np.uint8),
        np.full((48, 64, 1), 40000, np.uint16),
        np.full((48, 64), 7, np.uint8),
    ],
    ids=["rgb8", "mono16", "mono2d"],
)
def test_annotated_image(image: np.ndarray) -> None:
    before = image.copy()
    msg = outputs.annotated_image(image, HEADER, "water", 0.93)
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian) == (48, 64, "rgb8", 192, 0)
    assert msg.header is HEADER
    pixels = np.frombuffer(msg.data, np.uint8).reshape(48, 64, 3)
    base = outputs.to_rgb8(before)
    assert not np.array_equal(pixels, base)  # something was drawn
    assert np.array_equal(pixels[-8:], base[-8:])  # on the top banner only
    assert np.array_equal(image, before)  # the input is untouched


def test_diagnostics_values_and_levels() -> None:
    stats = {
        "received": 10,
        "processed": 9,
        "bad": 1,
        "latency_p50_ms": 4.0,
        "latency_p95_ms": 7.5,
        "rate_hz": 29.7,
    }
    array = outputs.diagnostics(
        Time(sec=5), "mmkd_ros: /student", "cpu", stats, dropped=3, extra={"model": "s.pt"}
    )
    status = array.status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert array.header.stamp.sec == 5 and status.hardware_id == "cpu" and status.level == DiagnosticStatus.OK
    assert values == {
        "latency_p50_ms": "4.000",
        "latency_p95_ms": "7.500",
        "rate_hz": "29.700",
        "frames_received": "10",
        "frames_classified": "9",
        "frames_dropped": "3",
        "bad_frames": "1",
        "device": "cpu",
        "model": "s.pt",
    }
    idle = outputs.diagnostics(Time(), "n", "cpu", {"latency_p50_ms": math.nan}, dropped=0).status[0]
    assert idle.level == DiagnosticStatus.WARN and "no frame" in idle.message
    assert {kv.key: kv.value for kv in idle.values}["latency_p50_ms"] == "nan"


def test_latest_slot_keeps_newest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(timeout=0.1) == 4 and slot.dropped == 4
    assert slot.take(timeout=0.01) is None
    taken = []
    worker = threading.Thread(target=lambda: taken.append(slot.take(timeout=5.0)))
    worker.start()
    slot.put(7)  # wakes a waiting worker at once
    worker.join(timeout=5.0)
    assert taken == [7]
    slot.close()
    assert slot.closed and slot.take(timeout=5.0) is None


def test_sequence_gaps_per_publisher() -> None:
    gaps = SequenceGapCounter()
    a, b = {"data": [1] * 16}, {"data": [2] * 16}
    for seq, gid in [(1, a), (2, a), (5, a), (1, b), (3, b), (6, a)]:
        gaps.update({"publication_sequence_number": seq, "publisher_gid": gid})
    assert gaps.lost == 2 + 1  # a: 3, 4 missing; b: 2 missing
    gaps.update({"publication_sequence_number": None, "publisher_gid": a})  # rmw without numbers
    gaps.update({"publication_sequence_number": 2**64 - 1, "publisher_gid": a})
    assert gaps.lost == 3


def test_percentile() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


def test_camera_qos_is_keep_last_one() -> None:
    qos = camera_qos()
    assert qos.depth == 1 and qos.reliability == ReliabilityPolicy.BEST_EFFORT
    assert camera_qos("reliable").reliability == ReliabilityPolicy.RELIABLE


def test_declare_parameters_turns_errors_into_one_line() -> None:
    specs = (
        ParamSpec("rate", 1.0, "speed", min_value=0.1, max_value=10.0),
        ParamSpec("mode", "raw", "mode", choices=("raw", "compressed")),
        ParamSpec("topics", [], "topics", type=rclpy.Parameter.Type.STRING_ARRAY),
    )

    def declare(*overrides: str) -> dict:
        context = rclpy.Context()
        rclpy.init(context=context, args=["--ros-args", *[a for o in overrides for a in ("-p", o)]])
        node = rclpy.create_node("params_probe", context=context)
        try:
            return declare_parameters(node, specs)
        finally:
            node.destroy_node()
            rclpy.try_shutdown(context=context)

    assert declare() == {"rate": 1.0, "mode": "raw", "topics": []}
    assert declare("topics:=['/a']")["topics"] == ["/a"]
    descriptor = specs[0].descriptor()
    assert descriptor.read_only and descriptor.description == "speed"
    assert descriptor.floating_point_range[0].to_value == 10.0
    for override, text in [
        ("rate:=50.0", "parameter 'rate'"),
        ("rate:=fast", "parameter 'rate'"),
        ("mode:=h264", "use one of: raw, compressed"),
    ]:
        with pytest.raises(ParameterError, match=text) as info:
            declare(override)
        assert "\n" not in str(info.value)
