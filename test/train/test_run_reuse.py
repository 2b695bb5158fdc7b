"""Benchmarks reuse a finished run only when it was made by the same code, config and inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import bench_realdata
from mmkd_ros.core.errors import DatasetError
from mmkd_ros.train import config as config_lib
from mmkd_ros.train.loop import RUN_RECORD, claim_run, finish_run, run_identity


def test_claim_run_states(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = run_identity({"seed": 0, "size": (32, 32)}, {"dataset": "k1"})
    assert claim_run(run, first) == "fresh"
    assert json.loads((run / RUN_RECORD).read_text()) == {"identity": first, "finished": False}
    assert claim_run(run, first) == "fresh"  # claimed, but nothing was trained: no last.pt
    (run / "last.pt").write_bytes(b"x")
    assert claim_run(run, first) == "resume"  # interrupted run of the same identity
    finish_run(run)
    assert claim_run(run, first) == "reuse"
    assert claim_run(run, first, reuse=False) == "fresh"
    assert not (run / "last.pt").exists()  # a fresh claim empties the folder
    finish_run(run)
    (run / "student.pt").write_bytes(b"old")
    for other in (run_identity({"seed": 1, "size": (32, 32)}, {"dataset": "k1"}),  # other config
                  run_identity({"seed": 0, "size": (32, 32)}, {"dataset": "k2"})):  # other data
        assert claim_run(run, other) == "fresh"
        assert not (run / "student.pt").exists()
        finish_run(run)
    record = json.loads((run / RUN_RECORD).read_text())
    record["identity"]["code"] = "another source tree"
    (run / RUN_RECORD).write_text(json.dumps(record))
    assert claim_run(run, other) == "fresh"  # made by other code
    (run / RUN_RECORD).write_text("{torn")
    assert claim_run(run, other) == "fresh"


def test_realdata_jobs_reuse_only_matching_runs(tiny_dataset: Path, tiny_config: config_lib.Config,
                                                 tmp_path: Path) -> None:
    tree = config_lib.to_dict(tiny_config)
    out = tmp_path / "teacher"
    teacher = bench_realdata.train_teacher_job(tree, str(tiny_dataset), str(out))
    made = Path(teacher).stat().st_mtime_ns
    assert bench_realdata.train_teacher_job(tree, str(tiny_dataset), str(out)) == teacher
    assert Path(teacher).stat().st_mtime_ns == made  # same code, config, data: reused
    student_tree = config_lib.to_dict(config_lib.with_method(tiny_config, "ce"))
    student = bench_realdata.distill_job(student_tree, str(tiny_dataset), teacher, str(tmp_path / "ce"))
    made_student = Path(student).stat().st_mtime_ns
    assert bench_realdata.distill_job(student_tree, str(tiny_dataset), teacher,
                                      str(tmp_path / "ce")) == student
    assert Path(student).stat().st_mtime_ns == made_student
    # another config trains again; so does a student whose teacher file changed
    other = config_lib.to_dict(config_lib.replace(tiny_config, seed=tiny_config.seed + 1))
    assert bench_realdata.train_teacher_job(other, str(tiny_dataset), str(out)) == teacher
    assert Path(teacher).stat().st_mtime_ns != made
    bench_realdata.distill_job(student_tree, str(tiny_dataset), teacher, str(tmp_path / "ce"))
    assert Path(student).stat().st_mtime_ns != made_student


def test_realdata_table_has_bag_intervals() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 120).tolist()
    groups = [f"bag{i // 20}" for i in range(120)]
    right = list(labels)
    noisy = [t if rng.random() < 0.6 else int(rng.integers(0, 3)) for t in labels]

    def model(pred):
        true = np.array(labels)
        from mmkd_ros.core.metrics import weighted_macro_f1

        return {"predictions": pred, "accuracy": float(np.mean(np.array(pred) == true)),
                "macro_f1": weighted_macro_f1(np.array(pred), true, 3), "params": 10, "flops": 10,
                "latency_ms": 1.0}

    reports = [{"classes": ["a", "b", "c"], "samples": {"labels": labels, "groups": groups},
                "models": {"teacher": model(right), "ce": model(noisy), "kd": model(noisy)}} for _ in range(2)]
    table, summary = bench_realdata.summarise(reports, ["teacher", "ce", "kd"])
    assert "interval over the 6 val bags" in table.splitlines()[0]
    assert summary["kd"]["gap_twin_macro_f1"] == []  # no twin in this study
    halfway = [t if i % 2 else n for i, (t, n) in enumerate(zip(right, noisy))]
    with_twin = [{**r, "models": {**r["models"], "twin": model(right), "kd": model(halfway)}} for r in reports]
    _, twin_summary = bench_realdata.summarise(with_twin, ["teacher", "twin", "ce", "kd"])
    ce_f1, kd_f1 = with_twin[0]["models"]["ce"]["macro_f1"], with_twin[0]["models"]["kd"]["macro_f1"]
    assert twin_summary["kd"]["gap_twin_macro_f1"] == pytest.approx([(kd_f1 - ce_f1) / (1.0 - ce_f1)] * 2)
    assert summary["kd"]["bag_interval"]["minus_ce"] == (0.0, 0.0)  # same predictions as ce
    low, high = summary["teacher"]["bag_interval"]["minus_ce"]
    assert 0 < low <= high  # perfect vs noisy: separated on every draw of bags
    assert summary["teacher"]["bag_interval"]["macro_f1"] == (1.0, 1.0)
    reports[1]["samples"] = {"labels": labels, "groups": list(reversed(groups))}
    with pytest.raises(DatasetError, match="different validation frames"):
        bench_realdata.summarise(reports, ["teacher", "ce", "kd"])


def test_realdata_variant_keeps_shared_overrides_on_every_run() -> None:
    size, temperature = "data.input_size=[64, 64]", "distill.kd_temperature=3.0"
    base, students = bench_realdata.study_configs([temperature], [size], variant=True)
    assert base.data.input_size == students.data.input_size == (64, 64)  # teacher, ce, twin at the study's size
    assert base.distill.kd_temperature == 2.0 and students.distill.kd_temperature == 3.0  # the variant's own
    base, students = bench_realdata.study_configs([temperature], [], variant=False)
    assert base.distill.kd_temperature == students.distill.kd_temperature == 3.0
    assert base.data.input_size == (32, 32)  # the study's budget where nothing overrides it


def test_a_run_made_under_another_thread_count_is_made_again(tmp_path: Path) -> None:
    """The thread count changes the order of floating-point sums, so the trained model: part of the identity."""
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    here = run_identity({"seed": 0}, {"dataset": "k1"})
    assert here["numerics"] == {"torch_threads": threads}
    assert claim_run(run, here) == "fresh"
    finish_run(run)
    torch.set_num_threads(threads + 1)
    try:
        other = run_identity({"seed": 0}, {"dataset": "k1"})
    finally:
        torch.set_num_threads(threads)
    assert other["numerics"] == {"torch_threads": threads + 1}
    assert claim_run(run, other) == "fresh"
    finish_run(run)
    assert claim_run(run, here) == "fresh"  # and back: the record names the count it was made under
