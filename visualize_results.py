"""Training dashboard for one run or every run under a folder.

Writes ``<run>/plots/training_dashboard.png`` (three rows: accuracy / loss / live statistics; gap analysis /
convergence / performance metrics; summary tables; plus an attention row with --enhanced_attention) and
``<run>/plots/training_metrics.json`` (every number on the figure; accuracies as fractions). A run still
training is drawn from the epochs written so far. Metric definitions and thresholds:
``perceiver/viz/training_metrics.py``.

    python visualize_results.py                                  # every run under logs/
    python visualize_results.py --output_dir logs/my_experiment
    python visualize_results.py --output_dir logs/my_experiment --experiment_name "Esperimento_Principale" \\
        --epochs 1 10 20 30 40 50 --enhanced_attention
    python visualize_results.py --run_dir logs --save_dir figures/      # all runs, figures/<run>/...
    python visualize_results.py --compare logs/run_a logs/run_b --save_dir figures/   # one figure, both runs

--compare draws no dashboards: it writes ``runs_comparison.png`` (each run's held-out and training accuracy against
the epoch, and the held-out accuracy against the time since the start) and ``runs_comparison.json`` (the last and
best figures of each run), in --save_dir or else the folder holding the first run.

--run_dir is the run to read (--output_dir, the specification's name, is the same flag); --save_dir is where the
figures go.

Exit codes: 0 when at least one dashboard was drawn; 1 with one ``error: ...`` line when none could be; 2 for
bad flags.
"""
from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")

from perceiver.viz import cli as viz_cli  # noqa: E402
from perceiver.viz import reports  # noqa: E402
from perceiver.viz.style import COLORMAPS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = viz_cli.make_parser("Training dashboard of Perceiver runs (reads logs/<experiment>/).")
    viz_cli.add_run_dir(p, "--output_dir")  # the specification's name for the run to read
    p.add_argument("--experiment_name", default=None,
                   help="title of the figure (default: the run's folder name; with --compare: 'N runs compared')")
    p.add_argument("--epochs", type=int, nargs="+", default=None,
                   help="saved attention epochs for the attention row (default: up to 6 evenly spaced)")
    p.add_argument("--enhanced_attention", action="store_true", help="add attention panels for --epochs")
    viz_cli.add_save_dir(p, "--save_dir")
    p.add_argument("--colormap", default="viridis", choices=COLORMAPS, help="colormap of the attention panels")
    p.add_argument("--alpha", type=float, default=0.6, help="opacity of the attention overlay (0-1)")
    p.add_argument("--compare", nargs="*", default=None, metavar="RUN",
                   help="draw the accuracy curves of several runs on one figure instead of a dashboard per run: the "
                        "RUNs named (run directories or folders of runs), or with no RUN every run --run_dir finds "
                        "(default: off)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG")
    p.add_argument("--formats", nargs="+", default=["png"], choices=["png", "svg", "pdf"], help="file formats")
    return p


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    viz_cli.check_alpha_dpi(parser, args)
    if args.compare is None:
        return
    if args.compare and args.output_dir:
        parser.error("give the runs to compare after --compare or with --run_dir, not both")
    if args.enhanced_attention or args.epochs:
        parser.error("--compare draws accuracy curves only; drop --enhanced_attention/--epochs, or draw the "
                     "attention panels in a run's own dashboard")


def compare(args: argparse.Namespace) -> int:
    runs = {}
    for path in args.compare or [args.output_dir]:
        runs.update((r.path.resolve(), r) for r in reports.resolve_runs(path))
    runs = list(runs.values())
    out = args.save_dir if args.save_dir is not None else runs[0].path.parent
    written = reports.render_comparison(runs, out, title=args.experiment_name, dpi=args.dpi,
                                        formats=tuple(args.formats))
    for path in written:
        reports.info(f"wrote {path}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.compare is not None:
        return compare(args)
    runs = reports.resolve_runs(args.output_dir)
    several = len(runs) > 1

    def render(run):
        out = reports.output_dir(run, args.save_dir, several)
        return reports.render_dashboard(run, out, title=args.experiment_name, epochs=args.epochs,
                                        enhanced_attention=args.enhanced_attention, cmap=args.colormap,
                                        alpha=args.alpha, dpi=args.dpi, formats=tuple(args.formats))

    return viz_cli.draw_runs(runs, render)


def cli(argv=None) -> int:
    return viz_cli.run(build_parser(), main, argv, check=check)


if __name__ == "__main__":
    sys.exit(cli())
