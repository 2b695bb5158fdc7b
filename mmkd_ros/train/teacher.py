"""Teacher recipe: supervised training of the two-branch RGB+NIR network with cross-entropy.

AdamW with linear warm-up and cosine decay; label smoothing and class-balanced sampling are
options; validation each epoch; the best checkpoint (validation accuracy) is kept as
``teacher.pt`` and ``last.pt`` carries the optimiser/scheduler/RNG state for ``--resume``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from mmkd_ros import config as config_lib
from mmkd_ros.config import Config
from mmkd_ros.losses import classification_loss
from mmkd_ros.models import build_model
from mmkd_ros.train import checkpoint as ckpt_lib
from mmkd_ros.train.common import (
    EpochLog, classification_metrics, cosine_schedule, format_epoch, make_eval_loader, make_train_loader,
    gather_rng, load_resume_state, predict_logits, prepare_data, record_final, seed_everything,
    set_rng_state,
)
from mmkd_ros.train.distributed import (
    DistInfo, barrier, broadcast_buffers, cleanup_distributed, replica_max_abs_diff, setup_distributed, wrap_ddp,
)

BEST_NAME, LAST_NAME = "teacher.pt", "last.pt"


def teacher_step(batch: dict[str, torch.Tensor], model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, label_smoothing: float, device: str) -> dict[str, float]:
    """One supervised step on a batch of pairs; returns the loss and the batch accuracy."""
    rgb, nir, labels = batch["rgb"].to(device), batch["nir"].to(device), batch["label"].to(device)
    logits = model(rgb, nir)  # [B, K]
    loss = classification_loss(logits, labels, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    labelled = labels >= 0
    correct = (logits.detach().argmax(1) == labels)[labelled].float()  # acc 0 for an all-unlabelled batch
    return {"loss": float(loss.detach()), "acc": float(correct.mean()) if len(correct) else 0.0}


def train_teacher(config: Config, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
                  stop_after: int | None = None) -> Path:
    """Train (or resume) a teacher in ``out_dir``; returns the best checkpoint's path.

    ``stop_after`` ends this call after that many epochs in total (the run stays resumable); it
    exists for time-boxed jobs and for the resume test.
    """
    from mmkd_ros.inference import resolve_device

    dist = setup_distributed(resolve_device(config.device))
    try:
        return _train(config, Path(data_dir), Path(out_dir), resume, stop_after, dist)
    finally:
        cleanup_distributed(dist)


def teacher_arch_args(config: Config, num_classes: int, channels: dict[str, int]) -> dict[str, Any]:
    """Flat builder arguments of the teacher (what the checkpoint stores)."""
    return {"num_classes": num_classes, "rgb_channels": channels["rgb"], "nir_channels": channels["nir"],
            "width": config.teacher.width, "fuse_at": config.teacher.fuse_at, "dropout": config.teacher.dropout}


def _train(config: Config, data_dir: Path, out_dir: Path, resume: bool, stop_after: int | None, dist: DistInfo) -> Path:
    state = load_resume_state(out_dir, LAST_NAME, "teacher") if resume else None
    if state is not None:
        config = config_lib.from_dict(state["config"])  # a resumed run keeps its own config
    seed_everything(config.seed + dist.rank)
    data = prepare_data(config, data_dir, unlabelled=False)  # cross-entropy only: nothing to learn from them
    classes, channels = data.info.classes, data.info.channels
    arch_args = teacher_arch_args(config, len(classes), channels)
    model = build_model(config.teacher.arch, **arch_args).to(dist.device)
    ddp_model = wrap_ddp(model, dist)
    train_loader = make_train_loader(data.train, config, len(classes), dist)
    val_loader = make_eval_loader(data.val, config.data.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.teacher.lr, weight_decay=config.teacher.weight_decay)
    steps = len(train_loader)
    scheduler = cosine_schedule(optimizer, config.teacher.epochs * steps, int(config.teacher.warmup_epochs * steps))
    history: list[dict[str, float]] = []
    start_epoch, best_acc = 0, -1.0
    if state is not None:
        ckpt_lib.check_compatible(state, classes, channels, out_dir / LAST_NAME)
        model.load_state_dict(state["state_dict"])
        train_state = state["train_state"]
        optimizer.load_state_dict(train_state["optimizer"])
        scheduler.load_state_dict(train_state["scheduler"])
        start_epoch, best_acc, history = train_state["epoch"], train_state["best_acc"], train_state["history"]
        set_rng_state(train_state["rng"][min(dist.rank, len(train_state["rng"]) - 1)])
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config_lib.dump(config, out_dir / "config.yaml")
        log = EpochLog(out_dir, start_epoch)
    end_epoch = config.teacher.epochs if stop_after is None else min(stop_after, config.teacher.epochs)

    def checkpoint(metrics: dict[str, Any], train_state: dict[str, Any] | None) -> dict[str, Any]:
        return ckpt_lib.make_checkpoint(
            role="teacher", arch=config.teacher.arch, arch_args=arch_args, model=model, classes=classes,
            modalities=["rgb", "nir"], channels=channels, input_size=data.input_size,
            normalization=data.normalization, config=config_lib.to_dict(config), metrics=metrics,
            train_state=train_state,
        )

    for epoch in range(start_epoch, end_epoch):
        train_loader.sampler.set_epoch(epoch)
        model.train()
        sums = {"loss": 0.0, "acc": 0.0}
        bar = tqdm(train_loader, desc=f"teacher {epoch + 1}/{config.teacher.epochs}", leave=False, file=sys.stderr,
                   disable=not (dist.is_main and sys.stderr.isatty()), mininterval=1.0)
        for batch in bar:
            step = teacher_step(batch, ddp_model, optimizer, scheduler, config.teacher.label_smoothing, dist.device)
            sums = {k: sums[k] + step[k] for k in sums}
            bar.set_postfix(loss=f"{step['loss']:.3f}", acc=f"{step['acc']:.2f}")
        broadcast_buffers(model, dist)
        rngs = gather_rng(dist)
        if dist.is_main:
            val = classification_metrics(*predict_logits(model, val_loader, ("rgb", "nir"), dist.device), classes)
            row = {"epoch": epoch + 1, "train_loss": sums["loss"] / steps, "train_acc": sums["acc"] / steps,
                   "val_acc": val["accuracy"], "val_macro_f1": val["macro_f1"], "lr": scheduler.get_last_lr()[0]}
            history.append(row)
            log.write(history)
            print(f"[teacher] {format_epoch(row)}", file=sys.stderr)
            metrics = {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "epoch": epoch + 1}
            score = val[config.select_by]  # a key of classification_metrics()
            if score >= best_acc:  # ties go to the later, longer-trained epoch
                best_acc = score
                ckpt_lib.save_checkpoint(checkpoint(metrics, None), out_dir / BEST_NAME)
            train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                           "epoch": epoch + 1, "best_acc": best_acc, "history": history, "rng": rngs}
            ckpt_lib.save_checkpoint(checkpoint(metrics, train_state), out_dir / LAST_NAME)
        barrier(dist)
    replica_diff = replica_max_abs_diff(model, dist)
    if dist.is_main:
        log.close()
        record_final(out_dir, (BEST_NAME, LAST_NAME),
                     {"replica_max_abs_diff": replica_diff, "world_size": dist.world_size})
    return out_dir / BEST_NAME
