"""Checkpoints: what one holds (`build_checkpoint`), atomic save, safe load (``weights_only=True``), RNG states.

A checkpoint is a dict of tensors and plain Python values only, so it loads with ``torch.load(...,
weights_only=True)`` (no arbitrary code runs when a file is opened)::

    format         CHECKPOINT_FORMAT
    model_config   PerceiverConfig.to_dict()
    model          state_dict of the trained weights (what training resumes from)
    ema            {"decay", "updates", "weights"} of the weight average (--ema_decay), or None
    optimizer      optimizer.state_dict()
    scheduler      the LRSchedule's settings (informational: the rate is a pure function of progress)
    scaler         GradScaler.state_dict() or None
    epoch          epochs fully finished
    batch_in_epoch batches of epoch ``epoch + 1`` already trained (> 0 only for an interrupted epoch)
    global_step    optimizer steps done
    elapsed_s      training wall-clock spent so far (the --max_time budget carries over on resume)
    best           {"metric": "val_acc" | "last", "value": float, "epoch": int}: what best.pt follows
    partial        `perceiver.engine.EpochSums` of an interrupted epoch, over all ranks, or None
    args           the resolved command-line arguments
    rng            this process's python, numpy, torch (and cuda) generator states
    rng_ranks      every rank's generator states (a distributed run resumes each rank's dropout stream)
    world_size     processes that trained it (a resume must use as many)
    finished       True once the run reached its end (last epoch or time budget)
    torch_version  the PyTorch that wrote it

`model_weights(state)` picks the weights to evaluate or deploy: the average when there is one. Files are written
with `perceiver.rundir.atomic_write`: a crash or a failed write (disk full) mid-save leaves the previous checkpoint
intact and no temporary file.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .rundir import RunDir, atomic_write

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "model_config", "model", "optimizer", "epoch", "global_step", "args")


def build_checkpoint(*, config, model, ema, optimizer, schedule, scaler, epoch: int, batch_in_epoch: int,
                     global_step: int, elapsed_s: float, best: dict, partial: dict | None, args: dict,
                     rng: dict, rng_ranks: list[dict], world_size: int, finished: bool) -> dict:
    """The checkpoint dict (keys documented above) from the live training objects."""
    return {
        "format": CHECKPOINT_FORMAT, "model_config": config.to_dict(), "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None, "optimizer": optimizer.state_dict(),
        "scheduler": dict(vars(schedule)), "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch, "batch_in_epoch": batch_in_epoch, "global_step": global_step, "elapsed_s": elapsed_s,
        "best": dict(best), "partial": partial, "args": args, "rng": rng, "rng_ranks": rng_ranks,
        "world_size": world_size, "finished": finished, "torch_version": str(torch.__version__),
    }


def model_weights(state: dict) -> dict:
    """The weights to evaluate or deploy: the weight average when the run kept one, else the trained weights."""
    ema = state.get("ema")
    return ema["weights"] if ema else state["model"]


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` atomically; a failed write (disk full, ...) is one `WriteError` line, the old file intact."""
    path = Path(path)
    in_run = path.parent.name == "checkpoints"  # <run>/checkpoints/X.pt: the error says how to resume that run
    with RunDir(path.parent.parent).writing() if in_run else contextlib.nullcontext():
        atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Load and sanity-check a checkpoint; any problem becomes one `CheckpointError` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was truncated; delete it, or restart "
                              f"the run with --overwrite")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, foreign pickle: all mean "not a usable checkpoint"
        text = str(e)
        if "WeightsUnpickler error:" in text:  # keep the cause, not torch's page of advice
            text = text.split("WeightsUnpickler error:", 1)[1].split(". ")[0]
        reason = " ".join(text.split())[:200] or type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or not a train.py checkpoint ({type(e).__name__}: "
                              f"{reason}); restore it or restart the run with --overwrite") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"checkpoint {path} was not written by train.py (missing {', '.join(missing)})")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, this train.py reads format "
                              f"{CHECKPOINT_FORMAT}")
    check_model_config_values(path, state["model_config"])
    return state


