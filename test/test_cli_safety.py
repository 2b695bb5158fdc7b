"""Bad input to the offline commands, run as real processes: one `error:` line, exit 2, nothing left behind.

Every case runs the command a user types (training/*.py in a subprocess) on a tiny pair dataset,
and checks the one line it prints, its exit status, and that it wrote nothing: no run folder, no
partial eval/, no temporary file.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmkd_ros.core import artifact
from mmkd_ros.train import config as config_lib
from mmkd_ros.tools.pipeline import run_chain
from read_only import read_only
from tiny_pairs import write_tiny_pairs

REPO = Path(__file__).resolve().parents[1]
TINY = ["device=cpu", "data.input_size=[32,32]", "data.batch_size=8",
        "teacher.arch=teacher_resnet_tiny", "teacher.width=0.125", "teacher.epochs=1", "teacher.warmup_epochs=0",
        "student.arch=student_tiny", "student.width=0.5", "distill.epochs=1", "distill.warmup_epochs=0",
        "distill.disc_hidden=16", "distill.method=adv"]


def without(overrides: list[str], *keys: str) -> list[str]:
    return [o for o in overrides if o.partition("=")[0] not in keys]


def run(script: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(REPO / "training" / f"{script}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


def assert_one_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 and exactly one stderr line, `error: ...`, holding every needle; no output on stdout."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> dict[str, int]:
    """Every path below ``folder`` with its modification time (hidden temporary files included)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}




def edit_splits(root: Path, change) -> Path:
    """Rewrite the split column of ``root``'s manifest: ``change(row) -> new split``."""
    path = root / "manifest.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["split"] = change(row)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs") / "tiny", split=True)


@pytest.fixture(scope="module")
def chain_run(pairs, tmp_path_factory) -> Path:
    """A finished chain (teacher, student[adv], eval/) of one epoch each on the tiny pairs."""
    out = tmp_path_factory.mktemp("chain") / "run"
    run_chain(config_lib.load(None, TINY), out, data=pairs)
    return out


# --------------------------------------------------------------------------------------------
# 1. --resume


def test_resume_with_nothing_to_resume_is_refused(pairs, tmp_path):
    out = tmp_path / "run"
    assert_one_error(run("distill", "--data", pairs, "--out", out, "--resume", *TINY),
                     f"nothing to resume in {out}", "run without --resume")
    assert not out.exists()


def test_resume_refuses_an_override_the_run_did_not_use(pairs, chain_run, tmp_path):
    out = shutil.copytree(chain_run, tmp_path / "run")
    before = listing(out)
    line = assert_one_error(run("distill", "--data", pairs, "--out", out, "--resume", "distill.method=ce",
                                *without(TINY, "distill.method", "distill.disc_hidden")),
                            "distill.method='ce' (the run has 'adv')", "new --out", "drop them")
    assert "distill.disc_hidden" not in line  # only the keys that differ are named
    assert listing(out) == before


