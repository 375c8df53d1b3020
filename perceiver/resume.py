"""Run-directory bookkeeping around a run's start: `--resume`, `--eval_only` and `--overwrite`.

A resumed run takes its flags from the checkpoint (`merge_flags`). Flags typed on the command line may change only
what does not alter the computation (where the data lives, workers, device, logging; see `RESUME_OVERRIDES`); any
other typed flag must repeat the saved value, so ``python train.py <original command> --resume RUN`` works, and a
different one is refused with the list of differences. Its model is the checkpoint's own configuration
(`PerceiverConfig.from_dict`) with the options this invocation sets (`invocation_options`), compared with that
configuration before anything is loaded (`restore_training`).
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import PerceiverConfig
from .errors import CheckpointError
from .rundir import RunDir, launcher, write_error

#: flags that a resumed run may change: they do not touch the weights, the data order or the schedule.
RESUME_OVERRIDES = frozenset({
    "data_dir", "num_workers", "threads", "device", "compile", "compile_mode", "kernels", "activation_checkpointing",
    "use_tensorboard", "save_metrics", "save_attention_maps", "attention_save_interval", "limit_eval_batches", "logs_dir",
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


def merge_flags(saved: dict, flags: Mapping[str, Any], explicit: set[str], *, allowed: frozenset[str],
                checkpoint: Path, model: dict | None = None) -> dict:
    """The saved flags, updated by the allowed typed ones (``flags``: this invocation's, resolved); a typed flag that
    changes anything else fails. ``model``: the checkpoint's model configuration, which supplies the model flags
    the saved flags lack."""
    merged = dict(saved)
    changed = []
    for name in sorted(explicit - INVOCATION_FLAGS):
        new = flags[name]
        if name in allowed or name not in saved:
            merged[name] = new
        elif _norm(saved[name]) != _norm(new):
            changed.append(f"--{name}: {saved[name]!r} -> {new!r}")
    if changed:
        raise CheckpointError(f"checkpoint {checkpoint} was trained with different settings ({'; '.join(changed)}); "
                              f"drop these flags to resume it, or start a new run under another --experiment_name")
    for name in INVOCATION_FLAGS:
        merged[name] = flags[name]
    # Flags added to train.py after the checkpoint was written: a model flag takes the value the checkpoint's model
    # was built with (a default may have changed since), any other flag its current default.
    implied = PerceiverConfig.option_flags({k: v for k, v in (model or {}).items()
                                           if k not in PerceiverConfig.COMPUTE_FIELDS})
    for name, value in flags.items():
        merged.setdefault(name, implied.get(name, value))
    return merged


def invocation_options(options: Mapping[str, Any], explicit: set[str]) -> dict[str, Any]:
    """The model options a resumed run takes from this invocation rather than from its checkpoint: those typed (the
    checkpoint's model must have them) and those that change only speed or memory (`COMPUTE_FIELDS`)."""
    typed = {f.field for f in PerceiverConfig.flags() if f.dest in explicit}
    return {k: v for k, v in options.items() if k in typed or k in PerceiverConfig.COMPUTE_FIELDS}


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def clear_run(run: RunDir) -> list[str]:
    """Delete a previous run's files (`RUN_ENTRIES`) from ``run``; returns what was removed."""
    removed = []
    for name in RUN_ENTRIES:
        path = run.path / name
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                continue
        except OSError as e:  # no permission: one line, not a traceback
            raise write_error(path, e, verb="delete") from None
        removed.append(name)
    return removed


def restore_training(parts, state: dict, *, world_size: int, run_path) -> tuple:
    """Load a checkpoint into a run's parts: (LoopState, best.pt's record (`Best`) or None, training seconds spent)."""
    from . import checkpoint as ckpt
    from .engine import EpochSums, LoopState
    from .epoch import Best

    path, p = state["path"], parts
    ckpt.check_model_config(path, PerceiverConfig.from_dict(state["model_config"]).identity(), p.config.identity())
    saved_world = state.get("world_size", 1)
    if saved_world != world_size:
        raise CheckpointError(
            f"checkpoint {path} was trained by {saved_world} process(es) and this launch has {world_size}: resume "
            f"it with the same number (the data order, the samples per step and the schedule depend on it), e.g. "
            f"`{launcher(saved_world)} train.py --resume {run_path}`")
    ckpt.load_model_weights(path, p.model, state, weights="train")
    try:
        if p.ema is not None and state.get("ema"):
            p.ema.load_state_dict(state["ema"])
        p.optimizer.load_state_dict(state["optimizer"])
        if p.amp.scaler is not None and state.get("scaler"):
            p.amp.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path}: the optimizer or EMA state does not fit ({e})") from None
    batch = state.get("batch_in_epoch", 0)
    sums = EpochSums(**state["partial"]) if batch and state.get("partial") else EpochSums()
    loop = LoopState(epoch=state["epoch"] + 1, batch=batch, global_step=state["global_step"], sums=sums)
    best = Best.from_dict(state["best"]) if state.get("best") else None
    return loop, best, float(state.get("elapsed_s", 0.0))
