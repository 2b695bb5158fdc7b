"""Fixtures of the node tests: the colcon install tree, an rclpy client, tiny models, logs on failure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/: ros_testing
import ros_testing  # noqa: E402
from ros_testing import RosClient, colcon_build, tiny_student_checkpoint, tiny_teacher_checkpoint

ros_testing.use_test_domain()


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built and installed by colcon (once per session, shared with test_colcon.py)."""
    return colcon_build(tmp_path_factory.getbasetemp() / "colcon")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def student_ckpt(models_dir: Path) -> Path:
    return tiny_student_checkpoint(models_dir / "student.pt")


@pytest.fixture(scope="session")
def teacher_ckpt(models_dir: Path) -> Path:
    return tiny_teacher_checkpoint(models_dir / "teacher.pt")


@pytest.fixture(scope="module")
def client():
    ros_client = RosClient()
    yield ros_client
    ros_client.close()


@pytest.fixture(scope="session")
def node_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("node_logs")
