"""The student: a compact RGB-only classifier (torchvision MobileNetV3-Small by default).

It sees only the visible image; distillation makes its pooled feature (through a projector that is
used in training only) look like the teacher's fused RGB+NIR feature.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small


class MobileNetV3Student(nn.Module):
    """MobileNetV3-Small with ``in_channels`` inputs; ``forward_features`` gives the pooled [B, 576*width] vector."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        # BatchNorm momentum 0.1 instead of torchvision's 0.01: that value suits ImageNet's 100k+
        # steps; with the few hundred steps of training from a bag, running statistics would lag
        # far behind the weights and eval-mode predictions collapse to one class.
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)
        net = mobilenet_v3_small(weights=None, num_classes=num_classes, width_mult=width, dropout=dropout,
                                 norm_layer=norm_layer)
        first = net.features[0][0]  # Conv2d(3, 16*width, 3, stride 2)
        if in_channels != first.in_channels:
            net.features[0][0] = nn.Conv2d(
                in_channels, first.out_channels, kernel_size=first.kernel_size, stride=first.stride,
                padding=first.padding, bias=False,
            )
            nn.init.kaiming_normal_(net.features[0][0].weight, mode="fan_out")
        self.features = net.features
        self.pool = net.avgpool
        self.classifier = net.classifier  # Linear -> Hardswish -> Dropout -> Linear
        self.num_features = net.classifier[0].in_features

    def forward_features(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> pooled feature [B, D_s]."""
        return torch.flatten(self.pool(self.features(rgb)), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """[B, D_s] -> logits [B, K]."""
        return self.classifier(features)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(rgb))


class TinyStudent(nn.Module):
    """Three conv-BN-ReLU blocks and a linear head: a student for tests and very small CPU budgets."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = (max(4, int(round(c * width))) for c in (16, 32, 64))
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, c1, stride=2),
            _conv_bn_relu(c1, c2, stride=2),
            _conv_bn_relu(c2, c3, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c3
        self.classifier = nn.Linear(c3, num_classes)

    def forward_features(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> pooled feature [B, D_s]."""
        return torch.flatten(self.pool(self.features(rgb)), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """[B, D_s] -> logits [B, K]."""
        return self.classifier(features)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(rgb))


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )
