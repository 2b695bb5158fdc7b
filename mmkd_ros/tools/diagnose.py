"""Before distilling for hours: does NIR help here, and how much of it can an RGB-only model see?

Runs on an extracted pair dataset (its train and val splits) with small CNNs on small images, a
couple of minutes on a CPU for a thousand pairs. Four measurements:

1. **NIR predictability**: a small CNN predicts the NIR image (at 1/4 of ``size``) from RGB;
   R^2 on validation = the share of NIR pixel variance that RGB explains. Cross-fitted: two models,
   each trained on half of the train groups, predict the other half (so measurement 3 sees honest
   estimates on train too); validation is predicted by their average.
2. **What NIR adds**: two classifiers of the same architecture, RGB only vs RGB+NIR (channels
   concatenated at the input), same seeds, same steps, cross-entropy weighted by inverse class
   frequency (real recordings are mostly one class); accuracy and macro-F1 on validation, mean
   over seeds, and per-class F1.
3. **RGB + predicted NIR**: the same classifier fed RGB and the NIR estimate of measurement 1. It
   is an RGB-only model (the estimate is a function of RGB) that was told what NIR looks like:
   the share of the NIR gap it closes is a measured example of what NIR-derived supervision can
   give an RGB model (the idea of "hallucination" networks, Hoffman et al., CVPR 2016).
4. With ``teacher``: how well a small RGB-only CNN predicts the teacher's pooled features (R^2 on
   validation), i.e. how much of the teacher's representation is reachable from RGB at all.

What the numbers mean (and do not). A student sees RGB only; information in NIR that RGB does not
carry is out of reach of any distillation. Distillation can only help an RGB model *learn* what
RGB already contains (better targets than labels, on limited data). So: a small gap means there
is little to distil; a large gap with low NIR predictability means most of the gap is information
RGB lacks; a large gap with high predictability is the case where distillation can pay. None of
these is a bound: the probes are small models on few data, and a stronger RGB model may close
part of the gap on its own. A gain below twice the larger of the seed-to-seed spread and the
sampling error of the validation accuracy is reported as noise.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmkd_ros.core import preprocess
from mmkd_ros.core.artifact import check_compatible, load_checkpoint
from mmkd_ros.core.errors import DatasetError, quiet_native_logs
from mmkd_ros.core.metrics import classification_metrics
from mmkd_ros.data.dataset import DatasetInfo, PairRecord, load_resized, open_dataset
from mmkd_ros.models import build_from_checkpoint

NIR_REDUCTION = 4  # the NIR target of measurement 1 is predicted at size / 4 per axis


@dataclass(frozen=True)
class DiagnoseOptions:
    """Sizes and budgets of the probes (defaults: about two minutes for 1000 pairs on 2 cores)."""

    size: int = 32  # RGB/NIR are resized to size x size
    steps: int = 300  # optimizer steps per model
    batch_size: int = 64
    lr: float = 3e-3
    seeds: int = 3  # classifier seeds (paired: same seed for each input variant)
    max_train: int = 3000  # pairs drawn at random from train (all when fewer)
    max_val: int = 3000
    width: int = 16  # channels of the probe CNNs' first layer
    # The probes are too small to gain from intra-op threads; on a shared CPU, extra threads
    # only contend (measured: 2 threads on 2 busy cores made a probe step 3x slower than 1).
    threads: int = 1

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % NIR_REDUCTION:
            raise ValueError(f"size must be >= 8 and a multiple of {NIR_REDUCTION}, got {self.size}")
        if min(self.steps, self.batch_size, self.seeds, self.max_train, self.max_val,
               self.threads) < 1:
            raise ValueError("steps, batch_size, seeds, max_train, max_val and threads must be >= 1")


@dataclass
class Diagnosis:
    """All measured numbers; :func:`render` turns them into plain words."""

    dataset: str
    classes: list[str]
    channels: dict[str, int]
    counts: dict[str, int]  # pairs used: train, val, labelled_train, labelled_val
    val_per_class: dict[str, int]  # labelled validation pairs per class
    nir_r2: float  # measurement 1, pixel R^2 of NIR at size/4 on validation
    nir_r2_frame_mean: float  # R^2 of each frame's mean NIR (overall brightness only)
    classifiers: dict[str, dict[str, Any]] = field(default_factory=dict)  # rgb / rgb_nir / rgb_nirhat
    teacher: dict[str, Any] | None = None

    def gap(self, metric: str, variant: str = "rgb_nir") -> float:
        """Mean over seeds of ``metric(variant) - metric(rgb)`` (paired by seed)."""
        return float(np.mean(self.paired(metric, variant)))

    def paired(self, metric: str, variant: str) -> list[float]:
        ours, base = self.classifiers[variant]["runs"], self.classifiers["rgb"]["runs"]
        return [a[metric] - b[metric] for a, b in zip(ours, base)]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "classes": self.classes, "channels": self.channels,
                "counts": self.counts, "val_per_class": self.val_per_class, "nir_r2": self.nir_r2,
                "nir_r2_frame_mean": self.nir_r2_frame_mean, "classifiers": self.classifiers,
                "teacher": self.teacher}


# --------------------------------------------------------------------------------------------
# Probe models: deliberately small and identical across the variants they compare.


def probe_body(in_channels: int, width: int) -> nn.Sequential:
    """Three conv blocks, [B, C, s, s] -> [B, 2*width, s/4, s/4].

    Strided from the first layer: about 1 M multiply-adds per 32x32 sample at width 16, so a
    probe trains in seconds on a busy CPU core.
    """
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]

    return nn.Sequential(*block(in_channels, width, 2), *block(width, 2 * width, 2),
                         *block(2 * width, 2 * width, 1))


class ProbeVector(nn.Module):
    """Body, global average pool, linear: [B, C, s, s] -> [B, out] (class logits or features)."""

    def __init__(self, in_channels: int, width: int, out: int) -> None:
        super().__init__()
        self.body = probe_body(in_channels, width)
        self.head = nn.Linear(2 * width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))  # [B, out]


class ProbeMap(nn.Module):
    """Body and a 1x1 conv: [B, C, s, s] -> a map [B, out, s/4, s/4] (the NIR estimate)."""

    def __init__(self, in_channels: int, width: int, out: int) -> None:
        super().__init__()
        self.body = probe_body(in_channels, width)
        self.head = nn.Conv2d(2 * width, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # [B, out, s/4, s/4]


def fit(build: Callable[[], nn.Module], inputs: torch.Tensor, targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], options: DiagnoseOptions,
        seed: int, spatial_target: bool) -> nn.Module:
    """Build a model under ``seed`` and train it: a fixed budget of AdamW steps with cosine decay,
    random flips (applied to a spatial target too). No early stopping on validation: that would
    flatter every probe."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # initialisation: the same for every input variant of one seed
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, options.steps)
    model.train()
    n = inputs.shape[0]
    batch = min(options.batch_size, n)
    for _ in range(options.steps):
        index = torch.randint(0, n, (batch,), generator=generator)
        x, y = inputs[index], targets[index]  # [b, C, s, s], [b, ...]
        for dim in (2, 3):
            if bool(torch.rand((), generator=generator) < 0.5):
                x = x.flip(dim)
                y = y.flip(dim) if spatial_target else y
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([model(inputs[i:i + batch]) for i in range(0, inputs.shape[0], batch)])


