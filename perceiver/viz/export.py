"""Save figures atomically in one or more formats (PNG, SVG, PDF)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import PerceiverError
from ..rundir import atomic_write

FORMATS = ("png", "svg", "pdf")


def check_formats(formats) -> tuple[str, ...]:
    out = []
    for f in formats:
        f = f.lower().lstrip(".")
        if f not in FORMATS:
            raise PerceiverError(f"unknown figure format {f!r}; choose from {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    return tuple(out)


def make_shareable(path) -> None:
    """Give a file the usual permissions (0644 under umask 022): atomic writes start from a private 0600 file."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def save_figure(fig, out_dir, stem: str, formats=("png",), dpi: int = 150, close: bool = True) -> list[Path]:
    """Write ``out_dir/stem.<fmt>`` for each format and return the paths.

    Each file is written to a temporary name and renamed, so a viewer (or `--watch` re-rendering) never sees a
    half-written image.
    """
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    try:
        for fmt in check_formats(formats):
            path = out_dir / f"{stem}.{fmt}"
            atomic_write(path, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=dpi, facecolor="white"))
            make_shareable(path)
            paths.append(path)
    except OSError as e:
        raise PerceiverError(f"cannot write figures to {out_dir}: {e.strerror or e}") from None
    finally:
        if close:
            plt.close(fig)
    return paths
