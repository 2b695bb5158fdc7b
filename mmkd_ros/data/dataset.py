"""The extracted pair dataset as torch Datasets: splits by group, normalisation, paired augmentation.

Read side of the format that :mod:`mmkd_ros.data.extract` writes (``manifest.csv`` +
``dataset.json`` + ``rgb/`` + ``nir/``). Pixels go through :mod:`mmkd_ros.core.preprocess` exactly
as at inference: stage 1, :func:`~mmkd_ros.core.preprocess.to_model_scale`, once (cached in
memory), then per sample ``augment ->`` stage 2, :func:`~mmkd_ros.core.preprocess.normalize`, in
training, or stage 2 alone in evaluation, which makes evaluation pixels those of
:func:`~mmkd_ros.core.preprocess.prepare`.

Splits are by ``group`` (a scene segment of a bag, an image of CWFID...), never by frame: frames of
one scene are near-duplicates, and letting them straddle train and test would measure memory,
not generalisation.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from mmkd_ros.core import preprocess
from mmkd_ros.core.errors import DatasetError
from mmkd_ros.data.image_files import read_image_file
from mmkd_ros.data.manifest import INFO_NAME, MANIFEST_NAME, SPLITS, load_dataset_info, read_manifest

MODALITIES = ("rgb", "nir")


@dataclass(frozen=True)
class PairRecord:
    """One row of ``manifest.csv`` with its label resolved to a class index (``-1``: unlabelled)."""

    id: str
    rgb: Path
    nir: Path
    label: int
    group: str
    split: str  # train | val | test (derived from the group when the manifest leaves it empty)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset folder holds: classes, channel counts per modality, all records with splits."""

    root: Path
    classes: list[str]
    channels: dict[str, int]
    records: list[PairRecord]
    cache_key: str

    def split(self, name: str) -> list[PairRecord]:
        return [r for r in self.records if r.split == name]