def r_squared(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - SSE/SST over all elements, SST around the target's mean per channel (dim 1)."""
    dims = [d for d in range(target.dim()) if d != 1]
    sst = ((target - target.mean(dim=dims, keepdim=True)) ** 2).sum()
    return float(1.0 - ((pred - target) ** 2).sum() / sst.clamp_min(1e-12))


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class _Split:
    rgb: torch.Tensor  # [N, Cr, s, s], standardised with train statistics
    nir: torch.Tensor  # [N, Cn, s, s], standardised
    labels: torch.Tensor  # [N], -1 = unlabelled
    groups: list[str]
    records: list[PairRecord]


def _sample(records: list[PairRecord], limit: int, seed: int) -> list[PairRecord]:
    """At most ``limit`` records at random, labelled ones first (they serve every measurement,
    unlabelled ones only the NIR regression); the dataset order is kept."""
    if len(records) <= limit:
        return records
    order = np.random.default_rng(seed).permutation(len(records))
    order = sorted(order, key=lambda i: records[i].label < 0)  # stable: labelled first
    return [records[i] for i in sorted(order[:limit])]


def _load_split(info: DatasetInfo, records: list[PairRecord], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_resized(info, records, (size, size))
    return torch.stack(tensors["rgb"]), torch.stack(tensors["nir"])  # [N, C, s, s] in [0, 1]


def load_splits(info: DatasetInfo, options: DiagnoseOptions) -> tuple[_Split, _Split]:
    """Train and val pairs (sampled down to the limits), standardised with train statistics."""
    train_records = _sample(info.split("train"), options.max_train, 0)
    val_records = _sample(info.split("val"), options.max_val, 1)
    if len(train_records) < 2 or not val_records:
        raise DatasetError(f"{info.root}: the diagnostic needs train and val pairs, found "
                           f"{len(train_records)} train and {len(val_records)} val; give the "
                           "dataset a val split (manifest split column, or more groups)")
    train_rgb, train_nir = _load_split(info, train_records, options.size)
    val_rgb, val_nir = _load_split(info, val_records, options.size)
    out = []
    for records, rgb, nir in ((train_records, train_rgb, train_nir), (val_records, val_rgb, val_nir)):
        standard = []
        for x, ref in ((rgb, train_rgb), (nir, train_nir)):
            mean = ref.mean(dim=(0, 2, 3), keepdim=True)
            std = ref.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
            standard.append((x - mean) / std)
        labels = torch.tensor([r.label for r in records], dtype=torch.long)
        out.append(_Split(standard[0], standard[1], labels, [r.group for r in records], records))
    return out[0], out[1]


def two_folds(groups: Sequence[str]) -> np.ndarray:
    """Fold (0/1) per item, whole groups per fold (by group hash order); a single group is cut
    into its first and second half, the best that can be done without groups."""
    unique = sorted(set(groups), key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    if len(unique) >= 2:
        fold_of = {g: k % 2 for k, g in enumerate(unique)}
        return np.array([fold_of[g] for g in groups])
    return (np.arange(len(groups)) >= len(groups) // 2).astype(int)


# --------------------------------------------------------------------------------------------
# The measurements


def nir_predictability(train: _Split, val: _Split, options: DiagnoseOptions
                       ) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Measurement 1. Returns (pixel R^2, frame-mean R^2, NIR estimate on train, on val), the
    estimates upsampled to ``size`` so they can feed a classifier like real NIR."""
    def low(nir: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(nir, NIR_REDUCTION)  # [N, Cn, s/4, s/4]

    folds = two_folds(train.groups)
    channels = train.nir.shape[1]
    train_hat = torch.zeros_like(low(train.nir))
    val_hat = torch.zeros_like(low(val.nir))
    for fold in (0, 1):
        fit_idx = torch.from_numpy(np.flatnonzero(folds == fold))
        out_idx = torch.from_numpy(np.flatnonzero(folds != fold))
        model = fit(lambda: ProbeMap(train.rgb.shape[1], options.width, channels),
                    train.rgb[fit_idx], low(train.nir[fit_idx]), F.mse_loss, options,
                    seed=1000 + fold, spatial_target=True)
        train_hat[out_idx] = predict(model, train.rgb[out_idx])
        val_hat += predict(model, val.rgb) / 2
    target = low(val.nir)
    pixel_r2 = r_squared(val_hat, target)
    frame_r2 = r_squared(val_hat.mean(dim=(2, 3)), target.mean(dim=(2, 3)))
    size = train.nir.shape[-2:]
    return (pixel_r2, frame_r2, F.interpolate(train_hat, size=size, mode="bilinear"),
            F.interpolate(val_hat, size=size, mode="bilinear"))


def classifier_runs(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
                    val_y: torch.Tensor, classes: list[str], options: DiagnoseOptions) -> dict[str, Any]:
    """Measurement 2/3 for one input variant: ``seeds`` probe classifiers, metrics on val.

    Cross-entropy weighted by inverse class frequency, so rare classes count (the dataset may be
    mostly one class); accuracy and macro-F1 are reported, per-class F1 averaged over seeds.
    """
    counts = torch.bincount(train_y, minlength=len(classes)).double()
    weights = torch.where(counts > 0, counts.sum() / (len(classes) * counts.clamp_min(1)),
                          torch.zeros_like(counts)).float()  # [K]
    runs = []
    for seed in range(options.seeds):
        model = fit(lambda: ProbeVector(train_x.shape[1], options.width, len(classes)), train_x, train_y,
                    lambda logits, y: F.cross_entropy(logits, y, weight=weights), options,
                    seed=seed, spatial_target=False)
        metrics = classification_metrics(predict(model, val_x), val_y, classes)
        runs.append({"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                     "per_class_f1": metrics["per_class_f1"]})
    return {"runs": runs,
            "accuracy": float(np.mean([r["accuracy"] for r in runs])),
            "macro_f1": float(np.mean([r["macro_f1"] for r in runs])),
            "per_class_f1": {c: float(np.mean([r["per_class_f1"][c] for r in runs])) for c in classes}}


def teacher_predictability(path: str | Path, info: DatasetInfo, train: _Split, val: _Split,
                           options: DiagnoseOptions) -> dict[str, Any]:
    """Measurement 4: the teacher's pooled features on train/val (its own input size and
    normalisation, i.e. its inference preprocessing), then an RGB-only probe regresses them."""
    checkpoint = load_checkpoint(path, role="teacher")
    check_compatible(checkpoint, info.classes, info.channels, path)
    model = build_from_checkpoint(checkpoint, path).eval()
    size = tuple(int(s) for s in checkpoint["input_size"])
    norm = checkpoint["normalization"]

    @torch.no_grad()
    def features(split: _Split) -> tuple[torch.Tensor, torch.Tensor]:
        loaded = load_resized(info, split.records, size)
        feats, logits = [], []
        for i in range(0, len(split.records), 128):
            inputs = [preprocess.normalize(torch.stack(loaded[m][i:i + 128]), **norm[m])
                      for m in checkpoint["modalities"]]  # [b, C, h, w] per modality
            f = model.forward_features(*inputs)  # [b, D]
            feats.append(f)
            logits.append(model.forward_head(f))
        return torch.cat(feats), torch.cat(logits)

    train_f, _ = features(train)
    val_f, val_logits = features(val)
    mean, std = train_f.mean(0, keepdim=True), train_f.std(0, keepdim=True).clamp_min(1e-6)
    probe = fit(lambda: ProbeVector(train.rgb.shape[1], options.width, train_f.shape[1]), train.rgb,
                (train_f - mean) / std, F.mse_loss, options, seed=2000, spatial_target=False)
    metrics = classification_metrics(val_logits, val.labels, info.classes)
    return {"path": str(path), "feature_dim": int(train_f.shape[1]),
            "feature_r2": r_squared(predict(probe, val.rgb)[:, :, None], ((val_f - mean) / std)[:, :, None]),
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def diagnose(data_dir: str | Path, options: DiagnoseOptions = DiagnoseOptions(),
             teacher: str | Path | None = None, log: Callable[[str], None] = lambda _: None) -> Diagnosis:
    """Run the measurements on ``data_dir`` (an extracted pair dataset); see the module doc.

    Uses ``options.threads`` torch threads while it runs and restores the caller's setting.
    """
    quiet_native_logs()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        return _diagnose(data_dir, options, teacher, log)
    finally:
        torch.set_num_threads(previous_threads)


def _diagnose(data_dir: str | Path, options: DiagnoseOptions, teacher: str | Path | None,
              log: Callable[[str], None]) -> Diagnosis:
    info = open_dataset(data_dir)
    if teacher is not None:  # a wrong --teacher is refused now, not after minutes of probes
        check_compatible(load_checkpoint(teacher, role="teacher"), info.classes, info.channels, teacher)
    train, val = load_splits(info, options)
    log(f"{len(train.records)} train / {len(val.records)} val pairs at {options.size}x{options.size}")
    counts = {"train": len(train.records), "val": len(val.records),
              "labelled_train": int((train.labels >= 0).sum()),
              "labelled_val": int((val.labels >= 0).sum())}
    log("NIR from RGB: two cross-fitted regressors")
    pixel_r2, frame_r2, train_hat, val_hat = nir_predictability(train, val, options)
    val_per_class = {c: int((val.labels == k).sum()) for k, c in enumerate(info.classes)}
    result = Diagnosis(str(data_dir), info.classes, info.channels, counts, val_per_class,
                       pixel_r2, frame_r2)
    train_l, val_l = train.labels >= 0, val.labels >= 0
    present = torch.unique(train.labels[train_l])
    if present.numel() >= 2 and bool(val_l.any()):
        variants = {"rgb": (train.rgb, val.rgb),
                    "rgb_nir": (torch.cat([train.rgb, train.nir], 1), torch.cat([val.rgb, val.nir], 1)),
                    "rgb_nirhat": (torch.cat([train.rgb, train_hat], 1), torch.cat([val.rgb, val_hat], 1))}
        for name, (tx, vx) in variants.items():
            log(f"classifier on {name}: {options.seeds} seed(s)")
            result.classifiers[name] = classifier_runs(tx[train_l], train.labels[train_l], vx[val_l],
                                                       val.labels[val_l], info.classes, options)
    if teacher is not None:
        log("teacher features from RGB")
        result.teacher = teacher_predictability(teacher, info, train, val, options)
    return result


# --------------------------------------------------------------------------------------------
# Plain words


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def render(d: Diagnosis) -> str:
    """The diagnosis as a short report in plain words (numbers first, then what they mean)."""
    c = d.counts
    lines = [f"Diagnosis of {d.dataset}",
             f"  pairs: {c['train']} train ({c['labelled_train']} labelled), {c['val']} val "
             f"({c['labelled_val']} labelled); classes: {', '.join(d.classes)}; "
             f"channels: rgb {d.channels['rgb']}, nir {d.channels['nir']}",
             "",
             f"NIR from RGB: a small CNN explains {100 * d.nir_r2:.0f}% of the NIR pixel variance on "
             f"validation (R^2 = {d.nir_r2:.2f}; each frame's mean NIR level: R^2 = "
             f"{d.nir_r2_frame_mean:.2f})."]
    if not d.classifiers:
        lines.append("Classification: skipped (needs labelled pairs of >= 2 classes in train and "
                     "labelled pairs in val).")
    else:
        k = len(d.classifiers["rgb"]["runs"])
        lines += ["", f"Classification on validation (same small CNN, mean of {k} seeds):",
                  f"  {'input':<22}{'accuracy':>10}{'macro-F1':>10}"]
        names = {"rgb": "RGB only", "rgb_nir": "RGB + NIR", "rgb_nirhat": "RGB + NIR estimate"}
        for key, label in names.items():
            m = d.classifiers[key]
            lines.append(f"  {label:<22}{100 * m['accuracy']:>9.1f}%{100 * m['macro_f1']:>9.1f}%")
        lines += ["", f"  per-class F1 {'RGB':>8}{'RGB+NIR':>9}{'change':>8}{'val pairs':>11}"]
        for cls in d.classes:
            n = d.val_per_class[cls]
            if not n:
                lines.append(f"  {cls:<12}{'-':>8}{'-':>9}{'':>8}{0:>11}  (not in validation)")
                continue
            a, b = d.classifiers["rgb"]["per_class_f1"][cls], d.classifiers["rgb_nir"]["per_class_f1"][cls]
            lines.append(f"  {cls:<12}{100 * a:>8.1f}{100 * b:>9.1f}{_pts(b - a):>8}{n:>11}")
        lines += [""] + verdict(d)
    if d.teacher is not None:
        t = d.teacher
        lines += ["", f"Teacher {t['path']}: validation accuracy {100 * t['accuracy']:.1f}%, "
                      f"macro-F1 {100 * t['macro_f1']:.1f}%. A small RGB-only CNN predicts "
                      f"{100 * max(0.0, t['feature_r2']):.0f}% of the variance of its "
                      f"{t['feature_dim']}-d features (R^2 = {t['feature_r2']:.2f}): the part of the "
                      "teacher's representation a student can imitate from RGB, at this size."]
    return "\n".join(lines)


def verdict(d: Diagnosis) -> list[str]:
    """What the classifier numbers say, with their noise, in a few sentences."""
    gap_acc, gap_f1 = d.gap("accuracy"), d.gap("macro_f1")
    spread = float(np.std(d.paired("macro_f1", "rgb_nir"))) if len(d.classifiers["rgb"]["runs"]) > 1 else math.nan
    n_val = d.counts["labelled_val"]
    p = d.classifiers["rgb"]["accuracy"]
    sampling = math.sqrt(max(p * (1 - p), 1e-4) / max(1, n_val))  # binomial s.e. of one accuracy
    noise = max(2 * sampling, 2 * spread if not math.isnan(spread) else 0.0)
    spread_text = ("one seed, so no seed-to-seed spread" if math.isnan(spread) else
                   f"seed-to-seed spread of the macro-F1 gain: {100 * spread:.1f} points")
    lines = [f"NIR adds {_pts(gap_acc)} points of accuracy and {_pts(gap_f1)} of macro-F1 here "
             f"({spread_text}; sampling error of one accuracy on {n_val} validation pairs: about "
             f"{100 * sampling:.1f} points, more when frames overlap). Gains below twice the larger "
             f"of the two (here {100 * noise:.1f} points) are noise."]
    if gap_f1 <= noise and gap_acc <= noise:
        lines.append("That is within the noise: with small models NIR does not measurably help on "
                     "this data, so an RGB+NIR teacher has little to pass on. Expect a distilled "
                     "student to match an RGB-only baseline, not beat it.")
        return lines
    metric = "macro_f1" if gap_f1 >= gap_acc else "accuracy"
    closed = d.gap(metric, "rgb_nirhat") / d.gap(metric)
    closes = f"closes {100 * closed:.0f}%" if closed > 0 else f"closes none ({100 * closed:.0f}%)"
    lines.append(f"RGB predicts {100 * max(0.0, d.nir_r2):.0f}% of the NIR variance, and an RGB-only "
                 f"model fed its own NIR estimate {closes} of the {metric.replace('_', '-')} gap.")
    if closed >= 0.25:
        lines.append("So part of what NIR adds can be learnt from RGB alone, and that part is within "
                     "reach of distillation; the rest may be information RGB lacks.")
    elif d.nir_r2 < 0.5:
        lines.append("Less than half of the NIR signal can be predicted from the RGB image: a "
                     "student that sees RGB only cannot get the rest back from any teacher. Expect "
                     "distillation to recover little of the gap; if the whole gap matters, keep "
                     "the NIR camera on the robot.")
    else:
        lines.append("Most of the NIR signal is predictable from RGB, yet the estimate did not help "
                     "the classifier: what separates the classes seems to be the part of NIR that "
                     "RGB does not predict. Expect little from distillation (a teacher's features "
                     "may carry more than NIR pixels: run with --teacher to see how much of them "
                     "RGB predicts).")
    return lines
