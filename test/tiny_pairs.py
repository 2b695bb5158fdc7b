"""Write a tiny pair dataset (manifest.csv + dataset.json + PNGs) in the format of mmkd_ros/data/manifest.py, for tests.

Classes differ by NIR brightness strongly and by RGB colour only weakly, like the real problem
(RGB alone is ambiguous, RGB+NIR is not). Every ``frames_per_group`` frames form one group.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from mmkd_ros.data.image_files import write_png

CLASSES = ["grass", "paint", "turf"]


def write_tiny_pairs(root: Path, groups_per_class: int = 4, frames_per_group: int = 3, size: int = 24,
                     rgb_channels: int = 3, nir_channels: int = 1, nir_dtype: str = "uint16",
                     unlabelled: int = 2, split: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "nir").mkdir(parents=True, exist_ok=True)
    rows, counts = [], {c: 0 for c in CLASSES}
    frame = 0
    items = [(c, k) for k, c in enumerate(CLASSES) for _ in range(groups_per_class)] + [("", 0)] * unlabelled
    for g, (label, k) in enumerate(items):
        for _ in range(frames_per_group if label else 1):
            base = np.array([0.3 + 0.05 * k, 0.6, 0.3])[:rgb_channels] if rgb_channels <= 3 else np.full(rgb_channels, 0.5)
            rgb = np.clip(base[None, None, :] + rng.normal(0, 0.08, (size, size, rgb_channels)), 0, 1)
            nir = np.clip(0.2 + 0.3 * k + rng.normal(0, 0.05, (size, size, nir_channels)), 0, 1)
            name = f"{frame:06d}"
            write_png(root / "rgb" / f"{name}.png", (rgb * 255).astype(np.uint8))
            if nir_channels == 1:
                scale, dtype = (65535, np.uint16) if nir_dtype == "uint16" else (255, np.uint8)
                write_png(root / "nir" / f"{name}.png", (nir * scale).astype(dtype))
                nir_path = f"nir/{name}.png"
            else:
                np.save(root / "nir" / f"{name}.npy", (nir * 65535).astype(np.uint16))
                nir_path = f"nir/{name}.npy"
            split_name = ("val" if g % 4 == 1 else "test" if g % 4 == 2 else "train") if split else ""
            rows.append({"id": name, "rgb": f"rgb/{name}.png", "nir": nir_path, "label": label,
                         "group": f"g{g:03d}", "split": split_name, "rgb_stamp_ns": frame * 100,
                         "nir_stamp_ns": frame * 100 + 5, "dt_ns": 5, "source": "test"})
            if label:
                counts[label] += 1
            frame += 1
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "format": "mmkd_ros/pair-dataset", "version": 1, "classes": CLASSES,
        "modalities": {"rgb": {"topic": "/rgb", "channels": rgb_channels, "dtype": "uint8"},
                       "nir": {"topic": "/nir", "channels": nir_channels, "dtype": nir_dtype}},
        "counts": {"pairs": len(rows), "per_class": counts, "unlabelled": unlabelled},
        "pairing": {}, "dropped": [], "inputs": [], "options": {}, "cache_key": f"tiny-{seed}-{size}-{rgb_channels}-{nir_channels}",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
