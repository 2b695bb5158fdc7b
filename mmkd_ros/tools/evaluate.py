"""Compare checkpoints on one split in one table: the teacher on RGB+NIR, students on RGB only.

Per model: accuracy, macro-F1, per-class F1, parameters, FLOPs per image
(``torch.utils.flop_counter.FlopCounterMode``, multiply-add = 2 FLOPs) and the median CPU latency
of one image. Writes ``report.md``, ``metrics.json``, a confusion-matrix PNG per model and the
training curves of each run (from its ``metrics.csv``). Every file is written atomically.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmkd_ros.core.artifact import check_compatible, load_checkpoint
from mmkd_ros.core.atomic import atomic_path, check_writable, write_atomic
from mmkd_ros.core.device import resolve_device
from mmkd_ros.core.errors import DatasetError, quiet_native_logs
from mmkd_ros.core.metrics import classification_metrics
from mmkd_ros.data.dataset import PairDataset, open_dataset
from mmkd_ros.models import build_from_checkpoint
from mmkd_ros.train.data import make_eval_loader, predict_logits


def kept_validation(checkpoint: str | Path) -> dict[str, float]:
    """Accuracy and macro-F1 on the validation split of the epoch a run kept, as its training loop
    recorded them: the figures that choose settings (the test split only reports)."""
    recorded = load_checkpoint(checkpoint)["metrics"]
    return {"accuracy": recorded["val_accuracy"], "macro_f1": recorded["val_macro_f1"]}


def evaluate(checkpoints: Sequence[str | Path] | dict[str, str | Path], data_dir: str | Path, out_dir: str | Path,
             split: str = "test", device: str = "cpu", latency_runs: int = 50) -> dict[str, Any]:
    """Evaluate each checkpoint on ``split`` of ``data_dir``; write the report into ``out_dir``.

    ``checkpoints`` is a list of paths (names derived from role and method) or ``{name: path}``.
    Returns the content of ``metrics.json``.
    """
    device = resolve_device(device)
    named = dict(checkpoints) if isinstance(checkpoints, dict) else {_default_name(Path(p)): p for p in checkpoints}
    out_dir = Path(out_dir)
    check_writable(out_dir)
    quiet_native_logs()
    info = open_dataset(data_dir)
    if not info.split(split):
        raise DatasetError(f"{data_dir}: the {split} split is empty; record more scenes or choose --split val")
    # Every checkpoint is checked before the first is measured, and nothing is written before all
    # are measured: a bad input leaves no half-filled report folder.
    loaded = {}
    for name, path in named.items():
        checkpoint = load_checkpoint(path)
        check_compatible(checkpoint, info.classes, info.channels, path)
        loaded[name] = checkpoint
    results: dict[str, Any] = {}
    for name, path in named.items():
        checkpoint = loaded[name]
        model = build_from_checkpoint(checkpoint, path).eval()
        modalities = list(checkpoint["modalities"])
        dataset = PairDataset(info, split, checkpoint["input_size"], checkpoint["normalization"], augment=False,
                              modalities=modalities)
        logits, labels = predict_logits(model.to(device), make_eval_loader(dataset, 64), modalities, device)
        metrics = classification_metrics(logits, labels, info.classes)
        labelled = labels >= 0
        samples = {"labels": labels[labelled].tolist(),  # the same for every model: one split, one order
                   "groups": [r.group for r, keep in zip(dataset.records, labelled.tolist()) if keep]}
        metrics["predictions"] = logits[labelled].argmax(1).tolist()
        cost = model_cost(model.cpu(), checkpoint, latency_runs)
        results[name] = {"checkpoint": str(path), "role": checkpoint["role"], "arch": checkpoint["arch"],
                         "modalities": modalities, "method": checkpoint["metrics"].get("method"),
                         **metrics, **cost}
        print(f"[evaluate] {name}: accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} "
              f"params={cost['params']} flops={cost['flops']} latency_ms={cost['latency_ms']:.2f}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in named.items():
        metrics = results[name]
        _plot_confusion(metrics["confusion"], info.classes, f"{name}: accuracy {metrics['accuracy']:.3f}",
                        out_dir / f"confusion_{_slug(name)}.png")
        curves = Path(path).parent / "metrics.csv"
        if curves.is_file():
            _plot_curves(curves, name, out_dir / f"curves_{_slug(name)}.png")
    report = {"dataset": str(data_dir), "split": split, "classes": info.classes,
              "num_pairs": len(info.split(split)), "samples": samples, "models": results}
    write_atomic(out_dir / "metrics.json", json.dumps(report, indent=2))
    write_atomic(out_dir / "report.md", render_report(report))
    return report


def model_cost(model: nn.Module, checkpoint: dict[str, Any], latency_runs: int = 50) -> dict[str, Any]:
    """Parameters, FLOPs of one image and median CPU latency of one image (batch 1, inference mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = checkpoint["input_size"]
    inputs = [torch.zeros(1, checkpoint["channels"][m], h, w) for m in checkpoint["modalities"]]  # [1, C, h, w]
    model = model.cpu().eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(*inputs)
    timings = []
    with torch.inference_mode():
        for i in range(latency_runs + 5):
            start = time.perf_counter()
            model(*inputs)
            if i >= 5:  # the first calls pay for allocation and kernel selection
                timings.append((time.perf_counter() - start) * 1000.0)
    return {"params": sum(p.numel() for p in model.parameters()), "flops": int(counter.get_total_flops()),
            "latency_ms": statistics.median(timings) if timings else float("nan"),
            "latency_threads": torch.get_num_threads()}


def render_report(report: dict[str, Any]) -> str:
    """The markdown report: one comparison table, then per-class F1."""
    models = report["models"]
    lines = [f"# Evaluation on the {report['split']} split", "",
             f"Dataset `{report['dataset']}`: {report['num_pairs']} pairs, classes {', '.join(report['classes'])}.", "",
             "| model | inputs | accuracy | macro-F1 | params | MFLOPs | CPU latency (ms, median) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in models.items():
        lines.append(f"| {name} | {'+'.join(r['modalities'])} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['params'] / 1e6:.2f} M | {r['flops'] / 1e6:.1f} | {r['latency_ms']:.2f} |")
    lines += ["", "Per-class F1:", "", "| class | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for c in report["classes"]:
        lines.append(f"| {c} | " + " | ".join(f"{r['per_class_f1'][c]:.3f}" for r in models.values()) + " |")
    lines += ["", "Confusion matrices: `confusion_<model>.png`; training curves: `curves_<model>.png`.", ""]
    return "\n".join(lines)


def _default_name(path: Path) -> str:
    checkpoint = load_checkpoint(path)
    method = checkpoint["metrics"].get("method")
    return f"student[{method}]" if checkpoint["role"] == "student" and method else checkpoint["role"]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name).strip("_")


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _plot_confusion(confusion: list[list[int]], classes: Sequence[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = torch.tensor(confusion, dtype=torch.float64)
    rates = matrix / matrix.sum(1, keepdim=True).clamp_min(1)  # row-normalised: recall per class
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    _save_figure(fig, path)


def _plot_curves(metrics_csv: Path, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with metrics_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in rows[0]:
        if key.startswith("train_loss") and all(r.get(key) for r in rows):
            ax_loss.plot(epochs, [float(r[key]) for r in rows], label=key.removeprefix("train_"))
        if key in ("train_acc", "val_acc", "val_macro_f1") and all(r.get(key) for r in rows):
            ax_acc.plot(epochs, [float(r[key]) for r in rows], label=key)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title(f"{name}: losses", fontsize=9)
    ax_loss.legend(fontsize=7)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylim(0, 1)
    ax_acc.set_title(f"{name}: accuracy", fontsize=9)
    ax_acc.legend(fontsize=7)
    _save_figure(fig, path)
