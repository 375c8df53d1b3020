"""The six-panel cross-attention analysis of a point-cloud run (``comprehensive_epoch_X_analysis.png``).

(a) the cloud (greyscale by height) · (b), (c) two more 3-D views with points coloured by the selected latent's
attention, (c) enlarging the top-5 % most attended points and greying the rest · (d) per-latent statistics ·
(e) per-point statistics · (f) entropy and sparsity.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from . import attention_panels as P
from . import attention_stats as st
from .selection import AttentionView
from .style import apply_style, panel_label


def comprehensive_pointcloud_figure(view: AttentionView, cmap: str = "viridis", alpha: float = 0.9,
                                    experiment: str | None = None):
    apply_style()
    fig = plt.figure(figsize=(16, 10), layout="constrained")
    gs = fig.add_gridspec(2, 3, height_ratios=[1.1, 1])
    values = st.normalize(view.row) * view.num_positions  # in units of the uniform level
    vmin, vmax = float(values.min()), float(values.max())  # colours span this map's range (see the colorbar)
    mask = st.top_mask(view.row)
    v1, v2, v3 = P.CLOUD_VIEWS

    ax = fig.add_subplot(gs[0, 0], projection="3d")
    P.draw_cloud(ax, view.points, None, cmap, f"Point cloud — sample {view.sample} ({view.num_positions} points)\n"
                 f"{view.sample_caption()}", view=v1)
    panel_label(ax, "a")

    ax = fig.add_subplot(gs[0, 1], projection="3d")
    who = "mean latent" if view.latent is None else f"latent {view.latent}"
    m = P.draw_cloud(ax, view.points, values, cmap, f"Attention of {who}\nview elev {v2[0]}°, azim {v2[1]}°",
                     view=v2, alpha=alpha, vmin=vmin, vmax=vmax)
    P.cloud_colorbar(ax, m, "attention × N (1 = uniform)")
    panel_label(ax, "b")

    ax = fig.add_subplot(gs[0, 2], projection="3d")
    m = P.draw_cloud(ax, view.points, values, cmap,
                     f"Top-{st.TOP_FRACTION:.0%} attended points ({st.top_mass(view.row):.0%} of mass)\n"
                     f"view elev {v3[0]}°, azim {v3[1]}°", view=v3, alpha=alpha, vmin=vmin, vmax=vmax, highlight=mask)
    P.cloud_colorbar(ax, m, "attention × N (1 = uniform)")
    panel_label(ax, "c")

    P.finish_six_panel(fig, gs, view, experiment)
    return fig
