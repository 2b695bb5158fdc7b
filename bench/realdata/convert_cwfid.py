#!/usr/bin/env python3
"""CWFID (carrot field robot, visible red + NIR) -> one rosbag2 per image, as the robot records it.

What a frame is. The field robot's camera sees a patch of the row at a time. A drive over an
image is a lawnmower path of ``--window`` px square windows every ``--stride`` px (default 128 px
every 64 px: consecutive frames overlap by half, as a 10 Hz camera on a slow robot does). The
label of a frame is what lies under its centre (a ``--centre`` px square, default 8 px): the thing
a weeding tool at the image centre would act on, and the per-patch task of the dataset's
published baselines (patches centred on annotated pixels). Whole-frame labels would be
meaningless here: almost every frame shows soil, crop and weed at once.

Classes per pixel, from the annotation and the vegetation mask (the annotation marks only
vegetation pixels: it lies inside the mask in every image):
- ``crop`` / ``weed``: annotated vegetation;
- ``soil``: not vegetation (mask);
- unlabelled: vegetation the annotators did not mark, and centres where no class covers 2/3 of the
  centre square (a boundary). Such frames are recorded with an empty label.

Channels. The stored PNGs are not RGB: R == B = visible red, G = NIR (see the dataset README).
The visible topic is ``mono8`` holding the red band, not ``rgb8`` with red copied three times: the
sensor recorded one visible band, and a 3-channel image would claim colour that is not there,
invite colour augmentation (saturation) on a grey image, and triple the bytes. The extracted
dataset then says ``rgb: 1 channel``, which is the truth the models must cope with. NIR goes on
its own topic as ``mono8``; both sensors share the optical path (prism camera), so the windows are
pixel-aligned, and only their stamps differ (independent jitter, see ``common.py``).

Triggered frames (``--trigger vegetation``). A weeding robot's camera is fired by its plant
detector: frames come where vegetation lies under the tool, not on bare soil. With it, a window
is recorded only when at least 2/3 of its centre square is vegetation (crop, weed or vegetation
the annotators did not mark, the last recorded unlabelled), so the crop/weed decision gets the
frames and soil, which such a robot never classifies, drops out. ``--val-stride`` drives the
validation images on a denser path (validation only: the training drive stays as given), so
macro-F1 rests on hundreds of crop and weed frames instead of a few dozen.

Split by image, never by frame: frames of one image overlap and share the light and the plants.
``--val-images`` of the given images (default 8 of 39) go to validation, picked to spread the
rare class: images ranked by their crop share of annotated pixels, evenly spaced ranks go to val.
The choice depends on the annotations only (not on window or stride). No test split: the
upstream test images are withheld for a later independent check.

Output (``--out``): ``bags/cwfid_<id>/`` (one mcap bag per image), ``splits.json``, ``frames.csv``.
Then: ``training/extract.py --bag OUT/bags/* --splits OUT/splits.json --out DATA`` (split by bag),
or the whole method study: ``bench/bench_realdata.py --conversion OUT --name cwfid``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.realdata.common import MAJORITY, BagSummary, Frame, Timing, centre_label, count_table, \
    prepare_out, serpentine, window_origins, write_drive, write_outputs
from mmkd_ros.core.errors import DatasetError, run_cli

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cwfid"
START_NS = 1_400_000_000 * 10**9  # May 2014: the dataset's publication; bags 10 minutes apart
BAG_SPACING_NS = 600 * 10**9
# Pixel categories (see the module docstring).
SOIL, CROP, WEED, UNANNOTATED = 0, 1, 2, 3
CLASS_NAMES = {SOIL: "soil", CROP: "crop", WEED: "weed", UNANNOTATED: ""}
TRIGGERS = ("all", "vegetation")  # every window of the path | windows with vegetation under the centre


def image_ids(data: Path) -> list[str]:
    """Ids (``"002"``...) of the images that have an annotation and a mask."""
    ids = sorted(p.name.split("_")[0] for p in (data / "images").glob("*_image.png"))
    if not ids:
        raise DatasetError(f"no CWFID images in {data / 'images'}: pass --data <cwfid folder>")
    for image_id in ids:
        for path in (_path(data, image_id, "annotation"), _path(data, image_id, "mask")):
            if not path.is_file():
                raise DatasetError(f"{path} is missing: the CWFID folder is incomplete")
    return ids


def _path(data: Path, image_id: str, kind: str) -> Path:
    folder = {"image": "images", "annotation": "annotations", "mask": "masks"}[kind]
    return data / folder / f"{image_id}_{kind}.png"


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DatasetError(f"cannot read {path}")
    return image


def load_image(data: Path, image_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``red [H,W] uint8, nir [H,W] uint8, categories [H,W] uint8`` of one image."""
    bgr = _read(_path(data, image_id, "image"), cv2.IMREAD_COLOR)  # [H, W, 3]: B = R = red, G = NIR
    annotation = _read(_path(data, image_id, "annotation"), cv2.IMREAD_COLOR)  # BGR
    mask = _read(_path(data, image_id, "mask"), cv2.IMREAD_GRAYSCALE)  # 255 = soil/background
    categories = np.full(mask.shape, UNANNOTATED, np.uint8)
    categories[mask > 0] = SOIL
    categories[(annotation[:, :, 1] == 255) & (annotation[:, :, 2] == 0)] = CROP  # green
    categories[(annotation[:, :, 2] == 255) & (annotation[:, :, 1] == 0)] = WEED  # red
    return bgr[:, :, 2].copy(), bgr[:, :, 1].copy(), categories


