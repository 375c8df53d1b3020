"""What the run lock (`perceiver.rundir.RunLock`) costs, against an epoch of the 10-minute CIFAR-10 model.

    python -m benchmarks.run_lock                 # the lock in a temporary folder of this machine
    python -m benchmarks.run_lock --dir /nfs/tmp  # the lock on another file system (a cluster's shared one)

train.py takes the lock once per run (create with O_EXCL, flock, write, fsync) and releases it once (unlink,
close); a stale lock left by a killed run is taken over once. Both are timed here, and so are training steps of
the README's 10-minute CIFAR-10 model (batch 64, LAMB, the defaults of train.py) on random images, which give an
epoch of its 5000 training images. The ratio printed is the lock's cost over one epoch: an upper bound, since a
run of many epochs pays it once.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from perceiver.model import Perceiver, PerceiverConfig  # noqa: E402
from perceiver.optim import build_optimizer  # noqa: E402
from perceiver.position import grid_positions  # noqa: E402
from perceiver.presets import MODELS  # noqa: E402
from perceiver.rundir import RunLock  # noqa: E402

#: the README's "CIFAR-10 in 10 CPU-minutes" model: train.py's CIFAR-10 defaults with the preset's model flags
TEN_MINUTE_MODEL = dict(in_channels=3, num_classes=10, pos_dim=2, fourier_bands=16, max_freq=32.0,
                        **MODELS["cifar_cpu"])
TRAIN_IMAGES, BATCH = 5000, 64


def time_lock(folder: Path, cycles: int) -> dict:
    times = []
    for i in range(cycles):
        lock = RunLock(folder / f"run{i % 4}")
        t0 = time.perf_counter()
        lock.acquire()
        lock.release()
        times.append(time.perf_counter() - t0)
    takeovers = []
    for i in range(max(3, cycles // 20)):  # a stale lock of a process that has exited
        run = folder / f"stale{i}"
        proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        run.mkdir()
        (run / "run.lock").write_text(f'{{"host": "{os.uname().nodename}", "pid": {int(proc.stdout)}}}\n')
        os.utime(run / "run.lock", (time.time() - 60,) * 2)
        lock = RunLock(run)
        t0 = time.perf_counter()
        lock.acquire()
        lock.release()
        takeovers.append(time.perf_counter() - t0)
    return {"acquire_release_s": statistics.median(times), "takeover_s": statistics.median(takeovers)}


def time_epoch(steps: int) -> dict:
    torch.manual_seed(0)
    config = PerceiverConfig(**TEN_MINUTE_MODEL)
    model = Perceiver(config)
    opt = build_optimizer(model, name="lamb", lr=4e-3, weight_decay=0.05)
    x, y, pos = torch.randn(BATCH, 32 * 32, 3), torch.randint(0, 10, (BATCH,)), grid_positions(32, 32)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, pos), y).backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    steps_per_epoch = math.ceil(TRAIN_IMAGES / BATCH)
    return {"parameters": model.num_parameters(), "step_s": per_step, "steps_per_epoch": steps_per_epoch,
            "epoch_s": per_step * steps_per_epoch}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=None, help="where the lock files go (default: a temporary folder)")
    p.add_argument("--cycles", type=int, default=200, help="lock acquire/release cycles (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="training steps timed (default: %(default)s)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_lock_", dir=args.dir) as tmp:
        lock = time_lock(Path(tmp), args.cycles)
    epoch = time_epoch(args.steps)
    print(f"lock, acquire + release: {lock['acquire_release_s'] * 1e6:.0f} us (median of {args.cycles}); taking "
          f"over a stale lock + release: {lock['takeover_s'] * 1e6:.0f} us")
    print(f"10-minute CIFAR-10 model ({epoch['parameters'] / 1e6:.2f} M parameters, batch {BATCH}, "
          f"{torch.get_num_threads()} threads): {epoch['step_s'] * 1e3:.0f} ms a step, {epoch['epoch_s']:.1f} s an "
          f"epoch of {epoch['steps_per_epoch']} steps")
    worst = max(lock["acquire_release_s"], lock["takeover_s"])
    print(f"the lock costs {worst / epoch['epoch_s']:.2e} of one epoch (once per run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
