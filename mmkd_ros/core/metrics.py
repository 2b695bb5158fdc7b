"""Classification metrics shared by training (model selection), evaluation and diagnosis."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
