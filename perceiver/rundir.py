"""The run directory: the one contract between `train.py` and the visualization scripts.

This module owns the layout and file formats of ``logs/<experiment_name>/``, the writer and the reader both,
so the two sides cannot drift. It imports numpy and the standard library only (never torch), so the
visualizers stay light.

Layout::

    config.json              resolved arguments, model config, parameter count, dataset facts, versions, device
    metrics.jsonl            one JSON object per finished epoch (appended and flushed)
    steps.jsonl              --save_metrics: one object per optimizer step {epoch, step, loss, lr}
    per_class.jsonl          --save_metrics: per epoch {epoch, split, per_class_acc, confusion}
    status.json              {state: running|finished|failed|interrupted, epoch, epochs, updated, message}
    train.log                the console log
    checkpoints/last.pt      every epoch (and on interruption); checkpoints/best.pt on a new best accuracy
    attention/epoch_XXXX.npz --save_attention_maps: probe inputs, labels, predictions and attention maps
    tensorboard/             --use_tensorboard event files
    plots/                   figures written by the visualization scripts

Every file is written atomically (temporary file in the same folder, fsync, rename), so a crash leaves the
previous version intact and no partial file behind. JSON-lines files are appended one whole line per write;
the reader skips a torn last line (a crash mid-append) instead of failing. A write that fails (disk full, no
permission, read-only file system) removes what it wrote and raises `WriteError`, one line naming the file, the
system's reason and the fix. Readers that only draw (the visualizers) pass ``skip=`` to skip a damaged line or
attention file with a warning; the trainer does not, since resuming over a damaged history would lose rows.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import DamagedFileError, RunDirError, WriteError

_UMASK = os.umask(0o022)
os.umask(_UMASK)
STATES = ("running", "finished", "failed", "interrupted")
ATTENTION_PATTERN = "epoch_{:04d}.npz"


# --------------------------------------------------------------------------------------------------- helpers


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
    atomic_write(path, lambda f: json.dump(_jsonable(obj), f, indent=2, sort_keys=True), binary=False)


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
    data = (json.dumps(_jsonable(obj), sort_keys=True, allow_nan=False) + "\n").encode()
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
    """Turn numpy scalars/arrays, tuples and paths into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ------------------------------------------------------------------------------------------- metrics schema


def _timing():
    return field(default=0.0, metadata={"timing": True})


@dataclass
class EpochRow:
    """One line of metrics.jsonl: the epoch's training and evaluation figures.

    Accuracies are fractions in [0, 1]. With ``--ema_decay`` the val/test figures are those of the averaged
    weights (the ones best.pt and eval use) and ``raw_val_acc`` that of the trained weights. Fields that are None are
    left out of the file. The timing fields differ between otherwise identical runs (`TIMING_FIELDS`).
    """

    epoch: int
    step: int                          # optimizer steps done at the end of the epoch
    lr: float                          # the rate of the epoch's last step
    train_loss: float
    train_acc: float
    train_samples: int
    train_batches: int
    test_loss: float
    test_acc: float
    test_samples: int
    best_acc: float | None             # with --val_split: the best val_acc so far (best.pt's)
    is_best: bool                      # this epoch wrote best.pt
    test_acc_top5: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    val_acc_top5: float | None = None
    raw_val_acc: float | None = None
    partial: bool | None = None        # the time budget ran out inside this epoch
    epoch_time_s: float = _timing()
    train_time_s: float = _timing()
    eval_time_s: float = _timing()
    samples_per_s: float = _timing()
    elapsed_s: float = _timing()

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


#: metrics.jsonl fields that measure time, not learning: they differ between otherwise identical runs.
TIMING_FIELDS = tuple(f.name for f in fields(EpochRow) if f.metadata.get("timing"))
#: the per-epoch series a figure can plot (numbers, not bookkeeping).
SERIES_FIELDS = tuple(f.name for f in fields(EpochRow) if f.name not in ("epoch", "step", "is_best", "partial",
                                                                          "train_samples", "train_batches",
                                                                          "test_samples"))


# ------------------------------------------------------------------------------------------ attention files


