"""The method on a tiny dataset: gradient routing, golden losses, exact resume, refused checkpoints."""
import copy
import csv
import pickle

import numpy as np
import pytest
import torch

from mmkd_ros.core import artifact as ckpt_lib
from mmkd_ros.core.errors import CheckpointError, ConfigError, ModelLoadError, TrainingError
from mmkd_ros.data.dataset import PairDataset
from mmkd_ros.data.image_files import write_png
from mmkd_ros.deploy.classifier import Classifier
from mmkd_ros.losses import classification_loss, disc_loss, kd_loss, rank_agreement
from mmkd_ros.models import build_from_checkpoint, build_model
from mmkd_ros.train import config as config_lib
from mmkd_ros.train.data import TRUST_RATIO, make_eval_loader, predict_logits, prepare_data, unlabelled_cap
from mmkd_ros.train.distill import DistillRecipe, distill, hint_layer, load_teacher, mix_pairs
from mmkd_ros.train.distributed import Runtime
from mmkd_ros.train.objectives import (
    Adversarial, CrossEntropy, StepTensors, adv_ramp, build_objectives, task_classes,
)
from mmkd_ros.train.teacher import train_teacher
from tiny_pairs import write_tiny_pairs

torch.set_num_threads(1)  # golden numbers are recorded single-threaded

# Recorded with torch 2.15.0 (CPU, 1 thread) on the tiny dataset of tiny_pairs.py (seed 0); the
# teacher trains on labelled pairs only, the adversarial student on all of them.
GOLDEN_TEACHER = [{"train_loss": 1.1134, "val_acc": 0.4444}, {"train_loss": 0.9065, "val_acc": 0.8889}]
GOLDEN_ADV = [{"train_loss": 1.3455, "train_loss_ce": 1.0547, "train_loss_disc": 1.4222, "train_loss_adv": 0.5816},
              {"train_loss": 1.2881, "train_loss_ce": 1.0058, "train_loss_disc": 1.4455, "train_loss_adv": 0.5647}]


@pytest.fixture(scope="module")
def teacher_checkpoint(tiny_dataset, tiny_config, tmp_path_factory):
    return train_teacher(tiny_config, tiny_dataset, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def sure_teacher(tiny_dataset, tiny_config, tmp_path_factory):
    """A teacher trained long enough to be sure of the classes it knows."""
    config = config_lib.replace(tiny_config, teacher={"epochs": 12})
    return train_teacher(config, tiny_dataset, tmp_path_factory.mktemp("sure_teacher"))


def tiny_models(method: str, w_ce: float = 1.0, condition: str = "teacher_probs") -> DistillRecipe:
    """A distillation recipe for ``method`` on tiny models (teacher frozen, as distill() builds it)."""
    torch.manual_seed(0)
    teacher = build_model("teacher_resnet_tiny", num_classes=3, width=0.125).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    base = config_lib.load(None, ["device=cpu", "student.arch=student_tiny", "student.width=0.5",
                                  "distill.warmup_epochs=0"])
    config = config_lib.with_method(base, method)
    extra = {"disc_condition": condition, "disc_hidden": 8} if method.startswith("adv") else {}
    config = config_lib.replace(config, distill={"w_ce": w_ce, **extra})
    describe = {"arch": "student_tiny", "arch_args": {"num_classes": 3, "in_channels": 3, "width": 0.5},
                "classes": ["a", "b", "c"], "modalities": ["rgb"]}
    return DistillRecipe(config, Runtime.start("cpu"), None, describe, teacher, "teacher.pt", steps_per_epoch=10)


def disc_of(recipe: DistillRecipe):
    return next(t for t in recipe.terms if isinstance(t, Adversarial)).disc


def tiny_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"rgb": torch.randn(4, 3, 32, 32, generator=generator), "nir": torch.randn(4, 1, 32, 32, generator=generator),
            "label": torch.tensor([0, 1, 2, -1])}


