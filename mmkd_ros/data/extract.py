"""Build the pair dataset (manifest.csv + rgb/ + nir/ + dataset.json) from recordings or files.

Inputs:
- one or more bags (rosbag2 sqlite3/mcap, ROS 1): RGB and NIR topics paired by header stamp with
  :func:`mmkd_ros.data.pairing.pair_nearest`, labels from a topic, a CSV of intervals or one
  label (:mod:`mmkd_ros.data.bag`);
- a folder of pairs ``<class>/<id>_rgb.<ext>`` + ``<class>/<id>_nir.<ext>``;
- a folder of multi-band GeoTIFFs ``<class>/<name>.tif`` with chosen bands per modality.

Guarantees:
- atomic: the dataset is built in ``<out>.tmp-<pid>-XXXX`` and moved onto ``<out>`` at the end,
  so a failure (bad input, Ctrl-C, SIGTERM) leaves no partial dataset: SIGTERM during an
  extraction removes the temporary folder and raises :class:`ExtractionStopped` (one line). A
  temporary folder left by a killed run (its pid no longer running) is removed by the next
  extraction into the same ``<out>``, with one line saying so;
- exclusive: an extraction holds ``fcntl.flock`` on ``<out>.lock`` (beside ``<out>``, holding its
  pid; removed at the end) from the cache check to the commit; a second extraction into the same
  ``<out>`` fails at once, in one line naming the pid of the first, instead of racing it;
- cached: ``dataset.json`` records a key hashed from the input *bytes* (size + mtime can lie after
  a copy or an edit) and the options; a second run with the same key reuses the dataset, once it
  has checked that every file the manifest lists is there with the recorded total size
  (``dataset.json["files"]``); a damaged cache is extracted again, with one line saying why;
- parallel: ``workers > 1`` extracts several bags at once, one bag per worker process, each into
  its own part folder; the parts are merged in bag order, so the dataset is the same, byte for
  byte, as the one a single process writes;
- accountable: every frame that did not become a pair (unpaired, subsampled, straddling a label
  change, or undecodable, with its partner) is listed in ``dataset.json["dropped"]`` with its
  bag, topic, stamp and reason; only a bag none of whose selected pairs decodes is an error;
- sane pairs: the two images of a pair must be able to show one scene (aspect ratios within
  25 %, sides >= 8 px), else the extraction stops naming both topics and sizes;
- clocks: frames pair by header stamp; labels (receive clock) are looked up by each frame's
  header stamp or receive time (``BagOptions.label_clock``; ``auto`` chooses per bag), see
  :mod:`mmkd_ros.data.bag`;
- leakage-free groups: a bag frame's group is ``<bag name>:<segment>``, a segment being a run of
  consecutive pairs with one label (one scene), so splitting by group never puts neighbouring,
  near-identical frames of one scene on both sides of a split. When a whole bag is one unit
  (one field image, one block), ``group_by="bag"`` makes the group the bag name, and a bag-splits
  file (:mod:`mmkd_ros.data.splits`) also fixes each bag's split in the manifest.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mmkd_ros import __version__
from mmkd_ros.data.bag import BagReader, LabelTimeline, bag_files, bag_name, read_labels_csv, \
    read_text, resolve_bag_path
from mmkd_ros.data.image_files import read_image_file, write_png
from mmkd_ros.data.manifest import DATASET_FORMAT, DATASET_VERSION, INFO_NAME, MANIFEST_NAME, \
    dataset_problem, files_record, load_dataset_info, write_manifest
from mmkd_ros.data.pairing import nearest_index, pair_nearest
from mmkd_ros.data.splits import read_bag_splits
from mmkd_ros.core.atomic import leftovers_of_dead_writers
from mmkd_ros.core.errors import BagError, DatasetError, quiet_native_logs
from mmkd_ros.core.topics import LABEL_TOPIC, NIR_TOPIC, RGB_TOPIC

DEFAULT_RGB_TOPIC, DEFAULT_NIR_TOPIC, DEFAULT_LABEL_TOPIC = RGB_TOPIC, NIR_TOPIC, LABEL_TOPIC
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
GEOTIFF_EXTENSIONS = (".tif", ".tiff")
# Bump when the output for the same inputs changes (invalidates caches). 2: label_clock "auto",
# pairs that cannot be one scene refused, undecodable frames dropped, dataset.json["files"].
_EXTRACTOR_VERSION = 2
GROUP_BY = ("segment", "bag")
LABEL_CLOCKS = ("auto", "header", "receive")
# label_clock "auto": a bag whose frames' header stamps and receive times differ by more than
# this (median) stamps on another clock than the recorder's; transport latency is far below it.
CLOCKS_AGREE_NS = 1_000_000_000
# A pair's two images must be able to show one scene: aspect ratios within this factor (16:9
# beside 4:3 or 5:4 passes, 2:1 beside 4:3 does not), and every side at least MIN_SIDE pixels
# (else it is a thumbnail or a placeholder, not a camera frame).
MAX_ASPECT_RATIO = 1.5
MIN_SIDE = 8
TOPIC_MAP_COLUMNS = ("bag", "rgb_topic", "nir_topic")


class ExtractionStopped(DatasetError):
    """SIGTERM arrived during an extraction; the unfinished dataset has been removed."""


@dataclass(frozen=True)
class BagOptions:
    """How frames of a bag become pairs; every field enters the cache key.

    ``group_by`` and ``splits`` decide a pair's ``group`` and ``split`` columns: by default the
    group is ``<bag>:<label segment>`` and the split is left to :func:`assign_splits
    <mmkd_ros.data.dataset.assign_splits>`; ``group_by="bag"`` makes the group the bag name (so
    whole bags are split); ``splits`` (a bag-splits file, :mod:`mmkd_ros.data.splits`) also makes
    the group the bag name and writes each bag's split from the file. The splits file's bytes
    enter the cache key.
    """

    rgb_topic: str = DEFAULT_RGB_TOPIC
    nir_topic: str = DEFAULT_NIR_TOPIC
    label_topic: str | None = None  # None: DEFAULT_LABEL_TOPIC when the bag has it
    labels_csv: str | None = None
    label: str | None = None
    max_dt_s: float = 0.03
    every: int = 1
    allow_unlabelled: bool = False
    # "segment": group = <bag>:<label segment>; "bag": group = <bag> (a bag is one unit).
    group_by: str = "segment"
    # A bag-splits file (mmkd_ros.data.splits): group = bag and the manifest's split from it.
    splits: str | None = None
    # Which time of a frame is looked up in the labels (whose times are receive times: a label
    # topic's receive time, CSV seconds from the bag's first receive time):
    # "header" = its header stamp (right when the camera stamps with the recorder's clock),
    # "receive" = its receive time (when header stamps run on another clock, e.g. a device's),
    # "auto" = per bag: "header" unless the frames' header stamps and receive times differ by
    # more than CLOCKS_AGREE_NS (median), and always "header" for header-stamped label topics.
    label_clock: str = "auto"
    # Per-bag topics: (bag, rgb_topic, nir_topic) entries, bag = a bag name (folder name, .bag
    # file stem) or a path; a bag without an entry uses rgb_topic / nir_topic.
    topic_map: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        entries = []
        for entry in self.topic_map:
            if len(entry) != 3 or not all(isinstance(x, str) and x for x in entry):
                raise DatasetError(f"topic map entry {entry!r} must be (bag, rgb_topic, "
                                   "nir_topic), three non-empty names")
            if entry[1] == entry[2]:
                raise DatasetError(f"topic map entry of bag {entry[0]}: rgb and nir topic are "
                                   f"both {entry[1]}")
            entries.append(tuple(entry))
        object.__setattr__(self, "topic_map", tuple(entries))
        if self.label_clock not in LABEL_CLOCKS:
            raise DatasetError(f"--label-clock must be one of {', '.join(LABEL_CLOCKS)}, got "
                               f"{self.label_clock!r}")
        if self.group_by not in GROUP_BY:
            raise DatasetError(f"--group-by must be one of {', '.join(GROUP_BY)}, got "
                               f"{self.group_by!r}")
        sources = [x for x in (self.label_topic, self.labels_csv, self.label) if x]
        if len(sources) > 1:
            raise DatasetError("give one label source: --label-topic, --labels-csv or --label")
        if not math.isfinite(self.max_dt_s) or self.max_dt_s < 0:
            raise DatasetError(f"--max-dt must be a finite number >= 0 (seconds), got "
                               f"{self.max_dt_s}")
        if self.every < 1:
            raise DatasetError(f"--every must be >= 1, got {self.every}")
        if self.rgb_topic == self.nir_topic:
            raise DatasetError(f"--rgb-topic and --nir-topic are both {self.rgb_topic}")

    @property
    def by_bag(self) -> bool:
        """Whether a pair's group is its bag name (``group_by="bag"`` or a splits file)."""
        return self.group_by == "bag" or self.splits is not None

    def topic_entry(self, path: Path, name: str) -> tuple[str, str, str] | None:
        """The :attr:`topic_map` entry of the bag at ``path`` (named ``name``), if any."""
        for entry in self.topic_map:
            if _names_bag(entry[0], path, name):
                return entry
        return None


