"""Bags and label files as other tools write them: old rosbag2 layouts, OpenCV-type encodings,
a damaged frame, spreadsheet CSVs, mismatched cameras, unsupported containers, device clocks.

Every bag here is a real bag written with rosbags; each case either extracts or ends in one
``error:`` line (exit 2 from the CLI) and leaves no output behind.
"""
import json
import re
import sqlite3

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mmkd_ros.core.errors import BagError, DatasetError
from mmkd_ros.data.bag import BagReader, read_labels_csv
from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.data.manifest import load_dataset_info, read_manifest
from mmkd_ros.data.ros_images import array_to_compressed_msg, array_to_image_msg
from extract_cli import assert_one_error_line, run_extract

ROS2 = get_typestore(Stores.ROS2_HUMBLE)
T0 = 1_700_000_000 * 10**9
MS = 10**6
TOPICS = dict(rgb_topic="/cam/rgb", nir_topic="/cam/nir")


def image(encoding, stamp, shape=(24, 32), value=7):
    """An Image message; encodings we do not build are mono bytes renamed."""
    channels = 3 if encoding in ("rgb8", "bgr8") else 1
    dtype = np.uint16 if encoding in ("mono16", "16UC1") else np.uint8
    build = {"8UC1": "mono8", "16UC1": "mono16"}.get(encoding, encoding)
    msg = array_to_image_msg(np.full(shape + (channels,), value, dtype), build, stamp, "cam", ROS2)
    msg.encoding = encoding
    return msg