def test_adversarial_gradient_reaches_the_student_and_never_the_teacher():
    m = tiny_models("adv", w_ce=0.0)  # only the adversarial term drives the student
    teacher_before = copy.deepcopy(m.teacher.state_dict())
    student_before = copy.deepcopy(m.student_proj.state_dict())
    disc_before = copy.deepcopy(disc_of(m))
    batch = tiny_batch()
    losses = m.step(batch)
    assert set(losses) >= {"loss_disc", "loss_adv", "loss_ce", "loss", "d_real", "d_fake"}
    # teacher: no gradient, no change (BatchNorm statistics included: it ran in eval mode)
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in m.teacher.state_dict().items())
    # student and projector: moved by the adversarial loss alone
    for name, p in m.student_proj.named_parameters():
        if name.startswith(("student.features", "projector")) and p.dim() > 1:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    changed = [k for k, v in m.student_proj.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any(k.startswith("student.features") for k in changed)
    # discriminator: its gradient is exactly that of its own loss (the student step, run with D
    # frozen, added nothing to it)
    with torch.no_grad():
        real = m.teacher.forward_features(batch["rgb"], batch["nir"])  # [4, D_t]
        probs = torch.softmax(m.teacher.forward_head(real), 1)  # [4, 3]: the condition D sees
    fresh = tiny_models("adv", w_ce=0.0)
    fake = fresh.student_proj(batch["rgb"])[1].detach()
    logits = disc_before(torch.cat([torch.cat([real, probs], 1), torch.cat([fake, probs], 1)]))
    disc_loss("nsgan", *logits.split(4)).backward()
    for (name, p), (_, q) in zip(disc_of(m).named_parameters(), disc_before.named_parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-7), name
    assert all(p.requires_grad is False for p in disc_of(m).parameters())  # still frozen after the student step


@pytest.mark.parametrize("method", config_lib.METHODS)
def test_every_method_steps_and_reports_its_terms(method):
    m = tiny_models(method)
    assert (m.student_proj.projector is None) == (method in ("ce", "kd", "kd+hall"))  # built only where a term reads it
    assert (m.student_proj.adapter is None) == ("hall" not in method)
    losses = m.step(tiny_batch())
    expected = {"ce": {"loss_ce"}, "kd": {"loss_kd"}, "feat_l2": {"loss_feat"}, "adv": {"loss_adv", "loss_disc"},
                "adv+kd": {"loss_adv", "loss_kd", "loss_disc"},
                "adv+kd+feat": {"loss_adv", "loss_kd", "loss_disc", "loss_feat", "focus_r2"},
                "adv_task": {"loss_adv", "loss_disc"},
                "adv_task+kd+feat": {"loss_adv", "loss_kd", "loss_disc", "loss_feat", "focus_r2"},
                "kd+hall": {"loss_kd", "loss_hall"},
                "adv+kd+feat+hall": {"loss_adv", "loss_kd", "loss_disc", "loss_feat", "focus_r2", "loss_hall"}}[method]
    assert expected <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_hallucination_stream_regresses_the_nir_map_from_rgb_and_never_moves_the_teacher():
    m = tiny_models("kd+hall", w_ce=0.0)
    teacher_before = copy.deepcopy(m.teacher.state_dict())
    # the tap: the tiny student's last layer (stride 8, as the teacher's fusion map), 32 -> 16 channels
    assert hint_layer(m.model, m.teacher) == (2, 32, 16)
    batch = tiny_batch()
    with torch.no_grad():
        _, teacher_map = m.teacher.forward_maps(batch["rgb"], batch["nir"])  # [4, 16, 4, 4]
    _, _, adapted = m.student_proj(batch["rgb"])
    assert adapted.shape == teacher_map.shape
    standardised = (teacher_map - teacher_map.mean((0, 2, 3), keepdim=True)) / (
        teacher_map.std((0, 2, 3), keepdim=True) + 1e-5)
    expected = float(((adapted.detach() - standardised) ** 2).mean())
    losses = m.step(batch)
    assert losses["loss_hall"] == pytest.approx(expected, rel=1e-5)
    assert losses["loss"] == pytest.approx(losses["loss_kd"] + expected, rel=1e-5)  # w_kd = w_hall = 1, w_ce = 0
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in m.teacher.state_dict().items())
    for name in ("adapter.weight", "student.features.0.0.weight"):  # the map's own layers and the tap's path
        assert dict(m.student_proj.named_parameters())[name].grad.abs().sum() > 0, name
    # the adapter is training-only: the deployed student holds none of it
    assert not any(k.startswith("adapter") for k in m.model.state_dict())


