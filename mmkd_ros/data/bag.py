"""Reading recordings: rosbag2 (sqlite3, mcap) and ROS 1 bags through ``rosbags.highlevel``.

Bags that store no message definitions (rosbag2 sqlite3 recorded by ROS 2 Foxy, Galactic or
Humble) are read with the ROS 2 Humble type store.

Frames are timed by their ``header.stamp`` (the capture time the driver set), not by the bag's
receive time: two cameras' messages reach the recorder with different latencies, so only the
header stamps say which RGB and NIR frames saw the same moment. A message without a header, or
with a zero stamp (some drivers), falls back to its receive time.

Labels come from one of three sources, all turned into a :class:`LabelTimeline`:
- a label topic (``std_msgs/String``): a frame takes the latest label at or before its time;
- a CSV of time intervals ``start_s,end_s,label`` (or ``start_ns,end_ns,label``), times relative
  to the bag's start, as a person annotating with a player sees them; an optional ``bag`` column
  restricts a row to the bag of that name. UTF-8 (with or without the BOM spreadsheets write),
  UTF-16 with BOM, or Windows-1252/Latin-1 as a fallback; separated by ``,``, ``;`` (then a
  decimal comma is accepted) or tabs, as the header line shows;
- one label for the whole bag.

Clocks: frames are paired by their *header* stamps. Label times are on the bag's *receive*
clock (the recorder's log time): a label topic's ``std_msgs/String`` has no header, so its
receive time is used, and CSV seconds count from the bag's first receive time
(:attr:`BagReader.start_ns`); only a label topic whose messages carry header stamps is on the
header clock (:attr:`LabelTimeline.clock`). Which frame time is looked up in the labels (header
stamp or receive time) is the extractor's ``label_clock`` option: by default (``auto``) the
header stamp while the two clocks agree, each frame's receive time when its header stamps run on
another clock (a RealSense playback stamps from about 360 s while receive time starts at 0).

Every failure (missing, unreadable, corrupt or unsupported bag, absent topic) is a one-line
:class:`BagError`; a frame whose pixels do not decode is reported, not raised, by
:meth:`BagReader.images`.
"""
from __future__ import annotations

import csv
import io
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from mmkd_ros.data.ros_images import check_supported, msg_to_array, stamp_to_ns
from mmkd_ros.core.errors import BagError, DatasetError, ImageDecodeError

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
    if path.is_file() and path.suffix != ".bag":
        what = {".mcap": _mcap_what(path), ".db3": "a sqlite3 file"}.get(path.suffix.lower())
        if what:
            raise BagError(f"bag {path} is {what} without the metadata.yaml of a rosbag2 folder, "
                           f"which is unsupported: {SUPPORTED}; put it in a folder and run "
                           "`ros2 bag reindex <folder>` to write metadata.yaml")
    return path


SUPPORTED = ("supported are rosbag2 folders (metadata.yaml + sqlite3 .db3 or mcap files with the "
             "ros2 profile) and ROS 1 .bag files")


