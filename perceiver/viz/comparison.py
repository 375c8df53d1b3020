"""Figures of the demo: a side-by-side comparison of two epochs and a parametric grid (colormaps × alphas).

``epoch_comparison.png``: the same sample and latent at two epochs (default: first and last saved) on one colour
scale, their difference (later − earlier, diverging colormap centred on 0), and below the per-latent entropy of
both epochs, their cumulative-mass curves and a table of the statistics.

``parametric_analysis.png``: one attention map drawn with every colormap (rows) and several overlay opacities
(columns), to choose the rendering for a paper.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from . import attention_panels as P
from . import attention_stats as st
from .evolution import colorbar_label, draw_view_panel, shared_range
from .selection import AttentionView
from .style import COLORMAPS, COLORS, apply_style, panel_label

DEFAULT_ALPHAS = (0.3, 0.5, 0.7, 1.0)


def _difference_panel(fig, spec, a: AttentionView, b: AttentionView, title: str):
    if a.attention == "self":
        diff = b.matrix - a.matrix
    elif a.on_grid:
        diff = a.as_grid(b.row - a.row)
    else:
        diff = (st.normalize(b.row) - st.normalize(a.row)) * a.num_positions
    lim = float(np.abs(diff).max()) or 1e-12
    if a.attention == "self" or a.on_grid:
        ax = fig.add_subplot(spec)
        m = ax.imshow(diff, cmap="seismic", vmin=-lim, vmax=lim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.set_title(title)
    else:
        ax = fig.add_subplot(spec, projection="3d")
        m = P.draw_cloud(ax, a.points, diff, "seismic", title, vmin=-lim, vmax=lim)
    cb = fig.colorbar(m, ax=ax, fraction=0.046, pad=0.03)
    cb.set_label("later − earlier", fontsize=8.5)
    cb.solids.set_alpha(1.0)
    return ax


def epoch_comparison_figure(a: AttentionView, b: AttentionView, cmap: str = "viridis", alpha: float = 0.6,
                            experiment: str | None = None):
    """``a`` (earlier) and ``b`` (later): views of the same sample / latent / stage at two epochs."""
    apply_style()
    fig = plt.figure(figsize=(16, 9.6), layout="constrained")
    gs = fig.add_gridspec(2, 3)
    vmin, vmax = shared_range([a, b])
    axes = []
    for i, v in enumerate((a, b)):
        ok = "correct" if v.label == v.pred else "wrong"
        ax, m = draw_view_panel(fig, gs[0, i], v, cmap, alpha, vmin, vmax,
                                f"Epoch {v.epoch}\npred {v.class_name(v.pred)} ({ok}), H/log N = "
                                f"{st.normalized_entropy(v.row):.3f}")
        ax.title.set_fontsize(11)
        axes.append(ax)
        panel_label(ax, "ab"[i])
    cb = fig.colorbar(m, ax=axes, fraction=0.025, pad=0.01, shrink=0.9)
    cb.set_label(colorbar_label(b), fontsize=8.5)
    cb.solids.set_alpha(1.0)
    ax = _difference_panel(fig, gs[0, 2], a, b, f"Difference: epoch {b.epoch} − epoch {a.epoch}\n"
                                                 f"red = gained attention, blue = lost")
    panel_label(ax, "c")

    ax = fig.add_subplot(gs[1, 0])
    x = np.arange(a.num_latents)
    ea, eb = st.row_stats(a.matrix)["normalized_entropy"], st.row_stats(b.matrix)["normalized_entropy"]
    ax.bar(x - 0.2, ea, width=0.4, color=COLORS["neutral"], label=f"epoch {a.epoch}")
    ax.bar(x + 0.2, eb, width=0.4, color=COLORS["train"], label=f"epoch {b.epoch}")
    if b.latent is not None:
        ax.axvline(b.latent, color=COLORS["accent"], lw=1.2, ls="--", label=f"selected latent {b.latent}")
    ax.set_ylim(0, 1.25)
    ax.set_xlabel("latent index")
    ax.set_ylabel("normalised entropy H / log N")
    ax.set_title("Per-latent entropy (lower = more focused)")
    ax.legend(loc="upper center", ncol=3, fontsize=7.5)
    panel_label(ax, "d")

    ax = fig.add_subplot(gs[1, 1])
    for v, color in ((a, COLORS["neutral"]), (b, COLORS["train"])):
        fx, fy = st.cumulative_mass(v.row)
        ax.plot(fx, fy, color=color, lw=1.8, label=f"epoch {v.epoch}")
    ax.plot([0, 1], [0, 1], ":", color="0.5", lw=0.9, label="uniform")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fraction of positions (most attended first)")
    ax.set_ylabel("cumulative attention mass")
    ax.set_title("Concentration of the selected row")
    ax.legend(loc="lower right")
    panel_label(ax, "e")

    ax = fig.add_subplot(gs[1, 2])
    ax.axis("off")
    sa, sb = st.summary(a.row), st.summary(b.row)
    rows = [["entropy (nats)", f"{sa['entropy']:.3f}", f"{sb['entropy']:.3f}"],
            ["H / log N", f"{sa['normalized_entropy']:.3f}", f"{sb['normalized_entropy']:.3f}"],
            ["effective positions", f"{sa['effective_positions']:.1f}", f"{sb['effective_positions']:.1f}"],
            ["Gini sparsity", f"{sa['gini']:.3f}", f"{sb['gini']:.3f}"],
            [f"top-{st.TOP_FRACTION:.0%} mass", f"{sa['top_mass']:.1%}", f"{sb['top_mass']:.1%}"],
            ["peak / uniform", f"{sa['peak_over_uniform']:.1f}", f"{sb['peak_over_uniform']:.1f}"],
            ["prediction", a.class_name(a.pred), b.class_name(b.pred)]]
    tab = ax.table(cellText=rows, colLabels=["statistic", f"epoch {a.epoch}", f"epoch {b.epoch}"],
                   loc="center", cellLoc="center", colColours=["#dde6f0"] * 3)
    tab.auto_set_font_size(False)
    tab.set_fontsize(9.5)
    tab.scale(1.0, 1.7)
    for (r, c), cell in tab.get_celld().items():
        cell.set_edgecolor("0.75")
        if r == 0:
            cell.set_text_props(fontweight="bold")
    ax.set_title("Statistics of the selected row")
    panel_label(ax, "f")
    head = f"{experiment} — " if experiment else ""
    fig.suptitle(f"{head}epoch {a.epoch} vs epoch {b.epoch}\nsample {b.sample} ({b.class_name(b.label)}): "
                 f"{b.describe()}")
    return fig


def parametric_figure(view: AttentionView, colormaps=COLORMAPS, alphas=DEFAULT_ALPHAS,
                      experiment: str | None = None):
    """The same map in every colormap (rows) and overlay opacity (columns)."""
    apply_style()
    rows, cols = len(colormaps), len(alphas)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 1.6, 2.15 * rows + 1.2), layout="constrained",
                             squeeze=False)
    vals = view.row if view.attention == "cross" else None
    for r, cmap in enumerate(colormaps):
        for c, alpha in enumerate(alphas):
            ax = axes[r, c]
            if view.attention == "self":
                ax.imshow(np.ones_like(view.matrix), cmap="gray", vmin=0, vmax=1)
                ax.imshow(view.matrix, cmap=cmap, alpha=alpha)
            elif view.on_grid:
                ax.imshow(P.grayscale(view.image), cmap="gray", vmin=0, vmax=1)
                ax.imshow(view.as_grid(vals), cmap=cmap, alpha=alpha)
            else:  # point cloud, projected on the x-z plane (2-D keeps the grid light and legible)
                order = np.argsort(vals)
                pts = view.points[order]
                ax.scatter(pts[:, 0], pts[:, 2], c=vals[order], cmap=cmap, alpha=alpha,
                           s=float(np.clip(3000.0 / len(pts), 1.5, 20.0)), linewidths=0)
                ax.set_aspect("equal")
                ax.set_facecolor("white")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if r == 0:
                ax.set_title(f"α = {alpha:g}", fontsize=11)
            if c == 0:
                ax.set_ylabel(cmap, fontsize=11, fontweight="bold")
    head = f"{experiment} — " if experiment else ""
    what = "x-z projection, " if (view.attention == "cross" and not view.on_grid) else ""
    fig.suptitle(f"{head}parametric analysis: colormap × opacity\nepoch {view.epoch}, sample {view.sample}, "
                 f"{what}{view.describe(short=True)}", fontsize=12)
    return fig
