"""Distillation recipe: an RGB-only student learns from a frozen RGB+NIR teacher.

Adversarial distillation (the method): a discriminator ``D`` learns to tell the teacher's fused
RGB+NIR feature (real) from the student's projected RGB feature (fake); the student is trained to
fool it while also fitting the labels::

    L_D       = gan_disc_loss(D(t), D(P(s)))                          (student features detached)
    L_student = w_adv * gan_gen_loss(D(P(s))) + w_ce * CE(y, h(s)) [+ w_kd * KD] [+ w_feat * |P(s) - t|^2]

``method`` picks the terms at an equal budget: ``ce`` (student alone), ``kd`` (Hinton),
``feat_l2`` (FitNets-style regression), ``adv`` (the seed's method), ``adv+kd``, and
``adv+kd+feat``: the adversarial term on standardised teacher features, plus a per-sample
regression in those units and logit KD (:mod:`mmkd_ros.train.focus` explains why; optionally
weighted by how much of each feature the student can predict).

Training pairs without a label (``-1``) feed every teacher term; cross-entropy skips them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from mmkd_ros import config as config_lib
from mmkd_ros.config import Config, DistillConfig
from mmkd_ros.losses import (
    classification_loss, disc_loss, feature_l2_loss, gen_loss, gradient_penalty, kd_loss, r1_penalty,
)
from mmkd_ros.models import build_model
from mmkd_ros.train import checkpoint as ckpt_lib
from mmkd_ros.train.focus import FeatureFocus
from mmkd_ros.train.common import (
    EpochLog, classification_metrics, cosine_schedule, format_epoch, make_eval_loader, make_train_loader,
    gather_rng, load_resume_state, predict_logits, prepare_data, record_final, seed_everything,
    set_rng_state,
)
from mmkd_ros.train.distributed import (
    DistInfo, barrier, broadcast_buffers, cleanup_distributed, replica_max_abs_diff, setup_distributed, unwrap,
    wrap_ddp,
)

BEST_NAME, LAST_NAME = "student.pt", "last.pt"


class StudentWithProjector(nn.Module):
    """The student plus (for feature-level methods) its projector, as one module so DDP wraps one thing.

    forward(rgb [B,C,H,W]) -> (logits [B,K], projected feature [B,D_t] or None).
    """

    def __init__(self, student: nn.Module, projector: nn.Module | None) -> None:
        super().__init__()
        self.student = student
        self.projector = projector

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.student.forward_features(rgb)  # [B, D_s]
        logits = self.student.forward_head(features)  # [B, K]
        projected = self.projector(features) if self.projector is not None else None  # [B, D_t]
        return logits, projected


@dataclass
class DistillModels:
    """What one distillation step touches. ``disc`` is None for the non-adversarial methods."""

    teacher: nn.Module  # frozen, eval mode
    student: nn.Module  # StudentWithProjector, maybe DDP-wrapped
    disc: nn.Module | None  # FeatureDiscriminator, maybe DDP-wrapped
    opt_student: torch.optim.Optimizer
    opt_disc: torch.optim.Optimizer | None
    scheduler: torch.optim.lr_scheduler.LRScheduler
    focus: FeatureFocus | None = None  # adv+kd+feat only
    steps_per_epoch: int = 1  # for the adversarial warm-up ramp
    step: int = 0  # student updates so far (restored on resume)


def uses_adversary(method: str) -> bool:
    return method.startswith("adv")


def uses_projector(method: str) -> bool:
    return method in ("feat_l2", "adv", "adv+kd", "adv+kd+feat")


def uses_kd(method: str) -> bool:
    return method in ("kd", "adv+kd", "adv+kd+feat")


def uses_unlabelled(config: Config) -> bool:
    """Whether training keeps pairs without a label: only a method with a teacher term can use them."""
    return config.data.unlabelled and config.distill.method != "ce"


def adv_ramp(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Factor on ``w_adv``: linear from 0 to 1 over ``warmup_epochs`` (1 at once when 0)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, step / (warmup_epochs * steps_per_epoch))


def distill_step(batch: dict[str, torch.Tensor], m: DistillModels, cfg: DistillConfig, device: str) -> dict[str, float]:
    """One discriminator update (``cfg.d_steps`` of them), then one student update; named losses out."""
    rgb, nir, labels = batch["rgb"].to(device), batch["nir"].to(device), batch["label"].to(device)
    if cfg.method != "ce":  # "ce" is the student alone: the baseline never consults the teacher
        with torch.no_grad():  # the teacher is frozen: no graph, no gradient, ever
            teacher_features = m.teacher.forward_features(rgb, nir)  # [B, D_t]
            teacher_logits = m.teacher.forward_head(teacher_features)  # [B, K]
    student_logits, student_projected = m.student(rgb)  # [B, K], [B, D_t] or None
    out: dict[str, float] = {}
    if m.focus is not None:
        m.focus.update(teacher_features, student_projected)
        out["focus_r2"] = float(m.focus.r2.mean())  # mean share of the teacher feature the student predicts
    # What D compares: raw pooled features, or (adv+kd+feat) standardised (and maybe focus-weighted) ones.
    view = m.focus.focused if m.focus is not None else (lambda f: f)

    # 1) Discriminator: teacher features are real, student features fake and detached.
    if uses_adversary(cfg.method):
        # Optional condition: the teacher's class probabilities, so D judges "is this a teacher
        # feature *for this kind of scene*", not just "does it look like a teacher feature".
        condition = torch.softmax(teacher_logits, 1) if cfg.disc_condition == "teacher_probs" else None  # [B, K]
        real = _with_condition(view(teacher_features), condition)  # [B, D_t (+K)]
        fake = _with_condition(view(student_projected.detach()), condition)  # detached: no gradient to the student here
        _set_requires_grad(m.disc, True)
        for _ in range(cfg.d_steps):
            logits = m.disc(torch.cat([real, fake]))  # [2B]: one call keeps DDP simple
            real_logits, fake_logits = logits.split(len(rgb))
            loss_disc = disc_loss(cfg.gan_loss, real_logits, fake_logits)
            if cfg.gp != "none":
                loss_disc = loss_disc + cfg.gp_weight * _penalty(cfg.gp, unwrap(m.disc), real, fake)
            m.opt_disc.zero_grad(set_to_none=True)
            loss_disc.backward()
            m.opt_disc.step()
        out["loss_disc"] = float(loss_disc.detach())
        out["d_real"] = float(torch.sigmoid(real_logits.detach()).mean())  # D's belief that teacher features are real
        out["d_fake"] = float(torch.sigmoid(fake_logits.detach()).mean())

    # 2) Student: D frozen (requires_grad False) so this backward updates the student and projector only.
    loss_ce = classification_loss(student_logits, labels, cfg.label_smoothing)
    loss = cfg.w_ce * loss_ce
    out["loss_ce"] = float(loss_ce.detach())
    if uses_adversary(cfg.method):
        _set_requires_grad(m.disc, False)
        fake_for_student = _with_condition(view(student_projected), condition)  # with graph, into the student
        loss_adv = gen_loss(cfg.gan_loss, unwrap(m.disc)(fake_for_student))  # unwrapped: no DDP sync for D
        loss = loss + adv_ramp(m.step, m.steps_per_epoch, cfg.adv_warmup_epochs) * cfg.w_adv * loss_adv
        out["loss_adv"] = float(loss_adv.detach())
    if uses_kd(cfg.method):
        loss_kd = kd_loss(student_logits, teacher_logits, cfg.kd_temperature)
        loss = loss + cfg.w_kd * loss_kd
        out["loss_kd"] = float(loss_kd.detach())
    if cfg.method in ("feat_l2", "adv+kd+feat"):
        if m.focus is not None:
            loss_feat = m.focus.regression_loss(student_projected, teacher_features)
        else:
            loss_feat = feature_l2_loss(student_projected, teacher_features)
        loss = loss + cfg.w_feat * loss_feat
        out["loss_feat"] = float(loss_feat.detach())
    m.opt_student.zero_grad(set_to_none=True)
    loss.backward()
    m.opt_student.step()
    m.scheduler.step()
    m.step += 1
    out["loss"] = float(loss.detach())
    labelled = labels >= 0
    correct = (student_logits.detach().argmax(1) == labels)[labelled].float()  # acc 0 for an all-unlabelled batch
    out["acc"] = float(correct.mean()) if len(correct) else 0.0
    return out


def _with_condition(features: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    return features if condition is None else torch.cat([features, condition], dim=1)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _penalty(kind: str, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """R1 on the real features, or WGAN-GP on random interpolates (computed on the unwrapped D)."""
    if kind == "r1":
        x = real.detach().requires_grad_(True)  # [B, D_t]
    else:
        alpha = torch.rand(len(real), 1, device=real.device)  # [B, 1]
        x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    logits = disc(x)
    return r1_penalty(logits, x) if kind == "r1" else gradient_penalty(logits, x)


def distill(config: Config, data_dir: str | Path, teacher_path: str | Path, out_dir: str | Path,
            resume: bool = False, stop_after: int | None = None) -> Path:
    """Distill a student from ``teacher_path`` on ``data_dir`` into ``out_dir``; returns the best checkpoint.

    ``stop_after`` ends this call after that many epochs in total (the run stays resumable).
    """
    from mmkd_ros.inference import resolve_device

    dist = setup_distributed(resolve_device(config.device))
    try:
        return _run(config, Path(data_dir), Path(teacher_path), Path(out_dir), resume, stop_after, dist)
    finally:
        cleanup_distributed(dist)


def student_arch_args(config: Config, num_classes: int, rgb_channels: int) -> dict[str, Any]:
    return {"num_classes": num_classes, "in_channels": rgb_channels, "width": config.student.width}


def build_distill_models(config: Config, teacher: nn.Module, teacher_dim: int, arch_args: dict[str, Any],
                         dist: DistInfo, steps_per_epoch: int) -> DistillModels:
    """Student (+ projector), discriminator, optimisers and schedule for ``config.distill.method``."""
    cfg = config.distill
    student = build_model(config.student.arch, **arch_args)
    num_classes = arch_args["num_classes"]
    projector = None
    if uses_projector(cfg.method):
        projector = build_model("projector_linear", in_features=student.num_features, out_features=teacher_dim,
                                hidden=cfg.projector_hidden)
    student_proj = StudentWithProjector(student, projector).to(dist.device)
    opt_student = torch.optim.AdamW(student_proj.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(opt_student, cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch))
    disc, opt_disc = None, None
    if uses_adversary(cfg.method):
        disc_inputs = teacher_dim + (num_classes if cfg.disc_condition == "teacher_probs" else 0)
        disc = build_model("discriminator_mlp", in_features=disc_inputs, hidden=cfg.disc_hidden,
                           layers=cfg.disc_layers, spectral_norm=cfg.disc_spectral_norm).to(dist.device)
        # beta1 = 0.5: the usual GAN setting (Radford et al., 2016), momentum lags a moving target.
        opt_disc = torch.optim.Adam(disc.parameters(), lr=cfg.lr_disc, betas=(0.5, 0.999))
        disc = wrap_ddp(disc, dist)
    focus = None
    if cfg.method == "adv+kd+feat":
        focus = FeatureFocus(teacher_dim, cfg.focus_momentum, cfg.focus_floor).to(dist.device)
    return DistillModels(teacher, wrap_ddp(student_proj, dist), disc, opt_student, opt_disc, scheduler,
                         focus, steps_per_epoch)


def load_teacher(path: Path, device: str) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher (eval mode, no gradients) and its checkpoint."""
    checkpoint = ckpt_lib.load_checkpoint(path, role="teacher")
    teacher = ckpt_lib.build_from_checkpoint(checkpoint, path).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, checkpoint