@dataclass
class AttentionSnapshot:
    """The attention maps of the probe samples at one epoch, as read back from ``attention/epoch_XXXX.npz``.

    Arrays (S probe samples, M latents, N input tokens in the order the model saw them):
      cross:  (stages, S, cross_heads, M, N)
      self_:  (stages, blocks, S, heads, M, M), or None when the model has no latent blocks
      inputs: images (S, H, W, C) uint8 for image runs; points (S, N, 3) float32 for point clouds
    """

    epoch: int
    kind: str  # "image" | "pointcloud"
    cross: np.ndarray
    self_: np.ndarray | None
    inputs: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    probs: np.ndarray
    sample_indices: np.ndarray
    class_names: list[str]
    image_shape: tuple[int, ...] | None = None
    permutation: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_stages(self) -> int:
        return self.cross.shape[0]

    def cross_in_input_order(self, stage: int = 0) -> np.ndarray:
        """Cross-attention of one stage with the token axis in original input order: (S, heads, M, N).

        For permuted-pixel runs token ``i`` is pixel ``permutation[i]``, so scattering through the permutation
        lines the map up with the picture again.
        """
        attn = self.cross[stage].astype(np.float32)
        if self.permutation is None:
            return attn
        out = np.empty_like(attn)
        out[..., self.permutation] = attn
        return out

    def cross_as_image(self, stage: int = 0) -> np.ndarray:
        """Cross-attention reshaped onto the image grid: (S, heads, M, H, W). Image runs only."""
        if self.kind != "image" or self.image_shape is None:
            raise ValueError("cross_as_image needs an image run; point clouds have no grid")
        h, w = self.image_shape[:2]
        attn = self.cross_in_input_order(stage)
        return attn.reshape(*attn.shape[:-1], h, w)  # (S, heads, M, H, W)


