"""Attention analysis of the maps saved with ``train.py --save_attention_maps``.

For each saved epoch writes ``<run>/plots/comprehensive_epoch_X_analysis.png``, six panels: (a) original image,
(b) attention heatmap, (c) overlay with the top-5 % attended regions outlined; (d) per-latent (row) statistics,
(e) per-input-position (column) statistics, (f) entropy and sparsity. Point-cloud runs draw the cloud in 3-D
(several views) with points coloured by attention; permuted-pixel runs are mapped back through the stored
permutation so the heatmap lines up with the picture. With --create_evolution also writes
``attention_evolution_analysis.png`` (the same sample and latent across the saved epochs, with entropy and
concentration trends).

Selectors and defaults: --epoch (every saved epoch), --sample 0, --stage 0 (or ``all``), --head ``mean`` (mean
over heads), --latent ``auto`` = the most concentrated latent (lowest attention entropy; in the evolution figure
chosen at the last epoch and held fixed), ``mean`` = average of all latents, or an index. --attention self shows
latent self-attention (block --block, default the last of the stage). Selections other than cross-attention,
stage 0, sample 0 add a tag to the file names (``_stage1``, ``_self``, ``_sample3``).

    python visualize_attention.py                           # every run under logs/
    python visualize_attention.py --colormap viridis --alpha 0.7 --create_evolution --logs_dir logs/my_experiment
    python visualize_attention.py --logs_dir logs/my_experiment --epoch 10 --sample 2 --latent 5 --head 0
    python visualize_attention.py --logs_dir logs/my_experiment --attention self --stage all
    python visualize_attention.py --logs_dir logs/my_experiment --html   # <run>/plots/explorer.html
    python visualize_attention.py --run_dir logs/my_experiment --save_dir figures/

--html writes the interactive attention explorer instead of the figures: one self-contained HTML page per run that
opens offline in any browser, every selector above live in the page; --max_epochs and --max_samples cap its size.
--run_dir is the run to read (the same flag as the specification's --logs_dir); --save_dir is where the figures go
(also accepted as --output_dir).

Exit codes: 0 when at least one figure was drawn; 1 with one ``error: ...`` line when none could be; 2 for bad
flags.
"""
from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")

from perceiver.viz import cli as viz_cli  # noqa: E402
from perceiver.viz import explorer, reports  # noqa: E402
from perceiver.viz.style import COLORMAPS  # noqa: E402


def _head(text: str):
    if text.lower() == "mean":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a head index or 'mean', got {text!r}") from None


def _latent(text: str):
    if text.lower() in ("auto", "mean"):
        return text.lower()
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a latent index, 'auto' or 'mean', got {text!r}") from None


def _stage(text: str):
    if text.lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a stage index or 'all', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = viz_cli.make_parser("Attention-map analysis of Perceiver runs.")
    viz_cli.add_run_dir(p, "--logs_dir")  # the specification's name for the run to read
    viz_cli.add_save_dir(p, "--output_dir", "--save_dir")
    p.add_argument("--colormap", default="viridis", choices=COLORMAPS, help="colormap of the attention maps")
    p.add_argument("--alpha", type=float, default=0.6, help="opacity of the heatmap over the image (0-1)")
    p.add_argument("--create_evolution", action="store_true", help="also write attention_evolution_analysis.png")
    p.add_argument("--epoch", type=int, nargs="+", default=None, help="saved epoch(s) to analyse (default: all)")
    p.add_argument("--sample", type=int, default=0, help="probe sample index")
    p.add_argument("--attention", default="cross", choices=["cross", "self"],
                   help="cross: latents -> input; self: latents -> latents")
    p.add_argument("--stage", type=_stage, default=0, help="stage index, or 'all' for one figure per stage")
    p.add_argument("--block", type=int, default=-1, help="latent block within the stage (--attention self)")
    p.add_argument("--head", type=_head, default=None,
                   help="head index, or 'mean' for the mean of heads (default: mean)")
    p.add_argument("--latent", type=_latent, default="auto",
                   help="latent index, 'auto' (most concentrated latent) or 'mean' (average of latents)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG")
    p.add_argument("--formats", nargs="+", default=["png"], choices=["png", "svg", "pdf"], help="file formats")
    p.add_argument("--html", action="store_true",
                   help="write the interactive attention explorer (explorer.html) instead of the figures")
    explorer.add_arguments(p)
    return p


def options(args: argparse.Namespace) -> reports.AttentionOptions:
    return reports.AttentionOptions(
        attention=args.attention, stage=args.stage, block=args.block, sample=args.sample, head=args.head,
        latent=args.latent, epochs=args.epoch, cmap=args.colormap, alpha=args.alpha,
        create_evolution=args.create_evolution, dpi=args.dpi, formats=tuple(args.formats))


def main(args: argparse.Namespace) -> int:
    runs = reports.resolve_runs(args.logs_dir)
    several = len(runs) > 1
    if args.html:
        xopts = explorer.ExplorerOptions(max_epochs=args.max_epochs, max_samples=args.max_samples,
                                         cmap=args.colormap, alpha=args.alpha)
        return viz_cli.draw_runs(
            runs, lambda run: explorer.write_explorer(run, reports.output_dir(run, args.output_dir, several), xopts))
    opts = options(args)
    return viz_cli.draw_runs(
        runs, lambda run: reports.render_attention(run, reports.output_dir(run, args.output_dir, several), opts))


def cli(argv=None) -> int:
    return viz_cli.run(build_parser(), main, argv)


if __name__ == "__main__":
    sys.exit(cli())
