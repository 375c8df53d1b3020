"""The ``capture`` section: what ``train.py --save_attention_maps`` costs an epoch.

Once per epoch, train.py runs its probe samples through ``model(x, pos, return_attention=True)`` in eval mode
(`perceiver.probes.capture`) and writes the maps (`perceiver.rundir.RunDir.save_attention`). Here the same two
calls, on 8 samples of the ``small`` config, are timed on their own and as part of an epoch of training steps.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from benchmarks.configs import CONFIGS, make_batch
from benchmarks.timing import timed_rounds
from benchmarks.variants import build_variant, make_optimizer, train_step_fn
from perceiver import probes
from perceiver.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def bench_capture(args, device: torch.device, log) -> dict:
    """An epoch of training steps with vs without the once-per-epoch attention probe pass."""
    with tempfile.TemporaryDirectory(prefix="bench_capture_") as tmp:
        out = _time_capture(args, device, log, tmp)
    if args.capture_e2e and not args.tiny:
        out["train_py"] = capture_e2e(log)
    return out


def _time_capture(args, device: torch.device, log, tmp: str) -> dict:
    cfg = CONFIGS["tiny" if args.tiny else "small"]
    steps = 2 if args.tiny else args.capture_steps
    torch.manual_seed(0)
    v = build_variant("ours", cfg, device)
    batch = make_batch(cfg, device)
    step = train_step_fn(v, batch, make_optimizer(v.model, cfg["lr"]), device)
    probe = make_batch(cfg, device, batch=8)
    dataset = torch.utils.data.TensorDataset(probe.x.cpu(), probe.y.cpu())
    indices = np.arange(len(dataset))
    bundle = SimpleNamespace(kind="image", permutation=None, image_shape=(*cfg["hw"], cfg["model"]["in_channels"]),
                             class_names=[str(c) for c in range(cfg["model"]["num_classes"])])
    run = RunDir(tmp)

    def probe_pass():
        run.save_attention(probes.capture(v.model, dataset, indices, epoch=1, bundle=bundle, device=device,
                                          pos=probe.pos))

    def epoch(with_probe: bool):
        def fn():
            for _ in range(steps):
                step()
            if with_probe:
                probe_pass()
        return fn

    log(f"[capture] epoch of {steps} steps (batch {batch.x.shape[0]}) with vs without the probe pass")
    out = timed_rounds({"epoch": epoch(False), "epoch+probe": epoch(True), "probe": probe_pass},
                       warmup=0 if args.tiny else 1, iters=1 if args.tiny else max(3, args.iters),
                       device=device, log=log)
    out["steps_per_epoch"] = steps
    out["overhead"] = out["epoch+probe"]["median_s"] / out["epoch"]["median_s"] - 1
    out["overhead_from_probe_time"] = out["probe"]["median_s"] / out["epoch"]["median_s"]
    return out


def capture_e2e(log) -> dict:
    """train.py end to end on shapes2d (the quick start, 2 epochs), with vs without --save_attention_maps."""
    base = [sys.executable, str(ROOT / "train.py"), "--dataset", "shapes2d", "--epochs", "2", "--num_latents", "32",
            "--latent_dim", "64", "--num_cross_attend_stages", "1", "--num_transformer_blocks", "2", "--num_heads",
            "2", "--dropout", "0.0", "--batch_size", "32", "--optimizer", "adamw", "--lr", "0.001",
            "--shapes_train_size", "1000", "--shapes_test_size", "500", "--num_workers", "0",
            "--attention_save_interval", "1"]
    times: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as logs:
        for r in range(2):
            for key in (("without", "with") if r % 2 == 0 else ("with", "without")):
                cmd = base + ["--logs_dir", logs, "--experiment_name", f"e2e_{key}_{r}"]
                if key == "with":
                    cmd.append("--save_attention_maps")
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                times[key].append(time.perf_counter() - t0)
                if proc.returncode:
                    return {"status": "error", "tail": proc.stderr.strip().splitlines()[-3:]}
                log(f"    train.py {key} attention maps: {times[key][-1]:.1f} s")
    return {"without_s": times["without"], "with_s": times["with"],
            "overhead": statistics.median(times["with"]) / statistics.median(times["without"]) - 1}