def _run(config: Config, data_dir: Path, teacher_path: Path, out_dir: Path, resume: bool, stop_after: int | None,
         dist: DistInfo) -> Path:
    state = load_resume_state(out_dir, LAST_NAME, "student") if resume else None
    if state is not None:
        config = config_lib.from_dict(state["config"])  # a resumed run keeps its own config
    seed_everything(config.seed + dist.rank)
    teacher, teacher_ckpt = load_teacher(teacher_path, dist.device)
    # The student must see exactly the teacher's pixels: same input size and normalisation.
    data = prepare_data(config, data_dir, teacher_ckpt["input_size"], teacher_ckpt["normalization"],
                        unlabelled=uses_unlabelled(config))
    classes, channels = data.info.classes, data.info.channels
    ckpt_lib.check_compatible(teacher_ckpt, classes, channels, teacher_path)
    train_loader = make_train_loader(data.train, config, len(classes), dist)
    val_loader = make_eval_loader(data.val, config.data.batch_size)
    arch_args = student_arch_args(config, len(classes), channels["rgb"])
    m = build_distill_models(config, teacher, teacher.num_features, arch_args, dist, len(train_loader))
    student = unwrap(m.student).student
    history: list[dict[str, float]] = []
    start_epoch, best_acc = 0, -1.0
    if state is not None:
        start_epoch, best_acc, history = _restore(state, m, dist)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config_lib.dump(config, out_dir / "config.yaml")
        log = EpochLog(out_dir, start_epoch)
    epochs = config.distill.epochs
    end_epoch = epochs if stop_after is None else min(stop_after, epochs)

    def checkpoint(metrics: dict[str, Any], train_state: dict[str, Any] | None) -> dict[str, Any]:
        return ckpt_lib.make_checkpoint(
            role="student", arch=config.student.arch, arch_args=arch_args, model=student, classes=classes,
            modalities=["rgb"], channels=channels, input_size=data.input_size, normalization=data.normalization,
            config=config_lib.to_dict(config), metrics={**metrics, "method": config.distill.method,
                                                         "teacher": str(teacher_path)},
            train_state=train_state,
        )

    for epoch in range(start_epoch, end_epoch):
        train_loader.sampler.set_epoch(epoch)
        m.student.train()
        if m.disc is not None:
            m.disc.train()
        sums: dict[str, float] = {}
        bar = tqdm(train_loader, desc=f"distill[{config.distill.method}] {epoch + 1}/{epochs}",
                   disable=not (dist.is_main and sys.stderr.isatty()), leave=False, file=sys.stderr, mininterval=1.0)
        for batch in bar:
            losses = distill_step(batch, m, config.distill, dist.device)
            sums = {k: sums.get(k, 0.0) + v for k, v in losses.items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k in ("loss", "loss_adv", "d_real", "acc")})
        broadcast_buffers(m.student, dist)
        if m.disc is not None:
            broadcast_buffers(m.disc, dist)  # spectral-norm power-iteration vectors
        rngs = gather_rng(dist)
        if dist.is_main:
            val = classification_metrics(*predict_logits(student, val_loader, ("rgb",), dist.device), classes)
            row = {"epoch": epoch + 1, **{f"train_{k}": v / len(train_loader) for k, v in sums.items()},
                   "val_acc": val["accuracy"], "val_macro_f1": val["macro_f1"], "lr": m.scheduler.get_last_lr()[0]}
            history.append(row)
            log.write(history)
            print(f"[distill {config.distill.method}] {format_epoch(row)}", file=sys.stderr)
            metrics = {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "epoch": epoch + 1}
            score = val[config.select_by]  # a key of classification_metrics()
            if score >= best_acc:  # ties go to the later, longer-trained epoch
                best_acc = score
                ckpt_lib.save_checkpoint(checkpoint(metrics, None), out_dir / BEST_NAME)
            ckpt_lib.save_checkpoint(checkpoint(metrics, _train_state(m, epoch + 1, best_acc, history, rngs)),
                                     out_dir / LAST_NAME)
        barrier(dist)
    replica_diff = replica_max_abs_diff(m.student, dist)
    if dist.is_main:
        log.close()
        record_final(out_dir, (BEST_NAME, LAST_NAME),
                     {"replica_max_abs_diff": replica_diff, "world_size": dist.world_size})
    return out_dir / BEST_NAME