def open_dataset(root: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DatasetInfo:
    """Read ``dataset.json`` and ``manifest.csv`` of ``root``; derive missing splits from groups."""
    root = Path(root)
    if not (root / INFO_NAME).is_file() or not (root / MANIFEST_NAME).is_file():
        raise DatasetError(
            f"{root} is not an extracted pair dataset (needs {INFO_NAME} and {MANIFEST_NAME}); "
            "create one with training/extract.py --bag BAG --out DIR"
        )
    meta = load_dataset_info(root)
    try:
        classes = [str(c) for c in meta["classes"]]
        channels = {m: int(meta["modalities"][m]["channels"]) for m in MODALITIES}
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{root / INFO_NAME} is malformed ({type(exc).__name__}: {exc}); re-run the extraction") from None
    if not classes:
        raise DatasetError(f"{root / INFO_NAME} lists no classes: the bag had no labels; label it or pass a label source")
    index = {name: i for i, name in enumerate(classes)}
    records = []
    for line, row in enumerate(read_manifest(root), start=2):
        label = row["label"].strip()
        if label and label not in index:
            raise DatasetError(f"{root / MANIFEST_NAME}:{line}: label {label!r} is not in {INFO_NAME} classes {classes}")
        records.append(PairRecord(row["id"], root / row["rgb"], root / row["nir"],
                                  index[label] if label else -1, row["group"], row["split"]))
    if not records:
        raise DatasetError(f"{root / MANIFEST_NAME} has no pairs; check the topics and max_dt of the extraction")
    records = assign_splits(records, val_fraction, test_fraction)
    cache_key = str(meta.get("cache_key") or (root / MANIFEST_NAME).stat().st_mtime_ns)
    return DatasetInfo(root, classes, channels, records, cache_key)


def assign_splits(records: Sequence[PairRecord], val_fraction: float, test_fraction: float) -> list[PairRecord]:
    """Give every record without a split one, by group, stratified by the group's majority label.

    Within each class the groups are ordered by a SHA-256 hash of their name (deterministic, and
    stable when other groups are added), then the first ``val_fraction`` go to val, the next
    ``test_fraction`` to test, the rest to train; a class with at least 3 groups gets at least one
    in each split, so no class is absent from validation when it can be avoided.
    """
    open_groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if not r.split:
            open_groups[r.group].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for group, members in open_groups.items():
        labels = Counter(records[i].label for i in members)
        by_class[labels.most_common(1)[0][0]].append(group)
    group_split: dict[str, str] = {}
    for groups in by_class.values():
        groups.sort(key=lambda g: hashlib.sha256(g.encode()).hexdigest())
        n = len(groups)
        n_val = max(1, round(n * val_fraction)) if n >= 3 and val_fraction > 0 else 0
        n_test = max(1, round(n * test_fraction)) if n >= 3 and test_fraction > 0 else 0
        for k, group in enumerate(groups):
            group_split[group] = "val" if k < n_val else "test" if k < n_val + n_test else "train"
    return [r if r.split else PairRecord(r.id, r.rgb, r.nir, r.label, r.group, group_split[r.group]) for r in records]


class ResizedCache:
    """Stage-1 tensors of whole splits, kept between runs of one process, least recently used out first.

    One process often trains the teacher, distills and evaluates on the same dataset; decoding
    its PNGs again for each would cost more than training a small model on 2 cores. The cache is
    bounded by bytes (``max_bytes``, default 4 GiB; a 1500-pair 96x96 dataset is about 200 MB).
    """

    def __init__(self, max_bytes: int = 4 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[dict[str, list[torch.Tensor]], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, load: Callable[[], dict[str, list[torch.Tensor]]]) -> dict[str, list[torch.Tensor]]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        value = load()
        size = sum(t.numel() * t.element_size() for tensors in value.values() for t in tensors)
        with self._lock:
            self._entries[key] = (value, size)
            while len(self._entries) > 1 and sum(n for _, n in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


RESIZED = ResizedCache()


def load_resized(info: DatasetInfo, records: Sequence[PairRecord], size: Sequence[int],
                 modalities: Sequence[str] = MODALITIES) -> dict[str, list[torch.Tensor]]:
    """Stage 1 of the preprocessing of every record, per modality: {modality: [[C,h,w], ...]} (cached)."""
    key = (str(info.root), info.cache_key, tuple(size), tuple(modalities), tuple(r.id for r in records))

    def load_all() -> dict[str, list[torch.Tensor]]:
        def load(record: PairRecord, modality: str) -> torch.Tensor:
            path = getattr(record, modality)
            t = preprocess.to_model_scale(read_image_file(path), size)  # [C, h, w]
            if t.shape[0] != info.channels[modality]:
                raise DatasetError(f"{path} has {t.shape[0]} channel(s) but dataset.json says {modality} has "
                                   f"{info.channels[modality]}; re-run the extraction")
            return t

        # PNG decoding and resizing release the GIL: threads give ~cores x speed-up on first load.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            return {m: list(pool.map(load, records, [m] * len(records))) for m in modalities}

    return RESIZED.get(key, load_all)


def compute_normalization(info: DatasetInfo, size: Sequence[int],
                          modalities: Sequence[str] = MODALITIES) -> dict[str, dict[str, list[float]]]:
    """Per-modality, per-channel mean and std over all pixels of the train split."""
    train = info.split("train")
    if not train:
        raise DatasetError(f"{info.root}: the train split is empty; add groups or set split fractions lower")
    tensors = load_resized(info, train, size, modalities)
    stats = {}
    for modality in modalities:
        stacked = torch.stack(tensors[modality]).double()  # [N, C, h, w]
        mean = stacked.mean(dim=(0, 2, 3))
        std = stacked.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a constant channel must not divide by 0
        stats[modality] = {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}
    return stats


class PairedAugment:
    """One random geometry for all modalities, mild photometric jitter on the visible image only.

    The same shift and flips must hit RGB and NIR, otherwise the teacher learns from misaligned
    pairs; jitter stays off NIR because its intensity is the privileged signal. Geometry keeps the
    image scale (reflect-padded shifts and flips, no zoom): fine texture (relief, turf rows, grass
    blades) is a class cue, and zooming in blurs it, which made students fail on unzoomed frames.
    Hue and saturation are left alone for the same reason (hue variation is a cue).
    """

    def __init__(self, size: Sequence[int], visible_channels: int) -> None:
        pad = max(1, min(size) // 12)
        self.geometry = v2.Compose([
            v2.RandomCrop(tuple(size), padding=pad, padding_mode="reflect"),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),  # ground seen from above: no preferred up
        ])
        self.photometric = v2.ColorJitter(brightness=0.1, contrast=0.1)
        self.visible_channels = visible_channels

    def __call__(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = list(sample)
        moved = self.geometry(*[tv_tensors.Image(sample[n]) for n in names])  # same params for all
        moved = moved if isinstance(moved, tuple) else (moved,)
        out = {n: t.as_subclass(torch.Tensor) for n, t in zip(names, moved)}
        if "rgb" in out:
            out["rgb"] = self.photometric(tv_tensors.Image(out["rgb"])).as_subclass(torch.Tensor).clamp_(0.0, 1.0)
        return out


class PairDataset(Dataset):
    """One split of a pair dataset: items ``{"rgb": [C,h,w], "nir": [C,h,w], "label": int64 []}``.

    ``normalization`` comes from :func:`compute_normalization` (training) or from a checkpoint
    (evaluation), so a model is always evaluated with the statistics it was trained with.
    """

    def __init__(self, info: DatasetInfo, split: str, size: Sequence[int],
                 normalization: dict[str, dict[str, list[float]]], augment: bool = False,
                 modalities: Sequence[str] = MODALITIES, labelled_only: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.info, self.split, self.size = info, split, tuple(size)
        self.modalities = tuple(modalities)
        self.records = [r for r in info.split(split) if r.label >= 0 or not labelled_only]
        self.normalization = normalization
        self.tensors = load_resized(info, self.records, self.size, self.modalities)
        self.labels = torch.tensor([r.label for r in self.records], dtype=torch.long)  # [N]
        self.augment = PairedAugment(self.size, info.channels["rgb"]) if augment else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = {m: self.tensors[m][index] for m in self.modalities}  # [C, h, w] in [0, 1]
        if self.augment is not None:
            sample = self.augment(sample)
        out = {m: preprocess.normalize(sample[m], **self.normalization[m]) for m in self.modalities}
        out["label"] = self.labels[index]
        return out

    def class_counts(self, num_classes: int) -> list[int]:
        labelled = self.labels[self.labels >= 0]
        return torch.bincount(labelled, minlength=num_classes).tolist()


MAX_UNLABELLED_SHARE = 0.5  # of the training draws, when most pairs have no label


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced) indices for one rank, a pure function of ``(seed, epoch)``.

    Like ``DistributedSampler`` (which the recipes use when sampling uniformly) but able to draw
    with class-balancing weights; being a function of the epoch is what makes ``--resume`` exact.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int, seed: int, rank: int = 0, world_size: int = 1,
                 max_unlabelled_share: float = MAX_UNLABELLED_SHARE, balanced: bool = True) -> None:
        counts = torch.bincount(labels[labels >= 0], minlength=num_classes).double()  # [K]
        per_class = 1.0 / counts.clamp_min(1) if balanced else torch.ones(num_classes, dtype=torch.double)
        # Every class present draws the same total weight. Unlabelled pairs draw their share of the
        # data, capped at max_unlabelled_share of the draws: when most frames are unlabelled (a
        # robot's drive), they must not crowd the labelled ones out of the cross-entropy.
        labelled_total = float((counts > 0).sum()) if balanced else float(counts.sum())
        n_unlabelled = int((labels < 0).sum())
        share = min(n_unlabelled / max(1, len(labels)), max_unlabelled_share)
        unlabelled_weight = share / (1.0 - share) * labelled_total / n_unlabelled if n_unlabelled else 0.0
        self.weights = torch.where(labels >= 0, per_class[labels.clamp_min(0)], unlabelled_weight)  # [N]
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.num_samples = -(-len(labels) // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        total = self.num_samples * self.world_size
        indices = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(indices[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples
