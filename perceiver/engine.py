"""One training epoch and one evaluation pass; both return plain metric dicts.

    stats = train_one_epoch(model, loader, optimizer, state=state, device=device, pos=pos, amp=amp, ...)
    # {"loss", "acc", "n", "batches", "steps", "time_s", "samples_per_s", "complete", "stopped"}
    stats = evaluate(model, loader, device=device, pos=pos, amp=amp, num_classes=10)
    # {"loss", "acc", "acc_top5", "n", "confusion", "time_s"}

Accuracies are fractions in [0, 1]. Losses are means over samples (training loss includes label smoothing, the
evaluation loss never does). In a distributed run both are all-reduced over the ranks.

Gradient accumulation: the batches of an epoch are cut into groups of ``accum_steps``; each batch's loss is divided
by the size of its group (the last group of an epoch may be shorter), so ``k`` batches of ``b`` samples give the
gradient of one batch of ``k*b``. One optimizer step per group; DDP gradients are synchronised only on the last
batch of a group (``no_sync``).

Mixed precision (`setup_amp`): bfloat16 autocast on CUDA when supported, else float16 with a `GradScaler`; on CPU,
bfloat16 autocast (correct but usually slower than float32 there; the trainer warns).

Fault injection for tests: the environment variable ``PERCEIVER_FAULT`` holds comma-separated ``kind:N`` items
(`parse_faults`); ``nan_step:N`` turns the loss of optimizer step N (1-based, global) into NaN. The trainer reads
``sigint_step``, ``sigterm_step``, ``double_sigint_step`` (a signal sent to itself after that step) and
``kill_epoch`` (SIGKILL after that epoch's checkpoint).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .distributed import DistInfo, all_reduce
from .errors import PerceiverError

#: metrics.jsonl fields that measure time, not learning: they differ between otherwise identical runs.
TIMING_FIELDS = ("epoch_time_s", "train_time_s", "eval_time_s", "samples_per_s", "elapsed_s")


class NonFiniteLossError(PerceiverError):
    """The loss became NaN or infinite; the weights of that step were not updated."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.step = epoch, step
        super().__init__(f"non-finite loss at epoch {epoch} step {step}")


def parse_faults(text: str | None = None) -> dict[str, int]:
    text = os.environ.get("PERCEIVER_FAULT", "") if text is None else text
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, _, n = item.partition(":")
        out[kind] = int(n)
    return out


# ------------------------------------------------------------------------------------------- mixed precision


@dataclass
class Amp:
    enabled: bool = False
    dtype: torch.dtype | None = None
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = None

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if not self.enabled:
            return "off (float32)"
        return f"{str(self.dtype).replace('torch.', '')} autocast" + (" + GradScaler" if self.scaler else "")


def setup_amp(use_amp: bool, device: torch.device) -> Amp:
    if not use_amp:
        return Amp(device_type=device.type)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Amp(True, torch.bfloat16, "cuda")
        return Amp(True, torch.float16, "cuda", torch.amp.GradScaler("cuda"))
    return Amp(True, torch.bfloat16, device.type)


def compute_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


# --------------------------------------------------------------------------------------------------- training


@dataclass
class LoopState:
    """Where training stands; the trainer checkpoints it and `train_one_epoch` advances it."""

    epoch: int = 1            # the epoch being trained (1-based)
    batch: int = 0            # batches of this epoch already trained
    global_step: int = 0      # optimizer steps done since the start of the run
    sums: dict = field(default_factory=lambda: {"loss_sum": 0.0, "correct": 0, "n": 0, "time_s": 0.0})

    def reset_epoch_sums(self) -> None:
        self.sums = {"loss_sum": 0.0, "correct": 0, "n": 0, "time_s": 0.0}


@dataclass
class StepInfo:
    epoch: int
    step_in_epoch: int
    global_step: int
    batch: int
    loss: float
    lr: float
    grad_norm: float | None = None


