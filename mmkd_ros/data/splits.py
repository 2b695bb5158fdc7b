"""The bag-splits file: which split (train/val/test) every bag of a recording set belongs to.

When each bag is one unit of independence (one field image, one spatial block, one drive), frames
of a bag are near-duplicates of each other and the split must be by bag. A bag-splits file says
which bag goes where; ``training/extract.py --splits FILE`` writes it into the manifest, and the
real-data converters (``bench/realdata``) write one next to their bags. Format (JSON)::

    {"format": "mmkd_ros/bag-splits", "version": 1,
     "splits": {"<bag name>": "train" | "val" | "test", ...},
     ...any further keys (how the split was chosen), ignored when reading}

A bag's name is its folder name (rosbag2) or file name without ``.bag`` (ROS 1), as in the
manifest's ``group`` column.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mmkd_ros.core.atomic import write_atomic
from mmkd_ros.data.manifest import SPLITS
from mmkd_ros.core.errors import DatasetError

SPLITS_FORMAT = "mmkd_ros/bag-splits"
SPLITS_VERSION = 1
_EXAMPLE = (f'{{"format": "{SPLITS_FORMAT}", "version": {SPLITS_VERSION}, '
            '"splits": {"<bag name>": "train"}}')


def read_bag_splits(path: str | Path) -> dict[str, str]:
    """``{bag name: split}`` of the bag-splits file at ``path``; one-line DatasetError if bad."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"bag-splits file {path} does not exist: check the --splits path")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"bag-splits file {path} is not valid JSON ({reason}): write it as "
                           f"{_EXAMPLE}") from None
    if not isinstance(payload, dict) or payload.get("format") != SPLITS_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DatasetError(f"{path} is not a bag-splits file (format {found!r}, expected "
                           f"{SPLITS_FORMAT!r}): write it as {_EXAMPLE}")
    if payload.get("version") != SPLITS_VERSION:
        raise DatasetError(f"bag-splits file {path} has version {payload.get('version')!r}, this "
                           f"mmkd_ros reads version {SPLITS_VERSION}: write it as {_EXAMPLE}")
    splits = payload.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(k, str) for k in splits):
        raise DatasetError(f"bag-splits file {path}: \"splits\" must map bag names to a split, "
                           f"e.g. {_EXAMPLE}")
    for bag, split in splits.items():
        if split not in SPLITS:
            raise DatasetError(f"bag-splits file {path}: bag {bag!r} has split {split!r}; use "
                               f"one of {', '.join(SPLITS)}")
    return dict(splits)


def write_bag_splits(path: str | Path, splits: Mapping[str, str], **extra: Any) -> Path:
    """Write ``splits`` (bag name -> split) plus ``extra`` keys to ``path``, atomically.

    The file is written next to ``path`` under a temporary name and moved onto it, so a reader
    never sees half a file. ``extra`` may not redefine ``format`` or ``version``.
    """
    path = Path(path)
    clash = {"format", "version"} & set(extra)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite the file's own")
    for bag, split in splits.items():
        if split not in SPLITS:
            raise ValueError(f"bag {bag!r}: split {split!r} is not one of {', '.join(SPLITS)}")
    payload = {"format": SPLITS_FORMAT, "version": SPLITS_VERSION,
               "splits": dict(sorted(splits.items())), **extra}
    return write_atomic(path, json.dumps(payload, indent=1) + "\n")
