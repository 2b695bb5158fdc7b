"""Messages the classifier nodes publish, built by plain functions (no node, no state).

- :func:`classification_content` is THE one description of a classification: the typed
  ``vision_msgs/msg/Classification`` (where vision_msgs is installed) and the JSON fallback in
  ``std_msgs/String`` (pip-wheel ROS, CI) are both made from it, so they cannot disagree.
- :func:`annotated_image` draws label and score on the input frame for rviz.
- :func:`diagnostics` reports latency, rate, drops and bad frames on ``/diagnostics``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

#: Which message type carries the classification; the node logs a warning when it is "json".
OUTPUT_VISION_MSGS = "vision_msgs"
OUTPUT_JSON = "json"


def classification_content(
    header: Header,
    class_index: int,
    label: str,
    score: float,
    scores: Sequence[float],
    classes: Sequence[str],
    model: str,
    latency_ms: float,
    in_node_ms: float,
) -> dict[str, Any]:
    """Everything a consumer needs about one classified frame, as JSON-ready builtins.

    ``header`` is the input image's header (stamp and frame of the pixels, not of the
    computation), ``scores`` are the probabilities of all ``classes`` in class order, ``model`` is
    the model file's name. ``latency_ms`` is measured from the frame's header stamp (capture time,
    on the node's clock: sim time under ``use_sim_time``) to the result, so it includes the camera
    driver and the transport; ``in_node_ms`` is the node's own share, from receiving the frame to
    the result (decode, preprocessing, inference); building and publishing this message come after
    both (``stage_publish_p50_ms`` in /diagnostics).
    """
    if len(scores) != len(classes):
        raise ValueError(f"{len(scores)} scores for {len(classes)} classes")
    return {
        "header": {
            "stamp": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)},
            "frame_id": str(header.frame_id),
        },
        "class_id": int(class_index),
        "label": str(label),
        "score": float(score),
        "scores": {str(name): float(s) for name, s in zip(classes, scores)},
        "model": str(model),
        "latency_ms": float(latency_ms),
        "in_node_ms": float(in_node_ms),
    }


def content_to_json(content: Mapping[str, Any]) -> String:
    """The fallback message: the content as compact JSON in ``std_msgs/String``."""
    return String(data=json.dumps(content, separators=(",", ":")))


def content_to_vision_msg(content: Mapping[str, Any], classification_cls: type, hypothesis_cls: type) -> Any:
    """The typed message: ``vision_msgs/Classification`` with one hypothesis per class, best first.

    The classes are passed in (``vision_msgs.msg.Classification``, ``ObjectHypothesis``) because
    vision_msgs exists only on a full ROS 2 install; ``class_id`` is the class name (vision_msgs 4).
    Model name and latency have no field there; they are on ``/diagnostics``.
    """
    header = Header(
        stamp=Time(sec=content["header"]["stamp"]["sec"], nanosec=content["header"]["stamp"]["nanosec"]),
        frame_id=content["header"]["frame_id"],
    )
    ranked = sorted(content["scores"].items(), key=lambda kv: kv[1], reverse=True)
    results = [hypothesis_cls(class_id=name, score=float(s)) for name, s in ranked]
    return classification_cls(header=header, results=results)


def classification_output() -> tuple[str, type, Callable[[Mapping[str, Any]], Any]]:
    """Pick the message type for ``~/classification``: (kind, message class, content -> message).

    vision_msgs when it imports (a ROS 2 distro), else the JSON fallback; the caller warns once.
    """
    try:
        from vision_msgs.msg import Classification, ObjectHypothesis  # type: ignore[import-not-found]
    except ImportError:
        return OUTPUT_JSON, String, content_to_json
    return (
        OUTPUT_VISION_MSGS,
        Classification,
        lambda content: content_to_vision_msg(content, Classification, ObjectHypothesis),
    )


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any HxW, HxWx1 or HxWx3 uint8/uint16 array -> contiguous HxWx3 uint8 (a copy, for drawing)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] > 3:
        image = image[:, :, :3]
    return np.ascontiguousarray(image).copy()


def annotated_image(image: np.ndarray, header: Header, label: str, score: float) -> Image:
    """The input frame with ``label score`` drawn on a dark banner, as ``sensor_msgs/Image`` rgb8.

    The header is the input's, so rviz and any time-synchroniser line it up with the source frame.
    Text size follows the image width so the label stays readable from 160 px to 4K.
    """
    canvas = to_rgb8(image)  # [H, W, 3] uint8
    height, width = canvas.shape[:2]
    text = f"{label} {score:.2f}"
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.35, width / 800.0)
    thickness = max(1, int(round(scale * 2)))
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = max(2, int(4 * scale))
    cv2.rectangle(
        canvas,
        (0, 0),
        (min(width - 1, text_w + 2 * pad), min(height - 1, text_h + baseline + 2 * pad)),
        (0, 0, 0),
        -1,
    )
    cv2.putText(canvas, text, (pad, pad + text_h), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    msg = Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.data = canvas.tobytes()  # bytes: a fast copy into the message (a numpy array is slow here)
    return msg


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def diagnostics(
    stamp: Time,
    name: str,
    hardware_id: str,
    stats: Mapping[str, float],
    dropped: int,
    extra: Optional[Mapping[str, Any]] = None,
    problems: Sequence[str] = (),
) -> DiagnosticArray:
    """One ``DiagnosticStatus`` for a classifier node.

    ``stats`` is :meth:`FrameStats.snapshot` (in-node latency p50/p95 in ms, receive -> result;
    output rate, counters; the p50 of each stage of a frame: ``stage_wait_p50_ms`` receive ->
    the worker takes it, ``stage_decode_p50_ms``, ``stage_predict_p50_ms``,
    ``stage_publish_p50_ms`` building and publishing the classification),
    ``dropped`` counts frames replaced before inference plus those lost in the middleware,
    ``hardware_id`` is the inference device. Level WARN until the first frame is classified, so a
    wrong topic remapping shows up in rqt_robot_monitor instead of looking healthy, and WARN with
    the node's ``problems`` (input stopped, streams that never pair) joined as the message.
    """
    processed = int(stats.get("processed", 0))
    values: dict[str, Any] = {
        "latency_p50_ms": float(stats.get("latency_p50_ms", math.nan)),
        "latency_p95_ms": float(stats.get("latency_p95_ms", math.nan)),
        "rate_hz": float(stats.get("rate_hz", 0.0)),
        "frames_received": int(stats.get("received", 0)),
        "frames_classified": processed,
        "frames_dropped": int(dropped),
        "bad_frames": int(stats.get("bad", 0)),
        "device": hardware_id,
    }
    if "unpaired" in stats:
        values["unpaired_frames"] = int(stats["unpaired"])
    for key in ("rate_skipped", "out_of_order", "pairer_resets"):
        if key in stats:
            values[key] = int(stats[key])
    values.update({key: float(value) for key, value in stats.items() if key.startswith("stage_")})
    values.update(extra or {})
    if problems:
        level, message = DiagnosticStatus.WARN, "; ".join(problems)
    elif processed == 0:
        level, message = DiagnosticStatus.WARN, "no frame classified yet"
    else:
        level = DiagnosticStatus.OK
        message = (
            f"{values['rate_hz']:.1f} Hz, p50 {_fmt(values['latency_p50_ms'])} ms, "
            f"{values['frames_dropped']} dropped, {values['bad_frames']} bad"
        )
    status = DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()],
    )
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
