"""Evaluation: metric arithmetic by hand, and the report files for a teacher and a student."""
import json

import pytest
import torch

from mmkd_ros.tools.evaluate import evaluate
from mmkd_ros.models import build_model
from mmkd_ros.core.artifact import make_checkpoint, save_checkpoint
from mmkd_ros.core.metrics import classification_metrics
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
