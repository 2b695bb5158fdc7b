"""Export of the student: ONNX agrees with PyTorch (onnxruntime, dynamic batch), metadata round-trips."""
import numpy as np
import pytest
import torch

from mmkd_ros.core.errors import CheckpointError
from mmkd_ros.tools.export import export_student
from mmkd_ros.deploy.classifier import Classifier
from mmkd_ros.models import build_model
from mmkd_ros.core.artifact import make_checkpoint, save_checkpoint

torch.set_num_threads(1)
NORMALIZATION = {"rgb": {"mean": [0.4, 0.5, 0.3], "std": [0.2, 0.25, 0.2]}, "nir": {"mean": [0.3], "std": [0.1]}}


def save_model(path, role, arch, arch_args, modalities):
    torch.manual_seed(0)
    model = build_model(arch, **arch_args).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    checkpoint = make_checkpoint(role=role, arch=arch, arch_args=arch_args, model=model, classes=["a", "b", "c"],
                                 modalities=modalities, channels={"rgb": 3, "nir": 1}, input_size=[40, 48],
                                 normalization=NORMALIZATION, config={}, metrics={})
    return save_checkpoint(checkpoint, path), model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    path, model = save_model(folder / "student.pt", "student", "student_tiny", {"num_classes": 3, "width": 0.5}, ["rgb"])
    return path, model, export_student(path, folder / "out")


def test_onnx_agrees_with_pytorch_and_no_unloadable_format_is_written(exported):
    path, _, result = exported
    assert set(result.paths) == {"onnx"}
    assert result.max_abs_diff["onnx"] < 1e-5
    assert sorted(p.name for p in result.paths["onnx"].parent.iterdir()) == ["student.onnx"]
    with pytest.raises(CheckpointError, match="unknown export format 'torchscript'"):
        export_student(path, path.parent / "ts", formats=("torchscript",))


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_onnx_runs_any_batch_size(exported, batch):
    import onnxruntime as ort

    _, model, result = exported
    session = ort.InferenceSession(str(result.paths["onnx"]), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 3, 40, 48)
    onnx_logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert onnx_logits.shape == (batch, 3)
    with torch.no_grad():
        np.testing.assert_allclose(onnx_logits, model(x).numpy(), atol=1e-5)


def test_classifier_gives_the_same_answer_from_checkpoint_and_onnx(exported):
    path, _, result = exported
    rng = np.random.default_rng(0)
    frames = [{"rgb": rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)} for _ in range(3)]
    from_torch = Classifier.load(path, device="cpu")
    from_onnx = Classifier.load(result.paths["onnx"], device="cpu")
    assert from_onnx.classes == ["a", "b", "c"] and from_onnx.input_size == (40, 48)
    assert from_onnx.normalization == {"rgb": NORMALIZATION["rgb"]}
    assert from_onnx.backend == "onnxruntime" and from_torch.backend == "torch"
    for a, b in zip(from_torch.predict_batch(frames), from_onnx.predict_batch(frames)):
        assert a.class_index == b.class_index
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    single = from_onnx.predict(frames[0])
    assert single.label in from_onnx.classes and 0.0 < single.score <= 1.0
    from_onnx.warmup(2)


def test_teacher_is_not_exported(tmp_path):
    path, _ = save_model(tmp_path / "teacher.pt", "teacher", "teacher_resnet_tiny",
                         {"num_classes": 3, "width": 0.125}, ["rgb", "nir"])
    with pytest.raises(CheckpointError, match="only the RGB student is exported"):
        export_student(path, tmp_path / "out")
    teacher = Classifier.load(path, device="cpu")  # the teacher runs from its checkpoint, with NIR
    prediction = teacher.predict({"rgb": np.zeros((50, 50, 3), np.uint8), "nir": np.zeros((50, 50, 1), np.uint16)})
    assert prediction.label in ("a", "b", "c")
    with pytest.raises(ValueError, match="lacks the 'nir' image"):
        teacher.predict({"rgb": np.zeros((50, 50, 3), np.uint8)})


def test_an_export_that_fails_the_parity_check_leaves_no_file(exported, tmp_path):
    """A node runs the .onnx beside a checkpoint: a file that disagrees must never be left there."""
    path = exported[0]
    with pytest.raises(CheckpointError, match="disagrees with PyTorch.*nothing was written"):
        export_student(path, tmp_path / "strict", tolerance=-1.0)  # no diff can pass
    assert list((tmp_path / "strict").iterdir()) == []
