"""ROS image messages <-> numpy arrays, for bags and live topics alike.

Every pixel a model sees comes from :func:`msg_to_array` (or, from an extracted dataset,
:func:`mmkd_ros.data.image_files.read_image_file`) and is then prepared by
:mod:`mmkd_ros.core.preprocess`, the one preprocessing path of training, evaluation and nodes.

Array convention: ``HxWxC`` numpy arrays, ``C = 3`` in RGB order for colour images, ``C = 1`` for
mono; ``uint8`` or ``uint16``. Tensor convention: ``[C, H, W]`` float32 in ``[0, 1]``.

Decoding uses rosbags-image (``message_to_cvimage``), which works on rosbags messages and on rclpy
messages alike, so bag extraction and live nodes share the conversion. Compressed images are decoded
with ``cv2.imdecode(IMREAD_UNCHANGED)`` directly because rosbags-image decodes with
``IMREAD_ANYCOLOR``, which silently turns a 16-bit PNG into 8 bits.

No torch here: bag extraction, the bag writer and the nodes' decoding do not pay for it.
"""
from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from rosbags.image import message_to_cvimage

from mmkd_ros.core.errors import ImageDecodeError
from mmkd_ros.data.image_files import bgr_to_rgb, owned_hwc

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

# encoding -> (channels, bytes per channel) of the raw ``sensor_msgs/Image`` encodings we accept.
# ``8UC1``/``16UC1`` (what many depth/IR drivers publish) are byte-identical to mono8/mono16.
RAW_ENCODINGS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
    "8UC1": (1, 1),
    "16UC1": (1, 2),
}
COMPRESSED_FORMATS = ("jpeg", "png")


