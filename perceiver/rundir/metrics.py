"""The schema of metrics.jsonl: one `EpochRow` per finished epoch, shared by the trainer and the visualizers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


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


