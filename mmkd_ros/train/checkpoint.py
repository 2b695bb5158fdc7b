"""Self-describing checkpoints: written atomically, loaded without executing code, checked on use.

A checkpoint carries everything needed to run its model (architecture name and arguments, class
names, modalities and channels, input size, normalisation) so a node needs nothing else. Loading
uses ``torch.load(weights_only=True)``: a model path is a node parameter, so a hostile pickle must
fail with a clear error, never run.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmkd_ros import __version__
from mmkd_ros.errors import CheckpointError
from mmkd_ros.models import build_model

FORMAT = "mmkd_ros/checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "role", "arch", "arch_args", "state_dict", "classes", "modalities",
                 "channels", "input_size", "normalization")


def make_checkpoint(
    *, role: str, arch: str, arch_args: dict[str, Any], model: nn.Module, classes: Sequence[str],
    modalities: Sequence[str], channels: dict[str, int], input_size: Sequence[int],
    normalization: dict[str, dict[str, list[float]]], config: dict[str, Any], metrics: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of CONTRACTS.md (tensors moved to CPU so it loads anywhere)."""
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "role": role,
        "arch": arch,
        "arch_args": dict(arch_args),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "modalities": list(modalities),
        "channels": {m: int(channels[m]) for m in modalities},
        "input_size": [int(s) for s in input_size],
        "normalization": {m: normalization[m] for m in modalities},
        "config": config,
        "metrics": dict(metrics or {}),
        "package_version": __version__,
    }
    if train_state is not None:
        checkpoint["train_state"] = train_state
    return checkpoint


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a temporary file in the same folder, then ``os.replace`` (never a torn file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a checkpoint is meant to be read by others (nodes)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, role: str | None = None) -> dict[str, Any]:
    """Load and check the format; ``role`` ("teacher" / "student") is enforced when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(
            f"refused to load {path}: not a plain-weights file (weights_only load failed: {first[:160]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mmkd_ros checkpoint (no format={FORMAT!r} field)")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {checkpoint.get('version')}, this package reads {VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} lacks field(s) {', '.join(missing)}; it was not written by mmkd_ros")
    if role is not None and checkpoint["role"] != role:
        raise CheckpointError(f"{path} is a {checkpoint['role']} checkpoint, a {role} checkpoint is needed here")
    return checkpoint


def build_from_checkpoint(checkpoint: dict[str, Any], source: str | Path = "checkpoint") -> nn.Module:
    """Rebuild the model and load its weights; an architecture mismatch is a one-line CheckpointError."""
    try:
        model = build_model(checkpoint["arch"], **checkpoint["arch_args"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot build architecture {checkpoint['arch']!r}: {exc}") from None
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(
            f"{source}: weights do not fit architecture {checkpoint['arch']} {checkpoint['arch_args']} ({detail})"
        ) from None
    return model


def check_compatible(checkpoint: dict[str, Any], classes: Sequence[str], channels: dict[str, int],
                     source: str | Path = "checkpoint") -> None:
    """Refuse a checkpoint trained on other classes or other channel counts than the data at hand."""
    if list(checkpoint["classes"]) != list(classes):
        raise CheckpointError(
            f"{source} was trained on classes {checkpoint['classes']} but the dataset has {list(classes)}; "
            "train a teacher on this dataset"
        )
    for modality in checkpoint["modalities"]:
        have, want = int(checkpoint["channels"][modality]), int(channels[modality])
        if have != want:
            raise CheckpointError(
                f"{source} expects {have} {modality} channel(s) but the dataset has {want}; "
                "train a teacher on this dataset"
            )