def msg_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` or ``CompressedImage`` into an owned ``HxWxC`` array.

    Colour comes back in RGB order (``C = 3``, alpha dropped), mono as ``C = 1``; ``uint8`` or
    ``uint16``. Raises :class:`ImageDecodeError` (one line) for an unsupported encoding or
    truncated / corrupt data, so a bad frame never turns into a numpy traceback in a node.
    """
    check_supported(msg)
    if hasattr(msg, "format"):
        return _decode_compressed(msg)
    return _decode_raw(msg)


def check_supported(msg: Any) -> None:
    """Raise :class:`ImageDecodeError` when the message's encoding / format is one we never
    decode (a property of the stream, unlike truncated data, which is a property of a frame)."""
    if hasattr(msg, "format"):
        fmt = str(msg.format).lower()
        if "compresseddepth" in fmt or not any(name in fmt for name in ("jpeg", "jpg", "png")):
            raise ImageDecodeError(
                f"unsupported CompressedImage format {msg.format!r}; supported: jpeg, png "
                "(republish compressedDepth/other formats as raw images before recording)"
            )
    elif str(msg.encoding) not in RAW_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported image encoding {str(msg.encoding)!r}; supported: "
            f"{', '.join(RAW_ENCODINGS)} and CompressedImage jpeg/png (convert the stream, "
            "e.g. with image_proc, before recording)"
        )


def _decode_raw(msg: Any) -> np.ndarray:
    encoding = str(msg.encoding)
    channels, depth = RAW_ENCODINGS[encoding]
    height, width = int(msg.height), int(msg.width)
    row_bytes = width * channels * depth
    step = int(msg.step) or row_bytes
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if height == 0 or width == 0 or step < row_bytes or data.size < step * height:
        raise ImageDecodeError(
            f"truncated {encoding} image: {data.size} bytes for {width}x{height} "
            f"(step {step}, needs {step * height}); the message is corrupt"
        )
    if step != row_bytes or data.size != step * height:
        # Row padding (step > width * bytes per pixel): keep only the pixels of each row.
        rows = data[: step * height].reshape(height, step)[:, :row_bytes]  # [H, row_bytes]
        msg = types.SimpleNamespace(
            encoding=encoding,
            height=height,
            width=width,
            is_bigendian=msg.is_bigendian,
            step=row_bytes,
            data=np.ascontiguousarray(rows).reshape(-1),
        )
    target = None if channels == 1 else "rgb8"
    image = message_to_cvimage(msg, target)  # [H, W] mono or [H, W, 3] RGB
    return owned_hwc(image)


def _decode_compressed(msg: Any) -> np.ndarray:
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise ImageDecodeError(
            f"corrupt or truncated CompressedImage ({msg.format!r}, {buffer.size} bytes): "
            "the data does not decode"
        )
    return owned_hwc(bgr_to_rgb(image))


# --------------------------------------------------------------------------------------------
# numpy -> ROS messages (rosbags message classes). The one place where image messages are built.


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_msg(stamp_ns: int, frame_id: str, typestore: "Typestore") -> Any:
    """``std_msgs/Header`` for this typestore (ROS 1 headers also carry ``seq``)."""
    time_cls = typestore.types["builtin_interfaces/msg/Time"]
    header_cls = typestore.types["std_msgs/msg/Header"]
    stamp = time_cls(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    if "seq" in header_cls.__dataclass_fields__:
        return header_cls(seq=0, stamp=stamp, frame_id=frame_id)
    return header_cls(stamp=stamp, frame_id=frame_id)


def array_to_image_msg(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                       typestore: "Typestore") -> Any:
    """``HxWxC`` array (RGB order, as :func:`msg_to_array` returns) -> ``sensor_msgs/Image``.

    The inverse of :func:`msg_to_array`: the pixels are converted to ``encoding``'s channel order.
    """
    if encoding not in RAW_ENCODINGS:
        raise ValueError(f"cannot build an Image with encoding {encoding!r}")
    channels, depth = RAW_ENCODINGS[encoding]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    want_dtype = np.uint16 if depth == 2 else np.uint8
    if arr.dtype != want_dtype:
        raise ValueError(f"{encoding} needs {np.dtype(want_dtype).name} pixels, got {arr.dtype}")
    if channels == 1:
        if arr.shape[2] != 1:
            raise ValueError(f"{encoding} needs one channel, got {arr.shape[2]}")
        pixels = arr
    else:
        if arr.shape[2] != 3:
            raise ValueError(f"{encoding} is built from an RGB HxWx3 array, got {arr.shape}")
        conversions = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
                       "bgra8": cv2.COLOR_RGB2BGRA}
        code = conversions[encoding]
        pixels = arr if code is None else cv2.cvtColor(arr, code)
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    image_cls = typestore.types["sensor_msgs/msg/Image"]
    return image_cls(
        header=header_msg(stamp_ns, frame_id, typestore),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,  # numpy here and every supported robot CPU is little-endian
        step=width * channels * depth,
        data=pixels.reshape(-1).view(np.uint8),
    )


def array_to_compressed_msg(arr: np.ndarray, fmt: str, stamp_ns: int, frame_id: str,
                            typestore: "Typestore", jpeg_quality: int = 90) -> Any:
    """``HxWxC`` array (RGB or mono) -> ``sensor_msgs/CompressedImage`` in ``jpeg`` or ``png``.

    The ``format`` string follows image_transport's ``"<raw encoding>; <fmt> compressed <enc>"``.
    """
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed format must be one of {COMPRESSED_FORMATS}, got {fmt!r}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    mono = arr.shape[2] == 1
    raw_encoding = ("mono16" if arr.dtype == np.uint16 else "mono8") if mono else "rgb8"
    if fmt == "jpeg" and arr.dtype != np.uint8:
        raise ValueError("jpeg needs uint8 pixels; use png for 16-bit images")
    pixels = arr[:, :, 0] if mono else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else [
        cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", pixels, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} {arr.dtype} image as {fmt}")
    compressed_encoding = raw_encoding if mono else "bgr8"
    compressed_cls = typestore.types["sensor_msgs/msg/CompressedImage"]
    return compressed_cls(
        header=header_msg(stamp_ns, frame_id, typestore),
        format=f"{raw_encoding}; {fmt} compressed {compressed_encoding}",
        data=encoded.reshape(-1),
    )
