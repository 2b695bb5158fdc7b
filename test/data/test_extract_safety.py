"""Extraction as a job among others: per-bag topics, parallel workers, one writer per --out,
SIGTERM, what killed runs left behind, and a cached dataset that lost a file.

Real bags written with rosbags, real processes and signals, real flock; no mocks.
"""
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mmkd_ros.core.errors import DatasetError
from mmkd_ros.data.extract import BagOptions, extract_bags, read_topic_map, split_bag_spec
from mmkd_ros.data.manifest import load_dataset_info, read_manifest
from mmkd_ros.data.ros_images import array_to_image_msg

from extract_cli import EXTRACT, REPO, assert_one_error_line, run_extract
from read_only import read_only

ROS2 = get_typestore(Stores.ROS2_JAZZY)
T0 = 1_700_000_000 * 10**9
MS = 10**6


def write_bag(path, rgb_topic="/cam/rgb", nir_topic="/cam/nir", count=6, shape=(24, 32),
              seed=0, labels=()):
    """``count`` RGB/NIR pairs 100 ms apart (NIR 4 ms later), noise pixels; labels on
    /scene/label as (ms, text)."""
    rng = np.random.default_rng(seed)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        rgb = writer.add_connection(rgb_topic, "sensor_msgs/msg/Image", typestore=ROS2)
        nir = writer.add_connection(nir_topic, "sensor_msgs/msg/Image", typestore=ROS2)
        messages = []
        if labels:
            conn = writer.add_connection("/scene/label", "std_msgs/msg/String", typestore=ROS2)
            string = ROS2.types["std_msgs/msg/String"]
            messages += [(T0 + ms * MS, conn, ROS2.serialize_cdr(string(data=text),
                                                                 "std_msgs/msg/String"))
                         for ms, text in labels]
        for k in range(count):
            stamp = T0 + k * 100 * MS
            for conn, channels, encoding, dt in ((rgb, 3, "rgb8", 0), (nir, 1, "mono8", 4 * MS)):
                pixels = rng.integers(0, 255, shape + (channels,), dtype=np.uint8)
                msg = array_to_image_msg(pixels, encoding, stamp + dt, "cam", ROS2)
                messages.append((stamp + dt + 2 * MS, conn,
                                 ROS2.serialize_cdr(msg, "sensor_msgs/msg/Image")))
        for log_ns, conn, raw in sorted(messages, key=lambda m: m[0]):
            writer.write(conn, log_ns, raw)
    return path


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir()
                  if ".tmp-" in p.name or ".old-" in p.name or p.suffix == ".lock")


