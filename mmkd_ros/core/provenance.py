"""Which code made a result: a digest of the source that shapes it, and the git commit it came from.

Checkpoints and benchmark records carry :func:`code_version`; a benchmark that reuses finished runs
compares the ``source`` digests (not the commit: a commit that only touches prose or results, as a
benchmark writing BENCHMARKS.md does, changes no result) and reruns on a mismatch.
"""
from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from mmkd_ros import __version__

SOURCE_ROOT = Path(__file__).resolve().parents[2]
#: What decides a trained model or a benchmark figure: the package, configs, entry points, benches, pins.
SOURCE_PATHS = ("mmkd_ros", "config", "training", "bench", "setup.py", "requirements.txt")
#: What benchmarks write under SOURCE_PATHS (their charts): outputs, not code; a study that draws
#: its chart must not make the next study's runs look as if other code had made them.
OUTPUT_PATHS = ("bench/figures",)
_PATHSPEC = (*SOURCE_PATHS, *(f":(exclude){p}" for p in OUTPUT_PATHS))


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True, check=True,
                          timeout=20).stdout


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """``{"source": digest of SOURCE_PATHS (less OUTPUT_PATHS) as on disk, "commit": HEAD or HEAD+dirty}``.

    Outside a git checkout (an installed package) both name the package version.
    """
    try:
        commit = _git("rev-parse", "HEAD").decode().strip()
        listed = _git("ls-tree", "-r", "HEAD", "--", *SOURCE_PATHS).splitlines(keepends=True)
        trees = b"".join(line for line in listed  # object ids of the committed source, outputs left out
                         if not line.split(b"\t", 1)[-1].startswith(tuple(f"{p}/".encode() for p in OUTPUT_PATHS)))
        changes = _git("diff", "HEAD", "--binary", "--", *_PATHSPEC)  # tracked edits, staged or not
        untracked = _git("ls-files", "--others", "--exclude-standard", "-z", "--", *_PATHSPEC).split(b"\0")
    except (OSError, subprocess.SubprocessError):
        return {"source": f"mmkd_ros {__version__}", "commit": f"mmkd_ros {__version__}"}
    digest = hashlib.sha256(trees + changes)
    for name in sorted(n for n in untracked if n):
        path = SOURCE_ROOT / name.decode(errors="replace")
        digest.update(name)
        if path.is_file() and path.stat().st_size < 1 << 20:
            digest.update(path.read_bytes())
    dirty = bool(changes) or any(untracked)
    return {"source": digest.hexdigest()[:16], "commit": f"{commit}+dirty" if dirty else commit}


def numerics() -> dict[str, int | None]:
    """``{"torch_threads": n}``: what besides code, config and inputs changes a CPU run's result.

    The thread count sets the order of torch's floating-point sums, so training takes another path
    (one demo seed's test accuracy moved by 0.08 between 1 and 2 threads): a run is reused only
    under the same count. ``None`` where torch is absent (the deploy path).
    """
    try:
        import torch
    except ImportError:
        return {"torch_threads": None}
    return {"torch_threads": torch.get_num_threads()}


def made_by() -> str:
    """``commit <12 hex>[+dirty], source <digest>``: how a benchmark's section names the code that wrote it."""
    version = code_version()
    dirty = "+dirty" if version["commit"].endswith("+dirty") else ""
    return f"commit {version['commit'][:12]}{dirty}, source {version['source']}"
