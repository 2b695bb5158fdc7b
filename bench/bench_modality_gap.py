#!/usr/bin/env python3
"""Is there a modality gap in the synthetic demo bag? RGB+NIR vs RGB-only classifiers.

For each seed: write the demo bag (default SyntheticConfig: 90 s, 640x480, 15 Hz), extract pairs
(every 3rd), then 5-fold cross-validation grouped by scene (a scene never sits in both train and
test; folds stratified by class; 80/20 like a train/test split of the demo) of two classifier
families, each once on RGB and once on RGB+NIR with the same architecture:
- multinomial logistic regression on per-image colour/texture statistics (NIR adds its own
  statistics and NIR/visible ratios);
- a small CNN (4 conv layers) on 64x64 images (NIR as a 4th input channel).
The distillation story needs RGB+NIR >= 95 %, RGB-only clearly lower but above chance on the
RGB-ambiguous classes (there are cues a student can learn).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]

from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.data.image_files import read_image_file
from mmkd_ros.data.manifest import read_manifest
from mmkd_ros.sim.synthetic import CLASSES, SyntheticConfig, write_bag
from report_section import replace_section

TITLE = "Modality gap on the synthetic demo bag (RGB+NIR vs RGB-only)"
GREENS = ("artificial_turf", "green_paint", "live_vegetation")


def load_pairs(workdir: Path, config: SyntheticConfig, every: int) -> dict[str, np.ndarray]:
    """Write (once) the bag of ``config``, extract it, load small copies of the images."""
    tag = f"seed{config.seed}_{config.width}x{config.height}_{config.duration_s:g}s"
    bag = workdir / f"demo_{tag}"
    if not bag.exists():
        write_bag(bag, config)
    pairs = workdir / f"pairs_{tag}_every{every}"
    extract_bags([bag], pairs, BagOptions(every=every), progress=False)
    rows = read_manifest(pairs)
    feats_rgb, feats_all, images, labels, groups = [], [], [], [], []
    for row in rows:
        rgb = cv2.resize(read_image_file(pairs / row["rgb"]), (160, 120),
                         interpolation=cv2.INTER_AREA)  # [120, 160, 3] uint8
        nir = cv2.resize(read_image_file(pairs / row["nir"]), (160, 120),
                         interpolation=cv2.INTER_AREA)[:, :, None]  # [120, 160, 1]
        feats_rgb.append(rgb_features(rgb))
        feats_all.append(np.concatenate([rgb_features(rgb), nir_features(rgb, nir)]))
        small_rgb = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)  # [64, 64, 3]
        small_nir = cv2.resize(nir, (64, 64), interpolation=cv2.INTER_AREA)  # [64, 64]
        small = np.concatenate([small_rgb, small_nir[:, :, None]], axis=2)  # [64, 64, 4]
        images.append(small)
        labels.append(CLASSES.index(row["label"]))
        groups.append(row["group"])
    return {"rgb_features": np.array(feats_rgb), "all_features": np.array(feats_all),
            "images": np.array(images), "labels": np.array(labels), "groups": np.array(groups)}


def rgb_features(rgb: np.ndarray) -> np.ndarray:
    """Colour (linearised means, spread, chromaticity) and texture (band-pass energies)."""
    linear = (rgb.astype(np.float32) / 255.0) ** 2.2  # undo the camera gamma
    total = linear.sum(axis=2) + 1e-3
    luma = rgb.astype(np.float32).mean(axis=2) / 255.0
    feats = [linear[:, :, c].mean() for c in range(3)] + [linear[:, :, c].std() for c in range(3)]
    feats += [(linear[:, :, c] / total).mean() for c in range(3)]
    feats += [(linear[:, :, c] / total).std() for c in range(3)]
    feats += list(np.percentile(luma, [10, 50, 90]))
    return np.array(feats + texture_features(luma), np.float32)


def nir_features(rgb: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NIR level and texture, plus NIR/visible ratios (the red edge: NDVI-like)."""
    linear = (rgb.astype(np.float32) / 255.0) ** 2.2
    scale = 65535.0 if nir.dtype == np.uint16 else 255.0
    n = nir[:, :, 0].astype(np.float32) / scale
    ndvi = (n - linear[:, :, 0]) / (n + linear[:, :, 0] + 1e-3)
    ratio = n / (linear[:, :, 1] + 1e-3)  # NIR / green per pixel
    feats = [n.mean(), n.std(), *np.percentile(n, [10, 50, 90])]
    feats += [n.mean() / (linear[:, :, 1].mean() + 1e-3), *np.log(np.percentile(ratio, [25, 50, 75]) + 1e-3),
              ndvi.mean(), ndvi.std(), *np.percentile(ndvi, [10, 25, 50, 75, 90])]
    return np.array(feats + texture_features(n), np.float32)


