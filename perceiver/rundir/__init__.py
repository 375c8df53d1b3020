"""The run directory: the one contract between `train.py` and the visualization scripts.

This package owns the layout and file formats of ``logs/<experiment_name>/``, the writer and the reader both,
so the two sides cannot drift. It imports numpy and the standard library only (never torch), so the
visualizers stay light. `files.py`: atomic writes, JSON and JSON-lines; `metrics.py`: the metrics.jsonl schema;
`attention.py`: the attention files; `lock.py`: the run's lock file (`RunLock`); here: the layout (`RunDir`).

Layout::

    config.json              resolved arguments, model config, parameter count, dataset facts, versions, device
    metrics.jsonl            one JSON object per finished epoch (appended and flushed)
    steps.jsonl              --save_metrics: one object per optimizer step {epoch, step, loss, lr}
    per_class.jsonl          --save_metrics: per epoch {epoch, split, per_class_acc, confusion}
    status.json              {state: running|finished|failed|interrupted, epoch, epochs, updated, message}
    run.lock                 while train.py runs: {host, pid, started, ...} of the process writing the run
    train.log                the console log
    checkpoints/last.pt      every epoch (and on interruption); checkpoints/best.pt on a new best accuracy
    attention/epoch_XXXX.npz --save_attention_maps: probe inputs, labels, predictions and attention maps
    tensorboard/             --use_tensorboard event files
    plots/                   figures written by the visualization scripts

Every file is written atomically (temporary file in the same folder, fsync, rename), so a crash leaves the
previous version intact and no partial file behind. JSON files are strict JSON: a NaN or infinite number (a diverged
loss, an overflowed gradient norm) is written as null, never a write error. JSON-lines files are appended one whole
line per write; the reader skips a torn last line (a crash mid-append) instead of failing. A write that fails (disk
full, no permission, read-only file system) removes what it wrote and raises `WriteError`, one line naming the file,
the system's reason and the fix. Readers that only draw (the visualizers) pass ``skip=`` to skip a damaged line or
attention file with a warning; the trainer does not, since resuming over a damaged history would lose rows.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from ..errors import DamagedFileError, RunDirError, WriteError
from .attention import ATTENTION_PATTERN, AttentionSnapshot, load_attention, save_attention
from .files import append_jsonl, atomic_write, atomic_write_json, jsonl_line, read_json, read_jsonl, write_error
from .lock import LOCK_NAME, RunLock, read_lock
from .metrics import SERIES_FIELDS, TIMING_FIELDS, EpochRow

STATES = ("running", "finished", "failed", "interrupted")


def launcher(world_size: int | None = None) -> str:
    """How a run of ``world_size`` processes is started again; None: this process's own world (torchrun sets
    WORLD_SIZE in each process it starts)."""
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return f"torchrun --nproc_per_node {world_size}" if world_size > 1 else "python"


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
    lock_path = property(lambda self: self.path / LOCK_NAME)

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
            return f"{launcher()} train.py --resume {self.path}"
        if self.best_checkpoint.is_file():  # written just before the first last.pt, which failed: same state
            return f"{launcher()} train.py --resume {self.best_checkpoint}"
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
            text = "".join(jsonl_line(r) for r in rows)
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
        """One epoch's attention file; `DamagedFileError` when it is unreadable, its arrays disagree, or its shapes
        do not fit the run's config.json (a file from another run)."""
        path = self.attention_path(epoch)
        snap = load_attention(path)
        problem = self._attention_misfit(snap)
        if problem:
            raise DamagedFileError(path, f"it does not fit this run: {problem} ({self.config_path.name})")
        return snap

    def _attention_misfit(self, snap: AttentionSnapshot) -> str | None:
        try:
            config = self.read_config() if self.config_path.is_file() else {}
        except RunDirError:
            return None  # a damaged config.json is reported by whoever needs it; the file alone is judged
        data = config.get("dataset") if isinstance(config, dict) else None
        model = config.get("model") if isinstance(config, dict) else None
        data, model = data if isinstance(data, dict) else {}, model if isinstance(model, dict) else {}
        latents = model.get("num_latents")
        if isinstance(latents, int) and model.get("output_pooling") == "cls":
            latents += 1  # the learned cls latent attends too
        checks = [("kind", data.get("kind"), snap.kind),
                  ("image shape", data.get("image_shape"), list(snap.image_shape) if snap.image_shape else None),
                  ("input tokens", data.get("num_tokens"), snap.cross.shape[-1]),
                  ("classes", data.get("num_classes"), len(snap.class_names)),
                  ("latents", latents, snap.cross.shape[-2])]
        for what, want, got in checks:
            if want is not None and got is not None and want != got:
                return f"{what} {got!r} where the run has {want!r}"
        return None


#: room under a run folder for the deepest path the run writes (checkpoints/.last.pt.XXXXXXXX.tmp and the like)
_DEEPEST_ENTRY = 64


def location_problem(logs_dir: str | os.PathLike, name: str) -> str | None:
    """Why the run folder ``logs_dir/name`` could not be created (one line naming the flag to change), or None.

    Checked before any data is loaded: ``logs_dir`` or a folder above it is a file, or a name is longer than the file
    system allows (a file name, or the whole path with the run's deepest file).
    """
    logs_dir = Path(logs_dir)
    run = logs_dir / name
    existing = next((p for p in (run, *run.parents) if os.path.lexists(p)), None)
    if existing is not None and not existing.is_dir():
        if existing == run:
            return f"{run} is a file, not a run folder: choose another --experiment_name"
        where = "is a file" if existing == logs_dir else f"is inside {existing}, which is a file"
        return f"--logs_dir {logs_dir} {where}, not a folder: choose a folder (it is created when missing)"
    base = existing if existing is not None else Path(".")
    try:
        name_max, path_max = os.pathconf(base, "PC_NAME_MAX"), os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer: the usual limits
        name_max, path_max = 255, 4096
    for part in run.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            flag = "--experiment_name" if part == name else "--logs_dir"
            return (f"{flag}: the name {part[:40]}... is {size} bytes long; the file system of {base} allows at most "
                    f"{name_max}: choose a shorter one")
    size = len(os.fsencode(os.path.abspath(run))) + _DEEPEST_ENTRY
    if size > path_max:
        return (f"the run folder {run} makes paths of about {size} bytes; the file system of {base} allows at most "
                f"{path_max}: choose a shorter --logs_dir or --experiment_name")
    return None


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


__all__ = ["ATTENTION_PATTERN", "LOCK_NAME", "STATES", "SERIES_FIELDS", "TIMING_FIELDS", "AttentionSnapshot",
           "EpochRow", "RunDir", "RunLock", "append_jsonl", "atomic_write", "atomic_write_json", "find_runs",
           "jsonl_line", "load_attention", "location_problem", "read_json", "read_jsonl", "read_lock",
           "save_attention", "write_error"]
