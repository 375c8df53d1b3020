"""Demo of every visualization, on an existing run or on a small run it trains first.

Without --logs_dir the demo uses ``logs/demo_shapes2d``; if that run is missing or unfinished it first trains it:
``python train.py --dataset shapes2d --experiment_name demo_shapes2d --save_attention_maps ...`` (a small model on
the built-in shapes, offline, about a minute on a CPU; console output in ``logs/demo_shapes2d.demo.log``). Then
it writes to ``<run>/plots/demo/`` (or --output_dir), each figure as PNG, SVG and PDF (--formats):

* ``training_dashboard`` and ``training_metrics.json``   the dashboard, with an attention row
* ``comprehensive_epoch_X_analysis`` (+ ``_self_``)       six-panel analysis of the last saved epoch
* ``attention_evolution_analysis``                        the same sample and latent across the saved epochs
* ``epoch_comparison``                                    two epochs side by side and their difference
* ``parametric_analysis``                                 one map in every colormap × several opacities

    python demo_visualizations.py                              # train the demo run if needed, draw everything
    python demo_visualizations.py --logs_dir logs/my_experiment
    python demo_visualizations.py --logs_dir logs/my_experiment --compare_epochs 10 50 --formats png
    python demo_visualizations.py --logs_dir logs/my_experiment --watch --interval 30   # follow a live run
    python demo_visualizations.py --watch                      # train the demo run in the background, live
    python demo_visualizations.py --logs_dir logs/my_experiment --interactive   # <run>/plots/explorer.html
    python demo_visualizations.py --run_dir logs/my_experiment --save_dir figures/   # --logs_dir / --output_dir

--interactive writes the attention explorer instead of the figures: one self-contained HTML page per run
(``<run>/plots/explorer.html``, or in --save_dir) that opens offline in any browser; --max_epochs and
--max_samples cap its size (see perceiver/viz/explorer.py).

--watch follows a run still training: it re-renders as each epoch lands in metrics.jsonl and stops when
status.json says the run is no longer running (or after --timeout seconds).

Exit codes: 0 when figures were drawn; 1 with one ``error: ...`` line when none could be; 2 for bad flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from perceiver.errors import PerceiverError  # noqa: E402
from perceiver.rundir import RunDir  # noqa: E402
from perceiver.viz import cli as viz_cli  # noqa: E402
from perceiver.viz import demo, explorer, reports  # noqa: E402
from perceiver.viz.style import COLORMAPS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = viz_cli.make_parser("Demo of the Perceiver visualizations.")
    viz_cli.add_run_dir(p, "--logs_dir", "logs/demo_shapes2d, trained first if missing")  # the specification's name
    viz_cli.add_save_dir(p, "--output_dir", "--save_dir", default_text="<run>/plots/demo/")
    p.add_argument("--formats", nargs="+", default=["png", "svg", "pdf"], choices=["png", "svg", "pdf"],
                   help="export formats of every figure")
    p.add_argument("--colormap", default="viridis", choices=COLORMAPS, help="colormap of the attention maps")
    p.add_argument("--alpha", type=float, default=0.6, help="opacity of the attention overlay (0-1)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0],
                   help="opacities (columns) of the parametric grid")
    p.add_argument("--compare_epochs", type=int, nargs=2, default=None, metavar=("EARLIER", "LATER"),
                   help="saved epochs to compare side by side (default: first and last)")
    p.add_argument("--sample", type=int, default=0, help="probe sample shown")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG")
    p.add_argument("--demo_epochs", type=int, default=6, help="epochs of the demo training")
    p.add_argument("--retrain", action="store_true", help="train the demo run again even if it exists")
    p.add_argument("--watch", action="store_true",
                   help="follow a run while it trains: re-render at each new epoch, stop when it finishes")
    p.add_argument("--interval", type=float, default=10.0, help="--watch: seconds between polls of status.json")
    p.add_argument("--timeout", type=float, default=3600.0, help="--watch: give up after this many seconds")
    p.add_argument("--interactive", action="store_true",
                   help="write the interactive attention explorer <run>/plots/explorer.html instead of the figures")
    explorer.add_arguments(p)
    return p


def main(args: argparse.Namespace) -> int:
    opts = demo.DemoOptions(cmap=args.colormap, alpha=args.alpha, alphas=tuple(args.alphas),
                            formats=tuple(args.formats), dpi=args.dpi, sample=args.sample,
                            compare=tuple(args.compare_epochs) if args.compare_epochs else None)
    proc = None
    if args.logs_dir is not None:
        runs = reports.resolve_runs(args.logs_dir)
    else:
        run = RunDir(reports.DEFAULT_LOGS_DIR / demo.DEMO_NAME)
        if args.watch and (args.retrain or not demo.run_is_complete(run)):
            cmd = demo.train_command(reports.DEFAULT_LOGS_DIR.resolve(), demo.DEMO_NAME, args.demo_epochs,
                                     overwrite=run.holds_run())
            log = reports.DEFAULT_LOGS_DIR / f"{demo.DEMO_NAME}.demo.log"
            reports.info(f"training the demo run in the background: {' '.join(cmd[1:])}\n  console output: {log}")
            proc = demo.start_training(cmd, log)
        elif args.retrain or not demo.run_is_complete(run):
            run = demo.make_demo_run(reports.DEFAULT_LOGS_DIR, demo.DEMO_NAME, args.demo_epochs,
                                     overwrite=run.holds_run())
        runs = [run]
    several = len(runs) > 1

    def out(run):
        return Path(args.output_dir) / run.name if (args.output_dir and several) else (
            Path(args.output_dir) if args.output_dir else run.plots_dir / ("" if args.interactive else "demo"))

    xopts = explorer.ExplorerOptions(max_epochs=args.max_epochs, max_samples=args.max_samples,
                                     cmap=args.colormap, alpha=args.alpha)

    def draw(run):
        if args.interactive:
            return explorer.write_explorer(run, out(run), xopts)
        return demo.render_demo(run, out(run), opts, only_new=args.watch)

    if args.watch:
        if several:
            raise PerceiverError(f"--watch follows one run; {args.logs_dir} holds {len(runs)}: point at one of them")
        run = runs[0]
        drawn = []

        def render():
            paths = draw(run)
            drawn.extend(paths)
            return paths

        state = demo.watch(run, render, interval=args.interval, timeout=args.timeout, proc=proc)
        if state == "timeout":
            reports.info(f"[watch] stopped after --timeout {args.timeout:g}s; the run is still training")
        else:
            reports.info(f"[watch] run {state}; figures in {out(run)}")
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if not drawn:
            raise PerceiverError(f"{run.path}: nothing drawn while watching (no epoch finished)")
        return 0

    return viz_cli.draw_runs(runs, draw)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0.0 <= args.alpha <= 1.0 or not all(0.0 <= a <= 1.0 for a in args.alphas):
        parser.error("--alpha and --alphas must be between 0 and 1")
    if args.interval <= 0 or args.timeout <= 0:
        parser.error("--interval and --timeout must be positive")
    if args.dpi < 20 or args.demo_epochs < 1:
        parser.error("--dpi must be at least 20 and --demo_epochs at least 1")


def cli(argv=None) -> int:
    return viz_cli.run(build_parser(), main, argv, check)


if __name__ == "__main__":
    sys.exit(cli())
