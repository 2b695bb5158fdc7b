"""Build the pair dataset (manifest.csv + rgb/ + nir/ + dataset.json) from recordings or files.

Inputs:
- one or more bags (rosbag2 sqlite3/mcap, ROS 1): RGB and NIR topics paired by header stamp with
  :func:`mmkd_ros.data.pairing.pair_nearest`, labels from a topic, a CSV of intervals or one
  label (:mod:`mmkd_ros.data.bag`);
- a folder of pairs ``<class>/<id>_rgb.<ext>`` + ``<class>/<id>_nir.<ext>``;
- a folder of multi-band GeoTIFFs ``<class>/<name>.tif`` with chosen bands per modality.

Guarantees:
- atomic: the dataset is built in ``<out>.tmp-XXXX`` and moved onto ``<out>`` at the end, so a
  failure (bad input, Ctrl-C) leaves no partial dataset;
- cached: ``dataset.json`` records a key hashed from the input *bytes* (size + mtime can lie after
  a copy or an edit) and the options; a second run with the same key reuses the dataset;
- accountable: every frame that did not become a pair (unpaired, subsampled, straddling a label
  change, or undecodable, with its partner) is listed in ``dataset.json["dropped"]`` with its
  bag, topic, stamp and reason; only a bag none of whose selected pairs decodes is an error;
- sane pairs: the two images of a pair must be able to show one scene (aspect ratios within
  25 %, sides >= 8 px), else the extraction stops naming both topics and sizes;
- clocks: frames pair by header stamp; labels (receive clock) are looked up by each frame's
  header stamp or receive time (``BagOptions.label_clock``), see :mod:`mmkd_ros.data.bag`;
- leakage-free groups: a bag frame's group is ``<bag name>:<segment>``, a segment being a run of
  consecutive pairs with one label (one scene), so splitting by group never puts neighbouring,
  near-identical frames of one scene on both sides of a split. When a whole bag is one unit
  (one field image, one block), ``group_by="bag"`` makes the group the bag name, and a bag-splits
  file (:mod:`mmkd_ros.data.splits`) also fixes each bag's split in the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mmkd_ros import __version__
from mmkd_ros.data.bag import BagReader, LabelTimeline, bag_files, read_labels_csv, \
    resolve_bag_path
from mmkd_ros.data.image_files import read_image_file, write_png
from mmkd_ros.data.manifest import DATASET_FORMAT, DATASET_VERSION, INFO_NAME, MANIFEST_NAME, \
    load_dataset_info, write_manifest
from mmkd_ros.data.pairing import nearest_index, pair_nearest
from mmkd_ros.data.splits import read_bag_splits
from mmkd_ros.core.errors import BagError, DatasetError
from mmkd_ros.core.topics import LABEL_TOPIC, NIR_TOPIC, RGB_TOPIC

DEFAULT_RGB_TOPIC, DEFAULT_NIR_TOPIC, DEFAULT_LABEL_TOPIC = RGB_TOPIC, NIR_TOPIC, LABEL_TOPIC
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
GEOTIFF_EXTENSIONS = (".tif", ".tiff")
_EXTRACTOR_VERSION = 1  # bump when the output for the same inputs changes (invalidates caches)
GROUP_BY = ("segment", "bag")
LABEL_CLOCKS = ("header", "receive")
# A pair's two images must be able to show one scene: aspect ratios within this factor, and
# every side at least MIN_SIDE pixels (else it is a thumbnail or a placeholder, not a camera).
MAX_ASPECT_RATIO = 1.25
MIN_SIDE = 8


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
    # Which time of a frame is looked up in the labels (whose times are always receive times:
    # a label topic's receive time, CSV seconds from the bag's first receive time):
    # "header" = its header stamp (right when the camera stamps with the recorder's clock),
    # "receive" = its receive time (when header stamps run on another clock, e.g. a device's).
    label_clock: str = "header"

    def __post_init__(self) -> None:
        if self.label_clock not in LABEL_CLOCKS:
            raise DatasetError(f"--label-clock must be one of {', '.join(LABEL_CLOCKS)}, got "
                               f"{self.label_clock!r}")
        if self.group_by not in GROUP_BY:
            raise DatasetError(f"--group-by must be one of {', '.join(GROUP_BY)}, got "
                               f"{self.group_by!r}")
        sources = [x for x in (self.label_topic, self.labels_csv, self.label) if x]
        if len(sources) > 1:
            raise DatasetError("give one label source: --label-topic, --labels-csv or --label")
        if self.max_dt_s < 0:
            raise DatasetError(f"--max-dt must be >= 0 seconds, got {self.max_dt_s}")
        if self.every < 1:
            raise DatasetError(f"--every must be >= 1, got {self.every}")
        if self.rgb_topic == self.nir_topic:
            raise DatasetError(f"--rgb-topic and --nir-topic are both {self.rgb_topic}")

    @property
    def by_bag(self) -> bool:
        """Whether a pair's group is its bag name (``group_by="bag"`` or a splits file)."""
        return self.group_by == "bag" or self.splits is not None


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
    """The existing dataset at ``out`` when its key matches; refuse to clobber foreign folders."""
    if not out.exists():
        return None
    if (out / INFO_NAME).is_file():
        try:
            info = load_dataset_info(out)
        except DatasetError:
            info = {}
        if info.get("cache_key") == key and (out / MANIFEST_NAME).is_file() and not force:
            _say(progress, f"reusing cached dataset {out} ({info['counts']['pairs']} pairs): "
                           "same input bytes and options (pass --force to rebuild)")
            return ExtractResult(out, True, info)
        if info.get("format") == DATASET_FORMAT:
            return None  # ours, but stale or forced: rebuilt and replaced
    if out.is_file() or any(out.iterdir()):
        raise DatasetError(f"--out {out} exists and is not a pair dataset: choose another --out "
                           "or remove it")
    return None


