"""Reading recordings: rosbag2 (sqlite3, mcap) and ROS 1 bags through ``rosbags.highlevel``.

Frames are timed by their ``header.stamp`` (the capture time the driver set), not by the bag's
receive time: two cameras' messages reach the recorder with different latencies, so only the
header stamps say which RGB and NIR frames saw the same moment. A message without a header, or
with a zero stamp (some drivers), falls back to its receive time.

Labels come from one of three sources, all turned into a :class:`LabelTimeline`:
- a label topic (``std_msgs/String``): a frame takes the latest label at or before its stamp;
- a CSV of time intervals ``start_s,end_s,label`` (or ``start_ns,end_ns,label``), times relative
  to the bag's start, as a person annotating with a player sees them; an optional ``bag`` column
  restricts a row to the bag of that name;
- one label for the whole bag.

Every failure (missing, unreadable or corrupt bag, absent topic) is a one-line :class:`BagError`.
"""
from __future__ import annotations

import csv
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from mmkd_ros.data.ros_images import msg_to_array, stamp_to_ns
from mmkd_ros.core.errors import BagError, DatasetError

IMAGE_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"})


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a bag: name, message type, number of messages."""

    name: str
    msgtype: str
    count: int


def resolve_bag_path(path: str | Path) -> Path:
    """The path ``AnyReader`` wants: a rosbag2 folder, or a ROS 1 ``.bag`` file.

    Accepts the storage file inside a rosbag2 folder (``x/x.mcap``) too, because that is what a
    file browser shows.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist: check the --bag path")
    if path.is_file() and path.suffix != ".bag" and (path.parent / "metadata.yaml").is_file():
        return path.parent
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"bag {path} is a folder without metadata.yaml: give a rosbag2 folder "
                       "(metadata.yaml + .mcap/.db3) or a ROS 1 .bag file")
    return path


def bag_name(path: str | Path) -> str:
    """Short name of a bag for groups and messages: folder name, or file stem for ROS 1."""
    path = Path(path)
    return path.stem if path.suffix == ".bag" else path.name