def _train_state(m: DistillModels, epoch: int, best_acc: float, history: list[dict[str, float]],
                 rngs: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything besides the student weights that an exact resume needs."""
    student_proj = unwrap(m.student)
    return {
        "projector": student_proj.projector.state_dict() if student_proj.projector is not None else None,
        "disc": unwrap(m.disc).state_dict() if m.disc is not None else None,
        "opt_student": m.opt_student.state_dict(),
        "opt_disc": m.opt_disc.state_dict() if m.opt_disc is not None else None,
        "scheduler": m.scheduler.state_dict(),
        "focus": m.focus.state_dict() if m.focus is not None else None,
        "step": m.step,
        "epoch": epoch, "best_acc": best_acc, "history": history, "rng": rngs,
    }


def _restore(state: dict[str, Any], m: DistillModels, dist: DistInfo) -> tuple[int, float, list[dict[str, float]]]:
    student_proj = unwrap(m.student)
    student_proj.student.load_state_dict(state["state_dict"])
    ts = state["train_state"]
    if student_proj.projector is not None:
        student_proj.projector.load_state_dict(ts["projector"])
    if m.disc is not None:
        unwrap(m.disc).load_state_dict(ts["disc"])
        m.opt_disc.load_state_dict(ts["opt_disc"])
    m.opt_student.load_state_dict(ts["opt_student"])
    m.scheduler.load_state_dict(ts["scheduler"])
    if m.focus is not None:
        m.focus.load_state_dict(ts["focus"])
    m.step = ts.get("step", 0)
    set_rng_state(ts["rng"][min(dist.rank, len(ts["rng"]) - 1)])
    return ts["epoch"], ts["best_acc"], ts["history"]