def write_bag(path, count=6, rgb="rgb8", nir="mono8", nir_shape=(24, 32), receive_offset_ns=0,
              storage=StoragePlugin.MCAP, damage=None):
    """``count`` RGB/NIR frames 100 ms apart (NIR 5 ms later); receive = header + offset.

    ``damage(k, msg)`` may alter the k-th NIR message before it is written.
    """
    with Writer(path, version=8, storage_plugin=storage) as writer:
        rgb_conn = writer.add_connection("/cam/rgb", "sensor_msgs/msg/Image", typestore=ROS2)
        nir_conn = writer.add_connection("/cam/nir", "sensor_msgs/msg/Image", typestore=ROS2)
        for k in range(count):
            stamp = T0 + k * 100 * MS
            for conn, enc, shape, dt in ((rgb_conn, rgb, (24, 32), 0),
                                         (nir_conn, nir, nir_shape, 5 * MS)):
                msg = image(enc, stamp + dt, shape, value=k)
                if damage and conn is nir_conn:
                    damage(k, msg)
                writer.write(conn, stamp + dt + receive_offset_ns,
                             ROS2.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def cli_args(bag, out, *extra):
    return ["--bag", bag, "--out", out, "--rgb-topic", "/cam/rgb", "--nir-topic", "/cam/nir",
            *extra]


# --------------------------------------------------------------------------------------------
# 1. rosbag2 sqlite3 as ROS 2 Foxy/Galactic/Humble write it: no message definitions stored


def humble_bag(path):
    """A sqlite3 bag in Humble's layout (schema 3, metadata version 5, no definitions)."""
    write_bag(path, storage=StoragePlugin.SQLITE3)
    db = next(path.glob("*.db3"))
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE message_definitions")
        conn.execute("ALTER TABLE topics DROP COLUMN type_description_hash")
        conn.execute("UPDATE schema SET schema_version = 3, ros_distro = 'humble'")
    meta = path / "metadata.yaml"
    text = re.sub(r"\n\s*type_description_hash:[^\n]*(\n\s+RIHS01_\w+)?", "",
                  meta.read_text())
    meta.write_text(re.sub(r"version: \d+", "version: 5", text, count=1))
    assert "RIHS01" not in meta.read_text()
    return path


def test_humble_sqlite3_bag_without_definitions_extracts(tmp_path):
    bag = humble_bag(tmp_path / "humble")
    result = extract_bags([bag], tmp_path / "pairs", BagOptions(label="x", **TOPICS),
                          progress=False)
    assert result.info["counts"]["pairs"] == 6
    assert result.info["modalities"]["rgb"]["channels"] == 3
    assert result.info["modalities"]["nir"]["channels"] == 1


# --------------------------------------------------------------------------------------------
# 2. 8UC1 / 16UC1 NIR streams


@pytest.mark.parametrize("encoding,dtype", [("8UC1", "uint8"), ("16UC1", "uint16")])
def test_opencv_type_encodings_extract_like_mono(tmp_path, encoding, dtype):
    bag = write_bag(tmp_path / "bag", count=3, nir=encoding)
    info = extract_bags([bag], tmp_path / "pairs", BagOptions(label="x", **TOPICS),
                        progress=False).info
    assert info["counts"]["pairs"] == 3 and info["modalities"]["nir"]["dtype"] == dtype


# --------------------------------------------------------------------------------------------
# 3. one damaged frame of many is dropped and accounted for; all damaged is an error


def truncate(which):
    def damage(k, msg):
        if which == "all" or k == which:
            msg.data = msg.data[: len(msg.data) // 2]
    return damage


def test_one_truncated_frame_is_dropped_and_recorded(tmp_path):
    bag = write_bag(tmp_path / "bag", damage=truncate(2))
    out = tmp_path / "pairs"
    result = run_extract(*cli_args(bag, out, "--label", "x"))
    assert result.returncode == 0, result.stderr
    assert "5 pairs" in result.stderr and "2 frames dropped" in result.stderr
    info = load_dataset_info(out)
    assert info["counts"]["pairs"] == 5 and len(read_manifest(out)) == 5
    dropped = {d["topic"]: d for d in info["dropped"]}
    stamp = T0 + 200 * MS
    assert dropped["/cam/nir"]["stamp_ns"] == stamp + 5 * MS
    assert dropped["/cam/nir"]["reason"].startswith("undecodable image: truncated mono8 image")
    assert dropped["/cam/rgb"]["stamp_ns"] == stamp
    assert "/cam/nir frame does not decode" in dropped["/cam/rgb"]["reason"]
    assert all(d["bag"] == "bag" for d in info["dropped"])


def test_every_frame_truncated_is_one_error_line(tmp_path):
    bag = write_bag(tmp_path / "bag", damage=truncate("all"))
    out = tmp_path / "pairs"
    assert_one_error_line(run_extract(*cli_args(bag, out, "--label", "x")), out,
                          rf"no frame pair of bag {re.escape(str(bag))} decodes.*topic /cam/nir "
                          r"at stamp 1700000000\.005 s \(truncated mono8 image")


def test_truncated_png_frame_is_dropped_without_opencv_noise(tmp_path):
    bag = tmp_path / "bag"
    rng = np.random.default_rng(0)
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        rgb = writer.add_connection("/cam/rgb", "sensor_msgs/msg/CompressedImage", typestore=ROS2)
        nir = writer.add_connection("/cam/nir", "sensor_msgs/msg/Image", typestore=ROS2)
        for k in range(3):
            stamp = T0 + k * 100 * MS
            msg = array_to_compressed_msg(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8),
                                          "png", stamp, "cam", ROS2)
            if k == 1:
                msg.data = msg.data[: len(msg.data) * 2 // 3]
            writer.write(rgb, stamp, ROS2.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
            writer.write(nir, stamp, ROS2.serialize_cdr(image("mono8", stamp),
                                                        "sensor_msgs/msg/Image"))
    out = tmp_path / "pairs"
    result = run_extract(*cli_args(bag, out, "--label", "x"))
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr and "2 pairs" in result.stderr
    reasons = [d["reason"] for d in load_dataset_info(out)["dropped"]]
    assert any(r.startswith("undecodable image: corrupt or truncated CompressedImage")
               for r in reasons)


# --------------------------------------------------------------------------------------------
# 4. label CSVs from spreadsheets


CSV_TEXT = "start_s,end_s,label\n0,10,café\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"])
def test_labels_csv_in_spreadsheet_encodings(tmp_path, encoding):
    path = tmp_path / "labels.csv"
    path.write_bytes(CSV_TEXT.encode(encoding))
    timeline = read_labels_csv(path, "bag", T0)
    assert timeline.labels == ["café"] and timeline.label_at(T0 + 5 * 10**9) == "café"


@pytest.mark.parametrize("text", ["start_s;end_s;label\n0;2,5;café\n",
                                  "start_s\tend_s\tlabel\n0\t2.5\tcafé\n"])
def test_labels_csv_with_semicolons_or_tabs(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode("utf-16" if "\t" in text else "cp1252"))
    timeline = read_labels_csv(path, "bag", T0)
    assert timeline.labels == ["café"] and timeline.ends.tolist() == [T0 + 2_500_000_000]


def test_labels_csv_that_is_no_text_is_one_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"start_s,end_s,label\n0,1,\xff\x00\x9f\n")
    with pytest.raises(DatasetError, match=f"labels CSV {re.escape(str(path))} is neither UTF-8"):
        read_labels_csv(path, "bag", T0)


def test_cli_extracts_with_a_bom_csv(tmp_path):
    bag = write_bag(tmp_path / "bag", count=3)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes("start_s,end_s,label\n0,10,Küche\n".encode("utf-8-sig"))
    info = extract_bags([bag], tmp_path / "pairs", BagOptions(labels_csv=str(csv_path),
                                                              **TOPICS), progress=False).info
    assert info["classes"] == ["Küche"]


# --------------------------------------------------------------------------------------------
# 5. two topics that cannot show one scene


@pytest.mark.parametrize("nir_shape,shown", [((2, 2), "2x2"), ((24, 12), "12x24")])
def test_mismatched_image_sizes_are_refused(tmp_path, nir_shape, shown):
    bag = write_bag(tmp_path / "bag", count=2, nir_shape=nir_shape)
    out = tmp_path / "pairs"
    assert_one_error_line(run_extract(*cli_args(bag, out, "--label", "x")), out,
                          rf"/cam/rgb is 32x24 but /cam/nir is {shown}.*cannot be the same scene")