def vegetation_under_centre(categories: np.ndarray, x: int, y: int, window: int, centre: int) -> bool:
    """Whether at least :data:`MAJORITY` of the window's centre square is vegetation (not soil)."""
    top, left = y + (window - centre) // 2, x + (window - centre) // 2
    return float((categories[top:top + centre, left:left + centre] != SOIL).mean()) >= MAJORITY


def drive(red: np.ndarray, nir: np.ndarray, categories: np.ndarray, window: int, stride: int,
          centre: int, trigger: str = "all") -> Iterator[Frame]:
    """Frames of a lawnmower drive over one image: every position, or (``trigger="vegetation"``)
    the positions with vegetation under the centre, keeping their place (tick) on the path.
    ``trigger`` is checked by :func:`convert`, before anything is written."""
    ys = window_origins(red.shape[0], window, stride)
    xs = window_origins(red.shape[1], window, stride)
    for tick, (r, c) in enumerate(serpentine(len(ys), len(xs))):
        y, x = ys[r], xs[c]
        if trigger == "vegetation" and not vegetation_under_centre(categories, x, y, window, centre):
            continue
        yield Frame(tick, x, y, red[y:y + window, x:x + window, None].copy(),
                    nir[y:y + window, x:x + window, None].copy(),
                    centre_label(categories, x, y, window, centre, CLASS_NAMES))


def choose_val(crop_share: dict[str, float], n_val: int) -> list[str]:
    """Images ranked by crop share; ranks at the centres of ``n_val`` equal bins go to val."""
    if not 0 <= n_val < len(crop_share):
        raise DatasetError(f"--val-images must be in 0..{len(crop_share) - 1}, got {n_val}")
    ranked = sorted(crop_share, key=lambda image_id: (crop_share[image_id], image_id))
    n = len(ranked)
    return sorted(ranked[int((k + 0.5) * n / n_val)] for k in range(n_val))


def convert(data: Path, out: Path, images: Sequence[str] | None = None, window: int = 128,
            stride: int = 64, centre: int = 8, n_val: int = 8, timing: Timing = Timing(),
            trigger: str = "all", val_stride: int | None = None) -> tuple[list[BagSummary], dict[str, str]]:
    """Write one bag per image into ``out/bags`` plus ``splits.json`` and ``frames.csv``."""
    available = image_ids(data)
    ids = list(images) if images else available
    unknown = sorted(set(ids) - set(available))
    if unknown:
        raise DatasetError(f"images {', '.join(unknown)} are not in {data}")
    if trigger not in TRIGGERS:
        raise DatasetError(f"--trigger {trigger!r} is not one of {', '.join(TRIGGERS)}")
    val_stride = val_stride or stride
    if min(stride, val_stride) < 1:
        raise DatasetError(f"--stride {stride} and --val-stride {val_stride} must be at least 1 px")
    crop_share = {}
    for image_id in ids:  # the validation choice depends on the annotations only
        categories = load_image(data, image_id)[2]
        crop, weed = int((categories == CROP).sum()), int((categories == WEED).sum())
        crop_share[image_id] = crop / max(1, crop + weed)
    val = set(choose_val(crop_share, n_val))
    bags_dir = prepare_out(out)
    summaries = []
    for k, image_id in enumerate(ids):
        red, nir, categories = load_image(data, image_id)
        path_stride = val_stride if image_id in val else stride
        summaries.append(write_drive(
            bags_dir / f"cwfid_{image_id}", drive(red, nir, categories, window, path_stride, centre, trigger),
            start_ns=START_NS + k * BAG_SPACING_NS, timing=timing,
            visible_encoding="mono8", nir_encoding="mono8"))
    splits = {f"cwfid_{i}": "val" if i in val else "train" for i in ids}
    write_outputs(out, summaries, splits, {
        "dataset": "cwfid", "group": "image", "val_rule": "images ranked by crop share of "
        "annotated pixels; the ranks at the centres of n_val equal bins", "val_images": sorted(val),
        "window": window, "stride": stride, "val_stride": val_stride, "trigger": trigger, "centre": centre,
        "crop_share": {k: round(v, 4) for k, v in sorted(crop_share.items())}})
    return summaries, splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CWFID folder "
                        "(images/, annotations/, masks/); default %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="new output folder")
    parser.add_argument("--images", nargs="+", help="only these image ids (e.g. 002 005)")
    parser.add_argument("--window", type=int, default=128, help="frame size, px")
    parser.add_argument("--stride", type=int, default=64, help="camera step between frames, px")
    parser.add_argument("--centre", type=int, default=8, help="centre square that labels, px")
    parser.add_argument("--val-images", type=int, default=8, help="images for validation")
    parser.add_argument("--trigger", choices=TRIGGERS, default="all", help="which windows of the path "
                        "are recorded: all, or those with vegetation under the centre (a plant detector's "
                        "trigger); default %(default)s")
    parser.add_argument("--val-stride", type=int, help="camera step over the validation images, px "
                        "(default: --stride)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    summaries, splits = convert(args.data, args.out, args.images, args.window, args.stride,
                                args.centre, args.val_images, trigger=args.trigger, val_stride=args.val_stride)
    print(count_table(summaries, splits))
    print(f"wrote {len(summaries)} bags to {args.out / 'bags'} in "
          f"{time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
