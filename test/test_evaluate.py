"""Evaluation: metric arithmetic by hand, and the report files for a teacher and a student."""
import json

import numpy as np
import pytest
import torch

from mmkd_ros.tools.evaluate import evaluate
from mmkd_ros.models import build_model
from mmkd_ros.core.artifact import make_checkpoint, save_checkpoint
from mmkd_ros.core.metrics import classification_metrics, group_bootstrap, weighted_macro_f1
from tiny_pairs import CLASSES, write_tiny_pairs

torch.set_num_threads(1)


def test_metrics_by_hand():
    # true: a a b b c ; predicted: a b b b a ; one unlabelled sample ignored
    logits = torch.eye(3)[[0, 1, 1, 1, 0, 2]]
    labels = torch.tensor([0, 0, 1, 1, 2, -1])
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1: a: p=1/2 r=1/2 -> 0.5; b: p=2/3 r=1 -> 0.8; c: 0
    assert m["per_class_f1"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["num_labelled"] == 5


def test_report_compares_teacher_and_student(tmp_path):
    data = write_tiny_pairs(tmp_path / "ds", split=True)
    norm = {"rgb": {"mean": [0.5] * 3, "std": [0.25] * 3}, "nir": {"mean": [0.5], "std": [0.25]}}
    paths = {}
    for role, arch, args, modalities in [
        ("teacher", "teacher_resnet_tiny", {"num_classes": 3, "width": 0.125}, ["rgb", "nir"]),
        ("student", "student_tiny", {"num_classes": 3, "width": 0.5}, ["rgb"]),
    ]:
        torch.manual_seed(0)
        model = build_model(arch, **args)
        checkpoint = make_checkpoint(role=role, arch=arch, arch_args=args, model=model, classes=CLASSES,
                                     modalities=modalities, channels={"rgb": 3, "nir": 1}, input_size=[32, 32],
                                     normalization=norm, config={}, metrics={"method": "adv"} if role == "student" else {})
        paths[role] = save_checkpoint(checkpoint, tmp_path / role / f"{role}.pt")
    (tmp_path / "student" / "metrics.csv").write_text("epoch,train_loss,val_acc\n1,1.0,0.4\n2,0.8,0.5\n")
    report = evaluate([paths["teacher"], paths["student"]], data, tmp_path / "eval", latency_runs=3)
    assert set(report["models"]) == {"teacher", "student[adv]"}
    teacher, student = report["models"]["teacher"], report["models"]["student[adv]"]
    assert teacher["modalities"] == ["rgb", "nir"] and student["modalities"] == ["rgb"]
    assert teacher["params"] > student["params"] > 0 and teacher["flops"] > 0 and student["latency_ms"] > 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == json.loads(json.dumps(report))
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "| teacher | rgb+nir |" in text and "| student[adv] | rgb |" in text
    for name in ("confusion_teacher.png", "confusion_student_adv.png", "curves_student_adv.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 1000, name
    # per-frame predictions and groups (what a bootstrap over bags needs) agree with the metrics
    samples = report["samples"]
    assert len(samples["labels"]) == len(samples["groups"]) == teacher["num_labelled"]
    assert len(set(samples["groups"])) > 1
    for model in (teacher, student):
        hits = sum(p == t for p, t in zip(model["predictions"], samples["labels"]))
        assert hits / len(samples["labels"]) == pytest.approx(model["accuracy"])
        assert weighted_macro_f1(np.array(model["predictions"]), np.array(samples["labels"]), len(CLASSES)) \
            == pytest.approx(model["macro_f1"])


def test_weighted_macro_f1_counts_weights_as_copies():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    pred[:80] = true[:80]
    reference = classification_metrics(torch.eye(4)[pred], torch.tensor(true), list("abcd"))["macro_f1"]
    assert weighted_macro_f1(pred, true, 4) == pytest.approx(reference)
    weights = rng.integers(0, 3, 200)
    copies = np.repeat(np.arange(200), weights)
    duplicated = classification_metrics(torch.eye(4)[pred[copies]], torch.tensor(true[copies]), list("abcd"))
    assert weighted_macro_f1(pred, true, 4, weights.astype(float)) == pytest.approx(duplicated["macro_f1"])


def test_group_bootstrap_draws_whole_groups():
    groups = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    values = np.array([1.0] * 50 + [0.0] * 30 + [0.5] * 20)  # one value per group

    def mean(weights):
        return float((values * weights).sum() / weights.sum())

    low, high = group_bootstrap(groups, mean, rounds=500)
    assert 0.0 <= low < mean(np.ones(100)) < high <= 1.0  # spread of three groups, not of 100 frames
    assert low < 0.3 and high > 0.8  # drawing "b" alone (0.0) or "a" alone (1.0) happens
    assert group_bootstrap(["a"] * 10, lambda w: 0.7) == (0.7, 0.7)  # one group: no spread
    assert group_bootstrap(groups, mean, rounds=200, seed=3) == group_bootstrap(groups, mean, rounds=200, seed=3)
