"""Plumbing shared by the mmkd_ros nodes: parameters, QoS, the latest-frame worker, statistics, exit.

Why a module of its own: the student and teacher nodes differ only in what they subscribe to and
how frames become model inputs. Everything else (how parameters are declared and checked, how a
bad start ends in one line instead of a traceback, how stale frames are dropped and counted) must
behave identically in both, so it lives here once.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from mmkd_ros.core.errors import ConfigError, MmkdError

T = TypeVar("T")

#: Exit status of a node that could not start (same as the command-line entry points).
EXIT_BAD_START = 2


class ParameterError(ConfigError):
    """A node parameter has a wrong type, range or value; the message names it and the fix."""


# --------------------------------------------------------------------------------------------
# QoS
# --------------------------------------------------------------------------------------------
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def camera_qos(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    """Sensor-data QoS with depth 1: a slow consumer gets the newest frame, never a queue of stale ones.

    Best effort (the default) matches both best-effort and reliable camera drivers (a reliable
    subscriber would not match a best-effort driver); keep-last 1 means the middleware overwrites
    what we have not taken yet instead of delivering it late. ``reliable`` keeps keep-last 1 (still
    no queue) but has lost fragments of large frames resent: for a reliable driver whose DDS
    profile cannot be changed (see config/fastdds_large_data.xml).
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = 5) -> QoSProfile:
    """Reliable keep-last QoS for what the nodes publish: matches reliable and best-effort readers."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description and constraints, declared with a descriptor.

    Kept as data (each node module has a ``PARAMETERS`` tuple) so that tests can check the YAML
    parameter files against what the node really declares, without starting it.
    """

    name: str
    default: Any
    description: str
    read_only: bool = True
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: Optional[tuple[str, ...]] = None
    type: Optional[Parameter.Type] = None  # needed where the default cannot tell (empty lists)

    def descriptor(self) -> ParameterDescriptor:
        """The ROS descriptor: description, read-only flag, numeric range, choices as constraint text."""
        desc = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.type is not None:
            desc.type = self.type.value
        if self.choices:
            desc.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.min_value is not None or self.max_value is not None:
            low = -math.inf if self.min_value is None else self.min_value
            high = math.inf if self.max_value is None else self.max_value
            if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
                raise TypeError(f"range given for non-numeric parameter {self.name}")
            if isinstance(self.default, int):
                desc.integer_range = [
                    IntegerRange(
                        from_value=int(max(low, -(2**63))), to_value=int(min(high, 2**63 - 1)), step=0
                    )
                ]
            else:
                desc.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
                ]
        return desc


def declare_parameters(node: Node, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Declare every parameter of ``specs`` on ``node`` and return their values by name.

    rclpy checks types and numeric ranges itself at declaration; its exceptions are turned into a
    :class:`ParameterError` of one line. Choices (enumerations) are checked here.
    """
    values: dict[str, Any] = {}
    for spec in specs:
        # An empty list does not tell its element type: declare by type, then fall back to the default.
        untyped_default = spec.type is not None and spec.default == []
        try:
            value = node.declare_parameter(
                spec.name, spec.type if untyped_default else spec.default, spec.descriptor()
            ).value
        except rclpy.exceptions.ParameterException as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ParameterError(f"parameter '{spec.name}': {detail}") from None
        if value is None and untyped_default:
            value = list(spec.default)
        if spec.choices is not None and value not in spec.choices:
            raise ParameterError(
                f"parameter '{spec.name}' is '{value}'; use one of: {', '.join(spec.choices)}"
            )
        values[spec.name] = value
    return values


# --------------------------------------------------------------------------------------------
# Latest-frame worker
# --------------------------------------------------------------------------------------------
class LatestSlot(Generic[T]):
    """A one-item mailbox between the subscription callback and the inference worker.

    ``put`` replaces an item the worker has not taken yet and counts it as dropped: the worker
    always classifies the newest frame, latency never builds up behind a queue, and the executor
    thread is free to take the next message from the middleware at once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float = 0.5) -> Optional[T]:
        """The newest item, or None after ``timeout`` seconds or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class SequenceGapCounter:
    """Counts messages lost before they reached us, from the publishers' sequence numbers.

    With depth-1 best-effort QoS the middleware silently overwrites frames we were too slow to
    take; the gap in ``publication_sequence_number`` (per publisher) is the only trace of them.
    RMWs that do not report sequence numbers give None and nothing is counted.
    """

    def __init__(self) -> None:
        self._last: dict[bytes, int] = {}
        self.lost = 0

    def update(self, msg_info: Optional[dict]) -> None:
        if not msg_info:
            return
        seq = msg_info.get("publication_sequence_number")
        if seq is None or seq <= 0 or seq >= 2**63:  # unsupported rmw reports 0 or UINT64_MAX
            return
        gid = msg_info.get("publisher_gid") or {}
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
        last = self._last.get(key)
        if last is not None and seq > last + 1:
            self.lost += seq - last - 1
        if last is None or seq > last:
            self._last[key] = seq


#: the stages of a classified frame, in order, as /diagnostics reports them (:func:`stage_key`)
FRAME_STAGES: tuple[str, ...] = ("wait", "decode", "predict", "publish")


def stage_key(stage: str) -> str:
    """The /diagnostics key of a stage's median, e.g. ``stage_predict_p50_ms``."""
    return f"stage_{stage}_p50_ms"


