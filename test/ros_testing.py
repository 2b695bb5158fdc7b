"""Helpers for tests that run the installed nodes as real processes over real DDS.

- one ROS domain per test session (from the pid), loopback discovery only, Fast DDS: test runs of
  several people on one machine do not hear each other;
- ``colcon build`` of this package into a temporary install tree, once per session;
- node processes started from that install tree (not from the source tree), logs kept for failures;
- an in-process rclpy client (own context) that publishes inputs and collects outputs;
- tiny checkpoints built through the package's own API (registry + checkpoint), never by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PACKAGE = "mmkd_ros"

#: One domain per pytest process (0 is the default everyone uses; 1..100 stays clear of the
#: port range that higher ids would share with ephemeral ports).
DOMAIN_ID = int(os.environ.get("MMKD_TEST_DOMAIN_ID", 1 + os.getpid() % 100))

ROS_ENV = {
    "ROS_DOMAIN_ID": str(DOMAIN_ID),
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
    "RCUTILS_COLORIZED_OUTPUT": "0",
    "PYTHONUNBUFFERED": "1",
    # Whole 640x480 frames over shared memory; without it best-effort readers lose most of them.
    "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO_ROOT / "config" / "fastdds_large_data.xml"),
}


def use_test_domain() -> None:
    """Put this process (its in-process rclpy client) in the session's isolated domain."""
    os.environ.update(ROS_ENV)
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated since Jazzy; the range above replaces it


# --------------------------------------------------------------------------------------------
# colcon
# --------------------------------------------------------------------------------------------
def colcon_build(base: Path) -> Path:
    """``colcon build`` this package into ``base`` (isolated layout); return the install base.

    ``--paths`` names the package folder itself, so colcon does not crawl the virtual environment
    inside the repository. Built once per session: a marker file says the tree is complete.
    """
    install = base / "install"
    marker = base / "build.ok"
    base.mkdir(parents=True, exist_ok=True)
    if marker.is_file():
        return install
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [
        str(VENV_BIN / "colcon"),
        "--log-base",
        str(base / "log"),
        "build",
        "--paths",
        str(REPO_ROOT),
        "--build-base",
        str(base / "build"),
        "--install-base",
        str(install),
        "--event-handlers",
        "console_direct-",
    ]
    result = subprocess.run(cmd, cwd=base, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"colcon build failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    marker.write_text(" ".join(cmd))
    return install


def installed_env(install: Path) -> dict[str, str]:
    """Environment of a shell that sourced ``install/setup.bash`` (what matters of it), in our domain.

    The source tree is deliberately NOT on PYTHONPATH: the nodes must run from the install tree.
    """
    prefix = install / PACKAGE
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ROS_LOCALHOST_ONLY")}
    env.update(ROS_ENV)
    env["PYTHONPATH"] = str(site)
    env["AMENT_PREFIX_PATH"] = str(prefix)
    env["PATH"] = f"{prefix / 'lib' / PACKAGE}{os.pathsep}{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ROS_HOME"] = str(install.parent / "ros_home")  # node log files away from ~/.ros
    return env


