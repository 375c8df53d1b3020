#!/usr/bin/env python
"""lucidrains' perceiver-pytorch trained the way train.py trains ours, for the learning-quality comparison.

The same data path as train.py (`perceiver.components`: the CIFAR-10 loader with its crops and flips and
normalisation, the seeded shuffling, ``--val_split``, ``--train_size``), the same training step
(`perceiver.step.TrainStep`: label smoothing, gradient clipping), learning-rate schedule (`perceiver.schedule`:
warm-up and cosine planned over ``--max_time``, as train.py plans them) and evaluation (`perceiver.engine.evaluate`),
with ``perceiver_pytorch.Perceiver`` (``pip install perceiver-pytorch``) in place of our model, at the settings
closest to ours (`benchmarks.variants.theirs_kwargs`: same latents, width, depth, weight sharing, heads and
Fourier bands; their feed-forward is GEGLU with 4x width). As in train.py, the budget covers training and the
evaluation after each epoch, and the model scored is the last one.

    pip install perceiver-pytorch
    python benchmarks/peer_train.py --data_dir ../shared/data-full --max_time 600 --json peer_600s.json

The default recipe is the one the peer was first compared with (AdamW 2e-3, weight decay 0.05, cosine, label
smoothing 0.1, crops and flips, batch 64); ``--optimizer lamb --lr 0.004`` gives it train.py's optimizer instead.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.variants import theirs_kwargs, their_version  # noqa: E402
from perceiver import components as comp  # noqa: E402
from perceiver.data import DataSettings  # noqa: E402
from perceiver.distributed import DistInfo  # noqa: E402
from perceiver.engine import evaluate  # noqa: E402
from perceiver.optim import build_optimizer  # noqa: E402
from perceiver.schedule import LRSchedule, progress  # noqa: E402
from perceiver.step import TrainStep, setup_amp  # noqa: E402


class ImageInput(nn.Module):
    """perceiver-pytorch's Perceiver behind train.py's model call ``model(x, pos)``: tokens (B, H*W, C) in
    row-major pixel order become the (B, H, W, C) image it expects (it makes its own Fourier features)."""

    def __init__(self, model: nn.Module, image_shape: tuple[int, int, int]):
        super().__init__()
        self.model, self.image_shape = model, tuple(image_shape)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], *self.image_shape))  # (B, H, W, C)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and budget (as train.py's flags)")
    g.add_argument("--dataset", choices=("cifar10", "shapes2d"), default="cifar10",
                   help="an image dataset of train.py (default: %(default)s)")
    g.add_argument("--data_dir", default="./data", help="folder holding cifar-10-batches-py/ (default: %(default)s)")
    g.add_argument("--max_time", type=float, default=600.0, help="training budget in seconds (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=120,
                   help="epochs planned, an upper limit under the budget, as train.py's (default: %(default)s)")
    g.add_argument("--limit_train_batches", type=int, default=None, help="batches per epoch (default: all)")
    g.add_argument("--val_split", type=float, default=0.0, help="held-out fraction (default: %(default)s)")
    g.add_argument("--train_size", type=int, default=None, help="train on this many images (default: all)")
    g.add_argument("--crop_padding", type=int, default=4, help="crop padding (default: %(default)s)")
    g.add_argument("--shapes_train_size", type=int, default=3000, help=argparse.SUPPRESS)
    g.add_argument("--shapes_test_size", type=int, default=1000, help=argparse.SUPPRESS)
    g.add_argument("--num_workers", type=int, default=1, help="data loading processes (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights and data order (default: %(default)s)")
    g.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = torch's default (default: %(default)s)")
    g = p.add_argument_group("model (perceiver-pytorch at the closest settings)")
    g.add_argument("--num_latents", type=int, default=64, help="(default: %(default)s)")
    g.add_argument("--latent_dim", type=int, default=128, help="(default: %(default)s)")
    g.add_argument("--num_cross_attend_stages", type=int, default=2, help="their depth (default: %(default)s)")
    g.add_argument("--num_transformer_blocks", type=int, default=2,
                   help="their self_per_cross_attn (default: %(default)s)")
    g.add_argument("--num_heads", type=int, default=4, help="(default: %(default)s)")
    g.add_argument("--fourier_bands", type=int, default=16, help="(default: %(default)s)")
    g.add_argument("--max_freq", type=float, default=32.0, help="(default: %(default)s)")
    g = p.add_argument_group("recipe")
    g.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw", help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=0.002, help="(default: %(default)s)")
    g.add_argument("--weight_decay", type=float, default=0.05, help="(default: %(default)s)")
    g.add_argument("--warmup_epochs", type=float, default=1.0,
                   help="warm-up cap in epochs; perceiver/schedule.py decides the length as for train.py "
                        "(default: %(default)s)")
    g.add_argument("--label_smoothing", type=float, default=0.1, help="(default: %(default)s)")
    g.add_argument("--grad_clip", type=float, default=1.0, help="(default: %(default)s)")
    g.add_argument("--batch_size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--json", default=None, help="write every figure to this JSON file (default: %(default)s)")
    args = p.parse_args(argv)
    if args.max_time <= 0 or args.epochs < 1:
        p.error("--max_time and --epochs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from perceiver_pytorch import Perceiver as TheirPerceiver
    except ImportError:
        print("error: perceiver-pytorch is not installed (pip install perceiver-pytorch)", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    comp.seed_everything(args.seed)
    info = DistInfo(device=torch.device("cpu"))
    data = DataSettings.from_flags(vars(args))
    bundle, train_set, val_set = comp.build_data(data, val_split=args.val_split)
    h, w, c = bundle.image_shape
    kwargs = theirs_kwargs({"kind": "image", "model": {
        "in_channels": c, "num_classes": bundle.num_classes, "pos_dim": 2, "fourier_bands": args.fourier_bands,
        "max_freq": args.max_freq, "num_latents": args.num_latents, "latent_dim": args.latent_dim,
        "num_cross_attend_stages": args.num_cross_attend_stages,
        "num_transformer_blocks": args.num_transformer_blocks, "num_heads": args.num_heads}})
    model = ImageInput(TheirPerceiver(**kwargs), (h, w, c))
    params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, name=args.optimizer, lr=args.lr, weight_decay=args.weight_decay)
    amp = setup_amp(False, info.device)
    step = TrainStep(model, optimizer, pos=None, amp=amp, grad_clip=args.grad_clip,
                     label_smoothing=args.label_smoothing)
    loaders = dict(batch_size=args.batch_size, num_workers=args.num_workers, seed=args.seed, info=info)
    loader, sampler = comp.train_loader(train_set, on_device=False, **loaders)
    batches = comp.batches_per_epoch(sampler, batch_size=args.batch_size, limit=args.limit_train_batches)
    schedule = LRSchedule("cosine", base_lr=args.lr, epochs=args.epochs, steps_per_epoch=batches,
                          warmup_epochs=args.warmup_epochs)
    test_loader = comp.eval_loader(bundle.test, **loaders)
    val_loader = comp.eval_loader(val_set, **loaders) if val_set is not None else None
    print(f"perceiver-pytorch {their_version()}: {params:,} parameters; {len(train_set)} training images, "
          f"{batches} batches per epoch; {schedule.describe()}; budget {args.max_time:g} s", flush=True)

    rows, global_step, start = [], 0, time.monotonic()
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        comp.seed_loader(loader, args.seed * 100_003 + epoch)
        model.train()
        t0, seen, correct, loss_sum, time_up = time.monotonic(), 0, 0, 0.0, False
        for i, (x, y) in enumerate(loader):
            if i >= batches:
                break
            t = progress(step=global_step, steps_per_epoch=batches, epochs=args.epochs,
                         elapsed_s=time.monotonic() - start, max_time_s=args.max_time)
            loss, right = step.forward_backward(x, y)
            step.update(schedule.lr_at(t, step=global_step))
            global_step += 1
            seen, correct, loss_sum = seen + len(y), correct + int(right), loss_sum + float(loss) * len(y)
            if time.monotonic() - start >= args.max_time:
                time_up = True
                break
        train_time = time.monotonic() - t0
        row = {"epoch": epoch, "step": global_step, "train_samples": seen, "train_time_s": round(train_time, 2),
               "samples_per_s": round(seen / train_time, 1), "train_loss": loss_sum / max(1, seen),
               "train_acc": correct / max(1, seen)}
        for name, loader_ in (("val", val_loader), ("test", test_loader)):
            if loader_ is not None:
                res = evaluate(model, loader_, pos=None, num_classes=bundle.num_classes, amp=amp, info=info,
                               show_progress=False)
                row[f"{name}_acc"], row[f"{name}_loss"] = res.acc, res.loss
        row["elapsed_s"] = round(time.monotonic() - start, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if time_up or time.monotonic() - start >= args.max_time:
            break
    samples = sum(r["train_samples"] for r in rows)
    result = {
        "model": f"perceiver-pytorch {their_version()}", "kwargs": kwargs, "parameters": params,
        "args": {k: v for k, v in vars(args).items() if k != "json"}, "epochs": rows,
        "epochs_trained": round(samples / len(train_set), 2), "train_samples": samples,
        "samples_per_s": round(samples / sum(r["train_time_s"] for r in rows), 1),
        "test_acc": rows[-1]["test_acc"], "val_acc": rows[-1].get("val_acc"),
    }
    print(f"test accuracy {result['test_acc']:.4f} after {result['epochs_trained']} epochs, "
          f"{result['samples_per_s']} samples/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if math.isfinite(rows[-1]["train_loss"]) else 1


if __name__ == "__main__":
    sys.exit(main())
