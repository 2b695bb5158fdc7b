"""replay_node as a real process: recorded timing kept, /clock published, filters, exit at the end."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from mmkd_ros.data.ros_images import array_to_compressed_msg, array_to_image_msg
from mmkd_ros.nodes.replay_node import to_rclpy
from ros_testing import NodeProcess, wait_until

pytestmark = pytest.mark.slow

RGB = "/cam/rgb"
JPEG = "/cam/rgb/compressed"
LABEL = "/scene/label"
T0 = 1_700_000_000 * 10**9  # bag start (ns): a realistic epoch, far from sim time 0
# Uneven gaps (40/60 ms): a player that ticked at a fixed rate would not reproduce them.
RGB_TIMES = [T0 + sum(40_000_000 if k % 2 else 60_000_000 for k in range(i)) for i in range(30)]
JPEG_TIMES = RGB_TIMES[::3]
LABEL_TIMES = {T0: "soil", T0 + 700_000_000: "water"}


def frame(i: int) -> np.ndarray:
    return np.full((24, 32, 3), i * 8 % 256, dtype=np.uint8)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small rosbag2 (mcap) with raw and compressed images and labels, written with rosbags."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    path = tmp_path_factory.mktemp("replay") / "bag"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {
            RGB: writer.add_connection(RGB, "sensor_msgs/msg/Image", typestore=typestore),
            JPEG: writer.add_connection(JPEG, "sensor_msgs/msg/CompressedImage", typestore=typestore),
            LABEL: writer.add_connection(LABEL, "std_msgs/msg/String", typestore=typestore),
        }
        entries = [
            (t, RGB, array_to_image_msg(frame(i), "rgb8", t, "cam", typestore))
            for i, t in enumerate(RGB_TIMES)
        ]
        entries += [
            (t, JPEG, array_to_compressed_msg(frame(i), "jpeg", t, "cam", typestore))
            for i, t in enumerate(JPEG_TIMES)
        ]
        entries += [
            (t, LABEL, typestore.types["std_msgs/msg/String"](data=s)) for t, s in LABEL_TIMES.items()
        ]
        for stamp, topic, msg in sorted(entries, key=lambda e: e[0]):
            writer.write(conns[topic], stamp, typestore.serialize_cdr(msg, conns[topic].msgtype))
    return path


def test_converter_keeps_fields() -> None:
    typestore = get_typestore(Stores.ROS2_KILTED)
    msg = to_rclpy(array_to_image_msg(frame(3), "rgb8", T0 + 5, "cam", typestore), "sensor_msgs/msg/Image")
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.header.frame_id) == (24, 32, "rgb8", 96, "cam")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (T0 // 10**9, 5)
    assert bytes(msg.data) == frame(3).tobytes()
    jpeg = to_rclpy(
        array_to_compressed_msg(frame(1), "jpeg", T0, "cam", typestore), "sensor_msgs/msg/CompressedImage"
    )
    assert isinstance(jpeg, CompressedImage) and bytes(jpeg.data[:2]) == b"\xff\xd8"
    assert to_rclpy(typestore.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String").data == "x"
    with pytest.raises(ValueError, match="cannot replay"):
        to_rclpy(None, "sensor_msgs/msg/Imu")


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_replay_keeps_recorded_timing_and_publishes_clock(bag, client, colcon_install, node_logs) -> None:
    for topic, msg_type in ((RGB, Image), (JPEG, CompressedImage), (LABEL, String), ("/clock", Clock)):
        client.subscribe(msg_type, topic)
    node = NodeProcess(
        colcon_install, "replay_node", ["-p", f"bag:={bag}", "-p", "wait_for_subscribers:=2"], node_logs
    )
    try:
        assert node.wait(timeout=30) == 0, node.output()  # ends by itself when not looping
    finally:
        node.stop()
    assert "replay finished" in node.output()
    wait_until(lambda: len(client.messages(RGB)) == len(RGB_TIMES), timeout=3)

    rgb = client.timed(RGB)
    assert [_stamp_ns(m) for _, m in rgb] == RGB_TIMES  # all frames, in order, stamps unchanged
    assert bytes(rgb[5][1].data) == frame(5).tobytes()
    arrival = np.array([t for t, _ in rgb])
    recorded = (np.array(RGB_TIMES) - RGB_TIMES[0]) / 1e9
    offset = np.median(arrival - recorded)  # the first sample after discovery may come late
    errors = np.abs(arrival - recorded - offset)
    # Loose bounds for a loaded 2-core machine; the median shows the pacing, the max the jitter.
    assert statistics.median(errors) < 0.010, errors
    assert errors.max() < 0.100, errors
    span = arrival[-1] - arrival[1]
    assert span == pytest.approx(recorded[-1] - recorded[1], rel=0.05)
    assert [_stamp_ns(m) for m in client.messages(JPEG)] == JPEG_TIMES
    assert [m.data for m in client.messages(LABEL)] == list(LABEL_TIMES.values())

    clock = [c.clock.sec * 10**9 + c.clock.nanosec for c in client.messages("/clock")]
    duration = (RGB_TIMES[-1] - RGB_TIMES[0]) / 1e9
    assert len(clock) > 30 * duration  # 100 Hz nominal, between messages too
    assert clock == sorted(clock)  # never runs backwards within one pass
    assert RGB_TIMES[0] <= clock[0] and clock[-1] == RGB_TIMES[-1]


def test_rate_offset_and_topic_filter(bag, client, colcon_install, node_logs) -> None:
    client.subscribe(Image, RGB)
    client.subscribe(CompressedImage, JPEG)
    client.clear(RGB)
    client.clear(JPEG)
    args = [
        "-p",
        f"bag:={bag}",
        "-p",
        "rate:=2.0",
        "-p",
        "start_offset:=0.5",
        "-p",
        f"topics:=['{RGB}']",
        "-p",
        "wait_for_subscribers:=1",
    ]
    node = NodeProcess(colcon_install, "replay_node", args, node_logs)
    try:
        assert node.wait(timeout=30) == 0, node.output()
    finally:
        node.stop()
    wait_until(lambda: client.messages(RGB), timeout=3)
    expected = [t for t in RGB_TIMES if t >= T0 + 500_000_000]
    rgb = client.timed(RGB)
    assert [_stamp_ns(m) for _, m in rgb] == expected
    assert client.messages(JPEG) == []
    arrival = np.array([t for t, _ in rgb])
    recorded = (np.array(expected) - expected[0]) / 1e9 / 2.0  # twice as fast
    errors = np.abs(arrival - recorded - np.median(arrival - recorded))
    # At rate 1.0 the median error would be about 0.1 s; a loaded machine adds outliers only.
    assert statistics.median(errors) < 0.02, errors


@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "bag:=/nonexistent/bag"], "parameter 'bag'"),
        (["-p", "topics:=['/no/such/topic']"], "/no/such/topic is not in the bag"),
        (["-p", "rate:=0.0"], "parameter 'rate'"),
    ],
    ids=["missing-bag", "unknown-topic", "zero-rate"],
)
def test_bad_parameters_exit_with_one_line(bag, colcon_install, node_logs, args, message) -> None:
    if "bag:=" not in " ".join(args):
        args = ["-p", f"bag:={bag}", *args]
    node = NodeProcess(colcon_install, "replay_node", args, node_logs)
    status = node.wait(timeout=20)
    output = node.output()
    node.stop()
    assert status == 2, output
    assert message in output
    assert "Traceback" not in output


def test_replays_a_realsense_bag_skipping_topic_names_ros2_refuses(shared_data, client, colcon_install,
                                                                   node_logs) -> None:
    """A ROS 1 RealSense bag: ~60 String topics with spaces in their names, one colour frame."""
    bag = shared_data / "foreign_bags" / "realsense_depth_color_640x480.bag"
    if not bag.exists():
        pytest.skip(f"{bag} is absent")
    color = "/device_0/sensor_1/Color_0/image/data"
    client.subscribe(Image, color)
    node = NodeProcess(colcon_install, "replay_node", ["-p", f"bag:={bag}", "-p", "wait_for_subscribers:=1"],
                       node_logs)
    try:
        status = node.wait(timeout=60)
    finally:
        node.stop()
    output = node.output()
    assert status == 0, output
    assert "Traceback" not in output and "ERROR" not in output, output
    assert "whose names ROS 2 refuses" in output and "replay finished" in output
    assert wait_until(lambda: client.messages(color), timeout=5)
    frame_msg = client.messages(color)[0]
    assert (frame_msg.width, frame_msg.height, frame_msg.encoding) == (640, 480, "rgb8")


def test_ctrl_c_mid_playback_ends_cleanly(bag, colcon_install, node_logs) -> None:
    node = NodeProcess(colcon_install, "replay_node", ["-p", f"bag:={bag}", "-p", "loop:=true",
                                                       "-p", "wait_for_subscribers:=0"], node_logs)
    try:
        time.sleep(3.0)  # a few passes of the looping bag
        assert node.alive(), node.output()
        node.interrupt()
        status = node.wait(timeout=20)
    finally:
        node.stop()
    output = node.output()
    assert status == 0, output
    assert "ERROR" not in output and "Traceback" not in output, output
