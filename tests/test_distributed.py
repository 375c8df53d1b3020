"""torchrun with 2 CPU processes (gloo): metrics over both ranks, rank-0-only files, and exact resumes after
SIGKILL, after SIGTERM/SIGINT sent to the launcher, and after a signal that reaches one rank only."""
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_TRAIN, _subprocess_env, run_train_in, train_command
from perceiver.rundir import TIMING_FIELDS, RunDir

pytestmark = pytest.mark.slow

#: 128 images, 8 per rank per step: 8 steps per epoch; the ranks meet every 2 steps
ARGS = ["--epochs", "2", "--save_metrics", "--dropout", "0.1", "--shapes_train_size", "128", "--batch_size", "8",
        "--sync_every", "2"]


def torchrun_cmd(logs, name, args, faults=None, tiny=True):
    argv = (TINY_TRAIN if tiny else []) + ["--logs_dir", str(logs), "--experiment_name", name] + args
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *train_command(faults), *argv]


def torchrun(logs, name, args, faults=None, tiny=True):
    return subprocess.run(torchrun_cmd(logs, name, args, faults, tiny), cwd=REPO, env=_subprocess_env(),
                          capture_output=True, text=True, timeout=300)


def learning(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def assert_same_run(a: RunDir, b: RunDir):
    assert learning(b.read_metrics()) == learning(a.read_metrics())
    assert b.read_steps() == a.read_steps()
    wa = torch.load(a.last_checkpoint, weights_only=True)["model"]
    wb = torch.load(b.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert b.read_status()["state"] == "finished"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ddp")
    ref = torchrun(logs, "ref", ARGS + ["--save_attention_maps", "--num_probe_samples", "2"])
    assert ref.returncode == 0, ref.stderr[-3000:]
    return RunDir(logs / "ref")


def test_two_process_run_writes_once_and_reduces_over_ranks(reference):
    rows = reference.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["train_samples"] == 128 and rows[0]["test_samples"] == 32  # all-reduced over the 2 ranks
    assert len(reference.read_steps()) == 16  # 128 samples / (8 x 2 ranks) = 8 steps per epoch, logged once
    assert reference.read_config()["world_size"] == 2 and reference.attention_epochs() == [1, 2]
    assert reference.log_path.read_text().count("epoch 1/2 |") == 1  # rank 0 writes the log alone


def test_resume_after_sigkill_is_identical(reference, tmp_path):
    killed = torchrun(tmp_path, "killed", ARGS, faults="kill_epoch:1")
    assert killed.returncode != 0
    resumed = torchrun(tmp_path, "killed", ["--resume", str(tmp_path / "killed")], tiny=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, RunDir(tmp_path / "killed"))


# Each signal is tested once on each path (SIGINT to one rank, SIGTERM to the launcher): the handling is the same.
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130)])
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(reference, tmp_path, sig, code):
    name = signal.Signals(sig).name.lower()
    stopped = torchrun(tmp_path, "sig", ARGS, faults=f"{name}_step:11,rank:1")  # rank 1 only, mid-epoch 2
    assert stopped.returncode != 0
    run = RunDir(tmp_path / "sig")
    status = run.read_status()
    assert status["state"] == "interrupted" and "epoch 2 after batch" in status["message"], status
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 4 and state["global_step"] == 12  # agreed at step 12
    assert f"exit code {code}" in stopped.stderr or f"exitcode  : {code}" in stopped.stderr or \
        f"exitcode: {code}" in stopped.stderr.replace(" ", "")
    assert f"torchrun --nproc_per_node 2 train.py --resume {run.path}" in stopped.stdout
    assert "KeyError" not in stopped.stderr
    resumed = torchrun(tmp_path, "sig", ["--resume", str(run.path)], tiny=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, run)


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_a_signal_to_the_launcher_saves_and_resumes_exactly(reference, tmp_path, sig):
    args = ARGS + ["--shapes_train_size", "128"]
    proc = subprocess.Popen(torchrun_cmd(tmp_path, "pre", args), cwd=REPO, env=_subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = RunDir(tmp_path / "pre")
    deadline = time.monotonic() + 240
    while len(run.read_steps()) < 4 and time.monotonic() < deadline:  # training has started
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)  # what SLURM or Kubernetes sends to the job's launcher before preempting it
    out, err = proc.communicate(timeout=120)
    status = run.read_status()
    if status["state"] == "finished":
        pytest.skip("the run finished before the signal arrived (machine too fast for this test's timing)")
    assert status["state"] == "interrupted", (status, err[-2000:])
    assert "resume with: torchrun --nproc_per_node 2 train.py --resume" in out
    resumed = torchrun(tmp_path, "pre", ["--resume", str(run.path)], tiny=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, run)


