"""ament_python set-up of mmkd_ros: launch/ and config/ go to share/, nodes to lib/mmkd_ros."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mmkd_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="mmkd_ros maintainers",
    maintainer_email="maintainers@mmkd-ros.invalid",
    description="Cross-modal RGB+NIR knowledge distillation for ROS 2 perception",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "student_node = mmkd_ros.nodes.student_node:main",
            "teacher_node = mmkd_ros.nodes.teacher_node:main",
            "replay_node = mmkd_ros.nodes.replay_node:main",
        ],
    },
)
