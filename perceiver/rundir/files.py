"""Atomic writes and JSON / JSON-lines files: how every run-directory file is written and read (see `perceiver.rundir`).

Every JSON file is strict JSON: a NaN or infinite number (a diverged loss, an overflowed gradient norm) is written as
``null``, which readers take as "no value", so a non-finite figure never stops a write or breaks a reader.
"""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DamagedFileError, RunDirError, WriteError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_error(path: str | os.PathLike, exc: OSError, *, verb: str = "write") -> WriteError:
    """One line for a failed write: the file, the system's reason with its errno name, and the fix."""
    name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    reason = (exc.strerror or str(exc) or type(exc).__name__) + (f" ({name})" if name else "")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {Path(path).parent} writable"
    else:
        fix = "check the disk"
    return WriteError(f"could not {verb} {path}: {reason}; {fix}")


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: torch.save, for one, reports a failed write as a RuntimeError raised from it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _remove(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = True) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX, so readers see either the old file or the complete new one. A failed write
    (in ``write``, the flush, fsync or rename) removes the temporary file; an `OSError` becomes `WriteError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600 files; run files should read like any other
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        cause = _os_error(e) if isinstance(e, Exception) else None
        if cause is not None:
            raise write_error(path, cause) from None
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write(path, lambda f: f.write(text), binary=False)


def jsonl_line(obj: Any) -> str:
    """One line of a JSON-lines file, newline included (non-finite numbers as null)."""
    return json.dumps(_jsonable(obj), sort_keys=True, allow_nan=False) + "\n"


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} is not valid JSON ({e}); delete it or restore it from a backup") from None


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line, then fsync; a failed write is cut back off, so no partial line stays behind.

    Should even the cut fail, the line is the file's last and `read_jsonl` drops a torn last line.
    """
    data = jsonl_line(obj).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:  # a full disk can accept part of a write before it fails
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise write_error(path, e) from None
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike, *, skip: Callable[[str], None] | None = None) -> list[dict]:
    """The objects of a JSON-lines file; an absent file reads as empty.

    A torn last line (a crash mid-append) is dropped. Any other line that is not a JSON object raises
    `DamagedFileError` naming the file and line, unless ``skip`` is given: then ``skip("line N of PATH (why)")``
    is called for every bad line, the torn last one included, and the other rows are returned.
    """
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise RunDirError(f"could not read {path}: {e.strerror or e}") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
            why = None if isinstance(row, dict) else f"a JSON {type(row).__name__}, not an object"
        except (UnicodeDecodeError, json.JSONDecodeError):
            why = "not valid JSON"
        if why is None:
            rows.append(row)
            continue
        if i == last:
            why = "an incomplete last line, cut off while it was written"
        if skip is not None:
            skip(f"line {i + 1} of {path} ({why})")
        elif i != last:
            raise DamagedFileError(path, f"line {i + 1} is {why}; the file is damaged: restore it, or delete that "
                                         f"line to keep the other rows")
    return rows


def _jsonable(obj: Any) -> Any:
    """Turn numpy scalars/arrays, tuples and paths into plain JSON types, and NaN or infinite numbers into None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


