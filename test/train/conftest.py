"""Tiny pair datasets and a tiny training config shared by the training tests."""
from pathlib import Path

import pytest

from mmkd_ros.train import config as config_lib
from tiny_pairs import write_tiny_pairs

TINY_OVERRIDES = [
    "device=cpu", "data.input_size=[32,32]", "data.batch_size=8",
    "teacher.arch=teacher_resnet_tiny", "teacher.width=0.125", "teacher.epochs=2", "teacher.warmup_epochs=0",
    "student.arch=student_tiny", "student.width=0.5", "distill.epochs=2", "distill.warmup_epochs=0",
    "distill.disc_hidden=16", "distill.method=adv",  # the golden losses are the seed's method
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs") / "tiny", split=True)


@pytest.fixture(scope="session")
def tiny_config() -> config_lib.Config:
    return config_lib.load(None, TINY_OVERRIDES)
