"""Where a model runs: ``auto | cpu | cuda | cuda:N``, resolved once, the same way for training and nodes."""
from __future__ import annotations


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``/``cuda``/``cuda:N`` are checked.

    Raises ``ValueError`` with a message that says what is available.
    """
    import torch  # deferred: a bad device string is reported without paying for the torch import

    device = str(device).strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r} requested but no CUDA GPU is visible; use 'cpu' or 'auto'")
        if device.startswith("cuda:"):
            index = device.split(":", 1)[1]
            if not index.isdigit() or int(index) >= count:
                raise ValueError(f"device {device!r} does not exist; this machine has cuda:0..cuda:{count - 1}")
        return device
    raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