def texture_features(gray: np.ndarray) -> list[float]:
    """Energy in three spatial-frequency bands, absolute and relative to brightness."""
    blur1, blur3, blur8 = (cv2.GaussianBlur(gray, (0, 0), s) for s in (1, 3, 8))
    bands = [(gray - blur1).std(), (blur1 - blur3).std(), (blur3 - blur8).std()]
    return bands + [b / (gray.mean() + 1e-3) for b in bands]


def grouped_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per sample: the groups of each class dealt round-robin over the folds."""
    rng = np.random.default_rng(seed)
    fold_of_group = {}
    for label in np.unique(labels):
        names = sorted(set(groups[labels == label]))
        for k, name in enumerate(rng.permutation(names)):
            fold_of_group[name] = k % folds
    return np.array([fold_of_group[g] for g in groups])


def logistic_regression(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                        seed: int) -> np.ndarray:
    """Multinomial logistic regression with L2 (full-batch L-BFGS); returns test predictions."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.tensor((train_x - mean) / std)
    y = torch.tensor(train_y)
    model = nn.Linear(x.shape[1], len(CLASSES))
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=300,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + 1e-3 * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return model(torch.tensor((test_x - mean) / std)).argmax(1).numpy()


def small_cnn(in_channels: int) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(in_channels, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                         *block(32, 64), nn.MaxPool2d(2), *block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(CLASSES)))


