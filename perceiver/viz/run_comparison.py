"""Several runs on one figure: their accuracy curves against the epoch and against the training time.

``runs_comparison.png``: (a) each run's held-out accuracy (solid) and training accuracy (dashed) after every
epoch; (b) the held-out accuracy against the wall-clock time since the run started, which is the axis that compares
runs of different speeds at one budget. The held-out accuracy is the validation accuracy of a run trained with
``--val_split`` and the test accuracy otherwise; the legend says which. ``runs_comparison.json`` holds the figures
behind the legend, one entry per run. A last epoch that ``--max_time`` cut short counts for the part of the images
it trained on, and its training accuracy is left out below a tenth of an epoch.
"""
from __future__ import annotations

import numpy as np

from . import training_metrics as tm
from .style import apply_style, panel_label, percent, shorten

HOURS_FROM_S = 2 * 3600  # runs longer than this are drawn in hours, shorter ones in minutes
MIN_TRAIN_FRACTION = 0.1  # a cut last epoch's training accuracy counts from this part of an epoch on


def held_out_name(series: tm.Series) -> str:
    """``val_acc`` for a run with a validation split, ``test_acc`` otherwise."""
    return "val_acc" if series.has("val_acc") else "test_acc"


def epoch_fractions(series: tm.Series) -> np.ndarray:
    """The part of the training images each epoch trained on: 1 for a whole epoch, less for one that
    ``--max_time`` cut short (1 throughout when the rows do not say)."""
    samples = series.get("train_samples")
    if len(series) < 2 or not np.isfinite(samples).all():
        return np.ones(len(series))
    return samples / samples.max()


def epochs_trained(series: tm.Series) -> float:
    """Epochs as passes over the training images: a cut last epoch counts for its part (12.2, not 13)."""
    return round(float(epoch_fractions(series).sum()), 1)


def train_accuracy(series: tm.Series) -> np.ndarray:
    """Each epoch's training accuracy, left out (NaN) for an epoch cut short before it trained on a tenth of the
    images: a few batches' accuracy, under a rate decayed to zero, says little about the epoch before."""
    acc = series.get("train_acc").copy()
    acc[epoch_fractions(series) < MIN_TRAIN_FRACTION] = np.nan
    return acc


def summary(name: str, series: tm.Series) -> dict:
    """The last epoch's figures of one run, and its best held-out epoch (accuracies as fractions)."""
    key = held_out_name(series)
    held = series.get(key)
    finite = np.isfinite(held)
    best = int(np.nanargmax(np.where(finite, held, -np.inf))) if finite.any() else None
    speed = series.get("samples_per_s")
    speed = speed[np.isfinite(speed)]
    return {
        "run": name,
        "held_out": key.removesuffix("_acc"),
        "last_epoch": int(series.epochs[-1]),
        "epochs": epochs_trained(series),
        "last_acc": tm.finite_last(held),
        "best_acc": float(held[best]) if best is not None else None,
        "best_epoch": int(series.epochs[best]) if best is not None else None,
        "last_train_acc": tm.finite_last(train_accuracy(series)),
        "samples_per_s": float(np.median(speed)) if len(speed) else None,  # median: the first epoch may compile
        "elapsed_s": tm.finite_last(series.get("elapsed_s")),
    }


def comparison_figure(runs: list[tuple[tm.Series, dict]], title: str | None = None):
    """The two-panel figure of ``runs``, each a (metrics series, its `summary`) pair."""
    apply_style()
    import matplotlib.pyplot as plt
    import seaborn as sns

    colors = sns.color_palette("tab10" if len(runs) <= 10 else "husl", len(runs))
    fig, (ax_epoch, ax_time) = plt.subplots(1, 2, figsize=(13, 5.2))
    longest = max(info["elapsed_s"] or 0.0 for _, info in runs)
    unit, scale = ("hours", 3600.0) if longest > HOURS_FROM_S else ("minutes", 60.0)
    for (s, info), color in zip(runs, colors):
        key = held_out_name(s)
        label = (f"{shorten(info['run'], 40)}: {info['held_out']} {percent(info['last_acc'], 1)}, "
                 f"train {percent(info['last_train_acc'], 1)}, {info['epochs']:g} epochs")
        ax_epoch.plot(s.epochs, s.get(key), "-", color=color, lw=1.6, label=label)
        if s.has("train_acc"):
            ax_epoch.plot(s.epochs, train_accuracy(s), "--", color=color, lw=1.1, alpha=0.8)
        if s.has("elapsed_s"):
            ax_time.plot(s.get("elapsed_s") / scale, s.get(key), "-", marker=".", ms=3, color=color, lw=1.4)
    ax_epoch.set(xlabel="epoch", ylabel="accuracy",
                 title="held-out (solid) and training (dashed) accuracy")
    ax_time.set(xlabel=f"time since the start ({unit})", ylabel="held-out accuracy",
                title="held-out accuracy against the training time")
    for ax in (ax_epoch, ax_time):
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    panel_label(ax_epoch, "a")
    panel_label(ax_time, "b")
    ncol = 1 if len(runs) == 1 else 2
    rows = -(-len(runs) // ncol)
    fig.legend(*ax_epoch.get_legend_handles_labels(), loc="lower center", ncol=ncol, frameon=False)
    fig.suptitle(title or f"{len(runs)} runs compared")
    fig.tight_layout(rect=(0, 0.02 + 0.045 * rows, 1, 0.95))
    return fig
