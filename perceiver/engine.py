"""The epoch loop and the evaluation pass, with typed results.

    result = train_one_epoch(step, loader, state=state, lr=rate, clock=seconds, wants_stop=stop_fn)  # EpochResult
    state = result.state                                  # a new LoopState: the one given is never changed
    result = evaluate(model, loader, pos=pos, num_classes=10)                                        # EvalResult

The learning rate is a function of the loop state and the training clock, ``lr(global_step, elapsed_s)``
(`LearningRate`); only a ``--max_time`` budget reads the clock, and ``clock()`` is the one place the loop reads it,
so every rank applies the same rate as long as every rank's clock gives the same value.

Accuracies are fractions in [0, 1]. Losses are means over samples (the training loss includes label smoothing and
mixing, the evaluation loss never does). In a distributed run both are all-reduced over the ranks.

Host round-trips. The loop never waits for the device inside a step: losses, correct counts and the first
non-finite step are accumulated in device tensors and read back at *sync points*: every ``sync_every`` optimizer
steps, when a stop is requested, and at the end of the epoch. There the per-step records go to ``on_steps``
(steps.jsonl), the progress bar is refreshed, and in a distributed run all ranks agree on stopping (one small
all-reduce). A non-finite loss is therefore noticed up to ``sync_every`` steps late; the weights updated after it
are never saved (checkpoints are written only after a sync point that found every loss finite), the error names
the step where it happened, and steps.jsonl keeps only the steps before it.

Gradient accumulation: the batches of an epoch are cut into groups of ``accum_steps``; each batch's loss is divided
by the size of its group (the last group of an epoch may be shorter), so ``k`` batches of ``b`` samples give the
gradient of one batch of ``k*b``. One optimizer step per group; DDP gradients are synchronised only on the last
batch of a group (``no_sync``).
"""
from __future__ import annotations

import contextlib
import enum
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .distributed import DistInfo, all_reduce
from .errors import PerceiverError
from .schedule import LRSchedule, progress
from .step import Amp, TrainStep


class NonFiniteLossError(PerceiverError):
    """The loss became NaN or infinite; no checkpoint holds weights updated with it."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.step = epoch, step
        super().__init__(f"non-finite loss at epoch {epoch} step {step}")


# ------------------------------------------------------------------------------------------------ the contract


class Stop(enum.IntEnum):
    """Why a process wants training to stop; the ranks agree on the largest wish."""

    NO = 0
    TIME = 1                  # the --max_time budget is spent: finish the run
    SIGNAL = 2                # SIGINT/SIGTERM: save the position and exit


@dataclass(frozen=True)
class EpochSums:
    """Running sums of an epoch's training metrics; checkpointed when an epoch is interrupted."""

    loss_sum: float = 0.0
    correct: float = 0.0
    n: int = 0
    time_s: float = 0.0


@dataclass(frozen=True)
class LoopState:
    """Where training stands: the trainer holds it and checkpoints it; `train_one_epoch` returns the next one."""

    epoch: int = 1            # the epoch being trained (1-based)
    batch: int = 0            # batches of this epoch already trained
    global_step: int = 0      # optimizer steps done since the start of the run
    sums: EpochSums = field(default_factory=EpochSums)  # this epoch's totals before `batch` (all ranks together)

    def next_epoch(self) -> "LoopState":
        return LoopState(epoch=self.epoch + 1, batch=0, global_step=self.global_step)


@dataclass(frozen=True)
class LearningRate:
    """The rate of the next optimizer step: ``lr(global_step, elapsed_s)``, a function of the optimizer steps done
    (`LoopState.global_step`) and, under a ``max_time`` budget only, of the training seconds spent."""

    schedule: LRSchedule
    steps_per_epoch: int
    epochs: int
    max_time: float | None = None

    def __call__(self, global_step: int, elapsed_s: float = 0.0) -> float:
        t = progress(step=global_step, steps_per_epoch=self.steps_per_epoch, epochs=self.epochs,
                     elapsed_s=elapsed_s, max_time_s=self.max_time)
        return self.schedule.lr_at(t, step=global_step)


@dataclass
class StepRecord:
    """One optimizer step, as steps.jsonl records it (the loss is this rank's mean over its accumulation group)."""

    epoch: int
    step: int                 # global optimizer step, 1-based
    step_in_epoch: int
    loss: float
    lr: float
    grad_norm: float | None = None