def _fits(value, annotation: str) -> bool:
    """Whether ``value`` is of the type a `PerceiverConfig` field annotation (a string such as "int | None") names."""
    for option in (part.strip() for part in annotation.split("|")):
        if option == "None" and value is None:
            return True
        if option == "bool" and isinstance(value, bool):
            return True
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            return True
        if option == "str" and isinstance(value, str):
            return True
        if option.startswith(("tuple[", "list[")) and isinstance(value, (list, tuple)):
            inner = [t.strip() for t in option[option.index("[") + 1:-1].split(",")]
            return len(inner) == len(value) and all(_fits(v, t) for v, t in zip(value, inner))
        if option not in ("None", "bool", "int", "float", "str") and not option.startswith(("tuple[", "list[")):
            return True  # a type this check does not know: PerceiverConfig's own checks judge it
    return False


def check_model_config_values(path: str | os.PathLike, model_config) -> None:
    """A checkpoint's model configuration must build a `PerceiverConfig`: every value of its field's type (an int
    where an int belongs, a finite float, ...) and accepted by its checks; else one `CheckpointError` line."""
    from dataclasses import fields

    from .config import PerceiverConfig

    if not isinstance(model_config, dict):
        raise CheckpointError(f"checkpoint {path}: its model_config is a {type(model_config).__name__}, not a dict; "
                              f"the file was edited or damaged")
    wrong = [f"{f.name}={model_config[f.name]!r}, expected {f.type}" for f in fields(PerceiverConfig)
             if f.name in model_config and not _fits(model_config[f.name], str(f.type))]
    if wrong:
        raise CheckpointError(f"checkpoint {path}: its model configuration holds values of the wrong type "
                              f"({'; '.join(wrong)}); the file was edited or damaged")
    try:
        PerceiverConfig.from_dict(model_config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: its model configuration does not fit this version of perceiver "
                              f"({e})") from None


def config_diff(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every key whose value differs (keys missing on one side included)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def check_model_config(path: str | os.PathLike, saved: dict, current: dict) -> None:
    diff = config_diff(saved, current)
    if diff:
        raise CheckpointError(f"checkpoint {path} belongs to a different model ({'; '.join(diff)}); drop the "
                              f"differing flags to resume it, or start a new run (new --experiment_name)")


def load_model_weights(path: str | os.PathLike, model: torch.nn.Module, state: dict, *,
                       weights: str = "eval") -> None:
    """Load ``weights="eval"`` (the average if any, see `model_weights`) or ``"train"`` (what training resumes)."""
    stored = model_weights(state) if weights == "eval" else state["model"]
    if not isinstance(stored, dict):
        raise CheckpointError(f"checkpoint {path}: its weights are a {type(stored).__name__}, not a state dict")
    try:
        model.load_state_dict(stored)
    except RuntimeError as e:
        detail = weights_mismatch(model.state_dict(), stored)
        if not detail:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path}: the weights do not fit the model ({detail})") from None


def weights_mismatch(expected: dict, stored: dict, *, show: int = 6) -> str:
    """The missing and unexpected weight names and the shape mismatches of ``stored`` against ``expected``."""
    def names(keys) -> str:
        keys = sorted(keys)
        more = f" and {len(keys) - show} more" if len(keys) > show else ""
        return ", ".join(keys[:show]) + more

    missing = set(expected) - set(stored)
    unexpected = set(stored) - set(expected)
    shapes = [f"{k} {tuple(getattr(stored[k], 'shape', ()))} in the checkpoint, {tuple(expected[k].shape)} in the "
              f"model" for k in sorted(set(expected) & set(stored))
              if tuple(getattr(stored[k], "shape", ())) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {names(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {names(unexpected)}")
    if shapes:
        more = f" and {len(shapes) - show} more" if len(shapes) > show else ""
        parts.append(f"shape of {', '.join(shapes[:show])}{more}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------ RNG states


def capture_rng() -> dict:
    """Every global generator's state, as tensors and plain values (``weights_only``-safe)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _as_tuple(x):
    """random.setstate wants nested tuples; a serialised state may come back with lists."""
    if isinstance(x, (list, tuple)):
        return tuple(_as_tuple(v) for v in x)
    return x
