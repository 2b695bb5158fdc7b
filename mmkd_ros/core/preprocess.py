"""THE preprocessing of every model input: training, evaluation, diagnosis and the nodes call it.

Two stages, composed in one place (:func:`prepare`):

1. :func:`to_model_scale`: ``HxWxC`` uint8/uint16 array -> ``[C, h, w]`` float32 in ``[0, 1]`` at the
   model's input size (antialiased bilinear);
2. :func:`normalize`: per-channel ``(t - mean) / std`` with the statistics stored in the model file.

Training caches stage 1 per dataset, applies paired augmentation in between, then stage 2;
evaluation and inference apply both without augmentation, so a model never sees differently
prepared pixels in the field than in validation.

:func:`prepare_array` is the same function in numpy alone (the antialiased bilinear resize written
out as the separable triangle filter torch uses), for an ONNX model on a robot without torch;
``test/core/test_preprocess_numpy.py`` holds it equal to :func:`prepare`.
"""
from __future__ import annotations

from collections.abc import Sequence

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside the torch functions: the numpy path never loads it
    import torch


def to_tensor01(arr: np.ndarray) -> torch.Tensor:
    """``HxWxC`` (or ``HxW``) uint8/uint16 array -> float32 tensor ``[C, H, W]`` in ``[0, 1]``.

    uint8 is divided by 255 and uint16 by 65535, so a mono16 NIR camera and a mono8 one give the
    same scale for the same scene.
    """
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
    import torch

    chw = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)  # [C, H, W]
    return torch.from_numpy(chw).mul_(scale)


def resize(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
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


def normalize(t: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(t - mean) / std`` per channel of a ``[C, H, W]`` (or ``[B, C, H, W]``) tensor."""
    channels = t.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"normalization has {len(mean)} mean / {len(std)} std values for {channels} channels"
        )
    import torch

    mean_t = torch.as_tensor(mean, dtype=t.dtype, device=t.device).view(-1, 1, 1)  # [C, 1, 1]
    std_t = torch.as_tensor(std, dtype=t.dtype, device=t.device).view(-1, 1, 1)  # [C, 1, 1]
    return (t - mean_t) / std_t


def to_model_scale(arr: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """Stage 1 of every model input: ``resize(to_tensor01(arr), size)``, ``[C, h, w]`` in ``[0, 1]``.

    Training caches this stage (decoding camera frames each epoch would cost more than training a
    small model), augments it, then applies stage 2, :func:`normalize`.
    """
    return resize(to_tensor01(arr), size)


def prepare(arr: np.ndarray, size: Sequence[int], mean: Sequence[float],
            std: Sequence[float]) -> torch.Tensor:
    """A frame as a model takes it: ``normalize(to_model_scale(arr, size), mean, std)``, ``[C, h, w]``."""
    return normalize(to_model_scale(arr, size), mean, std)


@functools.lru_cache(maxsize=16)
def _aa_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices ``[out, K]`` and weights ``[out, K]`` of torch's antialiased bilinear resize.

    The triangle filter widened by the scale when shrinking (support ``max(scale, 1)``), centred at
    ``(i + 0.5) * scale``, weights normalised per output pixel: ``F.interpolate(mode="bilinear",
    antialias=True, align_corners=False)``. Taps past a row's support get weight 0.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    inv = 1.0 / scale if scale > 1.0 else 1.0
    rows = []
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        weights = np.clip(1.0 - np.abs((taps - center + 0.5) * inv), 0.0, None)
        total = weights.sum()
        rows.append((taps, weights / total if total > 0 else weights))
    k = max(len(t) for t, _ in rows)
    index = np.zeros((out_size, k), dtype=np.intp)
    weight = np.zeros((out_size, k), dtype=np.float32)
    for i, (taps, weights) in enumerate(rows):
        index[i, : len(taps)] = taps
        index[i, len(taps):] = taps[-1]
        weight[i, : len(taps)] = weights
    return index, weight


def _resize_axis(a: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """Resize axis 0 or 1 of ``[H, W, C]`` with :func:`_aa_taps`: a gather of each output's taps,
    then one batched matrix product with their weights (about 3x faster than a loop over taps)."""
    index, weight = _aa_taps(a.shape[axis], out_size)  # [out, K]
    moved = a if axis == 0 else a.transpose(1, 0, 2)  # [N, M, C], N the axis resized
    rows = moved.reshape(moved.shape[0], -1)  # [N, M*C]
    taps = rows[index].astype(np.float32, copy=False)  # [out, K, M*C]
    out = np.matmul(weight[:, None, :], taps)[:, 0, :]  # [out, M*C]
    out = out.reshape(out_size, moved.shape[1], moved.shape[2])
    return out if axis == 0 else out.transpose(1, 0, 2)


def prepare_array(arr: np.ndarray, size: Sequence[int], mean: Sequence[float],
                  std: Sequence[float]) -> np.ndarray:
    """:func:`prepare` in numpy: ``HxWxC`` uint8/uint16 -> normalised float32 ``[C, h, w]``."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an HxWxC image array, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 or uint16 image array, got {arr.dtype}")
    channels = arr.shape[2]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalization has {len(mean)} mean / {len(std)} std values for {channels} channels")
    scale = 1.0 / 255.0 if arr.dtype == np.uint8 else 1.0 / 65535.0
    height, width = int(size[0]), int(size[1])
    out = arr  # resized from the raw integers (the filter is linear), scaled once at the end
    if out.shape[0] != height:
        out = _resize_axis(out, 0, height)
    if out.shape[1] != width:
        out = _resize_axis(out, 1, width)
    mean_a = np.asarray(mean, dtype=np.float32)
    std_a = np.asarray(std, dtype=np.float32)
    out = (out.astype(np.float32) * np.float32(scale) - mean_a) / std_a  # [h, w, C]
    return np.ascontiguousarray(out.transpose(2, 0, 1))  # [C, h, w]