@dataclass(frozen=True)
class EpochResult:
    state: LoopState          # where training stands now; its sums are over every rank, from the epoch's first batch
    batches_total: int
    stop: Stop = Stop.NO      # why the ranks agreed to stop before the end of the epoch
    lr: float = math.nan      # the rate of the last optimizer step taken (NaN: none was)

    @property
    def sums(self) -> EpochSums:
        return self.state.sums

    @property
    def batches(self) -> int:
        """Batches of the epoch done."""
        return self.state.batch

    @property
    def steps(self) -> int:
        """Global optimizer steps done."""
        return self.state.global_step

    @property
    def complete(self) -> bool:
        return self.batches >= self.batches_total

    @property
    def loss(self) -> float:
        return self.sums.loss_sum / max(self.sums.n, 1)

    @property
    def acc(self) -> float:
        return self.sums.correct / max(self.sums.n, 1)

    @property
    def samples_per_s(self) -> float:
        return self.sums.n / max(self.sums.time_s, 1e-9)


@dataclass
class EvalResult:
    loss: float
    acc: float
    n: int
    confusion: np.ndarray     # (K, K) counts; rows: true class, columns: predicted
    time_s: float
    acc_top5: float | None = None  # only with more than 5 classes


# --------------------------------------------------------------------------------------------------- training


def _no_sync(model, active: bool):
    if active and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def progress_bar(total: int, *, initial: int = 0, desc: str, show: bool, info: DistInfo) -> tqdm:
    """A tqdm bar on stderr, drawn only on rank 0 when stderr is a terminal."""
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                disable=not (show and info.is_main and sys.stderr.isatty()))


def train_one_epoch(step: TrainStep, loader, *, state: LoopState, lr: Callable[[int, float], float],
                    clock: Callable[[], float] = lambda: 0.0, wants_stop: Callable[[], Stop] = lambda: Stop.NO,
                    on_steps: Callable[[list[StepRecord]], None] | None = None, accum_steps: int = 1,
                    limit_batches: int | None = None, sync_every: int = 25, info: DistInfo | None = None,
                    show_progress: bool = True) -> EpochResult:
    """Train from batch ``state.batch`` of epoch ``state.epoch`` to its end, or until the ranks agree to stop; the
    result holds the state reached (``state`` itself is left as it was).

    ``loader`` yields this epoch's batches from ``state.batch`` on (the trainer's sampler skips the rest).
    ``lr(global_step, clock())`` is the rate of the step about to be taken (`LearningRate`); ``wants_stop()`` (host
    only: signals, the budget) is asked after every step. Raises `NonFiniteLossError` at the sync point that finds
    a non-finite loss.
    """
    info = info or DistInfo(device=step.params[0].device)
    device = info.device
    step.model.train()
    epoch, batch, global_step = state.epoch, state.batch, state.global_step
    total = batch + len(loader)
    if limit_batches:
        total = min(total, limit_batches)
    epoch_start_step = global_step - batch // accum_steps
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # this call's loss sum and correct count
    first_bad = torch.zeros((), dtype=torch.float64, device=device)  # first step with a non-finite loss; 0: none
    group_loss = torch.zeros((), dtype=torch.float32, device=device)
    pending: list[tuple] = []  # (global step, step in epoch, lr, loss tensor, grad-norm tensor) not yet synced
    n_local, start, rate = 0, time.perf_counter(), math.nan
    bar = progress_bar(total, initial=batch, desc=f"epoch {epoch} train", show=show_progress, info=info)

    def sync(local_stop: Stop) -> Stop:
        """Read the device back: records, non-finite check, progress; the ranks' agreed stop decision."""
        flags = torch.stack([first_bad, torch.tensor(float(local_stop), dtype=torch.float64, device=device)])
        bad, stop = all_reduce(flags, info, op="max").tolist()
        losses = torch.stack([p[3] for p in pending]).tolist() if pending else []
        norms = [p[4] for p in pending]
        norms = torch.stack(norms).tolist() if norms and norms[0] is not None else [None] * len(pending)
        records = [StepRecord(epoch, g, s, loss, r, norm)
                   for (g, s, r, _, _), loss, norm in zip(pending, losses, norms) if not bad or g < bad]
        pending.clear()
        if on_steps is not None and records:
            on_steps(records)
        if bad:
            bar.close()
            raise NonFiniteLossError(epoch, int(bad) - epoch_start_step)
        if records:
            bar.set_postfix(loss=f"{records[-1].loss:.3f}", lr=f"{records[-1].lr:.3g}")
        return Stop(int(stop))

    stop = Stop.NO
    batches = iter(loader)
    while batch < total:
        try:
            x, y = next(batches)
        except StopIteration:
            break
        group_start = (batch // accum_steps) * accum_steps
        group_size = min(accum_steps, total - group_start)
        last_in_group = batch + 1 == group_start + group_size
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _no_sync(step.model, info.enabled and not last_in_group):
            loss, correct = step.forward_backward(x, y, scale=1.0 / group_size)
        group_loss += loss / group_size
        totals += torch.stack([loss.double() * len(y), correct.double()])
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), float(global_step + 1), first_bad)
        n_local += len(y)
        batch += 1
        bar.update(1)
        if not last_in_group:
            continue

        rate = lr(global_step, clock())
        grad_norm = step.update(rate)
        global_step += 1
        pending.append((global_step, global_step - epoch_start_step, rate, group_loss, grad_norm))
        group_loss = torch.zeros((), dtype=torch.float32, device=device)
        local_stop = wants_stop()
        # alone, a stop needs no agreement; together, the ranks meet at the same steps to decide
        if (local_stop and not info.enabled) or global_step % sync_every == 0:
            stop = sync(local_stop)
            if stop:
                break
    if not stop:
        sync(Stop.NO)
    bar.close()

    elapsed = time.perf_counter() - start
    grand = all_reduce(torch.cat([totals, torch.tensor([float(n_local)], dtype=torch.float64, device=device)]),
                       info).tolist()
    sums = state.sums
    out = EpochSums(loss_sum=sums.loss_sum + grand[0], correct=sums.correct + grand[1], n=sums.n + int(grand[2]),
                    time_s=sums.time_s + elapsed)
    return EpochResult(state=replace(state, batch=batch, global_step=global_step, sums=out), batches_total=total,
                       stop=stop, lr=rate)


