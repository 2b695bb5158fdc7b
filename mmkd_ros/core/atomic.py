"""Atomic file writes: readers (a node loading a model, a resumed run) never see half a file.

Every file mmkd_ros writes for others to read goes through :func:`atomic_path` (or its shortcut
:func:`write_atomic`): a temporary file in the target's folder, then ``os.replace`` onto the target,
which POSIX makes atomic within one file system. A failure (an exception, Ctrl-C) removes the
temporary file and leaves any earlier version of the target untouched.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it becomes ``path`` (mode 0644).

    ``suffix`` is the temporary file's ending: writers that choose a format by the file name
    (matplotlib, OpenCV) need the real one, e.g. ``".png"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    return path
