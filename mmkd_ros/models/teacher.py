"""The teacher: two ResNet branches (visible, NIR) fused at a mid-level stage, then a shared trunk.

Why mid-level fusion: early layers of each modality learn modality-specific filters (NIR has no
colour, different noise and dynamic range), while the later stages should reason about both at
once (e.g. "green in RGB but dark in NIR" = artificial turf or paint, not vegetation). Fusing by
channel concatenation after stage ``fuse_at`` keeps both properties and costs one wider block.

Layout for ``fuse_at=2`` (ResNet-18 stage names)::

    rgb [B,Cr,H,W] -> stem -> layer1 -> layer2 --\
                                                  concat [B,2*C2,H/8,W/8] -> layer3 -> layer4 -> pool -> fc
    nir [B,Cn,H,W] -> stem -> layer1 -> layer2 --/

The blocks are torchvision's ``BasicBlock``; only the first convolution of each branch is adapted
to that modality's channel count, and the first block of the trunk takes the concatenated channels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

RESNET18_BLOCKS = (2, 2, 2, 2)
STAGE_WIDTHS = (64, 128, 256, 512)  # ResNet-18 channels per stage at width 1.0


def scaled_widths(width: float) -> tuple[int, int, int, int]:
    """Stage channel counts for a width multiplier (at least 8 channels per stage)."""
    return tuple(max(8, int(round(c * width))) for c in STAGE_WIDTHS)  # type: ignore[return-value]


def make_stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage of ``BasicBlock``s, as torchvision's ``ResNet._make_layer`` builds it."""
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    layers = [BasicBlock(in_channels, out_channels, stride, downsample)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def make_stem(in_channels: int, out_channels: int) -> nn.Sequential:
    """ResNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) with ``in_channels`` inputs: [B,C,H,W] -> [B,w,H/4,W/4]."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


class ModalityBranch(nn.Module):
    """Stem and stages ``layer1..layer{fuse_at}`` of a ResNet for one modality."""

    def __init__(self, in_channels: int, widths: Sequence[int], blocks: Sequence[int], fuse_at: int) -> None:
        super().__init__()
        self.stem = make_stem(in_channels, widths[0])
        stages = []
        channels = widths[0]
        for i in range(fuse_at):
            stages.append(make_stage(channels, widths[i], blocks[i], stride=1 if i == 0 else 2))
            channels = widths[i]
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))  # [B, C_fuse, H/2^(fuse_at+1), W/2^(fuse_at+1)]


class TwoBranchTeacher(nn.Module):
    """RGB+NIR classifier with mid-level fusion; ``forward_features`` is what the discriminator sees."""

    def __init__(
        self,
        num_classes: int,
        rgb_channels: int = 3,
        nir_channels: int = 1,
        width: float = 1.0,
        fuse_at: int = 2,
        blocks: Sequence[int] = RESNET18_BLOCKS,
        dropout: float = 0.0,
        nir_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= nir_dropout < 1.0:
            raise ValueError(f"nir_dropout must be in [0, 1), got {nir_dropout}")
        self.nir_dropout = nir_dropout
        if fuse_at not in (1, 2, 3):
            raise ValueError(f"fuse_at must be 1, 2 or 3 (stage after which RGB and NIR are concatenated), got {fuse_at}")
        if rgb_channels < 1 or nir_channels < 1:
            raise ValueError(f"channel counts must be >= 1, got rgb={rgb_channels} nir={nir_channels}")
        widths = scaled_widths(width)
        self.rgb_branch = ModalityBranch(rgb_channels, widths, blocks, fuse_at)
        self.nir_branch = ModalityBranch(nir_channels, widths, blocks, fuse_at)
        trunk = []
        channels = self.rgb_branch.out_channels + self.nir_branch.out_channels  # concatenated
        for i in range(fuse_at, 4):
            trunk.append(make_stage(channels, widths[i], blocks[i], stride=2))
            channels = widths[i]
        self.trunk = nn.Sequential(*trunk)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        _init_resnet(self)

    def forward_features(self, rgb: torch.Tensor, nir: torch.Tensor) -> torch.Tensor:
        """[B,Cr,H,W], [B,Cn,H,W] -> pooled fused feature [B, num_features]."""
        return self.forward_maps(rgb, nir)[0]

    def forward_maps(self, rgb: torch.Tensor, nir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled fused feature [B, D] and the NIR branch's map before fusion [B, C_fuse, h, w].

        In training mode with ``nir_dropout`` p, each sample's NIR map is zeroed with probability
        p before fusion (modality dropout, Neverova et al. 2015): the fused feature then has to
        carry the class from RGB alone as well, which a student that sees only RGB can copy.
        """
        nir_map = self.nir_branch(nir)  # [B, C_fuse, h, w]
        fused_nir = nir_map
        if self.training and self.nir_dropout > 0:
            keep = torch.rand(len(nir_map), 1, 1, 1, device=nir_map.device) >= self.nir_dropout  # [B,1,1,1]
            fused_nir = nir_map * keep
        fused = torch.cat([self.rgb_branch(rgb), fused_nir], dim=1)  # [B, 2*C_fuse, h, w]
        return torch.flatten(self.pool(self.trunk(fused)), 1), nir_map  # [B, D], [B, C_fuse, h, w]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """[B, D] -> logits [B, K]."""
        return self.fc(self.dropout(features))

    def forward(self, rgb: torch.Tensor, nir: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(rgb, nir))


class RGBTwin(TwoBranchTeacher):
    """The teacher's architecture with RGB in both branches: the capacity control for a study.

    Same parameters and FLOPs as the teacher (when both modalities have as many channels), no NIR,
    and the student interface (``forward_features(rgb)``): trained like a student with ``ce``, it
    answers "is the teacher's edge NIR or capacity?".
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, fuse_at: int = 2,
                 blocks: Sequence[int] = (2, 2, 2, 2), dropout: float = 0.0) -> None:
        super().__init__(num_classes, in_channels, in_channels, width, fuse_at, blocks, dropout)

    def forward_features(self, rgb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """[B,C,H,W] -> pooled feature [B, num_features]; both branches see the visible image."""
        return self.forward_maps(rgb, rgb)[0]

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_head(self.forward_features(rgb))


def _init_resnet(model: nn.Module) -> None:
    """torchvision's ResNet initialisation, plus zero-init of each block's last BN (trains faster from scratch)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