def _no_sync(model, active: bool):
    if active and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def train_one_epoch(model, loader, optimizer, *, state: LoopState, device: torch.device,
                    pos: torch.Tensor | None, amp: Amp, accum_steps: int = 1, grad_clip: float = 0.0,
                    label_smoothing: float = 0.0, limit_batches: int | None = None,
                    set_lr: Callable[[int], float] | None = None,
                    on_step: Callable[[StepInfo], bool] | None = None,
                    info: DistInfo | None = None, show_progress: bool = True) -> dict:
    """Train from batch ``state.batch`` of epoch ``state.epoch`` to its end (or until ``on_step`` says stop).

    ``loader`` must yield this epoch's batches from ``state.batch`` on (the trainer's sampler skips the rest).
    ``set_lr(global_step)`` sets and returns the rate of the step about to be taken; ``on_step`` runs after
    every optimizer step and returns True to stop at that step boundary.
    """
    info = info or DistInfo(device=device)
    model.train()
    total = state.batch + len(loader)
    if limit_batches:
        total = min(total, limit_batches)
    faults = parse_faults()
    sums = state.sums
    start_batch, start_time = state.batch, time.perf_counter()
    group_loss, group_bad, stopped = 0.0, False, False
    lr = optimizer.param_groups[0]["lr"]
    bar = tqdm(total=total, initial=state.batch, desc=f"epoch {state.epoch} train", leave=False,
               disable=not (show_progress and info.is_main and sys.stdout.isatty()), dynamic_ncols=True)
    it = iter(loader)
    while state.batch < total:
        try:
            x, y = next(it)
        except StopIteration:
            break
        b = state.batch
        group_start = (b // accum_steps) * accum_steps
        group_size = min(accum_steps, total - group_start)
        last_in_group = b + 1 == group_start + group_size
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _no_sync(model, info.enabled and not last_in_group):
            with amp.autocast():
                logits = model(x, pos)
            loss = compute_loss(logits, y, label_smoothing)
            if faults.get("nan_step") == state.global_step + 1:
                loss = loss * float("nan")
            backward = loss / group_size
            (amp.scaler.scale(backward) if amp.scaler else backward).backward()
        loss_value = loss.item()
        group_bad |= not math.isfinite(loss_value)
        group_loss += loss_value / group_size
        sums["loss_sum"] += loss_value * len(y)
        sums["correct"] += int((logits.detach().argmax(dim=-1) == y).sum().item())
        sums["n"] += len(y)
        state.batch = b + 1
        bar.update(1)
        if not last_in_group:
            continue

        # ---- optimizer step (end of an accumulation group)
        bad = all_reduce(torch.tensor([float(group_bad)], device=device), info, op="max").item() > 0
        step_in_epoch = (b // accum_steps) + 1
        if bad:
            optimizer.zero_grad(set_to_none=True)
            bar.close()
            raise NonFiniteLossError(state.epoch, step_in_epoch)
        if set_lr is not None:
            lr = set_lr(state.global_step)
        grad_norm = None
        if amp.scaler:
            amp.scaler.unscale_(optimizer)
        if grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        if amp.scaler:
            amp.scaler.step(optimizer)
            amp.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        elapsed = sums["time_s"] + time.perf_counter() - start_time
        bar.set_postfix(loss=f"{group_loss:.3f}", acc=f"{sums['correct'] / max(1, sums['n']):.3f}",
                        sps=f"{sums['n'] / max(elapsed, 1e-9):.0f}")
        step = StepInfo(state.epoch, step_in_epoch, state.global_step, state.batch, group_loss, lr, grad_norm)
        group_loss, group_bad = 0.0, False
        if on_step is not None and on_step(step):
            stopped = True
            break
    bar.close()
    sums["time_s"] += time.perf_counter() - start_time

    totals = torch.tensor([sums["loss_sum"], sums["correct"], sums["n"]], dtype=torch.float64, device=device)
    loss_sum, correct, n = all_reduce(totals, info).tolist()
    return {
        "loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "n": int(n),
        "batches": state.batch, "batches_this_call": state.batch - start_batch, "batches_total": total,
        "steps": state.global_step, "time_s": sums["time_s"],
        "samples_per_s": n / max(sums["time_s"], 1e-9), "complete": state.batch >= total, "stopped": stopped,
    }


# ------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, loader, *, device: torch.device, pos: torch.Tensor | None, amp: Amp | None = None,
             num_classes: int, limit_batches: int | None = None, info: DistInfo | None = None,
             show_progress: bool = True, desc: str = "eval") -> dict:
    """Loss, top-1/top-5 accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    info = info or DistInfo(device=device)
    amp = amp or Amp(device_type=device.type)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    k = min(5, num_classes)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.float64, device=device)
    total = len(loader) if not limit_batches else min(len(loader), limit_batches)
    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
               disable=not (show_progress and info.is_main and sys.stdout.isatty()))
    for i, (x, y) in enumerate(loader):
        if i >= total:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with amp.autocast():
            logits = model(x, pos)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        top5 += (logits.topk(k, dim=-1).indices == y[:, None]).any(dim=-1).sum().double()
        confusion += torch.bincount(y * num_classes + logits.argmax(dim=-1),
                                    minlength=num_classes * num_classes).double()
        bar.update(1)
    bar.close()
    all_reduce(loss_sum, info)
    all_reduce(top5, info)
    all_reduce(confusion, info)
    model.train(was_training)
    cm = confusion.view(num_classes, num_classes).cpu().numpy().astype(np.int64)
    n = int(cm.sum())
    out = {"loss": float(loss_sum) / max(n, 1), "acc": float(np.trace(cm)) / max(n, 1), "n": n,
           "confusion": cm, "time_s": time.perf_counter() - start}
    if num_classes > 5:
        out["acc_top5"] = float(top5) / max(n, 1)
    return out


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
    """Recall of each class (None for a class absent from the split)."""
    rows = confusion.sum(axis=1)
    return [float(confusion[i, i] / rows[i]) if rows[i] else None for i in range(len(rows))]
