"""replay_node: play a bag's image and label topics at the recorded rate, with ``/clock``.

Why not ``ros2 bag play``: rosbag2 has no pip wheels, so the demo and the tests could not run it; and
this node reads every format the rest of the package reads (rosbag2 sqlite3/mcap, ROS 1 ``.bag``)
through the same rosbags reader as extraction.

Publishes:   each selected topic under its recorded name (sensor_msgs/Image, CompressedImage,
             std_msgs/String), messages unchanged (header stamps as recorded); ``/clock`` with the
             bag time, so nodes started with ``use_sim_time:=true`` live in the bag's time.
Timing:      message ``i`` goes out at ``t0 + (t_i - t_first) / rate`` on the wall clock (the
             bag's receive timestamps); the next message is read and converted while waiting.
Ends:        by itself after the last message unless ``loop`` is true (exit status 0).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from mmkd_ros.nodes.common import ParameterError, ParamSpec, declare_parameters, main_for, output_qos

NS = 1_000_000_000


# --------------------------------------------------------------------------------------------
# rosbags message -> rclpy message, for the types we replay
# --------------------------------------------------------------------------------------------
def _header(header: Any) -> Header:
    """ROS 2 header from a rosbags one (a ROS 1 header's ``seq`` is dropped)."""
    return Header(
        stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
        frame_id=str(header.frame_id),
    )


def _data(data: Any) -> bytes:
    """uint8[] field (a numpy array in rosbags) as bytes: the fast way into an rclpy message."""
    return data.tobytes() if hasattr(data, "tobytes") else bytes(data)


CONVERTERS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "sensor_msgs/msg/Image": (
        Image,
        lambda m: Image(
            header=_header(m.header),
            height=int(m.height),
            width=int(m.width),
            encoding=str(m.encoding),
            is_bigendian=int(m.is_bigendian),
            step=int(m.step),
            data=_data(m.data),
        ),
    ),
    "sensor_msgs/msg/CompressedImage": (
        CompressedImage,
        lambda m: CompressedImage(header=_header(m.header), format=str(m.format), data=_data(m.data)),
    ),
    "std_msgs/msg/String": (String, lambda m: String(data=str(m.data))),
}


def to_rclpy(msg: Any, msgtype: str) -> Any:
    """Convert a rosbags message of a supported ``msgtype`` into the rclpy message class."""
    try:
        return CONVERTERS[msgtype][1](msg)
    except KeyError:
        raise ValueError(f"cannot replay {msgtype}; supported: {', '.join(CONVERTERS)}") from None


def _valid_topic(name: str) -> bool:
    """Whether ROS 2 accepts ``name`` as a topic (ROS 1 and vendor bags hold names with spaces)."""
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_full_topic_name import validate_full_topic_name

    try:
        return bool(validate_full_topic_name(name))
    except InvalidTopicNameException:
        return False


def ns_to_time(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS)


# --------------------------------------------------------------------------------------------
# Node
# --------------------------------------------------------------------------------------------
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("bag", "", "Bag to play: rosbag2 folder (sqlite3 or mcap) or ROS 1 .bag file."),
    ParamSpec(
        "rate",
        1.0,
        "Playback speed factor (2.0 = twice as fast as recorded).",
        min_value=0.01,
        max_value=100.0,
    ),
    ParamSpec("loop", False, "Start again at the end instead of exiting."),
    ParamSpec("start_offset", 0.0, "Seconds into the bag at which playback starts.", min_value=0.0),
    ParamSpec(
        "topics",
        [],
        "Topics to play; empty plays every Image, CompressedImage and String topic of the bag.",
        type=Parameter.Type.STRING_ARRAY,
    ),
    ParamSpec("publish_clock", True, "Publish /clock with the bag time (for use_sim_time:=true)."),
    ParamSpec(
        "clock_frequency",
        100.0,
        "How often /clock is published between messages, in Hz.",
        min_value=1.0,
        max_value=1000.0,
    ),
    ParamSpec(
        "wait_for_subscribers",
        0,
        "Before playing, wait until the played image topics have this many subscriptions in total "
        "(e.g. 1 for student_node) so no frame is lost while a node loads its model.",
        min_value=0,
        max_value=100,
    ),
    ParamSpec(
        "wait_timeout", 60.0, "Longest wait for subscribers, in seconds; then play anyway.", min_value=0.0
    ),
)


