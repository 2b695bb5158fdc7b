"""What the two real-data converters share: the recording model, frame labels, splits.

The converters turn still research images (CWFID, Houston 2018) into the kind of recording a robot
makes, so the real data goes through the same path as a user's bags (extractor, pairing by header
stamp, label topic) instead of a side door. The recording model, and why:

- One bag per *group* (a CWFID image, a Houston spatial block), named after it. By default the
  extractor names groups ``<bag>:<segment>`` and splits within a bag by label segment; frames of
  one image are highly correlated, so the split must be by bag: ``splits.json`` (a bag-splits
  file, :mod:`mmkd_ros.data.splits`) maps every bag name to its split, and
  ``training/extract.py --bag OUT/bags/* --splits OUT/splits.json`` extracts with group = bag and
  that split (:func:`apply_splits` does the same to a dataset extracted without ``--splits``).
- Camera positions are visited at a fixed period (a 10 Hz trigger). Each sensor's header stamp is
  the nominal trigger time plus its own uniform jitter (two drivers stamping one prism camera);
  the bag's receive time adds a transport latency, so a reader that pairs by receive time instead
  of header stamp is caught.
- The label (``std_msgs/String``, no header, so timed by receive time) is written
  ``LABEL_LEAD_NS`` before the trigger, i.e. before both jittered sensor stamps: the extractor gives
  a frame the latest label at or before its stamp and drops pairs whose RGB and NIR stamps see
  different labels. An empty string means "unlabelled from here on"; every frame gets a label
  message, because a missing one would silently extend the previous frame's label.
- ``frames.csv`` next to the bags says where every frame came from (bag, pixel window, label,
  stamps): provenance for users, ground truth for the tests.
"""
from __future__ import annotations

import csv
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from mmkd_ros.core.atomic import atomic_path
from mmkd_ros.core.topics import LABEL_TOPIC, NIR_TOPIC, RGB_TOPIC
from mmkd_ros.data.ros_images import array_to_image_msg
from mmkd_ros.data.manifest import MANIFEST_NAME, read_manifest, write_manifest
from mmkd_ros.data.splits import SPLITS_FORMAT, read_bag_splits, write_bag_splits  # noqa: F401
from mmkd_ros.core.errors import DatasetError

RGB_FRAME_ID = "camera_color_optical_frame"
NIR_FRAME_ID = "camera_nir_optical_frame"
SPLITS_NAME = "splits.json"  # a bag-splits file (format SPLITS_FORMAT, mmkd_ros.data.splits)
FRAMES_NAME = "frames.csv"
FRAME_COLUMNS = ("bag", "frame", "x", "y", "width", "height", "label", "rgb_stamp_ns",
                 "nir_stamp_ns", "split")
# A frame's label is the class of the pixels in a small square at its centre when at least this
# share of them agree; a centre on a class boundary (or on unannotated pixels) is "unlabelled".
MAJORITY = 2 / 3


@dataclass(frozen=True)
class Timing:
    """The recording's clock: trigger period, per-sensor stamp jitter, transport latency."""

    period_ns: int = 100_000_000  # 10 Hz
    jitter_ns: int = 2_000_000  # each sensor's stamp: trigger + U(-jitter, +jitter)
    latency_ns: tuple[int, int] = (2_000_000, 8_000_000)  # receive time - stamp: U(lo, hi)

    @property
    def label_lead_ns(self) -> int:
        """How long before the trigger the label is written: before either jittered stamp."""
        return self.jitter_ns + 1_000_000

    def __post_init__(self) -> None:
        lo, hi = self.latency_ns
        if not 0 <= lo <= hi or self.jitter_ns < 0:
            raise ValueError(f"bad timing: jitter {self.jitter_ns} ns, latency {self.latency_ns}")
        # Messages of one trigger must all fall before the next trigger's label.
        if self.jitter_ns + hi + self.label_lead_ns >= self.period_ns:
            raise ValueError(f"period {self.period_ns} ns is too short for jitter "
                             f"{self.jitter_ns} ns and latency up to {hi} ns")


