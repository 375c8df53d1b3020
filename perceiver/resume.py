"""Run-directory bookkeeping around a run's start: `--resume`, `--eval_only` and `--overwrite`.

A resumed run takes its arguments from the checkpoint. Flags typed on the command line may change only what
does not alter the computation (where the data lives, workers, device, logging; see `RESUME_OVERRIDES`); any
other typed flag must repeat the saved value, so ``python train.py <original command> --resume RUN`` works, and a
different one is refused with the list of differences.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from .errors import CheckpointError, RunDirError
from .rundir import RunDir

#: flags that a resumed run may change: they do not touch the weights, the data order or the schedule.
RESUME_OVERRIDES = frozenset({
    "data_dir", "num_workers", "threads", "device", "compile", "kernels", "activation_checkpointing", "use_tensorboard",
    "save_metrics", "save_attention_maps", "attention_save_interval", "limit_eval_batches", "logs_dir",
    "experiment_name", "modelnet40_url", "no_progress", "sync_every", "tta",
})
#: --eval_only may also change how the evaluation batches are formed and computed.
EVAL_OVERRIDES = RESUME_OVERRIDES | {"batch_size", "batch_size_cifar10", "batch_size_modelnet40", "use_amp",
                                     "device_data"}
#: never taken from the checkpoint: they describe this invocation, not the run.
INVOCATION_FLAGS = frozenset({"resume", "overwrite", "eval_only"})

#: what --overwrite deletes: the run's own files, never anything else in (or outside) the folder.
RUN_ENTRIES = ("config.json", "metrics.jsonl", "steps.jsonl", "per_class.jsonl", "status.json", "train.log",
               "eval.json", "checkpoints", "attention", "tensorboard", "plots")


def locate(resume: str, *, eval_only: bool) -> tuple[RunDir | None, Path]:
    """(run directory or None, checkpoint path) for ``--resume PATH``."""
    path = Path(resume)
    if path.is_dir():
        run = RunDir(path)
        if eval_only and run.best_checkpoint.is_file():
            return run, run.best_checkpoint
        if not run.last_checkpoint.is_file():
            raise CheckpointError(f"{run.last_checkpoint} does not exist: the run stopped before it saved a "
                                  f"checkpoint (end of its first epoch); start it again with --overwrite")
        return run, run.last_checkpoint
    if path.parent.name == "checkpoints":
        return RunDir(path.parent.parent), path
    return None, path


def merge_args(saved: dict, args: argparse.Namespace, explicit: set[str], *, allowed: frozenset[str],
               checkpoint: Path) -> argparse.Namespace:
    """The saved arguments, updated by the allowed typed flags; a typed flag that changes anything else fails."""
    merged = dict(saved)
    changed = []
    for name in sorted(explicit - INVOCATION_FLAGS):
        new = getattr(args, name)
        if name in allowed or name not in saved:
            merged[name] = new
        elif _norm(saved[name]) != _norm(new):
            changed.append(f"--{name}: {saved[name]!r} -> {new!r}")
    if changed:
        raise CheckpointError(f"checkpoint {checkpoint} was trained with different settings ({'; '.join(changed)}); "
                              f"drop these flags to resume it, or start a new run under another --experiment_name")
    for name in INVOCATION_FLAGS:
        merged[name] = getattr(args, name)
    # flags added to train.py after the checkpoint was written take their current defaults
    for name, value in vars(args).items():
        merged.setdefault(name, value)
    return argparse.Namespace(**merged)


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def clear_run(run: RunDir) -> list[str]:
    """Delete a previous run's files (`RUN_ENTRIES`) from ``run``; returns what was removed."""
    removed = []
    for name in RUN_ENTRIES:
        path = run.path / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(name)
    return removed


def check_not_running(run: RunDir) -> None:
    """Refuse to start in a folder whose status says another live process is training there."""
    import os

    status = run.read_status() or {}
    pid = status.get("pid")
    if status.get("state") != "running" or not isinstance(pid, int) or pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return
    except OSError:
        return
    raise RunDirError(f"{run.path} is in use by a running train.py (pid {pid}); stop it first")