def _names_bag(entry: str, path: Path, name: str) -> bool:
    """Whether a topic-map ``entry`` (bag name or path) designates the bag ``path``/``name``."""
    if entry in (name, bag_name(path)):
        return True
    candidate = Path(entry)
    if not candidate.exists():
        return False
    try:
        return resolve_bag_path(candidate).resolve() == path
    except BagError:
        return False


def split_bag_spec(spec: str) -> tuple[str, tuple[str, str] | None]:
    """``PATH`` or ``PATH:RGB_TOPIC:NIR_TOPIC`` (a ``--bag`` value) -> path and topics.

    ROS topic names hold no ``:`` and start with ``/``, so the last two ``:/...`` parts are the
    topics; a value that exists as a path is always a path.
    """
    match = re.fullmatch(r"(.+?):(/[^:]*):(/[^:]*)", spec)
    if Path(spec).exists() or not match:
        return spec, None
    return match.group(1), (match.group(2), match.group(3))


def read_topic_map(path: str | Path) -> tuple[tuple[str, str, str], ...]:
    """Per-bag topics from a CSV (header ``bag,rgb_topic,nir_topic``) or a YAML file (``.yaml``,
    ``.yml``: ``{<bag>: {rgb_topic: ..., nir_topic: ...}}``), as :attr:`BagOptions.topic_map`.

    ``bag`` is a bag name or a path; a relative path is taken from the map file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"topic map {path} does not exist: check --topic-map")
    text = read_text(path, "topic map")
    example = "bag,rgb_topic,nir_topic / run1,/cam/rgb,/cam/nir"
    rows: list[tuple[str, str, str]] = []
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        example = "run1: {rgb_topic: /cam/rgb, nir_topic: /cam/nir}"
        try:
            payload = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = str(exc).splitlines()[0]
            raise DatasetError(f"topic map {path} is not valid YAML ({reason}): write it as "
                               f"{example}") from None
        if not isinstance(payload, dict):
            raise DatasetError(f"topic map {path} must map bags to topics, e.g. {example}")
        for bag, topics in payload.items():
            if not isinstance(topics, dict) or set(topics) != {"rgb_topic", "nir_topic"}:
                raise DatasetError(f"topic map {path}: bag {bag!r} needs exactly rgb_topic and "
                                   f"nir_topic, e.g. {example}")
            rows.append((str(bag), str(topics["rgb_topic"]), str(topics["nir_topic"])))
    else:
        import csv
        import io

        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            fields = [f.strip() for f in reader.fieldnames or []]
            if fields[:3] != list(TOPIC_MAP_COLUMNS):
                raise DatasetError(f"topic map {path} needs the header "
                                   f"{','.join(TOPIC_MAP_COLUMNS)}, got {','.join(fields)}; "
                                   f"e.g. {example}")
            for line, row in enumerate(reader, start=2):
                values = [(row.get(key) or "").strip() for key in reader.fieldnames[:3]]
                if not all(values):
                    raise DatasetError(f"topic map {path} line {line}: needs a bag, an rgb_topic "
                                       "and a nir_topic")
                rows.append((values[0], values[1], values[2]))
        except csv.Error as exc:
            raise DatasetError(f"topic map {path} is not a readable CSV ({exc}): e.g. "
                               f"{example}") from None
    entries = []
    for bag, rgb, nir in rows:
        local = path.parent / bag
        entries.append((str(local.resolve()) if local.exists() else bag, rgb, nir))
    return tuple(entries)


@dataclass(frozen=True)
class ExtractResult:
    """Where the dataset is, whether a cached one was reused, and its ``dataset.json``."""

    path: Path
    reused: bool
    info: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Hashing and caching


def sha256_files(files: Sequence[Path], root: Path | None = None) -> str:
    """SHA-256 over the names (relative to ``root``) and bytes of ``files``, read in chunks."""
    digest = hashlib.sha256()
    for path in files:
        name = str(path.relative_to(root)) if root else path.name
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _cache_key(kind: str, inputs: list[dict[str, Any]], options: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "inputs": inputs, "options": options,
                       "extractor": _EXTRACTOR_VERSION, "version": DATASET_VERSION},
                      sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _cached(out: Path, key: str, force: bool, progress: bool) -> ExtractResult | None:
    """The existing dataset at ``out`` when its key matches and it is whole; refuse to clobber
    foreign folders."""
    if not out.exists():
        return None
    if (out / INFO_NAME).is_file():
        try:
            info = load_dataset_info(out)
        except DatasetError:
            info = {}
        if info.get("cache_key") == key and (out / MANIFEST_NAME).is_file() and not force:
            problem = dataset_problem(out, info)
            if problem is None:
                _say(progress, f"reusing cached dataset {out} ({info['counts']['pairs']} pairs): "
                               "same input bytes and options (pass --force to rebuild)")
                return ExtractResult(out, True, info)
            _say(progress, f"cached dataset {out} is damaged ({problem}): extracting it again")
            return None
        if info.get("format") == DATASET_FORMAT:
            return None  # ours, but stale or forced: rebuilt and replaced
    if out.is_file() or any(out.iterdir()):
        raise DatasetError(f"--out {out} exists and is not a pair dataset: choose another --out "
                           "or remove it")
    return None


def _writer_threads(processes: int = 1) -> int:
    """PNG writer threads per process: OpenCV releases the GIL while encoding."""
    return max(1, min(4, (os.cpu_count() or 1) // max(1, processes)))


class _PairSink:
    """Writes pairs' images under ``root/rgb``, ``root/nir`` and collects their manifest rows."""

    def __init__(self, root: Path, threads: int) -> None:
        self.root = root
        # Not parents=True: a worker whose dataset folder was removed (the run was stopped)
        # must fail, not re-create it.
        root.mkdir(exist_ok=True)
        (root / "rgb").mkdir(exist_ok=True)
        (root / "nir").mkdir(exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self.modalities: dict[str, dict[str, Any]] = {}
        # Image encoding dominates extraction time and OpenCV releases the GIL while encoding:
        # a few writer threads use the other cores. In-flight writes are bounded (memory).
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._writes: deque[Future] = deque()

    def add_pair(self, pair_id: str, rgb: np.ndarray, nir: np.ndarray, *, label: str | None,
                 group: str, source: str, rgb_stamp_ns: int | None = None,
                 nir_stamp_ns: int | None = None, topics: tuple[str | None, str | None] = (
                     None, None), split: str = "") -> None:
        """Write one pair's images and remember its manifest row."""
        files = {}
        for modality, arr, topic in (("rgb", rgb, topics[0]), ("nir", nir, topics[1])):
            self._check_modality(modality, arr, topic, source)
            ext = ".npy" if arr.shape[2] not in (1, 3) else ".png"
            rel = f"{modality}/{pair_id}{ext}"
            save = np.save if ext == ".npy" else write_png
            self._writes.append(self._pool.submit(save, self.root / rel, arr))
            files[modality] = rel
        while len(self._writes) > 16:
            self._writes.popleft().result()  # re-raises a failed write
        dt = None if rgb_stamp_ns is None or nir_stamp_ns is None else nir_stamp_ns - rgb_stamp_ns
        self.rows.append({"id": pair_id, "rgb": files["rgb"], "nir": files["nir"],
                          "label": label or "", "group": group, "split": split,
                          "rgb_stamp_ns": rgb_stamp_ns, "nir_stamp_ns": nir_stamp_ns,
                          "dt_ns": dt, "source": source})

    def _check_modality(self, modality: str, arr: np.ndarray, topic: str | None,
                        source: str) -> None:
        spec = {"topic": topic, "channels": int(arr.shape[2]), "dtype": arr.dtype.name}
        if modality == "rgb" and not (spec["channels"] == 1 or (
                spec["channels"] == 3 and arr.dtype == np.uint8)):
            raise DatasetError(f"{source}: visible images must be 3-channel uint8 or 1-channel, "
                               f"got {spec['channels']} channels of {spec['dtype']}")
        self._same_format(modality, spec, source)

    def _same_format(self, modality: str, spec: dict[str, Any], source: str) -> None:
        known = self.modalities.setdefault(modality, spec)
        if (known["channels"], known["dtype"]) != (spec["channels"], spec["dtype"]):
            raise DatasetError(
                f"{source}: {modality} images change from {known['channels']}x{known['dtype']} "
                f"to {spec['channels']}x{spec['dtype']}; one dataset needs one format per "
                "modality (extract such inputs separately)")

    def finish(self) -> None:
        """Wait for every image write (re-raising a failed one)."""
        while self._writes:
            self._writes.popleft().result()
        self._pool.shutdown()

    def cancel(self) -> None:
        """Drop the writes not started and wait for the running ones."""
        for future in self._writes:
            future.cancel()
        self._pool.shutdown(wait=True)


class _DatasetWriter(_PairSink):
    """Builds a dataset in a temporary sibling folder and moves it into place on commit.

    The folder is ``<out>.tmp-<pid>-XXXX``: the pid tells a later run whether its owner still
    runs (:func:`_remove_stale_temps`).
    """

    def __init__(self, out: Path, threads: int | None = None) -> None:
        self.out = out
        self.committed = False
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-{os.getpid()}-",
                                        dir=out.parent))
        except OSError as exc:
            raise DatasetError(f"cannot create the dataset {out} ({exc.strerror} in "
                               f"{out.parent}): choose a writable --out") from None
        self.tmp = tmp
        tmp.chmod(0o755)  # mkdtemp makes 0700; the dataset is an ordinary folder
        super().__init__(tmp, _writer_threads() if threads is None else threads)

    def merge(self, part: "_BagPart") -> None:
        """Move a bag's part folder into the dataset: its pairs get the next ids, in order."""
        for modality, spec in part.modalities.items():
            self._same_format(modality, spec, f"bag {part.path}")
        for row in sorted(part.rows, key=lambda r: r["id"]):
            pair_id = f"{len(self.rows):06d}"
            for modality in ("rgb", "nir"):
                rel = f"{modality}/{pair_id}{Path(row[modality]).suffix}"
                os.replace(part.root / row[modality], self.tmp / rel)
                row[modality] = rel
            self.rows.append({**row, "id": pair_id})
        self.dropped += part.dropped
        shutil.rmtree(part.root)

    def commit(self, info: dict[str, Any]) -> dict[str, Any]:
        """Write manifest.csv + dataset.json, then move the folder onto ``out``."""
        self.finish()
        self.rows.sort(key=lambda row: row["id"])
        labels = [row["label"] for row in self.rows]
        classes = sorted({label for label in labels if label})
        dts = np.array([abs(row["dt_ns"]) for row in self.rows if row["dt_ns"] is not None],
                       np.int64)
        info = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "classes": classes,
            "modalities": self.modalities,
            "counts": {"pairs": len(self.rows),
                       "per_class": {c: labels.count(c) for c in classes},
                       "unlabelled": labels.count("")},
            "pairing": {"max_dt_ns": info.pop("max_dt_ns", None),
                        "mean_abs_dt_ns": float(dts.mean()) if dts.size else None,
                        "max_abs_dt_ns": int(dts.max()) if dts.size else None},
            "dropped": self.dropped,
            "files": files_record(self.tmp, self.rows),
            **info,
            "created_by": f"mmkd_ros {__version__}",
        }
        write_manifest(self.tmp / MANIFEST_NAME, self.rows)
        (self.tmp / INFO_NAME).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        with _sigterm_deferred():
            if self.out.exists():
                # A directory cannot be os.replace'd onto a non-empty one: swap via a side name.
                old = Path(tempfile.mkdtemp(prefix=f"{self.out.name}.old-{os.getpid()}-",
                                            dir=self.out.parent))
                os.replace(self.out, old / "dataset")
                os.replace(self.tmp, self.out)
                shutil.rmtree(old)
            else:
                os.replace(self.tmp, self.out)
            self.committed = True
        return info

    def abort(self) -> None:
        self.cancel()
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# One extraction per --out at a time; what killed runs left behind; SIGTERM


