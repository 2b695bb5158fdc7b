#!/usr/bin/env python3
"""Extract the RGB/NIR pair dataset from bags, a folder of image pairs, or GeoTIFFs.

Examples:
  training/extract.py --bag data/demo_bag --out data/demo_pairs
  training/extract.py --bag a.bag --bag b.bag --labels-csv labels.csv --out data/pairs
  training/extract.py --bag bags/* --splits splits.json --out data/pairs   # split by bag
  training/extract.py --bag run1:/cam/rgb:/cam/nir --bag run2.bag:/left/image:/ir/image \
      --out data/pairs                                  # topics per bag (or --topic-map FILE)
  training/extract.py --bag bags/* --workers 0 --out data/pairs   # one process per bag/core
  training/extract.py --folder pairs/ --out data/pairs
  training/extract.py --geotiff tiles/ --rgb-bands B04,B03,B02 --nir-bands B08 --out data/pairs

Clocks: RGB and NIR frames are paired by their header stamps (capture time). Label times are on
the bag's receive clock: a label topic (std_msgs/String, no header) by its receive time, CSV
times in seconds from the bag's first receive time (a label topic whose messages have header
stamps is on the header clock). --label-clock chooses which time of a frame is looked up in the
labels: 'header' (right when the camera stamps with the recording machine's clock), 'receive'
(when header stamps run on another clock, e.g. a RealSense playback whose stamps start near
360 s while receive time starts at 0), or 'auto' (default): per bag, 'header' unless the
frames' header stamps and receive times differ by more than 1 s (median), then 'receive', with
one note line. When labels meet no frame, the error names both clocks' ranges.

Topics per bag: --rgb-topic/--nir-topic apply to every bag without an entry of its own; give one
with --bag PATH:RGB_TOPIC:NIR_TOPIC or a --topic-map file: CSV with the header
bag,rgb_topic,nir_topic, or YAML {<bag>: {rgb_topic: ..., nir_topic: ...}}; <bag> is a bag
name (folder name, .bag file stem) or a path (relative to the map file's folder).

One extraction per --out at a time: it holds a lock on <out>.lock (holding its pid; removed at
the end), and a second extraction into the same --out fails at once naming that pid. SIGTERM
(or Ctrl-C) removes the unfinished <out>.tmp-<pid>-* folder and ends with one line (exit 143 for
SIGTERM); a folder left by a killed run whose pid no longer runs is removed by the next run.
A cached dataset is reused only when every file its manifest lists is there (total size as
recorded); else it is extracted again, with one line saying why.

Supported bags: rosbag2 folders (metadata.yaml + sqlite3 .db3 or mcap, including Foxy/Galactic/
Humble bags without stored message definitions) and ROS 1 .bag files. Image encodings: rgb8,
bgr8, rgba8, bgra8, mono8, mono16, 8UC1, 16UC1, CompressedImage jpeg/png. A frame that does not
decode is dropped and listed in dataset.json's "dropped".
"""
import argparse
import sys
from pathlib import Path

from mmkd_ros.data.extract import GROUP_BY, LABEL_CLOCKS, BagOptions, ExtractionStopped, \
    extract_bags, extract_folder, extract_geotiffs, read_topic_map, split_bag_spec
from mmkd_ros.core.errors import check_number, quiet_native_logs, run_cli

