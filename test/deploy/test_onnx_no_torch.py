"""The deploy path of an ONNX model: numpy preprocessing equal to torch's, and no torch imported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmkd_ros.core import preprocess
from mmkd_ros.deploy.classifier import onnx_providers
from mmkd_ros.core.errors import ModelLoadError

CASES = [
    ((480, 640, 3), (96, 96), np.uint8),  # camera frame to a student input (shrink 5x and 6.7x)
    ((240, 320, 1), (96, 96), np.uint16),  # mono16 NIR
    ((50, 60, 3), (96, 128), np.uint8),  # enlarge
    ((96, 96, 3), (96, 96), np.uint8),  # no resize
    ((481, 97, 3), (32, 200), np.uint8),  # odd sizes, shrink one axis and enlarge the other
]


@pytest.mark.parametrize("shape, size, dtype", CASES, ids=[f"{s[0]}x{s[1]}->{z[0]}x{z[1]}" for s, z, _ in CASES])
def test_numpy_preprocessing_equals_torch(shape, size, dtype) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    channels = shape[2]
    mean, std = [0.3 + 0.1 * c for c in range(channels)], [0.2 + 0.05 * c for c in range(channels)]
    reference = preprocess.prepare(frame, size, mean, std).numpy()
    ours = preprocess.prepare_array(frame, size, mean, std)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    # float32 rounding of the filter sums, in normalised units (values span about -2..4)
    np.testing.assert_allclose(ours, reference, atol=3e-5, rtol=0)


def test_providers_for_each_device() -> None:
    cpu_only = ["CPUExecutionProvider"]
    assert onnx_providers("auto", cpu_only) == (["CPUExecutionProvider"], "cpu")
    assert onnx_providers("cpu", ["CUDAExecutionProvider", *cpu_only])[1] == "cpu"
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", *cpu_only]
    providers, device = onnx_providers("cuda:1", gpu)
    assert [p[0] for p in providers[:2]] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert providers[0][1] == {"device_id": 1} and device == "cuda:1"
    assert onnx_providers("auto", gpu)[1] == "cuda"
    with pytest.raises(ModelLoadError, match="no CUDA provider"):
        onnx_providers("cuda", cpu_only)
    with pytest.raises(ModelLoadError, match="not one of"):
        onnx_providers("tpu", cpu_only)


PROBE = """
import json, sys
import numpy as np
from mmkd_ros.deploy.classifier import Classifier
from mmkd_ros.data.ros_images import msg_to_array
import mmkd_ros.nodes.student_node  # everything the node imports
classifier = Classifier.load(sys.argv[1], device="auto", cpu_threads=1)
frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
prediction = classifier.predict({"rgb": frame})
rss_kb = int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
print(json.dumps({"torch": "torch" in sys.modules, "rss_mb": rss_kb / 1024, "label": prediction.label,
                  "scores": prediction.scores, "device": classifier.device}))
"""


def test_an_onnx_model_is_run_without_torch(tmp_path, capsys) -> None:
    from test_export import save_model  # a tiny student, exported with the project's exporter
    from mmkd_ros.deploy.classifier import Classifier
    from mmkd_ros.tools.export import export_student

    checkpoint, _ = save_model(tmp_path / "student.pt", "student", "student_tiny",
                               {"num_classes": 3, "width": 0.5}, ["rgb"])
    onnx_path = export_student(checkpoint, tmp_path / "out").paths["onnx"]
    result = subprocess.run([sys.executable, "-c", PROBE, str(onnx_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["torch"] is False, "an ONNX model pulled in torch"
    assert probe["device"] == "cpu"
    with capsys.disabled():
        print(f"\n[onnx deploy path] RSS {probe['rss_mb']:.0f} MB, torch not imported")
    assert probe["rss_mb"] < 400, probe
    # The same answer as the checkpoint through torch.
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    reference = Classifier.load(checkpoint, device="cpu").predict({"rgb": frame})
    assert probe["label"] == reference.label
    np.testing.assert_allclose(probe["scores"], reference.scores, atol=1e-4)