def train_cnn(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int,
              epochs: int) -> np.ndarray:
    """Train the small CNN (flip augmentation, AdamW) and return test predictions."""
    torch.manual_seed(seed)
    x = torch.tensor(train_x, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0  # [N, C, 64, 64]
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True) + 1e-6
    x = (x - mean) / std
    y = torch.tensor(train_y)
    model = small_cnn(x.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            inputs = x[batch]
            if torch.rand(()) < 0.5:
                inputs = inputs.flip(3)
            if torch.rand(()) < 0.5:
                inputs = inputs.flip(2)
            loss = F.cross_entropy(model(inputs), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test = (torch.tensor(test_x, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0 - mean) / std
    with torch.no_grad():
        return model(test).argmax(1).numpy()


def evaluate(data: dict[str, np.ndarray], seed: int, folds: int,
             epochs: int) -> dict[str, np.ndarray]:
    """Out-of-fold predictions of every (model, modality) combination."""
    fold = grouped_folds(data["labels"], data["groups"], folds, seed)
    y = data["labels"]
    predictions = {key: np.zeros_like(y) for key in
                   ("lr_rgb", "lr_rgbnir", "cnn_rgb", "cnn_rgbnir")}
    for k in range(folds):
        train, test = fold != k, fold == k
        predictions["lr_rgb"][test] = logistic_regression(
            data["rgb_features"][train], y[train], data["rgb_features"][test], seed)
        predictions["lr_rgbnir"][test] = logistic_regression(
            data["all_features"][train], y[train], data["all_features"][test], seed)
        predictions["cnn_rgb"][test] = train_cnn(
            data["images"][train][..., :3], y[train], data["images"][test][..., :3], seed, epochs)
        predictions["cnn_rgbnir"][test] = train_cnn(
            data["images"][train], y[train], data["images"][test], seed, epochs)
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--width", type=int, default=SyntheticConfig.width)
    parser.add_argument("--height", type=int, default=SyntheticConfig.height)
    parser.add_argument("--duration", type=float, default=SyntheticConfig.duration_s)
    parser.add_argument("--workdir", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    accuracy: dict[str, list[float]] = {}
    greens: dict[str, list[float]] = {}
    sizes = []
    for seed in args.seeds:
        config = SyntheticConfig(seed=seed, width=args.width, height=args.height,
                                 duration_s=args.duration)
        data = load_pairs(args.workdir, config, args.every)
        sizes.append((len(data["labels"]), len(set(data["groups"]))))
        predictions = evaluate(data, seed, args.folds, args.epochs)
        green = np.isin(data["labels"], [CLASSES.index(c) for c in GREENS])
        for key, pred in predictions.items():
            accuracy.setdefault(key, []).append(float((pred == data["labels"]).mean()))
            greens.setdefault(key, []).append(float((pred == data["labels"])[green].mean()))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in accuracy.items()),
              flush=True)

    def cell(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"

    names = {"lr_rgb": ("logistic regression on colour/texture statistics", "RGB"),
             "lr_rgbnir": ("logistic regression on colour/texture statistics", "RGB+NIR"),
             "cnn_rgb": ("small CNN (4 conv layers, 64x64 input)", "RGB"),
             "cnn_rgbnir": ("small CNN (4 conv layers, 64x64 input)", "RGB+NIR")}
    defaults = {"--seeds": [0, 1, 2], "--folds": 5, "--epochs": 15, "--every": 3,
                "--width": SyntheticConfig.width, "--height": SyntheticConfig.height,
                "--duration": SyntheticConfig.duration_s}
    given = {"--seeds": args.seeds, "--folds": args.folds, "--epochs": args.epochs,
             "--every": args.every, "--width": args.width, "--height": args.height,
             "--duration": args.duration}
    flags = "".join(f" {flag} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                    for flag, v in given.items() if v != defaults[flag])
    lines = [
        f"Command: `.venv/bin/python bench/bench_modality_gap.py{flags}`",
        "",
        f"Data: one synthetic bag per seed (`SyntheticConfig(seed)`: {args.duration:g} s, "
        f"{args.width}x{args.height}, RGB 15 Hz, NIR 15 Hz), pairs extracted with "
        f"`--every {args.every}`; per seed "
        + ", ".join(f"{n} pairs / {g} scenes" for n, g in sizes)
        + f". Evaluation: {args.folds}-fold cross-validation grouped by scene (stratified by "
        f"class), out-of-fold accuracy over all pairs; mean ± std over seeds {args.seeds}. "
        f"{len(CLASSES)} classes, chance {100 / len(CLASSES):.1f} %. CNN: {args.epochs} epochs, "
        "AdamW, flips; RGB and RGB+NIR CNNs differ only in the first layer's input channels.",
        "",
        "| classifier | input | accuracy, all classes (%) | accuracy on the green trio (%) |",
        "|---|---|---|---|",
    ]
    for key, (model, modality) in names.items():
        lines.append(f"| {model} | {modality} | {cell(accuracy[key])} | {cell(greens[key])} |")
    lines += [
        "",
        "Green trio = live_vegetation, artificial_turf, green_paint: alike in RGB (NIR tells them "
        "apart: 0.50 / 0.08 / 0.25 reflectance), so RGB-only accuracy there measures the subtle "
        "RGB cues (relief, hue variation, turf rows) a student can learn; chance within the trio "
        "is 33 %.",
        f"Total time {time.time() - started:.0f} s on {torch.get_num_threads()} CPU threads.",
    ]
    body = "\n".join(lines)
    print(f"\n## {TITLE}\n\n{body}")
    if not args.no_write:
        replace_section(TITLE, body)


if __name__ == "__main__":
    main()
