#!/usr/bin/env python3
"""Houston 2018 (aerial RGB + hyperspectral) -> rosbag2, as a lawnmower survey flight records it.

Frames. The scene is cut into square spatial blocks (``--block``, default 128 px: a 4x4 grid).
Over each block the aircraft flies a lawnmower path; the camera takes a ``--window`` px frame
(default 32 px = 8 hyperspectral pixels) every ``--stride`` px (default 4 px = one hyperspectral
pixel). Only windows that lie entirely inside one block are emitted, so every frame belongs to
exactly one block and a split by block cannot leak pixels. One bag per block (``houston_r<row>c<col>``),
because the extractor groups by bag (see ``common.py``).

Channels and resolution.
- Visible: the RGB orthophoto window, ``rgb8``.
- NIR: the mean of hyperspectral bands 31-40 *1-based* (numpy ``hsi[:, :, 30:40]``), centred
  about 808-936 nm with the README's even spacing over 380-1050 nm. The indexing checks out on
  the data: 0-based band 27 (765 nm) is the oxygen-A dip at 760 nm and 0-based band 40 (950 nm)
  the water dip near 940 nm in the mean vegetation spectrum; 1-based 31-40 sits on the
  vegetation NIR plateau between them. Published as ``mono16`` in the sensor's own counts (no
  rescaling: the mean of uint16 radiances, rounded), upsampled 4x to the RGB grid with bilinear
  interpolation (pixel centres aligned, OpenCV's convention) over the whole scene before cropping,
  so window edges see real neighbours. Both streams have their own jittered stamps.
- Label: the land-cover class under the frame centre (a ``--centre`` px square, default 4 px = one
  hyperspectral pixel; class names ``class_01``..``class_12``, the source gives none). Label 0
  (unlabelled), or no class covering 2/3 of the centre, gives an empty label (unlabelled frame).

Withheld pixels. ``blanked`` blocks are the evaluation hold-out: their pixels are zero. A window
that overlaps them is not emitted, and neither is one within 2 px of them, because bilinear
upsampling of the 4x coarser NIR mixes zeros up to 2 px into their neighbours.

Split by block. Validation blocks (``--val-blocks``, default 3 of 16) are carved from the
non-blanked area, picked (greedy, then improving swaps) so that no class is in validation only,
as many classes as possible have at least 5 labelled frames in both train and validation, and
validation holds close to 20% of the labelled frames. Classes confined to one block (several are: the scene is small) can only be on one side;
``splits.json`` lists the classes that are thin on a side.

Output (``--out``): ``bags/houston_r<row>c<col>/``, ``splits.json``, ``frames.csv``.
Then: ``training/extract.py --bag OUT/bags/* --splits OUT/splits.json --out DATA`` (split by bag),
or the whole method study: ``bench/bench_realdata.py --conversion OUT --name houston``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.realdata.common import BagSummary, Frame, Timing, centre_label, count_table, \
    prepare_out, serpentine, window_origins, write_drive, write_outputs
from mmkd_ros.core.errors import DatasetError, run_cli

DEFAULT_DATA = REPO.parent / "shared" / "data" / "houston2018" / "houston2018_dev.npz"
NIR_BANDS = slice(30, 40)  # bands 31-40, 1-based
HSI_SCALE = 4  # RGB pixels per hyperspectral pixel, per axis
START_NS = 1_518_000_000 * 10**9  # February 2018 (the contest's year); block bags 10 min apart
BAG_SPACING_NS = 600 * 10**9
VAL_SHARE = 0.2  # target share of labelled frames in validation
MIN_FRAMES = 5  # a class "is on both sides" with at least this many labelled frames on each


@dataclass(frozen=True)
class Scene:
    """The co-registered scene on the RGB grid."""

    rgb: np.ndarray  # [H, W, 3] uint8
    nir: np.ndarray  # [H, W] uint16, upsampled from the hyperspectral grid
    labels: np.ndarray  # [H, W] uint8, 0 = unlabelled
    excluded: np.ndarray  # [H, W] bool: blanked, or NIR contaminated by blanked pixels


def load_scene(path: Path) -> Scene:
    """Read the npz and build the NIR image and the exclusion mask (see the module docstring)."""
    if not path.is_file():
        raise DatasetError(f"{path} does not exist: pass --data <houston2018_dev.npz>")
    with np.load(path) as data:
        rgb, hsi, labels, blanked = (data[k] for k in ("rgb", "hsi", "labels", "blanked"))
    height, width = labels.shape
    if hsi.shape[:2] != (height // HSI_SCALE, width // HSI_SCALE) or rgb.shape[:2] != (height, width):
        raise DatasetError(f"{path}: rgb {rgb.shape}, hsi {hsi.shape} and labels {labels.shape} "
                           f"are not co-registered at {HSI_SCALE}:1")
    nir_coarse = hsi[:, :, NIR_BANDS].astype(np.float32).mean(axis=2)  # [h, w]
    nir = cv2.resize(nir_coarse, (width, height), interpolation=cv2.INTER_LINEAR)  # [H, W]
    nir = np.clip(np.rint(nir), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    reach = HSI_SCALE // 2  # how far bilinear upsampling carries a coarse pixel's value
    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    excluded = cv2.dilate(blanked.astype(np.uint8), kernel).astype(bool)
    return Scene(rgb, nir, labels, excluded)


def block_grid(scene: Scene, block: int) -> list[tuple[int, int]]:
    """``(row, col)`` of the blocks that tile the scene."""
    height, width = scene.labels.shape
    if height % block or width % block:
        raise DatasetError(f"--block {block} px does not tile the {height}x{width} scene")
    return [(r, c) for r in range(height // block) for c in range(width // block)]


def block_name(row: int, col: int) -> str:
    return f"houston_r{row}c{col}"


def flight(scene: Scene, row: int, col: int, block: int, window: int, stride: int,
           centre: int) -> Iterator[Frame]:
    """Frames of a lawnmower pass over one block; positions near withheld pixels emit none."""
    origins = window_origins(block, window, stride)
    names = {c: f"class_{c:02d}" for c in range(1, 256)}
    for tick, (r, c) in enumerate(serpentine(len(origins), len(origins))):
        y, x = row * block + origins[r], col * block + origins[c]
        if scene.excluded[y:y + window, x:x + window].any():
            continue
        yield Frame(tick, x, y, scene.rgb[y:y + window, x:x + window].copy(),
                    scene.nir[y:y + window, x:x + window, None].copy(),
                    centre_label(scene.labels, x, y, window, centre, names))


def choose_val(counts: dict[str, np.ndarray], n_val: int) -> list[str]:
    """Choose ``n_val`` validation blocks; ``counts[block][k]`` = labelled frames of class k.

    Maximises, in this order: no class that only validation has (it could not be learnt), the
    number of classes with at least ``MIN_FRAMES`` frames on both sides, closeness of val's share
    of labelled frames to ``VAL_SHARE``. Greedy additions, then single swaps between val and
    train while they improve the score (a local optimum; exhaustive search is out of reach for
    small blocks). Deterministic: candidates are tried in name order.
    """
    if not 0 <= n_val < len(counts):
        raise DatasetError(f"--val-blocks must be in 0..{len(counts) - 1}, got {n_val}")
    names = sorted(counts)
    total = sum(counts.values())

    def score(val_blocks: Sequence[str]) -> tuple[int, int, float]:
        val = sum((counts[b] for b in val_blocks), np.zeros_like(total))
        train = total - val
        val_only = int(((val > 0) & (train == 0)).sum())
        both = int(((val >= MIN_FRAMES) & (train >= MIN_FRAMES)).sum())
        return -val_only, both, -abs(val.sum() / max(1, total.sum()) - VAL_SHARE)

    chosen: list[str] = []
    for _ in range(n_val):
        chosen.append(max((b for b in names if b not in chosen), key=lambda b: score(chosen + [b])))
    improved = True
    while improved:
        improved = False
        for k in range(n_val):
            for b in names:
                trial = chosen[:k] + [b] + chosen[k + 1:]
                if b not in chosen and score(trial) > score(chosen):
                    chosen, improved = trial, True
    return sorted(chosen)


def convert(data: Path, out: Path, blocks: Sequence[str] | None = None, block: int = 128,
            window: int = 32, stride: int = 4, centre: int = 4, n_val: int = 3,
            timing: Timing = Timing()) -> tuple[list[BagSummary], dict[str, str]]:
    """Write one bag per block into ``out/bags`` plus ``splits.json`` and ``frames.csv``.

    ``blocks`` (bag names) restricts the bags written; the validation choice is always made on
    the whole scene, so a partial conversion agrees with a full one.
    """
    scene = load_scene(data)
    planned = {block_name(r, c): (k, list(flight(scene, r, c, block, window, stride, centre)))
               for k, (r, c) in enumerate(block_grid(scene, block))}
    planned = {name: plan for name, plan in planned.items() if plan[1]}  # fully withheld: no bag
    wanted = set(blocks) if blocks else set(planned)
    unknown = sorted(wanted - set(planned))
    if unknown:
        raise DatasetError(f"blocks {', '.join(unknown)} do not exist or are withheld; blocks "
                           f"with frames: {', '.join(sorted(planned))}")
    classes = sorted({f.label for _, frames in planned.values() for f in frames} - {""})
    counts = {name: np.array([sum(f.label == c for f in frames) for c in classes])
              for name, (_, frames) in planned.items()}
    val = set(choose_val(counts, n_val))
    bags_dir = prepare_out(out)
    summaries = [write_drive(bags_dir / name, iter(frames), start_ns=START_NS + k * BAG_SPACING_NS,
                             timing=timing, visible_encoding="rgb8", nir_encoding="mono16")
                 for name, (k, frames) in sorted(planned.items()) if name in wanted]
    splits = {s.name: "val" if s.name in val else "train" for s in summaries}
    val_total = sum((counts[b] for b in val), np.zeros(len(classes), np.int64))
    all_total = sum(counts.values())
    thin = {c: {"train": int(all_total[k] - val_total[k]), "val": int(val_total[k])}
            for k, c in enumerate(classes)
            if min(val_total[k], all_total[k] - val_total[k]) < MIN_FRAMES}
    write_outputs(out, summaries, splits, {
        "dataset": "houston2018", "group": "spatial block", "block": block, "window": window,
        "stride": stride, "centre": centre, "val_blocks": sorted(val),
        "val_rule": f"no class in val only; most classes with >= {MIN_FRAMES} labelled frames on "
                    f"both sides; val share of labelled frames closest to {VAL_SHARE}",
        "val_share_of_labelled_frames": round(float(val_total.sum() / all_total.sum()), 4),
        "classes_thin_on_one_side": thin,
        "nir": "mean of hsi bands 31-40 (1-based), bilinear x4"})
    return summaries, splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="houston2018_dev.npz; "
                        "default %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="new output folder")
    parser.add_argument("--blocks", nargs="+", help="only these bags (e.g. houston_r2c0)")
    parser.add_argument("--block", type=int, default=128, help="spatial block size, px")
    parser.add_argument("--window", type=int, default=32, help="frame size, px")
    parser.add_argument("--stride", type=int, default=4, help="camera step between frames, px")
    parser.add_argument("--centre", type=int, default=4, help="centre square that labels, px")
    parser.add_argument("--val-blocks", type=int, default=3, help="blocks for validation")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    summaries, splits = convert(args.data, args.out, args.blocks, args.block, args.window,
                                args.stride, args.centre, args.val_blocks)
    print(count_table(summaries, splits))
    print(f"wrote {len(summaries)} bags to {args.out / 'bags'} in "
          f"{time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
