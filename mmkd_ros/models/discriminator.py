"""Feature discriminator and the student-to-teacher projector used in adversarial distillation.

The discriminator tells teacher features (real) from projected student features (fake). It works
on pooled vectors, not images: we want the student's *representation* to match the teacher's
RGB+NIR one, and a vector critic is cheap enough to train alongside on a CPU.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


class FeatureDiscriminator(nn.Module):
    """MLP critic: [B, D] -> one logit per sample [B] (``outputs=1``), or [B, outputs] logits.

    ``spectral_norm=True`` bounds each layer's Lipschitz constant (Miyato et al., 2018,
    "Spectral Normalization for GANs"), which keeps the critic from overpowering the student.
    """

    def __init__(self, in_features: int, hidden: int = 256, layers: int = 2, spectral_norm: bool = False,
                 outputs: int = 1) -> None:
        super().__init__()
        self.outputs = outputs
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [wrap(nn.Linear(width, hidden)), nn.LeakyReLU(0.2, inplace=True)]
            width = hidden
        blocks.append(wrap(nn.Linear(width, outputs)))
        self.net = nn.Sequential(*blocks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.net(features)  # [B, outputs]
        return logits.squeeze(-1) if self.outputs == 1 else logits


class Projector(nn.Module):
    """Maps student features to the teacher's feature size: [B, D_s] -> [B, D_t].

    Part of training only: the exported student does not contain it. ``hidden=0`` gives one linear
    layer (as FitNets' regressor); ``hidden>0`` a two-layer MLP.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 0) -> None:
        super().__init__()
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
            )
        else:
            self.net = nn.Linear(in_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
