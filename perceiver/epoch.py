"""The end of an epoch: the splits evaluated, best.pt's choice, the metrics row, and what rank 0 writes.

    evals = evaluate_splits(parts, info, limit_batches=..., show_progress=...)   # {"val", "raw_val", "test"}
    best, is_best = best.after(evals, epoch)              # Best: what best.pt follows
    row = metrics_row(result, evals, best=best, ...)      # perceiver.rundir.EpochRow
    write_epoch(run, tb, parts, logging, row, evals, last=..., device=...)     # logging: settings.logging

best.pt follows the validation accuracy when there is a validation split; without one nothing is chosen on
held-out images and the run's model is its last epoch (``Best(metric="last")``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from . import probes
from .engine import EpochResult, EvalResult, evaluate, per_class_accuracy
from .rundir import EpochRow
from .settings import LogSettings
from .tracking import LOGGER_NAME

SPLIT_NAMES = {"val": "validation", "raw_val": "validation (trained weights)", "test": "test"}


def evaluate_splits(parts, info, *, limit_batches: int | None, show_progress: bool) -> dict[str, EvalResult]:
    """The splits that exist, evaluated: EvalResult of "val", "raw_val" (the trained weights) and "test"."""
    p = parts
    # with an average, the trained weights are scored on the validation split too (never on the test images)
    jobs = [("val", p.val_loader, p.eval_model), ("raw_val", p.val_loader, p.model if p.ema else None),
            ("test", p.test_loader, p.eval_model)]
    return {name: evaluate(model, loader, pos=p.pos, num_classes=p.bundle.num_classes, amp=p.amp, flip=p.flip,
                           limit_batches=limit_batches, info=info, desc=name, show_progress=show_progress)
            for name, loader, model in jobs if loader is not None and model is not None}


@dataclass(frozen=True)
class Best:
    """What best.pt follows: the validation accuracy (``"val_acc"``), or without a validation split the last epoch
    (``"last"``, ``value`` its test accuracy: nothing is chosen). Checkpoints hold it as a dict (`to_dict`)."""

    metric: str                   # "val_acc" | "last"
    value: float = -math.inf
    epoch: int = 0

    @classmethod
    def start(cls, *, validation: bool) -> "Best":
        return cls("val_acc" if validation else "last")

    @classmethod
    def from_dict(cls, d: dict) -> "Best":
        return cls(metric=d["metric"], value=d["value"], epoch=d["epoch"])

    def to_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "epoch": self.epoch}

    @property
    def val_acc(self) -> float | None:
        """The best validation accuracy so far (None without a validation split)."""
        return self.value if self.metric == "val_acc" else None

    def after(self, evals: dict[str, EvalResult], epoch: int) -> tuple["Best", bool]:
        """(the record after this epoch, whether this epoch writes best.pt)."""
        val = evals.get("val")
        if self.metric == "val_acc":
            if math.isfinite(val.loss) and val.acc > self.value:
                return Best("val_acc", val.acc, epoch), True
            return self, False
        return Best("last", evals["test"].acc, epoch), False


def metrics_row(result: EpochResult, evals: dict[str, EvalResult], *, best: Best, is_best: bool,
                elapsed_s: float) -> EpochRow:
    val, test, raw = evals.get("val"), evals["test"], evals.get("raw_val")
    eval_time = sum(r.time_s for r in evals.values())
    return EpochRow(
        epoch=result.state.epoch, step=result.state.global_step, lr=result.lr, train_loss=result.loss,
        train_acc=result.acc, train_samples=result.sums.n, train_batches=result.batches, test_loss=test.loss,
        test_acc=test.acc, test_samples=test.n, test_acc_top5=test.acc_top5, best_acc=best.val_acc, is_best=is_best,
        val_loss=val.loss if val else None, val_acc=val.acc if val else None,
        val_acc_top5=val.acc_top5 if val else None, raw_val_acc=raw.acc if raw else None,
        partial=True if not result.complete else None, epoch_time_s=result.sums.time_s + eval_time,
        train_time_s=result.sums.time_s, eval_time_s=eval_time, samples_per_s=result.samples_per_s,
        elapsed_s=elapsed_s)


def non_finite_loss(split: str, loss: float, *, epoch: int | None = None,
                    recorded_in: str | None = None) -> str:
    """One line for an evaluation loss that is NaN or infinite (the model's outputs overflowed on some item)."""
    name = SPLIT_NAMES.get(split, split)
    where = f"epoch {epoch}: " if epoch is not None else ""
    recorded = f"; {recorded_in} records it as null" if recorded_in else ""
    best = "; best.pt is not chosen on it" if split == "val" else ""
    return (f"{where}the {name} loss is {loss} (not finite): the model gives NaN or infinite outputs on some "
            f"{name.split()[0]} items{recorded}{best}")


def write_epoch(run, tb, parts, logs: LogSettings, row: EpochRow, evals: dict[str, EvalResult], *, last: bool,
                device) -> None:
    """Rank 0: the metrics row, per-class figures, TensorBoard, and the attention of the probes when due."""
    e = row.epoch
    for split, result in evals.items():
        if not math.isfinite(result.loss):
            logging.getLogger(LOGGER_NAME).warning(non_finite_loss(split, result.loss, epoch=e,
                                                                   recorded_in="metrics.jsonl"))
    run.append_metrics(row)
    if logs.save_metrics:
        for split in ("test", "val"):
            if split in evals:
                cm = evals[split].confusion
                run.append_per_class({"epoch": e, "split": split, "confusion": cm,
                                      "per_class_acc": per_class_accuracy(cm)})
    tb.scalars(row.to_json(), e)
    if logs.save_attention_maps and (e == 1 or e % logs.attention_save_interval == 0 or last):
        p = parts
        snap = probes.capture(p.eval_model, p.bundle.test, p.probe_idx, epoch=e, bundle=p.bundle, device=device,
                              pos=p.pos)
        run.save_attention(snap)
        tb.images(probes.heatmaps(snap), e)
