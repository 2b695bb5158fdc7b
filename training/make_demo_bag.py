#!/usr/bin/env python3
"""Write the synthetic dual-camera (RGB + NIR) demo bag: see mmkd_ros.sim.synthetic."""
import argparse
import sys
from pathlib import Path

from mmkd_ros.sim.synthetic import SyntheticConfig, write_bag
from mmkd_ros.core.errors import run_cli

DEFAULTS = SyntheticConfig()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, type=Path, help="new bag folder to create")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--duration", type=float, default=DEFAULTS.duration_s, help="seconds")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default=DEFAULTS.storage)
    parser.add_argument("--compressed-rgb", action="store_true",
                        help="RGB as CompressedImage jpeg on /camera/color/image_raw/compressed")
    parser.add_argument("--nir-encoding", choices=("mono8", "mono16"),
                        default=DEFAULTS.nir_encoding)
    parser.add_argument("--width", type=int, default=DEFAULTS.width)
    parser.add_argument("--height", type=int, default=DEFAULTS.height)
    args = parser.parse_args(argv)
    config = SyntheticConfig(seed=args.seed, duration_s=args.duration, storage=args.storage,
                             compressed_rgb=args.compressed_rgb, nir_encoding=args.nir_encoding,
                             width=args.width, height=args.height)
    summary = write_bag(args.out, config, progress=True)
    counts = ", ".join(f"{topic}: {n}" for topic, n in summary.counts.items())
    print(f"wrote {summary.path} ({len(summary.scenes)} scenes; {counts}; "
          f"{summary.dropped_nir} NIR frames dropped)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
