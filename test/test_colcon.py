"""colcon builds the package; the install tree has what a ROS 2 user runs (launch, config, nodes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ros_testing import PACKAGE, REPO_ROOT, colcon_build

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Same base folder as test/nodes/conftest.py: whichever runs first builds, the other reuses it.
    return colcon_build(tmp_path_factory.getbasetemp() / "colcon")


def test_colcon_install_tree(colcon_install: Path) -> None:
    prefix = colcon_install / PACKAGE
    share = prefix / "share" / PACKAGE
    assert (colcon_install / "setup.bash").is_file()
    assert (share / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    for launch_file in sorted((REPO_ROOT / "launch").glob("*.launch.py")):
        assert (share / "launch" / launch_file.name).is_file(), launch_file.name
    for name in ("student.yaml", "teacher.yaml", "replay.yaml", "mmkd.rviz"):
        assert (share / "config" / name).is_file(), name
    for executable in ("student_node", "teacher_node", "replay_node"):
        path = prefix / "lib" / PACKAGE / executable
        assert path.is_file() and os.access(path, os.X_OK), executable
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    assert (site / PACKAGE / "nodes" / "student_node.py").is_file()
    assert (site / PACKAGE / "deploy" / "classifier.py").is_file()
    assert (site / PACKAGE / "core" / "preprocess.py").is_file()