class _DatasetWriter:
    """Builds a dataset in a temporary sibling folder and moves it into place on commit."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
        self.tmp.chmod(0o755)  # mkdtemp makes 0700; the dataset is an ordinary folder
        (self.tmp / "rgb").mkdir()
        (self.tmp / "nir").mkdir()
        self.rows: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self.modalities: dict[str, dict[str, Any]] = {}
        # Image encoding dominates extraction time and OpenCV releases the GIL while encoding:
        # a few writer threads use the other cores. In-flight writes are bounded (memory).
        self._pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
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
            self._writes.append(self._pool.submit(save, self.tmp / rel, arr))
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
        known = self.modalities.setdefault(modality, spec)
        if (known["channels"], known["dtype"]) != (spec["channels"], spec["dtype"]):
            raise DatasetError(
                f"{source}: {modality} images change from {known['channels']}x{known['dtype']} "
                f"to {spec['channels']}x{spec['dtype']}; one dataset needs one format per "
                "modality (extract such inputs separately)")

    def _finish_writes(self) -> None:
        while self._writes:
            self._writes.popleft().result()
        self._pool.shutdown()

    def commit(self, info: dict[str, Any]) -> dict[str, Any]:
        """Write manifest.csv + dataset.json, then move the folder onto ``out``."""
        self._finish_writes()
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
            **info,
            "created_by": f"mmkd_ros {__version__}",
        }
        write_manifest(self.tmp / MANIFEST_NAME, self.rows)
        (self.tmp / INFO_NAME).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        if self.out.exists():
            # A directory cannot be os.replace'd onto a non-empty one: swap via a side name.
            old = Path(tempfile.mkdtemp(prefix=f"{self.out.name}.old-", dir=self.out.parent))
            os.replace(self.out, old / "dataset")
            os.replace(self.tmp, self.out)
            shutil.rmtree(old)
        else:
            os.replace(self.tmp, self.out)
        return info

    def abort(self) -> None:
        for future in self._writes:
            future.cancel()
        self._pool.shutdown(wait=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _build(out: str | Path, key: str, force: bool, progress: bool,
           fill: Callable[[_DatasetWriter], dict[str, Any]]) -> ExtractResult:
    """Reuse a cached dataset or run ``fill`` into a fresh writer and commit it atomically."""
    out = Path(out)
    cached = _cached(out, key, force, progress)
    if cached:
        return cached
    writer = _DatasetWriter(out)
    try:
        extra = fill(writer)
        if not writer.rows:
            raise DatasetError(f"no pairs to write to {out}: nothing was extracted")
        info = writer.commit({**extra, "cache_key": key})
    except BaseException:
        writer.abort()
        raise
    counts = info["counts"]
    _say(progress, f"wrote {out}: {counts['pairs']} pairs, {len(info['classes'])} classes, "
                   f"{counts['unlabelled']} unlabelled, {len(info['dropped'])} frames dropped")
    return ExtractResult(out, False, info)


@contextmanager
def _progress_bar(progress: bool, total: int, desc: str) -> Iterator[Any]:
    """A tqdm bar on a terminal only (``disable=None``: none in logs or pipes), erased on error."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="pair", disable=None if progress else True,
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
                 progress: bool = True) -> ExtractResult:
    """Extract RGB/NIR pairs of one or more bags into the pair dataset at ``out``."""
    if not bags:
        raise DatasetError("no bag given: pass --bag PATH (repeatable)")
    paths = [resolve_bag_path(bag).resolve() for bag in bags]
    names = _unique_names([p.stem if p.suffix == ".bag" else p.name for p in paths])
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
    key_opts = dict(opts)
    if options.group_by == "segment" and options.splits is None:
        # The defaults of the options added later stay out of the key: caches of datasets
        # extracted before they existed remain valid.
        del key_opts["group_by"], key_opts["splits"]
    if options.label_clock == "header":
        del key_opts["label_clock"]  # the default; older caches stay valid
    key = _cache_key("bags", inputs, key_opts)

    def fill(writer: _DatasetWriter) -> dict[str, Any]:
        for path, name in zip(paths, names):
            split = bag_splits[name] if bag_splits is not None else ""
            _extract_one_bag(writer, path, name, options, progress, split)
        return {"inputs": inputs, "options": opts, "max_dt_ns": int(options.max_dt_s * 1e9)}

    return _build(out, key, force, progress, fill)


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


