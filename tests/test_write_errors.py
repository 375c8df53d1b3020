"""A write that fails (disk full, no permission) keeps the previous files intact, leaves no partial
file, stops the run with one line naming the file (exit 1), and --resume carries on once the disk is fixed.

The faults are injected by monkeypatching the operating-system calls the writes go through (os.fdopen'd file
writes, os.write, os.fsync, os.replace, os.mkdir), matched by the path of the file being written, so the library
runs its real code path; /dev/full gives a real ENOSPC where a test can write to it.
"""
import errno
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import run_train_in
from perceiver.checkpoint import load_checkpoint, save_checkpoint
from perceiver.rundir import TIMING_FIELDS
from perceiver.errors import WriteError
from perceiver.rundir import RunDir, append_jsonl, atomic_write_json, read_jsonl, save_attention
from perceiver.tracking import close_logging, setup_logging
from perceiver.viz.synthetic import make_snapshot

ENOSPC = "No space left on device (ENOSPC)"
ARGS = ["--epochs", "3", "--save_attention_maps", "--attention_save_interval", "1", "--save_metrics"]


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _is(path, target: str) -> bool:
    """``path`` is ``target`` itself or one of atomic_write's temporary files for it (.NAME.XXXX.tmp)."""
    name = Path(path).name
    return name == target or (name.startswith(f".{target}.") and name.endswith(".tmp"))


class DiskFull:
    """Fail the writes of one file with ENOSPC at one stage, after letting ``skip`` of them succeed.

    stage: "write" (the data, after part of it reached the file), "fsync" or "replace" (the final rename).
    With ``spread=True`` every later write into the same folder tree fails too, like a disk that filled up.
    """

    def __init__(self, monkeypatch, target: str, stage: str = "write", skip: int = 0, spread_under=None):
        self.target, self.stage, self.skip, self.spread_under = target, stage, skip, spread_under
        self.hits = 0
        self.full = False
        self.partial: set[int] = set()
        real_fdopen, real_write, real_fsync, real_replace = os.fdopen, os.write, os.fsync, os.replace
        fault = self

        class PartialFile:
            """A file object that takes 64 bytes, then reports a full disk."""

            def __init__(self, f):
                self._f, self._room = f, 64

            def write(self, data):
                if len(data) > self._room:
                    self._f.write(data[: self._room])
                    self._room = 0
                    raise fault.error()
                self._room -= len(data)
                return self._f.write(data)

            def __getattr__(self, name):
                return getattr(self._f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._f.__exit__(*exc)

        def fdopen(fd, *a, **kw):
            f = real_fdopen(fd, *a, **kw)
            return PartialFile(f) if fault.fires("write", _fd_path(fd)) else f

        def write(fd, data):
            if fd in fault.partial:  # the call after a short write: now the disk is full
                fault.partial.discard(fd)
                raise fault.error()
            if fault.fires("write", _fd_path(fd)):
                fault.partial.add(fd)
                return real_write(fd, bytes(data)[: max(1, len(data) // 2)])  # part of the line lands
            return real_write(fd, data)

        def fsync(fd):
            if fault.fires("fsync", _fd_path(fd)):
                raise fault.error()
            return real_fsync(fd)

        def replace(src, dst, *a, **kw):
            if fault.fires("replace", str(dst)):
                raise fault.error()
            return real_replace(src, dst, *a, **kw)

        monkeypatch.setattr(os, "fdopen", fdopen)
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    @staticmethod
    def error():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def matches(self, path: str) -> bool:
        return _is(path, self.target)

    def fires(self, stage: str, path: str) -> bool:
        if self.full and self.spread_under and str(path).startswith(str(self.spread_under)):
            return True
        if stage != self.stage or not self.matches(path):
            return False
        self.hits += 1
        if self.hits <= self.skip:
            return False
        self.full = True
        return True


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------ the writers


def _checkpoint(path, value):
    save_checkpoint(path, {"w": torch.full((2000,), float(value))})


def _attention(path, value):
    save_attention(path, make_snapshot("image", int(value), 3))


def _json(path, value):
    atomic_write_json(path, {"value": value, "pad": "x" * 500})


def _read(path, kind):
    if kind == "checkpoint":
        return float(torch.load(path, weights_only=True)["w"][0])
    if kind == "attention":
        from perceiver.rundir import load_attention

        return load_attention(path).epoch
    return json.loads(Path(path).read_text())["value"]


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
@pytest.mark.parametrize("kind,writer,name", [("checkpoint", _checkpoint, "last.pt"),
                                              ("attention", _attention, "epoch_0001.npz"),
                                              ("json", _json, "status.json")])
def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, stage, kind, writer, name):
    path = tmp_path / "run" / "checkpoints" / name
    path.parent.mkdir(parents=True)
    writer(path, 1)
    before = path.read_bytes()
    DiskFull(monkeypatch, name, stage)
    with pytest.raises(WriteError) as e:
        writer(path, 2)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"could not write {path}: {ENOSPC}; free some disk space"), msg
    if kind == "checkpoint":  # <run>/checkpoints/last.pt: the message says how to resume that run
        assert msg.endswith(f"then python train.py --resume {tmp_path / 'run'}"), msg
    assert path.read_bytes() == before and _read(path, kind) == 1
    assert tmp_files(tmp_path) == []
    monkeypatch.undo()
    writer(path, 2)  # space is back
    assert _read(path, kind) == 2


def test_write_error_under_torchrun_says_to_resume_with_torchrun(tmp_path, monkeypatch):
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    _checkpoint(path, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")  # what torchrun sets in each of its processes
    DiskFull(monkeypatch, "last.pt", "write")
    with pytest.raises(WriteError) as e:
        _checkpoint(path, 2)
    assert str(e.value).endswith(f"then torchrun --nproc_per_node 4 train.py --resume {tmp_path / 'run'}")


def test_failed_append_leaves_no_partial_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1, "loss": 0.5})
    before = path.read_bytes()
    DiskFull(monkeypatch, "metrics.jsonl", "write")
    with pytest.raises(WriteError, match=rf"could not write {path}: No space left on device \(ENOSPC\)"):
        append_jsonl(path, {"epoch": 2, "loss": 0.25, "pad": "x" * 200})
    assert path.read_bytes() == before  # the half line that landed was cut off again
    monkeypatch.undo()
    append_jsonl(path, {"epoch": 2, "loss": 0.25})
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2]


