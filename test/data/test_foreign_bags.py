"""Real bags recorded by other people's tools (shared/data/foreign_bags, see its README).

Each either extracts, or ends in one ``error:`` line with exit 2 and no output left behind.
Skipped where the shared data folder is absent; the bags are read in place, never copied.
"""
import re
from pathlib import Path

import pytest

from mmkd_ros.core.errors import BagError
from mmkd_ros.data.bag import BagReader
from mmkd_ros.data.extract import BagOptions, extract_bags
from mmkd_ros.data.manifest import load_dataset_info, read_manifest
from extract_cli import assert_one_error_line, run_extract

REPO = Path(__file__).resolve().parents[2]
FOREIGN = next((p for p in (REPO / "shared" / "data" / "foreign_bags",
                            REPO.parent / "shared" / "data" / "foreign_bags") if p.is_dir()), None)
pytestmark = pytest.mark.skipif(FOREIGN is None, reason="shared/data/foreign_bags is absent")

COLOR = "/device_0/sensor_1/Color_0/image/data"
DEPTH = "/device_0/sensor_0/Depth_0/image/data"
REALSENSE = ["realsense_depth_color_640x480.bag", "realsense_depth_color_640x480_mcap"]


@pytest.mark.parametrize("name", REALSENSE)
def test_realsense_colour_and_depth_extract(tmp_path, name):
    """ROS 1 and its mcap conversion: rgb8 640x480 + mono16 depth, 0.1 s apart."""
    result = extract_bags([FOREIGN / name], tmp_path / "pairs", BagOptions(
        rgb_topic=COLOR, nir_topic=DEPTH, label="table", max_dt_s=0.2), progress=False)
    info = result.info
    assert info["counts"]["pairs"] == 1 and len(read_manifest(tmp_path / "pairs")) == 1
    assert info["modalities"]["rgb"] == {"topic": COLOR, "channels": 3, "dtype": "uint8"}
    assert info["modalities"]["nir"]["dtype"] == "uint16"
    assert [d["topic"] for d in info["dropped"]] == [DEPTH]  # the second depth frame


@pytest.mark.parametrize("name", REALSENSE)
def test_realsense_csv_labels_on_the_receive_clock(tmp_path, name):
    """Header stamps start near 360.7 s, receive time at 0: a CSV 0,1 labels by receive time,
    which the default --label-clock auto finds; --label-clock header names both ranges."""
    bag = FOREIGN / name
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("start_s,end_s,label\n0,1,table\n")
    out = tmp_path / "pairs"
    args = ["--bag", bag, "--out", out, "--rgb-topic", COLOR, "--nir-topic", DEPTH,
            "--max-dt", "0.2", "--labels-csv", csv_path]
    ok = run_extract(*args)
    assert ok.returncode == 0, ok.stderr
    assert "another clock than the recorder's" in ok.stderr
    assert load_dataset_info(out)["counts"]["per_class"] == {"table": 1}
    header = tmp_path / "header"
    assert_one_error_line(run_extract(*args[:3], header, *args[4:], "--label-clock", "header"),
                          header, r"labels span 0\.000\.\.1\.000 s of receive time .* header "
                                  r"stamps span 360\.\d+\.\.360\.\d+ s .*pass --label-clock "
                                  r"receive")


def test_ros_numpy_rgb_and_2x2_png_are_refused(tmp_path):
    out = tmp_path / "pairs"
    result = run_extract("--bag", FOREIGN / "ros_numpy_test.bag", "--out", out, "--rgb-topic",
                         "/image", "--nir-topic", "/compressedimage", "--label", "x",
                         "--max-dt", "100000")
    assert_one_error_line(result, out, r"/image is 360x240 but /compressedimage is 2x2 .*cannot "
                                       r"be the same scene")


def test_talker_sqlite3_opens_has_no_images_and_its_mismatched_topic_is_named(tmp_path):
    """rosbag2's talker test bag: its metadata.yaml (version 4) and its migrated .db3 disagree on
    the topics' QoS, so rosbags reads no message of /topic: that must be an error, not an
    empty label topic."""
    bag = FOREIGN / "rosbag2_talker_sqlite3"
    with BagReader(bag) as reader:
        assert reader.image_topics() == [] and reader.topics["/topic"].count == 10
        with pytest.raises(BagError, match=r"topic /cam/rgb not found .*image topics: none"):
            reader.require_image_topic("/cam/rgb", "--rgb-topic")
        with pytest.raises(BagError, match=r"topic /topic lists 10 messages but none could be "
                                           r"read .*ros2 bag reindex"):
            reader.label_timeline("/topic")
    out = tmp_path / "pairs"
    # The CLI names the bag by its resolved path; a symlinked data folder shows the link's target.
    assert_one_error_line(run_extract("--bag", bag, "--out", out, "--label", "x"), out,
                          rf"topic \S+ not found in bag (?:{re.escape(str(bag))}|{re.escape(str(bag.resolve()))}) \(image topics: "
                          r"none\); pass the right one with --rgb-topic")
