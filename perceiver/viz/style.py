"""One look for every figure: seaborn theme, font sizes, colours, colormaps and small drawing helpers."""
from __future__ import annotations

import matplotlib

COLORMAPS = ("viridis", "plasma", "inferno", "jet", "hot", "cool", "seismic")

COLORS = {
    "train": "#1f77b4",
    "test": "#d62728",
    "val": "#2ca02c",
    "top5": "#9467bd",
    "accent": "#ff7f0e",
    "neutral": "#7f7f7f",
}

# Training state colours (dashboard): green = converged, orange = converging, red = diverging.
STATE_COLORS = {
    "converged": "#2ca02c",
    "converging": "#ff7f0e",
    "diverging": "#d62728",
    "undetermined": "#7f7f7f",
}
DIAGNOSIS_COLORS = {
    "overfitting": "#d62728",
    "underfitting": "#ff7f0e",
    "balanced": "#2ca02c",
    "undetermined": "#7f7f7f",
}

_applied = False


def apply_style() -> None:
    """Select the Agg backend (no display needed) and the seaborn paper-like theme; idempotent."""
    global _applied
    if _applied:
        return
    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.85)
    matplotlib.rcParams.update({
        "axes.titlesize": 11,
        "axes.titleweight": "bold",
        "axes.labelsize": 10,
        "legend.fontsize": 8.5,
        "legend.framealpha": 0.85,
        "figure.titlesize": 15,
        "figure.titleweight": "bold",
        "xtick.labelsize": 8.5,
        "ytick.labelsize": 8.5,
        "image.interpolation": "nearest",
        "svg.fonttype": "none",  # keep text as text in SVG
        "pdf.fonttype": 42,  # TrueType in PDF (editable, accepted by publishers)
    })
    _applied = True


def panel_label(ax, letter: str) -> None:
    """A bold '(a)' in the upper-left corner, outside the plotting area, as in paper figures."""
    if getattr(ax, "name", "") == "3d":  # Axes3D.text wants (x, y, z, s); text2D takes axes coordinates
        ax.text2D(0.0, 1.0, f"({letter})", transform=ax.transAxes, fontsize=11, fontweight="bold",
                  ha="left", va="top")  # inside the empty corner: above it sits the (centred) title
        return
    ax.text(-0.02, 1.02, f"({letter})", transform=ax.transAxes, fontsize=11, fontweight="bold",
            ha="right", va="bottom")


def percent(x: float | None, digits: int = 2) -> str:
    """0.9134 -> '91.34%'; None/NaN -> 'n/a'."""
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.{digits}f}%"


def number(x: float | None, digits: int = 4) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-3) else f"{x:.{digits}f}"


def shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def readable_log_axis(axis, lo: float | None = None, hi: float | None = None) -> None:
    """Log-axis ticks written plainly ('0.5', '20'), at 1, 2, 5 × 10^k when the axis spans under two decades
    (``lo``/``hi``: the data range, when known), without crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    narrow = lo is None or hi is None or lo <= 0 or hi / lo < 100
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
