"""THE preprocessing of every model input: training, evaluation, diagnosis and the nodes call it.

Two stages, composed in one place (:func:`prepare`):

1. :func:`to_model_scale`: ``HxWxC`` uint8/uint16 array -> ``[C, h, w]`` float32 in ``[0, 1]`` at the
   model's input size (antialiased bilinear);
2. :func:`normalize`: per-channel ``(t - mean) / std`` with the statistics stored in the model file.

Training caches stage 1 per dataset, applies paired augmentation in between, then stage 2;
evaluation and inference apply both without augmentation, so a model never sees differently
prepared pixels in the field than in validation.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


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
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)  # [C, H, W]
    return torch.from_numpy(chw).mul_(scale)


def resize(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear, antialiased resize of ``[C, H, W]`` (or ``[B, C, H, W]``) to ``size = (h, w)``.

    Antialiasing matters when shrinking 640x480 camera frames to a model's 128x128 input: without
    it, fine texture (one of the cues a good RGB model uses) aliases into noise.
    """
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
