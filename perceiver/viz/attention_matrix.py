"""The six-panel analysis of latent self-attention (``comprehensive_epoch_X_self_analysis.png``).

(a) the input for context (image or cloud) · (b) the latent-by-latent attention matrix · (c) its top-5 % entries
in each query row, with the selected query latent marked · (d) per query latent statistics · (e) per key latent
statistics · (f) entropy and sparsity of the selected query row.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from . import attention_panels as P
from . import attention_stats as st
from .selection import AttentionView
from .style import COLORS, apply_style, panel_label


def comprehensive_self_figure(view: AttentionView, cmap: str = "viridis", alpha: float = 0.6,
                              experiment: str | None = None):
    apply_style()
    fig = plt.figure(figsize=(16, 9.6), layout="constrained")
    gs = fig.add_gridspec(2, 3)
    m = view.num_latents

    if view.image is not None:
        ax = fig.add_subplot(gs[0, 0])
        P.draw_image(ax, view.image, f"Input — sample {view.sample}\n{view.sample_caption()}")
    else:
        ax = fig.add_subplot(gs[0, 0], projection="3d")
        P.draw_cloud(ax, view.points, None, cmap, f"Input — sample {view.sample}\n{view.sample_caption()}")
    panel_label(ax, "a")

    ax = fig.add_subplot(gs[0, 1])
    im = ax.imshow(view.matrix, cmap=cmap, aspect="equal")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.set_label("attention weight", fontsize=8.5)
    ax.set_xlabel("key latent")
    ax.set_ylabel("query latent")
    ax.grid(False)
    ax.set_title(f"Latent self-attention ({m}×{m})\n{view.describe(short=True).split(';')[0]}")
    panel_label(ax, "b")

    ax = fig.add_subplot(gs[0, 2])
    k = st.top_k_count(m)
    top = np.zeros_like(view.matrix, dtype=float)
    idx = np.argsort(-view.matrix, axis=1, kind="stable")[:, :k]
    np.put_along_axis(top, idx, np.take_along_axis(view.matrix, idx, axis=1), axis=1)
    masked = np.ma.masked_where(top == 0, top)
    im = ax.imshow(masked, cmap=cmap, vmin=float(view.matrix.min()), vmax=float(view.matrix.max()),
                   aspect="equal")
    ax.set_facecolor("0.93")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label("attention weight", fontsize=8.5)
    if view.latent is not None:
        ax.axhline(view.latent, color=COLORS["accent"], lw=1.0, ls="--", label=f"query latent {view.latent}")
        ax.legend(loc="upper right")
    ax.set_xlabel("key latent")
    ax.set_ylabel("query latent")
    ax.grid(False)
    ax.set_title(f"Top-{st.TOP_FRACTION:.0%} keys of each query ({k} of {m})\n"
                 f"selected row holds {st.top_mass(view.row):.0%} of its mass there")
    panel_label(ax, "c")

    P.finish_six_panel(fig, gs, view, experiment)
    return fig