DEFAULTS = BagOptions()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bag", action="extend", nargs="+", metavar="BAG",
                        help="rosbag2 folder(s) or ROS 1 .bag(s), each optionally "
                             "PATH:RGB_TOPIC:NIR_TOPIC; several per flag, repeatable")
    source.add_argument("--folder", type=Path, help="folder of <class>/<id>_rgb|_nir images")
    source.add_argument("--geotiff", type=Path, help="folder of <class>/<name>.tif")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    parser.add_argument("--rgb-topic", default=DEFAULTS.rgb_topic,
                        help="RGB image topic of bags without their own (default %(default)s)")
    parser.add_argument("--nir-topic", default=DEFAULTS.nir_topic,
                        help="NIR image topic of bags without their own (default %(default)s)")
    parser.add_argument("--topic-map", type=Path, metavar="FILE",
                        help="per-bag topics: CSV bag,rgb_topic,nir_topic or YAML "
                             "{bag: {rgb_topic, nir_topic}} (see Topics per bag above)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--label-topic", help="std_msgs/String topic (default: /scene/label "
                                              "when the bag has it)")
    labels.add_argument("--labels-csv", help="CSV start_s,end_s,label[,bag] (seconds from the "
                                             "bag start) or start_ns,end_ns,label[,bag]")
    labels.add_argument("--label", help="one label for every frame")
    parser.add_argument("--label-clock", choices=LABEL_CLOCKS, default=DEFAULTS.label_clock,
                        help="time of a frame looked up in the labels (which are on the receive "
                             "clock): its 'header' stamp, its 'receive' time, or 'auto' per bag "
                             "(default %(default)s; see Clocks above)")
    parser.add_argument("--allow-unlabelled", action="store_true",
                        help="keep pairs without a label (for label-free distillation)")
    parser.add_argument("--max-dt", type=float, default=DEFAULTS.max_dt_s,
                        help="max |t_rgb - t_nir| of a pair, seconds (default %(default)s)")
    parser.add_argument("--every", type=int, default=DEFAULTS.every,
                        help="keep every N-th pair (default %(default)s)")
    parser.add_argument("--group-by", choices=GROUP_BY, default=DEFAULTS.group_by,
                        help="group of a bag's pairs: 'segment' = <bag>:<label segment>, 'bag' = "
                             "the bag name, so splits keep whole bags apart (default "
                             "%(default)s)")
    parser.add_argument("--splits", type=Path, metavar="FILE",
                        help="bag-splits JSON (mmkd_ros/bag-splits) giving every bag its split: "
                             "groups become bag names and the manifest's split comes from it")
    parser.add_argument("--rgb-bands", default="B04,B03,B02", help="GeoTIFF visible bands")
    parser.add_argument("--nir-bands", default="B08", help="GeoTIFF NIR band(s)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="bags extracted at once, one process each (0: one per CPU core; "
                             "default %(default)s); the dataset is the same for any N")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    quiet_native_logs()  # a frame that does not decode is reported once, not by OpenCV too
    check_number("--max-dt", args.max_dt, minimum=0, unit="seconds")
    if not args.bag and (args.splits is not None or args.group_by != DEFAULTS.group_by
                         or args.label_clock != DEFAULTS.label_clock
                         or args.topic_map is not None or args.workers != 1):
        parser.error("--splits, --group-by, --label-clock, --topic-map and --workers apply to "
                     "--bag only")
    try:
        run(args)
    except ExtractionStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(143) from None  # 128 + SIGTERM, as the shell reports a terminated job


def run(args: argparse.Namespace) -> None:
    if args.bag:
        bags, topic_map = [], []
        for spec in args.bag:
            path, topics = split_bag_spec(spec)
            bags.append(Path(path))
            if topics:
                topic_map.append((str(Path(path).resolve()), *topics))
        if args.topic_map is not None:
            topic_map += read_topic_map(args.topic_map)
        options = BagOptions(rgb_topic=args.rgb_topic, nir_topic=args.nir_topic,
                             label_topic=args.label_topic, labels_csv=args.labels_csv,
                             label=args.label, max_dt_s=args.max_dt, every=args.every,
                             allow_unlabelled=args.allow_unlabelled, group_by=args.group_by,
                             splits=None if args.splits is None else str(args.splits),
                             label_clock=args.label_clock, topic_map=tuple(topic_map))
        extract_bags(bags, args.out, options, force=args.force, workers=args.workers)
    elif args.folder:
        extract_folder(args.folder, args.out, force=args.force)
    else:
        extract_geotiffs(args.geotiff, args.out, args.rgb_bands, args.nir_bands, force=args.force)


if __name__ == "__main__":
    sys.exit(run_cli(main))
