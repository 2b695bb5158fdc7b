"""teacher_node as a real process after time jumps and with input that stops or never pairs.

The node and a local :class:`StreamPairer` (same parameters) get the same stamps, so the test knows
how many pairs must be classified by each moment: a stalled pairer classifies none.
"""

from __future__ import annotations

import json
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image
from std_msgs.msg import String

from mmkd_ros.data.pairing import StreamPairer
from ros_testing import NodeProcess, image_msg, wait_for_subscribers, wait_until
import numpy as np

pytestmark = pytest.mark.slow

RGB_TOPIC, NIR_TOPIC = "/test_recovery/rgb", "/test_recovery/nir"
NAME = "teacher_recovery"
OUT = f"/{NAME}/classification"
MS = 1_000_000
MAX_DT_MS = 20
STALE_S = 0.6


def rgb_frame(i: int) -> np.ndarray:
    return np.random.default_rng(100 + i).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def nir_frame(j: int) -> np.ndarray:
    return np.random.default_rng(500 + j).integers(0, 65536, (96, 128, 1), dtype=np.uint16)


@pytest.fixture(scope="module")
def node(colcon_install, teacher_ckpt, client, node_logs):
    client.subscribe(String, OUT)
    client.subscribe(DiagnosticArray, "/diagnostics")
    args = [
        "-r", f"__node:={NAME}",
        "-r", f"rgb/image:={RGB_TOPIC}",
        "-r", f"nir/image:={NIR_TOPIC}",
        "-p", f"model_path:={teacher_ckpt}",
        "-p", "device:=cpu",
        "-p", f"pair_max_dt_ms:={MAX_DT_MS}.0",
        "-p", "diagnostics_period:=0.1",
        "-p", f"stale_timeout:={STALE_S}",
    ]
    process = NodeProcess(colcon_install, "teacher_node", args, node_logs)
    rgb_pub = client.publisher(Image, RGB_TOPIC, depth=1)
    nir_pub = client.publisher(Image, NIR_TOPIC, depth=1)
    assert wait_for_subscribers(rgb_pub, timeout=60) and wait_for_subscribers(nir_pub, timeout=10), (
        process.output()
    )
    yield process, rgb_pub, nir_pub
    process.interrupt()
    assert process.stop() == 0, process.output()


def settle() -> None:
    """Let every frame published so far reach the node before a time jump.

    The two topics are delivered independently: if the last NIR frame before a jump arrived after
    the first RGB frame behind it, the node would reset twice and lose a pair the local pairer
    (which sees the publication order) makes. A camera or bag at a loop point can do the same; the
    test wants one defined order.
    """
    time.sleep(0.3)


class Feed:
    """Publishes to the node and to a local pairer; waits until the node caught up."""

    def __init__(self, node, client) -> None:
        self.process, self.rgb_pub, self.nir_pub = node
        self.client = client
        self.local = StreamPairer(MAX_DT_MS * MS, buffer_size=8)
        self.final = 0

    def publish(self, kind: str, stamp: int) -> None:
        if kind == "rgb":
            self.rgb_pub.publish(image_msg(rgb_frame(stamp % 7), "rgb8", stamp))
            self.final += len(self.local.push_rgb(stamp, None))
        else:
            self.nir_pub.publish(image_msg(nir_frame(stamp % 5), "mono16", stamp))
            self.final += len(self.local.push_nir(stamp, None))
        # Across a reset the node may pair one frame fewer than the local pairer: which stream's
        # message triggers the reset depends on the order the two topics arrive in.
        slack = self.local.stats["resets"]
        assert wait_until(lambda: len(self.client.messages(OUT)) >= self.final - slack, 10.0), (
            f"{self.final} pairs expected, {len(self.client.messages(OUT))} classified; local pairer "
            f"{self.local.stats}; node {diagnostic_values(self.client)}\n{self.process.output()}"
        )

    def steady(self, start_ns: int, count: int) -> None:
        settle()
        for k in range(count):
            t = start_ns + 50 * MS * k
            self.publish("rgb", t)
            self.publish("nir", t + 3 * MS)


