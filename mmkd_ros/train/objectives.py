"""The student's objective terms: one class per term, built from a row of :data:`~mmkd_ros.train.config.METHODS`.

Each term turns the tensors of one step (:class:`StepTensors`) into ``(weighted loss, named
values)`` and owns its extra state (the adversarial term: its discriminator and optimiser) through
``state_dict``/``load_state_dict``, like the task classes of timm's ``task/distillation.py``. The
loss math itself stays in :mod:`mmkd_ros.losses` (plain tensor functions with their formulas).

The ``*_std`` terms work in the teacher's standardised, predictability-weighted feature units of
one shared :class:`~mmkd_ros.train.focus.FeatureFocus`, which the distillation recipe owns and
updates once per step; ``feat`` and ``adv`` use the raw fused feature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmkd_ros.losses import (
    classification_loss, disc_loss, feature_l2_loss, gen_loss, gradient_penalty, hallucination_loss, kd_loss,
    r1_penalty, rank_agreement, task_disc_loss, task_gen_loss,
)
from mmkd_ros.models import build_model
from mmkd_ros.train.config import METHODS, DistillConfig
from mmkd_ros.train.distributed import Runtime
from mmkd_ros.train.focus import FeatureFocus


@dataclass
class StepTensors:
    """What the terms of one step read. Teacher tensors are None for ``ce``; the projection for non-feature methods."""

    labels: torch.Tensor  # [B], -1 = unlabelled
    student_logits: torch.Tensor  # [B, K]
    student_projected: torch.Tensor | None  # [B, D_t]: the student's feature in the teacher's size
    teacher_features: torch.Tensor | None  # [B, D_t], no graph
    teacher_logits: torch.Tensor | None  # [B, K], no graph
    mixed_labels: torch.Tensor | None = None  # [B]: labels of the partners blended in (mixed pairs), -1 = none
    mix_weight: float = 1.0  # share of ``labels``' own image in each blended input
    student_map: torch.Tensor | None = None  # [B, C_t, h', w']: the student's adapted mid-level map (hall)
    teacher_map: torch.Tensor | None = None  # [B, C_t, h, w]: the teacher's NIR-branch map, no graph (hall)


class Objective:
    """One term of the student's loss. Subclasses set the flags and implement :meth:`loss`."""

    name = ""
    needs_teacher = True  # reads the frozen teacher's outputs (and so can learn from unlabelled pairs)
    needs_projector = False  # reads the student's feature projected to the teacher's size
    needs_maps = False  # reads the student's mid-level map and the teacher's NIR-branch map

    def loss(self, x: StepTensors) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def train_mode(self) -> None:
        """Put the term's own modules in training mode (none by default)."""

    def sync(self, runtime: Runtime) -> None:
        """End of epoch: make the term's buffers equal on every rank (none by default)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class CrossEntropy(Objective):
    """``w_ce * CE(y, h(s))`` on labelled pairs (unlabelled ones, ``-1``, are skipped).

    ``start_steps``: the weight is 0 for that many student updates (``distill.ce_start``: the
    teacher's terms alone first, supervision transfer), then ``w_ce``.
    """

    name, needs_teacher = "ce", False

    def __init__(self, weight: float, label_smoothing: float, start_steps: int = 0) -> None:
        self.weight, self.label_smoothing, self.start_steps = weight, label_smoothing, start_steps
        self.updates = 0  # student updates so far: the clock of start_steps

    def loss(self, x: StepTensors) -> tuple[torch.Tensor, dict[str, float]]:
        loss_ce = classification_loss(x.student_logits, x.labels, self.label_smoothing)
        if x.mixed_labels is not None:  # mixed pairs: each label by its image's share
            loss_ce = x.mix_weight * loss_ce + (1.0 - x.mix_weight) * classification_loss(
                x.student_logits, x.mixed_labels, self.label_smoothing)
        weight = self.weight if self.updates >= self.start_steps else 0.0
        self.updates += 1
        return weight * loss_ce, {"loss_ce": float(loss_ce.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))


class LogitKD(Objective):
    """``w_kd * KD_T(student logits, teacher logits)`` (Hinton et al., 2015).

    ``rank_filter`` (``distill.kd_filter=rank``, C2KD): only pairs whose student and teacher class
    rankings agree (Kendall's tau > 0) are distilled; the others weigh 0 in the batch mean.
    """

    name = "kd"

    def __init__(self, weight: float, temperature: float, rank_filter: bool = False) -> None:
        self.weight, self.temperature, self.rank_filter = weight, temperature, rank_filter

    def loss(self, x: StepTensors) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.rank_filter:
            loss_kd = kd_loss(x.student_logits, x.teacher_logits, self.temperature)
            return self.weight * loss_kd, {"loss_kd": float(loss_kd.detach())}
        keep = (rank_agreement(x.student_logits.detach(), x.teacher_logits) > 0).float()  # [B]
        loss_kd = kd_loss(x.student_logits, x.teacher_logits, self.temperature, weights=keep)
        return self.weight * loss_kd, {"loss_kd": float(loss_kd.detach()), "kd_kept": float(keep.mean())}


class FeatureRegression(Objective):
    """``w_feat * |P(s) - t|^2``: raw (FitNets, ``feat``) or in ``focus`` units, per dimension weighted (``feat_std``)."""

    needs_projector = True

    def __init__(self, weight: float, focus: FeatureFocus | None) -> None:
        self.weight, self.focus = weight, focus
        self.name = "feat" if focus is None else "feat_std"

    def loss(self, x: StepTensors) -> tuple[torch.Tensor, dict[str, float]]:
        if self.focus is None:
            loss_feat = feature_l2_loss(x.student_projected, x.teacher_features)
        else:
            loss_feat = self.focus.regression_loss(x.student_projected, x.teacher_features)
        return self.weight * loss_feat, {"loss_feat": float(loss_feat.detach())}


class Hallucination(Objective):
    """``w_hall * |A(s_map) - std(t_nir_map)|^2``: the hallucination stream (Hoffman et al. CVPR 2016).

    The student's mid-level map at the teacher's fusion stride, through a 1x1 adapter ``A``
    (training only, like the projector), regresses the teacher's NIR-branch map, per sample and
    location: the student learns to predict from RGB what the NIR branch would have seen there.
    """

    name, needs_maps = "hall", True

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def loss(self, x: StepTensors) -> tuple[torch.Tensor, dict[str, float]]:
        loss_hall = hallucination_loss(x.student_map, x.teacher_map)
        return self.weight * loss_hall, {"loss_hall": float(loss_hall.detach())}


class Adversarial(Objective):
    """A discriminator D tells the teacher's fused feature (real) from the student's projection (fake).

    ``update_discriminator`` is step (1), D's own update on detached student features;
    :meth:`loss` is the student's term, ``ramp * w_adv * gan_gen_loss(D(P(s)))``, computed with D
    frozen, so its backward reaches the student and projector only. D optionally also sees the
    teacher's class probabilities (``disc_condition``, Mirza & Osindero 2014), and with ``focus``
    it compares standardised, predictability-weighted features (``adv_std``).

    ``task=True`` is the discriminator with a task (Garcia et al. TPAMI 2019; ``adv_task``): D has
    2K outputs, "teacher feature of class c" and "student feature of class c", and the student
    wins when its feature is named the teacher's of the right class. The class is the label, or
    the teacher's prediction where the pair has none, so unlabelled pairs count here too.
    """

    needs_projector = True

    def __init__(self, cfg: DistillConfig, teacher_dim: int, num_classes: int, focus: FeatureFocus | None,
                 runtime: Runtime, steps_per_epoch: int, task: bool = False) -> None:
        self.cfg, self.focus, self.steps_per_epoch, self.task = cfg, focus, steps_per_epoch, task
        self.name = ("adv_task" if task else "adv") + ("" if focus is None else "_std")
        self.conditioned = not task and cfg.disc_condition == "teacher_probs"
        inputs = teacher_dim + (num_classes if self.conditioned else 0)
        self.disc = build_model("discriminator_mlp", in_features=inputs, hidden=cfg.disc_hidden,
                                layers=cfg.disc_layers, spectral_norm=cfg.disc_spectral_norm,
                                outputs=2 * num_classes if task else 1).to(runtime.device)
        # beta1 = 0.5: the usual GAN setting (Radford et al., 2016), momentum lags a moving target.
        self.opt_disc = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr_disc, betas=(0.5, 0.999))
        self.disc_synced = runtime.wrap(self.disc)  # D's own update averages gradients across ranks
        self.updates = 0  # student updates so far: the clock of the warm-up ramp

    def _inputs(self, features: torch.Tensor, x: StepTensors) -> torch.Tensor:
        """What D sees of a feature: [B, D_t (+K)]."""
        view = features if self.focus is None else self.focus.focused(features)
        if not self.conditioned:
            return view
        return torch.cat([view, torch.softmax(x.teacher_logits, 1)], dim=1)

    def update_discriminator(self, x: StepTensors) -> dict[str, float]:
        real = self._inputs(x.teacher_features, x)  # [B, D_t (+K)]
        fake = self._inputs(x.student_projected.detach(), x)  # detached: no gradient to the student here
        _set_requires_grad(self.disc, True)
        for _ in range(self.cfg.d_steps):
            logits = self.disc_synced(torch.cat([real, fake]))  # [2B] (task: [2B, 2K]): one call keeps DDP simple
            real_logits, fake_logits = logits.split(len(real))
            if self.task:
                loss_disc = task_disc_loss(real_logits, fake_logits, task_classes(x))
            else:
                loss_disc = disc_loss(self.cfg.gan_loss, real_logits, fake_logits)
            if self.cfg.gp != "none" and not self.task:
                loss_disc = loss_disc + self.cfg.gp_weight * self._penalty(real, fake)
            self.opt_disc.zero_grad(set_to_none=True)
            loss_disc.backward()
            self.opt_disc.step()
        return {"loss_disc": float(loss_disc.detach()),
                "d_real": self._belief_real(real_logits.detach()),  # D's belief that teacher features are real
                "d_fake": self._belief_real(fake_logits.detach())}

    def _belief_real(self, logits: torch.Tensor) -> float:
        """Mean probability D gives "teacher feature" ([B] logits, or [B, 2K]: the first K summed)."""
        if not self.task:
            return float(torch.sigmoid(logits).mean())
        return float(torch.softmax(logits, 1)[:, : logits.shape[1] // 2].sum(1).mean())

    def loss(self, x: StepTensors) -> tuple[torch.Tensor, dict[str, float]]:
        _set_requires_grad(self.disc, False)
        fake = self._inputs(x.student_projected, x)  # with graph, into the student
        logits = self.disc(fake)  # plain D: frozen, nothing to sync
        loss_adv = task_gen_loss(logits, task_classes(x)) if self.task else gen_loss(self.cfg.gan_loss, logits)
        ramp = adv_ramp(self.updates, self.steps_per_epoch, self.cfg.adv_warmup_epochs)
        self.updates += 1
        return ramp * self.cfg.w_adv * loss_adv, {"loss_adv": float(loss_adv.detach())}

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """R1 on the real features, or WGAN-GP on random interpolates."""
        if self.cfg.gp == "r1":
            inputs = real.detach().requires_grad_(True)  # [B, D_t]
            return r1_penalty(self.disc(inputs), inputs)
        alpha = torch.rand(len(real), 1, device=real.device)  # [B, 1]
        inputs = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
        return gradient_penalty(self.disc(inputs), inputs)

    def train_mode(self) -> None:
        self.disc.train()

    def sync(self, runtime: Runtime) -> None:
        runtime.broadcast_buffers(self.disc)  # spectral-norm power-iteration vectors

    def state_dict(self) -> dict[str, Any]:
        return {"disc": self.disc.state_dict(), "opt_disc": self.opt_disc.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt_disc.load_state_dict(state["opt_disc"])
        self.updates = int(state["updates"])


def task_classes(x: StepTensors) -> torch.Tensor:
    """[B] the class the task discriminator must name: the label, or the teacher's prediction where there is none."""
    return torch.where(x.labels >= 0, x.labels, x.teacher_logits.argmax(1))


def adv_ramp(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Factor on ``w_adv``: linear from 0 to 1 over ``warmup_epochs`` (1 at once when 0)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, step / (warmup_epochs * steps_per_epoch))


def build_objectives(cfg: DistillConfig, teacher_dim: int, num_classes: int, runtime: Runtime,
                     steps_per_epoch: int) -> tuple[list[Objective], FeatureFocus | None]:
    """The terms of ``cfg.method`` (its row of METHODS, in order) and the feature statistics they share."""
    terms = METHODS[cfg.method]
    focus = None
    if any(t.endswith("_std") for t in terms):
        focus = FeatureFocus(teacher_dim, cfg.focus_momentum, cfg.focus_floor,
                             start_steps=round(cfg.focus_start * cfg.epochs * steps_per_epoch)).to(runtime.device)
    # Labels join after ce_start of the schedule only where a teacher term has something to teach first.
    ce_start = cfg.ce_start if method_needs_teacher(cfg.method) else 0.0
    builders = {
        "ce": lambda: CrossEntropy(cfg.w_ce, cfg.label_smoothing, round(ce_start * cfg.epochs * steps_per_epoch)),
        "kd": lambda: LogitKD(cfg.w_kd, cfg.kd_temperature, cfg.kd_filter == "rank"),
        "feat": lambda: FeatureRegression(cfg.w_feat, None),
        "feat_std": lambda: FeatureRegression(cfg.w_feat, focus),
        "adv": lambda: Adversarial(cfg, teacher_dim, num_classes, None, runtime, steps_per_epoch),
        "adv_std": lambda: Adversarial(cfg, teacher_dim, num_classes, focus, runtime, steps_per_epoch),
        "adv_task": lambda: Adversarial(cfg, teacher_dim, num_classes, None, runtime, steps_per_epoch, task=True),
        "adv_task_std": lambda: Adversarial(cfg, teacher_dim, num_classes, focus, runtime, steps_per_epoch, task=True),
        "hall": lambda: Hallucination(cfg.w_hall),
    }
    return [builders[t]() for t in terms], focus


#: The class of each term name used in METHODS.
TERMS: dict[str, type[Objective]] = {"ce": CrossEntropy, "kd": LogitKD, "feat": FeatureRegression,
                                     "feat_std": FeatureRegression, "adv": Adversarial, "adv_std": Adversarial,
                                     "adv_task": Adversarial, "adv_task_std": Adversarial, "hall": Hallucination}


def method_needs_teacher(method: str) -> bool:
    """Whether ``method`` has a teacher term (and so can learn from unlabelled pairs)."""
    return any(TERMS[t].needs_teacher for t in METHODS[method])


def method_needs_projector(method: str) -> bool:
    """Whether a term of ``method`` reads the student's projected feature."""
    return any(TERMS[t].needs_projector for t in METHODS[method])


def method_needs_maps(method: str) -> bool:
    """Whether a term of ``method`` reads mid-level maps (the hallucination stream)."""
    return any(TERMS[t].needs_maps for t in METHODS[method])


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
