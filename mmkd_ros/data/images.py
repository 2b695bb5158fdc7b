"""Images: ROS messages <-> numpy, image files, and THE preprocessing path of the models.

Every pixel a model sees goes through :func:`msg_to_array` (or :func:`read_image_file` for an
extracted dataset) and then :func:`prepare` (inference) or ``to_tensor01 -> resize -> augment ->
normalize`` (training). Keeping one path is what guarantees that a model never sees differently
prepared pixels in the field than in training.

Array convention: ``HxWxC`` numpy arrays, ``C = 3`` in RGB order for colour images, ``C = 1`` for
mono; ``uint8`` or ``uint16``. Tensor convention: ``[C, H, W]`` float32 in ``[0, 1]``.

Decoding uses rosbags-image (``message_to_cvimage``), which works on rosbags messages and on rclpy
messages alike, so bag extraction and live nodes share the conversion. Compressed images are decoded
with ``cv2.imdecode(IMREAD_UNCHANGED)`` directly because rosbags-image decodes with
``IMREAD_ANYCOLOR``, which silently turns a 16-bit PNG into 8 bits.

torch is imported inside the tensor functions only: bag extraction and the bag writer use this
module too and should not pay several seconds of ``import torch``.
"""
from __future__ import annotations

import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np
from rosbags.image import message_to_cvimage

from mmkd_ros.errors import DatasetError, ImageDecodeError

if TYPE_CHECKING:
    import torch
    from rosbags.typesys.store import Typestore

# encoding -> (channels, bytes per channel) of the raw ``sensor_msgs/Image`` encodings we accept.
RAW_ENCODINGS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}
COMPRESSED_FORMATS = ("jpeg", "png")


def msg_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` or ``CompressedImage`` into an owned ``HxWxC`` array.

    Colour comes back in RGB order (``C = 3``, alpha dropped), mono as ``C = 1``; ``uint8`` or
    ``uint16``. Raises :class:`ImageDecodeError` (one line) for an unsupported encoding or
    truncated / corrupt data, so a bad frame never turns into a numpy traceback in a node.
    """
    if hasattr(msg, "format"):
        return _decode_compressed(msg)
    return _decode_raw(msg)


def _decode_raw(msg: Any) -> np.ndarray:
    encoding = str(msg.encoding)
    if encoding not in RAW_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: "
            f"{', '.join(RAW_ENCODINGS)} and CompressedImage jpeg/png (convert the stream, "
            "e.g. with image_proc, before recording)"
        )
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
    return _owned_hwc(image)


def _decode_compressed(msg: Any) -> np.ndarray:
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt or not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise ImageDecodeError(
            f"unsupported CompressedImage format {msg.format!r}; supported: jpeg, png "
            "(republish compressedDepth/other formats as raw images before recording)"
        )
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise ImageDecodeError(
            f"corrupt or truncated CompressedImage ({msg.format!r}, {buffer.size} bytes): "
            "the data does not decode"
        )
    return _owned_hwc(_bgr_to_rgb(image))


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV order (BGR / BGRA / mono) -> RGB / mono, alpha dropped."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _owned_hwc(image: np.ndarray) -> np.ndarray:
    """A writable, contiguous ``HxWxC`` copy (never a view into a message buffer)."""
    if image.ndim == 2:
        image = image[:, :, None]
    return np.array(image, copy=True, order="C")


# --------------------------------------------------------------------------------------------
# Model preprocessing (torch)


def to_tensor01(arr: np.ndarray) -> "torch.Tensor":
    """``HxWxC`` (or ``HxW``) uint8/uint16 array -> float32 tensor ``[C, H, W]`` in ``[0, 1]``.

    uint8 is divided by 255 and uint16 by 65535, so a mono16 NIR camera and a mono8 one give the
    same scale for the same scene.
    """
    import torch

    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an HxWxC image array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif arr.dtype == np.uint16:
        scale = 1.0 / 65535.0
    else:
        raise ValueError(f"expected a uint8 or uint16 image array, got {arr.dtype}")
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)  # [C, H, W]
    return torch.from_numpy(chw).mul_(scale)


def resize(t: "torch.Tensor", size: Sequence[int]) -> "torch.Tensor":
    """Bilinear, antialiased resize of ``[C, H, W]`` (or ``[B, C, H, W]``) to ``size = (h, w)``.

    Antialiasing matters when shrinking 640x480 camera frames to a model's 128x128 input: without
    it, fine texture (one of the cues a good RGB model uses) aliases into noise.
    """
    import torch.nn.functional as F

    height, width = int(size[0]), int(size[1])
    if tuple(t.shape[-2:]) == (height, width):
        return t
    batched = t if t.dim() == 4 else t.unsqueeze(0)  # [B, C, H, W]
    out = F.interpolate(batched, size=(height, width), mode="bilinear", align_corners=False,
                        antialias=True)
    return out if t.dim() == 4 else out.squeeze(0)


def normalize(t: "torch.Tensor", mean: Sequence[float], std: Sequence[float]) -> "torch.Tensor":
    """``(t - mean) / std`` per channel of a ``[C, H, W]`` (or ``[B, C, H, W]``) tensor."""
    import torch

    channels = t.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"normalization has {len(mean)} mean / {len(std)} std values for {channels} channels"
        )
    mean_t = torch.as_tensor(mean, dtype=t.dtype, device=t.device).view(-1, 1, 1)  # [C, 1, 1]
    std_t = torch.as_tensor(std, dtype=t.dtype, device=t.device).view(-1, 1, 1)  # [C, 1, 1]
    return (t - mean_t) / std_t


def prepare(arr: np.ndarray, size: Sequence[int], mean: Sequence[float],
            std: Sequence[float]) -> "torch.Tensor":
    """Inference preprocessing of one frame: ``normalize(resize(to_tensor01(arr), size))``."""
    return normalize(resize(to_tensor01(arr), size), mean, std)


# --------------------------------------------------------------------------------------------
# Image files


def write_png(path: str | Path, arr: np.ndarray) -> None:
    """Write ``HxWx3`` RGB uint8 or ``HxWx1`` / ``HxW`` uint8 / uint16 as PNG (16-bit kept)."""
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim != 2:
        raise ValueError(f"PNG needs HxW, HxWx1 or HxWx3 pixels, got shape {arr.shape}")
    # Extraction writes thousands of frames: zlib level 1 with the "up" filter and run-length
    # strategy encodes a noisy camera frame ~2x faster than level 1 defaults and ~4x faster than
    # the default level, for about 5% more bytes.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if not cv2.imwrite(str(path), arr, params):
        raise DatasetError(f"cannot write {path}: check that the folder exists and is writable")


def read_image_file(path: str | Path) -> np.ndarray:
    """Read an image file (PNG/JPEG/TIFF/BMP, or ``.npy`` multi-band) as ``HxWxC`` (RGB order).

    16-bit files stay 16-bit. Raises :class:`DatasetError` naming the file when it cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {path}: {exc}") from None
        return _owned_hwc(arr)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"cannot read image {path}: missing, unreadable or not an image file")
    return _owned_hwc(_bgr_to_rgb(image))


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
