"""Distillation recipe: an RGB-only student learns from a frozen RGB+NIR teacher.

Adversarial distillation (the method): a discriminator ``D`` learns to tell the teacher's fused
RGB+NIR feature (real) from the student's projected RGB feature (fake); the student is trained to
fool it while also fitting the labels::

    L_D       = gan_disc_loss(D(t), D(P(s)))                          (student features detached)
    L_student = w_ce * CE(y, h(s)) + w_adv * gan_gen_loss(D(P(s))) [+ w_kd * KD] [+ w_feat * |P(s) - t|^2]

``distill.method`` picks the terms, a row of :data:`~mmkd_ros.train.config.METHODS`, each term a
class of :mod:`mmkd_ros.train.objectives`. :meth:`DistillRecipe.step` is the whole step on one
screen: (1) update D, (2) update the student. The epoch loop around it is
:func:`mmkd_ros.train.loop.fit`, shared with the teacher.

Training pairs without a label (``-1``) feed every teacher term; cross-entropy skips them.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from mmkd_ros.core import artifact
from mmkd_ros.core.atomic import check_writable
from mmkd_ros.core.device import resolve_device
from mmkd_ros.core.errors import CheckpointError, ConfigError, quiet_native_logs
from mmkd_ros.models import build_from_checkpoint, build_model
from mmkd_ros.train.config import Config, DistillConfig
from mmkd_ros.train.data import make_eval_loader, make_train_loader, prepare_data, unlabelled_cap
from mmkd_ros.train.distributed import Runtime
from mmkd_ros.train.loop import (
    RecipeBase, check_validation_split, cosine_schedule, fit, load_resume_state, resumed_config, seed_everything,
)
from mmkd_ros.train.objectives import (
    Adversarial, StepTensors, build_objectives, method_needs_maps, method_needs_projector, method_needs_teacher,
)

BEST_NAME = "student.pt"


class StudentWithProjector(nn.Module):
    """The student plus (for feature-level methods) its projector, as one module so DDP wraps one thing.

    ``hint`` (the hallucination stream): the index of the student's ``features`` layer whose map
    is adapted by a 1x1 convolution to the teacher's NIR-branch channels. The adapter, like the
    projector, is training only: the deployed student is ``student`` alone.

    forward(rgb [B,C,H,W]) -> (logits [B,K], projected feature [B,D_t] or None, adapted map
    [B,C_t,h,w] or None).
    """

    def __init__(self, student: nn.Module, projector: nn.Module | None,
                 hint: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.student = student
        self.projector = projector
        self.adapter = None
        self._hint_map: torch.Tensor | None = None
        if hint is not None:
            index, student_channels, teacher_channels = hint
            self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
            student.features[index].register_forward_hook(self._keep_hint)

    def _keep_hint(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._hint_map = output

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        features = self.student.forward_features(rgb)  # [B, D_s]
        logits = self.student.forward_head(features)  # [B, K]
        projected = self.projector(features) if self.projector is not None else None  # [B, D_t]
        adapted = None
        if self.adapter is not None:
            adapted, self._hint_map = self.adapter(self._hint_map), None  # [B, C_t, h, w]
        return logits, projected, adapted


def hint_layer(student: nn.Module, teacher: nn.Module, probe: int = 64) -> tuple[int, int, int]:
    """Where the hallucination stream taps the student: (index of its ``features`` layer, its channels,
    the teacher's NIR-branch channels).

    The tap is the last student layer at the stride of the teacher's fusion map (or the last finer
    one, pooled to size in the loss), found by running both on a ``probe`` x ``probe`` image.
    """
    layers = getattr(student, "features", None)
    nir_branch = getattr(teacher, "nir_branch", None)
    if not isinstance(layers, nn.Sequential) or nir_branch is None:
        raise ConfigError(f"the hallucination stream needs a student with staged `features` and a two-branch "
                          f"teacher ({type(student).__name__}, {type(teacher).__name__}); choose a method "
                          "without +hall")
    was_training = student.training
    student.eval()
    with torch.no_grad():
        device = next(student.parameters()).device
        nir_channels = nir_branch.stem[0].in_channels
        target = nir_branch(torch.zeros(1, nir_channels, probe, probe, device=device))  # [1, C_t, h, w]
        rgb_channels = next(m for m in layers.modules() if isinstance(m, nn.Conv2d)).in_channels
        x = torch.zeros(1, rgb_channels, probe, probe, device=device)
        sizes = []
        for layer in layers:
            x = layer(x)
            sizes.append((x.shape[-1], x.shape[1]))
    student.train(was_training)
    finer = [i for i, (size, _) in enumerate(sizes) if size >= target.shape[-1]]
    index = finer[-1] if finer else 0
    return index, sizes[index][1], target.shape[1]


class DistillRecipe(RecipeBase):
    """Teacher (frozen), student (+ projector), the method's objective terms, optimiser and schedule."""

    role = "student"

    def __init__(self, config: Config, runtime: Runtime, val_loader: DataLoader | None, describe: dict[str, Any],
                 teacher: nn.Module, teacher_path: str, steps_per_epoch: int,
                 unlabelled_cap: dict[str, float] | None = None) -> None:
        super().__init__(config, runtime, val_loader, describe)
        cfg = config.distill
        self.teacher, self.teacher_path = teacher, teacher_path
        self.unlabelled_cap = unlabelled_cap  # what data.unlabelled_cap decided, kept with the checkpoint
        self.name = f"distill[{cfg.method}]"
        arch_args = describe["arch_args"]
        self.model = build_model(config.student.arch, **arch_args)  # the student: what is saved and deployed
        projector = None
        if method_needs_projector(cfg.method):
            projector = build_model("projector_linear", in_features=self.model.num_features,
                                    out_features=teacher.num_features, hidden=cfg.projector_hidden)
        self.uses_maps = method_needs_maps(cfg.method)
        hint = hint_layer(self.model, teacher) if self.uses_maps else None
        self.student_proj = StudentWithProjector(self.model, projector, hint).to(runtime.device)
        self.student_synced = runtime.wrap(self.student_proj)
        self.opt_student = torch.optim.AdamW(self.student_proj.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = cosine_schedule(self.opt_student, cfg.epochs * steps_per_epoch,
                                         int(cfg.warmup_epochs * steps_per_epoch))
        self.terms, self.focus = build_objectives(cfg, teacher.num_features, arch_args["num_classes"], runtime,
                                                  steps_per_epoch)
        self.uses_teacher = method_needs_teacher(cfg.method)  # "ce" is the baseline: it never consults the teacher

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One discriminator update (``d_steps`` of them), then one student update; named values out."""
        rgb, nir, labels = self.inputs(batch)
        mixed_labels, mix_weight = None, 1.0
        if self.config.distill.mixup_alpha > 0:
            rgb, nir, mixed_labels, mix_weight = mix_pairs(rgb, nir, labels, self.config.distill)
        teacher_features = teacher_logits = teacher_map = None
        if self.uses_teacher:
            with torch.no_grad():  # the teacher is frozen: no graph, no gradient, ever
                teacher_features, teacher_map = self.teacher.forward_maps(rgb, nir)  # [B, D_t], [B, C_t, h, w]
                teacher_logits = self.teacher.forward_head(teacher_features)  # [B, K]
        # [B, K], [B, D_t] or None, [B, C_t, h, w] or None
        student_logits, student_projected, student_map = self.student_synced(rgb)
        x = StepTensors(labels, student_logits, student_projected, teacher_features, teacher_logits,
                        mixed_labels, mix_weight, student_map, teacher_map if self.uses_maps else None)
        out: dict[str, float] = {}
        if self.focus is not None:
            self.focus.update(teacher_features, student_projected)
            out["focus_r2"] = float(self.focus.r2.mean())  # mean share of the teacher feature the student predicts

        # (1) Update D: teacher features are real, student features fake and detached.
        for term in self.terms:
            if isinstance(term, Adversarial):
                out.update(term.update_discriminator(x))

        # (2) Update the student: every term of the method, D frozen inside its own term.
        loss = None
        for term in self.terms:
            term_loss, values = term.loss(x)
            loss = term_loss if loss is None else loss + term_loss
            out.update(values)
        self.opt_student.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_student.step()
        self.scheduler.step()
        out["loss"] = float(loss.detach())
        correct = (student_logits.detach().argmax(1) == labels)[labels >= 0].float()  # acc 0 for an all-unlabelled batch
        out["acc"] = float(correct.mean()) if len(correct) else 0.0
        return out

    # -- what the epoch loop needs (mmkd_ros.train.loop.Recipe) --------------------------------
    def train_mode(self) -> None:
        self.student_proj.train()
        for term in self.terms:
            term.train_mode()

    def sync(self) -> None:
        self.runtime.broadcast_buffers(self.student_proj)
        for term in self.terms:
            term.sync(self.runtime)

    def state_dict(self) -> dict[str, Any]:
        projector, adapter = self.student_proj.projector, self.student_proj.adapter
        return {"projector": projector.state_dict() if projector is not None else None,
                "adapter": adapter.state_dict() if adapter is not None else None,
                "opt_student": self.opt_student.state_dict(), "scheduler": self.scheduler.state_dict(),
                "focus": self.focus.state_dict() if self.focus is not None else None,
                "terms": {term.name: term.state_dict() for term in self.terms}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.student_proj.projector is not None:
            self.student_proj.projector.load_state_dict(state["projector"])
        if self.student_proj.adapter is not None:
            self.student_proj.adapter.load_state_dict(state["adapter"])
        self.opt_student.load_state_dict(state["opt_student"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.focus is not None:  # runs saved before the step count existed resume with it at 0
            self.focus.load_state_dict({"steps": torch.zeros((), dtype=torch.long), **state["focus"]})
        for term in self.terms:
            term.load_state_dict(state["terms"][term.name])

    def checkpoint_metrics(self) -> dict[str, Any]:
        return {"method": self.config.distill.method, "teacher": self.teacher_path,
                "unlabelled_cap": self.unlabelled_cap}


def mix_pairs(rgb: torch.Tensor, nir: torch.Tensor, labels: torch.Tensor,
              cfg: DistillConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Blend a batch with a shuffled copy of itself, RGB and NIR alike: mixed pairs.

    ``mixup`` blends whole images with weight ``w`` (Zhang et al. ICLR 2018), ``cutmix`` pastes a
    box of the partner covering ``1 - w`` of the image (Yun et al. ICCV 2019); ``w ~ Beta(a, a)``,
    folded to >= 0.5 so each input keeps its own label as the larger share. Returns the mixed
    rgb [B,C,H,W], nir [B,C,H,W], the partners' labels [B] and ``w`` (the exact area for cutmix).
    """
    w = float(torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample())
    w = max(w, 1.0 - w)
    order = torch.randperm(len(rgb), device=rgb.device)  # [B]
    if cfg.mix == "mixup":
        return w * rgb + (1 - w) * rgb[order], w * nir + (1 - w) * nir[order], labels[order], w
    h, wd = rgb.shape[-2:]
    box_h, box_w = round(h * math.sqrt(1 - w)), round(wd * math.sqrt(1 - w))
    top = int(torch.randint(0, h - box_h + 1, ()))
    left = int(torch.randint(0, wd - box_w + 1, ()))
    rows, cols = slice(top, top + box_h), slice(left, left + box_w)
    mixed = []
    for image in (rgb, nir):
        image = image.clone()
        image[..., rows, cols] = image[order][..., rows, cols]  # the clone is still unpermuted here
        mixed.append(image)
    return mixed[0], mixed[1], labels[order], 1.0 - box_h * box_w / (h * wd)


def student_arch_args(config: Config, num_classes: int, rgb_channels: int) -> dict[str, Any]:
    return {"num_classes": num_classes, "in_channels": rgb_channels, "width": config.student.width}


def uses_unlabelled(config: Config) -> bool:
    """Whether training keeps pairs without a label: only a method with a teacher term can use them."""
    return config.data.unlabelled and method_needs_teacher(config.distill.method)


def load_teacher(path: Path, device: str) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher (eval mode, no gradients) and its checkpoint."""
    checkpoint = artifact.load_checkpoint(path, role="teacher")
    teacher = build_from_checkpoint(checkpoint, path).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, checkpoint


def distill(config: Config, data_dir: str | Path, teacher_path: str | Path, out_dir: str | Path,
            resume: bool = False, stop_after: int | None = None, given: Collection[str] = ()) -> Path:
    """Distill a student from ``teacher_path`` on ``data_dir`` into ``out_dir``; returns the best checkpoint.

    ``stop_after`` ends this call after that many epochs in total (the run stays resumable).
    ``given``: the config keys the user set explicitly; a resumed run refuses those that differ
    from its recorded config (:func:`~mmkd_ros.train.loop.resumed_config`).
    """
    data_dir, teacher_path, out_dir = Path(data_dir), Path(teacher_path), Path(out_dir)
    check_writable(out_dir)
    quiet_native_logs()
    with Runtime.start(resolve_device(config.device)) as runtime:
        state = load_resume_state(out_dir, "student") if resume else None
        if state is not None:  # a resumed run keeps its own config
            config = resumed_config(state, config, given, "distill", out_dir)
        if not teacher_path.is_file():
            raise CheckpointError(f"teacher checkpoint {teacher_path} does not exist; pass a teacher.pt "
                                  "(training/train_teacher.py makes one)")
        check_validation_split(config, data_dir)
        seed_everything(config.seed + runtime.rank)
        teacher, teacher_ckpt = load_teacher(teacher_path, runtime.device)
        # The student must see exactly the teacher's pixels: same input size and normalisation.
        data = prepare_data(config, data_dir, teacher_ckpt["input_size"], teacher_ckpt["normalization"],
                            unlabelled=uses_unlabelled(config))
        classes, channels = data.info.classes, data.info.channels
        artifact.check_compatible(teacher_ckpt, classes, channels, teacher_path)
        cap = unlabelled_cap(teacher, data, config, runtime.device)
        if cap is not None and runtime.is_main:
            print(cap.describe(), file=sys.stderr)
        train_loader = make_train_loader(data.train, config, len(classes), runtime,
                                         cap.share if cap is not None else None)
        describe = {"arch": config.student.arch, "arch_args": student_arch_args(config, len(classes), channels["rgb"]),
                    "classes": classes, "modalities": ["rgb"], "channels": channels, "input_size": data.input_size,
                    "normalization": data.normalization}
        recipe = DistillRecipe(config, runtime, make_eval_loader(data.val, config.data.batch_size), describe,
                               teacher, str(teacher_path), len(train_loader),
                               dataclasses.asdict(cap) if cap is not None else None)
        return fit(recipe, train_loader, config, config.distill.epochs, out_dir, BEST_NAME, runtime, state, stop_after)
