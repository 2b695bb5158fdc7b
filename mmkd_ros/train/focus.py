"""Teacher-feature statistics for ``adv+kd+feat``: standardisation, and optional predictability weights.

Why standardise. The seed's discriminator compares raw pooled teacher and student features. Their
dimensions differ in scale by orders of magnitude, so D separates real from fake on a few
large-scale dimensions and its gradient tells the student little about the rest; a per-sample
regression on raw features is likewise dominated by them. ``adv+kd+feat`` puts D's input and a
per-sample regression (the "which cue, for which sample" that a distribution match cannot give)
in the teacher's standardised units, next to logit KD.

:class:`FeatureFocus` keeps running (EMA) statistics over training batches:

- ``mean``, ``var`` [D]: of the teacher's features, to standardise both sides;
- ``r2`` [D]: per dimension, the share of the teacher feature's variance that the student's
  projected feature explains, ``1 - E[(p - t)^2] / var(t)``, clipped to [0, 1].

Focusing (``distill.focus_floor``, default 0.1), after the Modality Focusing Hypothesis (Xue et
al., ICLR 2023: only the modality-general part of a teacher's knowledge transfers to a student of
another modality): a dimension weighs ``floor + (1 - floor) * r2`` in the regression and in what D
sees, so NIR-only dimensions the student cannot predict lose their say. Measured (BENCHMARKS.md,
"Method variants"), focusing on vs off (``floor = 1``) is not separable from seed noise: Houston
65.4 ± 4.3 vs 64.5 ± 5.0 validation macro-F1 over 5 seeds, the demo's quarter-labelled drives
0.738 vs 0.729 test accuracy over 3 seeds (an earlier 3-seed figure of 60.2 vs 69.7 on Houston
did not come out again). It stays on, as it was. ``distill.focus_start`` holds every weight at 1
for that share of the schedule (measured: no separable effect either).
"""
from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch import nn


class FeatureFocus(nn.Module):
    """Running teacher-feature statistics and per-dimension predictability weights (no parameters)."""

    def __init__(self, dim: int, momentum: float = 0.99, floor: float = 0.1, eps: float = 1e-5,
                 start_steps: int = 0) -> None:
        super().__init__()
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"focus floor must be in [0, 1], got {floor}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"focus momentum must be in [0, 1), got {momentum}")
        if start_steps < 0:
            raise ValueError(f"focus start must be >= 0 steps, got {start_steps}")
        self.momentum, self.floor, self.eps, self.start_steps = momentum, floor, eps, start_steps
        self.register_buffer("mean", torch.zeros(dim))  # [D]
        self.register_buffer("var", torch.ones(dim))  # [D]
        self.register_buffer("r2", torch.zeros(dim))  # [D]
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # batches folded in (resumes with the run)

    @torch.no_grad()
    def update(self, teacher: torch.Tensor, projected: torch.Tensor) -> None:
        """Fold one batch in: ``teacher`` [B, D] and the student's ``projected`` [B, D] (both detached).

        Under DDP the batch statistics are averaged over ranks first, so every rank keeps the same
        weights and the replicas stay identical.
        """
        self.steps += 1
        t, p = teacher.detach().float(), projected.detach().float()
        stats = torch.stack([t.mean(0), (t * t).mean(0), ((p - t) ** 2).mean(0)])  # [3, D]
        if torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.all_reduce(stats)
            stats /= torch_dist.get_world_size()
        mean, sq, err = stats
        var = (sq - mean * mean).clamp_min(self.eps)  # [D]
        r2 = (1.0 - err / var).clamp(0.0, 1.0)  # [D]
        if not bool(self.initialised):
            self.mean.copy_(mean)
            self.var.copy_(var)
            self.r2.copy_(r2)
            self.initialised.fill_(True)
            return
        m = self.momentum
        self.mean.mul_(m).add_(mean, alpha=1 - m)
        self.var.mul_(m).add_(var, alpha=1 - m)
        self.r2.mul_(m).add_(r2, alpha=1 - m)

    def weights(self) -> torch.Tensor:
        """[D] in [floor, 1]: how much each teacher dimension counts (all 1 before ``start_steps``)."""
        if int(self.steps) <= self.start_steps:
            return torch.ones_like(self.r2)
        return self.floor + (1.0 - self.floor) * self.r2

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, D] in the teacher's units (zero mean, unit variance per dimension)."""
        return (features - self.mean) / torch.sqrt(self.var + self.eps)

    def focused(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised and scaled by ``sqrt(weight)``: what the discriminator sees, [B, D]."""
        return self.standardise(features) * torch.sqrt(self.weights())

    def regression_loss(self, projected: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Weighted per-sample regression in standardised units: sum_d w_d (p_d - t_d)^2 / sum_d w_d, batch mean."""
        w = self.weights()  # [D]
        diff = self.standardise(projected) - self.standardise(teacher)  # [B, D]
        return ((diff * diff) * w).sum(1).mean() / w.sum().clamp_min(self.eps)  # all weights 0 (floor 0): loss 0