@contextmanager
def _out_lock(out: Path) -> Iterator[Path | None]:
    """Hold ``fcntl.flock`` on ``<out>.lock`` (it holds our pid), or fail at once naming the
    pid of the extraction that holds it. Where the folder is read-only, no lock is taken (only
    reusing a cached dataset can work there)."""
    lock_path = out.parent / f"{out.name}.lock"
    fd = None
    while fd is None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                break
            raise DatasetError(f"cannot create the lock file {lock_path} ({exc.strerror}): "
                               "choose a writable --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatasetError(f"--out {out} is being extracted by another process (pid {owner}, "
                               f"lock {lock_path}): wait for it to finish, or choose another "
                               "--out") from None
        try:  # the previous holder may have removed the file between our open and flock
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            fd = None
    if fd is None:
        yield None
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock_path
    finally:
        try:
            os.unlink(lock_path)  # while still holding it: a waiter re-checks the inode
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_stale_temps(out: Path, progress: bool) -> None:
    """Remove ``<out>.tmp-<pid>-*`` / ``<out>.old-<pid>-*`` folders whose pid no longer runs
    (left by a killed extraction). Called under the lock: no live extraction of ``out`` owns
    them."""
    pattern = re.compile(rf"{re.escape(out.name)}\.(?:tmp|old)-(\d+)-")
    for path, pid in leftovers_of_dead_writers(out.parent, pattern, folders=True):
        shutil.rmtree(path, ignore_errors=True)
        _say(progress, f"removed {path}: the unfinished dataset of an extraction that was "
                       f"stopped (pid {pid} no longer runs)")


@contextmanager
def _stop_on_sigterm(out: Path, writer: list["_DatasetWriter"]) -> Iterator[None]:
    """SIGTERM raises :class:`ExtractionStopped` (so the temporary folder is removed on the way
    out); only in the main thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        if writer and writer[0].committed:
            raise ExtractionStopped(f"stopped by SIGTERM right after {out} was written (it is "
                                    "complete)")
        raise ExtractionStopped(f"stopped by SIGTERM while extracting into {out}: the "
                                "unfinished dataset was removed, nothing was written; run the "
                                "command again to extract")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _sigterm_deferred() -> Iterator[None]:
    """Hold SIGTERM back while the dataset folder is swapped into place (a few renames)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _build(out: str | Path, key: str, force: bool, progress: bool,
           fill: Callable[[_DatasetWriter], dict[str, Any]]) -> ExtractResult:
    """Reuse a cached dataset or run ``fill`` into a fresh writer and commit it atomically."""
    out = Path(out)
    writers: list[_DatasetWriter] = []
    with _out_lock(out), _stop_on_sigterm(out, writers):
        _remove_stale_temps(out, progress)
        cached = _cached(out, key, force, progress)
        if cached:
            return cached
        writers.append(_DatasetWriter(out))
        writer = writers[0]
        try:
            extra = fill(writer)
            if not writer.rows:
                raise DatasetError(f"no pairs to write to {out}: nothing was extracted")
            info = writer.commit({**extra, "cache_key": key})
        except BaseException:
            writer.abort()
            raise
    counts = info["counts"]
    undecodable = sum(1 for d in info["dropped"] if d["reason"].startswith("undecodable"))
    _say(progress, f"wrote {out}: {counts['pairs']} pairs, {len(info['classes'])} classes, "
                   f"{counts['unlabelled']} unlabelled, {len(info['dropped'])} frames dropped"
                   + (f" ({undecodable} undecodable)" if undecodable else ""))
    return ExtractResult(out, False, info)


@contextmanager
def _progress_bar(progress: bool, total: int, desc: str, unit: str = "pair") -> Iterator[Any]:
    """A tqdm bar on a terminal only (``disable=None``: none in logs or pipes), erased on error."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=None if progress else True,
               mininterval=0.5, file=sys.stderr)
    try:
        yield bar
    except BaseException:
        bar.leave = False  # the error line should stand alone
        raise
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# Bags


def extract_bags(bags: Sequence[str | Path], out: str | Path,
                 options: BagOptions = BagOptions(), force: bool = False,
                 progress: bool = True, workers: int = 1) -> ExtractResult:
    """Extract RGB/NIR pairs of one or more bags into the pair dataset at ``out``.

    ``workers``: bags extracted at once, one worker process per bag (``0``: as many as there
    are CPU cores, at most one per bag); the dataset is the same for every value.
    """
    if not bags:
        raise DatasetError("no bag given: pass --bag PATH (repeatable)")
    if workers < 0:
        raise DatasetError(f"--workers must be >= 0 (0: one per CPU core), got {workers}")
    paths = [resolve_bag_path(bag).resolve() for bag in bags]
    names = _unique_names([p.stem if p.suffix == ".bag" else p.name for p in paths])
    for entry in options.topic_map:
        if not any(_names_bag(entry[0], p, n) for p, n in zip(paths, names)):
            raise DatasetError(f"topic map entry {entry[0]!r} names none of the bags "
                               f"({', '.join(names)}): give a bag name or path of this run")
    inputs = [{"path": str(p), "name": n, "kind": "rosbag1" if p.suffix == ".bag" else "rosbag2",
               "sha256": sha256_files(bag_files(p), p if p.is_dir() else None)}
              for p, n in zip(paths, names)]
    opts = asdict(options)
    if options.labels_csv:
        csv_path = Path(options.labels_csv)
        if not csv_path.is_file():
            raise DatasetError(f"labels CSV {csv_path} does not exist: check --labels-csv")
        opts["labels_csv"] = {"path": str(csv_path.resolve()),
                              "sha256": sha256_files([csv_path])}
    bag_splits: dict[str, str] | None = None
    if options.splits is not None:
        splits_path = Path(options.splits)
        bag_splits = read_bag_splits(splits_path)
        for path, name in zip(paths, names):
            if name not in bag_splits:
                raise DatasetError(f"bag {name!r} ({path}) is not listed in bag-splits file "
                                   f"{splits_path}: add it there or leave the bag out")
        opts["splits"] = {"path": str(splits_path.resolve()),
                          "sha256": sha256_files([splits_path])}
    opts["topic_map"] = [list(entry) for entry in options.topic_map]
    key_opts = dict(opts)
    if options.group_by == "segment" and options.splits is None:
        # The defaults of the options added later stay out of the key.
        del key_opts["group_by"], key_opts["splits"]
    if options.label_clock == "auto":
        del key_opts["label_clock"]
    if not options.topic_map:
        del key_opts["topic_map"]
    key = _cache_key("bags", inputs, key_opts)
    processes = min(len(paths), workers or os.cpu_count() or 1)

    def fill(writer: _DatasetWriter) -> dict[str, Any]:
        tasks = []
        for k, (path, name) in enumerate(zip(paths, names)):
            entry = options.topic_entry(path, name)
            topics = (options.rgb_topic, options.nir_topic) if entry is None else entry[1:]
            flags = ("--rgb-topic", "--nir-topic") if entry is None else (
                (f"the topic map entry of bag {name}",) * 2)
            tasks.append(_BagTask(path=path, name=name, options=options,
                                  split=bag_splits[name] if bag_splits is not None else "",
                                  root=writer.tmp / f".part-{k:04d}", topics=topics,
                                  flags=flags, threads=_writer_threads(processes),
                                  progress=progress and processes == 1))
        clocks: dict[str, str | None] = {}

        def merge(part: _BagPart) -> None:
            for message in part.messages:
                _say(progress, message)
            writer.merge(part)
            clocks[part.name] = part.label_clock

        _run_bag_tasks(tasks, processes, progress, merge)
        return {"inputs": inputs, "options": opts, "label_clocks": clocks,
                "max_dt_ns": int(options.max_dt_s * 1e9)}

    return _build(out, key, force, progress, fill)


@dataclass(frozen=True)
class _BagTask:
    """One bag to extract into its part folder ``root`` (in this process or a worker)."""

    path: Path
    name: str
    options: BagOptions
    split: str
    root: Path
    topics: tuple[str, str]  # rgb, nir
    flags: tuple[str, str]  # where the topics came from, for messages
    threads: int
    progress: bool


@dataclass
class _BagPart:
    """What a bag's extraction produced: its part folder's pairs (local ids), drops, notes."""

    path: Path
    name: str
    root: Path
    rows: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    modalities: dict[str, dict[str, Any]]
    label_clock: str | None
    messages: list[str] = field(default_factory=list)


def _bag_task(task: _BagTask) -> _BagPart:
    """Extract one bag into its part folder (the unit of work of a worker process)."""
    sink = _PairSink(task.root, task.threads)
    messages: list[str] = []
    try:
        clock = _extract_one_bag(sink, task, messages)
        sink.finish()
    except BaseException:
        sink.cancel()
        raise
    return _BagPart(task.path, task.name, task.root, sink.rows, sink.dropped, sink.modalities,
                    clock, messages)


def _worker_setup() -> None:
    """What a worker process sets up before its bag.

    Ctrl-C is the parent's to handle. tqdm's default lock is a multiprocessing semaphore,
    registered with the resource tracker in a fork-server child; a worker the parent ends would
    leave it there, and the tracker then warns on the user's terminal. A thread lock is all one
    bag's progress needs.
    """
    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_native_logs()
    tqdm.set_lock(threading.RLock())


def _worker_main(conn: Any, task: _BagTask) -> None:
    """A worker process: extract one bag, send back its part (or the error it raised).

    Ctrl-C and SIGTERM are the parent's to handle: it ends its workers itself.
    """
    _worker_setup()
    try:
        result: tuple[str, Any] = ("ok", _bag_task(task))
    except Exception as exc:  # raised again in the parent, which reports it
        result = ("error", exc)
    try:
        try:
            conn.send(result)
        except (BrokenPipeError, ConnectionError):
            raise
        except Exception as exc:  # an error that does not pickle: send its text
            conn.send(("error", DatasetError(f"bag {task.path}: {type(exc).__name__}: {exc}")))
    except (BrokenPipeError, ConnectionError):
        pass  # the parent stopped (an error in another bag, Ctrl-C, SIGTERM): nobody to tell
    finally:
        conn.close()


def _run_bag_tasks(tasks: list[_BagTask], processes: int, progress: bool,
                   merge: Callable[[_BagPart], None]) -> None:
    """Run ``tasks`` here (one process) or in up to ``processes`` worker processes, one bag
    each; ``merge`` gets the parts in bag order either way. An error of any bag stops the
    others (their processes are ended) and is raised here."""
    if processes <= 1:
        for task in tasks:
            merge(_bag_task(task))
        return
    from multiprocessing.connection import wait

    # Not fork: the parent may run threads (writers, progress bars), and a forked copy of their
    # locks can hang. A fork server is a clean process that imports this module once; each bag's
    # worker is forked from it, so a worker starts in milliseconds, not in the second a fresh
    # interpreter needs for NumPy, OpenCV and rosbags. Plain processes and pipes (no Pool):
    # nothing is left to clean up when one is ended.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    running: dict[Any, tuple[int, Any]] = {}  # pipe end -> (task index, process)
    done: dict[int, _BagPart] = {}
    started = merged = 0
    try:
        with _progress_bar(progress, len(tasks), f"extracting {len(tasks)} bags with "
                           f"{processes} workers", unit="bag") as bar:
            while merged < len(tasks):
                while started < len(tasks) and len(running) < processes:
                    receive, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_worker_main, args=(send, tasks[started]),
                                       daemon=True)
                    with _sigterm_deferred():  # a started worker is always in `running`
                        proc.start()
                        running[receive] = (started, proc)
                    send.close()
                    started += 1
                for conn in wait(list(running)):
                    index, proc = running.pop(conn)
                    try:
                        status, value = conn.recv()
                    except EOFError:
                        proc.join()
                        status, value = "error", DatasetError(
                            f"the worker extracting bag {tasks[index].path} ended without a "
                            f"result (exit code {proc.exitcode}): run with --workers 1 to see "
                            "why")
                    conn.close()
                    proc.join()
                    if status == "error":
                        raise value
                    done[index] = value
                while merged in done:
                    merge(done.pop(merged))
                    merged += 1
                    bar.update(1)
    finally:
        for _, proc in running.values():
            proc.terminate()  # stops the bags still being extracted
        for conn, (_, proc) in running.items():
            proc.join()
            conn.close()


def _unique_names(names: list[str]) -> list[str]:
    """Bag names for groups; equal names of different bags get ``#2``, ``#3``..."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def _label_timeline(bag: BagReader, options: BagOptions) -> tuple[LabelTimeline | None, str]:
    """The bag's labels and a description of where they came from (for messages)."""
    if options.label:
        return LabelTimeline.constant(options.label), f"--label {options.label}"
    if options.labels_csv:
        return read_labels_csv(options.labels_csv, bag.name, bag.start_ns), \
            f"--labels-csv {options.labels_csv}"
    topic = options.label_topic or DEFAULT_LABEL_TOPIC
    if options.label_topic or topic in bag.topics:
        return bag.label_timeline(topic), f"label topic {topic}"
    if options.allow_unlabelled:
        return None, "no label source"
    raise BagError(f"no labels for bag {bag.path}: it has no {DEFAULT_LABEL_TOPIC} topic; pass "
                   "--label-topic, --labels-csv or --label (or --allow-unlabelled)")


def _choose_label_clock(option: str, timeline: LabelTimeline | None,
                        stamps: dict[str, np.ndarray], received: dict[str, np.ndarray],
                        path: Path) -> tuple[str, str | None]:
    """The frame time looked up in the labels ("header"/"receive") and a note when ``auto``
    chose the receive time."""
    if option != "auto":
        return option, None
    if timeline is None or timeline.clock == "header":
        return "header", None
    offsets = np.concatenate([stamps[t] - received[t] for t in stamps])  # header - receive
    median = float(np.median(offsets)) if offsets.size else 0.0
    if abs(median) <= CLOCKS_AGREE_NS:
        return "header", None
    return "receive", (f"note: bag {path}: its frames' header stamps run {median / 1e9:+.3f} s "
                       "from their receive times (another clock than the recorder's): labels "
                       "are looked up by each frame's receive time (--label-clock auto; pass "
                       "--label-clock header to use the stamps)")


def _extract_one_bag(sink: _PairSink, task: _BagTask, messages: list[str]) -> str | None:
    """Pairs of one bag into ``sink`` with local ids; returns the label clock used."""
    path, name, options, split = task.path, task.name, task.options, task.split
    rgb_topic, nir_topic = task.topics
    max_dt_ns = int(round(options.max_dt_s * 1e9))
    with BagReader(path) as bag:
        bag.require_image_topic(rgb_topic, task.flags[0])
        bag.require_image_topic(nir_topic, task.flags[1])
        timeline, label_source = _label_timeline(bag, options)
        stamps, received = bag.times([rgb_topic, nir_topic])
        rgb_stamps, nir_stamps = stamps[rgb_topic], stamps[nir_topic]  # [n_rgb], [n_nir]
        # The time of each frame that is looked up in the labels (see BagOptions.label_clock).
        clock, note = _choose_label_clock(options.label_clock, timeline, stamps, received, path)
        if note:
            messages.append(note)
        label_times = received if clock == "receive" else stamps
        rgb_label_t, nir_label_t = label_times[rgb_topic], label_times[nir_topic]
        pairing = pair_nearest(rgb_stamps, nir_stamps, max_dt_ns)
        if not pairing.pairs:
            raise BagError(
                f"no RGB/NIR pair within --max-dt {options.max_dt_s} s in bag {path} (closest "
                f"dt seen: {pairing.closest_dt_ns / 1e9:.3f} s): raise --max-dt or check that "
                "the two topics come from the same recording")
        dropped = _unpaired_reasons(rgb_stamps, nir_stamps, pairing.pairs, max_dt_ns,
                                    (rgb_topic, nir_topic))

        # Labels; a pair whose two frames fall on both sides of a label change shows two scenes.
        kept: list[tuple[int, int, str | None]] = []
        for i, j in pairing.pairs:
            label = timeline.label_at(int(rgb_label_t[i])) if timeline else None
            if timeline and timeline.label_at(int(nir_label_t[j])) != label:
                dropped += [(rgb_topic, rgb_stamps[i], "pair straddles a label change"),
                            (nir_topic, nir_stamps[j], "pair straddles a label change")]
                continue
            kept.append((i, j, label))
        if timeline is not None and not any(label for _, _, label in kept):
            if len(timeline):
                message = _no_label_message(bag, path, label_source, timeline, options.label_clock,
                                            clock, stamps, received, (rgb_topic, nir_topic))
            else:
                message = (f"no pair of bag {path} got a label from {label_source}: it holds no "
                           f"label for bag {name}; add some or pass --allow-unlabelled")
            if not options.allow_unlabelled:
                raise BagError(message)
            messages.append(f"warning: {message}")

        # Scene segments (groups) over the time-ordered pairs, before subsampling.
        segments, segment = [], 0
        for k, (_, _, label) in enumerate(kept):
            if k and label != kept[k - 1][2]:
                segment += 1
            segments.append(segment)
        selected = []
        for k, (i, j, label) in enumerate(kept):
            if k % options.every:
                reason = f"subsampled (--every {options.every})"
                dropped += [(rgb_topic, rgb_stamps[i], reason), (nir_topic, nir_stamps[j], reason)]
            else:
                selected.append((i, j, label,
                                 name if options.by_bag else f"{name}:{segments[k]}"))
        sink.dropped += [{"bag": name, "topic": topic, "stamp_ns": int(stamp), "reason": reason}
                         for topic, stamp, reason in sorted(dropped, key=lambda d: d[1])]

        by_rgb = {i: k for k, (i, _, _, _) in enumerate(selected)}
        by_nir = {j: k for k, (_, j, _, _) in enumerate(selected)}
        pending: dict[int, dict[str, Any]] = {}
        wanted = {rgb_topic: set(by_rgb), nir_topic: set(by_nir)}
        written, failed = 0, []  # failed: (topic, stamp, reason) of frames that do not decode
        with _progress_bar(task.progress, len(selected), f"extracting {name}") as bar:
            for topic, index, _, array in bag.images(wanted):
                k = by_rgb[index] if topic == rgb_topic else by_nir[index]
                frames = pending.setdefault(k, {})
                frames[topic] = array
                if len(frames) < 2:
                    continue
                i, j, label, group = selected[k]
                del pending[k]
                bar.update(1)
                pair_stamps = {rgb_topic: int(rgb_stamps[i]), nir_topic: int(nir_stamps[j])}
                bad = [t for t in (rgb_topic, nir_topic) if not isinstance(frames[t], np.ndarray)]
                if bad:
                    for t in (rgb_topic, nir_topic):
                        reason = (f"undecodable image: {frames[t]}" if t in bad else
                                  f"its paired {bad[0]} frame does not decode")
                        failed.append((t, pair_stamps[t], reason))
                    continue
                _check_same_scene(path, frames[rgb_topic], frames[nir_topic], rgb_topic,
                                  nir_topic, pair_stamps[rgb_topic])
                sink.add_pair(f"{k:06d}", frames[rgb_topic], frames[nir_topic],
                              label=label, group=group, source=str(path),
                              rgb_stamp_ns=pair_stamps[rgb_topic],
                              nir_stamp_ns=pair_stamps[nir_topic],
                              topics=(rgb_topic, nir_topic), split=split)
                written += 1
        if failed and not written:
            topic, stamp, reason = next(f for f in failed if f[2].startswith("undecodable"))
            raise BagError(f"no frame pair of bag {path} decodes: all {len(failed) // 2} "
                           f"selected pairs have an undecodable frame, e.g. topic {topic} at "
                           f"stamp {stamp / 1e9:.3f} s ({reason.split(': ', 1)[1]}); re-record "
                           "or re-copy the bag")
        if failed:
            sink.dropped += [{"bag": name, "topic": t, "stamp_ns": s, "reason": r}
                             for t, s, r in sorted(failed, key=lambda d: d[1])]
            first = next(f for f in failed if f[2].startswith("undecodable"))
            messages.append(f"warning: bag {path}: {len(failed) // 2} pair(s) dropped because a "
                            f"frame does not decode (first: topic {first[0]} at stamp "
                            f"{first[1] / 1e9:.3f} s); listed in dataset.json dropped")
    return None if timeline is None else clock


def _check_same_scene(path: Path, rgb: np.ndarray, nir: np.ndarray, rgb_topic: str,
                      nir_topic: str, stamp_ns: int) -> None:
    """Refuse a pair whose two images cannot show one scene (different aspect, tiny sides)."""
    (rh, rw), (nh, nw) = rgb.shape[:2], nir.shape[:2]
    ratio = (rw / rh) / (nw / nh)
    if min(rh, rw, nh, nw) < MIN_SIDE or max(ratio, 1 / ratio) > MAX_ASPECT_RATIO:
        raise BagError(
            f"bag {path}: {rgb_topic} is {rw}x{rh} but {nir_topic} is {nw}x{nh} (frame at "
            f"stamp {stamp_ns / 1e9:.3f} s), which cannot be the same scene (aspect ratios "
            f"must agree within a factor {MAX_ASPECT_RATIO:g} and sides be at least "
            f"{MIN_SIDE} px): pass the --rgb-topic/--nir-topic of two cameras that see "
            "the same view")


def _span(values: Sequence[np.ndarray], zero: int) -> str:
    """``a..b s`` of the times in ``values`` relative to ``zero`` (ns)."""
    joined = np.concatenate([np.asarray(v, np.int64) for v in values])
    return f"{(joined.min() - zero) / 1e9:.3f}..{(joined.max() - zero) / 1e9:.3f} s"


def _no_label_message(bag: BagReader, path: Path, label_source: str, timeline: LabelTimeline,
                      option: str, clock: str, stamps: dict[str, np.ndarray],
                      received: dict[str, np.ndarray], topics: tuple[str, str]) -> str:
    """Why no frame got a label: the label and both frame clocks' ranges, and the fix."""
    zero = bag.start_ns
    big = np.iinfo(np.int64)
    bounds = [t for t in (*timeline.starts, *timeline.ends) if big.min < t < big.max]
    labels = _span([np.asarray(bounds)], zero) if bounds else "all time"
    header = _span([stamps[t] for t in topics], zero)
    receive = _span([received[t] for t in topics], zero)
    other = "receive" if clock == "header" else "header"
    return (f"no pair of bag {path} got a label from {label_source}: the labels span {labels} "
            f"of {timeline.clock} time (from the bag start), the frames' header stamps span "
            f"{header} and their receive times {receive}, and frames are labelled by their "
            f"{clock} time (--label-clock {option}); pass --label-clock {other} or fix the "
            "label times (or --allow-unlabelled)")


def _unpaired_reasons(rgb: np.ndarray, nir: np.ndarray, pairs: list[tuple[int, int]],
                      max_dt_ns: int, topics: tuple[str, str]) -> list[tuple[str, int, str]]:
    """Why each unpaired frame was left out: too far from the other stream, or outcompeted."""
    dropped = []
    for stamps, other, used, topic, what in (
            (rgb, nir, {i for i, _ in pairs}, topics[0], "NIR"),
            (nir, rgb, {j for _, j in pairs}, topics[1], "RGB")):
        other_sorted = np.sort(other)
        nearest_dt = np.abs(stamps - other_sorted[nearest_index(stamps, other_sorted)])
        for index in sorted(set(range(len(stamps))) - used):
            dt_ms = nearest_dt[index] / 1e6
            if nearest_dt[index] > max_dt_ns:
                reason = f"no {what} frame within max_dt (nearest {dt_ms:.1f} ms)"
            else:
                reason = f"its nearest {what} frame ({dt_ms:.1f} ms) pairs with a closer frame"
            dropped.append((topic, int(stamps[index]), reason))
    return dropped


# --------------------------------------------------------------------------------------------
# Folder of image pairs


def _class_dirs(folder: Path, flag: str) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{flag} {folder} is not a folder: give a folder of <class>/ folders")
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DatasetError(f"{flag} {folder} has no class sub-folders: put the files of each "
                           "class into <folder>/<class>/")
    return dirs


def _folder_files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def extract_folder(folder: str | Path, out: str | Path, force: bool = False,
                   progress: bool = True) -> ExtractResult:
    """Pairs ``<class>/<id>_rgb.<ext>`` + ``<class>/<id>_nir.<ext>`` -> the pair dataset.

    The class folder name is the label and ``<class>/<id>`` the group (no time order to follow).
    16-bit colour images are reduced to 8 bits; a NIR image saved as three equal channels
    becomes one channel.
    """
    folder = Path(folder).resolve()
    class_dirs = _class_dirs(folder, "--folder")
    files = _folder_files(folder, IMAGE_EXTENSIONS)
    inputs = [{"path": str(folder), "kind": "folder", "sha256": sha256_files(files, folder)}]
    key = _cache_key("folder", inputs, {})

    def fill(writer: _DatasetWriter) -> dict[str, Any]:
        found = []
        for class_dir in class_dirs:
            images = {p.stem: p for p in class_dir.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
            for stem, rgb_path in sorted(images.items()):
                if stem.endswith("_rgb"):
                    nir_path = images.get(stem[:-4] + "_nir")
                    if nir_path is None:
                        writer.dropped.append({"topic": "rgb", "file": str(rgb_path),
                                               "reason": "no matching <id>_nir file"})
                    else:
                        found.append((class_dir.name, stem[:-4], rgb_path, nir_path))
                elif stem.endswith("_nir") and stem[:-4] + "_rgb" not in images:
                    writer.dropped.append({"topic": "nir", "file": str(rgb_path),
                                           "reason": "no matching <id>_rgb file"})
        if not found:
            raise DatasetError(f"--folder {folder} holds no <class>/<id>_rgb.<ext> + "
                               "<class>/<id>_nir.<ext> pairs")
        with _progress_bar(progress, len(found), f"extracting {folder.name}") as bar:
            for k, (label, pair_id, rgb_path, nir_path) in enumerate(found):
                rgb = read_image_file(rgb_path)
                if rgb.dtype == np.uint16 and rgb.shape[2] == 3:
                    rgb = (rgb >> 8).astype(np.uint8)
                nir = read_image_file(nir_path)
                if nir.shape[2] == 3 and (nir == nir[:, :, :1]).all():
                    nir = nir[:, :, :1].copy()
                writer.add_pair(f"{k:06d}", rgb, nir, label=label, group=f"{label}/{pair_id}",
                                source=str(folder))
                bar.update(1)
        return {"inputs": inputs, "options": {}}

    return _build(out, key, force, progress, fill)


# --------------------------------------------------------------------------------------------
# Multi-band GeoTIFFs


def _gdal_band_names(tif: Any) -> dict[str, int]:
    """Band descriptions from GDAL metadata (``<Item name="DESCRIPTION" sample="k">``)."""
    tag = tif.pages[0].tags.get("GDAL_METADATA")
    if tag is None:
        return {}
    items = re.findall(r'<Item name="DESCRIPTION" sample="(\d+)"[^>]*>([^<]+)</Item>',
                       str(tag.value))
    return {name.strip().upper(): int(sample) for sample, name in items}


def parse_bands(spec: str | Sequence[str], names: dict[str, int], count: int,
                where: str) -> list[int]:
    """Band tokens -> 0-based indices.

    A token is a 1-based index (``"4"``), a band description stored in the file's GDAL metadata,
    or ``B<nn>`` meaning band ``nn`` 1-based (``B04`` -> index 3; Sentinel-2 order without
    B8A — name B8A in the metadata, or give an index, when the file has it).
    """
    tokens = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec)]
    indices = []
    for token in tokens:
        match = re.fullmatch(r"[Bb](\d+)", token)
        if token.upper() in names:
            index = names[token.upper()]
        elif token.isdigit():
            index = int(token) - 1
        elif match:
            index = int(match.group(1)) - 1
        else:
            raise DatasetError(f"{where}: band {token!r} is neither a 1-based index, B<nn>, nor "
                               f"a band name of the file ({', '.join(names) or 'none stored'})")
        if not 0 <= index < count:
            raise DatasetError(f"{where}: band {token!r} is out of range, the file has {count} "
                               "bands")
        indices.append(index)
    return indices