def test_rank_filter_distils_only_pairs_whose_rankings_agree():
    m = tiny_models("kd", w_ce=0.0)
    m = DistillRecipe(config_lib.replace(m.config, distill={"kd_filter": "rank"}), Runtime.start("cpu"), None,
                      m.describe, m.teacher, "teacher.pt", steps_per_epoch=10)
    generator = torch.Generator().manual_seed(3)
    shift = 3 * torch.randn(16, 4, 1, 1, generator=generator)  # images of other colours: rankings move with them
    batch = {"rgb": torch.randn(16, 3, 32, 32, generator=generator) + shift[:, :3],
             "nir": torch.randn(16, 1, 32, 32, generator=generator) + shift[:, 3:], "label": torch.full((16,), -1)}
    with torch.no_grad():
        teacher_logits = m.teacher(batch["rgb"], batch["nir"])
        student_logits, _, _ = m.student_proj(batch["rgb"])
    keep = (rank_agreement(student_logits, teacher_logits) > 0).float()
    assert 0 < keep.sum() < len(keep)  # this batch has pairs on both sides
    expected = kd_loss(student_logits, teacher_logits, m.config.distill.kd_temperature, weights=keep)
    losses = m.step(batch)
    assert losses["kd_kept"] == pytest.approx(float(keep.mean()))
    assert losses["loss_kd"] == pytest.approx(float(expected), rel=1e-5)
    assert losses["loss_kd"] < kd_loss(student_logits, teacher_logits, m.config.distill.kd_temperature).item()


def test_rank_filter_needs_a_kd_term():
    with pytest.raises(ConfigError, match="kd_filter"):
        config_lib.load(None, ["distill.method=feat_l2", "distill.kd_filter=rank"])
    assert config_lib.load(None, ["distill.method=adv+kd+feat", "distill.kd_filter=rank"]).distill.kd_filter == "rank"


