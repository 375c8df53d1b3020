"""torchrun with 2 CPU processes (gloo): metrics over both ranks, rank-0-only files, exact resume after SIGKILL."""
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_TRAIN, _subprocess_env
from perceiver.engine import TIMING_FIELDS
from perceiver.rundir import RunDir

pytestmark = pytest.mark.slow


def torchrun(logs, name, args, env=None, tiny=True):
    argv = (TINY_TRAIN if tiny else []) + ["--logs_dir", str(logs), "--experiment_name", name] + args
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "train.py"), *argv]
    return subprocess.run(cmd, cwd=REPO, env=_subprocess_env(env), capture_output=True, text=True, timeout=300)


def learning(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def test_two_process_run_and_resume_after_sigkill(tmp_path):
    logs = tmp_path / "logs"
    args = ["--epochs", "2", "--save_metrics", "--dropout", "0.1", "--save_attention_maps", "--num_probe_samples", "2"]
    ref = torchrun(logs, "ref", args)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = RunDir(logs / "ref")
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["train_samples"] == 64 and rows[0]["test_samples"] == 32  # all-reduced over the 2 ranks
    assert len(run.read_steps()) == 4  # 64 samples / (16 x 2 ranks) = 2 steps per epoch, logged once
    assert run.read_config()["world_size"] == 2 and run.attention_epochs() == [1, 2]
    assert run.log_path.read_text().count("epoch 1/2 |") == 1  # rank 0 writes the log alone

    killed = torchrun(logs, "killed", args, env={"PERCEIVER_FAULT": "kill_epoch:1"})
    assert killed.returncode != 0
    resumed = torchrun(logs, "killed", ["--resume", str(logs / "killed")], tiny=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    other = RunDir(logs / "killed")
    assert learning(other.read_metrics()) == learning(rows)
    assert other.read_steps() == run.read_steps()
    wa = torch.load(run.last_checkpoint, weights_only=True)["model"]
    wb = torch.load(other.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
