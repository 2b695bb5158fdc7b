"""Atomic writes when the writer is killed: SIGKILL leaves a temporary file naming its pid, the
target keeps its earlier version, and remove_stale_temps clears what dead writers left.

Real processes and signals, no mocks.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

from mmkd_ros.core.atomic import remove_stale_temps, write_atomic

WRITER = """
import sys, time
from mmkd_ros.core.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"new, half")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_sigkill_mid_write_keeps_the_target_and_the_next_run_clears_the_temp(tmp_path):
    target = write_atomic(tmp_path / "last.pt", b"old, whole")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                              text=True)
    assert writer.stdout.readline().strip() == "writing"
    temps = [p for p in tmp_path.iterdir() if p != target]
    assert [p.name.startswith(f".last.pt.{writer.pid}-") for p in temps] == [True]
    assert remove_stale_temps(tmp_path) == []  # its writer still runs: kept
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert target.read_bytes() == b"old, whole"
    assert remove_stale_temps(tmp_path) == temps
    assert sorted(tmp_path.iterdir()) == [target]


def test_only_files_named_by_atomic_path_are_touched(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    kept = [tmp_path / "notes.tmp", tmp_path / f".hidden.{dead.pid}", tmp_path / "report.md",
            tmp_path / f".last.pt.{os.getpid()}-mine.tmp"]
    for path in kept:
        path.write_text("x")
    (tmp_path / f".plot.png.{dead.pid}-a1b2.png").mkdir()  # a folder, not a writer's file
    stale = tmp_path / f".plot.png.{dead.pid}-c3d4.png"
    stale.write_text("x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert all(path.exists() for path in kept)
    assert remove_stale_temps(tmp_path / "absent") == []
