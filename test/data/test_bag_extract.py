"""Bag reading and pair-dataset extraction on real bags (mcap, sqlite3, ROS 1) written here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2
from rosbags.typesys import Stores, get_typestore

from mmkd_ros.sim import synthetic
from mmkd_ros.data.bag import BagReader
from mmkd_ros.data.extract import BagOptions, extract_bags, extract_folder, extract_geotiffs
from mmkd_ros.data.image_files import read_image_file, write_png
from mmkd_ros.data.ros_images import array_to_image_msg
from mmkd_ros.data.manifest import MANIFEST_COLUMNS, load_dataset_info, read_manifest
from mmkd_ros.data.pairing import pair_nearest
from mmkd_ros.core.errors import BagError, DatasetError

REPO = Path(__file__).resolve().parents[2]
EXTRACT = REPO / "training" / "extract.py"
SMALL = dict(width=64, height=48, duration_s=6.0, scene_min_s=0.5, scene_max_s=0.8)
ROS2 = get_typestore(Stores.ROS2_JAZZY)
ROS1 = get_typestore(Stores.ROS1_NOETIC)
T0 = 1_600_000_000 * 10**9
MS = 10**6


def frames(count, period_ms, offset_ms=0.0, encoding="rgb8", shape=(24, 32), value=None):
    """``count`` image messages' ingredients: (stamp, array, encoding)."""
    out = []
    for k in range(count):
        channels = 3 if encoding in ("rgb8", "bgr8") else 1
        dtype = np.uint16 if encoding == "mono16" else np.uint8
        arr = np.full(shape + (channels,), k if value is None else value, dtype)
        out.append((T0 + int((k * period_ms + offset_ms) * MS), arr, encoding))
    return out