def read_geotiff(path: Path) -> tuple[np.ndarray, dict[str, int]]:
    """A GeoTIFF as ``HxWxB`` plus its band names; DatasetError when unreadable."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr, axes = series.asarray(), series.axes
            names = _gdal_band_names(tif)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DatasetError(f"cannot read GeoTIFF {path}: {exc}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3 and axes[0] not in "YX":
        arr = np.moveaxis(arr, 0, -1)  # bands first (planar) -> last
    if arr.ndim != 3:
        raise DatasetError(f"GeoTIFF {path} has axes {axes}: expected one multi-band image")
    return arr, names


def _to_dtype(arr: np.ndarray, scale: float, dtype: type) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.clip(arr.astype(np.float32) * (top / scale), 0, top).round().astype(dtype)


def extract_geotiffs(folder: str | Path, out: str | Path, rgb_bands: str | Sequence[str],
                     nir_bands: str | Sequence[str], force: bool = False,
                     progress: bool = True) -> ExtractResult:
    """Multi-band GeoTIFFs ``<class>/<name>.tif`` -> pairs of chosen bands per modality.

    Visible bands that are not 8-bit are scaled to uint8 with ONE dataset-wide factor (the 99.5th
    percentile of all visible values), never per image: per-image stretching would erase the
    brightness differences between classes. One NIR band is kept as is (uint8/uint16; float
    scaled to uint16 the same way); several NIR bands are stored as ``.npy``.
    """
    folder = Path(folder).resolve()
    class_dirs = _class_dirs(folder, "--geotiff")
    files = _folder_files(folder, GEOTIFF_EXTENSIONS)
    if not files:
        raise DatasetError(f"--geotiff {folder} holds no .tif files in its class folders")
    options = {"rgb_bands": str(rgb_bands), "nir_bands": str(nir_bands)}
    inputs = [{"path": str(folder), "kind": "geotiff", "sha256": sha256_files(files, folder)}]
    key = _cache_key("geotiff", inputs, options)

    def bands(path: Path) -> tuple[np.ndarray, np.ndarray]:
        arr, names = read_geotiff(path)
        rgb = arr[:, :, parse_bands(rgb_bands, names, arr.shape[2], f"{path} --rgb-bands")]
        nir = arr[:, :, parse_bands(nir_bands, names, arr.shape[2], f"{path} --nir-bands")]
        return rgb, nir  # [H, W, n_rgb], [H, W, n_nir]

    def fill(writer: _DatasetWriter) -> dict[str, Any]:
        found = [(d.name, p) for d in class_dirs for p in _folder_files(d, GEOTIFF_EXTENSIONS)]
        samples = {"rgb": [], "nir": []}
        for _, path in found:  # pass 1: dataset-wide scale factors
            for modality, arr in zip(("rgb", "nir"), bands(path)):
                samples[modality].append(arr.reshape(-1)[:: max(1, arr.size // 20000)])
        scales = {m: float(np.percentile(np.concatenate(v), 99.5)) or 1.0
                  for m, v in samples.items()}
        with _progress_bar(progress, len(found), f"extracting {folder.name}") as bar:
            for k, (label, path) in enumerate(found):
                rgb, nir = bands(path)
                if rgb.dtype != np.uint8:
                    rgb = _to_dtype(rgb, scales["rgb"], np.uint8)
                if nir.dtype.kind == "f" and nir.shape[2] == 1:
                    nir = _to_dtype(nir, scales["nir"], np.uint16)
                writer.add_pair(f"{k:06d}", np.ascontiguousarray(rgb),
                                np.ascontiguousarray(nir), label=label,
                                group=f"{label}/{path.stem}", source=str(folder))
                bar.update(1)
        return {"inputs": inputs, "options": options,
                "scaling": {"rgb_divisor": scales["rgb"], "nir_divisor": scales["nir"]}}

    return _build(out, key, force, progress, fill)