@dataclass(frozen=True)
class Frame:
    """One camera position: its clock tick, pixel window, both sensors' pixels and its label."""

    tick: int  # trigger index; ticks of positions that emit no frame are simply skipped
    x: int
    y: int
    visible: np.ndarray  # [h, w, C] uint8
    nir: np.ndarray  # [h, w, 1] uint8 or uint16
    label: str  # class name, or "" for unlabelled


@dataclass
class BagSummary:
    """What :func:`write_drive` wrote: one row per frame (``FRAME_COLUMNS`` less ``split``)."""

    name: str
    path: Path
    rows: list[dict[str, object]] = field(default_factory=list)

    def label_counts(self) -> Counter:
        return Counter(str(row["label"]) for row in self.rows)


def stable_seed(name: str) -> int:
    """A seed from a name that does not change between Python runs (``hash`` does)."""
    return zlib.crc32(name.encode())


def serpentine(rows: int, cols: int) -> Iterator[tuple[int, int]]:
    """``(row, col)`` of a boustrophedon (lawnmower) path: left to right, then back."""
    for r in range(rows):
        for c in (range(cols) if r % 2 == 0 else reversed(range(cols))):
            yield r, c


def window_origins(extent: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``window`` every ``stride`` px inside ``extent`` px."""
    if window > extent:
        raise ValueError(f"window {window} px is larger than the {extent} px it must fit in")
    return list(range(0, extent - window + 1, stride))


def centre_label(categories: np.ndarray, x: int, y: int, window: int, centre: int,
                 names: dict[int, str]) -> str:
    """Label of the window at ``(x, y)``: the class of its central ``centre x centre`` pixels.

    ``categories`` is an integer map; ``names`` maps a category to a class name, or to ``""`` for
    a category that is known to be unlabelled. The label is the majority category's name when it
    covers at least ``MAJORITY`` of the centre square, else ``""`` (ambiguous).
    """
    top = y + (window - centre) // 2
    left = x + (window - centre) // 2
    values, counts = np.unique(categories[top:top + centre, left:left + centre],
                               return_counts=True)
    best = int(np.argmax(counts))
    if counts[best] < MAJORITY * centre * centre:
        return ""
    return names.get(int(values[best]), "")


def write_drive(path: Path, frames: Iterable[Frame], *, start_ns: int, timing: Timing,
                visible_encoding: str, nir_encoding: str) -> BagSummary:
    """Write frames as a rosbag2 (mcap) at ``path``: image topics plus the label topic.

    Frames must come in increasing ``tick`` order. Jitter and latency are drawn from a generator
    seeded by the bag name, so a conversion is reproducible byte for byte in content.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)  # Image and String are the same in Humble..Kilted
    string_cls = typestore.types["std_msgs/msg/String"]
    rng = np.random.default_rng(stable_seed(path.name))
    summary = BagSummary(path.name, path)
    last_tick = -1
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        rgb_conn = writer.add_connection(RGB_TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
        nir_conn = writer.add_connection(NIR_TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
        label_conn = writer.add_connection(LABEL_TOPIC, "std_msgs/msg/String",
                                           typestore=typestore)
        for index, frame in enumerate(frames):
            if frame.tick <= last_tick:
                raise ValueError(f"{path.name}: frame ticks must increase ({frame.tick} after "
                                 f"{last_tick})")
            last_tick = frame.tick
            trigger_ns = start_ns + frame.tick * timing.period_ns
            stamps = trigger_ns + rng.integers(-timing.jitter_ns, timing.jitter_ns + 1, 2)
            received = stamps + rng.integers(timing.latency_ns[0], timing.latency_ns[1] + 1, 2)
            (rgb_ns, nir_ns), (rgb_rx, nir_rx) = stamps.tolist(), received.tolist()
            messages = [
                (trigger_ns - timing.label_lead_ns, label_conn, "std_msgs/msg/String",
                 string_cls(data=frame.label)),
                (rgb_rx, rgb_conn, "sensor_msgs/msg/Image", array_to_image_msg(
                    frame.visible, visible_encoding, rgb_ns, RGB_FRAME_ID, typestore)),
                (nir_rx, nir_conn, "sensor_msgs/msg/Image", array_to_image_msg(
                    frame.nir, nir_encoding, nir_ns, NIR_FRAME_ID, typestore)),
            ]
            for log_ns, conn, msgtype, msg in sorted(messages, key=lambda m: m[0]):
                writer.write(conn, log_ns, typestore.serialize_cdr(msg, msgtype))
            height, width = frame.visible.shape[:2]
            summary.rows.append({"bag": path.name, "frame": index, "x": frame.x, "y": frame.y,
                                 "width": width, "height": height, "label": frame.label,
                                 "rgb_stamp_ns": rgb_ns, "nir_stamp_ns": nir_ns})
    return summary


def write_outputs(out: Path, summaries: Sequence[BagSummary], splits: dict[str, str],
                  info: dict[str, object]) -> None:
    """``splits.json`` (bag name -> split, plus how it was chosen) and ``frames.csv``."""
    write_bag_splits(out / SPLITS_NAME, splits, **info)
    with open(out / FRAMES_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FRAME_COLUMNS)
        writer.writeheader()
        for summary in summaries:
            for row in summary.rows:
                writer.writerow({**row, "split": splits[summary.name]})


def count_table(summaries: Sequence[BagSummary], splits: dict[str, str]) -> str:
    """Frames per split and label as a plain-text table (``(unlabelled)`` for ``""``)."""
    per_split: dict[str, Counter] = {}
    for summary in summaries:
        per_split.setdefault(splits[summary.name], Counter()).update(summary.label_counts())
    labels = sorted({label for counts in per_split.values() for label in counts})
    header = ["split", "bags", "frames"] + [label or "(unlabelled)" for label in labels]
    lines = ["  ".join(f"{h:>12}" for h in header)]
    for split in sorted(per_split):
        bags = sum(1 for s in summaries if splits[s.name] == split)
        counts = per_split[split]
        cells = [split, str(bags), str(sum(counts.values()))] + [str(counts[l]) for l in labels]
        lines.append("  ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def prepare_out(out: Path) -> Path:
    """Create ``out/bags``; refuse to mix a new conversion into an existing one."""
    bags = out / "bags"
    if bags.exists() and any(bags.iterdir()):
        raise DatasetError(f"{bags} is not empty: choose a new --out or delete it first")
    bags.mkdir(parents=True, exist_ok=True)
    return bags


def apply_splits(dataset_dir: str | Path, splits_path: str | Path) -> Counter:
    """Give an extracted dataset the converter's split: ``group = bag``, ``split`` from the file.

    Without ``--splits`` the extractor groups bag frames by ``<bag>:<label segment>`` and leaves
    ``split`` empty, which would put frames of one CWFID image (or one Houston block) into train
    and val. This rewrites ``manifest.csv`` (atomically) so every frame's group is its bag and its
    split is the one ``splits.json`` chose. Returns pairs per split. Extracting with
    ``training/extract.py --splits`` gives the same manifest directly (and caches it).
    """
    dataset_dir = Path(dataset_dir)
    splits = read_bag_splits(splits_path)
    rows = read_manifest(dataset_dir)
    for row in rows:
        bag = row["group"].split(":", 1)[0]
        if bag not in splits:
            raise DatasetError(f"{dataset_dir}: pair {row['id']} comes from bag {bag!r}, which "
                               f"{splits_path} does not list: extract only bags of that conversion")
        row["group"], row["split"] = bag, splits[bag]
    with atomic_path(dataset_dir / MANIFEST_NAME, suffix=".csv") as tmp:
        write_manifest(tmp, rows)
    return Counter(row["split"] for row in rows)
