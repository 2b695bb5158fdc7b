"""Teacher recipe: supervised training of the two-branch RGB+NIR network with cross-entropy.

AdamW with linear warm-up and cosine decay; label smoothing and class-balanced sampling are
options; validation each epoch; the best checkpoint (validation ``select_by``) is kept as ``teacher.pt`` and
``last.pt`` carries the optimiser/scheduler/RNG state for ``--resume``. The epoch loop is
:func:`mmkd_ros.train.loop.fit`, shared with distillation.
"""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmkd_ros.core import artifact
from mmkd_ros.core.atomic import check_writable
from mmkd_ros.core.device import resolve_device
from mmkd_ros.core.errors import quiet_native_logs
from mmkd_ros.losses import classification_loss
from mmkd_ros.models import build_model
from mmkd_ros.train.config import Config
from mmkd_ros.train.data import make_eval_loader, make_train_loader, prepare_data
from mmkd_ros.train.distributed import Runtime
from mmkd_ros.train.loop import (
    RecipeBase, check_validation_split, cosine_schedule, fit, load_resume_state, resumed_config, seed_everything,
)

BEST_NAME = "teacher.pt"


class TeacherRecipe(RecipeBase):
    """The two-branch model, its DDP view, AdamW and the warm-up + cosine schedule."""

    role = "teacher"
    name = "teacher"

    def __init__(self, config: Config, runtime: Runtime, val_loader: DataLoader, describe: dict[str, Any],
                 steps_per_epoch: int) -> None:
        super().__init__(config, runtime, val_loader, describe)
        self.model = build_model(config.teacher.arch, **describe["arch_args"]).to(runtime.device)
        self.model_synced = runtime.wrap(self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.teacher.lr,
                                           weight_decay=config.teacher.weight_decay)
        self.scheduler = cosine_schedule(self.optimizer, config.teacher.epochs * steps_per_epoch,
                                         int(config.teacher.warmup_epochs * steps_per_epoch))

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One supervised step on a batch of pairs; returns the loss and the batch accuracy."""
        rgb, nir, labels = self.inputs(batch)
        logits = self.model_synced(rgb, nir)  # [B, K]
        loss = classification_loss(logits, labels, self.config.teacher.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        correct = (logits.detach().argmax(1) == labels)[labels >= 0].float()  # acc 0 for an all-unlabelled batch
        return {"loss": float(loss.detach()), "acc": float(correct.mean()) if len(correct) else 0.0}

    # -- what the epoch loop needs (mmkd_ros.train.loop.Recipe) --------------------------------
    def train_mode(self) -> None:
        self.model.train()

    def sync(self) -> None:
        self.runtime.broadcast_buffers(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def teacher_arch_args(config: Config, num_classes: int, channels: dict[str, int]) -> dict[str, Any]:
    """Flat builder arguments of the teacher (what the checkpoint stores)."""
    return {"num_classes": num_classes, "rgb_channels": channels["rgb"], "nir_channels": channels["nir"],
            "width": config.teacher.width, "fuse_at": config.teacher.fuse_at, "dropout": config.teacher.dropout,
            "nir_dropout": config.teacher.nir_dropout}


def train_teacher(config: Config, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
                  stop_after: int | None = None, given: Collection[str] = ()) -> Path:
    """Train (or resume) a teacher in ``out_dir``; returns the best checkpoint's path.

    ``stop_after`` ends this call after that many epochs in total (the run stays resumable); it
    exists for time-boxed jobs and for the resume test. ``given``: the config keys the user set
    explicitly; a resumed run refuses those that differ from its recorded config
    (:func:`~mmkd_ros.train.loop.resumed_config`).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    check_writable(out_dir)
    quiet_native_logs()
    with Runtime.start(resolve_device(config.device)) as runtime:
        state = load_resume_state(out_dir, "teacher") if resume else None
        if state is not None:  # a resumed run keeps its own config
            config = resumed_config(state, config, given, "teacher", out_dir)
        check_validation_split(config, data_dir)
        seed_everything(config.seed + runtime.rank)
        data = prepare_data(config, data_dir, unlabelled=False)  # cross-entropy only: nothing to learn from them
        classes, channels = data.info.classes, data.info.channels
        if state is not None:
            artifact.check_compatible(state, classes, channels, out_dir / "last.pt")
        train_loader = make_train_loader(data.train, config, len(classes), runtime)
        describe = {"arch": config.teacher.arch, "arch_args": teacher_arch_args(config, len(classes), channels),
                    "classes": classes, "modalities": ["rgb", "nir"], "channels": channels,
                    "input_size": data.input_size, "normalization": data.normalization}
        recipe = TeacherRecipe(config, runtime, make_eval_loader(data.val, config.data.batch_size), describe,
                               len(train_loader))
        return fit(recipe, train_loader, config, config.teacher.epochs, out_dir, BEST_NAME, runtime, state, stop_after)