class FrameStats:
    """Thread-safe counters and a latency window for diagnostics (updated by callback and worker)."""

    def __init__(self, window: int = 300) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.bad = 0
        self.rate_skipped = 0
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._done_times: deque[float] = deque(maxlen=window)
        self._stages_ms: dict[str, deque[float]] = {}
        self._window = window

    def count(self, field: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + n)

    def record(self, latency_ms: float, stages_ms: Optional[dict[str, float]] = None) -> None:
        """One classified frame: its receive -> result time and, optionally, what each stage of
        it took (``{"wait": ..., "decode": ...}``, reported as ``stage_<name>_p50_ms``)."""
        with self._lock:
            self.processed += 1
            self._latencies_ms.append(latency_ms)
            self._done_times.append(time.monotonic())
            for stage, ms in (stages_ms or {}).items():
                self._stages_ms.setdefault(stage, deque(maxlen=self._window)).append(ms)

    def snapshot(self, horizon_s: float = 5.0) -> dict[str, float]:
        """p50/p95 latency (ms) over the window and the output rate (Hz) over the last ``horizon_s``."""
        with self._lock:
            lat = sorted(self._latencies_ms)
            now = time.monotonic()
            recent = [t for t in self._done_times if now - t <= horizon_s]
            counts = {
                "received": self.received,
                "processed": self.processed,
                "bad": self.bad,
                "rate_skipped": self.rate_skipped,
            }
            stages = {stage_key(stage): percentile(sorted(values), 50.0)
                      for stage, values in self._stages_ms.items()}
        rate = 0.0
        if len(recent) >= 2 and recent[-1] > recent[0]:
            rate = (len(recent) - 1) / (recent[-1] - recent[0])
        return {
            **counts,
            "latency_p50_ms": percentile(lat, 50.0),
            "latency_p95_ms": percentile(lat, 95.0),
            "rate_hz": rate,
            **stages,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


# --------------------------------------------------------------------------------------------
# Start and exit
# --------------------------------------------------------------------------------------------
def run_node(node_factory: Callable[[], Node], args: Optional[list[str]] = None) -> int:
    """Create the node, call its ``start()``, spin until shutdown; return the process exit status.

    A node that cannot start (bad parameter, model file, device) logs ONE fatal line naming the
    parameter and the fix, and the process exits with :data:`EXIT_BAD_START`: a launch file or a
    supervisor sees the failure, a person reads one line instead of a traceback.
    """
    rclpy.init(args=args)
    node: Optional[Node] = None
    status = 0
    try:
        node = node_factory()
        node.start()  # type: ignore[attr-defined]
        rclpy.spin(node)
    except MmkdError as exc:
        name = node.get_name() if node is not None else "mmkd_ros"
        message = " ".join(str(exc).split())  # one line, whatever the library wrote
        rclpy.logging.get_logger(name).fatal(f"cannot start: {message}")
        status = EXIT_BAD_START
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # Ctrl-C (or launch's SIGINT) while start() loads the model: rclpy's signal handler has
        # already shut the context down, so the next rcl call fails. That is a normal exit.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            stop = getattr(node, "stop", None)
            if stop is not None:
                stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return status


def main_for(node_factory: Callable[[], Node]) -> None:
    """Console-script body: run the node with ``sys.argv`` and exit with its status."""
    status = run_node(node_factory, sys.argv)
    if status == EXIT_BAD_START:
        # A node that never started leaves at once, without interpreter teardown: once in several
        # test runs under heavy load such a process ended with a status other than 2 after its
        # one fatal line (cause not pinned down; teardown of DDS/torch threads is the suspect).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
