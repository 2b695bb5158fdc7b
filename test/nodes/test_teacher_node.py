"""teacher_node as a real process: RGB and NIR paired live by the offline rule, then classified."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_msgs.msg import String

from mmkd_ros.data.pairing import StreamPairer, pair_nearest
from mmkd_ros.deploy.classifier import Classifier
from ros_testing import NodeProcess, image_msg, wait_for_subscribers, wait_until

pytestmark = pytest.mark.slow

RGB_TOPIC, NIR_TOPIC = "/test_teacher/rgb", "/test_teacher/nir"
OUT = "/teacher/classification"
MAX_DT_MS = 20
MS = 1_000_000
T0 = 10_000 * MS
RGB_STAMPS = [T0 + 50 * MS * i for i in range(10)]
# NIR 5 ms after RGB; none near RGB 4 (it stays unpaired); an extra NIR 25 ms after RGB 6 competes
# with the right one and must lose; the last frames of both streams are far later, they only make
# the pairs before them final (a live pair is final once the next frame of each stream is in) and
# their own pair stays pending. Two pairs never become final at once here: the node would rightly
# classify only the newer one (latest-frame policy).
NIR_STAMPS = sorted([t + 5 * MS for i, t in enumerate(RGB_STAMPS) if i != 4] + [RGB_STAMPS[6] + 25 * MS])
RGB_STAMPS.append(T0 + 2000 * MS)
NIR_STAMPS.append(T0 + 2010 * MS)


def rgb_frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    return np.repeat(np.repeat(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), 16, 0), 16, 1)  # 96x128


def nir_frame(j: int) -> np.ndarray:
    rng = np.random.default_rng(500 + j)
    return np.repeat(np.repeat(rng.integers(0, 65536, (6, 8, 1), dtype=np.uint16), 16, 0), 16, 1)


@pytest.fixture(scope="module")
def teacher(colcon_install, teacher_ckpt, student_ckpt, client, node_logs):
    client.subscribe(String, OUT)
    client.subscribe(DiagnosticArray, "/diagnostics")
    args = [
        "-r",
        "__node:=teacher",
        "-r",
        f"rgb/image:={RGB_TOPIC}",
        "-r",
        f"nir/image:={NIR_TOPIC}",
        "-p",
        f"model_path:={teacher_ckpt}",
        "-p",
        "device:=cpu",
        "-p",
        f"pair_max_dt_ms:={MAX_DT_MS}.0",
        "-p",
        "diagnostics_period:=0.2",
    ]
    node = NodeProcess(colcon_install, "teacher_node", args, node_logs)
    # Started alongside: the teacher node refuses an RGB-only student model.
    wrong = NodeProcess(
        colcon_install, "teacher_node", ["-p", f"model_path:={student_ckpt}", "-p", "device:=cpu"], node_logs
    )
    rgb_pub = client.publisher(Image, RGB_TOPIC, depth=1)
    nir_pub = client.publisher(Image, NIR_TOPIC, depth=1)
    assert wait_for_subscribers(rgb_pub, timeout=60) and wait_for_subscribers(nir_pub, timeout=10), (
        node.output()
    )
    yield node, rgb_pub, nir_pub, wrong
    node.interrupt()
    wrong.stop()
    assert node.stop() == 0, node.output()


def _out_stamps(client) -> list[int]:
    stamps = []
    for msg in client.messages(OUT):
        stamp = json.loads(msg.data)["header"]["stamp"]
        stamps.append(stamp["sec"] * 10**9 + stamp["nanosec"])
    return stamps


def test_pairs_like_offline_extraction(teacher, client, teacher_ckpt) -> None:
    node, rgb_pub, nir_pub, _ = teacher
    expected = pair_nearest(RGB_STAMPS, NIR_STAMPS, MAX_DT_MS * MS)
    assert 4 not in [i for i, _ in expected.pairs] and len(expected.pairs) == 10  # the case is what we think

    # Publish in stamp order. After each message, wait until the node has classified every pair
    # that is final by then (a local StreamPairer says which): deterministic even on a loaded
    # machine, where a burst would be rightly dropped by the depth-1 subscriptions.
    local = StreamPairer(MAX_DT_MS * MS, buffer_size=8)
    # Priming: pairs of equal stamps (final at once) a second before the sequence, until one is
    # classified; right after discovery the node's readers may not have matched our writers yet.
    for k in range(40):
        stamp = T0 - 1000 * MS + k * MS
        rgb_pub.publish(image_msg(rgb_frame(0), "rgb8", stamp))
        nir_pub.publish(image_msg(nir_frame(0), "mono16", stamp))
        local.push_rgb(stamp, None)
        local.push_nir(stamp, None)
        if wait_until(lambda: client.messages(OUT), 0.5):
            break
    wait_until(lambda: False, 0.5)  # let in-flight priming outputs land, then forget them
    client.clear(OUT)
    events = sorted(
        [(t, "rgb", i) for i, t in enumerate(RGB_STAMPS)] + [(t, "nir", j) for j, t in enumerate(NIR_STAMPS)]
    )
    final = 0
    for stamp, kind, index in events:
        if kind == "rgb":
            rgb_pub.publish(image_msg(rgb_frame(index), "rgb8", stamp, frame_id="rgb_optical"))
            final += len(local.push_rgb(stamp, index))
        else:
            nir_pub.publish(image_msg(nir_frame(index), "mono16", stamp, frame_id="nir_optical"))
            final += len(local.push_nir(stamp, index))
        assert wait_until(lambda final=final: len(client.messages(OUT)) >= final, 10.0), (
            final,
            stamp,
            kind,
            _out_stamps(client),
            node.output(),
        )

    # Every pair but the last (which no later frame makes final) was classified, in order, with
    # the RGB frame's header ...
    pairs = expected.pairs[:-1]
    assert _out_stamps(client) == [RGB_STAMPS[i] for i, _ in pairs]
    assert {json.loads(m.data)["header"]["frame_id"] for m in client.messages(OUT)} == {"rgb_optical"}
    # ... and from the right NIR frame: the scores are those of exactly that RGB/NIR pair.
    reference = Classifier.load(teacher_ckpt, device="cpu")
    for msg, (i, j) in zip(client.messages(OUT), pairs):
        content = json.loads(msg.data)
        want = reference.predict({"rgb": rgb_frame(i), "nir": nir_frame(j)}).scores
        assert list(content["scores"].values()) == pytest.approx(want, abs=1e-5), (i, j)
    wrong_nir = reference.predict({"rgb": rgb_frame(6), "nir": nir_frame(7)}).scores
    assert wrong_nir != pytest.approx(
        reference.predict({"rgb": rgb_frame(6), "nir": nir_frame(6)}).scores, abs=1e-5
    )

    def teacher_diagnostics():
        for diag in reversed(client.messages("/diagnostics")):
            for status in diag.status:
                if status.name.endswith("/teacher"):
                    values = {kv.key: kv.value for kv in status.values}
                    if int(values["frames_classified"]) >= len(pairs) + 1:  # + priming
                        return values
        return None

    values = wait_until(teacher_diagnostics, 5.0)
    assert values is not None
    assert int(values["unpaired_frames"]) >= 2  # RGB 4 and the extra NIR
    assert int(values["frames_dropped"]) == 0 and int(values["bad_frames"]) == 0


def test_rgb_only_model_is_refused(teacher) -> None:
    wrong = teacher[3]
    assert wrong.wait(timeout=60) == 2
    output = wrong.output()
    assert "cannot start" in output and "use student_node" in output and "Traceback" not in output
