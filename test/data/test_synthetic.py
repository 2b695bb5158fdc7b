"""The synthetic dual-camera recording: timing, determinism, classes, physics, bag contents."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from mmkd_ros.sim import synthetic
from mmkd_ros.data.ros_images import msg_to_array, stamp_to_ns
from mmkd_ros.core.errors import BagError

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(width=64, height=48, duration_s=6.0, scene_min_s=0.5, scene_max_s=0.8)


def read_bag(path):
    """topic -> list of (header stamp or log time, log time, message)."""
    out = {}
    with AnyReader([Path(path)]) as reader:
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = stamp_to_ns(msg.header.stamp) if hasattr(msg, "header") else log_ns
            out.setdefault(conn.topic, []).append((stamp, log_ns, msg))
    return out


def test_plan_timing_rates_jitter_drops_and_scenes():
    config = synthetic.SyntheticConfig(seed=3, duration_s=30.0, nir_drop_prob=0.1)
    plan = synthetic.plan_recording(config)
    rgb = [e for e in plan.events if e.kind == "rgb"]
    nir = [e for e in plan.events if e.kind == "nir"]
    labels = [e for e in plan.events if e.kind == "label"]
    assert len(rgb) == 30 * 15
    assert np.allclose(np.diff([e.stamp_ns for e in rgb]), 1e9 / 15, atol=1)
    nominal = {e.index: synthetic._BASE_TIME_NS + e.index * 1e9 / 15 for e in nir}
    offsets = np.array([e.stamp_ns - nominal[e.index] for e in nir]) / 1e6  # ms
    assert np.abs(offsets).max() <= 20.0 and offsets.std() > 8.0  # uniform within +-20 ms
    assert len(plan.dropped_nir) + len(nir) == 30 * 15
    assert 20 <= len(plan.dropped_nir) <= 70  # ~10 % of 450
    assert all(0 < e.log_ns - e.stamp_ns <= 12e6 for e in rgb + nir)  # receive after capture
    log_times = [e.log_ns for e in plan.events]
    assert log_times == sorted(log_times)
    assert [e.stamp_ns for e in labels] == [s.start_ns for s in plan.scenes]
    assert {s.label for s in plan.scenes} == set(synthetic.CLASSES)
    assert all(a.label != b.label for a, b in zip(plan.scenes, plan.scenes[1:]))
    lengths = [(s.end_ns - s.start_ns) / 1e9 for s in plan.scenes[:-1]]
    assert min(lengths) >= config.scene_min_s and max(lengths) <= config.scene_max_s


def test_frames_are_deterministic_for_a_seed_and_differ_between_seeds():
    def digest(seed):
        config = synthetic.SyntheticConfig(seed=seed, **SMALL)
        h = hashlib.sha256()
        for _, payload in synthetic.iter_messages(config):
            h.update(payload.tobytes() if isinstance(payload, np.ndarray) else payload.encode())
        return h.hexdigest()

    assert digest(5) == digest(5)
    assert digest(5) != digest(6)


@pytest.mark.parametrize("scenes_s", [(0.2, 0.2), (0.5, 0.8)], ids=["one frame per scene", "several"])
def test_parallel_render_gives_the_same_messages(scenes_s):
    # Scenes of one frame put jittered NIR frames of a scene after the next scene's first frame.
    config = synthetic.SyntheticConfig(seed=4, **{**SMALL, "rgb_rate_hz": 5.0, "nir_rate_hz": 5.0,
                                                  "scene_min_s": scenes_s[0], "scene_max_s": scenes_s[1]})
    serial = list(synthetic.iter_messages(config))
    parallel = list(synthetic.iter_messages(config, workers=2))
    assert [e for e, _ in parallel] == [e for e, _ in serial]
    for (event, a), (_, b) in zip(serial, parallel):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, event


def test_nir_separates_classes_that_look_alike_in_rgb():
    """The physics the demo relies on: same green in RGB, different NIR (red edge)."""
    def ratios(label):
        values = []
        for seed in range(6):
            rgb, nir = synthetic.render_pair(label, seed=seed, height=48, width=64,
                                             mixture=False)
            green = ((rgb[:, :, 1] / 255.0) ** 2.2).mean()
            values.append((nir.mean() / 255.0 / green, rgb.mean(axis=(0, 1))))
        return values

    veg, turf, paint, water, asphalt = (ratios(c) for c in (
        "live_vegetation", "artificial_turf", "green_paint", "water", "asphalt"))
    assert min(r for r, _ in veg) > max(r for r, _ in paint) > 0
    assert min(r for r, _ in paint) > max(r for r, _ in turf) * 0.9
    assert max(r for r, _ in water) < min(r for r, _ in asphalt)
    for group in (veg, turf, paint):  # all green-dominant in RGB
        assert all(colour[1] > colour[0] and colour[1] > colour[2] for _, colour in group)


@pytest.mark.parametrize("storage,nir_encoding,compressed", [
    ("mcap", "mono8", False), ("sqlite3", "mono16", True)])
def test_written_bag_has_the_contract_topics(tmp_path, storage, nir_encoding, compressed):
    config = synthetic.SyntheticConfig(seed=1, storage=storage, nir_encoding=nir_encoding,
                                       compressed_rgb=compressed, **SMALL)
    summary = synthetic.write_bag(tmp_path / "bag", config)
    topics = read_bag(tmp_path / "bag")
    rgb_topic = synthetic.RGB_COMPRESSED_TOPIC if compressed else synthetic.RGB_TOPIC
    assert set(topics) == {rgb_topic, synthetic.NIR_TOPIC, synthetic.LABEL_TOPIC}
    assert {t: len(v) for t, v in topics.items()} == summary.counts
    assert len(topics[rgb_topic]) == 90
    assert len(topics[synthetic.NIR_TOPIC]) == 90 - summary.dropped_nir
    rgb = msg_to_array(topics[rgb_topic][0][2])
    nir = msg_to_array(topics[synthetic.NIR_TOPIC][0][2])
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert nir.shape == (48, 64, 1)
    assert nir.dtype == (np.uint16 if nir_encoding == "mono16" else np.uint8)
    if nir_encoding == "mono16":
        assert np.all(nir % 16 == 0)  # 12-bit sensor in 16 bits
    labels = [m.data for _, _, m in topics[synthetic.LABEL_TOPIC]]
    assert labels == [s.label for s in summary.scenes]
    assert set(labels) == set(synthetic.CLASSES)
    for stamp, log_ns, _ in topics[rgb_topic] + topics[synthetic.NIR_TOPIC]:
        assert 0 < log_ns - stamp <= 12_000_000


def test_writer_refuses_to_overwrite(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(BagError, match="exists already"):
        synthetic.write_bag(tmp_path / "bag", synthetic.SyntheticConfig(**SMALL))


def test_make_demo_bag_cli(tmp_path):
    cmd = [sys.executable, str(REPO / "training" / "make_demo_bag.py"), "--out",
           str(tmp_path / "demo"), "--duration", "2", "--width", "32", "--height", "24",
           "--seed", "4", "--storage", "sqlite3", "--nir-encoding", "mono16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and (tmp_path / "demo" / "metadata.yaml").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and again.stderr.startswith("error: ")
    assert "exists already" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_failed_write_leaves_no_bag(tmp_path, monkeypatch):
    real = synthetic.iter_messages

    def broken(*args, **kwargs):
        yield from list(real(*args, **kwargs))[:5]
        raise KeyboardInterrupt  # Ctrl-C in the middle of the drive

    monkeypatch.setattr(synthetic, "iter_messages", broken)
    with pytest.raises(KeyboardInterrupt):
        synthetic.write_bag(tmp_path / "drive", synthetic.SyntheticConfig(seed=1, **SMALL))
    assert list(tmp_path.iterdir()) == []  # neither the bag nor its staging folder
    monkeypatch.undo()
    summary = synthetic.write_bag(tmp_path / "drive", synthetic.SyntheticConfig(seed=1, **SMALL))
    assert summary.path == tmp_path / "drive" and sorted(p.name for p in summary.path.iterdir())[-1] == "metadata.yaml"
    assert list(tmp_path.iterdir()) == [tmp_path / "drive"]
