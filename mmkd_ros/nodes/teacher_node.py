"""teacher_node: classify time-paired RGB + NIR frames with the two-branch teacher.

Subscribes:  ``rgb/image`` and ``nir/image`` (sensor_msgs/Image, or CompressedImage per
             ``input_type`` / ``nir_input_type``), sensor-data QoS, depth 1; remap them, e.g.
             ``rgb/image:=/camera/color/image_raw nir/image:=/camera/nir/image_raw``.
Pairing:     :class:`mmkd_ros.data.pairing.StreamPairer`, the same mutual-nearest-stamp rule as
             offline extraction (so the teacher sees pairs like those it was trained on), with
             bounded buffers. A pair is final one frame period after its later frame arrives.
             A stamp that jumps back (bag loop, driver restart) or more than
             ``pair_reset_jump_s`` forward resets the pairer with one log line; frames that
             arrive but never pair turn ``/diagnostics`` WARN with the closest stamp distance.
Publishes:   same as student_node; outputs carry the RGB frame's header.
"""

from __future__ import annotations

import time
from typing import Any

from mmkd_ros.data.ros_images import stamp_to_ns
from mmkd_ros.data.pairing import StreamPairer
from mmkd_ros.nodes.classifier_base import INPUT_TYPES, ClassifierNode, Frame, image_msg_type
from mmkd_ros.nodes.common import ParamSpec, camera_qos, main_for


#: Middleware queue per input: a few frames so a burst reaches the pairer whole (bounded).
PAIRING_DEPTH = 4


class TeacherNode(ClassifierNode):
    """RGB + NIR in, classification out; pairs live with the offline rule."""

    REQUIRED_MODALITIES = ("rgb", "nir")
    EXTRA_PARAMETERS = (
        ParamSpec(
            "nir_input_type",
            "raw",
            "NIR input message: raw or compressed (png for 16-bit).",
            choices=INPUT_TYPES,
        ),
        ParamSpec(
            "pair_max_dt_ms",
            20.0,
            "Largest RGB/NIR stamp difference of a pair, in ms (same meaning as extraction's max_dt).",
            min_value=0.0,
            max_value=1000.0,
        ),
        ParamSpec(
            "pair_buffer_size",
            8,
            "Frames held per stream while waiting for a partner; bounds memory when one camera stalls.",
            min_value=1,
            max_value=1000,
        ),
        ParamSpec(
            "pair_reset_jump_s",
            2.0,
            "A stamp more than this many seconds ahead of its stream's newest (or any jump back "
            "beyond pair_max_dt_ms) resets the pairer, as after a bag loop or a clock jump.",
            min_value=0.001,
            max_value=1e6,
        ),
    )

    def __init__(self) -> None:
        super().__init__("teacher")
        self.pairer: StreamPairer | None = None
        self._resets_logged = 0
        self._last_pair: float | None = None  # time.monotonic() of the newest pair

    def subscribe(self) -> None:
        self.pairer = StreamPairer(
            max_dt_ns=int(self.params["pair_max_dt_ms"] * 1e6),
            buffer_size=self.params["pair_buffer_size"],
            reset_jump_ns=int(self.params["pair_reset_jump_s"] * 1e9),
        )
        # Both callbacks run in the (single-threaded) executor, so the pairer needs no lock.
        # Depth PAIRING_DEPTH, not 1: a frame the middleware overwrote would leave its partner
        # unpaired; staleness is handled after pairing (the worker takes the newest pair).
        self.sub_rgb = self.create_subscription(
            image_msg_type(self.params["input_type"]),
            "rgb/image",
            self.on_rgb,
            camera_qos(self.params["input_reliability"], PAIRING_DEPTH),
        )
        self.sub_nir = self.create_subscription(
            image_msg_type(self.params["nir_input_type"]),
            "nir/image",
            self.on_nir,
            camera_qos(self.params["input_reliability"], PAIRING_DEPTH),
        )

    def subscriptions_of_inputs(self) -> list[Any]:
        return [self.sub_rgb, self.sub_nir]

    def input_type_parameters(self) -> list[str]:
        return ["input_type", "nir_input_type"]

    def describe_inputs(self) -> str:
        return (
            f"{self.sub_rgb.topic_name} ({self.params['input_type']}) + "
            f"{self.sub_nir.topic_name} ({self.params['nir_input_type']})"
        )

    def on_rgb(self, msg: Any, msg_info: dict) -> None:
        self.input_seen(msg_info)
        self._submit_pairs(self.pairer.push_rgb(stamp_to_ns(msg.header.stamp), msg))

    def on_nir(self, msg: Any, msg_info: dict) -> None:
        self.input_seen(msg_info)
        self._submit_pairs(self.pairer.push_nir(stamp_to_ns(msg.header.stamp), msg))

    def _submit_pairs(self, pairs: list[tuple[Any, Any]]) -> None:
        if self.pairer.stats["resets"] != self._resets_logged:
            self._resets_logged = self.pairer.stats["resets"]
            self.get_logger().warning(
                f"pairing restarted ({self._resets_logged} so far): {self.pairer.last_reset} "
                "(bag loop, driver restart or clock jump)",
                throttle_duration_sec=1.0,
            )
        now = time.perf_counter()
        if pairs:
            self._last_pair = time.monotonic()
        for rgb, nir in pairs:
            self.stats.count("received")
            self.submit(Frame(msgs={"rgb": rgb, "nir": nir}, header=rgb.header, received=now))

    def stats_snapshot(self) -> dict[str, float]:
        """Frame counters plus the pairer's: unpaired frames are expected, not errors."""
        snapshot = super().stats_snapshot()
        pairing = self.pairer.stats if self.pairer is not None else {}
        snapshot["unpaired"] = pairing.get("unpaired_rgb", 0) + pairing.get("unpaired_nir", 0)
        snapshot["out_of_order"] = pairing.get("out_of_order", 0)
        snapshot["pairer_resets"] = pairing.get("resets", 0)
        return snapshot

    def problems(self) -> list[str]:
        """Input problems, plus: frames arrive but none has paired for ``stale_timeout``."""
        problems = super().problems()
        if problems or self.pairer is None or not self._active:
            return problems
        since = self._last_pair if self._last_pair is not None else self._first_input
        timeout = self.params["stale_timeout"]
        if since is not None and time.monotonic() - since > timeout:
            miss_ns = self.pairer.stats["closest_unpaired_dt_ns"]
            miss = f"closest RGB/NIR stamps {miss_ns / 1e6:.1f} ms apart" if miss_ns >= 0 else "no candidate"
            message = (
                f"frames arrive on {self.sub_rgb.topic_name} and {self.sub_nir.topic_name} but none "
                f"paired for {timeout:g} s ({miss}, pair_max_dt_ms "
                f"{self.params['pair_max_dt_ms']:g}): check that both cameras stamp with one clock, "
                "or raise pair_max_dt_ms"
            )
            self.get_logger().warning(message, throttle_duration_sec=10.0)
            problems.append(message)
        return problems


PARAMETERS = TeacherNode.parameter_specs()


def main() -> None:
    main_for(TeacherNode)


if __name__ == "__main__":
    main()
