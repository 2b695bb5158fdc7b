"""The offline chain behind ``training/distill.py``: bag -> pairs -> teacher -> student -> report.

Each stage is skipped when its result is already there and still valid: extraction is cached by
the bag's bytes (``mmkd_ros.data.extract``; ``force`` extracts again), a finished teacher run is
reused on ``--resume``, an unfinished one continues. Every input is checked before the first slow
stage. Under ``torchrun`` one process group spans the chain: rank 0 extracts and evaluates, every
rank trains.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

from mmkd_ros.core.artifact import check_compatible, load_checkpoint
from mmkd_ros.core.atomic import check_writable
from mmkd_ros.core.device import resolve_device
from mmkd_ros.core.errors import CheckpointError, ConfigError, quiet_native_logs
from mmkd_ros.data.bag import resolve_bag_path
from mmkd_ros.data.dataset import open_dataset
from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.tools.evaluate import evaluate
from mmkd_ros.train.config import Config
from mmkd_ros.train.distill import distill
from mmkd_ros.train.distributed import Runtime
from mmkd_ros.train.loop import (
    LAST_NAME, check_validation_split, load_resume_state, resumed_config, run_finished,
)
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
              split: str = "test", bag_options: BagOptions | None = None, force: bool = False,
              given: Collection[str] = (), export_onnx: bool = True) -> ChainResult:
    """Extract (if ``bag``: one bag or several), train the teacher (unless ``teacher``), distill, export, evaluate.

    ``bag_options`` (default ``BagOptions()``) says how the bags are extracted, e.g. grouped and
    split by bag from a bag-splits file. ``force`` extracts again even when ``out_dir/dataset``
    holds the bags' cached extraction (the runs are trained afresh anyway unless ``resume``).
    ``given``: the config keys the user set explicitly; on ``resume`` each must agree with the
    runs' recorded configs (:func:`~mmkd_ros.train.loop.resumed_config`).
    ``export_onnx``: write ``student/student.onnx`` beside ``student.pt`` (parity-checked against
    PyTorch), which the student node runs without torch under ``backend:=auto``; a failed export is
    a warning, not an error (the node then runs ``student.pt``).
    Layout of ``out_dir``: ``dataset/`` (when extracted), ``teacher/``, ``student/``, ``eval/``.

    Every input is checked before the first slow stage (bags exist, the teacher is a readable
    teacher checkpoint that fits ``data``, ``out_dir`` is writable, there is something to resume);
    a failure leaves no empty folder behind: ``out_dir`` is removed again when this call created
    it and it holds no file.
    """
    bags = None if bag is None else [bag] if isinstance(bag, (str, Path)) else list(bag)
    if (not bags) == (data is None):
        raise ConfigError("give exactly one data source: --bag BAG or --data DATASET_DIR")
    if resume and force:
        raise ConfigError("--resume continues the runs in --out and --force starts them afresh; give one of them")
    out_dir = Path(out_dir)
    check_writable(out_dir)
    quiet_native_logs()
    for path in bags or []:
        resolve_bag_path(path)  # exists, and is a rosbag2 folder or a ROS 1 .bag
    if teacher is not None:  # before minutes of extraction, not after
        if not Path(teacher).is_file():
            raise CheckpointError(f"teacher checkpoint {teacher} does not exist; pass a teacher.pt or leave "
                                  "--teacher out")
        teacher_ckpt = load_checkpoint(teacher, role="teacher")
        if data is not None:
            info = open_dataset(data, config.data.val_fraction, config.data.test_fraction)
            check_compatible(teacher_ckpt, info.classes, info.channels, teacher)
    teacher_dir, student_dir = out_dir / "teacher", out_dir / "student"
    resumed: dict[str, Config] = {}  # stage -> the config its resumed run continues with
    if resume:
        stages = ([("teacher", teacher_dir)] if teacher is None else []) + [("distill", student_dir)]
        for stage, run_dir in stages:
            if (run_dir / LAST_NAME).is_file():
                state = load_resume_state(run_dir, "teacher" if stage == "teacher" else "student")
                resumed[stage] = resumed_config(state, config, given, stage, run_dir, quiet=True)
        if not resumed:
            runs = " or ".join(f"{d.name}/{LAST_NAME}" for _, d in stages)
            raise CheckpointError(f"nothing to resume in {out_dir}: no {runs} (run without --resume)")
    if data is not None:
        check_validation_split(resumed.get("distill", config), Path(data))
    created = not out_dir.exists()
    try:
        return _chain(config, out_dir, bags, data, teacher, split, bag_options, force, given, resumed, export_onnx)
    except BaseException:
        if created:
            _remove_empty_folders(out_dir)
        raise


def _chain(config: Config, out_dir: Path, bags: list[str | Path] | None, data: str | Path | None,
           teacher: str | Path | None, split: str, bag_options: BagOptions | None, force: bool,
           given: Collection[str], resumed: dict[str, Config], export_onnx: bool) -> ChainResult:
    with Runtime.start(resolve_device(config.device)) as runtime:
        dataset = Path(data) if data is not None else out_dir / "dataset"
        if bags:
            if runtime.is_main:
                dataset = extract_bags(bags, dataset, bag_options or BagOptions(), force=force, progress=True).path
            runtime.barrier()
        teacher_dir, student_dir = out_dir / "teacher", out_dir / "student"
        if teacher is None:
            if "teacher" in resumed and run_finished(teacher_dir, resumed["teacher"].teacher.epochs):
                teacher = teacher_dir / "teacher.pt"
            else:
                teacher = train_teacher(config, dataset, teacher_dir, resume="teacher" in resumed, given=given)
        student = distill(config, dataset, teacher, student_dir, resume="distill" in resumed, given=given)
        report = None
        if runtime.is_main and export_onnx:
            export_beside(student)
        if runtime.is_main:
            run_config = resumed.get("distill", config)  # a resumed student keeps its own method and splits
            data_cfg = run_config.data
            info = open_dataset(dataset, data_cfg.val_fraction, data_cfg.test_fraction)
            if split == "test" and not any(r.label >= 0 for r in info.split("test")):
                # A bag-splits file may hold no test bags (kept back for a later independent check).
                print(f"note: {dataset} has no labelled test pairs; evaluating on the val split", file=sys.stderr)
                split = "val"
            evaluate({"teacher": teacher, f"student[{run_config.distill.method}]": student}, dataset,
                     out_dir / "eval", split=split, device=config.device)
            report = out_dir / "eval" / "report.md"
        runtime.barrier()
        return ChainResult(dataset, Path(teacher), student, report)


def export_beside(student: Path) -> Path | None:
    """``student.onnx`` beside the ``student.pt`` checkpoint, or ``None`` (with one warning line) when
    the export fails: the checkpoint stays usable, and ``training/export.py`` can retry."""
    from mmkd_ros.tools.export import export_student  # deferred: imports torch.onnx (seconds)

    try:
        result = export_student(student, student.parent)
    except Exception as exc:  # noqa: BLE001 - any exporter failure leaves the .pt to run
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        print(f"warning: {student.parent / 'student.onnx'} was not exported ({reason}); the nodes run "
              f"{student.name}; retry with training/export.py {student}", file=sys.stderr)
        return None
    path = result.paths["onnx"]
    print(f"exported {path} (max |diff| to PyTorch {result.max_abs_diff['onnx']:.1e}; the student "
          "node runs it without torch)", file=sys.stderr)
    return path


def _remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and its sub-folders bottom-up as long as they hold no file (a failed run's shell)."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:  # holds a file: kept (a run that can be resumed, an extracted dataset)
            pass
    try:
        root.rmdir()
    except OSError:
        pass