def _mcap_profile(path: Path) -> str | None:
    """The profile string of an MCAP file's header record, ``None`` when unreadable."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return None
    if not head.startswith(b"\x89MCAP") or len(head) < 21 or head[8] != 0x01:
        return None
    size = int.from_bytes(head[17:21], "little")
    return head[21:21 + size].decode("utf-8", "replace") if 21 + size <= len(head) else None


def _mcap_what(path: Path) -> str:
    profile = _mcap_profile(path)
    return "an MCAP file" if profile is None else f"an MCAP file (profile {profile!r})"


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
        unsupported = _unsupported(path, reason)
        if unsupported:
            raise BagError(f"bag {path} {unsupported}") from None
        raise BagError(f"cannot read bag {path} while {doing} ({reason}): the bag is corrupt "
                       "or incomplete; re-record or re-copy it") from None


def _unsupported(path: Path, reason: str) -> str | None:
    """The message for a valid bag in a form rosbags cannot read; ``None`` for damage."""
    if reason.startswith("Profile is not ros2"):
        files = sorted(path.glob("*.mcap")) if path.is_dir() else [path]
        profiles = sorted({p for p in map(_mcap_profile, files) if p is not None})
        found = f" {', '.join(map(repr, profiles))}" if profiles else ""
        return (f"holds MCAP data with profile{found}, not 'ros2', which is unsupported: "
                f"{SUPPORTED}; record with `ros2 bag record -s mcap` or convert it")
    if reason.startswith("Storage plugin"):
        storage = reason.split("'")[1] if reason.count("'") >= 2 else "?"
        return (f"has storage_identifier {storage!r} in its metadata.yaml, which is unsupported: "
                "supported are sqlite3 and mcap; set storage_identifier to the files' storage "
                "(.db3: sqlite3, .mcap: mcap)")
    if "not supported" in reason:
        return f"uses a format that is unsupported ({reason}): {SUPPORTED}, uncompressed or zstd"
    return None


class BagReader:
    """One bag opened for reading; use as a context manager.

    ``stamps`` and ``images`` iterate the bag in receive order, so the ``index`` of a frame
    (its position among its topic's messages) is the same in both passes.
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        self.path = resolve_bag_path(path)
        self.name = bag_name(self.path)
        with _bag_errors(self.path, "opening it"):
            # Used only when the bag stores no message definitions (rosbag2 sqlite3 from
            # Foxy/Galactic/Humble): their types are Humble's (or identical in layout).
            self._reader = AnyReader([self.path],
                                     default_typestore=get_typestore(Stores.ROS2_HUMBLE))

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
        return self.times(topics)[0]

    def times(self, topics: Iterable[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(header stamps, receive times)`` (ns, int64) of each topic's messages, in receive
        order (see :func:`_frame_stamp` for messages without a usable header)."""
        topics = list(topics)
        found: dict[str, list[int]] = {topic: [] for topic in topics}
        received: dict[str, list[int]] = {topic: [] for topic in topics}
        with _bag_errors(self.path, "reading stamps"):
            for topic, log_ns, msg in self._messages(topics):
                found[topic].append(_frame_stamp(msg, log_ns))
                received[topic].append(log_ns)
        for topic in topics:
            self._check_read(topic, len(found[topic]))
        return ({topic: np.asarray(values, np.int64) for topic, values in found.items()},
                {topic: np.asarray(values, np.int64) for topic, values in received.items()})

    def images(self, wanted: dict[str, set[int]]
               ) -> Iterator[tuple[str, int, int, np.ndarray | ImageDecodeError]]:
        """Decode the frames ``wanted[topic]`` (indices into the topic's messages).

        Yields ``(topic, index, stamp_ns, array HxWxC)`` in receive order; other messages are
        skipped without decoding. A frame whose data does not decode (truncated, corrupt)
        yields its :class:`ImageDecodeError` in place of the array, so one bad frame of many
        can be dropped; an encoding or format we never decode raises a :class:`BagError` that
        names the bag, topic and stamp.
        """
        counters = {topic: 0 for topic in wanted}
        with _bag_errors(self.path, "reading images"):
            for topic, log_ns, msg in self._messages(wanted):
                index = counters[topic]
                counters[topic] += 1
                if index not in wanted[topic]:
                    continue
                stamp = _frame_stamp(msg, log_ns)
                try:
                    check_supported(msg)
                except ImageDecodeError as exc:
                    raise BagError(f"bag {self.path} topic {topic} frame {index} (stamp "
                                   f"{stamp / 1e9:.3f} s): {exc}") from None
                try:
                    image: np.ndarray | ImageDecodeError = msg_to_array(msg)
                except ImageDecodeError as exc:
                    image = exc
                yield topic, index, stamp, image

    def label_timeline(self, topic: str) -> "LabelTimeline":
        """Labels published on ``topic`` (a message with a string ``data`` field)."""
        info = self.topics.get(topic)
        if info is None:
            found = ", ".join(sorted(self.topics)) or "none"
            raise BagError(f"label topic {topic} not found in bag {self.path} (topics: {found});"
                           " pass --label-topic, --labels-csv or --label")
        times, labels, stamped = [], [], True
        with _bag_errors(self.path, "reading labels"):
            for _, log_ns, msg in self._messages([topic]):
                if not isinstance(getattr(msg, "data", None), str):
                    raise BagError(f"label topic {topic} carries {info.msgtype}, not a string "
                                   "message: publish labels as std_msgs/String")
                times.append(_frame_stamp(msg, log_ns))
                stamped = stamped and times[-1] != log_ns  # a header stamp, not receive time
                labels.append(msg.data.strip())
        self._check_read(topic, len(times))
        return LabelTimeline.from_changes(times, labels,
                                          clock="header" if stamped and times else "receive")

    def _check_read(self, topic: str, read: int) -> None:
        """rosbags silently yields nothing for a topic whose metadata.yaml entry (type, QoS)
        differs from the storage file's; say so instead of extracting an empty topic."""
        info = self.topics.get(topic)
        if info is not None and info.count > 0 and read == 0:
            raise BagError(f"bag {self.path}: topic {topic} lists {info.count} messages but none "
                           "could be read (metadata.yaml and the storage file disagree on its "
                           "type or QoS): re-index the bag with `ros2 bag reindex`")


def _frame_stamp(msg: Any, log_ns: int) -> int:
    """Header stamp in ns; receive time when there is no header or the stamp is zero."""
    header = getattr(msg, "header", None)
    if header is None:
        return log_ns
    stamp = stamp_to_ns(header.stamp)
    return stamp if stamp > 0 else log_ns


class LabelTimeline:
    """Which label holds at a time: intervals ``[start, end)`` with a label (``None`` outside).

    ``clock`` is the clock of its times: ``"receive"`` (CSV, a header-less label topic) or
    ``"header"`` (a label topic with header stamps; also a constant label, which fits any).
    """

    def __init__(self, starts: Iterable[int], ends: Iterable[int], labels: Iterable[str],
                 clock: str = "receive") -> None:
        self.clock = clock
        self.starts = np.asarray(list(starts), np.int64)
        self.ends = np.asarray(list(ends), np.int64)
        self.labels = list(labels)
        order = np.argsort(self.starts, kind="stable")
        self.starts, self.ends = self.starts[order], self.ends[order]
        self.labels = [self.labels[i] for i in order]

    @classmethod
    def from_changes(cls, times: Iterable[int], labels: Iterable[str],
                     clock: str = "receive") -> "LabelTimeline":
        """A label topic: each label holds from its stamp until the next one (or forever)."""
        times, labels = list(times), list(labels)
        order = sorted(range(len(times)), key=lambda i: times[i])
        starts = [times[i] for i in order]
        ends = starts[1:] + [np.iinfo(np.int64).max]
        return cls(starts, ends, [labels[i] for i in order], clock)

    @classmethod
    def constant(cls, label: str) -> "LabelTimeline":
        """One label for all time."""
        return cls([np.iinfo(np.int64).min], [np.iinfo(np.int64).max], [label], "header")

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
    try:
        return _parse_labels_csv(path, read_text(path, "labels CSV"), bag, bag_start_ns)
    except csv.Error as exc:
        raise DatasetError(f"labels CSV {path} is not a readable CSV ({exc}): save it as "
                           "CSV UTF-8 with a header start_s,end_s,label") from None


def read_text(path: Path, what: str) -> str:
    """A spreadsheet's CSV as text: UTF-8 (BOM or not), UTF-16 with BOM, else Windows-1252.

    ``what`` names the file in the one-line :class:`DatasetError` (e.g. ``"labels CSV"``).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{what} {path} cannot be read ({exc.strerror}): check the path and "
                           "its permissions") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DatasetError(f"{what} {path} starts with a UTF-16 mark but does not decode "
                               "as UTF-16: save it as CSV UTF-8") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if b"\0" in data:
        raise DatasetError(f"{what} {path} is neither UTF-8 nor text in a one-byte encoding "
                           "(it holds NUL bytes): save it as CSV UTF-8")
    try:
        return data.decode("cp1252")  # Excel's "CSV" on Windows; a superset of Latin-1's letters
    except UnicodeDecodeError:
        return data.decode("latin-1")  # the five bytes cp1252 leaves undefined


def _parse_labels_csv(path: Path, text: str, bag: str, bag_start_ns: int) -> LabelTimeline:
    header = text.split("\n", 1)[0]
    # Spreadsheets in many locales save "CSV" with ';' (and decimal commas), "Unicode text" with
    # tabs: take the separator the header uses.
    delimiter = next((d for d in ("\t", ";") if d in header and "," not in header), ",")
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
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
            if delimiter != ",":
                row[start_key], row[end_key] = (row[start_key].replace(",", "."),
                                                row[end_key].replace(",", "."))
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
