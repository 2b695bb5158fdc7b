"""Finished runs of a study, reused or made: one teacher or student run per folder.

A run is reused, or an interrupted one continued, only when its ``run.json`` records this code,
resolved config, inputs (the dataset's cache key, the teacher file) and thread count
(:func:`~mmkd_ros.train.loop.claim_run`); any other run is deleted and made again.
"""
from __future__ import annotations

from pathlib import Path

from mmkd_ros.data.dataset import open_dataset
from mmkd_ros.train.config import Config, to_dict
from mmkd_ros.train.loop import claim_run, file_digest, finish_run, run_identity


def trained_teacher(config: Config, dataset: str | Path, out: str | Path, reuse: bool = True) -> Path:
    """The teacher of ``dataset`` in ``out``: reused, resumed or trained."""
    from mmkd_ros.train.teacher import train_teacher

    out = Path(out)
    state = claim_run(out, run_identity(to_dict(config), {"dataset": open_dataset(dataset).cache_key}), reuse)
    if state == "reuse":
        return out / "teacher.pt"
    teacher = train_teacher(config, dataset, out, resume=state == "resume")
    finish_run(out)
    return Path(teacher)


def distilled(config: Config, dataset: str | Path, teacher: str | Path, out: str | Path, reuse: bool = True) -> Path:
    """A student (or ``ce``/``twin``) of ``teacher`` on ``dataset`` in ``out``: reused, resumed or trained."""
    from mmkd_ros.train.distill import distill

    out = Path(out)
    inputs = {"dataset": open_dataset(dataset).cache_key, "teacher": file_digest(teacher)}
    state = claim_run(out, run_identity(to_dict(config), inputs), reuse)
    if state == "reuse":
        return out / "student.pt"
    student = distill(config, dataset, teacher, out, resume=state == "resume")
    finish_run(out)
    return Path(student)