# ------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, loader, *, pos: torch.Tensor | None, num_classes: int, amp: Amp | None = None,
             flip: torch.Tensor | None = None, limit_batches: int | None = None, info: DistInfo | None = None,
             show_progress: bool = True, desc: str = "eval") -> EvalResult:
    """Loss, top-1/top-5 accuracy and the confusion matrix.

    With ``flip`` (token indices that mirror an image, `perceiver.data.mixing.flip_index`), each image is also
    classified mirrored and the two views' class probabilities are averaged (test-time augmentation).
    """
    device = next(model.parameters()).device
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
    bar = progress_bar(total, desc=desc, show=show_progress, info=info)
    for i, (x, y) in enumerate(loader):
        if i >= total:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        log_probs = view_log_probs(model, x, pos, amp=amp, flip=flip)
        loss_sum += F.nll_loss(log_probs, y, reduction="sum").double()
        top5 += (log_probs.topk(k, dim=-1).indices == y[:, None]).any(dim=-1).sum().double()
        confusion += torch.bincount(y * num_classes + log_probs.argmax(dim=-1),
                                    minlength=num_classes * num_classes).double()
        bar.update(1)
    bar.close()
    stats = all_reduce(torch.cat([loss_sum[None], top5[None], confusion]), info).cpu()
    model.train(was_training)
    cm = stats[2:].view(num_classes, num_classes).numpy().astype(np.int64)
    n = int(cm.sum())
    return EvalResult(loss=float(stats[0]) / max(n, 1), acc=float(np.trace(cm)) / max(n, 1), n=n, confusion=cm,
                      time_s=time.perf_counter() - start,
                      acc_top5=float(stats[1]) / max(n, 1) if num_classes > 5 else None)


def view_log_probs(model, x: torch.Tensor, pos: torch.Tensor | None, *, amp: Amp,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """Log class probabilities (B, K); with ``flip``, of the mean probability of the image and its mirror."""
    with amp.autocast():
        logits = model(x, pos)
        if flip is None:
            return F.log_softmax(logits.float(), dim=-1)
        mirrored = model(x[:, flip], pos)
    probs = (F.softmax(logits.float(), dim=-1) + F.softmax(mirrored.float(), dim=-1)) / 2
    return probs.clamp_min(1e-30).log()


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
    """Recall of each class (None for a class absent from the split)."""
    rows = confusion.sum(axis=1)
    return [float(confusion[i, i] / rows[i]) if rows[i] else None for i in range(len(rows))]