# --------------------------------------------------------------------------------------------
# Node processes
# --------------------------------------------------------------------------------------------
class NodeProcess:
    """An installed executable run with ``--ros-args``; output goes to a log file read on demand."""

    def __init__(self, install: Path, executable: str, ros_args: Sequence[str], log_dir: Path) -> None:
        self.executable = install / PACKAGE / "lib" / PACKAGE / executable
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{executable}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.cmd = [str(self.executable), "--ros-args", *ros_args]
        self._interrupted = False
        self.proc = subprocess.Popen(
            self.cmd,
            env=installed_env(install),
            cwd=log_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if not self.alive():
                return text in self.output()
            time.sleep(0.05)
        return False

    def interrupt(self) -> None:
        """SIGINT without waiting: stop several nodes at once, then ``stop()`` each."""
        if self.proc.poll() is None and not self._interrupted:
            self.proc.send_signal(signal.SIGINT)
            self._interrupted = True

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGINT (as Ctrl-C / launch does), then SIGKILL if it hangs; return the exit status."""
        self.interrupt()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------------------------
# In-process client
# --------------------------------------------------------------------------------------------
class RosClient:
    """An rclpy node in its own context, spun by a background thread; collects messages per topic."""

    def __init__(self, name: str = "mmkd_test_client") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        use_test_domain()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[tuple[float, Any]]] = {}
        self._lock = threading.Lock()
        self._spinning = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._spinning and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutdown race at the end of a test
                if not self._spinning:
                    return
                raise

    def subscribe(self, msg_type: type, topic: str, qos: Any = None) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)

        def callback(msg: Any, topic: str = topic) -> None:
            with self._lock:
                self.received.setdefault(topic, []).append((time.perf_counter(), msg))

        if topic in self.received:  # already subscribed (a module shares one client)
            return
        self.received[topic] = []
        self.node.create_subscription(msg_type, topic, callback, qos)

    def publisher(self, msg_type: type, topic: str, depth: int = 10, reliable: bool = True) -> Any:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        return self.node.create_publisher(msg_type, topic, QoSProfile(depth=depth, reliability=reliability))

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return [msg for _, msg in self.received.get(topic, [])]

    def timed(self, topic: str) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self.received.get(topic, []))

    def clear(self, topic: str) -> None:
        with self._lock:
            if topic in self.received:
                self.received[topic] = []

    def close(self) -> None:
        import rclpy

        self._spinning = False
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def wait_for_subscribers(publisher: Any, count: int = 1, timeout: float = 30.0) -> bool:
    return bool(wait_until(lambda: publisher.get_subscription_count() >= count, timeout))


# --------------------------------------------------------------------------------------------
# Messages and tiny models
# --------------------------------------------------------------------------------------------
def image_msg(array: Any, encoding: str, stamp_ns: int, frame_id: str = "camera") -> Any:
    """rclpy ``sensor_msgs/Image`` from an ``HxWxC`` array (RGB order for colour encodings)."""
    import numpy as np
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    msg = Image(
        header=Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=array.strides[0],
    )
    msg.data = array.tobytes()
    return msg


CLASSES = ["artificial_turf", "asphalt", "live_vegetation", "soil", "water"]


def tiny_student_checkpoint(path: Path, input_size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """A registered tiny student with random weights, saved through mmkd_ros.core.artifact."""
    import torch

    from mmkd_ros.models import build_model
    from mmkd_ros.core.artifact import make_checkpoint, save_checkpoint

    torch.manual_seed(seed)
    arch_args = {"num_classes": len(CLASSES), "in_channels": 3, "width": 0.5}
    model = build_model("student_tiny", **arch_args)
    checkpoint = make_checkpoint(
        role="student",
        arch="student_tiny",
        arch_args=arch_args,
        model=model,
        classes=CLASSES,
        modalities=["rgb"],
        channels={"rgb": 3},
        input_size=input_size,
        normalization={"rgb": {"mean": [0.45, 0.45, 0.45], "std": [0.25, 0.25, 0.25]}},
        config={},
    )
    return save_checkpoint(checkpoint, path)


def tiny_teacher_checkpoint(path: Path, input_size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """A registered tiny two-branch teacher (RGB + 1-channel NIR), saved through the package API."""
    import torch

    from mmkd_ros.models import build_model
    from mmkd_ros.core.artifact import make_checkpoint, save_checkpoint

    torch.manual_seed(seed)
    arch_args = {"num_classes": len(CLASSES), "rgb_channels": 3, "nir_channels": 1, "width": 0.25}
    model = build_model("teacher_resnet_tiny", **arch_args)
    checkpoint = make_checkpoint(
        role="teacher",
        arch="teacher_resnet_tiny",
        arch_args=arch_args,
        model=model,
        classes=CLASSES,
        modalities=["rgb", "nir"],
        channels={"rgb": 3, "nir": 1},
        input_size=input_size,
        normalization={
            "rgb": {"mean": [0.45, 0.45, 0.45], "std": [0.25, 0.25, 0.25]},
            "nir": {"mean": [0.5], "std": [0.25]},
        },
        config={},
    )
    return save_checkpoint(checkpoint, path)
