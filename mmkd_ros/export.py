"""Export the student (never the teacher: it needs NIR, which the robot's student does not have).

ONNX (dynamo exporter, dynamic batch) with the checkpoint's description (classes, modalities,
channels, input size, normalisation) stored as ONNX ``metadata_props`` JSON, so
:class:`mmkd_ros.inference.Classifier` prepares pixels exactly as in training; and TorchScript
(``torch.jit.trace``, with the same JSON as an extra file). Each export is checked against the
PyTorch model on batches of 1 and 3 and the largest absolute difference is reported.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmkd_ros.errors import CheckpointError
from mmkd_ros.inference import ONNX_METADATA_KEY
from mmkd_ros.train.checkpoint import build_from_checkpoint, load_checkpoint

FORMATS = ("onnx", "torchscript")
METADATA_FIELDS = ("role", "arch", "arch_args", "classes", "modalities", "channels", "input_size", "normalization",
                   "package_version")


@dataclass
class ExportResult:
    """Where each format went and its parity against PyTorch (max |difference| of the logits)."""

    paths: dict[str, Path] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)


def export_student(checkpoint_path: str | Path, out_dir: str | Path, formats: tuple[str, ...] = FORMATS,
                   opset: int = 18, tolerance: float = 1e-4) -> ExportResult:
    """Export a student checkpoint to ``out_dir`` (``student.onnx``, ``student.torchscript.pt``)."""
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise CheckpointError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint["role"] != "student" or checkpoint["modalities"] != ["rgb"]:
        raise CheckpointError(f"{checkpoint_path} is a {checkpoint['role']} checkpoint; only the RGB student is exported "
                              "(the teacher needs NIR and runs from its .pt checkpoint)")
    model = build_from_checkpoint(checkpoint, checkpoint_path).eval()
    metadata = {k: checkpoint[k] for k in METADATA_FIELDS if k in checkpoint}
    metadata["source_checkpoint"] = checkpoint_path.name
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = checkpoint["input_size"]
    channels = checkpoint["channels"]["rgb"]
    generator = torch.Generator().manual_seed(0)
    probes = [torch.randn(b, channels, h, w, generator=generator) for b in (1, 3)]  # normalised-scale inputs
    result = ExportResult()
    if "onnx" in formats:
        path = out_dir / "student.onnx"
        _export_onnx(model, probes[1], metadata, path, opset)
        result.paths["onnx"], result.max_abs_diff["onnx"] = path, _onnx_parity(model, path, probes)
    if "torchscript" in formats:
        path = out_dir / "student.torchscript.pt"
        _export_torchscript(model, probes[1], metadata, path)
        result.paths["torchscript"], result.max_abs_diff["torchscript"] = path, _torchscript_parity(model, path, probes)
    for name, diff in result.max_abs_diff.items():
        if not diff <= tolerance:
            raise CheckpointError(f"{name} export disagrees with PyTorch: max |diff| {diff:.3g} > {tolerance:g}")
    return result


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, metadata: dict[str, Any], path: Path,
                 opset: int) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(model, (example,), str(raw), dynamo=True, input_names=["rgb"], output_names=["logits"],
                          dynamic_shapes={"rgb": {0: batch}}, opset_version=opset, verbose=False)
        proto = onnx.load(str(raw))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
        staged = Path(tmp) / "final.onnx"
        onnx.save(proto, str(staged))
        os.replace(staged, path)


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, metadata: dict[str, Any], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream but still the TorchScript route
        traced = torch.jit.trace(model, example)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        torch.jit.save(traced, tmp, _extra_files={"mmkd_ros.json": json.dumps(metadata)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@torch.no_grad()
def _onnx_parity(model: torch.nn.Module, path: Path, probes: list[torch.Tensor]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    diffs = [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) - model(x) for x in probes]  # [B, K] each
    return max(float(d.abs().max()) for d in diffs)


@torch.no_grad()
def _torchscript_parity(model: torch.nn.Module, path: Path, probes: list[torch.Tensor]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path))
    return max(float((loaded(x) - model(x)).abs().max()) for x in probes)