class ReplayNode(Node):
    """Reads the bag in a playback thread; the main thread spins until playback ends."""

    def __init__(self) -> None:
        super().__init__("replay")
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.published = 0

    def start(self) -> None:
        from rosbags.highlevel import AnyReader, AnyReaderError
        from rosbags.typesys import Stores, get_typestore

        self.params = declare_parameters(self, PARAMETERS)
        bag = Path(self.params["bag"]).expanduser()
        if not self.params["bag"] or not bag.exists():
            raise ParameterError(
                f"parameter 'bag': '{self.params['bag']}' does not exist; give a rosbag2 folder or a .bag file"
            )
        try:
            self.reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED))
            self.reader.open()
        except (AnyReaderError, OSError, ValueError) as exc:
            raise ParameterError(f"parameter 'bag': cannot open {bag}: {exc}") from None
        self.connections = self._select_connections()
        self.publishers_by_topic = {}
        for conn in self.connections:
            if conn.topic not in self.publishers_by_topic:
                msg_cls = CONVERTERS[conn.msgtype][0]
                self.publishers_by_topic[conn.topic] = self.create_publisher(
                    msg_cls, conn.topic, output_qos(5)
                )
        self.pub_clock = (
            self.create_publisher(Clock, "/clock", output_qos(1)) if self.params["publish_clock"] else None
        )
        self._thread = threading.Thread(target=self._play_guarded, name="playback", daemon=True)
        self._thread.start()

    def _select_connections(self) -> list[Any]:
        wanted = [t for t in self.params["topics"] if t]
        in_bag = {c.topic: c.msgtype for c in self.reader.connections}
        for topic in wanted:
            if topic not in in_bag:
                raise ParameterError(
                    f"parameter 'topics': {topic} is not in the bag; it has {sorted(in_bag)}"
                )
            if in_bag[topic] not in CONVERTERS:
                raise ParameterError(
                    f"parameter 'topics': {topic} is {in_bag[topic]}; supported: {', '.join(CONVERTERS)}"
                )
        invalid = sorted({c.topic for c in self.reader.connections if not _valid_topic(c.topic)})
        for topic in wanted:
            if topic in invalid:
                raise ParameterError(
                    f"parameter 'topics': {topic!r} is not a valid ROS 2 topic name (recorded by a ROS 1 "
                    "or vendor tool); convert the bag with new names, or leave it out of 'topics'"
                )
        if invalid and not wanted:
            self.get_logger().warning(
                f"not replaying {len(invalid)} topics whose names ROS 2 refuses (e.g. {invalid[0]!r}); "
                "name the topics to play in the 'topics' parameter"
            )
        selected = [
            c
            for c in self.reader.connections
            if c.msgtype in CONVERTERS and (c.topic in wanted if wanted else c.topic not in invalid)
        ]
        skipped = sorted({c.topic for c in self.reader.connections if c.msgtype not in CONVERTERS})
        if skipped:
            self.get_logger().info(f"not replaying (unsupported types): {skipped}")
        if not selected:
            raise ParameterError(
                f"parameter 'bag': no Image, CompressedImage or String topic to replay in {self.params['bag']}"
            )
        return selected

    # -- playback thread ------------------------------------------------------------------------
    def _play_guarded(self) -> None:
        try:
            self._wait_for_subscribers()
            while not self._stop.is_set():
                self._play_once()
                if not self.params["loop"]:
                    break
            self.get_logger().info(f"replay finished: {self.published} messages published")
            time.sleep(0.3)  # let reliable writers deliver the last messages before the process ends
        except Exception as exc:  # a corrupt message ends playback with one line, not a dead thread
            if self._stop.is_set() or not self.context.ok():
                return  # Ctrl-C mid-playback: the context went down under a publish; a normal end
            self.get_logger().error(f"replay stopped: {' '.join(str(exc).split())}")
        finally:
            if not self._stop.is_set():
                self.context.try_shutdown()

    def _wait_for_subscribers(self) -> None:
        needed = self.params["wait_for_subscribers"]
        if needed <= 0:
            return
        image_topics = [c.topic for c in self.connections if c.msgtype != "std_msgs/msg/String"]
        deadline = time.monotonic() + self.params["wait_timeout"]
        while not self._stop.is_set():
            count = sum(self.publishers_by_topic[t].get_subscription_count() for t in set(image_topics))
            if count >= needed:
                # Our writers see the readers before the readers see our writers; samples sent in
                # between are lost (best effort) or late (reliable). Give discovery a moment.
                time.sleep(0.5)
                return
            if time.monotonic() > deadline:
                self.get_logger().warning(
                    f"only {count}/{needed} subscriptions after {self.params['wait_timeout']} s; playing anyway"
                )
                return
            time.sleep(0.05)

    def _messages(self) -> Iterator[tuple[str, str, int, Any]]:
        """(topic, msgtype, bag time ns, rclpy message) from the start offset on."""
        start = self.reader.start_time + int(self.params["start_offset"] * NS)
        for conn, stamp_ns, raw in self.reader.messages(connections=self.connections, start=start):
            yield (
                conn.topic,
                conn.msgtype,
                stamp_ns,
                to_rclpy(self.reader.deserialize(raw, conn.msgtype), conn.msgtype),
            )

    def _play_once(self) -> None:
        """One pass over the bag, pacing on the wall clock (perf_counter) scaled by ``rate``."""
        rate = self.params["rate"]
        clock_period = 1.0 / self.params["clock_frequency"]
        first_ns: Optional[int] = None
        wall0 = 0.0
        next_clock = 0.0
        for topic, _msgtype, stamp_ns, msg in self._messages():
            if self._stop.is_set():
                return
            if first_ns is None:
                first_ns, wall0 = stamp_ns, time.perf_counter()
                last_clock = stamp_ns - 1
            target = wall0 + (stamp_ns - first_ns) / NS / rate
            while True:  # wait for the message's time, keeping /clock ticking meanwhile
                now = time.perf_counter()
                if self.pub_clock is not None and now >= next_clock:
                    # bag time now, kept between the last message's stamp and this one's (float
                    # rounding must never move /clock backwards)
                    bag_now = first_ns + int((now - wall0) * rate * NS)
                    last_clock = min(max(bag_now, last_clock), stamp_ns)
                    self.pub_clock.publish(Clock(clock=ns_to_time(last_clock)))
                    next_clock = now + clock_period
                if now >= target or self._stop.is_set():
                    break
                wake = min(target, next_clock) if self.pub_clock is not None else target
                time.sleep(max(0.0, wake - now))
            if self.pub_clock is not None and stamp_ns > last_clock:
                last_clock = stamp_ns
                self.pub_clock.publish(Clock(clock=ns_to_time(stamp_ns)))
            self.publishers_by_topic[topic].publish(msg)
            self.published += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.close()


def main() -> None:
    main_for(ReplayNode)


if __name__ == "__main__":
    main()
