"""Run a trained model on camera frames: load a checkpoint (torch) or an exported student (.onnx).

Preprocessing is :func:`mmkd_ros.core.preprocess.prepare` with the input size and normalisation
stored in the model file (:mod:`mmkd_ros.core.artifact`): exactly what evaluation did during
training, so the model never sees differently prepared pixels in the field. The ROS nodes call only
this module for the ML. It imports the core and the models, nothing of training or the tools.

An ``.onnx`` model runs without torch: onnxruntime, the numpy twin of the preprocessing
(:func:`mmkd_ros.core.preprocess.prepare_array`) and a numpy softmax; torch (about 570 MB of a
node's memory) is imported only for a ``.pt`` checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmkd_ros.core import preprocess
from mmkd_ros.core.artifact import ONNX_METADATA_KEY
from mmkd_ros.core.errors import CheckpointError, ModelLoadError

BACKENDS = ("auto", "torch", "onnxruntime")


@dataclass
class Prediction:
    """The classification of one frame."""

    class_index: int
    label: str
    score: float  # softmax probability of the predicted class
    scores: list[float]  # softmax probabilities of all classes, in ``classes`` order


def onnx_providers(device: str, available: list[str]) -> tuple[list[Any], str]:
    """onnxruntime providers for ``device`` (auto | cpu | cuda | cuda:N) and where it really runs.

    TensorRT's provider first when installed, then CUDA's, then the CPU; ``auto`` takes a GPU
    provider when there is one. No torch is needed to decide.
    """
    device = str(device).strip().lower()
    if device != "auto" and device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
        raise ModelLoadError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    index = int(device.split(":")[1]) if device.startswith("cuda:") and device.split(":")[1].isdigit() else 0
    gpu = [(name, {"device_id": index}) for name in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
           if name in available]
    if device == "cpu" or not gpu:
        if device.startswith("cuda"):
            raise ModelLoadError(f"device {device!r} requested but this onnxruntime has no CUDA provider "
                                 "(pip install onnxruntime-gpu) or no GPU is visible; use 'cpu' or 'auto'")
        return ["CPUExecutionProvider"], "cpu"
    return [*gpu, "CPUExecutionProvider"], f"cuda:{index}" if device.startswith("cuda:") else "cuda"


class Classifier:
    """A loaded model plus its preprocessing; build it with :meth:`load`."""

    def __init__(self, run: Any, meta: dict[str, Any], device: str, backend: str) -> None:
        self._run = run  # callable: dict of [B,C,h,w] float32 tensors -> logits [B,K] (numpy or tensor)
        self.classes: list[str] = list(meta["classes"])
        self.modalities: list[str] = list(meta["modalities"])
        self.channels: dict[str, int] = {m: int(meta["channels"][m]) for m in self.modalities}
        self.input_size: tuple[int, int] = (int(meta["input_size"][0]), int(meta["input_size"][1]))
        self.normalization: dict[str, dict[str, list[float]]] = meta["normalization"]
        self.device = device
        self.backend = backend
        self.providers: list[str] = []  # onnxruntime execution providers in use (ONNX models)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", backend: str = "auto",
             cpu_threads: int = 0) -> "Classifier":
        """A ``.pt`` checkpoint (torch) or ``.onnx`` student (onnxruntime); failures are ModelLoadError."""
        path = Path(path)
        if backend not in BACKENDS:
            raise ModelLoadError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        is_onnx = path.suffix.lower() == ".onnx"
        if backend == "onnxruntime" and not is_onnx:
            raise ModelLoadError(f"backend onnxruntime needs an .onnx file, got {path.name} (export it with training/export.py)")
        if backend == "torch" and is_onnx:
            raise ModelLoadError(f"backend torch needs a .pt checkpoint, got {path.name}; use backend onnxruntime")
        if is_onnx:
            return cls._load_onnx(path, device, cpu_threads)
        from mmkd_ros.core.device import resolve_device  # deferred: torch, never loaded for ONNX

        try:
            resolved = resolve_device(device)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        return cls._load_torch(path, resolved)

    @classmethod
    def _load_torch(cls, path: Path, device: str) -> "Classifier":
        import torch

        from mmkd_ros.core.artifact import load_checkpoint  # deferred: torch, never loaded for ONNX
        from mmkd_ros.models import build_from_checkpoint  # deferred: torch, never loaded for ONNX

        try:
            checkpoint = load_checkpoint(path)
            model = build_from_checkpoint(checkpoint, path).to(device).eval()
        except ModelLoadError:
            raise
        except CheckpointError as exc:
            raise ModelLoadError(str(exc)) from None
        modalities = list(checkpoint["modalities"])

        @torch.inference_mode()
        def run(batch: dict[str, np.ndarray]) -> np.ndarray:
            tensors = [torch.from_numpy(batch[m]).to(device) for m in modalities]
            return model(*tensors).float().cpu().numpy()  # [B, K]

        return cls(run, checkpoint, device, "torch")

    @classmethod
    def _load_onnx(cls, path: Path, device: str, cpu_threads: int = 0) -> "Classifier":
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelLoadError(f"cannot load {path.name}: {exc.name} is not installed (pip install onnxruntime onnx)") from None
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        try:
            model_proto = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in model_proto.metadata_props}
            meta = json.loads(props[ONNX_METADATA_KEY])
        except KeyError:
            raise ModelLoadError(f"{path.name} has no '{ONNX_METADATA_KEY}' metadata; export it with training/export.py") from None
        except Exception as exc:  # onnx raises DecodeError and friends: any failure is "not a model"
            raise ModelLoadError(f"cannot read ONNX file {path.name}: {str(exc).splitlines()[0][:200]}") from None
        providers, device = onnx_providers(device, ort.get_available_providers())
        try:
            options = ort.SessionOptions()
            if cpu_threads > 0:  # as torch.set_num_threads for a checkpoint: small models gain little
                options.intra_op_num_threads = cpu_threads
                options.inter_op_num_threads = 1
            session = ort.InferenceSession(model_proto.SerializeToString(), sess_options=options,
                                           providers=providers)
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime cannot run {path.name}: {str(exc).splitlines()[0][:200]}") from None
        input_names = [i.name for i in session.get_inputs()]
        modalities = list(meta["modalities"])
        if len(input_names) != len(modalities):
            raise ModelLoadError(f"{path.name} has inputs {input_names} but its metadata lists {modalities}")

        def run(batch: dict[str, np.ndarray]) -> np.ndarray:
            feeds = {name: batch[m] for name, m in zip(input_names, modalities)}
            return session.run(None, feeds)[0]  # [B, K]

        classifier = cls(run, meta, device, "onnxruntime")
        classifier.providers = [p if isinstance(p, str) else p[0] for p in session.get_providers()]
        return classifier

    def preprocess(self, frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Arrays as ``msg_to_array`` gives them -> normalised float32 [C, h, w], per modality.

        torch's :func:`~mmkd_ros.core.preprocess.prepare` for a checkpoint (exactly as in
        training), its numpy twin for an ONNX model (no torch on the robot)."""
        out = {}
        for m in self.modalities:
            if m not in frame:
                raise ValueError(f"frame lacks the {m!r} image this model needs ({'+'.join(self.modalities)})")
            arr = frame[m]
            channels = 1 if arr.ndim == 2 else arr.shape[2]
            if channels != self.channels[m]:
                raise ValueError(f"{m} image has {channels} channel(s), the model was trained on {self.channels[m]}")
            norm = self.normalization[m]
            if self.backend == "torch":
                out[m] = preprocess.prepare(arr, self.input_size, norm["mean"], norm["std"]).numpy()
            else:
                out[m] = preprocess.prepare_array(arr, self.input_size, norm["mean"], norm["std"])
        return out

    def predict(self, images_by_modality: dict[str, np.ndarray]) -> Prediction:
        """Classify one frame (``{"rgb": HxWxC}`` or ``{"rgb": ..., "nir": ...}``)."""
        return self.predict_batch([images_by_modality])[0]

    def predict_batch(self, batch: list[dict[str, np.ndarray]]) -> list[Prediction]:
        """Classify several frames in one forward pass."""
        prepared = [self.preprocess(frame) for frame in batch]
        stacked = {m: np.stack([p[m] for p in prepared]) for m in self.modalities}  # [B, C, h, w]
        logits = np.asarray(self._run(stacked), dtype=np.float64)  # [B, K]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        out = []
        for row in probs:
            index = int(row.argmax())
            out.append(Prediction(index, self.classes[index], float(row[index]), [float(p) for p in row]))
        return out

    def warmup(self, n: int = 3) -> None:
        """Run ``n`` blank frames so the first real frame does not pay for lazy initialisation."""
        h, w = self.input_size
        frame = {m: np.zeros((h, w, self.channels[m]), dtype=np.uint8) for m in self.modalities}
        for _ in range(max(0, n)):
            self.predict(frame)