def test_resume_extends_epochs_says_so_and_reports_the_recorded_method(pairs, chain_run, tmp_path):
    out = shutil.copytree(chain_run, tmp_path / "run")
    # A checkpoint write killed with SIGKILL leaves its temporary file; a live writer's stays.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / "student" / f".last.pt.{dead.pid}-k1ll.tmp"
    live = out / "student" / f".last.pt.{os.getpid()}-l1ve.tmp"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    # distill.method is not given: the new command's default method must not name the resumed student
    done = run("distill", "--data", pairs, "--out", out, "--resume", "distill.epochs=2",
               *without(TINY, "distill.method", "distill.epochs"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"removed {stale}: a half-written file of a run that was killed" in done.stderr
    assert not stale.exists() and live.exists()
    assert f"note: --resume {out / 'student'}: distill.epochs 1 -> 2" in done.stderr
    assert artifact.load_checkpoint(out / "student" / "last.pt")["train_state"]["epoch"] == 2
    assert "| student[adv] | rgb |" in (out / "eval" / "report.md").read_text()


# --------------------------------------------------------------------------------------------
# 2. Config values


@pytest.mark.parametrize("override,message", [
    ("teacher.lr=.nan", "teacher.lr=nan is out of range; use a finite number > 0"),
    ("distill.lr=.inf", "distill.lr=inf is out of range; use a finite number > 0"),
    ("teacher.lr=-0.001", "teacher.lr=-0.001 is out of range; use a finite number > 0"),
    ("data.batch_size=0", "data.batch_size=0 is out of range; use an integer >= 1"),
    ("teacher.epochs=-1", "teacher.epochs=-1 is out of range; use an integer >= 1"),
    ("distill.epochs=0", "distill.epochs=0 is out of range; use an integer >= 1"),
])
def test_out_of_range_config_value_is_refused_before_anything_is_written(pairs, tmp_path, override, message):
    out = tmp_path / "run"
    key = override.partition("=")[0]
    assert_one_error(run("distill", "--data", pairs, "--out", out, *without(TINY, key), override), message)
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# 3. Read-only --out


@pytest.mark.parametrize("script", ["distill", "train_teacher", "evaluate"])
def test_read_only_out_is_refused_in_one_line(pairs, chain_run, tmp_path, script):
    with read_only(tmp_path / "locked") as locked:
        out = locked / "run"
        args = {"distill": ["--data", pairs, "--out", out, *TINY],
                "train_teacher": ["--data", pairs, "--out", out, *TINY],
                "evaluate": ["--data", pairs, "--out", out, chain_run / "student" / "student.pt"]}[script]
        assert_one_error(run(script, *args), f"--out {out} is not writable", "choose a writable --out")
        assert listing(locked) == {}


# --------------------------------------------------------------------------------------------
# 4. Bad input is found before the slow work


def test_missing_bag_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    assert_one_error(run("distill", "--bag", tmp_path / "no_bag", "--out", out, *TINY),
                     f"bag {tmp_path / 'no_bag'} does not exist", "--bag")
    assert not out.exists()


def test_missing_teacher_is_refused_before_extraction(tmp_path):
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")  # extraction would fail on it
    out = tmp_path / "run"
    assert_one_error(run("distill", "--bag", bag, "--teacher", tmp_path / "teacher.pt", "--out", out, *TINY),
                     f"teacher checkpoint {tmp_path / 'teacher.pt'} does not exist")
    assert not out.exists()


def test_diagnose_refuses_a_wrong_teacher_before_the_probes(pairs, chain_run):
    student = chain_run / "student" / "student.pt"
    line = assert_one_error(run("diagnose", "--data", pairs, "--teacher", student, "--steps", "1"), str(student))
    assert "teacher" in line


def test_diagnose_refuses_a_read_only_json_before_the_probes(pairs, tmp_path):
    with read_only(tmp_path / "locked") as locked:
        target = locked / "diag.json"
        assert_one_error(run("diagnose", "--data", pairs, "--json", target, "--steps", "1"),
                         f"--json {target} is not writable")
        assert listing(locked) == {}


# --------------------------------------------------------------------------------------------
# 5. --force, unreadable images


def test_resume_and_force_together_are_refused(pairs, tmp_path):
    out = tmp_path / "run"
    assert_one_error(run("distill", "--data", pairs, "--out", out, "--resume", "--force", *TINY),
                     "--resume", "--force", "give one of them")
    assert not out.exists()


def test_unreadable_image_is_one_line_without_opencv_warnings(tmp_path):
    data = write_tiny_pairs(tmp_path / "pairs", split=True)
    (data / "rgb" / "000000.png").unlink()  # a train pair's RGB image
    out = tmp_path / "run"
    assert_one_error(run("train_teacher", "--data", data, "--out", out, *TINY),
                     f"cannot read image {data / 'rgb' / '000000.png'}")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# 6. Validation split


def test_val_split_missing_a_class_is_one_warning_line(tmp_path):
    data = edit_splits(write_tiny_pairs(tmp_path / "pairs", split=True),
                       lambda row: "train" if row["split"] == "val" and row["label"] == "turf" else row["split"])
    out = tmp_path / "run"
    done = run("train_teacher", "--data", data, "--out", out, *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "val split" in warnings[0] and "no turf pairs" in warnings[0], done.stderr
    assert (out / "teacher.pt").is_file()


def test_empty_val_split_is_refused(tmp_path):
    data = edit_splits(write_tiny_pairs(tmp_path / "pairs", split=True),
                       lambda row: "train" if row["split"] == "val" else row["split"])
    out = tmp_path / "run"
    assert_one_error(run("distill", "--data", data, "--out", out, *TINY),
                     "the val split has no labelled pairs", "split column")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# 7. Config files, checkpoints that do not fit, command-line numbers


def test_yaml_error_names_file_line_and_column(pairs, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\ndata:\n  batch_size: [1\n  augment: true\n")
    out = tmp_path / "run"
    assert_one_error(run("train_teacher", "--data", pairs, "--out", out, "--config", bad),
                     f"config {bad}:4:10 is not valid YAML", "expected ',' or ']'")
    assert not out.exists()


def test_evaluate_refuses_a_checkpoint_that_does_not_fit_before_writing(chain_run, tmp_path):
    grey = write_tiny_pairs(tmp_path / "grey", rgb_channels=1, split=True)
    out = tmp_path / "eval"
    student = chain_run / "student" / "student.pt"
    assert_one_error(run("evaluate", "--data", grey, "--out", out, student), str(student), "rgb channel")
    assert not out.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.01])
def test_command_line_numbers_are_range_checked(value):
    """The validator for argparse floats such as training/extract.py's --max-dt (nan and inf parse)."""
    from mmkd_ros.core.errors import MmkdError, check_number

    with pytest.raises(MmkdError, match=r"^--max-dt \S+ is out of range; use a finite number >= 0 \(seconds\)$"):
        check_number("--max-dt", value, minimum=0, unit="seconds")
    assert check_number("--max-dt", 0.03, minimum=0, unit="seconds") == 0.03