def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    stopped = torchrun(tmp_path, "half", ARGS, faults="kill_epoch:1")
    assert stopped.returncode != 0
    res = run_train_in(tmp_path, ["--resume", str(tmp_path / "half")], name="half", tiny=False)
    assert res.code == 1
    line = res.err.strip()
    assert "\n" not in line and "trained by 2 process(es) and this launch has 1" in line
    assert "torchrun --nproc_per_node 2 train.py --resume" in line


def test_a_finished_run_frees_its_process_group_before_exit(tmp_path):
    """DDP holds the process group and sits in reference cycles: left to the garbage collector at interpreter exit,
    gloo can abort a finished run (SIGABRT, torchrun exit code 1; seen in CI). Every rank frees it in main."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "exit_run.py"), *TINY_TRAIN, "--logs_dir", str(tmp_path), "--experiment_name", "x",
           "--epochs", "1"]
    res = subprocess.run(cmd, cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (res.stdout + res.stderr).count("DistributedDataParallel models alive after main: 0") == 2, res.stderr


def test_under_max_time_ranks_whose_clocks_differ_apply_the_same_rates(reference, tmp_path):
    """The rate under --max_time follows the training clock; the ranks agree on one at their sync points, so a
    rank whose clock runs ahead (tests/skewed_clock_run.py) moves the rates of both ranks alike, and the replicas
    stay identical."""
    out = tmp_path / "out"
    out.mkdir()
    argv = TINY_TRAIN + ["--logs_dir", str(tmp_path / "logs"), "--experiment_name", "skew", *ARGS, "--max_time", "600"]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(REPO / "tests" / "skewed_clock_run.py"), str(out), *argv], cwd=REPO,
                       env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["rates"]) == 16 and r0["rates"] == r1["rates"]
    assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in r0["model"])
    run = RunDir(tmp_path / "logs" / "skew")
    assert [s["lr"] for s in run.read_steps()] == r0["rates"]
    saved = torch.load(run.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(saved[k], r1["model"][k]) for k in saved)  # rank 0's copy is rank 1's too
    # the skewed clock did move the rate: from the first sync point on, it is not the step-only schedule's
    by_step = [s["lr"] for s in reference.read_steps()]
    assert r0["rates"][:2] == by_step[:2] and r0["rates"][2:] != by_step[2:]


def test_two_processes_compiled_learn_what_the_eager_ranks_learn(tmp_path):
    """--compile under torchrun: the replica's model is compiled in pieces (DDP syncs between them), and the run
    matches the eager one (no dropout: compiled code draws other random numbers; 128 images fill every batch, so
    no partial batch is dropped)."""
    args = [a for a in ARGS if a not in ("--dropout", "0.1")]
    runs = {}
    for name, extra in (("compiled", ["--compile"]), ("eager", [])):
        res = torchrun(tmp_path, name, args + extra)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[name] = RunDir(tmp_path / name).read_steps()
    assert len(runs["compiled"]) == len(runs["eager"]) == 16
    for a, b in zip(runs["compiled"], runs["eager"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
