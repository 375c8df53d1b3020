"""Run-directory bookkeeping around a run's start: `--resume`, `--eval_only` and `--overwrite`.

A resumed run takes its flags from the checkpoint (`merge_flags`). Flags typed on the command line may change only
what does not alter the computation (where the data lives, workers, device, logging; see `RESUME_OVERRIDES`) and
the two optimiser flags that rescue a diverging run (`OPTIMISER_OVERRIDES`: ``--lr``, ``--grad_clip``; a change is
recorded in config.json's "changed_on_resume"); any other typed flag must repeat the saved value, so
``python train.py <original command> --resume RUN`` works, and a different one is refused with the list of
differences. Its model is the checkpoint's own configuration (`PerceiverConfig.from_dict`) with the options this
invocation sets (`invocation_options`), compared with that configuration before anything is loaded
(`restore_training`).

A run directory belongs to one run (`start_resume`): a checkpoint inside a run (``RUN`` or ``RUN/checkpoints/*.pt``)
continues that run and writes nowhere else; a checkpoint file outside any run starts a new run, in a folder that
holds none (``--experiment_name``, or ``<dataset>_<date>-<time>`` under ``--logs_dir``), with its own config.json.
"""
from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PerceiverConfig
from .errors import CheckpointError, RunDirError, UsageError
from .rundir import RunDir, default_run_name, launcher, location_problem, running_holder, write_error
from .settings import Settings

#: flags that a resumed run may change: they do not touch the weights, the data order or the schedule. Not
#: ``--kernels``: plain and auto kernels agree to about the 8th digit only, which changes the run from there on.
RESUME_OVERRIDES = frozenset({
    "data_dir", "num_workers", "threads", "device", "compile", "compile_mode", "activation_checkpointing",
    "use_tensorboard", "save_metrics", "save_attention_maps", "attention_save_interval", "limit_eval_batches", "logs_dir",
    "experiment_name", "modelnet40_url", "no_progress", "sync_every", "tta",
})
#: optimiser flags a resumed run may change to get past a non-finite loss; each change is recorded in the run.
OPTIMISER_OVERRIDES = frozenset({"lr", "grad_clip"})
#: --eval_only may also change how the evaluation batches are formed and computed.
EVAL_OVERRIDES = RESUME_OVERRIDES | {"batch_size", "batch_size_cifar10", "batch_size_modelnet40", "use_amp",
                                     "device_data", "kernels"}
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
            holder = running_holder(run.path)
            if holder is not None:
                where = f" on host {holder['host']}" if holder["host"] != socket.gethostname() else ""
                raise RunDirError(f"{run.path} has no checkpoint yet: train.py (pid {holder['pid']}{where}) is still "
                                  f"running its first epoch; wait until it saves {run.last_checkpoint} at the end of "
                                  f"that epoch, or stop it first")
            raise CheckpointError(f"{run.last_checkpoint} does not exist: the run ended before the end of its first "
                                  f"epoch, where the first checkpoint is saved; start it again with --overwrite")
        return run, run.last_checkpoint
    if path.parent.name == "checkpoints":
        return RunDir(path.parent.parent), path
    return None, path


@dataclass(frozen=True)
class Resumed:
    """What ``--resume`` continues: the run's settings (saved flags merged with the typed ones), the run directory
    it writes, the checkpoint's state, and what this resume changes."""

    settings: Settings
    run: RunDir
    state: dict                 # the checkpoint, plus "path"
    new_run: bool               # a checkpoint from outside any run: a new run directory (config.json to write)
    changes: list[dict]         # OPTIMISER_OVERRIDES changed: {epoch, flag, old, new}


def start_resume(settings: Settings, explicit: set[str]) -> Resumed:
    """Load ``--resume``'s checkpoint, merge its flags with the typed ones and choose the run directory it writes
    (see the module docstring); `UsageError` (one line) when that would write into another run."""
    from . import checkpoint as ckpt

    flags = settings.flags
    located, path = locate(settings.run.resume, eval_only=False)
    state = ckpt.load_checkpoint(path)
    saved = state["args"]
    merged = merge_flags(saved, flags, explicit, checkpoint=path, allowed=RESUME_OVERRIDES | OPTIMISER_OVERRIDES,
                         model=state.get("model_config"))
    typed_place = {"logs_dir", "experiment_name"} & explicit
    if located is not None:
        wanted = Path(flags["logs_dir"]) / flags["experiment_name"]
        if typed_place and os.path.realpath(wanted) != os.path.realpath(located.path):
            raise UsageError(f"--resume {settings.run.resume} continues the run in {located.path} and writes nowhere "
                             f"else: drop {' and '.join('--' + f for f in sorted(typed_place))} (to branch a new run "
                             f"from this checkpoint, copy it out of the run and pass --resume COPY.pt "
                             f"--experiment_name NEW)")
        run, new_run = located, False
    else:
        name = flags["experiment_name"] if "experiment_name" in explicit else default_run_name(merged["dataset"])
        run, new_run = RunDir(Path(flags["logs_dir"]) / name), True
        problem = location_problem(flags["logs_dir"], name)
        if problem:
            raise UsageError(problem)
        if run.holds_run():
            raise UsageError(f"--resume {path}: a checkpoint outside a run directory starts a new run, and {run.path} "
                             f"already holds one: choose a new --experiment_name (or pass --resume {run.path} to "
                             f"continue that run)")
    merged["logs_dir"], merged["experiment_name"] = str(run.path.parent), run.path.name
    changes = [{"epoch": state["epoch"] + 1, "flag": name, "old": saved[name], "new": merged[name]}
               for name in sorted(OPTIMISER_OVERRIDES & explicit) if name in saved and saved[name] != merged[name]]
    return Resumed(settings=Settings.from_flags(merged), run=run, state={**state, "path": str(path)}, new_run=new_run,
                   changes=changes)


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
            why = ": the two kernels agree to about the 8th digit only" if name == "kernels" else ""
            changed.append(f"--{name}: {saved[name]!r} -> {new!r}{why}")
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
    elapsed = float(state.get("elapsed_s", 0.0))
    loop = LoopState(epoch=state["epoch"] + 1, batch=batch, global_step=state["global_step"], sums=sums,
                     clock_s=elapsed)
    best = Best.from_dict(state["best"]) if state.get("best") else None
    return loop, best, elapsed