def test_append_whose_cut_fails_too_leaves_a_torn_last_line_the_reader_drops(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    DiskFull(monkeypatch, "metrics.jsonl", "write")

    def no_truncate(fd, size):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(WriteError):
        append_jsonl(path, {"epoch": 2, "pad": "x" * 200})
    assert not path.read_bytes().endswith(b"\n")  # the torn half line is there...
    assert read_jsonl(path) == [{"epoch": 1}]  # ...and the reader drops it


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_real_enospc_from_dev_full():
    with pytest.raises(WriteError, match=f"could not write /dev/full: {ENOSPC.replace('(', '[(]').replace(')', '[)]')}"):
        append_jsonl("/dev/full", {"epoch": 1})


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_train_log_on_a_full_disk_warns_once_and_the_console_goes_on(capsys):
    log = setup_logging(Path("/dev/full"), main_process=True)
    try:
        for i in range(3):
            log.info(f"line {i}")
    finally:
        close_logging(log)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["line 0", "line 1", "line 2"]
    assert err.splitlines() == [f"warning: could not write /dev/full: {ENOSPC}; free some disk space; train.log "
                                f"stops here, the console keeps the log"]


# ------------------------------------------------------------------------------------------- a training run


def learning(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    res = run_train_in(tmp_path_factory.mktemp("ref"), ARGS, name="ref")
    assert res.code == 0, res.err
    return RunDir(res.run_dir)


def assert_one_error_line(res, path: Path):
    lines = res.err.strip().splitlines()
    assert res.code == 1, res.err
    assert len(lines) == 1, res.err
    assert lines[0].startswith(f"error: could not write {path}: {ENOSPC}; free some disk space, then python "
                               f"train.py --resume {res.run_dir}"), lines[0]


@pytest.mark.parametrize("target,stage", [("last.pt", "write"), ("metrics.jsonl", "write"),
                                          ("epoch_0002.npz", "fsync")])
def test_disk_full_at_epoch_2_stops_with_one_line_and_resume_finishes(reference, tmp_path, monkeypatch, target,
                                                                       stage):
    logs = tmp_path / "logs"
    run = RunDir(logs / "run")
    DiskFull(monkeypatch, target, stage, skip=1 if target != "epoch_0002.npz" else 0)
    res = run_train_in(logs, ARGS)
    monkeypatch.undo()
    path = {"last.pt": run.last_checkpoint, "metrics.jsonl": run.metrics_path}.get(target, run.attention_path(2))
    assert_one_error_line(res, path)
    assert load_checkpoint(run.last_checkpoint)["epoch"] == 1  # the previous checkpoint, intact
    assert tmp_files(run.path) == []
    assert all(line.strip() for line in run.metrics_path.read_text().splitlines())  # whole lines only
    assert run.read_status()["state"] == "failed" and "could not write" in run.read_status()["message"]
    if target == "metrics.jsonl":
        assert [r["epoch"] for r in run.read_metrics()] == [1]
    resumed = run_train_in(logs, ["--resume", str(run.path)], tiny=False)
    assert resumed.code == 0, resumed.err
    assert learning(run.read_metrics()) == learning(reference.read_metrics())
    assert run.read_steps() == reference.read_steps()
    assert run.attention_epochs() == [1, 2, 3]
    a, b = (torch.load(r.last_checkpoint, weights_only=True)["model"] for r in (run, reference))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_disk_that_stays_full_reports_the_first_failure_not_the_status_write(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    run = RunDir(logs / "run")
    DiskFull(monkeypatch, "metrics.jsonl", "write", skip=1, spread_under=run.path)  # then every write fails
    res = run_train_in(logs, ARGS)
    monkeypatch.undo()
    assert_one_error_line(res, run.metrics_path)
    assert run.read_status()["state"] == "running"  # the "failed" status could not be written either
    assert load_checkpoint(run.last_checkpoint)["epoch"] == 1 and tmp_files(run.path) == []


@pytest.mark.parametrize("target", ["best.pt", "last.pt"])
def test_first_checkpoint_failing_says_how_to_carry_on(tmp_path, monkeypatch, target):
    logs = tmp_path / "logs"
    DiskFull(monkeypatch, target, "replace")
    args = ["--epochs", "2", "--val_split", "0.25"]  # best.pt follows the validation accuracy
    res = run_train_in(logs, args)
    monkeypatch.undo()
    run = RunDir(res.run_dir)
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1 and not run.last_checkpoint.exists() and tmp_files(run.path) == []
    if target == "best.pt":  # nothing saved: start again
        assert lines[0].endswith("then run the same command again with --overwrite (no checkpoint was saved yet)")
        again = run_train_in(logs, args + ["--overwrite"])
    else:  # best.pt of epoch 1 was written just before: resume from it
        assert lines[0].endswith(f"then python train.py --resume {run.best_checkpoint}"), lines[0]
        again = run_train_in(logs, ["--resume", str(run.best_checkpoint)], tiny=False)
    assert again.code == 0, again.err
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]


def _refuse_mkdir_under(monkeypatch, folder: Path):
    real = os.mkdir

    def mkdir(path, *a, **kw):
        if str(path).startswith(str(folder) + os.sep):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)


def _check_read_only_logs(res, logs: Path):
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1, res.err
    assert lines[0] == (f"error: could not create {logs / 'run'}: Permission denied (EACCES); make {logs} "
                        f"writable"), lines[0]
    assert not (logs / "run").exists()


def test_logs_folder_without_write_permission(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    _refuse_mkdir_under(monkeypatch, logs)
    _check_read_only_logs(run_train_in(logs, ["--epochs", "1"]), logs)


def test_read_only_logs_folder_for_real(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o555)
    try:
        probe = logs / "probe"
        try:
            probe.mkdir()
        except PermissionError:
            pass
        else:
            probe.rmdir()
            pytest.skip("running as root: permissions do not stop writes (the monkeypatched test covers it)")
        _check_read_only_logs(run_train_in(logs, ["--epochs", "1"]), logs)
    finally:
        logs.chmod(0o755)


def test_full_disk_in_the_visualizer_is_one_line(tmp_path, monkeypatch, capsys):
    from perceiver.viz.synthetic import make_run
    import visualize_results

    run = make_run(tmp_path / "run", epochs=3, attention_epochs=())
    DiskFull(monkeypatch, "training_dashboard.png", "write")
    code = visualize_results.cli(["--output_dir", str(run.path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "training_dashboard.png" in err[0] and "ENOSPC" in err[0], err
    assert tmp_files(run.path) == [] and not (run.plots_dir / "training_dashboard.png").exists()


def test_overwrite_that_cannot_delete_is_one_line(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    first = run_train_in(logs, ["--epochs", "1"])
    assert first.code == 0, first.err
    run = RunDir(first.run_dir)
    real = os.unlink

    def unlink(path, *a, **kw):
        if Path(path).name == "metrics.jsonl":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    res = run_train_in(logs, ["--epochs", "1", "--overwrite"])
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1, res.err
    assert lines[0] == f"error: could not delete {run.metrics_path}: Permission denied (EACCES); make {run.path} writable"
