"""The diagnostic tells apart NIR that RGB predicts from NIR that only carries the label.

Two tiny pair datasets written here:
- "function": NIR is a fixed pixel-wise function of RGB, and the label is RGB brightness. The
  diagnostic must find NIR predictable (high R^2) and no NIR gain worth a verdict.
- "independent": RGB is noise unrelated to the label; NIR is a label-dependent level plus
  noise, unrelated to RGB. The diagnostic must find NIR unpredictable (low R^2), RGB-only near
  chance and a large NIR gain, and say that distillation cannot recover it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmkd_ros.data.image_files import write_png
from mmkd_ros.data.manifest import DATASET_FORMAT, DATASET_VERSION, write_manifest
from mmkd_ros.tools.diagnose import DiagnoseOptions, diagnose, render
from mmkd_ros.core.errors import DatasetError

CLASSES = ["a", "b", "c"]
SIZE = 16
OPTIONS = DiagnoseOptions(size=SIZE, steps=120, seeds=1, batch_size=32)


def write_pairs(root: Path, kind: str, per_class: int = 30, seed: int = 0) -> Path:
    """``per_class`` train and ``per_class // 2`` val pairs per class, one group per pair."""
    rng = np.random.default_rng(seed)
    (root / "rgb").mkdir(parents=True)
    (root / "nir").mkdir()
    rows = []
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for k, label in enumerate(CLASSES):
            for _ in range(n):
                if kind == "function":
                    level = 0.2 + 0.3 * k + rng.uniform(-0.08, 0.08)
                    rgb = np.clip(level + rng.normal(0, 0.15, (SIZE, SIZE, 3)), 0, 1)
                    nir = 0.7 * rgb[:, :, :1] + 0.3 * rgb[:, :, 2:3] ** 2  # a function of RGB
                else:
                    rgb = rng.uniform(0, 1, (SIZE, SIZE, 3))
                    nir = np.clip(0.2 + 0.3 * k + rng.normal(0, 0.05, (SIZE, SIZE, 1)), 0, 1)
                name = f"{len(rows):05d}"
                write_png(root / "rgb" / f"{name}.png", (rgb * 255).round().astype(np.uint8))
                write_png(root / "nir" / f"{name}.png", (nir * 65535).round().astype(np.uint16))
                rows.append({"id": name, "rgb": f"rgb/{name}.png", "nir": f"nir/{name}.png",
                             "label": label, "group": f"g{name}", "split": split, "source": kind})
    write_manifest(root / "manifest.csv", rows)
    info = {"format": DATASET_FORMAT, "version": DATASET_VERSION, "classes": CLASSES,
            "modalities": {"rgb": {"topic": "rgb", "channels": 3, "dtype": "uint8"},
                           "nir": {"topic": "nir", "channels": 1, "dtype": "uint16"}},
            "counts": {"pairs": len(rows)}, "cache_key": f"diagnose-test-{kind}-{seed}"}
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def test_nir_that_is_a_function_of_rgb_is_predictable(tmp_path: Path) -> None:
    result = diagnose(write_pairs(tmp_path / "f", "function"), OPTIONS)
    assert result.nir_r2 > 0.8
    assert result.classifiers["rgb"]["accuracy"] > 0.8  # the label is visible in RGB
    assert "R^2 = " in render(result)


def test_independent_nir_is_unpredictable_and_a_large_gap(tmp_path: Path) -> None:
    result = diagnose(write_pairs(tmp_path / "i", "independent"), OPTIONS)
    assert result.nir_r2 < 0.2
    assert result.classifiers["rgb"]["accuracy"] < 0.6  # chance is 1/3
    assert result.gap("accuracy") > 0.35
    # The estimate of NIR from RGB carries nothing, so it cannot close the gap either.
    assert result.gap("accuracy", "rgb_nirhat") < 0.5 * result.gap("accuracy")
    text = render(result)
    assert "NIR adds" in text and "cannot get the rest back" in text


def test_no_validation_split_is_a_clear_error(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "n", "function", per_class=2)
    text = (root / "manifest.csv").read_text().replace(",val,", ",train,")
    (root / "manifest.csv").write_text(text)
    with pytest.raises(DatasetError, match="val"):
        diagnose(root, OPTIONS)


def test_teacher_features_are_measured(tmp_path: Path) -> None:
    """With a teacher checkpoint (untrained here: only the plumbing is under test)."""
    from mmkd_ros.models import build_model
    from mmkd_ros.core.artifact import make_checkpoint, save_checkpoint

    args = {"num_classes": 3, "rgb_channels": 3, "nir_channels": 1, "width": 0.125}
    model = build_model("teacher_resnet_tiny", **args)
    norm = {"rgb": {"mean": [0.5] * 3, "std": [0.25] * 3}, "nir": {"mean": [0.5], "std": [0.25]}}
    checkpoint = make_checkpoint(role="teacher", arch="teacher_resnet_tiny", arch_args=args,
                                 model=model, classes=CLASSES, modalities=["rgb", "nir"],
                                 channels={"rgb": 3, "nir": 1}, input_size=[SIZE, SIZE],
                                 normalization=norm, config={})
    path = save_checkpoint(checkpoint, tmp_path / "teacher.pt")
    options = DiagnoseOptions(size=SIZE, steps=20, seeds=1, batch_size=32)
    result = diagnose(write_pairs(tmp_path / "t", "independent", per_class=8), options, teacher=path)
    assert result.teacher is not None
    assert result.teacher["feature_dim"] == model.num_features
    assert result.teacher["feature_r2"] <= 1.0 and 0.0 <= result.teacher["accuracy"] <= 1.0
    assert "Teacher" in render(result)
