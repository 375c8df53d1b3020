"""Panels shared by the attention figures: the input (image or 3-D cloud), heatmaps, overlays and the three
statistics panels (per latent, per input position, entropy and sparsity)."""
from __future__ import annotations

import numpy as np

from . import attention_stats as st
from .selection import AttentionView
from .style import COLORS, panel_label, readable_log_axis

CLOUD_VIEWS = ((20, -60), (20, 30), (75, -90))  # (elevation, azimuth) of the 3-D views


# ------------------------------------------------------------------------------------------------ inputs


def image_rgb(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(array for imshow, cmap): grey images get cmap 'gray'."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        return img[..., 0], "gray"
    return img, None


def grayscale(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])[: img.shape[-1]] if img.shape[-1] >= 3 else img[..., 0]
    return img / 255.0 if img.max() > 1.0 else img


def draw_image(ax, image: np.ndarray, title: str) -> None:
    img, cmap = image_rgb(image)
    ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=255 if cmap else None)
    ax.set_title(title)
    _no_ticks(ax)


def draw_heatmap(ax, grid: np.ndarray, cmap: str, title: str, vmin=None, vmax=None, colorbar=True, label=None):
    m = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title)
    _no_ticks(ax)
    if colorbar:
        cb = ax.figure.colorbar(m, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=7.5)
        if label:
            cb.set_label(label, fontsize=8.5)
    return m


def draw_overlay(ax, image: np.ndarray, grid: np.ndarray, cmap: str, alpha: float, title: str,
                 mask: np.ndarray | None = None, vmin=None, vmax=None, colorbar=True, label=None):
    """Attention over a greyscale copy of the image (so the colormap reads clearly); top-k regions outlined."""
    ax.imshow(grayscale(image), cmap="gray", vmin=0, vmax=1)
    m = ax.imshow(grid, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.4)
        ax.contour(mask.astype(float), levels=[0.5], colors="black", linewidths=0.6, linestyles="--")
    ax.set_title(title)
    _no_ticks(ax)
    if colorbar:
        cb = ax.figure.colorbar(m, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=7.5)
        cb.solids.set_alpha(1.0)
        if label:
            cb.set_label(label, fontsize=8.5)
    return m


def draw_cloud(ax, points: np.ndarray, values: np.ndarray | None, cmap: str, title: str, view=(20, -60),
               alpha: float = 0.9, vmin=None, vmax=None, highlight: np.ndarray | None = None,
               size: float | None = None):
    """3-D scatter of a point cloud, points coloured by ``values`` (most attended drawn last, on top)."""
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    size = size if size is not None else float(np.clip(6000.0 / max(n, 1), 2.0, 30.0))
    if values is None:
        m = ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=pts[:, 2], cmap="Greys", s=size, alpha=0.8,
                       vmin=pts[:, 2].min() - np.ptp(pts[:, 2]), depthshade=False, linewidths=0)
    elif highlight is not None:
        rest = ~highlight
        ax.scatter(pts[rest, 0], pts[rest, 1], pts[rest, 2], color="0.75", s=size * 0.6, alpha=0.35,
                   depthshade=False, linewidths=0)
        order = np.flatnonzero(highlight)[np.argsort(values[highlight])]
        m = ax.scatter(pts[order, 0], pts[order, 1], pts[order, 2], c=values[order], cmap=cmap, s=size * 2.5,
                       alpha=max(alpha, 0.6), vmin=vmin, vmax=vmax, depthshade=False, edgecolors="k",
                       linewidths=0.3)
    else:
        order = np.argsort(values)
        m = ax.scatter(pts[order, 0], pts[order, 1], pts[order, 2], c=values[order], cmap=cmap, s=size,
                       alpha=alpha, vmin=vmin, vmax=vmax, depthshade=False, linewidths=0)
    center = (pts.max(0) + pts.min(0)) / 2
    radius = max(float(np.ptp(pts, axis=0).max()) / 2, 1e-6)
    ax.set_xlim(center[0] - radius, center[0] + radius)
    ax.set_ylim(center[1] - radius, center[1] + radius)
    ax.set_zlim(center[2] - radius, center[2] + radius)
    try:
        ax.set_box_aspect((1, 1, 1))
    except AttributeError:  # matplotlib < 3.3
        pass
    ax.view_init(elev=view[0], azim=view[1])
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])
    ax.set_xlabel("x", labelpad=-12, fontsize=8)
    ax.set_ylabel("y", labelpad=-12, fontsize=8)
    ax.set_zlabel("z", labelpad=-12, fontsize=8)
    ax.set_title(title)
    return m


def cloud_colorbar(ax, mappable, label: str) -> None:
    cb = ax.figure.colorbar(mappable, ax=ax, fraction=0.04, pad=0.02, shrink=0.8)
    cb.ax.tick_params(labelsize=7.5)
    cb.solids.set_alpha(1.0)
    cb.set_label(label, fontsize=8.5)


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


# -------------------------------------------------------------------------------------------- statistics