def test_a_lower_resolution_nir_of_the_same_view_is_fine(tmp_path):
    bag = write_bag(tmp_path / "bag", count=2, nir_shape=(12, 16))
    info = extract_bags([bag], tmp_path / "pairs", BagOptions(label="x", **TOPICS),
                        progress=False).info
    assert info["counts"]["pairs"] == 2


# --------------------------------------------------------------------------------------------
# 6. valid but unsupported containers


def test_mcap_with_another_profile_is_unsupported_not_corrupt(tmp_path):
    bag = write_bag(tmp_path / "bag", count=2)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    assert data[17:25] == b"\x04\x00\x00\x00ros2"
    mcap.write_bytes(data[:21] + b"ros1" + data[25:])
    out = tmp_path / "pairs"
    assert_one_error_line(run_extract(*cli_args(bag, out, "--label", "x")), out,
                          r"holds MCAP data with profile 'ros1', not 'ros2', which is "
                          r"unsupported: supported are rosbag2 folders")


def test_empty_storage_identifier_is_unsupported_not_corrupt(tmp_path):
    bag = write_bag(tmp_path / "bag", count=2)
    meta = bag / "metadata.yaml"
    meta.write_text(re.sub(r"storage_identifier: \w+", "storage_identifier: ''",
                           meta.read_text()))
    with pytest.raises(BagError, match=r"has storage_identifier '' in its metadata.yaml, which "
                                       r"is unsupported: supported are sqlite3 and mcap"):
        with BagReader(bag):
            pass


def test_lone_mcap_file_says_what_is_missing(tmp_path):
    bag = write_bag(tmp_path / "bag", count=2)
    lone = tmp_path / "lone.mcap"
    lone.write_bytes(next(bag.glob("*.mcap")).read_bytes())
    with pytest.raises(BagError, match=r"is an MCAP file \(profile 'ros2'\) without the "
                                       r"metadata.yaml .* unsupported.*ros2 bag reindex"):
        BagReader(lone)


# --------------------------------------------------------------------------------------------
# 7. header stamps on a device clock, labels on the receive clock


def device_clock_bag(path):
    """Header stamps 360 s after the receive times, like a RealSense playback."""
    return write_bag(path, count=4, receive_offset_ns=-360 * 10**9)


def test_labels_on_another_clock_are_matched_by_default(tmp_path):
    bag = device_clock_bag(tmp_path / "bag")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("start_s,end_s,label\n0,0.25,table\n0.25,1,chair\n")
    out = tmp_path / "pairs"
    result = run_extract(*cli_args(bag, out, "--labels-csv", csv_path))
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "+360.000 s from their receive times" in notes[0]
    info = load_dataset_info(out)
    assert info["counts"]["per_class"] == {"chair": 1, "table": 3}
    assert info["label_clocks"] == {"bag": "receive"}
    # The same clock (latency only): auto compares labels with the header stamps.
    same = write_bag(tmp_path / "same", count=4, receive_offset_ns=8 * MS)
    info = extract_bags([same], tmp_path / "p2", BagOptions(labels_csv=str(csv_path), **TOPICS),
                        progress=False).info
    assert info["label_clocks"] == {"same": "header"}
    # CSV zero = the first receive time, 8 ms after the first frame's stamp: that frame is
    # before every label (a stamp lookup; by receive time all four would match).
    assert info["counts"]["per_class"] == {"chair": 1, "table": 2}


def test_labels_on_another_clock_name_both_ranges_and_the_fix(tmp_path):
    bag = device_clock_bag(tmp_path / "bag")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("start_s,end_s,label\n0,1,table\n")
    out = tmp_path / "pairs"
    assert_one_error_line(
        run_extract(*cli_args(bag, out, "--labels-csv", csv_path, "--label-clock", "header")),
        out,
        r"the labels span 0\.000\.\.1\.000 s of receive time .* header stamps span "
        r"360\.000\.\.360\.305 s and their receive times 0\.000\.\.0\.305 s.*"
        r"--label-clock header\); pass --label-clock receive")
    result = run_extract(*cli_args(bag, out, "--labels-csv", csv_path, "--label-clock",
                                   "receive"))
    assert result.returncode == 0, result.stderr
    info = load_dataset_info(out)
    assert info["counts"]["per_class"] == {"table": 4}
    assert info["options"]["label_clock"] == "receive"


def test_unmatched_labels_with_allow_unlabelled_warn_in_one_line(tmp_path, capsys):
    bag = device_clock_bag(tmp_path / "bag")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("start_s,end_s,label\n0,1,table\n")
    info = extract_bags([bag], tmp_path / "pairs", BagOptions(
        labels_csv=str(csv_path), allow_unlabelled=True, label_clock="header", **TOPICS)).info
    assert info["counts"]["unlabelled"] == 4
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: ")]
    assert len(warnings) == 1 and "--label-clock receive" in warnings[0]


def test_label_clock_is_checked_and_documented(tmp_path):
    with pytest.raises(DatasetError, match="--label-clock must be one of auto, header, receive"):
        BagOptions(label_clock="wall")
    help_text = run_extract("--help").stdout
    assert "--label-clock {auto,header,receive}" in help_text and "receive clock" in help_text
    assert json.dumps(BagOptions().label_clock) == '"auto"'
