#!/usr/bin/env python3
"""Extraction speed: training/extract.py's work vs a plain rosbags read-and-decode of the same bag.

Same bag, same run, median of ``--repeats``. The baseline reads every RGB and NIR message with
``rosbags.highlevel.AnyReader``, deserializes it and converts it with rosbags-image's
``message_to_cvimage`` (no pairing, nothing written): the floor any extractor pays. Extraction
adds content hashing (cache key), a stamp pass, pairing, PNG encoding and the atomic write.

``--fleet``: a fleet's bags. Several bags extracted with ``--workers`` 1, 2 and one per core
(one bag per worker process, parts merged in bag order), beside the plain read-and-decode of
the same bags in one process and in as many processes; every worker count must write the same
dataset (its manifest.csv compared byte for byte), else the bench fails.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import cv2
from rosbags.highlevel import AnyReader
from rosbags.image import message_to_cvimage

from mmkd_ros.core.provenance import code_version
from mmkd_ros.data.bag import bag_files
from mmkd_ros.data.extract import BagOptions, extract_bags, sha256_files
from mmkd_ros.sim.synthetic import NIR_TOPIC, RGB_TOPIC, SyntheticConfig, write_bag
from report_section import replace_section

TITLE = "Bag extraction speed"
FLEET_TITLE = "Parallel extraction of a fleet's bags"
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]  # as images.write_png


def plain_read_decode(bag: Path, encode_png: bool = False) -> int:
    """Read, deserialize and decode every RGB/NIR image (optionally PNG-encode it in memory with
    the extractor's settings, one thread); returns the number of frames."""
    count = 0
    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic in (RGB_TOPIC, NIR_TOPIC)]
        for conn, _, raw in reader.messages(connections=connections):
            image = message_to_cvimage(reader.deserialize(raw, conn.msgtype))
            if encode_png:
                cv2.imencode(".png", image, PNG_PARAMS)
            count += 1
    return count


