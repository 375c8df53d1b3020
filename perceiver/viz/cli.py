"""What the visualization scripts (`visualize_results.py`, `visualize_attention.py`, `demo_visualizations.py`)
share: flag checks, the per-run drawing loop, and the mapping of errors to exit codes.

Exit codes: 0 when something was drawn; 1 with one ``error: ...`` line on stderr when nothing could be (or on
Ctrl-C); 2 for bad flags (argparse).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from ..errors import PerceiverError
from ..rundir import RunDir
from . import reports


def check_alpha_dpi(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The flag checks of `visualize_results.py` and `visualize_attention.py` (exit 2 via ``parser.error``)."""
    if not 0.0 <= args.alpha <= 1.0:
        parser.error("--alpha must be between 0 and 1")
    if args.dpi < 20:
        parser.error("--dpi must be at least 20")


def draw_runs(runs: list[RunDir], render: Callable[[RunDir], list[Path]]) -> int:
    """Render every run and print each file written; raises `PerceiverError` when no run could be drawn."""
    written, failures = reports.for_each_run(runs, render)
    if not written:
        raise reports.nothing_drawn(failures)
    for path in written:
        reports.info(f"wrote {path}")
    return 0


def run(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], int], argv=None,
        check: Callable[[argparse.ArgumentParser, argparse.Namespace], None] = check_alpha_dpi) -> int:
    """Parse ``argv``, check the flags, run ``main``; a `PerceiverError` or Ctrl-C becomes one error line and 1."""
    args = parser.parse_args(argv)
    check(parser, args)
    try:
        return main(args)
    except PerceiverError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
