#!/usr/bin/env python
r"""Train a Perceiver classifier (Jaegle et al., ICML 2021) on CIFAR-10, ModelNet40 or a built-in toy dataset.

Quick offline check on CPU (built-in 2-D shapes, no download; 60 s of training on one thread, about 0.9 test
accuracy against 0.10 chance):

    python train.py --preset quickstart

The specification's three experiments (perceiver/presets.py holds their flags; add --data_dir where the datasets
live; any flag typed as well overrides the preset's value):

    python train.py --preset exp1 --data_dir ./data     # CIFAR-10, Fourier features
    python train.py --preset exp2 --data_dir ./data     # CIFAR-10, permuted pixels, learned positional encoding
    python train.py --preset exp3 --data_dir ./data     # ModelNet40 point clouds
    python train.py --preset exp1 --epochs 1 --limit_train_batches 2 --limit_eval_batches 1   # a smoke test

Start from another run's flags (its config.json) or from a JSON file of flags:

    python train.py --config logs/quickstart/config.json --experiment_name quickstart_again --max_time 120

Continue an interrupted run, evaluate a finished one, train on several GPUs (or CPU processes):

    python train.py --resume logs/perceiver_cifar10_fourier
    python train.py --eval_only --resume logs/perceiver_cifar10_fourier --data_dir ./data
    torchrun --nproc_per_node 4 train.py --experiment_name ddp_run --dataset cifar10 ...

Everything a run writes goes to ``<logs_dir>/<experiment_name>/`` (docs/TRAINING.md: "The run directory"). Accuracies are
fractions in [0, 1]. A bad flag exits with code 2 and one line naming it; a missing/corrupt file with code 1
(``error: ...``); an interrupted run (Ctrl-C, SIGTERM) with 130/143 after saving a checkpoint to resume from.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from pathlib import Path

from perceiver.data import DATASET_DEFAULTS, PER_DATASET_FLAGS, POINT_CLOUD_DATASETS, add_data_args, \
    validate_data_args
from perceiver.errors import OneLineParser, PerceiverError
from perceiver.optim import OPTIMIZERS
from perceiver.presets import PRESETS, with_presets
from perceiver.presets import describe as describe_presets
from perceiver.rundir import RunDir
from perceiver.schedule import LR_SCALING, SCHEDULERS, default_milestones


def parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90.5``, ``45:00`` (MM:SS) or ``12:00:00`` (HH:MM:SS)."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or any(p < 0 or not math.isfinite(p) for p in parts):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use seconds (3600) or HH:MM:SS (01:00:00)")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: it must be positive")
    return seconds


def _defaults_text(flag: str) -> str:
    return ", ".join(f"{name} {d[flag]}" for name, d in DATASET_DEFAULTS.items())


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("experiment")
    g.add_argument("--experiment_name", default=None,
                   help="run directory name under --logs_dir (default: %(default)s = <dataset>_<date>-<time>)")
    g.add_argument("--logs_dir", default="logs", help="parent folder of run directories (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of weights, data order, dropout and probes (default: %(default)s)")
    g.add_argument("--resume", default=None, metavar="RUN_OR_CHECKPOINT",
                   help="continue a run: its directory (uses checkpoints/last.pt) or a checkpoint file; "
                        "other flags may be left out (default: %(default)s)")
    g.add_argument("--overwrite", action="store_true",
                   help="start over in a run directory that already holds a run, deleting that run's files "
                        "(only inside that directory) (default: %(default)s)")
    g.add_argument("--eval_only", action="store_true",
                   help="with --resume RUN: evaluate RUN's best checkpoint on the test set and write RUN/eval.json "
                        "(default: %(default)s)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help=f"start from a named set of flags ({describe_presets()}); flags typed as well override "
                        f"it (default: %(default)s)")
    g.add_argument("--config", default=None, metavar="FILE.json",
                   help="start from the flags in a JSON file: a run's config.json (its \"args\") or "
                        "{\"flag\": value, ...}; it overrides --preset, flags typed as well override both "
                        "(default: %(default)s)")

    add_data_args(p)  # --dataset --data_dir --modelnet40_num_points --permute_pixels --permute_pixels_seed ...
    g = p.add_argument_group("data sizes and positional features")
    g.add_argument("--batch_size", type=int, default=None,
                   help="batch size per process; overrides --batch_size_cifar10/--batch_size_modelnet40 "
                        f"(default: %(default)s = the dataset's: {_defaults_text('batch_size')})")
    g.add_argument("--batch_size_cifar10", type=int, default=None,
                   help=f"batch size for --dataset cifar10 (default: {DATASET_DEFAULTS['cifar10']['batch_size']})")
    g.add_argument("--batch_size_modelnet40", type=int, default=None,
                   help=f"batch size for --dataset modelnet40 (default: "
                        f"{DATASET_DEFAULTS['modelnet40']['batch_size']})")
    g.add_argument("--fourier_bands", type=int, default=None,
                   help="Fourier bands per coordinate; overrides --cifar10_/--modelnet40_fourier_bands "
                        f"(default: %(default)s = the dataset's: {_defaults_text('fourier_bands')})")
    g.add_argument("--max_freq", type=float, default=None,
                   help="highest Fourier frequency (samples over [-1, 1]); overrides the dataset flags "
                        f"(default: %(default)s = the dataset's: {_defaults_text('max_freq')})")
    g.add_argument("--cifar10_fourier_bands", type=int, default=None,
                   help=f"Fourier bands for CIFAR-10 (default: {DATASET_DEFAULTS['cifar10']['fourier_bands']})")
    g.add_argument("--cifar10_max_freq", type=float, default=None,
                   help=f"max frequency for CIFAR-10 (default: {DATASET_DEFAULTS['cifar10']['max_freq']})")
    g.add_argument("--modelnet40_fourier_bands", type=int, default=None,
                   help=f"Fourier bands for ModelNet40 (default: {DATASET_DEFAULTS['modelnet40']['fourier_bands']})")
    g.add_argument("--modelnet40_max_freq", type=float, default=None,
                   help=f"max frequency for ModelNet40 (default: {DATASET_DEFAULTS['modelnet40']['max_freq']})")
    g.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loading processes (default: %(default)s = min(4, CPU cores))")
    g.add_argument("--val_split", type=float, default=0.0,
                   help="fraction of the training set held out (stratified, seeded) for validation; best.pt then "
                        "follows validation accuracy. Without it nothing is chosen on held-out images: the run's "
                        "model is its last epoch (default: %(default)s = none)")

    g = p.add_argument_group("model")
    g.add_argument("--num_latents", type=int, default=96, help="latent array size M (default: %(default)s)")
    g.add_argument("--latent_dim", type=int, default=384, help="latent width D (default: %(default)s)")
    g.add_argument("--num_cross_attend_stages", type=int, default=4,
                   help="cross-attend + latent-transformer stages (default: %(default)s)")
    g.add_argument("--num_transformer_blocks", type=int, default=4,
                   help="self-attention blocks per latent transformer (default: %(default)s)")
    g.add_argument("--num_heads", type=int, default=3, help="latent self-attention heads (default: %(default)s)")
    g.add_argument("--cross_heads", type=int, default=1,
                   help="cross-attention heads; heads narrower than the position features are about 2.8x slower "
                        "(the log says so and how wide --cross_dim must be) (default: %(default)s)")
    g.add_argument("--cross_dim", type=int, default=None,
                   help="width of the cross-attention's queries, keys and values (default: %(default)s = "
                        "--latent_dim)")
    g.add_argument("--no_input_norm", dest="input_norm", action="store_false",
                   help="no LayerNorm over each input token [channels, position features] before the key/value "
                        "projection; the paper has one, and it learns better (docs/RECIPES.md) "
                        "(default: the norm is on)")
    g.add_argument("--stem", choices=("none", "conv"), default="none",
                   help="conv: a 3x3 convolution and GELU turn each pixel into --stem_width features of its "
                        "neighbourhood before the cross-attention (perceiver/stem.py; images only; not the paper's "
                        "model, which reads raw pixels) (default: %(default)s)")
    g.add_argument("--stem_width", type=int, default=32,
                   help="features per pixel made by --stem conv (default: %(default)s)")
    g.add_argument("--init", choices=("fan_in", "trunc_fan_in"), default="fan_in",
                   help="linear-layer init: fan_in = truncated normal with std exactly 1/sqrt(fan_in); "
                        "trunc_fan_in = truncated at 2 std without correcting the std (0.88/sqrt(fan_in)) "
                        "(default: %(default)s)")
    g.add_argument("--no_final_norm", action="store_true",
                   help="no LayerNorm on the latents before pooling (default: %(default)s)")
    g.add_argument("--mlp_ratio", type=float, default=1.0,
                   help="MLP hidden width / D; 1 is DeepMind's widening factor, and learned better in 600 s than 4 "
                        "(docs/RECIPES.md) (default: %(default)s)")
    g.add_argument("--dropout", type=float, default=0.0, help="dropout rate (default: %(default)s)")
    g.add_argument("--drop_path", type=float, default=0.0,
                   help="stochastic depth: drop rate of the latent blocks' residual branches, rising linearly "
                        "from 0 to this value over the distinct blocks (default: %(default)s)")
    g.add_argument("--output_pooling", choices=("mean", "cls"), default="mean",
                   help="how latents become one vector: mean, or a learned cls latent (default: %(default)s)")
    g.add_argument("--use_learned_pe", action="store_true",
                   help="learned positional embedding instead of Fourier features (images only) "
                        "(default: %(default)s)")
    g.add_argument("--no_weight_sharing", action="store_true",
                   help="separate weights for every stage (default: %(default)s = stages 2+ share weights)")
    g.add_argument("--activation_checkpointing", action="store_true",
                   help="recompute activations in backward to save memory (default: %(default)s)")

    g = p.add_argument_group("regularisation and evaluation")
    g.add_argument("--ema_decay", type=float, default=0.0,
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999) and "
                        "evaluate, probe and deploy it instead of the trained weights; 0 = off "
                        "(default: %(default)s)")
    g.add_argument("--mixup_alpha", type=float, default=0.0,
                   help="mixup: blend pairs of training samples and labels, lam ~ Beta(a, a); 0 = off "
                        "(default: %(default)s)")
    g.add_argument("--cutmix_alpha", type=float, default=0.0,
                   help="cutmix (images): paste a rectangle of another image, labels weighted by area; 0 = off. "
                        "With mixup too, each mixed batch uses one of the two at random (default: %(default)s)")
    g.add_argument("--mix_prob", type=float, default=1.0,
                   help="probability that a batch is mixed when mixup/cutmix is on (default: %(default)s)")
    g.add_argument("--tta", action="store_true",
                   help="test-time augmentation (images): evaluate each image and its mirror image and average "
                        "their class probabilities (default: %(default)s)")

    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="lamb", help="optimizer (default: %(default)s)")
    g.add_argument("--lr", type=float, default=0.004, help="peak learning rate (default: %(default)s)")
    g.add_argument("--weight_decay", type=float, default=0.05,
                   help="decoupled weight decay; not applied to biases, norms, latents (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=120, help="training epochs (default: %(default)s)")
    g.add_argument("--max_time", type=parse_duration, default=None, metavar="SECONDS|HH:MM:SS",
                   help="wall-clock training budget; the LR schedule is planned over it and training stops "
                        "cleanly when it is spent (default: %(default)s = no limit)")
    g.add_argument("--lr_scaling", choices=LR_SCALING, default="none",
                   help="scale --lr with the global batch (batch x accumulation x processes) relative to "
                        "--lr_base_batch: linear or sqrt (LAMB's large-batch rule); keep a warm-up "
                        "(default: %(default)s)")
    g.add_argument("--lr_base_batch", type=int, default=64,
                   help="the global batch that --lr was tuned for, with --lr_scaling (default: %(default)s)")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1,
                   help="batches per optimizer step (default: %(default)s)")
    g.add_argument("--grad_clip", type=float, default=1.0,
                   help="clip the global gradient norm to this value, 0 = off (default: %(default)s)")
    g.add_argument("--label_smoothing", type=float, default=0.1,
                   help="label smoothing of the training loss (default: %(default)s)")
    g.add_argument("--use_amp", action="store_true",
                   help="mixed precision: bfloat16 autocast (float16 + loss scaling on GPUs without bf16); "
                        "allowed on CPU for testing, where it is usually slower (default: %(default)s)")

    g = p.add_argument_group("learning-rate schedule (per optimizer step)")
    g.add_argument("--scheduler", choices=SCHEDULERS, default="cosine", help="schedule (default: %(default)s)")
    g.add_argument("--warmup_epochs", type=float, default=1.0,
                   help="linear warm-up length in epochs, stepped per optimizer step, 0 = off "
                        "(default: %(default)s)")
    g.add_argument("--lr_milestones", type=int, nargs="+", default=None, metavar="EPOCH",
                   help="multistep: epochs after which the rate is multiplied by --lr_gamma (default: "
                        "%(default)s = 70%%, 85%%, 95%% of --epochs, e.g. 84 102 114 for 120)")
    g.add_argument("--lr_gamma", type=float, default=0.1,
                   help="multistep/step: decay factor (default: %(default)s)")
    g.add_argument("--lr_step_size", type=int, default=30, help="step: epochs between decays (default: %(default)s)")
    g.add_argument("--T_max_cosine", type=float, default=None,
                   help="cosine: epochs of one half-period (default: %(default)s = --epochs)")
    g.add_argument("--eta_min_cosine", type=float, default=0.0, help="cosine: final rate (default: %(default)s)")

    g = p.add_argument_group("logging")
    g.add_argument("--save_metrics", action="store_true",
                   help="also write steps.jsonl (every optimizer step) and per_class.jsonl (per-class accuracy "
                        "and confusion matrix every epoch) (default: %(default)s)")
    g.add_argument("--save_attention_maps", action="store_true",
                   help="save the attention maps of fixed test probes to attention/epoch_XXXX.npz "
                        "(default: %(default)s)")
    g.add_argument("--attention_save_interval", type=int, default=10,
                   help="save attention at epoch 1, every this many epochs, and the last (default: %(default)s)")
    g.add_argument("--num_probe_samples", type=int, default=8,
                   help="test samples whose attention is saved (class-balanced, seeded) (default: %(default)s)")
    g.add_argument("--use_tensorboard", action="store_true",
                   help="write TensorBoard scalars, hparams and attention images to tensorboard/ "
                        "(default: %(default)s)")

    g = p.add_argument_group("runtime")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available (default: %(default)s)")
    g.add_argument("--threads", type=int, default=0,
                   help="CPU threads for the model's math, 0 = PyTorch's default (one per core). On a machine "
                        "busy with other work, 1 avoids threads waiting on each other (default: %(default)s)")
    g.add_argument("--compile", action="store_true",
                   help="compile the model as one graph (and LAMB's update) with torch.compile (default: %(default)s)")
    g.add_argument("--compile_mode", choices=("default", "reduce-overhead", "max-autotune"), default="default",
                   help="torch.compile mode with --compile: reduce-overhead replays CUDA graphs (default: %(default)s)")
    g.add_argument("--kernels", choices=("auto", "plain"), default="auto",
                   help="auto = exact speed-ups of perceiver/kernels.py; plain = the model as written in "
                        "perceiver/model.py (same results, slower) (default: %(default)s)")
    g.add_argument("--device_data", choices=("auto", "on", "off"), default="auto",
                   help="keep the whole dataset in device memory and draw, augment and normalise batches there "
                        "(perceiver/data/device.py); auto = on for CUDA when it fits in a quarter of the free memory "
                        "and no CPU-only augmentation is asked for (default: %(default)s)")
    g.add_argument("--sync_every", type=int, default=25,
                   help="optimizer steps between reads of the device's running metrics (progress, steps.jsonl, the "
                        "non-finite check, the ranks' stop agreement) (default: %(default)s)")
    g.add_argument("--no_progress", action="store_true", help="no progress bars (default: %(default)s)")
    g.add_argument("--limit_train_batches", type=int, default=None, metavar="N",
                   help="train on at most N batches per epoch (smoke tests) (default: %(default)s = all)")
    g.add_argument("--limit_eval_batches", type=int, default=None, metavar="N",
                   help="evaluate on at most N batches (default: %(default)s = all)")
    return p


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the dataset-dependent defaults (the generic flag, else the dataset's own flag, else the dataset's
    default from `perceiver.data.DATASET_DEFAULTS`), milestones and the run name."""
    for general, own in PER_DATASET_FLAGS.items():
        if getattr(args, general) is None:
            specific = getattr(args, own[args.dataset]) if args.dataset in own else None
            setattr(args, general, specific if specific is not None else DATASET_DEFAULTS[args.dataset][general])
    if args.lr_milestones is None:
        args.lr_milestones = default_milestones(args.epochs) if args.epochs > 0 else []
    if args.experiment_name is None:
        args.experiment_name = f"{args.dataset}_{time.strftime('%Y%m%d-%H%M%S')}"
    return args


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace, explicit: set[str]) -> None:
    """Reject impossible or contradictory flags with one line (exit code 2)."""
    err = parser.error
    validate_data_args(parser, args)
    for name in ("num_latents", "latent_dim", "num_cross_attend_stages", "num_heads", "cross_heads", "cross_dim",
                 "epochs", "stem_width",
                 "batch_size", "batch_size_cifar10", "batch_size_modelnet40", "gradient_accumulation_steps",
                 "attention_save_interval", "num_probe_samples", "lr_step_size", "fourier_bands", "sync_every",
                 "lr_base_batch",
                 "limit_train_batches", "limit_eval_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            err(f"--{name} must be a positive integer, got {value}")
    for name in ("num_transformer_blocks", "num_workers", "threads"):
        if getattr(args, name) < 0:
            err(f"--{name} must be >= 0, got {getattr(args, name)}")
    for name in ("lr", "max_freq", "mlp_ratio", "lr_gamma", "T_max_cosine"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            err(f"--{name} must be a positive number, got {value}")
    for name in ("weight_decay", "grad_clip", "eta_min_cosine", "warmup_epochs"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            err(f"--{name} must be a number >= 0, got {value}")
    for name in ("mixup_alpha", "cutmix_alpha"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            err(f"--{name} must be a number >= 0 (0 = off), got {getattr(args, name)}")
    if not 0.0 <= args.mix_prob <= 1.0:
        err(f"--mix_prob is a probability and must be in [0, 1], got {args.mix_prob}")
    if not 0.0 <= args.ema_decay < 1.0:
        err(f"--ema_decay must be in [0, 1) (0 = off; e.g. 0.999), got {args.ema_decay}")
    if args.dataset in POINT_CLOUD_DATASETS:
        for flag in ("cutmix_alpha", "tta"):
            if getattr(args, flag):
                err(f"--{flag} needs an image dataset, not {args.dataset}: a point cloud has no rectangle to cut "
                    f"and no mirror image to average over (drop --{flag})")
    for name in ("dropout", "drop_path", "label_smoothing"):
        if not 0.0 <= getattr(args, name) < 1.0:
            err(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    if not 0.0 <= args.val_split < 1.0:
        err(f"--val_split is a fraction of the training set and must be in [0, 1), got {args.val_split}")
    for heads, width_flag in (("num_heads", "latent_dim"), ("cross_heads", "cross_dim" if args.cross_dim else
                                                                         "latent_dim")):
        width, n = getattr(args, width_flag), getattr(args, heads)
        if width % n:
            err(f"--{width_flag} ({width}) must be divisible by --{heads} ({n}); e.g. --{width_flag} "
                f"{n * max(1, width // n)}")
    if args.warmup_epochs > args.epochs:
        err(f"--warmup_epochs ({args.warmup_epochs:g}) is longer than --epochs ({args.epochs})")
    bad = [m for m in args.lr_milestones if not 1 <= m < args.epochs]
    if bad:
        err(f"--lr_milestones {' '.join(map(str, bad))} out of range: milestones are epochs in 1..{args.epochs - 1} "
            f"(--epochs {args.epochs})")
    if sorted(set(args.lr_milestones)) != list(args.lr_milestones):
        err("--lr_milestones must be strictly increasing, e.g. --lr_milestones 30 60 90")
    if args.eta_min_cosine >= args.lr and args.scheduler == "cosine":
        err(f"--eta_min_cosine ({args.eta_min_cosine}) must be below --lr ({args.lr})")
    for flag, scheds in (("lr_milestones", ("multistep",)), ("lr_step_size", ("step",)),
                         ("T_max_cosine", ("cosine",)), ("eta_min_cosine", ("cosine",)),
                         ("lr_gamma", ("multistep", "step"))):
        if flag in explicit and args.scheduler not in scheds:
            err(f"--{flag} applies to --scheduler {'/'.join(scheds)}, not {args.scheduler}")
    if args.use_learned_pe and args.dataset in POINT_CLOUD_DATASETS:
        err(f"--use_learned_pe needs an image dataset: the points of a {args.dataset} cloud have no fixed order "
            f"to learn an embedding per position; use the Fourier features (drop --use_learned_pe)")
    if args.stem != "none" and args.dataset in POINT_CLOUD_DATASETS:
        err(f"--stem {args.stem} needs an image dataset: a {args.dataset} cloud has no pixel grid to convolve "
            f"(drop --stem)")
    if args.stem != "none" and args.permute_pixels:
        err(f"--stem {args.stem} convolves neighbouring pixels, which --permute_pixels scatters: drop one of them")
    if args.experiment_name in ("", ".", "..") or re.search(r"[/\\\x00]", args.experiment_name):
        err(f"--experiment_name {args.experiment_name!r} must be a plain folder name (no '/', not '.' or '..')")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            err("--device cuda: no CUDA device is visible; use --device cpu or --device auto")
    if args.resume and args.overwrite:
        err("--resume continues a run and --overwrite deletes it: pass one of them")
    if args.eval_only and not args.resume:
        err("--eval_only needs --resume RUN (the run directory or checkpoint to evaluate)")
    if args.eval_only and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        err("--eval_only runs in one process: launch it with python, not torchrun")
    if args.resume and not Path(args.resume).exists():
        err(f"--resume {args.resume}: no such run directory or checkpoint file")
    if args.resume and Path(args.resume).is_dir() and not RunDir(args.resume).holds_run():
        err(f"--resume {args.resume}: this folder holds no training run (no config.json, status.json or "
            f"checkpoints/last.pt)")
    if not args.resume:
        run = RunDir(Path(args.logs_dir) / args.experiment_name)
        if run.holds_run() and not args.overwrite:
            err(f"{run.path} already holds a run: pass --resume {run.path} to continue it, --overwrite to "
                f"delete it and start over, or choose another --experiment_name")


def ignored_flags(args: argparse.Namespace, explicit: set[str]) -> list[str]:
    """Typed flags that have no effect with the other flags given (said once, not an error)."""
    notes = []
    for general, own in PER_DATASET_FLAGS.items():
        for dataset, flag in own.items():
            if flag not in explicit:
                continue
            if dataset != args.dataset:
                notes.append(f"--{flag} applies to --dataset {dataset} only")
            elif general in explicit:
                notes.append(f"--{flag} is overridden by --{general}")
    if args.use_learned_pe:
        notes += [f"--{n} has no effect with --use_learned_pe" for n in sorted(explicit)
                  if n.endswith("fourier_bands") or n.endswith("max_freq")]
    return notes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, explicit = with_presets(build_parser, argv, resolve=resolve_defaults)
    resolve_defaults(args)
    validate(parser, args, explicit)
    if not args.resume:
        for note in ignored_flags(args, explicit):
            print(f"note: {note}", flush=True)

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    try:
        if args.eval_only:
            from perceiver.score import score_checkpoint  # imported after validation: bad flags fail fast
            return score_checkpoint(args, explicit=explicit)
        from perceiver.trainer import train
        return train(args, explicit=explicit, argv=argv)
    except PerceiverError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before training started (loading data, building the model)
        print("interrupted before training started; nothing was saved", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
