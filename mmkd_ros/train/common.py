"""Pieces both recipes share: data set-up, loaders, schedule, RNG state, metrics, per-epoch logs."""
from __future__ import annotations

import csv
import math
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from mmkd_ros.config import Config
from mmkd_ros.data.dataset import MAX_UNLABELLED_SHARE, DatasetInfo, EpochSampler, PairDataset, compute_normalization, open_dataset
from mmkd_ros.errors import DatasetError
from mmkd_ros.train.distributed import DistInfo


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


def make_train_loader(dataset: PairDataset, config: Config, num_classes: int, dist: DistInfo) -> DataLoader:
    """Shuffled loader whose order depends only on (seed, epoch, rank): ``--resume`` replays it exactly."""
    unlabelled_share = float((dataset.labels < 0).float().mean()) if len(dataset) else 0.0
    if config.data.class_balanced or unlabelled_share > MAX_UNLABELLED_SHARE:
        # Weighted draws: balanced classes, and/or unlabelled pairs capped at MAX_UNLABELLED_SHARE.
        sampler: Any = EpochSampler(dataset.labels, num_classes, config.seed, dist.rank, dist.world_size,
                                    balanced=config.data.class_balanced)
    else:
        sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                     seed=config.seed)
    per_rank = max(1, config.data.batch_size // dist.world_size)
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


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 0, stepped once per optimiser step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in types ``torch.load(weights_only=True)`` accepts."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (rows: true, columns: predicted).

    Unlabelled samples (label -1) are left out. Macro-F1 averages over the classes present in
    the labels or the predictions, so an absent class does not count as a zero.
    """
    keep = labels >= 0
    pred, true = logits[keep].argmax(1), labels[keep]
    k = len(classes)
    confusion = torch.bincount(true * k + pred, minlength=k * k).reshape(k, k)  # [K, K]
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).clamp_min(1)
    recall = tp / confusion.sum(1).clamp_min(1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    present = (confusion.sum(0) + confusion.sum(1)) > 0
    n = int(keep.sum())
    return {
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "macro_f1": float(f1[present].mean()) if bool(present.any()) else float("nan"),
        "per_class_f1": {c: float(f1[i]) for i, c in enumerate(classes)},
        "confusion": confusion.tolist(),
        "num_labelled": n,
    }


class EpochLog:
    """Per-epoch metrics to ``metrics.csv`` (rewritten from the full history: exact after resume)
    and to TensorBoard (``tb/``). Only rank 0 builds one."""

    def __init__(self, run_dir: Path, first_epoch: int) -> None:
        self.csv_path = run_dir / "metrics.csv"
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer: Any = SummaryWriter(str(run_dir / "tb"), purge_step=first_epoch)
        except ImportError:  # tensorboard is optional at run time; the CSV is the record
            self.writer = None

    def write(self, history: list[dict[str, float]]) -> None:
        row = history[-1]
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, int(row["epoch"]))
            self.writer.flush()
        fields = list(dict.fromkeys(k for r in history for k in r))
        tmp = self.csv_path.with_name(self.csv_path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(history)
        os.replace(tmp, self.csv_path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_epoch(row: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def gather_rng(dist: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (rank 0 saves them all, so each rank resumes its own stream)."""
    state = rng_state()
    if not dist.distributed:
        return [state]
    import torch.distributed as torch_dist

    gathered: list[Any] = [None] * dist.world_size
    torch_dist.all_gather_object(gathered, state)
    return gathered


def load_resume_state(out_dir: Path, name: str, role: str) -> dict[str, Any]:
    """The ``last.pt`` of a run, which must carry a training state."""
    from mmkd_ros.errors import CheckpointError
    from mmkd_ros.train.checkpoint import load_checkpoint

    path = out_dir / name
    if not path.is_file():
        raise CheckpointError(f"nothing to resume in {out_dir}: {name} is missing (run without --resume)")
    state = load_checkpoint(path, role=role)
    if "train_state" not in state:
        raise CheckpointError(f"{path} has no training state to resume from")
    return state


def record_final(out_dir: Path, names: Sequence[str], extra: dict[str, Any]) -> None:
    """Add end-of-run facts (e.g. the DDP replica check) to the metrics of a run's checkpoints."""
    from mmkd_ros.train.checkpoint import load_checkpoint, save_checkpoint

    for name in names:
        path = out_dir / name
        if path.is_file():
            checkpoint = load_checkpoint(path)
            checkpoint["metrics"].update(extra)
            save_checkpoint(checkpoint, path)