def timed_runs(fn, repeats: int) -> tuple[list[float], object]:
    """Every run's seconds and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = timed_runs(fn, repeats)
    return statistics.median(times), result


def read_decode_bags(bags: list[Path], processes: int) -> int:
    """The baseline over several bags: plain read + decode, one bag per process."""
    if processes == 1:
        return sum(plain_read_decode(bag) for bag in bags)
    with ProcessPoolExecutor(processes) as pool:
        return sum(pool.map(plain_read_decode, bags))


def fleet(args: argparse.Namespace) -> str:
    """Extraction of ``args.bags`` bags with 1, 2 and all-core workers; the section's body."""
    cores = os.cpu_count() or 1
    counts = sorted({1, min(2, cores), cores})
    config = dict(duration_s=args.duration, width=args.width, height=args.height)
    bags = []
    for seed in range(args.bags):
        bag = args.workdir / f"fleet_bag_{seed}_{args.duration:g}s_{args.width}x{args.height}"
        if not bag.exists():
            write_bag(bag, SyntheticConfig(seed=seed, **config))
        bags.append(bag)
    size_mb = sum(f.stat().st_size for bag in bags for f in bag_files(bag)) / 1e6
    rows, manifests, pairs, frames, spans = [], {}, 0, 0, {}
    for n in counts:
        read_s, frames = timed(lambda: read_decode_bags(bags, n), args.repeats)
        out = args.workdir / f"fleet_pairs_{n}"
        runs, result = timed_runs(lambda: extract_bags(bags, out, BagOptions(), force=True,
                                                       progress=False, workers=n), args.repeats)
        extract_s = statistics.median(runs)
        spans[n] = (min(runs), max(runs))
        pairs = result.info["counts"]["pairs"]
        manifests[n] = hashlib.sha256((out / "manifest.csv").read_bytes()).hexdigest()
        rows.append((n, read_s, extract_s))
    if len(set(manifests.values())) != 1:
        raise SystemExit(f"error: the worker counts wrote different datasets: {manifests}")
    base = next(extract_s for n, _, extract_s in rows if n == 1)
    lines = [
        f"Command: `.venv/bin/python bench/bench_extract.py --fleet --bags {args.bags} "
        f"--duration {args.duration:g} --width {args.width} --height {args.height}`",
        "",
        f"Code: {code_version()['commit']}. Bags: {args.bags} synthetic bags (seeds 0-"
        f"{args.bags - 1}), {args.duration:g} s each, {args.width}x{args.height} rgb8 + mono8 "
        f"NIR at 15 Hz, mcap, {size_mb:.0f} MB in all; {frames} frames, {pairs} pairs. Machine: "
        f"{cores} CPU cores (shared with other work). Median of {args.repeats} runs per row, "
        "all rows in one run. Every worker count wrote the same manifest.csv (sha256 "
        f"{manifests[1][:12]}).",
        "",
        "| workers (processes) | plain read + decode (s) | frames/s | extract_bags (s) | "
        "pairs/s | speed-up vs 1 worker | extract_bags range of the runs (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {n}{' (all cores)' if n == cores else ''} | {read_s:.2f} | "
              f"{frames / read_s:.0f} | {extract_s:.2f} | {pairs / extract_s:.0f} | "
              f"{base / extract_s:.2f}x | {spans[n][0]:.2f}-{spans[n][1]:.2f} |"
              for n, read_s, extract_s in rows]
    best = min(rows, key=lambda r: r[2])
    threads = min(4, cores)  # PNG writer threads of one extracting process (data/extract.py)
    # A difference counts only when the runs' ranges do not overlap (machines are noisy).
    separable = best[0] != 1 and spans[best[0]][1] < spans[1][0]
    if separable:
        verdict = (f"With {best[0]} workers extraction runs at {pairs / best[2]:.0f} pairs/s "
                   f"against {pairs / base:.0f} with one process ({base / best[2]:.2f}x; every "
                   "run faster than every one-process run).")
    else:
        verdict = (f"On this {cores}-core machine more worker processes do not separably pay "
                   "(the runs' ranges overlap): one process already encodes PNGs in "
                   f"{threads} writer threads (OpenCV releases the GIL), so it keeps the cores "
                   "busy and further processes share them.")
    lines += [
        "",
        verdict + " Workers are forked from a fork server that imported the extractor once, so "
        "a worker starts in milliseconds. The plain read + decode columns are the floor: the same "
        "bags read and decoded with the same number of processes and nothing written. Not "
        "measured here: a machine with more cores than one process's writer threads use (up to "
        "4), where --workers is meant to pay.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="bag length, seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--fleet", action="store_true",
                        help="several bags with 1, 2 and all-core --workers (own section)")
    parser.add_argument("--bags", type=int, default=6, help="--fleet: number of bags")
    parser.add_argument("--width", type=int, default=640, help="--fleet: frame width")
    parser.add_argument("--height", type=int, default=480, help="--fleet: frame height")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.fleet:
        body = fleet(args)
        print(f"\n## {FLEET_TITLE}\n\n{body}")
        if not args.no_write:
            replace_section(FLEET_TITLE, body)
        return
    bag = args.workdir / f"extract_bag_{args.duration:g}s"
    if not bag.exists():
        write_bag(bag, SyntheticConfig(seed=0, duration_s=args.duration))
    out = args.workdir / "extract_pairs"
    size_mb = sum(f.stat().st_size for f in bag_files(bag)) / 1e6

    baseline_s, frames = timed(lambda: plain_read_decode(bag), args.repeats)
    encode_s, _ = timed(lambda: plain_read_decode(bag, encode_png=True), args.repeats)
    hash_s, _ = timed(lambda: sha256_files(bag_files(bag), bag), args.repeats)
    extract_s, result = timed(lambda: extract_bags([bag], out, BagOptions(), force=True,
                                                   progress=False), args.repeats)
    cached_s, _ = timed(lambda: extract_bags([bag], out, BagOptions(), progress=False),
                        args.repeats)
    pairs = result.info["counts"]["pairs"]
    written = 2 * pairs  # frames decoded and written as PNG

    rows = [
        ("plain rosbags read + deserialize + message_to_cvimage (baseline)", baseline_s,
         f"{frames / baseline_s:.0f}", f"{frames} frames read"),
        ("plain read + decode + PNG encode in memory, one thread (the unavoidable work)",
         encode_s, f"{frames / encode_s:.0f}", f"{frames} frames encoded"),
        ("sha256 of the bag bytes (cache key)", hash_s, "", f"{size_mb / hash_s:.0f} MB/s"),
        ("extract_bags, forced rebuild (hash, stamps, pairing, decode, PNG, atomic write)",
         extract_s, f"{written / extract_s:.0f}",
         f"{pairs} pairs = {written} frames written"),
        ("extract_bags, cache hit (hash + compare)", cached_s, "", "dataset reused"),
    ]
    lines = [
        f"Command: `.venv/bin/python bench/bench_extract.py"
        f"{'' if args.duration == 20.0 else f' --duration {args.duration:g}'}`",
        "",
        f"Bag: synthetic, {args.duration:g} s, 640x480 rgb8 at 15 Hz + mono8 NIR at 15 Hz, mcap, "
        f"{size_mb:.0f} MB. Median of {args.repeats} runs, same process, 2 CPU cores shared "
        "with other work (absolute numbers vary with load; compare rows of one run).",
        "",
        "| step | median time (s) | frames/s | note |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {seconds:.2f} | {rate} | {note} |"
              for name, seconds, rate, note in rows]
    lines += [
        "",
        "Reading and decoding raw images costs almost nothing (rosbags-image returns a view of the "
        "message buffer); writing the dataset is PNG encoding. Extraction writes "
        f"{written / extract_s:.0f} frames/s against {frames / encode_s:.0f} frames/s for the bare "
        "read + decode + encode loop: threaded encoding and file writes, the second (stamp) pass, "
        "pairing and hashing included.",
    ]
    body = "\n".join(lines)
    print(f"\n## {TITLE}\n\n{body}")
    if not args.no_write:
        replace_section(TITLE, body)


if __name__ == "__main__":
    main()
