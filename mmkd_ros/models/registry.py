"""Model names -> builder functions taking flat arguments (never config objects).

A checkpoint stores ``arch`` (a name here) and ``arch_args`` (the builder's keyword arguments), so
``build_model(ckpt["arch"], **ckpt["arch_args"])`` rebuilds any saved model.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from mmkd_ros.core.errors import CheckpointError
from mmkd_ros.models.discriminator import FeatureDiscriminator, Projector
from mmkd_ros.models.student import MobileNetV3Student, TinyStudent
from mmkd_ros.models.teacher import RGBTwin, TwoBranchTeacher

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


@register
def teacher_resnet18_mid(
    num_classes: int, rgb_channels: int = 3, nir_channels: int = 1, width: float = 1.0, fuse_at: int = 2,
    dropout: float = 0.0, nir_dropout: float = 0.0,
) -> nn.Module:
    """Two ResNet-18 branches fused after stage ``fuse_at``, ResNet-18 trunk (about 11-12 M parameters at width 1)."""
    return TwoBranchTeacher(num_classes, rgb_channels, nir_channels, width, fuse_at, (2, 2, 2, 2), dropout,
                            nir_dropout)


@register
def teacher_resnet_tiny(
    num_classes: int, rgb_channels: int = 3, nir_channels: int = 1, width: float = 0.25, fuse_at: int = 2,
    dropout: float = 0.0, nir_dropout: float = 0.0,
) -> nn.Module:
    """One BasicBlock per stage and a width multiplier: the same topology for tests and demos."""
    return TwoBranchTeacher(num_classes, rgb_channels, nir_channels, width, fuse_at, (1, 1, 1, 1), dropout,
                            nir_dropout)


@register
def student_mobilenetv3_small(num_classes: int, in_channels: int = 3, width: float = 1.0,
                              dropout: float = 0.2) -> nn.Module:
    """torchvision MobileNetV3-Small on the visible image."""
    return MobileNetV3Student(num_classes, in_channels, width, dropout)


@register
def rgb_twin_resnet18_mid(num_classes: int, in_channels: int = 3, width: float = 1.0, fuse_at: int = 2,
                          dropout: float = 0.0) -> nn.Module:
    """``teacher_resnet18_mid`` with RGB in both branches: an RGB-only model as large as the teacher."""
    return RGBTwin(num_classes, in_channels, width, fuse_at, (2, 2, 2, 2), dropout)


@register
def student_tiny(num_classes: int, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Three conv blocks: for tests."""
    return TinyStudent(num_classes, in_channels, width)


@register
def discriminator_mlp(in_features: int, hidden: int = 256, layers: int = 2, spectral_norm: bool = False,
                      outputs: int = 1) -> nn.Module:
    """MLP critic on pooled feature vectors (``outputs=2K``: the discriminator with a task)."""
    return FeatureDiscriminator(in_features, hidden, layers, spectral_norm, outputs)


@register
def projector_linear(in_features: int, out_features: int, hidden: int = 0) -> nn.Module:
    """Student feature -> teacher feature size (training only)."""
    return Projector(in_features, out_features, hidden)


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model; unknown names raise ``KeyError`` listing the known ones."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def model_names(prefix: str = "") -> list[str]:
    return sorted(n for n in MODELS if n.startswith(prefix))


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
