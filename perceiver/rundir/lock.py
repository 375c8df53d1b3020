"""run.lock: one training process per run directory.

    lock = RunLock(run.path)
    note = lock.acquire()      # RunDirError (one line) when another process holds it; a note when a stale lock
    ...                        # left by a dead process on this host was taken over
    lock.release()             # on every way out: the file is removed

The file is created with ``O_CREAT | O_EXCL``, so of two processes starting at once exactly one creates it; it
holds one JSON line: host, pid, start time, and (on Linux) the boot id and the process's start tick, which tell a
live holder from a dead one whose pid was reused or whose machine rebooted. The holder also keeps a ``flock`` on
the file: the kernel drops it when the process dies however it dies, so on one host a lock without a live holder is
recognised even across pid namespaces, and taking it over is race-free (two processes cannot both take it).

A lock written by another host is never judged from here (its pid means nothing on this machine): it is refused,
naming the host and pid, and the message says how to clear it once that process is known to be gone.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: the O_EXCL file and the pid check still work
    fcntl = None

from ..errors import RunDirError
from .files import write_error

LOCK_NAME = "run.lock"
_GRACE_S = 2.0  # how long a just-created lock may stay empty (its writer is between create and write)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in (...) may hold spaces
    except (OSError, IndexError, ValueError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process a lock of this host names still runs (not a later process that got its pid)."""
    boot = _boot_id()
    if holder.get("boot_id") and boot and holder["boot_id"] != boot:
        return False  # the machine rebooted since the lock was written
    pid = holder["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    start = _process_start(pid)
    return not (holder.get("process_start") is not None and start is not None and start != holder["process_start"])


def _parse(text: str) -> dict | None:
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    if not (isinstance(holder, dict) and isinstance(holder.get("host"), str) and isinstance(holder.get("pid"), int)
            and not isinstance(holder["pid"], bool)):
        return None
    return holder


def _flock(fd: int) -> bool:
    """Take the flock without waiting: True taken (or flock unsupported here), False held by another process."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return True  # ENOLCK, EOPNOTSUPP...: a file system without flock; the O_EXCL file is the lock
    return True


def _wait_flock(fd: int) -> bool:
    deadline = time.monotonic() + _GRACE_S
    while not _flock(fd):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _same_file(fd: int, path: Path) -> bool:
    a, b = os.fstat(fd), os.stat(path)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)
    os.fsync(fd)


def _describe(holder: dict) -> str:
    return f"pid {holder['pid']}" + (f", started {holder['started']}" if holder.get("started") else "")


class _Retry(Exception):
    """The lock file changed while it was looked at: look again."""


class RunLock:
    """The exclusive lock of one run directory (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _record(self) -> bytes:
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "boot_id": _boot_id(),
                  "process_start": _process_start(os.getpid())}
        return (json.dumps(holder, sort_keys=True) + "\n").encode()

    def acquire(self) -> str | None:
        """Hold the lock, or raise `RunDirError` naming the holder. Returns a note when a stale lock (its process
        dead, on this host) was taken over, else None."""
        if self._fd is not None:
            return None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.run_dir, e, verb="create") from None
        data = self._record()
        deadline = time.monotonic() + 4 * _GRACE_S
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    return self._take_over_if_stale(data)
                except _Retry:
                    if time.monotonic() > deadline:
                        raise RunDirError(f"{self.path} keeps changing: another train.py is starting in "
                                          f"{self.run_dir}; let it run, or stop it and start again") from None
                    time.sleep(0.05)
                    continue
            except OSError as e:
                raise write_error(self.path, e, verb="create") from None
            if not _wait_flock(fd):  # another process is peeking at this new file: it lets go at once
                os.close(fd)
                raise RunDirError(f"{self.path} is held by another process although this one created it; "
                                  f"start again")
            try:
                _write_all(fd, data)
            except OSError as e:
                os.close(fd)
                _unlink(self.path)
                raise write_error(self.path, e) from None
            self._fd = fd
            return None

    def _take_over_if_stale(self, data: bytes) -> str:
        try:
            text = self.path.read_text(errors="replace")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            raise _Retry from None
        except OSError as e:
            raise RunDirError(f"could not read {self.path}: {e.strerror or e}") from None
        holder = _parse(text)
        if holder is None and age < _GRACE_S:
            raise _Retry  # just created: its writer is about to fill it in
        if holder is not None and holder["host"] != socket.gethostname():
            raise RunDirError(
                f"{self.run_dir} is in use by train.py on host {holder['host']} ({_describe(holder)}); stop it "
                f"there, or, if that process is gone (its host crashed), delete {self.path} and start again")
        if holder is not None and _alive(holder):
            raise RunDirError(f"{self.run_dir} is in use by a running train.py ({_describe(holder)}); stop it "
                              f"first, or use another --experiment_name")
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            raise _Retry from None
        except OSError as e:
            raise RunDirError(f"could not open {self.path}: {e.strerror or e}") from None
        try:
            if not _flock(fd):  # a live process holds it: a worker of the dead one, or one in another pid namespace
                who = f"{_describe(holder)}, which has exited" if holder else "its content is unreadable"
                raise RunDirError(f"{self.run_dir} is in use: another process holds its lock {self.path} ({who}; a "
                                  f"process it started may still be closing); wait a few seconds and try again, or "
                                  f"stop that process")
            same = _same_file(fd, self.path)
            if not same or os.pread(fd, 1 << 16, 0).decode(errors="replace") != text:
                raise _Retry  # released and re-created, or taken over, while we looked
            _write_all(fd, data)
        except FileNotFoundError:
            os.close(fd)
            raise _Retry from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if holder is None:
            return f"took over {self.path}: it was unreadable and no process held it"
        return (f"took over {self.path}: it was left by {_describe(holder)}, which is no longer running on this "
                f"host")

    def release(self) -> None:
        """Remove the lock file and let go of it; never raises (a lock left behind is taken over next time)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)  # before closing: no one can take the file over between the two
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_lock(run_dir: str | os.PathLike) -> dict | None:
    """The holder recorded in ``run_dir``'s lock file ({host, pid, started, ...}), or None when there is none."""
    try:
        return _parse((Path(run_dir) / LOCK_NAME).read_text(errors="replace"))
    except OSError:
        return None