def save_attention(path: str | os.PathLike, snap: AttentionSnapshot) -> None:
    arrays = {
        "epoch": np.int64(snap.epoch),
        "kind": np.array(snap.kind),
        # float16 halves the size; attention weights need ~3 significant digits for the figures
        "cross": snap.cross.astype(np.float16),
        "inputs": snap.inputs,
        "labels": snap.labels.astype(np.int64),
        "preds": snap.preds.astype(np.int64),
        "probs": snap.probs.astype(np.float32),
        "sample_indices": snap.sample_indices.astype(np.int64),
        "class_names": np.array(snap.class_names),
    }
    if snap.self_ is not None:
        arrays["self"] = snap.self_.astype(np.float16)
    if snap.image_shape is not None:
        arrays["image_shape"] = np.array(snap.image_shape, dtype=np.int64)
    if snap.permutation is not None:
        arrays["permutation"] = snap.permutation.astype(np.int64)
    for k, v in snap.extra.items():
        arrays[f"extra_{k}"] = np.asarray(v)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_attention(path: str | os.PathLike) -> AttentionSnapshot:
    """Read one attention file; a damaged one raises `DamagedFileError` naming it (visualizers skip it)."""
    bad = "not a readable attention file"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":  # np.load would try unpickling anything that is not a zip or .npy file
            what = "it starts with other bytes" if head else "it is empty"
            raise DamagedFileError(path, f"{bad}: not an .npz archive ({what})")
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist; train with --save_attention_maps to write attention files") from None
    except DamagedFileError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, OSError: a damaged file
        raise DamagedFileError(path, f"{bad}: {type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
    try:
        snap = AttentionSnapshot(
            epoch=int(d["epoch"]),
            kind=str(d["kind"]),
            cross=d["cross"],
            self_=d.get("self"),
            inputs=d["inputs"],
            labels=d["labels"],
            preds=d["preds"],
            probs=d["probs"],
            sample_indices=d["sample_indices"],
            class_names=[str(c) for c in d["class_names"]],
            image_shape=tuple(int(v) for v in d["image_shape"]) if "image_shape" in d else None,
            permutation=d.get("permutation"),
            extra={k[len("extra_"):]: v for k, v in d.items() if k.startswith("extra_")},
        )
    except KeyError as e:
        raise DamagedFileError(path, f"{bad}: it lacks the array {e}; it was not written by this version of "
                                     f"train.py") from None
    except (TypeError, ValueError) as e:
        raise DamagedFileError(path, f"{bad}: {type(e).__name__}: {e}") from None
    samples = len(snap.labels)
    if (snap.cross.ndim != 5 or snap.cross.shape[1] != samples or len(snap.inputs) != samples
            or (snap.self_ is not None and (snap.self_.ndim != 6 or snap.self_.shape[2] != samples))):
        raise DamagedFileError(path, f"{bad}: cross-attention {snap.cross.shape}, inputs {snap.inputs.shape} and "
                                     f"{samples} labels do not fit (stages, samples, heads, latents, tokens)")
    return snap


# --------------------------------------------------------------------------------------------- run directory


class RunDir:
    """One run directory: paths, writer and reader.

    The writer side is used by rank 0 of `train.py` only; the reader side by the visualizers.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # paths ------------------------------------------------------------------------------------------------
    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    steps_path = property(lambda self: self.path / "steps.jsonl")
    per_class_path = property(lambda self: self.path / "per_class.jsonl")
    status_path = property(lambda self: self.path / "status.json")
    log_path = property(lambda self: self.path / "train.log")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    best_checkpoint = property(lambda self: self.path / "checkpoints" / "best.pt")
    attention_dir = property(lambda self: self.path / "attention")
    tensorboard_dir = property(lambda self: self.path / "tensorboard")
    plots_dir = property(lambda self: self.path / "plots")
    eval_path = property(lambda self: self.path / "eval.json")

    def attention_path(self, epoch: int) -> Path:
        return self.attention_dir / ATTENTION_PATTERN.format(epoch)

    # state ------------------------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """True when the folder holds (part of) a training run: a config, metrics or a checkpoint."""
        return any(p.exists() for p in (self.config_path, self.metrics_path, self.status_path, self.last_checkpoint))

    # writer -----------------------------------------------------------------------------------------------
    def resume_hint(self) -> str:
        """How to carry on after a failed write has been fixed."""
        if self.last_checkpoint.is_file():
            return f"python train.py --resume {self.path}"
        if self.best_checkpoint.is_file():  # written just before the first last.pt, which failed: same state
            return f"python train.py --resume {self.best_checkpoint}"
        return "run the same command again with --overwrite (no checkpoint was saved yet)"

    @contextmanager
    def writing(self):
        """Add the way to carry on (`resume_hint`) to a `WriteError` raised inside the block."""
        try:
            yield
        except WriteError as e:
            raise WriteError(f"{e}, then {self.resume_hint()}") from None

    def create(self) -> None:
        for d in (self.path, self.checkpoints_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise write_error(d, e, verb="create") from None

    def write_config(self, config: dict) -> None:
        with self.writing():
            atomic_write_json(self.config_path, config)

    def append_metrics(self, row: EpochRow) -> None:
        with self.writing():
            append_jsonl(self.metrics_path, row.to_json())

    def append_step(self, row: dict) -> None:
        with self.writing():
            append_jsonl(self.steps_path, row)

    def append_per_class(self, row: dict) -> None:
        with self.writing():
            append_jsonl(self.per_class_path, row)

    def write_status(self, state: str, *, epoch: int, epochs: int, message: str = "", **extra: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
        with self.writing():
            atomic_write_json(self.status_path, {
                "state": state, "epoch": epoch, "epochs": epochs, "message": message,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), **extra,
            })

    def save_attention(self, snap: AttentionSnapshot) -> Path:
        path = self.attention_path(snap.epoch)
        with self.writing():
            save_attention(path, snap)
        return path

    def truncate_metrics(self, last_epoch: int, last_step: int | None = None) -> None:
        """Drop metric rows past ``last_epoch`` (rows a crashed run wrote after its last checkpoint).

        Resuming from a checkpoint of epoch k replays epochs k+1...; without this those epochs would appear twice.
        With ``last_step`` (a mid-epoch checkpoint), steps.jsonl keeps its rows up to that optimizer step instead.
        A damaged line other than a torn last one stops the resume (`DamagedFileError`): rewriting the file
        without it would lose that row for good.
        """
        for path in (self.metrics_path, self.steps_path, self.per_class_path):
            if not path.exists():
                continue
            if path == self.steps_path and last_step is not None:
                rows = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= last_step]
            else:
                rows = [r for r in read_jsonl(path) if int(r.get("epoch", 0)) <= last_epoch]
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
            with self.writing():
                atomic_write(path, lambda f, t=text: f.write(t), binary=False)

    # reader -----------------------------------------------------------------------------------------------
    def read_config(self) -> dict:
        try:
            return read_json(self.config_path)
        except FileNotFoundError:
            raise RunDirError(f"{self.config_path} is missing; `python train.py --experiment_name "
                              f"{self.name}` writes it") from None

    def read_metrics(self, skip: Callable[[str], None] | None = None) -> list[dict]:
        return read_jsonl(self.metrics_path, skip=skip)

    def read_steps(self, skip: Callable[[str], None] | None = None) -> list[dict]:
        return read_jsonl(self.steps_path, skip=skip)

    def read_per_class(self, skip: Callable[[str], None] | None = None) -> list[dict]:
        return read_jsonl(self.per_class_path, skip=skip)

    def read_status(self) -> dict | None:
        try:
            return read_json(self.status_path)
        except FileNotFoundError:
            return None

    def attention_epochs(self) -> list[int]:
        if not self.attention_dir.is_dir():
            return []
        epochs = []
        for p in self.attention_dir.glob("epoch_*.npz"):
            try:
                epochs.append(int(p.stem.split("_")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(epochs)

    def load_attention(self, epoch: int) -> AttentionSnapshot:
        return load_attention(self.attention_path(epoch))


def find_runs(path: str | os.PathLike) -> list[RunDir]:
    """Runs at ``path``: the folder itself if it holds a run, else its immediate sub-folders that do."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} does not exist or is not a folder; point at a run directory such as "
                          f"logs/<experiment_name> (train.py writes them)")
    run = RunDir(path)
    if run.holds_run():
        return [run]
    runs = [RunDir(p) for p in sorted(path.iterdir()) if p.is_dir() and RunDir(p).holds_run()]
    if not runs:
        raise RunDirError(f"{path} holds no training run (no config.json or metrics.jsonl); "
                          f"run `python train.py --experiment_name NAME` first")
    return runs
