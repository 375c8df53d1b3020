"""The six-panel cross-attention analysis of an image run (``comprehensive_epoch_X_analysis.png``).

(a) original image · (b) attention heatmap of the selected latent · (c) overlay on the image with the top-5 %
most attended pixels outlined · (d) per-latent statistics · (e) per-position statistics · (f) entropy and sparsity.
For permuted-pixel runs the map is first scattered back through the stored permutation, so it lines up with the
picture.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from . import attention_panels as P
from . import attention_stats as st
from .selection import AttentionView
from .style import apply_style, panel_label


def comprehensive_image_figure(view: AttentionView, cmap: str = "viridis", alpha: float = 0.6,
                               experiment: str | None = None):
    apply_style()
    fig = plt.figure(figsize=(16, 9.6), layout="constrained")
    gs = fig.add_gridspec(2, 3)
    grid = view.as_grid(view.row)
    mask = view.as_grid(st.top_mask(view.row))
    perm = " (un-permuted)" if view.permuted else ""

    ax = fig.add_subplot(gs[0, 0])
    P.draw_image(ax, view.image, f"Original image — sample {view.sample}\n{view.sample_caption()}")
    panel_label(ax, "a")

    ax = fig.add_subplot(gs[0, 1])
    who = "mean latent" if view.latent is None else f"latent {view.latent}"
    P.draw_heatmap(ax, grid, cmap, f"Attention heatmap{perm}\n{who}, {view.describe(short=True).split(';')[0]}",
                   label="attention weight")
    panel_label(ax, "b")

    ax = fig.add_subplot(gs[0, 2])
    share = st.top_mass(view.row)
    P.draw_overlay(ax, view.image, grid, cmap, alpha,
                   f"Overlay (α={alpha:g}) and top-{st.TOP_FRACTION:.0%} regions\n"
                   f"outlined pixels hold {share:.0%} of the attention", mask=mask, label="attention weight")
    panel_label(ax, "c")

    P.finish_six_panel(fig, gs, view, experiment)
    return fig
