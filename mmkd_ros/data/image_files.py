"""Image files of an extracted dataset: PNG/JPEG/TIFF/``.npy`` <-> ``HxWxC`` numpy arrays (RGB order).

The array convention is the one of :mod:`mmkd_ros.data.ros_images`: ``C = 3`` in RGB order for
colour, ``C = 1`` for mono, ``uint8`` or ``uint16``; 16-bit stays 16-bit both ways.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mmkd_ros.core.errors import DatasetError


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV order (BGR / BGRA / mono) -> RGB / mono, alpha dropped."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def owned_hwc(image: np.ndarray) -> np.ndarray:
    """A writable, contiguous ``HxWxC`` copy (never a view into a message buffer)."""
    if image.ndim == 2:
        image = image[:, :, None]
    return np.array(image, copy=True, order="C")


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
        return owned_hwc(arr)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"cannot read image {path}: missing, unreadable or not an image file")
    return owned_hwc(bgr_to_rgb(image))
