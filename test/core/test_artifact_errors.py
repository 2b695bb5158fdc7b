"""Model files that are not what they claim: one line naming the file and the fix, nothing executed."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmkd_ros.core.artifact import load_checkpoint
from mmkd_ros.core.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]


class Hostile:
    """Unpickling it would run a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    marker = tmp_path / "EXECUTED"
    out = {"marker": marker}
    torch.save({"weights": Hostile(marker)}, tmp_path / "hostile.pt")  # torch's zip format
    with open(tmp_path / "hostile_raw.pt", "wb") as f:  # a bare pickle
        pickle.dump(Hostile(marker), f)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(os.urandom(2048))
    good = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for name in ("hostile", "hostile_raw", "empty", "random", "truncated", "weights"):
        out[name] = tmp_path / f"{name}.pt"
    return out


@pytest.mark.parametrize("name, expected", [
    ("hostile", "it would call posix.system"),
    ("hostile_raw", "it would call posix.system"),
    ("empty", "is empty (0 bytes"),
    ("random", "cannot read model file"),  # random bytes fail in several ways, all named so
    ("truncated", "truncated or not a checkpoint"),
    ("weights", "is not an mmkd_ros checkpoint"),
])
def test_refused_in_one_line_without_running_anything(files, name, expected, recwarn) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(files[name])
    message = str(info.value)
    assert expected in message and str(files[name]) in message
    assert "\n" not in message and "weights_only=False" not in message
    assert not files["marker"].exists(), "the hostile pickle ran"
    assert not [w for w in recwarn if "torch" in str(w.filename)], [str(w.message) for w in recwarn]


def test_export_cli_on_an_empty_file_prints_one_error_line(files, tmp_path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "training" / "export.py"), str(files["empty"]),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "empty" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
