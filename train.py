#!/usr/bin/env python
r"""Train a Perceiver classifier (Jaegle et al., ICML 2021) on CIFAR-10, ModelNet40 or a built-in toy dataset.

Quick offline check on CPU (built-in 2-D shapes, no download; 24 epochs, about a minute on one thread; about 0.9
test accuracy against 0.10 chance):

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

Everything a run writes goes to ``<logs_dir>/<experiment_name>/`` (docs/TRAINING.md: "The run directory").
Accuracies are fractions in [0, 1]. A bad flag, or one that does not fit the run, checkpoint or data it names,
exits with code 2 and one line naming it; a missing/corrupt file with code 1 (``error: ...``); an interrupted run
(Ctrl-C, SIGTERM) with 130/143 after saving a checkpoint to resume from.
"""
from __future__ import annotations

import argparse
import os
import sys

from perceiver.cli import add_config_flags, dataset_defaults_text, ignored_flags, parse, parse_duration
from perceiver.data import DATASET_DEFAULTS, add_data_args
from perceiver.errors import OneLineParser, PerceiverError, UsageError
from perceiver.optim import OPTIMIZERS
from perceiver.presets import PRESETS
from perceiver.presets import describe as describe_presets
from perceiver.schedule import LR_SCALING, SCHEDULERS
from perceiver.settings import Settings


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
                        "other flags may be left out, --lr and --grad_clip changed (recorded in config.json). A "
                        "checkpoint file outside any run starts a new run, never in one that exists "
                        "(default: %(default)s)")
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
                        f"(default: %(default)s = the dataset's: {dataset_defaults_text('batch_size')})")
    g.add_argument("--batch_size_cifar10", type=int, default=None,
                   help=f"batch size for --dataset cifar10 (default: {DATASET_DEFAULTS['cifar10']['batch_size']})")
    g.add_argument("--batch_size_modelnet40", type=int, default=None,
                   help=f"batch size for --dataset modelnet40 (default: "
                        f"{DATASET_DEFAULTS['modelnet40']['batch_size']})")
    add_config_flags(g)  # --fourier_bands --max_freq
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

    add_config_flags(p.add_argument_group("model"))

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
                   help="compile the model as one graph (and LAMB's update) with torch.compile; the last partial "
                        "batch of each epoch is dropped, so that every step has the same shapes (default: %(default)s)")
    g.add_argument("--no_compile", dest="compile", action="store_false",
                   help="run eagerly where a preset compiles (--preset cifar10_1h), e.g. on a machine without a C++ "
                        "compiler")
    g.add_argument("--compile_mode", choices=("default", "reduce-overhead", "max-autotune"), default="default",
                   help="torch.compile mode with --compile: reduce-overhead replays CUDA graphs (default: %(default)s)")
    add_config_flags(g)  # --kernels
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, explicit = parse(build_parser, argv)  # --preset, --config, the dataset's defaults; bad flags exit here
    if not args.resume:
        for note in ignored_flags(args, explicit):
            print(f"note: {note}", flush=True)
    settings = Settings.from_flags(vars(args))
    from perceiver.components import flush_denormals

    flush_denormals()  # before any parallel work: the CPU pool's threads inherit it
    try:
        if settings.run.eval_only:
            from perceiver.score import score_checkpoint  # imported after validation: bad flags fail fast
            return score_checkpoint(settings, explicit=explicit)
        from perceiver.trainer import train
        return train(settings, explicit=explicit, argv=argv)
    except UsageError as e:  # a flag refused once the run, checkpoint or data it names was read
        build_parser().error(str(e))
    except PerceiverError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before training started (loading data, building the model)
        print("interrupted before training started; nothing was saved", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