def write_custom_bag(path, topics, labels=(), ros1=False, storage="mcap"):
    """A bag with image topics {topic: frames(...)} and (stamp, text) labels on /scene/label."""
    store = ROS1 if ros1 else ROS2
    writer = Writer1(path) if ros1 else Writer2(
        path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap"
        else StoragePlugin.SQLITE3)
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr
    with writer:
        messages = []
        for topic, items in topics.items():
            conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
            for stamp, arr, encoding in items:
                if encoding in ("rgb8", "bgr8", "mono8", "mono16"):
                    msg = array_to_image_msg(arr, encoding, stamp, "cam", store)
                else:  # an encoding we do not decode: same bytes, other name
                    msg = array_to_image_msg(arr, "mono8", stamp, "cam", store)
                    msg.encoding = encoding
                messages.append((stamp, conn, msg, "sensor_msgs/msg/Image"))
        if labels:
            conn = writer.add_connection("/scene/label", "std_msgs/msg/String", typestore=store)
            string = store.types["std_msgs/msg/String"]
            messages += [(stamp, conn, string(data=text), "std_msgs/msg/String")
                         for stamp, text in labels]
        for log_ns, conn, msg, msgtype in sorted(messages, key=lambda m: m[0]):
            writer.write(conn, log_ns, serialize(msg, msgtype))
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small synthetic bag (mcap) and its summary."""
    path = tmp_path_factory.mktemp("bags") / "demo"
    return synthetic.write_bag(path, synthetic.SyntheticConfig(seed=2, **SMALL))


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def run_extract(*args):
    return subprocess.run([sys.executable, str(EXTRACT), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_synthetic_bag_extraction_accounts_for_every_frame(demo, tmp_path):
    result = extract_bags([demo.path], tmp_path / "pairs", progress=False)
    assert not result.reused
    rows = read_manifest(tmp_path / "pairs")
    info = load_dataset_info(tmp_path / "pairs")
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert info["classes"] == sorted(synthetic.CLASSES)
    assert info["modalities"]["rgb"] == {"topic": synthetic.RGB_TOPIC, "channels": 3,
                                         "dtype": "uint8"}
    assert info["modalities"]["nir"]["channels"] == 1
    assert info["counts"]["pairs"] == len(rows) and info["counts"]["unlabelled"] == 0

    # Every RGB and NIR frame is either in a pair or listed as dropped, with a reason.
    with BagReader(demo.path) as bag:
        stamps = bag.stamps([synthetic.RGB_TOPIC, synthetic.NIR_TOPIC])
    for topic, column in ((synthetic.RGB_TOPIC, "rgb_stamp_ns"),
                          (synthetic.NIR_TOPIC, "nir_stamp_ns")):
        dropped = [d["stamp_ns"] for d in info["dropped"] if d["topic"] == topic]
        assert sorted([r[column] for r in rows] + dropped) == sorted(stamps[topic].tolist())
    reasons = {d["reason"].split(" (")[0] for d in info["dropped"]}
    assert reasons <= {"no NIR frame within max_dt", "pair straddles a label change",
                       "its nearest RGB frame", "its nearest NIR frame",
                       "no RGB frame within max_dt"}

    # Pairs: within max_dt, the pairing rule's, labelled with the scene at their stamp.
    expected = pair_nearest(stamps[synthetic.RGB_TOPIC], stamps[synthetic.NIR_TOPIC], 30 * MS)
    assert len(rows) <= len(expected.pairs)
    assert all(abs(r["dt_ns"]) <= 30 * MS for r in rows)
    scenes = demo.scenes
    for row in rows:
        scene = next(s for s in scenes if s.start_ns <= row["rgb_stamp_ns"] < s.end_ns)
        assert row["label"] == scene.label
        assert row["source"] == str(demo.path.resolve())
    # Groups: one per scene segment, named <bag>:<index>, never mixing labels.
    groups = {}
    for row in rows:
        groups.setdefault(row["group"], set()).add(row["label"])
    assert all(len(labels) == 1 for labels in groups.values())
    assert sorted(groups, key=lambda g: int(g.split(":")[1]))[0] == "demo:0"
    assert len(groups) == len({s.index for s in scenes})  # every scene kept some pairs
    first = rows[0]
    rgb = read_image_file(tmp_path / "pairs" / first["rgb"])
    nir = read_image_file(tmp_path / "pairs" / first["nir"])
    assert rgb.shape == (48, 64, 3) and nir.shape == (48, 64, 1) and nir.dtype == np.uint8
    assert leftovers(tmp_path) == []


def test_cache_reuses_identical_bytes_and_notices_a_changed_byte(demo, tmp_path, capsys):
    copy = tmp_path / "demo"
    copy.mkdir()
    for f in demo.path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "pairs"
    first = extract_bags([copy], out, BagOptions(every=3))
    again = extract_bags([copy], out, BagOptions(every=3))
    assert again.reused and "reusing cached dataset" in capsys.readouterr().err
    assert again.info["cache_key"] == first.info["cache_key"]
    assert not extract_bags([copy], out, BagOptions(every=3), force=True, progress=False).reused

    # Same size, same mtime, one byte different (inside image data): not the same input.
    mcap = next(copy.glob("*.mcap"))
    stat = mcap.stat()
    data = bytearray(mcap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    mcap.write_bytes(bytes(data))
    os.utime(mcap, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = extract_bags([copy], out, BagOptions(every=3), progress=False)
    assert not changed.reused and changed.info["cache_key"] != first.info["cache_key"]
    assert not extract_bags([copy], out, BagOptions(every=2), progress=False).reused  # options
    assert leftovers(tmp_path) == []


def test_sqlite3_mono16_compressed_rgb_and_every(tmp_path):
    config = synthetic.SyntheticConfig(seed=4, storage="sqlite3", nir_encoding="mono16",
                                       compressed_rgb=True, **SMALL)
    summary = synthetic.write_bag(tmp_path / "bag", config)
    options = BagOptions(rgb_topic=synthetic.RGB_COMPRESSED_TOPIC, every=4)
    info = extract_bags([summary.path], tmp_path / "pairs", options, progress=False).info
    rows = read_manifest(tmp_path / "pairs")
    assert info["modalities"]["nir"]["dtype"] == "uint16"
    assert read_image_file(tmp_path / "pairs" / rows[0]["nir"]).dtype == np.uint16
    assert read_image_file(tmp_path / "pairs" / rows[0]["rgb"]).shape == (48, 64, 3)
    subsampled = [d for d in info["dropped"] if d["reason"] == "subsampled (--every 4)"]
    before = len(rows) + len(subsampled) // 2  # pairs before subsampling (2 frames each)
    assert len(rows) == -(-before // 4) and len(subsampled) % 2 == 0


def test_ros1_bag_with_labels_csv_and_several_bags(tmp_path):
    rgb = frames(20, 100)
    nir = frames(20, 100, offset_ms=8, encoding="mono8")
    ros1 = write_custom_bag(tmp_path / "run.bag", {"/rgb": rgb, "/nir": nir}, ros1=True)
    ros2 = write_custom_bag(tmp_path / "other" / "run", {"/rgb": rgb, "/nir": nir})
    csv = tmp_path / "labels.csv"
    csv.write_text("start_s,end_s,label,bag\n0.0,0.95,grass,\n1.0,1.55,road,run\n"
                   "1.55,2.0,water,elsewhere\n")
    options = BagOptions(rgb_topic="/rgb", nir_topic="/nir", labels_csv=str(csv))
    info = extract_bags([ros1, ros2], tmp_path / "pairs", options, progress=False).info
    rows = read_manifest(tmp_path / "pairs")
    assert [i["kind"] for i in info["inputs"]] == ["rosbag1", "rosbag2"]
    assert len(rows) == 40
    by_bag = {}
    for row in rows:
        by_bag.setdefault(row["group"].split(":")[0], []).append(row)
    assert sorted(by_bag) == ["run", "run#2"]
    for bag_rows in by_bag.values():
        # The bag starts at T0 (first message); frame k is at k * 100 ms.
        labels = [r["label"] for r in sorted(bag_rows, key=lambda r: r["rgb_stamp_ns"])]
        assert labels == ["grass"] * 10 + ["road"] * 6 + [""] * 4
        assert [r["group"].split(":")[1] for r in bag_rows] == ["0"] * 10 + ["1"] * 6 + ["2"] * 4
    assert info["counts"]["per_class"] == {"grass": 20, "road": 12}
    assert info["counts"]["unlabelled"] == 8
    rgb_image = read_image_file(tmp_path / "pairs" / rows[5]["rgb"])
    assert rgb_image.shape == (24, 32, 3) and (rgb_image == 5).all()  # the right frame


def test_single_label_for_a_bag_and_unlabelled_bags(tmp_path):
    bag = write_custom_bag(tmp_path / "b", {"/rgb": frames(5, 100),
                                            "/nir": frames(5, 100, 2, "mono16")})
    options = BagOptions(rgb_topic="/rgb", nir_topic="/nir", label="field")
    info = extract_bags([bag], tmp_path / "one", options, progress=False).info
    assert info["counts"]["per_class"] == {"field": 5}
    with pytest.raises(BagError, match="no labels for bag"):
        extract_bags([bag], tmp_path / "none", BagOptions(rgb_topic="/rgb", nir_topic="/nir"),
                     progress=False)
    free = BagOptions(rgb_topic="/rgb", nir_topic="/nir", allow_unlabelled=True)
    assert extract_bags([bag], tmp_path / "free", free, progress=False).info["classes"] == []
    assert not (tmp_path / "none").exists()


def test_label_topic_takes_the_latest_label_at_or_before_a_frame(tmp_path):
    bag = write_custom_bag(tmp_path / "b", {"/rgb": frames(6, 100), "/nir": frames(6, 100, 1)},
                           labels=[(T0 + 150 * MS, "a"), (T0 + 300 * MS, "b")])
    options = BagOptions(rgb_topic="/rgb", nir_topic="/nir", allow_unlabelled=True)
    rows = read_manifest(extract_bags([bag], tmp_path / "p", options, progress=False).path)
    assert [r["label"] for r in rows] == ["", "", "a", "b", "b", "b"]


def test_folder_of_pairs(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("crop", "weed"):
        (tmp_path / "in" / label).mkdir(parents=True)
        for k in range(3):
            write_png(tmp_path / "in" / label / f"{k}_rgb.png",
                      rng.integers(0, 255, (8, 10, 3), dtype=np.uint8))
            grey = rng.integers(0, 65535, (8, 10, 1), dtype=np.uint16)
            write_png(tmp_path / "in" / label / f"{k}_nir.png", grey)
    write_png(tmp_path / "in" / "weed" / "9_rgb.png", np.zeros((8, 10, 3), np.uint8))  # orphan
    info = extract_folder(tmp_path / "in", tmp_path / "pairs", progress=False).info
    rows = read_manifest(tmp_path / "pairs")
    assert len(rows) == 6 and info["classes"] == ["crop", "weed"]
    assert {r["group"] for r in rows} == {f"{c}/{k}" for c in ("crop", "weed") for k in range(3)}
    assert rows[0]["rgb_stamp_ns"] is None and info["modalities"]["nir"]["dtype"] == "uint16"
    assert [d["reason"] for d in info["dropped"]] == ["no matching <id>_nir file"]
    source = read_image_file(tmp_path / "in" / "crop" / "1_nir.png")
    np.testing.assert_array_equal(read_image_file(tmp_path / "pairs" / rows[1]["nir"]), source)
    assert extract_folder(tmp_path / "in", tmp_path / "pairs", progress=False).reused


def test_geotiff_bands_by_name_and_index(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    for label in ("forest", "river"):
        (tmp_path / "tiles" / label).mkdir(parents=True)
        for k in range(2):
            bands = rng.integers(0, 4000, (13, 6, 7), dtype=np.uint16)  # planar: bands first
            tifffile.imwrite(tmp_path / "tiles" / label / f"t{k}.tif", bands)
    info = extract_geotiffs(tmp_path / "tiles", tmp_path / "pairs", "B04,B03,B02", "B08",
                            progress=False).info
    rows = read_manifest(tmp_path / "pairs")
    assert len(rows) == 4 and info["modalities"]["rgb"]["dtype"] == "uint8"
    source = tifffile.imread(tmp_path / "tiles" / "forest" / "t0.tif")
    nir = read_image_file(tmp_path / "pairs" / rows[0]["nir"])
    np.testing.assert_array_equal(nir[:, :, 0], source[7])  # B08 = 8th band, kept 16-bit
    rgb = read_image_file(tmp_path / "pairs" / rows[0]["rgb"]).astype(float)
    scale = info["scaling"]["rgb_divisor"]
    expected_red = np.clip(source[3] * 255.0 / scale, 0, 255)
    assert np.abs(rgb[:, :, 0] - expected_red).max() <= 1.0
    by_index = extract_geotiffs(tmp_path / "tiles", tmp_path / "p2", "4,3,2", "8",
                                progress=False)
    assert by_index.info["counts"]["pairs"] == 4
    with pytest.raises(DatasetError, match="out of range, the file has 13 bands"):
        extract_geotiffs(tmp_path / "tiles", tmp_path / "p3", "B04,B03,B02", "B14",
                         progress=False)
    assert not (tmp_path / "p3").exists() and leftovers(tmp_path) == []


def test_cli_missing_and_corrupt_bags_exit_2_with_one_line(demo, tmp_path):
    missing = run_extract("--bag", tmp_path / "nope", "--out", tmp_path / "pairs")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: bag {tmp_path / 'nope'} does not exist: check the --bag path"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in demo.path.iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data if f.suffix == ".yaml" else data[: len(data) // 3])
    corrupt = run_extract("--bag", broken, "--out", tmp_path / "pairs")
    assert corrupt.returncode == 2, corrupt.stderr
    lines = corrupt.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read bag {broken}")
    assert not (tmp_path / "pairs").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["topic", "encoding", "max_dt", "labels", "label_topic"])
def test_bad_bag_inputs_fail_cleanly(tmp_path, case, capsys):
    import importlib.util
    import re

    from mmkd_ros.core.errors import run_cli

    spec = importlib.util.spec_from_file_location("extract_cli", EXTRACT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rgb = frames(8, 100)
    nir = frames(8, 100, offset_ms=50 if case == "max_dt" else 5,
                 encoding="32FC1" if case == "encoding" else "mono8")
    bag = write_custom_bag(tmp_path / "bag", {"/cam/rgb": rgb, "/cam/nir": nir},
                           labels=[] if case == "labels" else [(T0, "x")])
    args = ["--bag", str(bag), "--out", str(tmp_path / "pairs"), "--rgb-topic", "/cam/rgb",
            "--nir-topic", "/cam/nir"]
    if case == "topic":
        args[-1] = "/camera/nir"
    if case == "label_topic":
        args += ["--label-topic", "/labels"]
    assert run_cli(cli.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    expected = {
        "topic": "topic /camera/nir not found in bag .* \\(image topics: /cam/nir, /cam/rgb\\)",
        "encoding": "unsupported image encoding '32FC1'",
        "max_dt": "no RGB/NIR pair within --max-dt 0.03 s .*closest dt seen: 0.050 s",
        "labels": "no labels for bag .* pass --label-topic, --labels-csv or --label",
        "label_topic": "label topic /labels not found",
    }[case]
    assert re.search(expected, err), err
    assert not (tmp_path / "pairs").exists() and leftovers(tmp_path) == []


def test_refuses_to_overwrite_a_folder_that_is_not_a_dataset(demo, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="exists and is not a pair dataset"):
        extract_bags([demo.path], tmp_path / "precious", progress=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_dataset_json_is_plain_json_and_stable(demo, tmp_path):
    extract_bags([demo.path], tmp_path / "pairs", BagOptions(every=5), progress=False)
    info = json.loads((tmp_path / "pairs" / "dataset.json").read_text())
    assert info["format"] == "mmkd_ros/pair-dataset" and info["version"] == 1
    assert info["pairing"]["max_dt_ns"] == 30 * MS
    assert 0 < info["pairing"]["mean_abs_dt_ns"] <= info["pairing"]["max_abs_dt_ns"] <= 30 * MS
    assert info["cache_key"].startswith("sha256:")
    assert (tmp_path / "pairs").stat().st_mode & 0o755 == 0o755


# --------------------------------------------------------------------------------------------
# Split by bag (one bag = one unit: a field image, a block)


def small_bags(folder, names=("img_a", "img_b", "img_c")):
    """Bags of 6 pairs each, two label segments apiece (labels a, then b from 300 ms)."""
    return [write_custom_bag(folder / name, {"/rgb": frames(6, 100),
                                             "/nir": frames(6, 100, 5, "mono8")},
                             labels=[(T0, "a"), (T0 + 300 * MS, "b")]) for name in names]


def by_bag_options(**kwargs):
    return BagOptions(rgb_topic="/rgb", nir_topic="/nir", **kwargs)


def test_splits_file_makes_groups_bags_and_fixes_their_splits(tmp_path):
    from mmkd_ros.data.dataset import open_dataset
    from mmkd_ros.data.splits import SPLITS_FORMAT, read_bag_splits, write_bag_splits

    bags = small_bags(tmp_path / "bags")
    chosen = {"img_a": "train", "img_b": "val", "img_c": "test", "img_unused": "train"}
    splits = write_bag_splits(tmp_path / "splits.json", chosen, chosen_by="hand")
    payload = json.loads(splits.read_text())
    assert payload["format"] == SPLITS_FORMAT and payload["chosen_by"] == "hand"
    assert read_bag_splits(splits) == chosen
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file
    result = extract_bags(bags, tmp_path / "pairs", by_bag_options(splits=str(splits)),
                          progress=False)
    rows = read_manifest(result.path)
    assert len(rows) == 18 and {r["label"] for r in rows} == {"a", "b"}
    assert {(r["group"], r["split"]) for r in rows} == {
        ("img_a", "train"), ("img_b", "val"), ("img_c", "test")}
    assert result.info["options"]["splits"]["sha256"]
    # The dataset keeps the file's splits (nothing left to assign by group).
    info = open_dataset(result.path, val_fraction=0.5, test_fraction=0.5)
    assert {r.group: r.split for r in info.records} == {
        "img_a": "train", "img_b": "val", "img_c": "test"}


def test_group_by_bag_without_splits_file_leaves_splits_empty(tmp_path):
    bags = small_bags(tmp_path / "bags", ("img_a", "img_b"))
    result = extract_bags(bags, tmp_path / "pairs", by_bag_options(group_by="bag"),
                          progress=False)
    rows = read_manifest(result.path)
    assert {r["group"] for r in rows} == {"img_a", "img_b"}
    assert {r["split"] for r in rows} == {""}
    segment = extract_bags(bags, tmp_path / "seg", by_bag_options(), progress=False)
    assert {r["group"] for r in read_manifest(segment.path)} == {
        "img_a:0", "img_a:1", "img_b:0", "img_b:1"}
    assert segment.info["cache_key"] != result.info["cache_key"]
    with pytest.raises(DatasetError, match="--group-by must be one of segment, bag, got 'image'"):
        by_bag_options(group_by="image")


def test_bag_missing_from_splits_file_fails_before_extracting(tmp_path):
    from mmkd_ros.data.splits import write_bag_splits

    bags = small_bags(tmp_path / "bags", ("img_a", "img_b"))
    splits = write_bag_splits(tmp_path / "splits.json", {"img_a": "train"})
    with pytest.raises(DatasetError) as error:
        extract_bags(bags, tmp_path / "pairs", by_bag_options(splits=str(splits)),
                     progress=False)
    message = str(error.value)
    assert "'img_b'" in message and str(splits) in message and "\n" not in message
    assert not (tmp_path / "pairs").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["missing", "not_json", "format", "split", "shape"])
def test_malformed_splits_file_is_one_line_error(tmp_path, case):
    bags = small_bags(tmp_path / "bags", ("img_a",))
    splits = tmp_path / "splits.json"
    good = {"format": "mmkd_ros/bag-splits", "version": 1, "splits": {"img_a": "train"}}
    text = {"missing": None, "not_json": "{splits: img_a}",
            "format": json.dumps({**good, "format": "something/else"}),
            "split": json.dumps({**good, "splits": {"img_a": "validation"}}),
            "shape": json.dumps({**good, "splits": ["img_a"]})}[case]
    if text is not None:
        splits.write_text(text)
    with pytest.raises(DatasetError) as error:
        extract_bags(bags, tmp_path / "pairs", by_bag_options(splits=str(splits)),
                     progress=False)
    message = str(error.value)
    assert str(splits) in message and "\n" not in message
    expected = {"missing": "does not exist", "not_json": "is not valid JSON",
                "format": "is not a bag-splits file", "split": "'validation'; use one of",
                "shape": "must map bag names"}[case]
    assert expected in message
    assert not (tmp_path / "pairs").exists()


def test_editing_the_splits_file_rebuilds_the_dataset(tmp_path):
    from mmkd_ros.data.splits import write_bag_splits

    bags = small_bags(tmp_path / "bags", ("img_a", "img_b"))
    splits = write_bag_splits(tmp_path / "splits.json", {"img_a": "train", "img_b": "val"})
    options = by_bag_options(splits=str(splits))
    first = extract_bags(bags, tmp_path / "pairs", options, progress=False)
    assert extract_bags(bags, tmp_path / "pairs", options, progress=False).reused
    write_bag_splits(splits, {"img_a": "val", "img_b": "train"})
    again = extract_bags(bags, tmp_path / "pairs", options, progress=False)
    assert not again.reused and again.info["cache_key"] != first.info["cache_key"]
    assert {(r["group"], r["split"]) for r in read_manifest(again.path)} == {
        ("img_a", "val"), ("img_b", "train")}
    assert leftovers(tmp_path) == []


def test_cli_bag_takes_several_paths_per_flag_and_splits(tmp_path, capsys):
    import importlib.util

    from mmkd_ros.data.splits import write_bag_splits
    from mmkd_ros.core.errors import run_cli

    spec = importlib.util.spec_from_file_location("extract_cli", EXTRACT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    a, b, c = small_bags(tmp_path / "bags")
    splits = write_bag_splits(tmp_path / "splits.json",
                              {"img_a": "train", "img_b": "val", "img_c": "test"})
    topics = ["--rgb-topic", "/rgb", "--nir-topic", "/nir"]
    out = tmp_path / "pairs"
    assert run_cli(cli.main, ["--bag", str(a), str(b), "--bag", str(c), "--splits", str(splits),
                              "--out", str(out), *topics]) == 0
    rows = read_manifest(out)
    assert {(r["group"], r["split"]) for r in rows} == {
        ("img_a", "train"), ("img_b", "val"), ("img_c", "test")}
    grouped = tmp_path / "grouped"
    assert run_cli(cli.main, ["--bag", str(a), str(b), "--group-by", "bag", "--out",
                              str(grouped), *topics]) == 0
    assert {(r["group"], r["split"]) for r in read_manifest(grouped)} == {
        ("img_a", ""), ("img_b", "")}
    capsys.readouterr()
    assert run_cli(cli.main, ["--bag", str(a), "--splits", str(tmp_path / "nope.json"),
                              "--out", str(tmp_path / "x"), *topics]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bag-splits file") and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        cli.main(["--folder", str(tmp_path), "--splits", str(splits), "--out", str(tmp_path / "y")])
