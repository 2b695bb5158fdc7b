"""The extracted pair dataset's on-disk schema: one definition for the writer and the reader.

``mmkd_ros.data.extract`` writes ``manifest.csv`` + ``dataset.json``; ``mmkd_ros.data.dataset``
reads them. Both go through this module so a column can never be renamed on one side only.

``dataset.json["files"]`` (``{"count": n, "bytes": total}``, :func:`files_record`) records the
image files the manifest lists, so :func:`dataset_problem` can tell a complete dataset from one
that lost or truncated a file after extraction (the extractor checks it before reusing a cache).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable

from mmkd_ros.core.errors import DatasetError

DATASET_FORMAT = "mmkd_ros/pair-dataset"
DATASET_VERSION = 1
MANIFEST_NAME = "manifest.csv"
INFO_NAME = "dataset.json"
MANIFEST_COLUMNS: tuple[str, ...] = ("id", "rgb", "nir", "label", "group", "split",
                                     "rgb_stamp_ns", "nir_stamp_ns", "dt_ns", "source")
INT_COLUMNS: tuple[str, ...] = ("rgb_stamp_ns", "nir_stamp_ns", "dt_ns")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def write_manifest(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write manifest rows (missing columns empty, ``None`` as empty) to ``path``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row[key]
                             for key in MANIFEST_COLUMNS})


def read_manifest(dataset_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``<dataset_dir>/manifest.csv`` as dicts keyed by :data:`MANIFEST_COLUMNS`.

    String columns stay strings (``label`` and ``split`` may be empty); the stamp columns become
    ``int`` or ``None`` (folder inputs have no stamps). Raises :class:`DatasetError` naming the
    file and the problem.
    """
    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(f"{path} not found: run training/extract.py to build the dataset")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path} lacks columns {', '.join(missing)}: re-extract it")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row: dict[str, Any] = {key: raw[key] or "" for key in MANIFEST_COLUMNS}
            try:
                for key in INT_COLUMNS:
                    row[key] = int(row[key]) if row[key] != "" else None
            except ValueError:
                raise DatasetError(f"{path} line {line}: {key} is not an integer") from None
            if row["split"] not in ("",) + SPLITS:
                raise DatasetError(f"{path} line {line}: split {row['split']!r} is not one of "
                                   f"{', '.join(SPLITS)} or empty")
            rows.append(row)
    return rows


def load_dataset_info(dataset_dir: str | Path) -> dict[str, Any]:
    """``<dataset_dir>/dataset.json`` after checking its format and version."""
    path = Path(dataset_dir) / INFO_NAME
    if not path.is_file():
        raise DatasetError(f"{path} not found: run training/extract.py to build the dataset")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}): re-extract the dataset") from None
    if not isinstance(info, dict) or info.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path} is not a {DATASET_FORMAT} file")
    if info.get("version") != DATASET_VERSION:
        raise DatasetError(f"{path} has version {info.get('version')!r}, this mmkd_ros reads "
                           f"version {DATASET_VERSION}: re-extract the dataset")
    return info


def _listed_files(rows: Iterable[dict[str, Any]]) -> list[str]:
    return [row[key] for row in rows for key in ("rgb", "nir") if row.get(key)]


def files_record(dataset_dir: str | Path, rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``{"count", "bytes"}`` of the image files ``rows`` list (for ``dataset.json["files"]``)."""
    root = Path(dataset_dir)
    files = _listed_files(rows)
    return {"count": len(files), "bytes": sum((root / rel).stat().st_size for rel in files)}


def dataset_problem(dataset_dir: str | Path, info: dict[str, Any]) -> str | None:
    """What makes the dataset at ``dataset_dir`` incomplete, or ``None`` when it is whole.

    Every file the manifest lists must exist; where ``info`` records ``files`` (count and total
    bytes), they must match too, so a truncated or replaced image is noticed.
    """
    root = Path(dataset_dir)
    try:
        rows = read_manifest(root)
    except DatasetError as exc:
        return str(exc)
    files = _listed_files(rows)
    total = 0
    for rel in files:
        try:
            total += (root / rel).stat().st_size
        except OSError:
            return f"{rel} is missing"
    record = info.get("files")
    if isinstance(record, dict):
        if record.get("count") != len(files):
            return (f"the manifest lists {len(files)} files, dataset.json records "
                    f"{record.get('count')}")
        if record.get("bytes") != total:
            return (f"its image files hold {total} bytes, dataset.json records "
                    f"{record.get('bytes')} (a file was truncated or replaced)")
    return None
