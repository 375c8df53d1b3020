"""Non-finite loss, corrupt/missing checkpoints and data, real signals (one and two Ctrl-C)."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_TRAIN, _subprocess_env
from perceiver.rundir import RunDir


@pytest.mark.parametrize("sync_every", ["1", "25"])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run_train, sync_every):
    # sync_every 25 > the 8 steps of the run: the NaN of step 6 is found at the end of epoch 2, two steps late
    res = run_train(["--epochs", "3", "--save_metrics", "--sync_every", sync_every],
                    faults="nan_step:6")
    assert res.code == 1
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: non-finite loss at epoch 2 step 2")
    run = RunDir(res.run_dir)
    assert run.read_status()["state"] == "failed"
    rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]  # strictly valid JSON
    assert [r["epoch"] for r in rows] == [1]
    last = torch.load(run.last_checkpoint, weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 4
    assert not run.best_checkpoint.exists()  # no validation split: nothing is chosen, the model is the last epoch
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert len(run.read_steps()) == 5  # steps 1..5 are recorded; no checkpoint holds step 6 or later


@pytest.fixture
def unfinished_run(run_train):
    """A run stopped after epoch 1 of 2 (in-process: a SIGINT fault at the first step of epoch 2)."""
    res = run_train(["--epochs", "2"], faults="sigint_step:4")
    assert res.code == 130, res.err
    return RunDir(res.run_dir)


@pytest.mark.parametrize("damage,needle", [
    ("empty", "empty"), ("truncate", "corrupt"), ("random", "corrupt"), ("delete", "does not exist"),
    ("json", "not written by train.py"),
])
def test_damaged_checkpoint_is_one_line_error(unfinished_run, run_train, damage, needle):
    path = unfinished_run.last_checkpoint
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "random":
        path.write_bytes(bytes(range(256)) * 40)
    elif damage == "delete":
        path.unlink()
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    res = run_train(["--resume", str(unfinished_run.path)], tiny=False)
    assert res.code == 1
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0] and "last.pt" in lines[0]


def test_checkpoint_of_a_different_model_lists_the_differences(unfinished_run, run_train):
    res = run_train(["--resume", str(unfinished_run.path), "--latent_dim", "64", "--num_latents", "8",
                     "--num_heads", "4"], tiny=False)
    assert res.code == 1
    line = res.err.strip()
    assert "\n" not in line and "--latent_dim: 32 -> 64" in line and "--num_heads: 2 -> 4" in line
    assert "num_latents" not in line  # same value as saved: not a difference
    # the unchanged command plus --resume is accepted
    ok = run_train(["--resume", str(unfinished_run.path), "--epochs", "2"])
    assert ok.code == 0, ok.err


def test_corrupt_dataset_file_is_one_line_error(run_train, tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(b"\x80\x02garbage that is not a pickle")
    res = run_train(["--dataset", "cifar10", "--data_dir", str(tmp_path / "data"), "--epochs", "1"])
    assert res.code == 1
    line = res.err.strip()
    assert "\n" not in line and line.startswith("error:") and "cifar-10-batches-py" in line
    assert not (tmp_path / "logs" / "run").exists()  # nothing written for a run that never started


def test_missing_data_folder_without_network_is_one_line_error(run_train, tmp_path, monkeypatch):
    import perceiver.data.download as download

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(download, "download_and_extract_archive", offline)
    res = run_train(["--dataset", "modelnet40", "--data_dir", str(tmp_path / "nothing"), "--epochs", "1"])
    assert res.code == 1
    line = res.err.strip()
    assert "\n" not in line and line.startswith("error:") and "download" in line


def _start(tmp_path, extra):
    logs = tmp_path / "logs"
    argv = TINY_TRAIN + ["--logs_dir", str(logs), "--experiment_name", "sig", "--epochs", "500",
                         "--save_metrics"] + extra
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *argv], cwd=REPO, env=_subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = RunDir(logs / "sig")
    deadline = time.monotonic() + 120
    while not (run.steps_path.exists() and run.steps_path.stat().st_size) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    return proc, run


def test_real_sigint_stops_at_a_step_boundary_with_a_resume_command(tmp_path):
    proc, run = _start(tmp_path, [])
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert run.read_status()["state"] == "interrupted" and "Traceback" not in err
    assert f"--resume {run.path}" in out
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert state["global_step"] == len(run.read_steps())  # the checkpoint is exactly where training stopped


def test_second_ctrl_c_exits_at_once_without_saving(run_train):
    res = run_train(["--epochs", "3"], faults="double_sigint_step:6", subprocess_=True)
    assert res.code == 130 and "Traceback" not in res.err
    run = RunDir(res.run_dir)
    status = run.read_status()
    assert status["state"] == "interrupted" and "second Ctrl-C" in status["message"]
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)  # nothing saved mid-epoch 2
    assert f"--resume {run.path}" in res.out