def diagnostic_values(client) -> dict:
    """Key-values of the teacher's newest /diagnostics status (for failure messages)."""
    status = latest_status(client, 0.0)
    return {kv.key: kv.value for kv in status.values} if status is not None else {}


def latest_status(client, since: float):
    """The teacher's newest /diagnostics status received after ``since`` (perf_counter)."""
    for received, diag in reversed(client.timed("/diagnostics")):
        if received < since:
            break
        for status in diag.status:
            if status.name.endswith(f"/{NAME}"):
                return status
    return None


def test_recovers_after_a_backward_jump_and_a_future_stamp(node, client) -> None:
    feed = Feed(node, client)
    # Priming until the node's readers have matched our writers (equal stamps pair at once).
    for k in range(40):
        stamp = 5_000 * MS + k * MS
        feed.rgb_pub.publish(image_msg(rgb_frame(0), "rgb8", stamp))
        feed.nir_pub.publish(image_msg(nir_frame(0), "mono16", stamp))
        if wait_until(lambda: client.messages(OUT), 0.5):
            break
    wait_until(lambda: False, 0.5)
    client.clear(OUT)
    feed.local = StreamPairer(MAX_DT_MS * MS, buffer_size=8)
    feed.local.push_rgb(stamp, None)
    feed.local.push_nir(stamp, None)

    t0 = 10_000 * MS
    feed.steady(t0, 8)
    before = len(client.messages(OUT))
    assert before >= 6
    # The bag loops: the same stamps again, far behind the newest seen.
    feed.steady(t0, 8)
    assert len(client.messages(OUT)) - before >= 6
    # One NIR frame stamped 1000 s ahead, then the cameras go on as before.
    settle()
    feed.publish("nir", t0 + 1_000_000_000 * MS)
    after_future = len(client.messages(OUT))
    feed.steady(t0 + 500 * MS, 12)
    assert len(client.messages(OUT)) - after_future >= 6, node[0].output()
    # Recovered for good: the pairs near the end of the run are classified.
    late = {json.loads(m.data)["header"]["stamp"]["nanosec"] for m in client.messages(OUT)[after_future:]}
    assert {(500 + 50 * k) * MS % 10**9 for k in (8, 9)} & late, late
    assert feed.local.stats["resets"] >= 3  # loop, future frame, and the step back after it
    assert node[0].wait_for_output("pairing restarted", 10.0), node[0].output()
    # The counters reach /diagnostics.
    since = time.perf_counter()
    status = wait_until(lambda: latest_status(client, since), 5.0)
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["pairer_resets"]) >= 3


def test_diagnostics_warn_when_input_stops(node, client) -> None:
    feed = Feed(node, client)
    feed.steady(20_000 * MS, 4)
    since = time.perf_counter()
    ok = wait_until(lambda: (s := latest_status(client, since)) is not None and s.level == DiagnosticStatus.OK, 5.0)
    assert ok, "diagnostics did not report OK while frames were classified"
    time.sleep(STALE_S + 0.3)
    since = time.perf_counter()
    status = wait_until(lambda: latest_status(client, since), 5.0)
    assert status.level == DiagnosticStatus.WARN and "no input for" in status.message, status.message
    assert RGB_TOPIC in status.message


def test_diagnostics_warn_and_log_when_nothing_pairs(node, client) -> None:
    feed = Feed(node, client)
    start = 30_000 * MS
    deadline = time.perf_counter() + STALE_S + 1.0
    k = 0
    while time.perf_counter() < deadline:  # NIR half a period off: 25 ms > pair_max_dt_ms
        t = start + 50 * MS * k
        feed.publish("rgb", t)
        feed.publish("nir", t + 25 * MS)
        time.sleep(0.02)
        k += 1
    since = time.perf_counter() - 0.15
    status = wait_until(lambda: latest_status(client, since), 5.0)
    assert feed.local.stats["pairs"] == 0
    assert status.level == DiagnosticStatus.WARN and "none paired" in status.message, status.message
    assert "25.0 ms apart" in status.message and "pair_max_dt_ms" in status.message
    assert RGB_TOPIC in status.message and NIR_TOPIC in status.message
    assert node[0].wait_for_output("none paired", 5.0), node[0].output()
