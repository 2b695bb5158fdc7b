"""Atomic file writes: readers (a node loading a model, a resumed run) never see half a file.

Every file mmkd_ros writes for others to read goes through :func:`atomic_path` (or its shortcut
:func:`write_atomic`): a temporary file in the target's folder, then ``os.replace`` onto the target,
which POSIX makes atomic within one file system. A failure (an exception, Ctrl-C) removes the
temporary file and leaves any earlier version of the target untouched. A process killed with
SIGKILL cannot clean up: its temporary file ``.<name>.<pid>-XXXX<suffix>`` names its pid, and
:func:`remove_stale_temps` (called when a run folder is reopened) removes those whose pid no
longer runs. :func:`check_writable` is the early check of an output path that every command
makes before its slow work.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmkd_ros.core.errors import OutputError


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it becomes ``path`` (mode 0644).

    ``suffix`` is the temporary file's ending: writers that choose a format by the file name
    (matplotlib, OpenCV) need the real one, e.g. ``".png"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=suffix,
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMP_NAME = re.compile(r"^\..+\.(\d+)-[^.]+(\.\w+)?$")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def leftovers_of_dead_writers(folder: str | Path, pattern: re.Pattern[str],
                              folders: bool = False) -> list[tuple[Path, int]]:
    """``(path, pid)`` of the entries of ``folder`` whose name ``pattern`` matches with the writer's
    pid as its first group, whose writer no longer runs (files, or ``folders``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        match = pattern.match(entry.name)
        if not match or not (entry.is_dir() if folders else entry.is_file()):
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not pid_alive(pid):
            found.append((entry, pid))
    return found


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder``; returns what it removed.

    Only files named as :func:`atomic_path` names them whose pid no longer runs (so a writer
    still running, here or in another process, keeps its file).
    """
    removed = []
    for entry, _ in leftovers_of_dead_writers(folder, _TEMP_NAME):
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def check_writable(path: str | Path, what: str = "--out", folder: bool = True) -> Path:
    """Refuse early, in one line, an output path that cannot be written; returns ``path``.

    Commands call it before any slow work, so a read-only ``--out`` is not found after an hour of
    training. It creates nothing that stays: the probe is a temporary file in the nearest
    existing folder of the output folder (``path``, or its parent for a file output,
    ``folder=False``), removed at once. A folder path that exists as a file, or lies below a
    file, is refused too, as is a file path that is a folder.
    """
    path = Path(path)
    if not folder and os.path.isdir(path):
        raise OutputError(f"{what} {path} is a folder; give a file name")
    base = path if folder else path.parent
    while not os.path.exists(base) and base != base.parent:
        base = base.parent
    if not os.path.isdir(base):
        raise OutputError(f"{what} {path}: {base} is a file, not a folder; choose another {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mmkd-write-check.", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{what} {path} is not writable ({reason} in {base}); choose a writable {what} "
                          "or change the folder's permissions") from None
    return path
