"""Export the student (never the teacher: it needs NIR, which the robot's student does not have).

ONNX (dynamo exporter, dynamic batch) with the checkpoint's description (classes, modalities,
channels, input size, normalisation; :func:`mmkd_ros.core.artifact.describe`) stored as ONNX
``metadata_props`` JSON, so :class:`mmkd_ros.deploy.classifier.Classifier` prepares pixels exactly
as in training. The export is checked against the PyTorch model on batches of 1 and 3 and the
largest absolute difference is reported. (No TorchScript: nothing here loads it, and the ``.pt``
checkpoint already runs under torch without executing code from the file.)
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmkd_ros.core.atomic import atomic_path
from mmkd_ros.core.artifact import ONNX_METADATA_KEY, describe, load_checkpoint
from mmkd_ros.core.errors import CheckpointError
from mmkd_ros.models import build_from_checkpoint

FORMATS = ("onnx",)


@dataclass
class ExportResult:
    """Where each format went and its parity against PyTorch (max |difference| of the logits)."""

    paths: dict[str, Path] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)


def export_student(checkpoint_path: str | Path, out_dir: str | Path, formats: tuple[str, ...] = FORMATS,
                   opset: int = 18, tolerance: float = 1e-4) -> ExportResult:
    """Export a student checkpoint to ``out_dir`` (``student.onnx``)."""
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise CheckpointError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint["role"] != "student" or checkpoint["modalities"] != ["rgb"]:
        raise CheckpointError(f"{checkpoint_path} is a {checkpoint['role']} checkpoint; only the RGB student is exported "
                              "(the teacher needs NIR and runs from its .pt checkpoint)")
    model = build_from_checkpoint(checkpoint, checkpoint_path).eval()
    metadata = describe(checkpoint)
    metadata["source_checkpoint"] = checkpoint_path.name
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = checkpoint["input_size"]
    channels = checkpoint["channels"]["rgb"]
    generator = torch.Generator().manual_seed(0)
    probes = [torch.randn(b, channels, h, w, generator=generator) for b in (1, 3)]  # normalised-scale inputs
    result = ExportResult()
    if "onnx" in formats:
        path = out_dir / "student.onnx"
        result.paths["onnx"] = path
        result.max_abs_diff["onnx"] = _export_onnx(model, probes, metadata, path, opset, tolerance)
    return result


def _export_onnx(model: torch.nn.Module, probes: list[torch.Tensor], metadata: dict[str, Any], path: Path,
                 opset: int, tolerance: float) -> float:
    """Write ``path`` only once the staged file agrees with PyTorch on ``probes``; returns max |diff|.

    A node under ``backend: auto`` runs the ``.onnx`` beside a checkpoint, so a file that failed the
    check must never be left where it would be picked up.
    """
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, atomic_path(path) as staged:
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(model, (probes[-1],), str(raw), dynamo=True, input_names=["rgb"],
                          output_names=["logits"], dynamic_shapes={"rgb": {0: batch}}, opset_version=opset,
                          verbose=False)
        proto = onnx.load(str(raw))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
        onnx.save(proto, str(staged))
        diff = _onnx_parity(model, staged, probes)
        if not diff <= tolerance:
            raise CheckpointError(f"onnx export disagrees with PyTorch: max |diff| {diff:.3g} > {tolerance:g}; "
                                  f"nothing was written to {path}")
    return diff


@torch.no_grad()
def _onnx_parity(model: torch.nn.Module, path: Path, probes: list[torch.Tensor]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    diffs = [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) - model(x) for x in probes]  # [B, K] each
    return max(float(d.abs().max()) for d in diffs)
