"""The extraction command as users run it, and the shape of its refusals (shared by the bag tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRACT = REPO / "training" / "extract.py"


def run_extract(*args):
    """``training/extract.py ARGS`` in a subprocess, from the repository root."""
    return subprocess.run([sys.executable, str(EXTRACT), *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def assert_one_error_line(result, out, pattern):
    """Exit 2, exactly one ``error:`` line matching ``pattern``, and no output or temp folder left."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not Path(out).exists()
    assert not [p for p in Path(out).parent.iterdir() if ".tmp-" in p.name]