def dataset_bytes(out):
    """Every file of a dataset, relative name -> bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


# --------------------------------------------------------------------------------------------
# Topics per bag


def test_bag_spec_splits_path_and_topics(tmp_path):
    assert split_bag_spec("bags/run1") == ("bags/run1", None)
    assert split_bag_spec("run1:/cam/rgb:/cam/nir") == ("run1", ("/cam/rgb", "/cam/nir"))
    assert split_bag_spec("a:b/run.bag:/x/image:/y/image") == ("a:b/run.bag",
                                                              ("/x/image", "/y/image"))
    odd = tmp_path / "odd:/a:/b"  # a path that exists stays a path
    odd.mkdir(parents=True)
    assert split_bag_spec(str(odd)) == (str(odd), None)


def test_cli_topics_per_bag_inline_and_from_a_map(tmp_path):
    a = write_bag(tmp_path / "bags" / "run_a", "/left/image", "/left/ir", count=3)
    b = write_bag(tmp_path / "bags" / "run_b", "/right/image", "/right/ir", count=4, seed=1)
    out = tmp_path / "inline"
    result = run_extract("--bag", f"{a}:/left/image:/left/ir", f"{b}:/right/image:/right/ir",
                         "--label", "x", "--out", out)
    assert result.returncode == 0, result.stderr
    info = load_dataset_info(out)
    assert info["counts"]["pairs"] == 7
    assert {r["group"].split(":")[0] for r in read_manifest(out)} == {"run_a", "run_b"}

    csv_map = tmp_path / "bags" / "topics.csv"
    csv_map.write_bytes("bag,rgb_topic,nir_topic\nrun_a,/left/image,/left/ir\n"
                        "run_b,/right/image,/right/ir\n".encode("utf-8-sig"))
    by_csv = tmp_path / "by_csv"
    result = run_extract("--bag", a, b, "--topic-map", csv_map, "--label", "x", "--out", by_csv)
    assert result.returncode == 0, result.stderr
    assert read_manifest(by_csv) == read_manifest(out)

    yaml_map = tmp_path / "topics.yaml"
    yaml_map.write_text("bags/run_a: {rgb_topic: /left/image, nir_topic: /left/ir}\n"
                        "run_b: {rgb_topic: /right/image, nir_topic: /right/ir}\n")
    assert read_topic_map(yaml_map) == ((str(a.resolve()), "/left/image", "/left/ir"),
                                        ("run_b", "/right/image", "/right/ir"))
    info = extract_bags([a, b], tmp_path / "by_yaml", BagOptions(
        label="x", topic_map=read_topic_map(yaml_map)), progress=False).info
    assert info["counts"]["pairs"] == 7 and info["options"]["topic_map"][1] == [
        "run_b", "/right/image", "/right/ir"]


def test_topic_map_mistakes_are_one_line(tmp_path):
    a = write_bag(tmp_path / "run_a", "/left/image", "/left/ir", count=2)
    out = tmp_path / "pairs"
    wrong = run_extract("--bag", a, "--topic-map", tmp_path / "nope.csv", "--out", out)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines() == [
        f"error: topic map {tmp_path / 'nope.csv'} does not exist: check --topic-map"]
    other = tmp_path / "map.csv"
    other.write_text("bag,rgb_topic,nir_topic\nrun_z,/left/image,/left/ir\n")
    result = run_extract("--bag", a, "--topic-map", other, "--label", "x", "--out", out)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "topic map entry 'run_z' names none of the bags (run_a)" in result.stderr
    # A bag without an entry still needs its topics: named with where they came from.
    default = run_extract("--bag", a, "--label", "x", "--out", out)
    assert default.returncode == 2 and "pass the right one with --rgb-topic" in default.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("name,rgb,nir\nrun_a,/a,/b\n")
    with pytest.raises(DatasetError, match="needs the header bag,rgb_topic,nir_topic"):
        read_topic_map(bad)
    same = tmp_path / "same.yaml"
    same.write_text("run_a: {rgb_topic: /a, nir_topic: /a}\n")
    with pytest.raises(DatasetError, match="rgb and nir topic are both /a"):
        BagOptions(topic_map=read_topic_map(same))
    assert not out.exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Parallel workers


def test_parallel_workers_write_the_same_dataset_as_one_process(tmp_path):
    labels = [(0, "a"), (250, "b")]
    bags = [write_bag(tmp_path / "bags" / f"run{k}", count=4 + k, seed=k, labels=labels)
            for k in range(3)]
    options = BagOptions(rgb_topic="/cam/rgb", nir_topic="/cam/nir", every=1)
    one = extract_bags(bags, tmp_path / "one", options, progress=False, workers=1)
    three = extract_bags(bags, tmp_path / "three", options, progress=False, workers=3)
    assert one.info == three.info
    assert dataset_bytes(one.path) == dataset_bytes(three.path)
    rows = read_manifest(one.path)
    assert [r["id"] for r in rows] == [f"{k:06d}" for k in range(15)]
    assert [r["group"].split(":")[0] for r in rows] == ["run0"] * 4 + ["run1"] * 5 + ["run2"] * 6
    assert leftovers(tmp_path) == []
    with pytest.raises(DatasetError, match="--workers must be >= 0"):
        extract_bags(bags, tmp_path / "x", options, progress=False, workers=-1)


def test_a_failing_bag_in_a_worker_is_one_line_and_leaves_nothing(tmp_path):
    good = write_bag(tmp_path / "good", count=3)
    other = write_bag(tmp_path / "other", "/elsewhere/rgb", "/cam/nir", count=3)
    out = tmp_path / "pairs"
    result = run_extract("--bag", good, other, "--rgb-topic", "/cam/rgb", "--nir-topic",
                         "/cam/nir", "--label", "x", "--workers", "2", "--out", out)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: topic /cam/rgb not found in bag "
                                                   f"{other.resolve()}"), result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# One extraction per --out

WORKER_ENDED_MID_BAG = """
import multiprocessing, sys, time
from mmkd_ros.data import extract

