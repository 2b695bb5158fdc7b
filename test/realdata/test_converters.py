"""The real-data converters (CWFID, Houston 2018) against the source data they convert.

Each test converts a small part (2 CWFID images, 2 Houston blocks) into a tmp folder, reads the
bags back with rosbags and checks frames, stamps, labels and splits against the source files,
recomputed here independently of the converter's code. Skipped when ../shared/data is absent.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rosbags.highlevel import AnyReader

from bench.realdata import convert_cwfid as cwfid_to_bag, convert_houston as houston_to_bag
from bench.realdata.common import LABEL_TOPIC, NIR_TOPIC, RGB_TOPIC, Timing, apply_splits
from mmkd_ros.core.errors import DatasetError
from mmkd_ros.data.extract import extract_bags
from mmkd_ros.data.ros_images import msg_to_array, stamp_to_ns
from mmkd_ros.data.manifest import read_manifest

TIMING = Timing()


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """``topic -> [(receive ns, message)]`` in receive order."""
    out: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([path]) as reader:
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, reader.deserialize(raw, conn.msgtype)))
    return out


def frames_csv(out: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    with open(out / "frames.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["bag"], []).append(row)
    return rows


def majority_label(categories: np.ndarray, x: int, y: int, window: int, centre: int,
                   names: dict[int, str]) -> str:
    """The label at a window's centre square, written out again for the test."""
    lo_y, lo_x = y + window // 2 - centre // 2, x + window // 2 - centre // 2
    square = categories[lo_y:lo_y + centre, lo_x:lo_x + centre].ravel().tolist()
    value, count = Counter(square).most_common(1)[0]
    return names.get(value, "") if 3 * count >= 2 * centre * centre else ""


def check_recording(messages: dict[str, list[tuple[int, object]]], encodings: tuple[str, str],
                    size: int) -> tuple[list[int], list[int]]:
    """Encodings, sizes, stamp order and jitter of one bag; returns the RGB and NIR stamps."""
    rgb = [msg for _, msg in messages[RGB_TOPIC]]
    nir = [msg for _, msg in messages[NIR_TOPIC]]
    labels = messages[LABEL_TOPIC]
    assert len(rgb) == len(nir) == len(labels) > 0
    assert {m.encoding for m in rgb} == {encodings[0]} and {m.encoding for m in nir} == {encodings[1]}
    assert {(m.height, m.width) for m in rgb + nir} == {(size, size)}
    assert {m.header.frame_id for m in rgb}.isdisjoint({m.header.frame_id for m in nir})
    rgb_ns = [stamp_to_ns(m.header.stamp) for m in rgb]
    nir_ns = [stamp_to_ns(m.header.stamp) for m in nir]
    for stamps, topic in ((rgb_ns, RGB_TOPIC), (nir_ns, NIR_TOPIC)):
        assert np.all(np.diff(stamps) > 0), f"{topic} stamps are not increasing"
        received = [log for log, _ in messages[topic]]
        latency = np.array(received) - np.array(stamps)
        assert latency.min() >= TIMING.latency_ns[0] and latency.max() <= TIMING.latency_ns[1]
    dt = np.abs(np.array(rgb_ns) - np.array(nir_ns))
    assert dt.max() <= 2 * TIMING.jitter_ns and dt.max() > 0  # jittered, and bounded
    # Stamps sit on the trigger grid of the period, within the jitter.
    offsets = (np.array(rgb_ns) - rgb_ns[0]) % TIMING.period_ns
    offsets = np.minimum(offsets, TIMING.period_ns - offsets)
    assert offsets.max() <= 2 * TIMING.jitter_ns
    # Each label precedes both stamps of its frame and follows the previous frame's messages.
    label_ns = [log for log, _ in labels]
    assert all(lab < min(r, n) for lab, r, n in zip(label_ns, rgb_ns, nir_ns))
    assert all(lab > max(r, n) for lab, r, n in zip(label_ns[1:], rgb_ns, nir_ns))
    return rgb_ns, nir_ns


