"""Classify image or point-cloud files with a trained run: one line per file.

    python -m perceiver.predict --run_dir logs/quickstart a.png b.jpg
    python -m perceiver.predict --run_dir logs/perceiver_cifar10_fourier photos/*.jpg --topk 3
    python -m perceiver.predict --run_dir logs/perceiver_modelnet40_fourier chair.npy --save_attention
    python -m perceiver.predict --run_dir logs/quickstart/checkpoints/last.pt a.png   # a checkpoint file

Prints ``FILE: CLASS PROB`` (``--topk K``: the K most probable classes, comma-separated). Images (PNG, JPEG,
anything Pillow reads) are resized and normalised the way the run was trained, and permuted if it permuted
pixels; point clouds (``.npy``, or text with one ``x y z`` point per line) are sampled to the run's point count
and scaled into the unit sphere (`perceiver.inference` has the details). ``--run_dir`` takes the run's best
checkpoint (``checkpoints/best.pt``, else ``last.pt``). ``--save_attention`` also writes each file's six-panel
cross-attention figure (the one `visualize_attention.py` draws) to ``<run>/plots/predict/`` or ``--save_dir``.

A FILE that is a folder stands for the image files (or point-cloud files, for a point-cloud model) directly in it,
in name order; sub-folders are not searched. A file that cannot be classified, whatever is wrong with it (not an
image, too many pixels, a 32-bit image of unknown white level, ...), gets one ``error: FILE: ...`` line on stderr and
the others are still classified. 16-bit and floating-point images are scaled from their full range. Exit codes: 0
when every file was classified; 1 when a file or the run could not be read (one ``error:`` line each); 2 for bad
flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import OneLineParser, PerceiverError


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m perceiver.predict", description=__doc__, allow_abbrev=False,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="image or point-cloud files to classify, or folders of them")
    p.add_argument("--run_dir", required=True, metavar="RUN",
                   help="a run directory (logs/NAME: its best checkpoint) or a checkpoint file")
    p.add_argument("--topk", type=int, default=1, metavar="K",
                   help="print the K most probable classes of each file (default: %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                   help="auto = cuda when available (default: %(default)s)")
    p.add_argument("--save_attention", action="store_true",
                   help="also write each file's cross-attention figure, <stem>_attention.png (default: %(default)s)")
    p.add_argument("--save_dir", default=None, metavar="DIR",
                   help="where --save_attention writes (default: %(default)s = <run>/plots/predict/)")
    p.add_argument("--colormap", default="viridis",
                   help="--save_attention: colormap of the attention maps (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.6,
                   help="--save_attention: opacity of the heatmap over the image (default: %(default)s)")
    p.add_argument("--dpi", type=int, default=100, help="--save_attention: resolution (default: %(default)s)")
    return p


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.topk < 1:
        parser.error(f"--topk must be at least 1, got {args.topk}")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.dpi < 20:
        parser.error(f"--dpi must be at least 20, got {args.dpi}")
    if args.save_dir and not args.save_attention:
        parser.error("--save_dir is where --save_attention writes: add --save_attention")
    from .viz.style import COLORMAPS

    if args.colormap not in COLORMAPS:
        parser.error(f"--colormap {args.colormap!r} is not one of {', '.join(COLORMAPS)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is visible; use --device cpu")


def format_line(name: str, top: list[tuple[str, float]]) -> str:
    return f"{name}: " + ", ".join(f"{cls} {p:.3f}" for cls, p in top)


def save_attention(loaded, data, out_dir: Path, stem: str, title: str, args: argparse.Namespace) -> Path:
    """The six-panel cross-attention figure of one input, drawn by the visualizers' own code."""
    from types import SimpleNamespace

    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from .inference import image_positions, input_dataset
    from .probes import capture
    from .viz.export import save_figure
    from .viz.reports import comprehensive_figure
    from .viz.selection import select_view

    facts = loaded.facts
    # point clouds: pos None = the cloud's own points, as in training
    pos = image_positions(facts).to(loaded.device) if facts.kind == "image" else None
    bundle = SimpleNamespace(kind=facts.kind, permutation=facts.permutation, class_names=facts.class_names,
                             image_shape=facts.image_shape)
    snap = capture(loaded.model, input_dataset(data, facts), np.array([0]), epoch=loaded.epoch, bundle=bundle,
                   device=loaded.device, pos=pos)
    fig = comprehensive_figure(select_view(snap), args.colormap, args.alpha, experiment=title)
    return save_figure(fig, out_dir, f"{stem}_attention", ("png",), args.dpi)[0]


def expand_folders(files: list[str], kind: str) -> tuple[list[str], int]:
    """(the files to classify, folders that held none): a folder stands for its image or point-cloud files."""
    from .inference import IMAGE_SUFFIXES, POINT_SUFFIXES

    suffixes = IMAGE_SUFFIXES if kind == "image" else POINT_SUFFIXES
    out, empty = [], 0
    for file in files:
        folder = Path(file)
        if not folder.is_dir():
            out.append(file)
            continue
        found = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())
        if not found:
            empty += 1
            what = "image" if kind == "image" else "point-cloud"
            print(f"error: {file} is a folder with no {what} files ({', '.join(suffixes)}) directly in it; pass the "
                  f"files themselves", file=sys.stderr, flush=True)
        out += found
    return out, empty


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check(parser, args)
    from .inference import load_model, read_input_file

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        loaded = load_model(args.run_dir, device=device)
    except PerceiverError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.save_attention and args.save_dir is None and loaded.run_dir is None:
        parser.error(f"--save_attention: {args.run_dir} is a checkpoint outside a run directory; add --save_dir DIR")
    out_dir = Path(args.save_dir) if args.save_dir else (loaded.run_dir / "plots" / "predict"
                                                         if loaded.run_dir is not None else None)
    files, failed = expand_folders(args.files, loaded.facts.kind)
    stems = {}
    for file in files:
        try:
            data = read_input_file(file, loaded.facts.kind)
            print(format_line(file, loaded.classify(data, k=args.topk)), flush=True)
            if args.save_attention:
                stem = Path(file).stem
                stems[stem] = stems.get(stem, 0) + 1
                if stems[stem] > 1:  # two files of the same name in different folders: keep both figures
                    stem = f"{stem}_{stems[stem]}"
                run = loaded.run_dir.name if loaded.run_dir is not None else loaded.checkpoint.name
                path = save_attention(loaded, data, out_dir, stem, f"{Path(file).name} ({run})", args)
                print(f"  wrote {path}", file=sys.stderr, flush=True)
        except (PerceiverError, ValueError, OSError) as e:
            failed += 1
            message = str(e) if file in str(e) else f"{file}: {e}"
            print(f"error: {message}", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - whatever else goes wrong with one file, the others still get their line
            failed += 1
            reason = " ".join(str(e).split())[:200]
            print(f"error: {file}: could not be classified ({type(e).__name__}{': ' + reason if reason else ''})",
                  file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
