"""Data for both recipes: one dataset opened with one set of statistics, training and evaluation loaders."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from mmkd_ros.core.errors import DatasetError
from mmkd_ros.data.dataset import (
    DatasetInfo, EpochSampler, PairDataset, compute_normalization, open_dataset,
)
from mmkd_ros.train.config import Config
from mmkd_ros.train.distributed import Runtime


@dataclass
class DataBundle:
    """The splits of one dataset prepared with one set of statistics."""

    info: DatasetInfo
    normalization: dict[str, dict[str, list[float]]]
    input_size: tuple[int, int]
    train: PairDataset
    val: PairDataset


def prepare_data(config: Config, data_dir: str | Path, input_size: Sequence[int] | None = None,
                 normalization: dict[str, dict[str, list[float]]] | None = None,
                 unlabelled: bool = True) -> DataBundle:
    """Open the dataset; statistics from the train split unless given (a teacher's, when distilling).

    ``unlabelled=False`` leaves training pairs without a label out (validation never uses them).
    """
    info = open_dataset(data_dir, config.data.val_fraction, config.data.test_fraction)
    size = tuple(int(s) for s in (input_size or config.data.input_size))
    if normalization is None:
        normalization = compute_normalization(info, size)
    train = PairDataset(info, "train", size, normalization, augment=config.data.augment,
                        labelled_only=not unlabelled)
    val = PairDataset(info, "val", size, normalization, augment=False)
    if len(train) == 0:
        raise DatasetError(f"{data_dir}: no training pairs after the split; record more scenes (groups)")
    if len(val) == 0:
        print(f"warning: {data_dir} has no validation pairs (too few groups); validating on the train split",
              file=sys.stderr)
        val = PairDataset(info, "train", size, normalization, augment=False, labelled_only=True)
    return DataBundle(info, normalization, size, train, val)  # type: ignore[arg-type]


#: The teacher is "as sure" of the unlabelled pairs as of validation pairs when its mean top
#: probability on them is at least this share of its mean on the validation pairs.
TRUST_RATIO = 0.95


@dataclass
class UnlabelledCap:
    """What :func:`unlabelled_cap` decided, with the figures it decided on (kept in the checkpoint)."""

    share: float  # the cap on the unlabelled pairs' share of the draws
    confidence_unlabelled: float  # the teacher's mean top probability on them
    confidence_val: float  # ... on the labelled validation pairs

    def describe(self) -> str:
        ratio = self.confidence_unlabelled / max(self.confidence_val, 1e-12)
        verdict = ">=" if ratio >= TRUST_RATIO else "<"
        return (f"unlabelled pairs: the teacher's mean confidence {self.confidence_unlabelled:.3f} against "
                f"{self.confidence_val:.3f} on validation (ratio {ratio:.2f} {verdict} {TRUST_RATIO}): they take "
                f"at most {self.share:.0%} of the draws")


def unlabelled_cap(teacher: nn.Module, data: DataBundle, config: Config, device: str) -> UnlabelledCap | None:
    """The share of the draws unlabelled pairs may take, picked from the data before distilling.

    Where the teacher is about as sure of the unlabelled training pairs as of the validation pairs
    (frames like the labelled ones, whose labels nobody recorded), its answers on them are worth
    as much as its answers anywhere, and they may take up to ``data.trusted_unlabelled_share`` of
    the draws; where it is less sure (frames unlike the labelled ones: class boundaries, ground
    nobody annotated), ``data.max_unlabelled_share``. ``None`` where no training pair lacks a label
    or the two caps are equal (nothing to decide).
    """
    low, high = config.data.max_unlabelled_share, config.data.trusted_unlabelled_share
    unlabelled = data.train.labels < 0  # [N]
    if high <= low or not bool(unlabelled.any()):
        return None
    batch = config.data.batch_size
    plain = PairDataset(data.info, "train", data.input_size, data.normalization)  # no augmentation (images cached)
    logits, labels = predict_logits(teacher, make_eval_loader(plain, batch), ("rgb", "nir"), device)
    val_logits, val_labels = predict_logits(teacher, make_eval_loader(data.val, batch), ("rgb", "nir"), device)
    confidence = logits.softmax(1).max(1).values[labels < 0].mean().item()
    val_confidence = val_logits.softmax(1).max(1).values[val_labels >= 0].mean().item()
    trusted = confidence >= TRUST_RATIO * val_confidence
    return UnlabelledCap(high if trusted else low, confidence, val_confidence)


def make_train_loader(dataset: PairDataset, config: Config, num_classes: int, runtime: Runtime,
                      max_unlabelled_share: float | None = None) -> DataLoader:
    """Shuffled loader whose order depends only on (seed, epoch, rank): ``--resume`` replays it exactly.

    ``max_unlabelled_share``: the cap on unlabelled draws (default ``data.max_unlabelled_share``).
    """
    unlabelled_share = float((dataset.labels < 0).float().mean()) if len(dataset) else 0.0
    cap = config.data.max_unlabelled_share if max_unlabelled_share is None else max_unlabelled_share
    if config.data.class_balanced or unlabelled_share > cap:
        # Weighted draws: balanced classes, and/or unlabelled pairs capped at data.max_unlabelled_share.
        sampler: Any = EpochSampler(dataset.labels, num_classes, config.seed, runtime.rank, runtime.world_size,
                                    max_unlabelled_share=cap, balanced=config.data.class_balanced)
    else:
        sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True,
                                     seed=config.seed)
    per_rank = max(1, config.data.batch_size // runtime.world_size)
    return DataLoader(
        dataset, batch_size=per_rank, sampler=sampler, num_workers=config.data.num_workers,
        drop_last=len(sampler) > per_rank,  # a batch of 1 would break BatchNorm
        persistent_workers=False,
    )


def make_eval_loader(dataset: PairDataset, batch_size: int) -> DataLoader:
    """In-order loader; its own generator keeps validation from drawing on the global RNG (which
    would shift the training stream and make a resumed run differ from an uninterrupted one)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                      generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, modalities: Sequence[str],
                   device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, K] and labels [N] (-1 = unlabelled) of a whole loader, model in eval mode."""
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        all_logits.append(model(*[batch[m].to(device) for m in modalities]).float().cpu())
        all_labels.append(batch["label"])
    model.train(was_training)
    return torch.cat(all_logits), torch.cat(all_labels)


