"""Classification metrics shared by training (model selection), evaluation and diagnosis."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


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


def weighted_macro_f1(pred: np.ndarray, true: np.ndarray, k: int, weights: np.ndarray | None = None) -> float:
    """Macro-F1 of labelled samples, each counted ``weights[i]`` times (a bootstrap draw); same rule
    as :func:`classification_metrics`: classes absent from labels and predictions do not count."""
    confusion = np.bincount(true * k + pred, weights=weights, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    precision = tp / np.maximum(predicted, 1e-12)
    recall = tp / np.maximum(actual, 1e-12)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    present = (predicted + actual) > 0
    return float(f1[present].mean()) if present.any() else float("nan")


def group_bootstrap(groups: Sequence[str], statistic: Callable[[np.ndarray], float], rounds: int = 1000,
                    level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic(weights)`` when whole groups (images, blocks, bags) are
    drawn with replacement: ``weights[i]`` = how often sample i's group was drawn.

    Frames of one group are near-duplicates, so resampling frames would understate the spread;
    with few groups (say 3 validation blocks) the interval is coarse, and says so by its width.
    """
    names, index = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        counts = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
        values.append(statistic(counts[index].astype(float)))
    low, high = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
