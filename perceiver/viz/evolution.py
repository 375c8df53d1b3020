"""Attention across training (``attention_evolution_analysis.png``).

Top row: the same probe sample and the same latent at up to 8 saved epochs side by side (first and last always
included), on one shared colour scale (the range over the epochs shown) so that sharpening is visible. With
``latent="auto"`` the latent is the most concentrated one **at the last epoch**, then held fixed. Bottom row: the
trend over every saved epoch of the normalised entropy (left) and of the concentration measures, top-5 % mass and
Gini sparsity (right), for the selected latent and averaged over all latents.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from . import attention_panels as P
from . import attention_stats as st
from .selection import AttentionView
from .style import COLORS, apply_style, panel_label

MAX_COLUMNS = 8


def pick_evenly(items: list, k: int = MAX_COLUMNS) -> list:
    """At most k items, evenly spaced, first and last included."""
    if len(items) <= k:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def evolution_trends(views: list[AttentionView]) -> dict[str, np.ndarray]:
    """Per epoch: statistics of the selected row and the mean over all latents."""
    out = {k: [] for k in ("epoch", "entropy", "entropy_mean", "top_mass", "top_mass_mean", "gini", "gini_mean")}
    for v in views:
        rs = st.row_stats(v.matrix)
        one = st.summary(v.row)
        out["epoch"].append(v.epoch)
        out["entropy"].append(one["normalized_entropy"])
        out["entropy_mean"].append(float(rs["normalized_entropy"].mean()))
        out["top_mass"].append(one["top_mass"])
        out["top_mass_mean"].append(float(rs["top_mass"].mean()))
        out["gini"].append(one["gini"])
        out["gini_mean"].append(float(rs["gini"].mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def draw_view_panel(fig, spec, v: AttentionView, cmap: str, alpha: float, vmin: float, vmax: float, title: str):
    """One small panel of a view: overlay (images), 3-D scatter (clouds) or the latent matrix (self-attention)."""
    if v.attention == "self":
        ax = fig.add_subplot(spec)
        m = ax.imshow(v.matrix, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xlabel("key latent", fontsize=8)
        ax.set_ylabel("query latent", fontsize=8)
        ax.grid(False)
        ax.set_title(title, fontsize=9.5)
        return ax, m
    if v.on_grid:
        ax = fig.add_subplot(spec)
        m = P.draw_overlay(ax, v.image, v.as_grid(v.row), cmap, alpha, title, vmin=vmin, vmax=vmax, colorbar=False)
        ax.title.set_fontsize(9.5)
        return ax, m
    ax = fig.add_subplot(spec, projection="3d")
    values = st.normalize(v.row) * v.num_positions
    m = P.draw_cloud(ax, v.points, values, cmap, title, alpha=max(alpha, 0.5), vmin=vmin, vmax=vmax)
    ax.title.set_fontsize(9.5)
    return ax, m


def view_values(v: AttentionView) -> np.ndarray:
    """What a small panel colours: the matrix (self), the row (image) or the row in units of uniform (cloud)."""
    if v.attention == "self":
        return v.matrix
    if v.on_grid:
        return v.row
    return st.normalize(v.row) * v.num_positions


def shared_range(views: list[AttentionView]) -> tuple[float, float]:
    """One colour scale for panels compared side by side."""
    return (min(float(view_values(v).min()) for v in views), max(float(view_values(v).max()) for v in views))


def colorbar_label(v: AttentionView) -> str:
    return "attention × N (1 = uniform)" if (v.attention == "cross" and not v.on_grid) else "attention weight"


def evolution_figure(views: list[AttentionView], cmap: str = "viridis", alpha: float = 0.6,
                     experiment: str | None = None):
    """``views``: one per saved epoch, sorted, all with the same sample / latent selection."""
    apply_style()
    shown = pick_evenly(views)
    cols = len(shown)
    width = max(12.0, 2.6 * cols + 1.5)
    fig = plt.figure(figsize=(width, 8.2), layout="constrained")
    gs = fig.add_gridspec(2, 1, height_ratios=[1.0, 1.05])
    top = gs[0].subgridspec(1, cols)
    vmin, vmax = shared_range(shown)
    axes, mappable = [], None
    for i, v in enumerate(shown):
        ok = "✓" if v.label is not None and v.label == v.pred else "✗"
        title = f"epoch {v.epoch}\npred {v.class_name(v.pred)} {ok}"
        ax, mappable = draw_view_panel(fig, top[0, i], v, cmap, alpha, vmin, vmax, title)
        axes.append(ax)
    cb = fig.colorbar(mappable, ax=axes, fraction=0.02, pad=0.01, shrink=0.9)
    cb.set_label(colorbar_label(shown[-1]), fontsize=8.5)
    cb.solids.set_alpha(1.0)
    panel_label(axes[0], "a")

    tr = evolution_trends(views)
    bottom = gs[1].subgridspec(1, 2)
    lat = "mean latent" if shown[-1].latent is None else f"latent {shown[-1].latent}"
    marker = "o" if len(views) <= 30 else None
    ax = fig.add_subplot(bottom[0, 0])
    ax.plot(tr["epoch"], tr["entropy"], marker=marker, color=COLORS["accent"], lw=1.8, label=lat)
    ax.plot(tr["epoch"], tr["entropy_mean"], marker=marker, color=COLORS["train"], lw=1.4, ls="--",
            label="average over latents")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("normalised entropy H / log N")
    ax.set_title("Entropy over training (lower = more focused)")
    ax.legend(loc="best")
    panel_label(ax, "b")

    ax = fig.add_subplot(bottom[0, 1])
    ax.plot(tr["epoch"], tr["top_mass"], marker=marker, color=COLORS["test"], lw=1.8,
            label=f"top-{st.TOP_FRACTION:.0%} mass, {lat}")
    ax.plot(tr["epoch"], tr["top_mass_mean"], marker=marker, color=COLORS["test"], lw=1.2, ls="--",
            label=f"top-{st.TOP_FRACTION:.0%} mass, average")
    ax.plot(tr["epoch"], tr["gini"], marker=marker, color=COLORS["top5"], lw=1.8, label=f"Gini sparsity, {lat}")
    ax.plot(tr["epoch"], tr["gini_mean"], marker=marker, color=COLORS["top5"], lw=1.2, ls="--",
            label="Gini sparsity, average")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("concentration (0-1)")
    ax.set_title("Concentration over training (higher = more focused)")
    ax.legend(loc="best", ncol=2 if len(views) > 1 else 1)
    panel_label(ax, "c")
    if len(views) == 1:
        for a in fig.axes[-2:]:
            a.set_xticks(tr["epoch"])

    v = shown[-1]
    head = f"{experiment} — " if experiment else ""
    fig.suptitle(f"{head}attention evolution over {len(views)} saved epoch{'s' if len(views) != 1 else ''}\n"
                 f"sample {v.sample} ({v.class_name(v.label)}): {v.describe()}")
    return fig
