"""The training side of the pair dataset: group splits, statistics, paired augmentation, labels."""
import pytest
import torch

from mmkd_ros.core import preprocess
from mmkd_ros.data.image_files import read_image_file
from mmkd_ros.data.dataset import PairDataset, PairedAugment, assign_splits, compute_normalization, open_dataset
from mmkd_ros.core.errors import DatasetError
from tiny_pairs import CLASSES, write_tiny_pairs


@pytest.fixture(scope="module")
def hashed(tmp_path_factory):
    """Manifest without a split column value: splits derived from groups."""
    return write_tiny_pairs(tmp_path_factory.mktemp("hashed") / "ds", groups_per_class=6, split=False)


def test_groups_never_straddle_splits_and_every_class_is_validated(hashed):
    info = open_dataset(hashed, val_fraction=0.2, test_fraction=0.2)
    split_of_group = {}
    for r in info.records:
        assert split_of_group.setdefault(r.group, r.split) == r.split, r.group
    for split in ("train", "val", "test"):
        labels = {r.label for r in info.split(split) if r.label >= 0}
        assert labels == {0, 1, 2}, split  # 6 groups per class: each class lands in each split
    again = open_dataset(hashed, val_fraction=0.2, test_fraction=0.2)
    assert [r.split for r in again.records] == [r.split for r in info.records]  # deterministic


def test_split_column_is_respected(tiny_dataset_with_splits):
    info = open_dataset(tiny_dataset_with_splits)
    import csv

    with open(tiny_dataset_with_splits / "manifest.csv") as f:
        written = {row["id"]: row["split"] for row in csv.DictReader(f)}
    assert all(r.split == written[r.id] for r in info.records if written[r.id])


@pytest.fixture(scope="module")
def tiny_dataset_with_splits(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("split") / "ds", split=True)


def test_unlabelled_pairs_get_minus_one_and_stay_in_the_data(hashed):
    info = open_dataset(hashed)
    assert sum(r.label == -1 for r in info.records) == 2
    assert info.classes == CLASSES


def test_labelled_only_leaves_unlabelled_training_pairs_out(tiny_dataset_with_splits):
    from mmkd_ros.train import config as config_lib
    from mmkd_ros.train.data import prepare_data
    from mmkd_ros.train.distill import uses_unlabelled

    info = open_dataset(tiny_dataset_with_splits)
    norm = compute_normalization(info, (16, 16))
    every = PairDataset(info, "train", (16, 16), norm)
    labelled = PairDataset(info, "train", (16, 16), norm, labelled_only=True)
    unlabelled = int((every.labels == -1).sum())
    assert unlabelled >= 1 and (labelled.labels >= 0).all()
    assert len(labelled) == len(every) - unlabelled
    config = config_lib.load(None, ["data.input_size=[16, 16]"])
    assert len(prepare_data(config, tiny_dataset_with_splits, unlabelled=False).train) == len(labelled)
    # Distillation keeps them (teacher terms need no label), except the ce baseline and on request.
    assert uses_unlabelled(config_lib.replace(config, distill={"method": "adv+kd+feat"}))
    assert not uses_unlabelled(config_lib.replace(config, distill={"method": "ce"}))
    assert not uses_unlabelled(config_lib.replace(config, data={"unlabelled": False}))


def test_assign_splits_keeps_given_splits():
    from mmkd_ros.data.dataset import PairRecord

    records = [PairRecord(str(i), None, None, i % 3, f"g{i}", "test" if i == 0 else "") for i in range(9)]
    out = assign_splits(records, 0.34, 0.34)
    assert out[0].split == "test" and all(r.split for r in out)


def test_normalization_comes_from_the_train_split_only(hashed):
    info = open_dataset(hashed)
    stats = compute_normalization(info, (16, 16))
    train = torch.stack([preprocess.to_model_scale(read_image_file(r.nir), (16, 16))
                         for r in info.split("train")])
    assert stats["nir"]["mean"][0] == pytest.approx(float(train.mean()), abs=1e-5)
    assert len(stats["rgb"]["mean"]) == 3 and len(stats["nir"]["std"]) == 1


def test_eval_items_are_exactly_the_inference_preprocessing(hashed):
    info = open_dataset(hashed)
    stats = compute_normalization(info, (20, 24))
    dataset = PairDataset(info, "val", (20, 24), stats, augment=False)
    item = dataset[0]
    record = info.split("val")[0]
    for modality, path in (("rgb", record.rgb), ("nir", record.nir)):
        expected = preprocess.prepare(read_image_file(path), (20, 24), **stats[modality])
        assert torch.equal(item[modality], expected)
    assert item["label"].dtype == torch.long


