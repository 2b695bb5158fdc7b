"""The command-line entry points: thin wrappers that turn library errors into 'error: ...' and exit 2."""
import importlib.util
from pathlib import Path

import torch

from conftest import TINY_OVERRIDES
from mmkd_ros.core.errors import run_cli

REPO = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"entry_{name}", REPO / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chain_from_a_dataset_then_evaluate_and_export(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    kd_overrides = [o for o in TINY_OVERRIDES if not o.startswith(("distill.disc_", "distill.method"))]
    assert run_cli(script("distill").main, ["--data", str(tiny_dataset), "--out", str(out), "--method", "kd",
                                            "--seed", "1", *kd_overrides]) == 0
    captured = capsys.readouterr()
    assert "report:" in captured.out
    teacher, student = out / "teacher" / "teacher.pt", out / "student" / "student.pt"
    # The chain exports the student beside its checkpoint, for the torch-free node.
    onnx = student.with_suffix(".onnx")
    assert f"exported {onnx}" in captured.err
    from mmkd_ros.deploy.classifier import Classifier

    exported, original = Classifier.load(onnx), Classifier.load(student, device="cpu")
    assert exported.backend == "onnxruntime" and exported.classes == original.classes
    assert run_cli(script("evaluate").main, ["--data", str(tiny_dataset), "--out", str(tmp_path / "eval"),
                                             f"t={teacher}", f"s={student}"]) == 0
    assert "| s | rgb |" in (tmp_path / "eval" / "report.md").read_text()
    assert run_cli(script("export").main, [str(student), "--out", str(tmp_path / "export")]) == 0
    assert "parity max |diff|" in capsys.readouterr().out
    # --resume of a finished chain reuses the teacher and the student (no epoch left to run)
    exported_ns = onnx.stat().st_mtime_ns
    assert run_cli(script("distill").main, ["--data", str(tiny_dataset), "--out", str(out), "--resume",
                                            "--method", "kd", "--no-onnx", *kd_overrides]) == 0
    assert onnx.stat().st_mtime_ns == exported_ns and "exported" not in capsys.readouterr().err


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert run_cli(script("train_teacher").main, ["--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an extracted pair dataset" in err and err.count("\n") == 1


def test_unknown_override_is_refused(tiny_dataset, tmp_path, capsys):
    assert run_cli(script("train_teacher").main, ["--data", str(tiny_dataset), "--out", str(tmp_path),
                                                  "teacher.widht=2"]) == 2
    assert "unknown config key 'teacher.widht'" in capsys.readouterr().err
