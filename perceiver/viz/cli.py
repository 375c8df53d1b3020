"""What the visualization scripts (`visualize_results.py`, `visualize_attention.py`, `demo_visualizations.py`)
share: the parser (one-line flag errors, each default shown once), the names of the run to read and of where to
write, flag checks, the per-run drawing loop, and the mapping of errors to exit codes.

Names: ``--run_dir`` is the run (or folder of runs) to read and ``--save_dir`` where the figures go, in every
script. The specification's names stay as aliases: ``visualize_results.py --output_dir`` (the run to read),
``visualize_attention.py`` / ``demo_visualizations.py --logs_dir`` (the run to read) and their ``--output_dir``
(where to write).

Exit codes: 0 when something was drawn; 1 with one ``error: ...`` line on stderr when nothing could be (or on
Ctrl-C); 2 with one line for bad flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from ..errors import OneLineParser, PerceiverError
from ..rundir import RunDir
from . import reports


class DefaultsOnceFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the help already states its default in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "(default" in (action.help or ""):
            return action.help
        if isinstance(action.default, (list, tuple)) and action.option_strings:  # png svg, not ['png', 'svg']
            return f"{action.help} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def make_parser(description: str) -> argparse.ArgumentParser:
    return OneLineParser(description=description, formatter_class=DefaultsOnceFormatter, allow_abbrev=False)


def add_run_dir(parser: argparse.ArgumentParser, spec_flag: str, default_text: str = "every run under logs/"
                ) -> None:
    """``--run_dir`` and the specification's name for it (``spec_flag``), one destination: the run to read."""
    parser.add_argument(spec_flag, "--run_dir", dest=spec_flag.lstrip("-"), default=None, metavar="RUN",
                        help=f"the run directory to read, or a folder holding several runs (default: {default_text})")


def add_save_dir(parser: argparse.ArgumentParser, *flags: str, default_text: str = "<run>/plots/") -> None:
    """``--save_dir`` (and the older name, if the script has one): where the figures are written."""
    parser.add_argument(*flags, dest=flags[0].lstrip("-"), default=None, metavar="DIR",
                        help=f"where to write the figures; one sub-folder per run for several runs "
                             f"(default: {default_text})")


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
    reports.forget_skipped()
    try:
        return main(args)
    except PerceiverError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
