"""--resume continues a run exactly: after SIGKILL at an epoch end, after SIGINT/SIGTERM mid-epoch."""
import json
import signal

import pytest
import torch

from conftest import run_train_in
from perceiver.rundir import TIMING_FIELDS
from perceiver.rundir import RunDir

EPOCHS = ["--epochs", "3", "--save_metrics", "--dropout", "0.1"]  # dropout on: the RNG state must resume too


def learning(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def weights(run_dir):
    return torch.load(RunDir(run_dir).last_checkpoint, weights_only=True)["model"]


def assert_same_run(a, b):
    ra, rb = RunDir(a), RunDir(b)
    assert learning(ra.read_metrics()) == learning(rb.read_metrics())
    assert ra.read_steps() == rb.read_steps()
    assert ra.read_per_class() == rb.read_per_class()
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert rb.read_status()["state"] == "finished"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 3-epoch run that every resumed run must reproduce."""
    res = run_train_in(tmp_path_factory.mktemp("ref"), EPOCHS, name="ref")
    assert res.code == 0, res.err
    assert len(RunDir(res.run_dir).read_metrics()) == 3
    return res.run_dir


def test_sigkill_after_epoch_then_resume_is_identical(reference, tmp_path):
    logs = tmp_path / "logs"
    killed = run_train_in(logs, EPOCHS, subprocess_=True, faults="kill_epoch:1")
    assert killed.code == -signal.SIGKILL
    assert RunDir(killed.run_dir).read_status()["state"] == "running"  # a hard kill leaves no final status
    resumed = run_train_in(logs, ["--resume", str(killed.run_dir)], tiny=False)
    assert resumed.code == 0, resumed.err
    assert_same_run(reference, killed.run_dir)


def test_a_resumed_run_keeps_its_own_threads(tmp_path):
    """--threads is a run's flag like any other: resuming without it must not fall back to the process default
    (1 here: the test environment sets OMP_NUM_THREADS=1)."""
    logs = tmp_path / "logs"
    killed = run_train_in(logs, ["--epochs", "2", "--threads", "2"], subprocess_=True, faults="kill_epoch:1")
    assert killed.code == -signal.SIGKILL
    resumed = run_train_in(logs, ["--resume", str(killed.run_dir)], tiny=False, subprocess_=True)
    assert resumed.code == 0, resumed.err
    headers = [line for line in (killed.run_dir / "train.log").read_text().splitlines() if " model: " in line]
    assert len(headers) == 2 and all("device cpu x 1 (2 threads);" in line for line in headers), headers


@pytest.mark.slow
def test_sigkill_resume_with_two_workers(reference, tmp_path):
    logs = tmp_path / "logs"
    args = EPOCHS + ["--num_workers", "2"]
    killed = run_train_in(logs, args, subprocess_=True, faults="kill_epoch:2")
    assert killed.code == -signal.SIGKILL
    resumed = run_train_in(logs, ["--resume", str(killed.run_dir)], tiny=False, subprocess_=True)
    assert resumed.code == 0, resumed.err
    assert_same_run(reference, killed.run_dir)  # workers change nothing: shapes2d has no random augmentation


@pytest.mark.parametrize("sig,code", [("sigint", 130), ("sigterm", 143)])
def test_signal_mid_epoch_saves_position_and_resumes_identically(reference, tmp_path, sig, code):
    logs = tmp_path / "logs"
    # 4 steps per epoch: step 6 is the middle of epoch 2
    stopped = run_train_in(logs, EPOCHS, subprocess_=True, faults=f"{sig}_step:6")
    assert stopped.code == code, stopped.err
    run = RunDir(stopped.run_dir)
    status = run.read_status()
    assert status["state"] == "interrupted" and "epoch 2 after batch 2/4" in status["message"]
    assert f"python train.py --resume {stopped.run_dir}" in stopped.out
    assert str(run.last_checkpoint) in stopped.out
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (1, 2, 6)
    assert len(run.read_metrics()) == 1 and len(run.read_steps()) == 6
    assert "Traceback" not in stopped.err
    resumed = run_train_in(logs, ["--resume", str(stopped.run_dir)], tiny=False)
    assert resumed.code == 0, resumed.err
    assert_same_run(reference, stopped.run_dir)


def test_resume_drops_rows_written_after_the_checkpoint(reference, tmp_path):
    """A crash between the metrics row and the checkpoint of an epoch: the row is dropped and the epoch redone."""
    logs = tmp_path / "logs"
    killed = run_train_in(logs, EPOCHS, subprocess_=True, faults="kill_epoch:2")
    assert killed.code == -signal.SIGKILL
    run = RunDir(killed.run_dir)
    rows = (run.metrics_path.read_text().splitlines())
    # fake a torn state: epoch 3's row half written and an extra step row past the checkpoint
    run.metrics_path.write_text("\n".join(rows) + "\n" + json.dumps({"epoch": 3, "test_acc": 0.0}) + "\n")
    with run.steps_path.open("a") as f:
        f.write(json.dumps({"epoch": 3, "step": 9, "loss": 1.0, "lr": 0.1}) + "\n" + '{"epoch": 3, "st')
    resumed = run_train_in(logs, ["--resume", str(killed.run_dir)], tiny=False)
    assert resumed.code == 0, resumed.err
    assert_same_run(reference, killed.run_dir)


def test_resume_of_a_finished_run_does_nothing(reference, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}
    res = run_train_in(reference.parent, ["--resume", str(reference)], name=reference.name, tiny=False)
    assert res.code == 0 and "already finished" in res.out
    assert before == {p.name: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}


def test_a_checkpoint_saved_before_a_model_flag_existed_resumes_with_its_own_model(tmp_path):
    """Flags added since a checkpoint was written must not take today's defaults where the model depends on them."""
    old_model = ["--mlp_ratio", "2", "--no_input_norm", "--init", "trunc_fan_in", "--no_final_norm"]
    stopped = run_train_in(tmp_path, ["--epochs", "2"] + old_model, faults="sigint_step:3")
    assert stopped.code == 130, stopped.err
    run = RunDir(stopped.run_dir)
    state = torch.load(run.last_checkpoint, weights_only=True)
    for name in ("mlp_ratio", "input_norm", "init", "no_final_norm"):  # as if train.py had no such flags then
        del state["args"][name]
    torch.save(state, run.last_checkpoint)
    resumed = run_train_in(tmp_path, ["--resume", str(run.path)], tiny=False)
    assert resumed.code == 0, resumed.err
    args = run.read_config()["args"]
    assert (args["mlp_ratio"], args["input_norm"], args["init"], args["no_final_norm"]) == (2, False, "trunc_fan_in",
                                                                                          True)
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
