"""The benchmark tables report validation (which chooses settings) beside test, paired by seed."""
from __future__ import annotations

import pytest

from bench import bench_demo, bench_distill


def _model(acc: float, f1: float | None = None) -> dict:
    return {"accuracy": acc, "macro_f1": acc if f1 is None else f1, "params": 1e6, "flops": 2e6}


def test_bench_distill_table_reports_validation_gap_per_seed() -> None:
    reports = [  # (teacher, ce, kd) on test and on validation, two seeds
        {"models": {"teacher": _model(0.9), "ce": _model(0.5), "kd": _model(0.7)},
         "validation": {"teacher": _model(0.8), "ce": _model(0.6), "kd": _model(0.65)}},
        {"models": {"teacher": _model(0.9), "ce": _model(0.7), "kd": _model(0.6)},
         "validation": {"teacher": _model(0.9), "ce": _model(0.5), "kd": _model(0.8)}},
    ]
    table, summary = bench_distill.summarise(reports, ("ce", "kd"))
    kd = summary["models"]["kd"]
    assert kd["gap_closed"] == pytest.approx([0.5, -0.5])
    assert kd["val_accuracy"] == [0.65, 0.8]
    assert kd["val_gap_closed"] == pytest.approx([0.25, 0.75])
    assert summary["models"]["ce"]["val_gap_closed"] == []
    row = next(line for line in table.splitlines() if line.startswith("| kd |"))
    assert "| 0.725 ± 0.106 | 0.500 ± 0.354 |" in row  # validation accuracy, gap closed on validation
    # A seed where the teacher does not lead ce has no share.
    reports[1]["validation"]["teacher"] = _model(0.5)
    assert bench_distill.summarise(reports, ("ce", "kd"))[1]["models"]["kd"]["val_gap_closed"] == pytest.approx([0.25])


def test_bench_distill_table_measures_the_gap_to_the_rgb_ceiling() -> None:
    reports = [  # (teacher, twin, ce, kd, RGB ceiling) on test and on validation, two seeds
        {"models": {"teacher": _model(1.0), "twin": _model(0.6), "ce": _model(0.5), "kd": _model(0.6),
                    "ceiling_ce": _model(0.65), "ceiling_twin": _model(0.7)},
         "validation": {"teacher": _model(1.0), "twin": _model(0.7), "ce": _model(0.6), "kd": _model(0.7),
                        "ceiling_ce": _model(0.75), "ceiling_twin": _model(0.8)}},
        {"models": {"teacher": _model(1.0), "twin": _model(0.8), "ce": _model(0.8), "kd": _model(0.7),
                    "ceiling_ce": _model(0.7), "ceiling_twin": _model(0.75)},  # ceiling below ce: no share
         "validation": {"teacher": _model(1.0), "twin": _model(0.8), "ce": _model(0.7), "kd": _model(0.75),
                        "ceiling_ce": _model(0.8), "ceiling_twin": _model(0.9)}},
    ]
    table, summary = bench_distill.summarise(reports, ("ce", "kd"))
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [
        "| teacher", "| twin", "| ce", "| kd", "| ceiling_ce", "| ceiling_twin"]
    kd = summary["models"]["kd"]
    assert kd["gap_closed_ceiling"] == pytest.approx([0.5])  # (0.6 - 0.5) / (0.7 - 0.5); seed 1 left out
    assert kd["val_gap_closed_ceiling"] == pytest.approx([0.5, 0.25])
    assert summary["models"]["twin"]["gap_closed_ceiling"] == pytest.approx([0.5])
    assert summary["models"]["ceiling_twin"]["gap_closed_ceiling"] == []
    assert summary["models"]["teacher"]["gap_closed_ceiling"] == []
    assert summary["models"]["ceiling_twin"]["gap_closed"] == pytest.approx([0.4, -0.25])


def test_bench_demo_table_pairs_validation_by_seed() -> None:
    def cell(seed: int, test: tuple, val: tuple) -> dict:
        names = ("teacher", "baseline", "student[kd]")
        return {"metrics": {n: _model(a) for n, a in zip(names, test)},
                "validation": {n: _model(a) for n, a in zip(names, val)},
                "gap_closed": {"accuracy": 0.0, "macro_f1": 0.0}, "baseline_epochs": 4, "test_scenes": 20,
                "config": {"distill": {"epochs": 2}}, "drives": {"seed": seed}}
    cells = [cell(0, (0.9, 0.6, 0.7), (0.95, 0.7, 0.75)), cell(1, (0.9, 0.6, 0.55), (0.95, 0.7, 0.68))]
    rows, verdict = bench_demo.share_table(cells)
    assert verdict["val_difference"].startswith("0.015 ± 0.049 (1 of 2 seeds above)")
    assert rows[2].startswith("| student `kd` | RGB | 0.625 ± 0.106 |") and rows[2].endswith("| 0.715 ± 0.049 |")


def test_bar_chart_draws_every_model_into_one_png(tmp_path) -> None:
    from bench.report_section import bar_chart

    path = tmp_path / "chart.png"
    bar_chart({"teacher": [1.0, 1.0], "ce": [0.6, 0.7], "kd": [0.8, 0.7], "ceiling_twin": [0.9]}, "title",
              "validation accuracy", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no temp file left beside it