def test_task_discriminator_names_class_and_source_and_moves_the_student():
    m = tiny_models("adv_task", w_ce=0.0)  # only the adversarial term drives the student
    student_before = copy.deepcopy(m.student_proj.state_dict())
    batch = tiny_batch()
    losses = m.step(batch)
    disc = disc_of(m)
    assert disc.net[0].in_features == m.teacher.num_features  # no condition: the class is D's target
    assert disc.net[-1].out_features == 2 * 3  # teacher/student x 3 classes
    assert 0.0 < losses["d_real"] < 1.0 and 0.0 < losses["d_fake"] < 1.0
    changed = [k for k, v in m.student_proj.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any(k.startswith("student.features") for k in changed)
    # the class D must name: the label, or the teacher's prediction for the unlabelled pair
    teacher_logits = torch.tensor([[0.0, 0.0, 1.0]] * 3 + [[0.0, 5.0, 0.0]])
    x = StepTensors(batch["label"], teacher_logits, None, None, teacher_logits)
    assert task_classes(x).tolist() == [0, 1, 2, 1]


@pytest.mark.parametrize("override", ["distill.gan_loss=lsgan", "distill.gp=r1", "distill.disc_condition=none"])
def test_task_discriminator_refuses_settings_it_does_not_read(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[1]):
        config_lib.load(None, ["distill.method=adv_task", override])


@pytest.mark.parametrize("condition", ["none", "teacher_probs"])
def test_discriminator_input_with_and_without_condition(condition):
    m = tiny_models("adv", condition=condition)
    losses = m.step(tiny_batch())
    extra = 3 if condition == "teacher_probs" else 0  # the teacher's class probabilities
    assert disc_of(m).net[0].in_features == m.teacher.num_features + extra
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_focus_gradient_reaches_the_student_and_never_the_teacher():
    m = tiny_models("adv+kd+feat", w_ce=0.0)
    teacher_before = copy.deepcopy(m.teacher.state_dict())
    student_before = copy.deepcopy(m.student_proj.state_dict())
    m.step(tiny_batch())
    assert all(torch.equal(v, teacher_before[k]) for k, v in m.teacher.state_dict().items())
    assert any(not torch.equal(v, student_before[k]) for k, v in m.student_proj.state_dict().items())
    adversarial = next(t for t in m.terms if isinstance(t, Adversarial))
    assert bool(m.focus.initialised) and adversarial.updates == 1 and adversarial.focus is m.focus


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixed_pairs_blend_rgb_and_nir_alike_and_keep_the_larger_share(mix):
    torch.manual_seed(3)
    rgb, nir = torch.rand(6, 3, 16, 16), torch.rand(6, 1, 16, 16)
    labels = torch.tensor([0, 1, 2, 0, -1, 1])
    cfg = config_lib.replace(config_lib.load(None, []), distill={"mixup_alpha": 1.0, "mix": mix}).distill
    torch.manual_seed(4)
    mixed_rgb, mixed_nir, partners, weight = mix_pairs(rgb, nir, labels, cfg)
    torch.manual_seed(4)  # the same draws: recover the partner order
    float(torch.distributions.Beta(1.0, 1.0).sample())
    order = torch.randperm(6)
    assert torch.equal(partners, labels[order]) and 0.5 <= weight <= 1.0
    for mixed, plain in ((mixed_rgb, rgb), (mixed_nir, nir)):
        if mix == "mixup":
            assert torch.allclose(mixed, weight * plain + (1 - weight) * plain[order])
        else:  # each pixel is its own or its partner's; the partner's share is 1 - weight, both modalities
            own = (mixed == plain).all(1)  # [B, H, W]
            assert torch.allclose(own.float().mean((1, 2))[order != torch.arange(6)], torch.tensor(weight))
    if mix == "cutmix":  # the same box in RGB and NIR
        assert torch.equal((mixed_rgb == rgb).all(1), (mixed_nir == nir).all(1))


def test_mixed_pairs_step_and_weigh_both_labels():
    m = tiny_models("adv+kd+feat")
    m.config = config_lib.replace(m.config, distill={"mixup_alpha": 0.4})
    losses = m.step(tiny_batch())
    assert {"loss_ce", "loss_kd", "loss_adv", "loss_feat"} <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    with pytest.raises(config_lib.ConfigError, match="mixup_alpha"):
        config_lib.load(None, ["distill.mixup_alpha=-1"])
    with pytest.raises(config_lib.ConfigError, match="distill.mix='cutmix' has no effect"):
        config_lib.load(None, ["distill.mix=cutmix"])  # mixed pairs are off: the setting would be ignored
    # CE weighs each label by its image's share; unlabelled partners (-1) add nothing
    logits, labels, partners = torch.randn(4, 3), torch.tensor([0, 1, 2, -1]), torch.tensor([1, -1, 0, 2])
    x = StepTensors(labels, logits, None, None, None, partners, 0.7)
    expected = 0.7 * classification_loss(logits, labels) + 0.3 * classification_loss(logits, partners)
    assert torch.allclose(CrossEntropy(1.0, 0.0).loss(x)[0], expected)


def test_adversarial_warmup_ramps_linearly():
    assert adv_ramp(0, 10, 0.0) == 1.0  # no warm-up: full weight at once
    assert [adv_ramp(s, 10, 2.0) for s in (0, 5, 10, 20, 30)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_golden_losses(teacher_checkpoint, tiny_dataset, tiny_config, tmp_path):
    teacher_history = ckpt_lib.load_checkpoint(teacher_checkpoint.parent / "last.pt")["train_state"]["history"]
    for row, golden in zip(teacher_history, GOLDEN_TEACHER, strict=True):
        for key, value in golden.items():
            assert row[key] == pytest.approx(value, abs=2e-4), (key, row)
    labels_from_start = config_lib.replace(tiny_config, distill={"ce_start": 0.0})  # the goldens' schedule
    student = distill(labels_from_start, tiny_dataset, teacher_checkpoint, tmp_path / "adv")
    history = ckpt_lib.load_checkpoint(tmp_path / "adv" / "last.pt")["train_state"]["history"]
    for row, golden in zip(history, GOLDEN_ADV, strict=True):
        for key, value in golden.items():
            assert row[key] == pytest.approx(value, abs=2e-4), (key, row)
    checkpoint = ckpt_lib.load_checkpoint(student, role="student")
    assert checkpoint["modalities"] == ["rgb"] and checkpoint["metrics"]["method"] == "adv"
    assert (tmp_path / "adv" / "metrics.csv").is_file() and (tmp_path / "adv" / "config.yaml").is_file()
    cap = checkpoint["metrics"]["unlabelled_cap"]  # what the rule decided, kept with the model
    trusted = cap["confidence_unlabelled"] >= TRUST_RATIO * cap["confidence_val"]
    assert cap["share"] == (0.75 if trusted else 0.5)


@pytest.mark.parametrize("unlike", [False, True])
def test_unlabelled_pairs_take_more_draws_only_where_the_teacher_is_as_sure_of_them(
        sure_teacher, tiny_config, tmp_path, unlike):
    # Half the training frames lose their label (a drive whose labels nobody recorded); with
    # ``unlike`` their NIR also lies between two classes (frames unlike every labelled one).
    pairs = write_tiny_pairs(tmp_path / "pairs", unlabelled=0, split=True, seed=1)
    rows = list(csv.DictReader((pairs / "manifest.csv").open()))
    for row in [r for r in rows if r["split"] == "train"][::2]:
        row["label"] = ""
        if unlike:
            write_png(pairs / row["nir"], np.full((24, 24), int(0.35 * 65535), np.uint16))
    with (pairs / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    teacher, checkpoint = load_teacher(sure_teacher, "cpu")
    data = prepare_data(tiny_config, pairs, checkpoint["input_size"], checkpoint["normalization"])
    cap = unlabelled_cap(teacher, data, tiny_config, "cpu")

    plain = PairDataset(data.info, "train", data.input_size, data.normalization)
    logits, labels = predict_logits(teacher, make_eval_loader(plain, 8), ("rgb", "nir"), "cpu")
    val_logits, val_labels = predict_logits(teacher, make_eval_loader(data.val, 8), ("rgb", "nir"), "cpu")
    assert cap.confidence_unlabelled == pytest.approx(logits.softmax(1).max(1).values[labels < 0].mean().item())
    assert cap.confidence_val == pytest.approx(val_logits.softmax(1).max(1).values[val_labels >= 0].mean().item())
    assert cap.share == (0.5 if unlike else 0.75)
    assert ("<" if unlike else ">=") in cap.describe()
    fixed = config_lib.replace(tiny_config, data={"trusted_unlabelled_share": 0.5})  # equal caps: no rule
    assert unlabelled_cap(teacher, data, fixed, "cpu") is None


@pytest.mark.parametrize("method", ["adv", "kd", "adv+kd+feat", "kd+hall"])
def test_resume_gives_identical_next_losses(teacher_checkpoint, tiny_dataset, tiny_config, tmp_path, method):
    cfg = config_lib.with_method(tiny_config, method)
    if method == "adv":
        cfg = config_lib.replace(cfg, distill={"gp": "r1"})
    distill(cfg, tiny_dataset, teacher_checkpoint, tmp_path / "straight")
    distill(cfg, tiny_dataset, teacher_checkpoint, tmp_path / "resumed", stop_after=1)
    distill(cfg, tiny_dataset, teacher_checkpoint, tmp_path / "resumed", resume=True)
    straight = ckpt_lib.load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = ckpt_lib.load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert straight["train_state"]["history"] == resumed["train_state"]["history"]
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_teacher_resume_is_exact(tiny_dataset, tiny_config, tmp_path):
    train_teacher(tiny_config, tiny_dataset, tmp_path / "straight")
    train_teacher(tiny_config, tiny_dataset, tmp_path / "resumed", stop_after=1)
    train_teacher(tiny_config, tiny_dataset, tmp_path / "resumed", resume=True)
    straight = ckpt_lib.load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = ckpt_lib.load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert straight["train_state"]["history"] == resumed["train_state"]["history"]
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_teacher(tiny_config, tiny_dataset, tmp_path / "empty", resume=True)


def test_mismatched_teacher_is_refused(teacher_checkpoint, tiny_config, tmp_path):
    grey = write_tiny_pairs(tmp_path / "grey", rgb_channels=1, split=True)
    with pytest.raises(CheckpointError, match="expects 3 rgb channel"):
        distill(tiny_config, grey, teacher_checkpoint, tmp_path / "out")
    checkpoint = ckpt_lib.load_checkpoint(teacher_checkpoint)
    checkpoint["classes"] = ["a", "b", "c"]
    with pytest.raises(CheckpointError, match="trained on classes"):
        ckpt_lib.check_compatible(checkpoint, ["grass", "paint", "turf"], {"rgb": 3, "nir": 1})
    checkpoint = ckpt_lib.load_checkpoint(teacher_checkpoint)
    checkpoint["arch_args"]["width"] = 0.25  # weights of another architecture
    with pytest.raises(CheckpointError, match="do not fit architecture"):
        build_from_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="a student checkpoint is needed"):
        ckpt_lib.load_checkpoint(teacher_checkpoint, role="student")


class Hostile:
    """Unpickling this would create a file: a weights-only load must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_hostile_pickle_is_refused_cleanly(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "mmkd_ros/checkpoint", "payload": Hostile(marker)}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        ckpt_lib.load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Hostile(marker), protocol=2))
    with pytest.raises(ModelLoadError):
        Classifier.load(plain, device="cpu")
    assert not marker.exists()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint|cannot read model file|refused to load"):
        ckpt_lib.load_checkpoint(tmp_path / "garbage.pt")


def test_ce_start_trains_on_the_teacher_alone_first_then_adds_the_labels():
    cfg = config_lib.load(None, ["distill.method=kd", "distill.epochs=2", "distill.ce_start=0.25"]).distill
    terms, _ = build_objectives(cfg, teacher_dim=4, num_classes=3, runtime=Runtime.start("cpu"), steps_per_epoch=4)
    ce = next(t for t in terms if isinstance(t, CrossEntropy))
    assert ce.start_steps == 2  # a quarter of 2 epochs x 4 steps
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x = StepTensors(torch.tensor([1, -1]), logits, None, None, logits)
    expected = classification_loss(logits, torch.tensor([1, -1])).item()
    weighted = [ce.loss(x)[0].item() for _ in range(3)]
    assert weighted == pytest.approx([0.0, 0.0, expected])
    again = next(t for t in build_objectives(cfg, 4, 3, Runtime.start("cpu"), 4)[0] if isinstance(t, CrossEntropy))
    again.load_state_dict(ce.state_dict())  # a resumed run keeps the clock
    assert again.loss(x)[0].item() == pytest.approx(expected)


def test_ce_start_without_a_teacher_term_is_refused():
    with pytest.raises(ConfigError, match="ce_start"):
        config_lib.load(None, ["distill.method=ce", "distill.ce_start=0.25"])
    # a study's ce baseline drawn from a config that sets it trains on labels from the start
    baseline = config_lib.with_method(config_lib.load(None, ["distill.ce_start=0.5"]), "ce").distill
    terms, _ = build_objectives(baseline, teacher_dim=4, num_classes=3, runtime=Runtime.start("cpu"), steps_per_epoch=4)
    assert terms[0].start_steps == 0


def test_a_run_saved_before_the_focus_step_count_resumes():
    saved = tiny_models("adv+kd+feat")
    saved.step(tiny_batch())
    state = saved.state_dict()
    del state["focus"]["steps"]  # as written before distill.focus_start existed
    resumed = tiny_models("adv+kd+feat")
    resumed.load_state_dict(state)
    assert int(resumed.focus.steps) == 0 and torch.equal(resumed.focus.r2, saved.focus.r2)


def test_a_loss_that_is_not_finite_stops_the_run_with_one_clear_error(tiny_dataset, tiny_config, teacher_checkpoint,
                                                                      tmp_path):
    config = config_lib.replace(config_lib.with_method(tiny_config, "kd"), distill={"lr": 1e30, "warmup_epochs": 0})
    with pytest.raises(TrainingError, match=r"distill.*the loss became (nan|inf) at epoch 1, step \d+ \(loss_ce="):
        distill(config, tiny_dataset, teacher_checkpoint, tmp_path / "run")
    assert not (tmp_path / "run" / "student.pt").exists()  # no checkpoint of a broken model