def _extract_one_bag(writer: _DatasetWriter, path: Path, name: str, options: BagOptions,
                     progress: bool, split: str = "") -> None:
    rgb_topic, nir_topic = options.rgb_topic, options.nir_topic
    max_dt_ns = int(round(options.max_dt_s * 1e9))
    with BagReader(path) as bag:
        bag.require_image_topic(rgb_topic, "--rgb-topic")
        bag.require_image_topic(nir_topic, "--nir-topic")
        timeline, label_source = _label_timeline(bag, options)
        stamps, received = bag.times([rgb_topic, nir_topic])
        rgb_stamps, nir_stamps = stamps[rgb_topic], stamps[nir_topic]  # [n_rgb], [n_nir]
        # The time of each frame that is looked up in the labels (see BagOptions.label_clock).
        label_times = received if options.label_clock == "receive" else stamps
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
                message = _no_label_message(bag, path, label_source, timeline, options, stamps,
                                            received, (rgb_topic, nir_topic))
            else:
                message = (f"no pair of bag {path} got a label from {label_source}: it holds no "
                           f"label for bag {name}; add some or pass --allow-unlabelled")
            if not options.allow_unlabelled:
                raise BagError(message)
            _say(progress, f"warning: {message}")

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
        writer.dropped += [{"bag": name, "topic": topic, "stamp_ns": int(stamp), "reason": reason}
                           for topic, stamp, reason in sorted(dropped, key=lambda d: d[1])]

        first_id = len(writer.rows)
        by_rgb = {i: k for k, (i, _, _, _) in enumerate(selected)}
        by_nir = {j: k for k, (_, j, _, _) in enumerate(selected)}
        pending: dict[int, dict[str, Any]] = {}
        wanted = {rgb_topic: set(by_rgb), nir_topic: set(by_nir)}
        written, failed = 0, []  # failed: (topic, stamp, reason) of frames that do not decode
        with _progress_bar(progress, len(selected), f"extracting {name}") as bar:
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
                writer.add_pair(f"{first_id + k:06d}", frames[rgb_topic], frames[nir_topic],
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
            writer.dropped += [{"bag": name, "topic": t, "stamp_ns": s, "reason": r}
                               for t, s, r in sorted(failed, key=lambda d: d[1])]
            _say(progress, f"warning: bag {name}: {len(failed) // 2} pair(s) dropped because a "
                           "frame does not decode (listed in dataset.json dropped)")


def _check_same_scene(path: Path, rgb: np.ndarray, nir: np.ndarray, rgb_topic: str,
                      nir_topic: str, stamp_ns: int) -> None:
    """Refuse a pair whose two images cannot show one scene (different aspect, tiny sides)."""
    (rh, rw), (nh, nw) = rgb.shape[:2], nir.shape[:2]
    ratio = (rw / rh) / (nw / nh)
    if min(rh, rw, nh, nw) < MIN_SIDE or max(ratio, 1 / ratio) > MAX_ASPECT_RATIO:
        raise BagError(
            f"bag {path}: {rgb_topic} is {rw}x{rh} but {nir_topic} is {nw}x{nh} (frame at "
            f"stamp {stamp_ns / 1e9:.3f} s), which cannot be the same scene (aspect ratios "
            f"must agree within {int(round((MAX_ASPECT_RATIO - 1) * 100))}% and sides be at "
            f"least {MIN_SIDE} px): pass the --rgb-topic/--nir-topic of two cameras that see "
            "the same view")


def _span(values: Sequence[np.ndarray], zero: int) -> str:
    """``a..b s`` of the times in ``values`` relative to ``zero`` (ns)."""
    joined = np.concatenate([np.asarray(v, np.int64) for v in values])
    return f"{(joined.min() - zero) / 1e9:.3f}..{(joined.max() - zero) / 1e9:.3f} s"


def _no_label_message(bag: BagReader, path: Path, label_source: str, timeline: LabelTimeline,
                      options: BagOptions, stamps: dict[str, np.ndarray],
                      received: dict[str, np.ndarray], topics: tuple[str, str]) -> str:
    """Why no frame got a label: the label and both frame clocks' ranges, and the fix."""
    zero = bag.start_ns
    big = np.iinfo(np.int64)
    bounds = [t for t in (*timeline.starts, *timeline.ends) if big.min < t < big.max]
    labels = _span([np.asarray(bounds)], zero) if bounds else "all time"
    header = _span([stamps[t] for t in topics], zero)
    receive = _span([received[t] for t in topics], zero)
    other = "receive" if options.label_clock == "header" else "header"
    return (f"no pair of bag {path} got a label from {label_source}: the labels span {labels} "
            f"of receive time (from the bag start), the frames' header stamps span {header} and "
            f"their receive times {receive}, and frames are labelled by their "
            f"{options.label_clock} time; pass --label-clock {other} or fix the label times "
            "(or --allow-unlabelled)")


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
