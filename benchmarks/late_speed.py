#!/usr/bin/env python
"""Does a trained model train slower than a fresh one? Training steps of a run's checkpoint beside a fresh model
of the same configuration, on the CPU, with train.py's guards against subnormal floats on and off.

As a Perceiver learns, its cross-attention sharpens: most of a row's scores end far below its largest, their exps
underflow, and on x86 CPUs both ``exp`` of such arguments and matrix products of subnormal values run many times
slower. train.py guards against both (`perceiver.kernels.SOFTMAX_FLOOR`, `perceiver.components.flush_denormals`);
``--guards off`` measures what a step costs without them. Each setting runs in a process of its own, since the
flush must be set before the CPU thread pool starts.

    python benchmarks/late_speed.py --checkpoint logs/cifar10_1h --threads 2

Prints one line per model and setting (ms per step of forward, backward and the gradients' reset, the fastest of
--rounds rounds of --steps steps; the two models alternate within the rounds), then each model's ratio of the two
settings.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.timing import timed_rounds  # noqa: E402
from perceiver.errors import OneLineParser  # noqa: E402

GUARDS = ("on", "off")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--batch_size", type=int, default=64, help="samples per step")
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds; the fastest counts")
    p.add_argument("--guards", choices=GUARDS, default=None, help=argparse.SUPPRESS)  # one setting, in a child
    return p


def time_steps(args) -> dict[str, float]:
    """ms per training step of the checkpoint's model and of a fresh one, in this process's setting."""
    import numpy as np
    import torch

    from perceiver import kernels
    from perceiver.components import flush_denormals

    if args.guards == "on":
        flush_denormals()
    else:
        kernels.SOFTMAX_FLOOR = float("-inf")
    torch.set_num_threads(args.threads)
    from perceiver.inference import load_model
    from perceiver.model import Perceiver

    loaded = load_model(args.checkpoint)
    torch.manual_seed(0)
    models = {"trained": loaded.model, "fresh": Perceiver(loaded.config)}
    rng = np.random.default_rng(0)
    facts = loaded.facts
    shape = facts.image_shape if facts.kind == "image" else (facts.num_points, 3)
    raw = [rng.integers(0, 256, shape, dtype=np.uint8) if facts.kind == "image" else rng.normal(size=shape)
           for _ in range(args.batch_size)]
    xs, positions = zip(*(loaded.prepare(r) for r in raw))  # x (1, N, C) each; pos (N, 2) or (1, K, 3)
    x = torch.cat(xs)  # (B, N, C)
    pos = torch.cat(positions) if facts.kind == "pointcloud" else positions[0]  # (B, K, 3) or (N, 2)
    y = torch.randint(0, len(facts.class_names), (args.batch_size,))
    def steps(model):
        def run():
            for _ in range(args.steps):
                model.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x, pos), y).backward()
        return run

    for model in models.values():
        model.train()
    timed = timed_rounds({name: steps(m) for name, m in models.items()}, warmup=1, iters=args.rounds,
                         device=torch.device("cpu"))
    return {name: 1e3 * t["min_s"] / args.steps for name, t in timed.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.guards:
        print(json.dumps(time_steps(args)))
        return 0
    from perceiver.errors import PerceiverError
    from perceiver.inference import locate_checkpoint

    try:
        locate_checkpoint(args.checkpoint)
    except PerceiverError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    times = {}
    for guards in GUARDS:
        argv = [sys.executable, __file__, "--checkpoint", args.checkpoint, "--threads", str(args.threads),
                "--batch_size", str(args.batch_size), "--steps", str(args.steps), "--rounds", str(args.rounds),
                "--guards", guards]
        child = subprocess.run(argv, capture_output=True, text=True)
        if child.returncode != 0:
            last = (child.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"error: the run with guards {guards} failed: {last}", file=sys.stderr)
            return 1
        times[guards] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"{args.checkpoint}: {args.threads} threads, batch {args.batch_size}, ms per training step")
    for guards in GUARDS:
        print("  guards " + guards + ": " + ", ".join(f"{m} {ms:.1f} ms" for m, ms in times[guards].items()))
    for model in times["on"]:
        print(f"  {model}: the guards make a step {times['off'][model] / times['on'][model]:.2f} times as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
