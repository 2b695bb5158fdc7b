"""Two-process DDP on CPU (gloo) through the real entry point under torchrun: identical replicas."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmkd_ros.core import artifact as ckpt_lib
from conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_keep_identical_weights(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "training" / "distill.py"), "--data", str(tiny_dataset), "--out", str(out),
               "--method", "adv", *TINY_OVERRIDES]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for path in (out / "teacher" / "teacher.pt", out / "student" / "student.pt"):
        metrics = ckpt_lib.load_checkpoint(path)["metrics"]
        assert metrics["world_size"] == 2, path
        # max |rank r - rank 0| over every parameter and buffer at the end of training
        assert metrics["replica_max_abs_diff"] == 0.0, path
    assert (out / "eval" / "report.md").is_file()
    assert "student checkpoint:" in done.stdout  # rank 0 reports once
    assert done.stdout.count("student checkpoint:") == 1