@pytest.mark.shared_data
def test_cwfid_two_images(shared_data: Path, tmp_path: Path) -> None:
    data = shared_data / "cwfid"
    out = tmp_path / "cwfid"
    window, stride, centre = 128, 64, 8
    summaries, splits = cwfid_to_bag.convert(data, out, ["002", "005"], window, stride, centre,
                                             n_val=1)
    assert splits == {"cwfid_002": "train", "cwfid_005": "val"}  # 005 has the larger crop share
    rows = frames_csv(out)
    per_image = ((966 - window) // stride + 1) * ((1296 - window) // stride + 1)
    names = {0: "soil", 1: "crop", 2: "weed"}
    seen_labels = Counter()
    for image_id in ("002", "005"):
        bag = out / "bags" / f"cwfid_{image_id}"
        messages = read_bag(bag)
        rgb_ns, _ = check_recording(messages, ("mono8", "mono8"), window)
        assert len(rgb_ns) == len(rows[bag.name]) == per_image
        image = cv2.imread(str(data / "images" / f"{image_id}_image.png"))  # BGR: B = R = red
        annotation = cv2.imread(str(data / "annotations" / f"{image_id}_annotation.png"))
        mask = cv2.imread(str(data / "masks" / f"{image_id}_mask.png"), cv2.IMREAD_GRAYSCALE)
        categories = np.where(mask > 0, 0, 3)  # soil, or vegetation nobody annotated
        categories[(annotation[:, :, 1] == 255) & (annotation[:, :, 2] == 0)] = 1
        categories[(annotation[:, :, 2] == 255) & (annotation[:, :, 1] == 0)] = 2
        for k, row in enumerate(rows[bag.name]):
            x, y = int(row["x"]), int(row["y"])
            visible = msg_to_array(messages[RGB_TOPIC][k][1])
            nir = msg_to_array(messages[NIR_TOPIC][k][1])
            assert visible.shape == nir.shape == (window, window, 1)
            assert np.array_equal(visible[:, :, 0], image[y:y + window, x:x + window, 2])
            assert np.array_equal(nir[:, :, 0], image[y:y + window, x:x + window, 1])
            expected = majority_label(categories, x, y, window, centre, names)
            assert messages[LABEL_TOPIC][k][1].data == row["label"] == expected
            seen_labels[expected] += 1
        # Consecutive frames are neighbouring windows (the camera moves one stride at a time).
        steps = [abs(int(a["x"]) - int(b["x"])) + abs(int(a["y"]) - int(b["y"]))
                 for a, b in zip(rows[bag.name], rows[bag.name][1:])]
        assert set(steps) == {stride}
    assert set(seen_labels) == {"soil", "crop", "weed", ""}  # all classes and unlabelled occur

    # The extractor reads the bags as a user's recording; the split goes on by bag.
    extracted = extract_bags(sorted((out / "bags").iterdir()), tmp_path / "pairs", progress=False)
    assert extracted.info["modalities"]["rgb"]["channels"] == 1
    assert extracted.info["dropped"] == []
    apply_splits(extracted.path, out / "splits.json")
    manifest = read_manifest(extracted.path)
    assert len(manifest) == 2 * per_image
    assert {(r["group"], r["split"]) for r in manifest} == set(splits.items())
    expected_labels = Counter(r["label"] for bag_rows in rows.values() for r in bag_rows)
    assert Counter(r["label"] for r in manifest) == expected_labels


@pytest.mark.shared_data
def test_cwfid_vegetation_trigger_and_denser_validation(shared_data: Path, tmp_path: Path) -> None:
    data = shared_data / "cwfid"
    window, stride, centre = 128, 64, 8
    summaries, splits = cwfid_to_bag.convert(data, tmp_path / "veg", ["002", "005"], window, stride, centre,
                                             n_val=1, trigger="vegetation", val_stride=32)
    rows = frames_csv(tmp_path / "veg")
    cwfid_to_bag.convert(data, tmp_path / "all", ["002"], window, stride, centre, n_val=0)
    all_rows = frames_csv(tmp_path / "all")
    mask = cv2.imread(str(data / "masks" / "002_mask.png"), cv2.IMREAD_GRAYSCALE)
    kept = rows["cwfid_002"]
    # Every recorded window has vegetation (mask 0) under at least 2/3 of its centre square, and
    # every such window of the full path was recorded, with the same place on the path.
    def vegetation(x: int, y: int) -> bool:
        top, left = y + (window - centre) // 2, x + (window - centre) // 2
        return (mask[top:top + centre, left:left + centre] == 0).mean() >= 2 / 3
    expected = [(r["x"], r["y"], r["label"]) for r in all_rows["cwfid_002"] if vegetation(int(r["x"]), int(r["y"]))]
    assert [(r["x"], r["y"], r["label"]) for r in kept] == expected
    assert 0 < len(kept) < len(all_rows["cwfid_002"])
    assert "soil" not in {r["label"] for r in kept}
    # The validation image is driven on the denser path: its windows lie on a 32 px grid, not only 64.
    assert splits["cwfid_005"] == "val"
    assert any(int(r["x"]) % 64 == 32 for r in rows["cwfid_005"])
    assert all(int(r["x"]) % 64 == 0 for r in kept)
    with pytest.raises(DatasetError, match="trigger"):
        cwfid_to_bag.convert(data, tmp_path / "bad", ["002"], trigger="leaves", n_val=0)


@pytest.mark.shared_data
def test_houston_two_blocks(shared_data: Path, tmp_path: Path) -> None:
    data = shared_data / "houston2018" / "houston2018_dev.npz"
    out = tmp_path / "houston"
    block, window, stride, centre = 128, 32, 4, 4
    wanted = ["houston_r0c0", "houston_r2c1"]
    summaries, splits = houston_to_bag.convert(data, out, wanted, block, window, stride, centre,
                                               n_val=3)
    assert sorted(splits) == wanted
    info = json.loads((out / "splits.json").read_text())
    assert set(info["val_blocks"]).isdisjoint(name for name, s in splits.items() if s == "train")
    with np.load(data) as npz:
        rgb, hsi, labels, blanked = npz["rgb"], npz["hsi"], npz["labels"], npz["blanked"]
    # NIR: mean of bands 31..40 (1-based), bilinear x4 with pixel centres aligned (torch here).
    coarse = torch.from_numpy(hsi[:, :, 30:40].astype(np.float64).mean(axis=2))[None, None]
    nir_full = F.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False)[0, 0]
    nir_full = nir_full.numpy()
    names = {c: f"class_{c:02d}" for c in range(1, 13)}
    rows = frames_csv(out)
    for name in wanted:
        messages = read_bag(out / "bags" / name)
        rgb_ns, _ = check_recording(messages, ("rgb8", "mono16"), window)
        assert len(rgb_ns) == len(rows[name])
        positions = len(range(0, block - window + 1, stride)) ** 2
        assert 0 < len(rgb_ns) < positions  # both blocks touch withheld cells
        for k, row in enumerate(rows[name]):
            x, y = int(row["x"]), int(row["y"])
            # Inside one block: this one, never across a boundary.
            assert f"houston_r{y // block}c{x // block}" == name
            assert (x + window - 1) // block == x // block and (y + window - 1) // block == y // block
            # No withheld pixel within 2 px (bilinear reach of the coarse NIR).
            assert not blanked[max(0, y - 2):y + window + 2, max(0, x - 2):x + window + 2].any()
            visible = msg_to_array(messages[RGB_TOPIC][k][1])
            nir = msg_to_array(messages[NIR_TOPIC][k][1])
            assert np.array_equal(visible, rgb[y:y + window, x:x + window])
            assert nir.dtype == np.uint16
            assert np.abs(nir[:, :, 0] - nir_full[y:y + window, x:x + window]).max() <= 1.0
            expected = majority_label(labels, x, y, window, centre, names)
            assert messages[LABEL_TOPIC][k][1].data == row["label"] == expected


def test_houston_validation_choice() -> None:
    """A class confined to one block keeps that block in train; the val share is near 20%."""
    counts = {f"b{k}": np.array([10, 10, 0]) for k in range(9)}
    counts["b9"] = np.array([10, 10, 50])  # the only block with class 2
    val = houston_to_bag.choose_val(counts, 2)
    assert "b9" not in val and len(val) == 2
    counts["b8"] = np.array([10, 10, 50])  # now class 2 can be on both sides
    assert len({"b8", "b9"} & set(houston_to_bag.choose_val(counts, 2))) == 1


def test_cwfid_validation_choice() -> None:
    """Evenly spaced ranks of crop share: low, middle and high crop images all reach val."""
    shares = {f"{k:03d}": k / 10 for k in range(10)}
    assert cwfid_to_bag.choose_val(shares, 2) == ["002", "007"]
    assert cwfid_to_bag.choose_val(shares, 0) == []