def draw_row_stats(ax, view: AttentionView) -> dict:
    """Per latent (row): normalised entropy (bars) and top-5 % mass (markers); the selected latent highlighted."""
    rs = st.row_stats(view.matrix)
    m = view.num_latents
    x = np.arange(m)
    colors = np.array([COLORS["train"]] * m, dtype=object)
    if view.latent is not None:
        colors[view.latent] = COLORS["accent"]
    ax.bar(x, rs["normalized_entropy"], color=list(colors), width=0.85, label="normalised entropy H/log N")
    ax.plot(x, rs["top_mass"], "o", color=COLORS["test"], ms=max(2.0, min(5.0, 200 / m)),
            label=f"top-{st.TOP_FRACTION:.0%} mass")
    ax.axhline(st.TOP_FRACTION, color=COLORS["test"], lw=0.8, ls=":", label=f"uniform top-{st.TOP_FRACTION:.0%} mass")
    handles, labels = ax.get_legend_handles_labels()
    if view.latent is not None:
        from matplotlib.patches import Patch

        handles.append(Patch(color=COLORS["accent"]))
        labels.append(f"selected: latent {view.latent}")
    ax.set_xlim(-0.6, m - 0.4)
    ax.set_ylim(0, 1.32)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("latent index (query row)")
    ax.set_ylabel("value (0-1)")
    ax.set_title("Per-latent (row) statistics")
    ax.legend(handles, labels, loc="upper center", ncol=2, fontsize=7.5, columnspacing=1.0)
    return rs


def draw_column_stats(ax, view: AttentionView) -> dict:
    """Per input position (column): attention received, ranked, in units of the uniform level 1/N."""
    cs = st.column_stats(view.matrix)
    n = view.num_positions
    rank = np.arange(1, n + 1)
    ax.plot(rank, np.sort(cs["mean"])[::-1] * n, color=COLORS["train"], lw=1.6, label="mean over latents")
    ax.plot(rank, np.sort(cs["max"])[::-1] * n, color=COLORS["top5"], lw=1.2, label="max over latents")
    ax.plot(rank, np.sort(st.normalize(view.row))[::-1] * n, color=COLORS["accent"], lw=1.2, ls="--",
            label="selected row")
    ax.axhline(1.0, color=COLORS["neutral"], lw=0.9, ls=":", label="uniform (1/N)")
    ax.set_yscale("log")
    shown = np.concatenate([cs["mean"], cs["max"], st.normalize(view.row)]) * n
    lo = max(1e-3, float(shown[shown > 0].min()) / 2) if (shown > 0).any() else 1e-3
    ax.set_ylim(lo, max(float(shown.max()), 1.0) * 3)  # floor: a thousandth of uniform counts as "not attended"
    readable_log_axis(ax.yaxis, *ax.get_ylim())
    if n > 50:
        ax.set_xscale("log")
    ax.set_xlabel("input position rank (most attended first)" if view.attention == "cross" else "key latent rank")
    ax.set_ylabel("attention received × N")
    ax.set_title("Per-position (column) statistics")
    what = "positions" if view.attention == "cross" else "latents"
    ax.text(0.98, 0.97, f"{what} above uniform: {cs['above_uniform']:.0%}\n"
                        f"coverage (in some latent's top-{st.TOP_FRACTION:.0%}): {cs['coverage']:.0%}",
            transform=ax.transAxes, ha="right", va="top", fontsize=8,
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.7", alpha=0.9))
    ax.legend(loc="lower left")
    return cs


def draw_entropy_sparsity(ax, view: AttentionView) -> dict:
    """Cumulative attention mass (positions sorted by attention) against the uniform diagonal, with the numbers."""
    summ = st.summary(view.row)
    fx, fy = st.cumulative_mass(view.row)
    mean_rows = np.mean([st.cumulative_mass(r)[1] for r in view.matrix], axis=0)
    ax.plot(fx, fy, color=COLORS["accent"], lw=1.8, label="selected row")
    ax.plot(fx, mean_rows, color=COLORS["train"], lw=1.2, label="average latent")
    ax.plot([0, 1], [0, 1], color=COLORS["neutral"], lw=0.9, ls=":", label="uniform")
    k = st.top_k_count(summ["positions"])
    kx = k / summ["positions"]
    ax.axvline(kx, color=COLORS["test"], lw=0.8, ls="--")
    ax.plot([kx], [summ["top_mass"]], "o", color=COLORS["test"], ms=5, label=f"top {kx:.0%} of positions")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fraction of positions (most attended first)")
    ax.set_ylabel("cumulative attention mass")
    ax.set_title("Entropy and sparsity")
    text = (f"top {k} of {summ['positions']} hold {summ['top_mass']:.1%}\n"
            f"entropy H = {summ['entropy']:.3f} nats\n"
            f"H / log N = {summ['normalized_entropy']:.3f}\n"
            f"effective positions e^H = {summ['effective_positions']:.1f} / {summ['positions']}\n"
            f"sparsity (Gini) = {summ['gini']:.3f}\n"
            f"peak = {summ['peak_over_uniform']:.1f} × uniform")
    ax.text(0.97, 0.04, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=8, family="monospace",
            bbox=dict(boxstyle="round,pad=0.35", fc="white", ec="0.7", alpha=0.92))
    ax.legend(loc="center right", bbox_to_anchor=(1.0, 0.62))
    return summ


def view_title(view: AttentionView, experiment: str | None = None) -> str:
    head = f"{experiment} — " if experiment else ""
    return f"{head}epoch {view.epoch}: {view.describe()}"


def finish_six_panel(fig, gs, view: AttentionView, experiment: str | None = None) -> None:
    """The bottom row (d) per-latent, (e) per-position, (f) entropy and sparsity of the six-panel figures, and the
    figure title."""
    for letter, col, draw in (("d", 0, draw_row_stats), ("e", 1, draw_column_stats), ("f", 2, draw_entropy_sparsity)):
        ax = fig.add_subplot(gs[1, col])
        draw(ax, view)
        panel_label(ax, letter)
    fig.suptitle(view_title(view, experiment))
