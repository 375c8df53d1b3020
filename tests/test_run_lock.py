"""run.lock: one train.py per run directory. The lock file is created atomically and names its holder; of several
processes starting at once exactly one gets it; a lock left by a dead process on this host is taken over with a
note naming it (also when its pid was reused or the machine rebooted); a live holder, or any holder on another
host, is refused with one line naming it. train.py holds the lock for the whole run and removes it on every way
out: the end, an error, the non-finite loss, SIGINT, SIGTERM, a second Ctrl-C."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, _subprocess_env, run_train_in
from perceiver.errors import RunDirError
from perceiver.rundir import RunDir, RunLock, read_lock
from perceiver.rundir.lock import _boot_id, _process_start

HOLD = """
import sys, time
from perceiver.rundir import RunLock
lock = RunLock(sys.argv[1])
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    lock.acquire()
except Exception as e:
    print("refused", e, flush=True)
    sys.exit(0)
print("holding", flush=True)
time.sleep(float(sys.argv[3]))
lock.release()
"""


def holder_process(run_dir, start, hold_s) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(start), str(hold_s)], cwd=REPO,
                            env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(run_dir, **fields):
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2024-01-01T00:00:00+0000",
              "boot_id": _boot_id(), "process_start": _process_start(os.getpid()), **fields}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.lock").write_text(json.dumps(holder) + "\n")
    return holder


def test_the_lock_file_names_its_holder_and_is_exclusive(tmp_path):
    run = tmp_path / "run"
    lock = RunLock(run)
    assert lock.acquire() is None
    holder = read_lock(run)
    assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
    assert time.strptime(holder["started"], "%Y-%m-%dT%H:%M:%S%z")
    with pytest.raises(RunDirError) as e:  # a second lock, even in the same process
        RunLock(run).acquire()
    assert str(e.value) == (f"{run} is in use by a running train.py (pid {os.getpid()}, started "
                            f"{holder['started']}); stop it first, or use another --experiment_name")
    lock.release()
    assert not (run / "run.lock").exists()
    lock.release()  # twice: nothing happens
    with RunLock(run):
        assert read_lock(run)["pid"] == os.getpid()
    assert not (run / "run.lock").exists()


def test_of_processes_starting_at_once_exactly_one_gets_the_lock(tmp_path):
    run = tmp_path / "run"
    start = time.time() + 3.0  # every process is up and waiting by then
    procs = [holder_process(run, start, 5) for _ in range(4)]  # held until every one has tried
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(o.split()[0] for o in outs) == ["holding", "refused", "refused", "refused"], outs
    winner = procs[[o.split()[0] for o in outs].index("holding")].pid
    assert all(f"in use by a running train.py (pid {winner}," in o for o in outs if o.startswith("refused"))
    assert not (run / "run.lock").exists()


@pytest.mark.parametrize("how", ["dead_pid", "pid_reused", "rebooted", "unreadable"])
def test_a_stale_lock_on_this_host_is_taken_over_with_a_note_naming_it(tmp_path, how):
    run = tmp_path / "run"
    if how == "unreadable":
        run.mkdir()
        (run / "run.lock").write_text("\x00\x00 not json")
        os.utime(run / "run.lock", (time.time() - 60, time.time() - 60))  # not one being written right now
    elif how == "dead_pid":
        old = write_lock(run, pid=dead_pid())
    elif how == "pid_reused":  # the pid now belongs to a live process that started later
        old = write_lock(run, pid=os.getppid(), process_start=(_process_start(os.getppid()) or 0) + 1)
    else:  # the machine restarted since: every pid of then is gone
        old = write_lock(run, boot_id="00000000-dead-beef-0000-000000000000")
    if how in ("pid_reused", "rebooted") and _boot_id() is None:
        pytest.skip("needs /proc (Linux) to tell a reused pid or a reboot")
    lock = RunLock(run)
    note = lock.acquire()
    if how == "unreadable":
        assert note == f"took over {run / 'run.lock'}: it was unreadable and no process held it"
    else:
        assert note == (f"took over {run / 'run.lock'}: it was left by pid {old['pid']}, started {old['started']}, "
                        f"which is no longer running on this host")
    assert read_lock(run)["pid"] == os.getpid()
    lock.release()
    assert not (run / "run.lock").exists()


def test_a_lock_of_another_host_is_refused_naming_host_and_pid(tmp_path):
    run = tmp_path / "run"
    write_lock(run, host="node17", pid=4242, boot_id="x")
    before = (run / "run.lock").read_text()
    with pytest.raises(RunDirError) as e:
        RunLock(run).acquire()
    assert str(e.value) == (f"{run} is in use by train.py on host node17 (pid 4242, started 2024-01-01T00:00:00+0000); "
                            f"stop it there, or, if that process is gone (its host crashed), delete "
                            f"{run / 'run.lock'} and start again")
    assert (run / "run.lock").read_text() == before


def test_a_live_holder_elsewhere_is_refused_then_its_stale_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    proc = holder_process(run, 0, 120)
    assert proc.stdout.readline().strip() == "holding"
    try:
        with pytest.raises(RunDirError, match=rf"in use by a running train.py \(pid {proc.pid}, started "):
            RunLock(run).acquire()
    finally:
        proc.kill()  # SIGKILL: the lock file stays behind
        proc.communicate(timeout=30)
    assert read_lock(run)["pid"] == proc.pid
    lock = RunLock(run)
    assert f"left by pid {proc.pid}," in lock.acquire()
    lock.release()


def test_a_lock_still_flocked_is_refused_even_when_its_pid_is_gone(tmp_path):
    """A process this host cannot see by pid (another pid namespace, a worker outliving its parent) still holds the
    file: its flock says so."""
    pytest.importorskip("fcntl")
    run = tmp_path / "run"
    write_lock(run, pid=dead_pid())
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run / "run.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match="another process holds its lock .* which has exited"):
            RunLock(run).acquire()
    finally:
        proc.kill()
        proc.communicate(timeout=30)


# ------------------------------------------------------------------------------------------------ train.py


EXITS = {  # way out -> (faults, exit code)
    "finished": ("", 0),
    "non_finite_loss": ("nan_step:3", 1),
    "sigint": ("sigint_step:3", 130),
    "sigterm": ("sigterm_step:3", 143),
    "second_ctrl_c": ("double_sigint_step:3", 130),
}


@pytest.mark.parametrize("way_out", [*EXITS, "error"])
def test_train_holds_the_lock_for_the_whole_run_and_removes_it_on_every_way_out(tmp_path, monkeypatch, way_out):
    import perceiver.epoch as epoch
    import perceiver.step as step

    logs = tmp_path / "logs"
    run = logs / "run"
    seen = []
    update = step.TrainStep.update

    def watching_update(self, lr):  # every optimizer step: who holds the run's lock
        seen.append((read_lock(run) or {}).get("pid"))
        return update(self, lr)

    monkeypatch.setattr(step.TrainStep, "update", watching_update)
    faults, code = EXITS.get(way_out, ("", 1))
    if way_out == "error":  # an unexpected failure at the end of epoch 1: a traceback, but no lock left behind
        def broken(*a, **k):
            raise RuntimeError("disk controller on fire")
        monkeypatch.setattr(epoch, "write_epoch", broken)
        with pytest.raises(RuntimeError, match="on fire"):
            run_train_in(logs, ["--epochs", "2"], faults=faults)
    else:
        res = run_train_in(logs, ["--epochs", "2"], faults=faults)
        assert res.code == code, res.err
    assert seen and seen == [os.getpid()] * len(seen)
    assert not (run / "run.lock").exists()
    assert not (run / "status.json").exists() or json.loads((run / "status.json").read_text())["state"] != "running"


def test_train_refuses_a_run_in_use_and_touches_nothing(tmp_path):
    logs = tmp_path / "logs"
    first = run_train_in(logs, ["--epochs", "2"], faults="sigint_step:6")  # stopped in epoch 2: resumable
    assert first.code == 130, first.err
    run = RunDir(first.run_dir)
    before = {p: p.stat().st_mtime_ns for p in run.path.rglob("*")}
    proc = holder_process(run.path, 0, 120)
    try:
        assert proc.stdout.readline().strip() == "holding"
        for argv in (["--epochs", "1", "--overwrite"], ["--resume", str(run.path)]):
            res = run_train_in(logs, argv)
            lines = res.err.strip().splitlines()
            assert res.code == 1 and len(lines) == 1, res.err
            assert lines[0].startswith(f"error: {run.path} is in use by a running train.py (pid {proc.pid}, started ")
        assert {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.name != "run.lock"} == before
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_train_refuses_another_hosts_lock_in_one_line(tmp_path):
    logs = tmp_path / "logs"
    write_lock(logs / "run", host="gpu-node-3", pid=777)
    res = run_train_in(logs, ["--epochs", "1"])
    assert res.code == 1 and len(res.err.strip().splitlines()) == 1
    assert "in use by train.py on host gpu-node-3 (pid 777, started" in res.err
    assert sorted(p.name for p in (logs / "run").iterdir()) == ["run.lock"]


def test_resume_after_sigkill_takes_the_stale_lock_over_naming_the_dead_process(tmp_path):
    logs = tmp_path / "logs"
    killed = run_train_in(logs, ["--epochs", "2"], subprocess_=True, faults="kill_epoch:1")
    assert killed.code == -signal.SIGKILL
    holder = read_lock(killed.run_dir)
    assert holder is not None and holder["host"] == socket.gethostname()
    res = run_train_in(logs, ["--resume", str(killed.run_dir)], tiny=False)
    assert res.code == 0, res.err
    assert (f"took over {killed.run_dir / 'run.lock'}: it was left by pid {holder['pid']}, started "
            f"{holder['started']}, which is no longer running on this host") in res.out + res.err
    assert not (killed.run_dir / "run.lock").exists()
