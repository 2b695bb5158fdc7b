"""student_node: classify the RGB stream with the distilled RGB-only student.

Subscribes:  ``image`` (sensor_msgs/Image, or CompressedImage with ``input_type:=compressed``),
             sensor-data QoS, depth 1; remap it, e.g. ``image:=/camera/color/image_raw``.
Publishes:   ``~/classification`` (vision_msgs/Classification, or JSON in std_msgs/String),
             ``~/image_annotated`` (sensor_msgs/Image rgb8), ``/diagnostics``.
Parameters:  see ``PARAMETERS`` (``ros2 param describe`` shows the same descriptions).
"""

from __future__ import annotations

import time
from typing import Any

from mmkd_ros.nodes.classifier_base import ClassifierNode, Frame, image_msg_type
from mmkd_ros.nodes.common import camera_qos, main_for


class StudentNode(ClassifierNode):
    """RGB in, classification out; everything but the subscription is in :class:`ClassifierNode`."""

    REQUIRED_MODALITIES = ("rgb",)
    # One stream, nothing to pair: classifying in the callback saves the hand-over to a worker
    # thread (bench_nodes: the "wait" stage, about 0.3 ms of the p50 on a 2-core machine).
    DEFAULT_INFERENCE = "callback"

    def __init__(self) -> None:
        super().__init__("student")

    def subscribe(self) -> None:
        self.sub = self.create_subscription(
            image_msg_type(self.params["input_type"]),
            "image",
            self.on_image,
            camera_qos(self.params["input_reliability"]),
        )

    def subscriptions_of_inputs(self) -> list[Any]:
        return [self.sub]

    def describe_inputs(self) -> str:
        return f"{self.sub.topic_name} ({self.params['input_type']})"

    def on_image(self, msg: Any, msg_info: dict) -> None:
        """Executor thread: count, then classify here or hand over to the worker (``inference``)."""
        self.stats.count("received")
        self.input_seen(msg_info)
        self.submit(Frame(msgs={"rgb": msg}, header=msg.header, received=time.perf_counter()))


PARAMETERS = StudentNode.parameter_specs()


def main() -> None:
    main_for(StudentNode)


if __name__ == "__main__":
    main()
