"""Learning-rate schedules with linear warm-up, evaluated per optimizer step.

A schedule is a pure function of *training progress* ``t``, measured in epochs (a float: ``t = 2.5`` is half-way
through the third epoch), so the same object serves fixed-length runs and ``--max_time`` budgets:

    sched = LRSchedule("multistep", base_lr=4e-3, epochs=120, milestones=[84, 102, 114], warmup_epochs=1)
    lr = sched.lr_at(t)

Shapes (``t`` in epochs, ``E`` = ``--epochs``):

- ``multistep``: ``base_lr * gamma ** (number of milestones m with t >= m)``. Milestones count finished epochs,
  so ``--lr_milestones 84`` decays from the 85th epoch on, exactly as ``torch.optim.lr_scheduler.MultiStepLR``
  stepped once per epoch. Without ``--lr_milestones`` the milestones are 70 %, 85 % and 95 % of ``E`` (the
  Perceiver paper's ImageNet schedule: 84, 102, 114 of 120 epochs); see `default_milestones`.
- ``step``: ``base_lr * gamma ** floor(t / step_size)`` (``StepLR`` stepped per epoch).
- ``cosine``: ``eta_min + (base_lr - eta_min) * (1 + cos(pi * min(t, T_max) / T_max)) / 2`` with ``T_max``
  defaulting to ``E``; evaluated every step, so the curve is smooth rather than a staircase of epochs.

Warm-up multiplies any shape by ``min(1, (k + 1) / warmup_steps)`` where ``k`` is the 0-based optimizer step, so the
very first step already uses a small non-zero rate and the full rate is reached after ``warmup_epochs`` epochs
of steps. Warm-up is per step (not per epoch) because LAMB's first updates are the fragile ones: a one-epoch
warm-up stepped per epoch would run the whole first epoch at a tiny rate and then jump.

Under ``--max_time`` the trainer passes the progress ``t = E * max(steps done / planned steps, elapsed /
budget)`` instead of ``steps done / steps per epoch``: the shape is stretched or compressed onto whichever of the
two limits is reached first (see `progress`), while the warm-up still counts optimizer steps (``lr_at(t, step=k)``).
Compressed with the rest, a 1-epoch warm-up planned over the default 120 epochs would last 1/120 of the budget: a
few steps in a 60 s run, in which the quick start then often stalled for epochs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

SCHEDULERS = ("multistep", "cosine", "step")
LR_SCALING = ("none", "linear", "sqrt")

#: Default multistep milestones as fractions of --epochs (Perceiver paper, ImageNet: 84/102/114 of 120).
DEFAULT_MILESTONE_FRACTIONS = (0.70, 0.85, 0.95)


def default_milestones(epochs: int) -> list[int]:
    """Milestones at 70/85/95 % of ``epochs``, rounded, de-duplicated, inside ``1 .. epochs-1`` (maybe empty)."""
    out = []
    for f in DEFAULT_MILESTONE_FRACTIONS:
        m = int(math.floor(f * epochs + 0.5))  # half up, not banker's rounding
        if 1 <= m < epochs and m not in out:
            out.append(m)
    return out


def scaled_lr(lr: float, global_batch: int, *, base_batch: int, rule: str) -> float:
    """The peak rate for ``global_batch`` samples per step when ``lr`` was tuned at ``base_batch``.

    ``linear``: ``lr * global_batch / base_batch`` (Goyal et al. 2017, for SGD); ``sqrt``: ``lr * sqrt(global_batch
    / base_batch)``, the rule LAMB's authors use for large batches (You et al. 2020), and the safer one for Adam-style
    updates; ``none``: ``lr``. Either way keep a warm-up: the scaled rate is reached only after ``--warmup_epochs``.
    """
    if rule not in LR_SCALING:
        raise ValueError(f"unknown learning-rate scaling {rule!r}; choose one of {', '.join(LR_SCALING)}")
    ratio = global_batch / base_batch
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def progress(*, step: int, steps_per_epoch: int, epochs: int, elapsed_s: float | None = None,
             max_time_s: float | None = None) -> float:
    """Training progress in epochs after ``step`` optimizer steps (see the module docstring for --max_time)."""
    spe = max(1, steps_per_epoch)
    if not max_time_s:
        return step / spe
    frac = max(step / (spe * max(1, epochs)), (elapsed_s or 0.0) / max_time_s)
    return min(1.0, frac) * epochs


class LRSchedule:
    """The learning rate as a function of progress; `apply` writes it into an optimizer's param groups."""

    def __init__(self, name: str, *, base_lr: float, epochs: int, steps_per_epoch: int = 1,
                 warmup_epochs: float = 0.0, milestones: Sequence[int] | None = None, gamma: float = 0.1,
                 step_size: int = 30, t_max: float | None = None, eta_min: float = 0.0):
        if name not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
        if base_lr <= 0 or epochs < 1 or steps_per_epoch < 1 or warmup_epochs < 0 or step_size < 1:
            raise ValueError("LRSchedule: base_lr, epochs, steps_per_epoch and step_size must be positive, "
                             "warmup_epochs >= 0")
        self.name = name
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = float(warmup_epochs)
        self.milestones = sorted(default_milestones(epochs) if milestones is None else [int(m) for m in milestones])
        self.gamma = float(gamma)
        self.step_size = int(step_size)
        self.t_max = float(t_max if t_max else epochs)
        self.eta_min = float(eta_min)

    def shape_at(self, t: float) -> float:
        """The learning rate at progress ``t`` (epochs) before warm-up."""
        if self.name == "multistep":
            return self.base_lr * self.gamma ** sum(1 for m in self.milestones if t >= m - 1e-9)
        if self.name == "step":
            return self.base_lr * self.gamma ** math.floor(t / self.step_size + 1e-9)
        tc = min(max(t, 0.0), self.t_max)
        return self.eta_min + (self.base_lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * tc / self.t_max))

    def warmup_factor(self, step: float) -> float:
        """``min(1, (k + 1) / warmup_steps)`` for the 0-based optimizer step ``k`` about to run."""
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1.0) / warmup_steps)

    def lr_at(self, t: float, *, step: int | None = None) -> float:
        """The rate at progress ``t``; ``step``, the optimizer step about to run, drives the warm-up (default: the
        step of a fixed-length run at ``t``)."""
        return self.shape_at(t) * self.warmup_factor(t * self.steps_per_epoch if step is None else step)

    def lr_at_step(self, step: int) -> float:
        """The rate of 0-based optimizer step ``step`` of a fixed-length run."""
        return self.lr_at(step / self.steps_per_epoch)

    def apply(self, optimizer, t: float) -> float:
        """Set every param group's ``lr`` for progress ``t``; returns it."""
        lr = self.lr_at(t)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def describe(self) -> str:
        shape = {
            "multistep": f"x{self.gamma:g} at epochs {self.milestones}",
            "step": f"x{self.gamma:g} every {self.step_size} epochs",
            "cosine": f"cosine to {self.eta_min:g} over {self.t_max:g} epochs",
        }[self.name]
        warm = f", linear warm-up over {self.warmup_epochs:g} epochs (per step)" if self.warmup_epochs else ""
        return f"{self.name}: lr {self.base_lr:g}, {shape}{warm}"