def bag_files(path: Path) -> list[Path]:
    """Files whose bytes make up a bag (for content hashing), in a fixed order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file())


# Errors rosbags and its storage back ends raise on damaged files; turned into one BagError line.
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError, KeyError,
                                                 IndexError, struct.error, AssertionError)


@contextmanager
def _bag_errors(path: Path, doing: str) -> Iterator[None]:
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error

    try:
        yield
    except BagError:
        raise
    except (AnyReaderError, Reader1Error, Reader2Error) + _READ_ERRORS as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BagError(f"cannot read bag {path} while {doing} ({reason}): the bag is corrupt "
                       "or incomplete; re-record or re-copy it") from None


class BagReader:
    """One bag opened for reading; use as a context manager.

    ``stamps`` and ``images`` iterate the bag in receive order, so the ``index`` of a frame
    (its position among its topic's messages) is the same in both passes.
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.highlevel import AnyReader

        self.path = resolve_bag_path(path)
        self.name = bag_name(self.path)
        with _bag_errors(self.path, "opening it"):
            self._reader = AnyReader([self.path])

    def __enter__(self) -> "BagReader":
        with _bag_errors(self.path, "opening it"):
            self._reader.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._reader.close()

    @property
    def start_ns(self) -> int:
        """Receive time of the bag's first message (the zero of label CSV times)."""
        return int(self._reader.start_time)

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Every topic of the bag with its type and message count."""
        topics: dict[str, TopicInfo] = {}
        for conn in self._reader.connections:
            old = topics.get(conn.topic)
            count = conn.msgcount + (old.count if old else 0)
            topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count)
        return topics

    def image_topics(self) -> list[str]:
        """Names of the topics that carry ``Image`` or ``CompressedImage`` messages."""
        return sorted(t.name for t in self.topics.values() if t.msgtype in IMAGE_TYPES)

    def require_image_topic(self, topic: str, flag: str) -> TopicInfo:
        """The topic's info, or a :class:`BagError` that lists the image topics the bag has."""
        info = self.topics.get(topic)
        if info is None or info.msgtype not in IMAGE_TYPES:
            found = ", ".join(self.image_topics()) or "none"
            what = "is not an image topic" if info else "not found"
            raise BagError(f"topic {topic} {what} in bag {self.path} (image topics: {found}); "
                           f"pass the right one with {flag}")
        if info.count == 0:
            raise BagError(f"topic {topic} has no messages in bag {self.path}")
        return info

    def _messages(self, topics: Iterable[str]) -> Iterator[tuple[str, int, Any]]:
        """``(topic, receive time, message)`` of ``topics`` in receive order."""
        wanted = set(topics)
        connections = [c for c in self._reader.connections if c.topic in wanted]
        for conn, log_ns, raw in self._reader.messages(connections=connections):
            yield conn.topic, int(log_ns), self._reader.deserialize(raw, conn.msgtype)

    def stamps(self, topics: Iterable[str]) -> dict[str, np.ndarray]:
        """Header stamps (ns, int64) of every message of each topic, in receive order."""
        topics = list(topics)
        found: dict[str, list[int]] = {topic: [] for topic in topics}
        with _bag_errors(self.path, "reading stamps"):
            for topic, log_ns, msg in self._messages(topics):
                found[topic].append(_frame_stamp(msg, log_ns))
        return {topic: np.asarray(values, np.int64) for topic, values in found.items()}

    def images(self, wanted: dict[str, set[int]]) -> Iterator[tuple[str, int, int, np.ndarray]]:
        """Decode the frames ``wanted[topic]`` (indices into the topic's messages).

        Yields ``(topic, index, stamp_ns, array HxWxC)`` in receive order; other messages are
        skipped without decoding.
        """
        counters = {topic: 0 for topic in wanted}
        with _bag_errors(self.path, "reading images"):
            for topic, log_ns, msg in self._messages(wanted):
                index = counters[topic]
                counters[topic] += 1
                if index in wanted[topic]:
                    yield topic, index, _frame_stamp(msg, log_ns), msg_to_array(msg)

    def label_timeline(self, topic: str) -> "LabelTimeline":
        """Labels published on ``topic`` (a message with a string ``data`` field)."""
        info = self.topics.get(topic)
        if info is None:
            found = ", ".join(sorted(self.topics)) or "none"
            raise BagError(f"label topic {topic} not found in bag {self.path} (topics: {found});"
                           " pass --label-topic, --labels-csv or --label")
        times, labels = [], []
        with _bag_errors(self.path, "reading labels"):
            for _, log_ns, msg in self._messages([topic]):
                if not isinstance(getattr(msg, "data", None), str):
                    raise BagError(f"label topic {topic} carries {info.msgtype}, not a string "
                                   "message: publish labels as std_msgs/String")
                times.append(_frame_stamp(msg, log_ns))
                labels.append(msg.data.strip())
        return LabelTimeline.from_changes(times, labels)


def _frame_stamp(msg: Any, log_ns: int) -> int:
    """Header stamp in ns; receive time when there is no header or the stamp is zero."""
    header = getattr(msg, "header", None)
    if header is None:
        return log_ns
    stamp = stamp_to_ns(header.stamp)
    return stamp if stamp > 0 else log_ns


class LabelTimeline:
    """Which label holds at a time: intervals ``[start, end)`` with a label (``None`` outside)."""

    def __init__(self, starts: Iterable[int], ends: Iterable[int], labels: Iterable[str]) -> None:
        self.starts = np.asarray(list(starts), np.int64)
        self.ends = np.asarray(list(ends), np.int64)
        self.labels = list(labels)
        order = np.argsort(self.starts, kind="stable")
        self.starts, self.ends = self.starts[order], self.ends[order]
        self.labels = [self.labels[i] for i in order]

    @classmethod
    def from_changes(cls, times: Iterable[int], labels: Iterable[str]) -> "LabelTimeline":
        """A label topic: each label holds from its stamp until the next one (or forever)."""
        times, labels = list(times), list(labels)
        order = sorted(range(len(times)), key=lambda i: times[i])
        starts = [times[i] for i in order]
        ends = starts[1:] + [np.iinfo(np.int64).max]
        return cls(starts, ends, [labels[i] for i in order])

    @classmethod
    def constant(cls, label: str) -> "LabelTimeline":
        """One label for all time."""
        return cls([np.iinfo(np.int64).min], [np.iinfo(np.int64).max], [label])

    def label_at(self, stamp_ns: int) -> str | None:
        """The label holding at ``stamp_ns`` (the latest interval starting at or before it)."""
        k = int(np.searchsorted(self.starts, stamp_ns, side="right")) - 1
        if k < 0 or stamp_ns >= self.ends[k] or not self.labels[k]:
            return None
        return self.labels[k]

    def __len__(self) -> int:
        return len(self.labels)


def read_labels_csv(path: str | Path, bag: str, bag_start_ns: int) -> LabelTimeline:
    """Label intervals of one bag from a CSV (see module doc for the format).

    Times are relative to ``bag_start_ns``; rows whose ``bag`` column names another bag are
    skipped, so one CSV can label several bags.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"labels CSV {path} does not exist: check --labels-csv")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in reader.fieldnames or []]
        if {"start_s", "end_s", "label"} <= set(fields):
            unit, start_key, end_key = 1e9, "start_s", "end_s"
        elif {"start_ns", "end_ns", "label"} <= set(fields):
            unit, start_key, end_key = 1.0, "start_ns", "end_ns"
        else:
            raise DatasetError(f"labels CSV {path} needs a header start_s,end_s,label (seconds) "
                               f"or start_ns,end_ns,label (nanoseconds), got {','.join(fields)}")
        starts, ends, labels = [], [], []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if row.get("bag") and row["bag"] != bag:
                continue
            try:
                start, end = float(row[start_key]), float(row[end_key])
            except ValueError:
                raise DatasetError(f"labels CSV {path} line {line}: {start_key}/{end_key} must "
                                   "be numbers") from None
            if end <= start or not row["label"]:
                raise DatasetError(f"labels CSV {path} line {line}: needs end > start and a "
                                   "non-empty label")
            starts.append(bag_start_ns + int(round(start * unit)))
            ends.append(bag_start_ns + int(round(end * unit)))
            labels.append(row["label"])
    timeline = LabelTimeline(starts, ends, labels)
    overlap = np.flatnonzero(timeline.starts[1:] < timeline.ends[:-1])
    if overlap.size:
        at = (timeline.starts[overlap[0] + 1] - bag_start_ns) / 1e9
        raise DatasetError(f"labels CSV {path}: intervals overlap at {at:.3f} s into bag {bag}; "
                           "make them disjoint")
    return timeline
