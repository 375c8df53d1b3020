"""The training dashboard (``training_dashboard.png``): three rows, plus an optional attention row.

Row 1: (a) accuracy curves, train vs test, with polynomial trend lines and the best test accuracy marked;
(b) loss curves (log scale when they span more than a decade), minima marked; (c) live statistics (run state,
last epoch, speed, ETA). Row 2: (d) generalisation gap with the overfitting / underfitting diagnosis; (e)
convergence: rolling mean of the losses with a ±1 std band and the colour-coded training state; (f) the five
performance metrics. Row 3: summary tables. Row 4 (``--enhanced_attention``): attention of one probe sample at
the chosen saved epochs. Definitions and thresholds: `perceiver.viz.training_metrics`.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from . import training_metrics as tm
from .selection import AttentionView
from .style import (COLORS, DIAGNOSIS_COLORS, STATE_COLORS, apply_style, number, panel_label, percent,
                    readable_log_axis)

_SERIES = (("train", "train", COLORS["train"], "-"), ("test", "test", COLORS["test"], "-"),
           ("val", "validation", COLORS["val"], "-"))


def _marker(n: int) -> str | None:
    return "o" if n <= 40 else None


def _epoch_axis(ax, epochs: np.ndarray) -> None:
    ax.set_xlabel("epoch")
    if len(epochs) == 1:
        ax.set_xticks(epochs)
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def draw_accuracy(ax, s: tm.Series, metrics: dict) -> None:
    n = len(s)
    for key, label, color, ls in _SERIES:
        col = f"{key}_acc"
        if not s.has(col):
            continue
        y = 100 * s.get(col)
        ax.plot(s.epochs, y, ls, color=color, lw=1.8, marker=_marker(n), ms=3.5, label=f"{label} accuracy")
        trend = tm.poly_trend(s.epochs, y)
        if trend is not None:
            deg = tm.trend_degree(int(np.isfinite(y).sum()))
            ax.plot(*trend, ":", color=color, lw=1.3, alpha=0.9, label=f"{label} trend (poly deg {deg})")
    if s.has("test_acc_top5"):
        ax.plot(s.epochs, 100 * s.get("test_acc_top5"), "--", color=COLORS["top5"], lw=1.3, label="test top-5")
    best = metrics["best"].get("test_acc")
    if best and best["value"] is not None:
        bx, by = best["epoch"], 100 * best["value"]
        ax.plot([bx], [by], "*", color="gold", mec="k", ms=14, zorder=5)
        ax.annotate(f"best {by:.2f}% (epoch {bx})", (bx, by), xytext=(0, -22), textcoords="offset points",
                    ha="center" if 0.15 < _frac(s.epochs, bx) < 0.85 else ("left" if _frac(s.epochs, bx) <= 0.15
                                                                            else "right"),
                    fontsize=8.5, fontweight="bold", bbox=dict(boxstyle="round,pad=0.2", fc="lightyellow", ec="0.6"))
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy: train vs test")
    _epoch_axis(ax, s.epochs)
    ax.legend(loc="best", ncol=2 if n >= 4 else 1)


def _frac(epochs: np.ndarray, x: float) -> float:
    span = float(epochs.max() - epochs.min())
    return 0.5 if span == 0 else (x - float(epochs.min())) / span


def _log_scale_if_wide(ax, arrays: list[np.ndarray]) -> bool:
    """Log y axis with readable ticks when `tm.use_log_scale` says the curves span too wide a range; says whether."""
    log = tm.use_log_scale(*arrays)
    if log:
        ax.set_yscale("log")
        vals = np.concatenate(arrays)
        readable_log_axis(ax.yaxis, float(np.nanmin(vals)), float(np.nanmax(vals)))
    return log


def draw_loss(ax, s: tm.Series, metrics: dict) -> None:
    n = len(s)
    arrays = []
    for key, label, color, ls in _SERIES:
        col = f"{key}_loss"
        if not s.has(col):
            continue
        y = s.get(col)
        arrays.append(y)
        ax.plot(s.epochs, y, ls, color=color, lw=1.8, marker=_marker(n), ms=3.5, label=f"{label} loss")
        best = metrics["best"].get(col)
        if best and best["value"] is not None:  # minima named in the legend: labels on the plot would collide
            ax.plot([best["epoch"]], [best["value"]], "v", color=color, mec="k", ms=9, zorder=5,
                    label=f"{label} min {number(best['value'])} (epoch {best['epoch']})")
    log = _log_scale_if_wide(ax, arrays)
    ax.set_ylabel("loss (log scale)" if log else "loss")
    ax.set_title("Loss" + (" (log scale: range > 10×)" if log else ""))
    _epoch_axis(ax, s.epochs)
    ax.legend(loc="best")


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {sec:02d}s" if m else f"{sec}s")


def _config_facts(config: dict | None) -> dict:
    config = config if isinstance(config, dict) else {}
    args = config.get("args") if isinstance(config.get("args"), dict) else {}
    dataset = config.get("dataset")
    name = args.get("dataset") or (dataset.get("name") if isinstance(dataset, dict) else dataset)
    params = config.get("num_parameters") or config.get("parameters") or config.get("params")
    if isinstance(config.get("model"), dict):
        params = params or config["model"].get("num_parameters")
    return {"dataset": name, "params": params, "epochs": args.get("epochs")}


def draw_live_stats(ax, s: tm.Series, metrics: dict, status: dict | None, config: dict | None, run_name: str):
    ax.axis("off")
    facts = _config_facts(config)
    status = status if isinstance(status, dict) else {}
    planned = status.get("epochs") or facts["epochs"]
    state = str(status.get("state", "unknown"))
    done = metrics["epochs_completed"]
    fin = metrics["final"]
    last = metrics["last_epoch"]
    times = s.get("epoch_time_s")
    mean_t = float(np.nanmean(times)) if s.has("epoch_time_s") else None
    remaining = (int(planned) - int(last)) if (planned and last is not None) else None
    eta = mean_t * remaining if (state == "running" and mean_t is not None and remaining) else None
    lines = [
        f"run       {run_name}",
        f"dataset   {facts['dataset'] or 'n/a'}" + (f"   params {int(facts['params']):,}"
                                                     if isinstance(facts["params"], (int, float)) else ""),
        f"epochs    {done} written" + (f", last {last} of {planned}" if planned else f", last {last}"),
        "",
        f"last epoch ({last})",
        f"  train  acc {percent(fin.get('train_acc')):>8}   loss {number(fin.get('train_loss')):>8}",
        f"  test   acc {percent(fin.get('test_acc')):>8}   loss {number(fin.get('test_loss')):>8}",
    ]
    if "val_acc" in fin or "val_loss" in fin:
        lines.append(f"  val    acc {percent(fin.get('val_acc')):>8}   loss {number(fin.get('val_loss')):>8}")
    if "test_acc_top5" in fin:
        lines.append(f"  test top-5 {percent(fin.get('test_acc_top5')):>8}")
    if "lr" in fin:
        lines.append(f"  lr         {fin['lr']:.3g}")
    lines += ["", f"speed     {number(mean_t, 3)} s/epoch" + (f", {fin['samples_per_s']:.0f} samples/s"
                                                             if "samples_per_s" in fin else ""),
              f"elapsed   {_duration(metrics.get('total_time_s'))}" + (f"   ETA {_duration(eta)}" if eta else "")]
    if status.get("updated"):
        lines.append(f"updated   {status['updated']}")
    color = {"running": COLORS["accent"], "finished": STATE_COLORS["converged"], "failed": COLORS["test"],
             "interrupted": COLORS["test"]}.get(state, COLORS["neutral"])
    ax.text(0.0, 1.0, f" {state.upper()} ", transform=ax.transAxes, ha="left", va="top", fontsize=11,
            fontweight="bold", color="white", bbox=dict(boxstyle="round,pad=0.3", fc=color, ec="none"))
    msg = str(status.get("message") or "")
    if msg:
        ax.text(0.32, 0.985, msg[:48], transform=ax.transAxes, ha="left", va="top", fontsize=8, color="0.3")
    ax.text(0.0, 0.88, "\n".join(lines), transform=ax.transAxes, ha="left", va="top", fontsize=9,
            family="monospace", linespacing=1.4)
    ax.set_title("Live statistics", loc="left")


def draw_gap(ax, s: tm.Series, metrics: dict) -> None:
    gap = 100 * (s.get("train_acc") - s.get("test_acc"))
    thr = 100 * tm.OVERFIT_GAP
    ok = np.isfinite(gap)
    ax.axhspan(thr, max(thr * 2, np.nanmax(gap) + 2 if ok.any() else thr * 2), color=COLORS["test"], alpha=0.08)
    ax.axhline(thr, color=COLORS["test"], lw=1, ls="--", label=f"overfitting threshold ({thr:.0f} points)")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.fill_between(s.epochs, 0, np.where(ok, gap, 0), where=ok & (gap > thr), color=COLORS["test"], alpha=0.35,
                    interpolate=True, label="overfitting epochs")
    ax.fill_between(s.epochs, 0, np.where(ok, gap, 0), where=ok & (gap <= thr), color=COLORS["train"], alpha=0.2,
                    interpolate=True)
    ax.plot(s.epochs, gap, color="0.15", lw=1.6, marker=_marker(len(s)), ms=3.5, label="gap = train − test")
    diag = metrics["gap"]["diagnosis"]
    final = metrics["gap"]["final"]
    ax.text(0.02, 0.96, f" {diag.upper()} " + (f"(final gap {100 * final:+.1f} points) " if final is not None else ""),
            transform=ax.transAxes, ha="left", va="top", fontsize=9, fontweight="bold", color="white",
            bbox=dict(boxstyle="round,pad=0.3", fc=DIAGNOSIS_COLORS.get(diag, COLORS["neutral"]), ec="none"))
    ax.set_ylabel("train − test accuracy (points)")
    ax.set_title("Generalisation gap")
    _epoch_axis(ax, s.epochs)
    ax.legend(loc="lower right")
    lo = min(-2.0, float(np.nanmin(gap)) - 2) if ok.any() else -2.0
    hi = max(thr * 2, float(np.nanmax(gap)) + 3) if ok.any() else thr * 2
    ax.set_ylim(lo, hi)


def draw_convergence(ax, s: tm.Series, metrics: dict) -> None:
    n = len(s)
    window = tm.rolling_window(n)
    arrays = []
    for key, label, color, _ in _SERIES:
        col = f"{key}_loss"
        if not s.has(col):
            continue
        y = s.get(col)
        arrays.append(y)
        mean, std = tm.rolling(y, window)
        ax.plot(s.epochs, y, ".", color=color, alpha=0.35, ms=4)
        ax.plot(s.epochs, mean, color=color, lw=1.8, label=f"{label} loss, rolling mean ({window} ep)")
        ax.fill_between(s.epochs, mean - std, mean + std, color=color, alpha=0.18,
                        label=f"{label} ±1 std" if key == "test" else None)
    _log_scale_if_wide(ax, arrays)
    st = metrics["state"]
    rel = st["relative_slope_per_epoch"]
    text = f" {st['label'].upper()} " + (f"({100 * rel:+.2f}%/epoch over last {st['window_epochs']}) "
                                         if rel is not None else "")
    ax.text(0.98, 0.96, text, transform=ax.transAxes, ha="right", va="top", fontsize=9, fontweight="bold",
            color="white", bbox=dict(boxstyle="round,pad=0.3", fc=STATE_COLORS[st["label"]], ec="none"))
    ax.set_ylabel("loss")
    ax.set_title("Convergence")
    _epoch_axis(ax, s.epochs)
    ax.legend(loc="lower left", fontsize=7.5)


_METRIC_ORDER = (("stability", "Stability"), ("convergence", "Convergence"), ("generalization", "Generalization"),
                 ("improvement", "Improvement"), ("overfitting", "Overfitting"))


def draw_performance(ax, metrics: dict) -> None:
    vals = metrics["metrics"]
    names = [label for _, label in _METRIC_ORDER]
    values = [vals[k] for k, _ in _METRIC_ORDER]
    colors = ["#4c72b0", "#55a868", "#8172b2", "#ccb974", "#c44e52"]
    y = np.arange(len(names))[::-1]
    for yi, v, c in zip(y, values, colors):
        if v is None:
            ax.text(0.02, yi, "n/a (needs ≥ 2 epochs)", va="center", fontsize=8.5, color="0.4")
            continue
        ax.barh(yi, v, color=c, height=0.6)
        ax.text(v + (0.02 if v >= 0 else -0.02), yi, f"{v:.3f}", va="center", ha="left" if v >= 0 else "right",
                fontsize=9, fontweight="bold")
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    lo = min([0.0] + [v for v in values if v is not None])
    ax.set_xlim(min(lo - 0.15, 0.0) if lo < 0 else 0.0, 1.18)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlabel("score (accuracies as fractions)")
    state = metrics["state"]["label"]
    ax.set_title("Performance metrics")
    ax.text(0.98, 0.02, f" state: {state} ", transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
            fontweight="bold", color="white", bbox=dict(boxstyle="round,pad=0.3", fc=STATE_COLORS[state], ec="none"))
    ax.grid(axis="y", visible=False)


def _table(ax, cell_text, col_labels, row_labels=None, col_colors=None, cell_colors=None, title=None):
    ax.axis("off")
    tab = ax.table(cellText=cell_text, colLabels=col_labels, rowLabels=row_labels, cellLoc="center",
                   loc="upper center", colColours=col_colors, cellColours=cell_colors)
    tab.auto_set_font_size(False)
    tab.set_fontsize(9.5)
    tab.scale(1.0, 1.6)
    for (r, c), cell in tab.get_celld().items():
        cell.set_edgecolor("0.75")
        if r == 0 or c == -1:
            cell.set_text_props(fontweight="bold")
    if title:
        ax.set_title(title, loc="left")
    return tab


def draw_summary(fig, spec, s: tm.Series, metrics: dict, status: dict | None) -> None:
    sub = spec.subgridspec(1, 2, width_ratios=[1.9, 1.0])
    best, final = metrics["best"], metrics["final"]

    def cell(name, kind):
        b = best.get(name)
        if not b or b["value"] is None:
            return ["n/a", "–"]
        return [percent(b["value"]) if kind == "acc" else number(b["value"]), str(b["epoch"])]

    rows, labels = [], []
    for key, label in (("train", "Train"), ("test", "Test"), ("val", "Validation")):
        if not (s.has(f"{key}_acc") or s.has(f"{key}_loss")):
            continue
        fa, fl = final.get(f"{key}_acc"), final.get(f"{key}_loss")
        rows.append(cell(f"{key}_acc", "acc") + cell(f"{key}_loss", "loss") + [percent(fa), number(fl)])
        labels.append(label)
    if s.has("test_acc_top5"):
        rows.append(cell("test_acc_top5", "acc") + ["–", "–", percent(final.get("test_acc_top5")), "–"])
        labels.append("Test top-5")
    ax = fig.add_subplot(sub[0, 0])
    header = "#dde6f0"
    _table(ax, rows, ["best accuracy", "best epoch", "min loss", "min-loss epoch", "final accuracy", "final loss"],
           row_labels=labels, col_colors=[header] * 6, title="Summary")

    status = status if isinstance(status, dict) else {}
    planned = status.get("epochs")
    gap = metrics["gap"]["final"]
    diag, state = metrics["gap"]["diagnosis"], metrics["state"]["label"]
    facts = [["epochs", f"{metrics['epochs_completed']}" + (f" / {planned}" if planned else "")],
             ["final gap (train − test)", f"{100 * gap:+.2f} points" if gap is not None else "n/a"],
             ["gap diagnosis", diag],
             ["training state", state],
             ["training time", _duration(metrics.get("total_time_s"))]]
    colors = [["white", "white"], ["white", "white"],
              ["white", _tint(DIAGNOSIS_COLORS.get(diag, COLORS["neutral"]))],
              ["white", _tint(STATE_COLORS.get(state, COLORS["neutral"]))], ["white", "white"]]
    ax = fig.add_subplot(sub[0, 1])
    _table(ax, facts, ["quantity", "value"], col_colors=[header] * 2, cell_colors=colors, title="Run")


def _tint(color: str, amount: float = 0.65) -> tuple:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def dashboard_figure(s: tm.Series, metrics: dict, *, title: str, run_name: str, status: dict | None = None,
                     config: dict | None = None, attention_views: list[AttentionView] | None = None,
                     cmap: str = "viridis", alpha: float = 0.6):
    apply_style()
    views = attention_views or []
    heights = [1.0, 1.0, 0.5] + ([0.95] if views else [])
    fig = plt.figure(figsize=(18, 4.6 * sum(heights) + 1.0), layout="constrained")
    gs = fig.add_gridspec(len(heights), 3, height_ratios=heights)

    for letter, (r, c), draw in (("a", (0, 0), lambda ax: draw_accuracy(ax, s, metrics)),
                                 ("b", (0, 1), lambda ax: draw_loss(ax, s, metrics)),
                                 ("d", (1, 0), lambda ax: draw_gap(ax, s, metrics)),
                                 ("e", (1, 1), lambda ax: draw_convergence(ax, s, metrics)),
                                 ("f", (1, 2), lambda ax: draw_performance(ax, metrics))):
        ax = fig.add_subplot(gs[r, c])
        draw(ax)
        panel_label(ax, letter)
    ax = fig.add_subplot(gs[0, 2])
    draw_live_stats(ax, s, metrics, status, config, run_name)
    panel_label(ax, "c")
    draw_summary(fig, gs[2, :], s, metrics, status)

    if views:
        from .evolution import colorbar_label, draw_view_panel, shared_range

        sub = gs[3, :].subgridspec(1, max(len(views), 4))  # a lone epoch stays panel-sized, on the left
        vmin, vmax = shared_range(views)
        axes, m = [], None
        for i, v in enumerate(views):
            ax, m = draw_view_panel(fig, sub[0, i], v, cmap, alpha, vmin, vmax, f"epoch {v.epoch}")
            axes.append(ax)
        cb = fig.colorbar(m, ax=axes, fraction=0.02, pad=0.01, shrink=0.9)
        cb.set_label(colorbar_label(views[-1]), fontsize=8.5)
        cb.solids.set_alpha(1.0)
        panel_label(axes[0], "g")
    n = metrics["epochs_completed"]
    head = f"{title} — training dashboard ({n} epoch{'s' if n != 1 else ''})"
    if views:
        v = views[-1]
        head += f"\nattention row (g): sample {v.sample} ({v.class_name(v.label)}), {v.describe()}"
    fig.suptitle(head)
    return fig
