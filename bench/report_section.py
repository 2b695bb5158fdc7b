"""Append or replace one ``## <title>`` section of BENCHMARKS.md (each bench owns its section), and its bar chart."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

from mmkd_ros.core.atomic import atomic_path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the script named in it; re-run it to refresh.\n"


def replace_section(title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Put ``## title`` + ``body`` in ``path``, replacing that section if it exists."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def bar_chart(values: dict[str, list[float]], title: str, ylabel: str, path: Path) -> None:
    """One bar per model (mean over seeds, std as error bar) in the given order; dashed lines at
    ``ce`` and ``teacher``. Blue: the teacher; grey: RGB baselines and ceilings; orange: labelled
    frames only; green: students."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(values)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 3.6), dpi=120)
    means = [statistics.mean(values[n]) for n in names]
    stds = [statistics.stdev(values[n]) if len(values[n]) > 1 else 0.0 for n in names]
    colours = ["#4c72b0" if n == "teacher" else "#999999" if n in ("ce", "twin") or n.startswith("ceiling") else
               "#dd8452" if "-labelled" in n else "#55a868" for n in names]
    ax.bar(range(len(names)), means, yerr=stds, color=colours, capsize=3)
    for line, colour in (("ce", "#999999"), ("teacher", "#4c72b0")):
        if line in values:
            ax.axhline(means[names.index(line)], color=colour, lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, low - 0.05 * high), high * 1.03)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
