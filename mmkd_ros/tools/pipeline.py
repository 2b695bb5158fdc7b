"""The offline chain behind ``training/distill.py``: bag -> pairs -> teacher -> student -> report.

Each stage is skipped when its result is already there and still valid: extraction is cached by
the bag's bytes (``mmkd_ros.data.extract``), a finished teacher run is reused on ``--resume``, an
unfinished one continues. Under ``torchrun`` one process group spans the chain: rank 0 extracts
and evaluates, every rank trains.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mmkd_ros.core.device import resolve_device
from mmkd_ros.core.errors import CheckpointError, ConfigError
from mmkd_ros.data.dataset import open_dataset
from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.tools.evaluate import evaluate
from mmkd_ros.train.config import Config
from mmkd_ros.train.distill import distill
from mmkd_ros.train.distributed import Runtime
from mmkd_ros.train.loop import LAST_NAME, run_finished
from mmkd_ros.train.teacher import train_teacher


@dataclass(frozen=True)
class ChainResult:
    """Where each stage put its result (``report`` is None on ranks other than 0)."""

    dataset: Path
    teacher: Path
    student: Path
    report: Path | None


def run_chain(config: Config, out_dir: str | Path, bag: str | Path | Sequence[str | Path] | None = None,
              data: str | Path | None = None, teacher: str | Path | None = None, resume: bool = False,
              split: str = "test", bag_options: BagOptions | None = None) -> ChainResult:
    """Extract (if ``bag``: one bag or several), train the teacher (unless ``teacher``), distill, evaluate.

    ``bag_options`` (default ``BagOptions()``) says how the bags are extracted, e.g. grouped and
    split by bag from a bag-splits file.
    Layout of ``out_dir``: ``dataset/`` (when extracted), ``teacher/``, ``student/``, ``eval/``.
    """
    bags = None if bag is None else [bag] if isinstance(bag, (str, Path)) else list(bag)
    if (not bags) == (data is None):
        raise ConfigError("give exactly one data source: --bag BAG or --data DATASET_DIR")
    if teacher is not None and not Path(teacher).is_file():  # before minutes of extraction, not after
        raise CheckpointError(f"teacher checkpoint {teacher} does not exist; pass a teacher.pt or leave --teacher out")
    out_dir = Path(out_dir)
    with Runtime.start(resolve_device(config.device)) as runtime:
        dataset = Path(data) if data is not None else out_dir / "dataset"
        if bags:
            if runtime.is_main:
                dataset = extract_bags(bags, dataset, bag_options or BagOptions(), progress=True).path
            runtime.barrier()
        if teacher is None:
            teacher_dir = out_dir / "teacher"
            if resume and run_finished(teacher_dir, config.teacher.epochs):
                teacher = teacher_dir / "teacher.pt"
            else:
                teacher = train_teacher(config, dataset, teacher_dir,
                                        resume=resume and (teacher_dir / LAST_NAME).is_file())
        student_dir = out_dir / "student"
        student = distill(config, dataset, teacher, student_dir,
                          resume=resume and (student_dir / LAST_NAME).is_file())
        report = None
        if runtime.is_main:
            info = open_dataset(dataset, config.data.val_fraction, config.data.test_fraction)
            if split == "test" and not any(r.label >= 0 for r in info.split("test")):
                # A bag-splits file may hold no test bags (kept back for a later independent check).
                print(f"note: {dataset} has no labelled test pairs; evaluating on the val split", file=sys.stderr)
                split = "val"
            evaluate({"teacher": teacher, f"student[{config.distill.method}]": student}, dataset, out_dir / "eval",
                     split=split, device=config.device)
            report = out_dir / "eval" / "report.md"
        runtime.barrier()
        return ChainResult(dataset, Path(teacher), student, report)
