#!/usr/bin/env python
"""A short run of the GPU recipe for the specification's Experiment 1, with a per-epoch table.

The full recipe (one GPU; bf16 autocast, torch.compile, fused AdamW/foreach LAMB, the spec's model):

    python train.py --experiment_name perceiver_cifar10_fourier_gpu --dataset cifar10 --data_dir ./data \
        --cifar10_fourier_bands 64 --cifar10_max_freq 32.0 --num_latents 96 --latent_dim 384 \
        --num_cross_attend_stages 4 --num_transformer_blocks 4 --num_heads 3 --dropout 0.2 --optimizer lamb \
        --lr 0.004 --scheduler multistep --epochs 120 --batch_size_cifar10 64 --num_workers 8 \
        --device cuda --use_amp --compile --crop_padding 4 --save_attention_maps --use_tensorboard

This script runs the same command for a few epochs (default 3) into a scratch logs folder and prints epoch time,
samples/s and accuracy per epoch:

    python benchmarks/gpu_recipe.py --data_dir ./data --epochs 3
    python benchmarks/gpu_recipe.py --data_dir ./data --epochs 1 --limit_train_batches 20 --device cpu   # smoke test
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perceiver.rundir import RunDir  # noqa: E402  (the run-directory reader; no torch needed here)

EXPERIMENT_1 = [
    "--dataset", "cifar10", "--cifar10_fourier_bands", "64", "--cifar10_max_freq", "32.0", "--num_latents", "96",
    "--latent_dim", "384", "--num_cross_attend_stages", "4", "--num_transformer_blocks", "4", "--num_heads", "3",
    "--dropout", "0.2", "--optimizer", "lamb", "--lr", "0.004", "--batch_size_cifar10", "64", "--crop_padding", "4",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="./data", help="folder holding cifar-10-batches-py/ (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="epochs to run (default: %(default)s)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="(default: %(default)s)")
    p.add_argument("--no_compile", action="store_true", help="skip torch.compile (default: %(default)s)")
    p.add_argument("--limit_train_batches", type=int, default=None, help="cap batches per epoch (smoke tests)")
    p.add_argument("--num_workers", type=int, default=8, help="(default: %(default)s)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="gpu_recipe_") as logs:
        cmd = [sys.executable, str(ROOT / "train.py"), "--experiment_name", "gpu_recipe", "--logs_dir", logs,
               "--data_dir", args.data_dir, "--epochs", str(args.epochs), "--device", args.device,
               "--num_workers", str(args.num_workers), "--scheduler", "cosine", *EXPERIMENT_1]
        if args.device == "cuda":
            cmd.append("--use_amp")
            if not args.no_compile:
                cmd.append("--compile")
        if args.limit_train_batches:
            cmd += ["--limit_train_batches", str(args.limit_train_batches)]
        print("running:", " ".join(cmd[1:]), flush=True)
        rc = subprocess.call(cmd)
        rows = RunDir(Path(logs) / "gpu_recipe").read_metrics()
    print(f"\n{'epoch':>5} {'time_s':>8} {'samples/s':>10} {'train_acc':>9} {'test_acc':>8}")
    for r in rows:
        print(f"{r['epoch']:>5} {r['epoch_time_s']:>8.1f} {r['samples_per_s']:>10.0f} {r['train_acc']:>9.3f} "
              f"{r['test_acc']:>8.3f}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