@pytest.mark.parametrize("rgb_channels", [1, 3])
def test_paired_augmentation_keeps_rgb_and_nir_aligned(rgb_channels):
    torch.manual_seed(0)
    pattern = torch.nn.functional.interpolate(torch.rand(1, 1, 6, 6), size=(32, 32), mode="bicubic")[0]  # [1,32,32]
    pattern = 0.35 + 0.3 * (pattern - pattern.min()) / (pattern.max() - pattern.min())  # no clipping by jitter
    augment = PairedAugment((32, 32), rgb_channels)
    for _ in range(20):
        out = augment({"rgb": pattern.repeat(rgb_channels, 1, 1), "nir": pattern.clone()})
        rgb, nir = out["rgb"].mean(0).flatten(), out["nir"][0].flatten()
        # photometric changes on RGB are affine per image, so aligned geometry means correlation ~1
        correlation = torch.corrcoef(torch.stack([rgb, nir]))[0, 1]
        assert correlation > 0.99
    assert not torch.equal(out["nir"], pattern)  # it did move things


def test_photometric_jitter_never_touches_nir():
    torch.manual_seed(1)
    augment = PairedAugment((16, 16), 3)
    for _ in range(10):
        # a flat image is unchanged by any crop or flip, so only jitter could alter it
        out = augment({"rgb": torch.full((3, 16, 16), 0.5), "nir": torch.full((1, 16, 16), 0.5)})
        assert torch.allclose(out["nir"], torch.tensor(0.5), atol=1e-6)
    assert not torch.allclose(out["rgb"], torch.tensor(0.5), atol=1e-3)  # RGB did get jittered


@pytest.mark.parametrize("nir_channels", [1, 4])
def test_channel_counts_come_from_the_dataset(tmp_path, nir_channels):
    root = write_tiny_pairs(tmp_path / "ds", rgb_channels=1, nir_channels=nir_channels, split=True)
    info = open_dataset(root)
    assert info.channels == {"rgb": 1, "nir": nir_channels}
    stats = compute_normalization(info, (16, 16))
    item = PairDataset(info, "train", (16, 16), stats, augment=True)[0]
    assert item["rgb"].shape == (1, 16, 16) and item["nir"].shape == (nir_channels, 16, 16)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not an extracted pair dataset"):
        open_dataset(tmp_path)


@pytest.mark.parametrize("balanced", [True, False])
def test_sampler_caps_unlabelled_pairs_and_balances_classes(balanced):
    from mmkd_ros.data.dataset import EpochSampler

    # 80 % unlabelled, class 0 nine times as common as class 1: a robot's drive.
    labels = torch.tensor([0] * 90 + [1] * 10 + [-1] * 400)
    sampler = EpochSampler(labels, 2, seed=0, balanced=balanced)
    drawn = labels[torch.tensor(list(sampler))]
    assert len(drawn) == len(labels)
    unlabelled = (drawn < 0).float().mean().item()
    assert unlabelled == pytest.approx(0.5, abs=0.06)  # capped at half of the draws, not 80 %
    ratio = (drawn == 1).sum().item() / (drawn == 0).sum().item()
    assert ratio == pytest.approx(1.0 if balanced else 1 / 9, rel=0.35)
    few = EpochSampler(torch.tensor([0] * 45 + [1] * 45 + [-1] * 10), 2, seed=0)
    share = (torch.tensor([0] * 45 + [1] * 45 + [-1] * 10)[torch.tensor(list(few))] < 0).float().mean().item()
    assert share == pytest.approx(0.1, abs=0.07)  # below the cap: their natural share


@pytest.mark.parametrize("cap", [0.5, 0.75])
def test_train_loader_caps_unlabelled_draws_at_the_configured_share(cap):
    from mmkd_ros.train import config as config_lib
    from mmkd_ros.train.data import make_train_loader
    from mmkd_ros.train.distributed import Runtime

    class Labels(torch.utils.data.Dataset):
        # 90 % unlabelled: the cap, not the data, sets their share of the draws.
        labels = torch.tensor([0] * 50 + [1] * 50 + [-1] * 900)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, index):
            return self.labels[index]

    config = config_lib.load(None, [f"data.max_unlabelled_share={cap}"])
    with Runtime.start("cpu") as runtime:
        loader = make_train_loader(Labels(), config, 2, runtime)
    drawn = torch.cat(list(loader))
    assert (drawn < 0).float().mean().item() == pytest.approx(cap, abs=0.04)
