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


#: Outputs per block of the banded resize (measured on 640x480 -> 96x96: 8 beats 16, 32 and a gather of all taps).
BLOCK = 8


@functools.lru_cache(maxsize=16)
def _aa_blocks(in_size: int, out_size: int) -> tuple[tuple[int, int, int, np.ndarray], ...]:
    """:func:`_aa_taps` as a banded ``[out, in]`` matrix cut into blocks of :data:`BLOCK` outputs.

    Each block is ``(first output, first input, end input, weights [outputs, inputs])``: the band of
    inputs that block reads, so a resize is one small matrix product per block and converts to
    float only the input lines it reads.
    """
    index, weight = _aa_taps(in_size, out_size)
    dense = np.zeros((out_size, in_size), dtype=np.float32)
    np.add.at(dense, (np.arange(out_size)[:, None], index), weight)  # padded taps add 0
    blocks = []
    for first in range(0, out_size, BLOCK):
        band = dense[first:first + BLOCK]
        used = np.flatnonzero(band.any(axis=0))
        lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
        blocks.append((first, lo, hi, np.ascontiguousarray(band[:, lo:hi])))
    return tuple(blocks)


def _resize_rows(a: np.ndarray, out_size: int) -> np.ndarray:
    """Resize axis 0 of a 2-D ``[N, M]`` array -> float32 ``[out_size, M]``."""
    out = np.empty((out_size, a.shape[1]), dtype=np.float32)
    for first, lo, hi, w in _aa_blocks(a.shape[0], out_size):
        np.matmul(w, a[lo:hi].astype(np.float32, copy=False), out=out[first:first + w.shape[0]])
    return out


def _resize_cols(a: np.ndarray, out_size: int) -> np.ndarray:
    """Resize axis 1 of a 2-D ``[M, N]`` array -> float32 ``[M, out_size]``."""
    out = np.empty((a.shape[0], out_size), dtype=np.float32)
    for first, lo, hi, w in _aa_blocks(a.shape[1], out_size):
        np.matmul(a[:, lo:hi].astype(np.float32, copy=False), w.T, out=out[:, first:first + w.shape[0]])
    return out


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
    # Resized from the raw integers (the filter is linear), scaled once at the end: rows first on
    # [H, W*C], then columns on [h*C, W], which leaves the channels-first layout the model takes.
    in_h, in_w = arr.shape[:2]
    rows = arr.reshape(in_h, in_w * channels)
    if in_h != height:
        rows = _resize_rows(rows, height)
    cols = np.ascontiguousarray(rows.reshape(height, in_w, channels).transpose(0, 2, 1)).reshape(height * channels, in_w)
    if in_w != width:
        cols = _resize_cols(cols, width)
    out = cols.reshape(height, channels, width).transpose(1, 0, 2)  # [C, h, w]
    mean_a = np.asarray(mean, dtype=np.float32)[:, None, None]
    std_a = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((out.astype(np.float32, copy=False) * np.float32(scale) - mean_a) / std_a)
