"""The model artifact: one self-describing format for checkpoints (.pt) and exported students (.onnx).

Written atomically, loaded without executing code, checked on use. A checkpoint carries everything needed to run its model (architecture name and arguments, class
names, modalities and channels, input size, normalisation) so a node needs nothing else. Loading
uses ``torch.load(weights_only=True)``: a model path is a node parameter, so a hostile pickle must
fail with a clear error, never run.

The same description (every field but the weights and the training state) travels inside an
exported ``.onnx`` as ``metadata_props[ONNX_METADATA_KEY]`` JSON (:func:`describe`), so both file
kinds tell a :class:`~mmkd_ros.deploy.classifier.Classifier` the same things.

Fields (``make_checkpoint``): ``format``, ``version``, ``role`` (teacher | student), ``arch`` and
``arch_args`` (a registry name and its flat builder arguments), ``state_dict``, ``classes``,
``modalities`` (``["rgb"]`` or ``["rgb", "nir"]``), ``channels`` per modality, ``input_size``
``[h, w]``, ``normalization`` per modality (``mean``/``std`` per channel), ``config`` (the resolved
training config), ``metrics``, ``package_version``; ``train_state`` in a resumable ``last.pt``.
"""
from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a checkpoint is read or written: ONNX users never pay for it
    from torch import nn

from mmkd_ros import __version__
from mmkd_ros.core.atomic import atomic_path
from mmkd_ros.core.errors import CheckpointError
from mmkd_ros.core.provenance import code_version, numerics

FORMAT = "mmkd_ros/checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "role", "arch", "arch_args", "state_dict", "classes", "modalities",
                 "channels", "input_size", "normalization")
ONNX_METADATA_KEY = "mmkd_ros"  # metadata_props key holding the JSON description of an exported student
DESCRIPTION_FIELDS = ("role", "arch", "arch_args", "classes", "modalities", "channels", "input_size",
                      "normalization", "package_version")


def make_checkpoint(
    *, role: str, arch: str, arch_args: dict[str, Any], model: nn.Module, classes: Sequence[str],
    modalities: Sequence[str], channels: dict[str, int], input_size: Sequence[int],
    normalization: dict[str, dict[str, list[float]]], config: dict[str, Any], metrics: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict described in this module's docstring (tensors on the CPU: it loads anywhere)."""
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "role": role,
        "arch": arch,
        "arch_args": dict(arch_args),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "modalities": list(modalities),
        "channels": {m: int(channels[m]) for m in modalities},
        "input_size": [int(s) for s in input_size],
        "normalization": {m: normalization[m] for m in modalities},
        "config": config,
        "metrics": dict(metrics or {}),
        "package_version": __version__,
        "code": code_version(),  # which source tree made it (benchmarks reuse runs of the same code only)
        "numerics": numerics(),  # and under which thread count (it changes the result too)
    }
    if train_state is not None:
        checkpoint["train_state"] = train_state
    return checkpoint


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (:func:`~mmkd_ros.core.atomic.atomic_path`): never a torn file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        import torch

        torch.save(checkpoint, tmp)
    return path


def describe(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What a model file says about itself, without weights: the JSON stored in an exported ONNX."""
    return {k: checkpoint[k] for k in DESCRIPTION_FIELDS if k in checkpoint}


def _pickle_globals(path: Path) -> list[str] | None:
    """Callables a plain pickle file names (read with pickletools, nothing executed); None: not a pickle."""
    import pickletools

    found: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as stream:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - any parse failure means "not a pickle"
        return found or None
    return found


def _refusal(path: Path, message: str) -> str:
    """One line for a model file that is not plain weights: names the blocked call when there is one."""
    import re
    import zipfile

    blocked = re.search(r"GLOBAL ([\w.]+)", message)
    names = [blocked.group(1)] if blocked else None
    if names is None and not zipfile.is_zipfile(path):
        names = _pickle_globals(path)
        if names is None:
            return (f"cannot read model file {path}: it is neither a checkpoint nor a pickle (random or "
                    "damaged bytes); copy it again or re-run training")
    what = f"it would call {', '.join(dict.fromkeys(names))}" if names else "it holds objects beyond plain weights"
    return (f"refused to load {path}: {what} when unpickled, so it was not loaded; use a model file written "
            "by this project's training or training/export.py")


def load_checkpoint(path: str | Path, role: str | None = None) -> dict[str, Any]:
    """Load and check the format; ``role`` ("teacher" / "student") is enforced when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"model file {path} is empty (0 bytes: an interrupted copy or download?); "
                              "copy it again or re-run training")
    try:
        import torch

        with warnings.catch_warnings():  # torch warns twice about legacy pickles; the line below says it
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_refusal(path, str(exc))) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"cannot read model file {path} ({detail}): truncated or not a checkpoint; "
                              "copy it again or re-run training") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mmkd_ros checkpoint (no format={FORMAT!r} field)")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {checkpoint.get('version')}, this package reads {VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} lacks field(s) {', '.join(missing)}; it was not written by mmkd_ros")
    if role is not None and checkpoint["role"] != role:
        raise CheckpointError(f"{path} is a {checkpoint['role']} checkpoint, a {role} checkpoint is needed here")
    return checkpoint


def check_compatible(checkpoint: dict[str, Any], classes: Sequence[str], channels: dict[str, int],
                     source: str | Path = "checkpoint") -> None:
    """Refuse a checkpoint trained on other classes or other channel counts than the data at hand."""
    if list(checkpoint["classes"]) != list(classes):
        raise CheckpointError(
            f"{source} was trained on classes {checkpoint['classes']} but the dataset has {list(classes)}; "
            "train a teacher on this dataset"
        )
    for modality in checkpoint["modalities"]:
        have, want = int(checkpoint["channels"][modality]), int(channels[modality])
        if have != want:
            raise CheckpointError(
                f"{source} expects {have} {modality} channel(s) but the dataset has {want}; "
                "train a teacher on this dataset"
            )