def worker(ready, setup):
    from tqdm import tqdm
    if setup:
        extract._worker_setup()
    bar = tqdm(total=10, disable=True)  # what a worker's bag holds while it is extracted
    ready.send(True)
    time.sleep(60)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=worker, args=(send, sys.argv[1] == "setup"), daemon=True)
    proc.start()
    receive.recv()
    proc.terminate()  # as _run_bag_tasks ends the other workers when one bag fails
    proc.join()
"""


@pytest.mark.parametrize("setup", ["setup", "none"])
def test_a_worker_ended_mid_bag_leaves_no_warning(tmp_path, setup):
    # The parent's error line must stay the only line: a worker's tqdm lock used to be a
    # multiprocessing semaphore, which the resource tracker reported as leaked when the worker
    # was ended. The "none" case shows the check can fail (the warning without the setup).
    script = tmp_path / "worker_ended.py"
    script.write_text(WORKER_ENDED_MID_BAG)
    result = subprocess.run([sys.executable, str(script), setup], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    if setup == "setup":
        assert result.stderr == "", result.stderr
    else:
        assert "leaked semaphore" in result.stderr


def test_second_extraction_into_the_same_out_fails_fast_naming_the_first(tmp_path):
    bag = write_bag(tmp_path / "bag", count=2)
    out = tmp_path / "pairs"
    lock = tmp_path / "pairs.lock"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
                               "print('locked', flush=True)\n"
                               "time.sleep(60)\n", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = run_extract("--bag", bag, "--rgb-topic", "/cam/rgb", "--nir-topic", "/cam/nir",
                             "--label", "x", "--out", out)
        assert time.monotonic() - started < 30
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"error: --out {out} is being extracted by another process (pid {holder.pid}, "
            f"lock {lock}): wait for it to finish, or choose another --out"]
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    again = run_extract("--bag", bag, "--rgb-topic", "/cam/rgb", "--nir-topic", "/cam/nir",
                        "--label", "x", "--out", out)
    assert again.returncode == 0, again.stderr
    assert not lock.exists() and leftovers(tmp_path) == []  # the lock file goes with its holder


def test_lock_is_held_during_the_extraction(tmp_path):
    """While an extraction runs, flock on <out>.lock is taken (checked from the outside)."""
    bag = write_bag(tmp_path / "bag", count=120, shape=(120, 160))
    out = tmp_path / "pairs"
    lock = tmp_path / "pairs.lock"
    proc = subprocess.Popen([sys.executable, str(EXTRACT), "--bag", str(bag), "--rgb-topic",
                             "/cam/rgb", "--nir-topic", "/cam/nir", "--label", "x", "--out",
                             str(out)], stderr=subprocess.PIPE, text=True, cwd=REPO)
    seen = False
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                fd = os.open(lock, os.O_RDONLY)
            except FileNotFoundError:
                time.sleep(0.01)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                seen = os.pread(fd, 32, 0).decode().strip() in ("", str(proc.pid))
                break
            finally:
                os.close(fd)
            time.sleep(0.01)
    finally:
        proc.communicate(timeout=120)
    assert proc.returncode == 0 and seen


# --------------------------------------------------------------------------------------------
# SIGTERM and what killed runs leave


def wait_for_temp(folder, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(".tmp-" in p.name for p in folder.iterdir()):
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_removes_the_unfinished_dataset_with_one_line(tmp_path, workers):
    # About a second of extraction on two cores; the signal comes 0.1 s after the temporary
    # folder appears.
    bags = [write_bag(tmp_path / f"bag{k}", count=300, shape=(120, 160), seed=k)
            for k in range(2)]
    out = tmp_path / "pairs"
    proc = subprocess.Popen([sys.executable, str(EXTRACT), "--bag", *map(str, bags),
                             "--rgb-topic", "/cam/rgb", "--nir-topic", "/cam/nir", "--label",
                             "x", "--workers", str(workers), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert wait_for_temp(tmp_path, proc), "the extraction ended before it could be stopped"
    time.sleep(0.1)  # into the extraction proper (workers starting, images being written)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [
        f"error: stopped by SIGTERM while extracting into {out}: the unfinished dataset was "
        "removed, nothing was written; run the command again to extract"]
    assert not out.exists() and leftovers(tmp_path) == []


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_folders_of_dead_runs_are_removed_with_one_line(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", count=2)
    pid = dead_pid()
    stale = tmp_path / f"pairs.tmp-{pid}-abc123"
    (stale / "rgb").mkdir(parents=True)
    (stale / "rgb" / "000000.png").write_bytes(b"half a file")
    old = tmp_path / f"pairs.old-{pid}-def456"
    old.mkdir()
    alive = tmp_path / f"pairs.tmp-{os.getppid()}-xyz789"  # a running process's: kept
    alive.mkdir()
    unrelated = tmp_path / f"other.tmp-{pid}-abc123"  # another --out's: not ours to judge
    unrelated.mkdir()
    extract_bags([bag], tmp_path / "pairs", BagOptions(rgb_topic="/cam/rgb",
                                                       nir_topic="/cam/nir", label="x"))
    err = capsys.readouterr().err
    removed = [line for line in err.splitlines() if line.startswith("removed ")]
    assert sorted(removed) == sorted(
        f"removed {p}: the unfinished dataset of an extraction that was stopped (pid {pid} no "
        "longer runs)" for p in (stale, old))
    assert not stale.exists() and not old.exists() and alive.exists() and unrelated.exists()


# --------------------------------------------------------------------------------------------
# A cached dataset is checked before it is reused


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_cached_dataset_is_extracted_again(tmp_path, capsys, damage):
    bag = write_bag(tmp_path / "bag", count=4)
    out = tmp_path / "pairs"
    options = BagOptions(rgb_topic="/cam/rgb", nir_topic="/cam/nir", label="x")
    first = extract_bags([bag], out, options)
    assert first.info["files"]["count"] == 8
    assert extract_bags([bag], out, options).reused
    before = dataset_bytes(out)
    victim = out / read_manifest(out)[2]["rgb"]
    if damage == "delete":
        victim.unlink()
        why = f"{victim.relative_to(out)} is missing"
    else:
        victim.write_bytes(victim.read_bytes()[:-10])
        why = "a file was truncated or replaced"
    capsys.readouterr()
    again = extract_bags([bag], out, options)
    err = capsys.readouterr().err
    assert not again.reused and "reusing" not in err
    line = next(x for x in err.splitlines() if x.startswith("cached dataset"))
    assert line.startswith(f"cached dataset {out} is damaged (") and why in line
    assert line.endswith("): extracting it again")
    assert dataset_bytes(out) == before and leftovers(tmp_path) == []
    assert json.loads((out / "dataset.json").read_text())["cache_key"] == first.info["cache_key"]


def test_help_documents_the_lock_sigterm_workers_and_topic_map():
    text = run_extract("--help").stdout
    for needle in ("--workers N", "--topic-map FILE", "PATH:RGB_TOPIC:NIR_TOPIC", "<out>.lock",
                   "SIGTERM", "exit 143", "pid no longer runs"):
        assert needle in text, needle
    assert re.search(r"one\s+line\s+saying\s+why", text)


# --------------------------------------------------------------------------------------------
# Numbers and output folders the command cannot use


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5"])
def test_bad_max_dt_is_one_line_before_any_work(tmp_path, value):
    bag = write_bag(tmp_path / "bag")
    out = tmp_path / "pairs"
    result = run_extract("--bag", bag, "--rgb-topic", "/cam/rgb", "--nir-topic", "/cam/nir",
                         "--label", "x", "--max-dt", value, "--out", out)
    assert_one_error_line(result, out, r"--max-dt .* out of range; use a finite number >= 0")
    assert not (tmp_path / "pairs.lock").exists()


def test_max_dt_nan_is_refused_by_the_library_too():
    with pytest.raises(DatasetError, match="--max-dt must be a finite number"):
        BagOptions(max_dt_s=float("nan"))


def test_read_only_out_folder_is_one_line(tmp_path):
    bag = write_bag(tmp_path / "bag")
    with read_only(tmp_path / "locked") as locked:
        out = locked / "pairs"
        result = run_extract("--bag", bag, "--rgb-topic", "/cam/rgb", "--nir-topic", "/cam/nir",
                             "--label", "x", "--out", out)
        assert_one_error_line(result, out, rf"{re.escape(str(out))}.*choose a writable --out")
        assert list(locked.iterdir()) == []
