#!/usr/bin/env python
"""Speed and memory of the Perceiver: training/evaluation throughput, peak memory, FLOPs, scaling in N.

    python benchmarks/bench.py                                   # our model, configs small, exp1, exp3 + scaling
    python benchmarks/bench.py --compare perceiver-pytorch --json out.json   # + lucidrains' Perceiver, ratios
    python benchmarks/bench.py --configs exp1 --iters 5 --warmup 1 --sections speed
    python benchmarks/bench.py --tiny                            # smoke test: a tiny config, one iteration
    python benchmarks/bench.py --configs cifar_cpu --sections speed --cpu-variants bf16,compile   # CPU bf16 / compile
    python benchmarks/report.py out.json                         # the tables of out.json as markdown

Sections (``--sections``, default all):

- ``speed``: per config (``--configs``), every model variant timed alternately with the others in one process:
  training and evaluation samples/s, FLOPs per sample, achieved FLOP/s as a fraction of the fp32 matmul rate
  timed in the same rounds, peak memory (CPU: peak RSS of a fresh subprocess; CUDA: max allocated bytes).
- ``scaling``: one training step at N = 1k .. 64k point-cloud tokens, our Perceiver vs a plain transformer
  encoder of the same width, each point in its own subprocess with a time and a memory cap; table + plot.
- ``capture``: the cost of ``train.py --save_attention_maps``: an epoch with vs without the probe pass.

``--compare perceiver-pytorch`` adds lucidrains' ``perceiver_pytorch.Perceiver`` (``pip install
perceiver-pytorch``) at the closest equivalent settings, and "ours-ff6", our model with the same MLP FLOPs.
What each figure means and how it is measured: docs/PERFORMANCE.md. The code: benchmarks/__init__.py.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.capture import bench_capture  # noqa: E402
from benchmarks.configs import CONFIGS, GOALS  # noqa: E402
from benchmarks.machine import machine_info, tune_malloc  # noqa: E402
from benchmarks.report import evaluate_goals, render  # noqa: E402
from benchmarks.scaling import bench_scaling  # noqa: E402
from benchmarks.speed import VARIANT_KINDS, bench_config  # noqa: E402
from benchmarks.variants import have_theirs  # noqa: E402


SECTIONS = ("speed", "scaling", "capture")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=None, help=f"comma-separated, from {', '.join(CONFIGS)} "
                   "(default: small,exp1,exp3; tiny with --tiny)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated (default: %(default)s)")
    p.add_argument("--compare", choices=["perceiver-pytorch"], default=None,
                   help="also benchmark lucidrains' perceiver-pytorch (pip install perceiver-pytorch)")
    p.add_argument("--iters", type=int, default=5, help="timed rounds per measurement (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", default=None, metavar="FILE", help="write every figure to FILE")
    p.add_argument("--tiny", action="store_true", help="smoke test: tiny config, 1 iteration, tiny scaling")
    p.add_argument("--checkpointing", action="store_true",
                   help="add the variant ours-ckpt (activation checkpointing): its memory/time trade-off")
    p.add_argument("--ablation", action="store_true", help="add ours-no-absorb / ours-no-recompute / ours-neither "
                   "(each speed-up of perceiver/kernels.py switched off) and ours-plain (the plain model)")
    p.add_argument("--no_memory", "--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--no_cuda_variants", "--no-cuda-variants", action="store_true",
                   help="on CUDA, skip the bf16 / torch.compile variants")
    p.add_argument("--cuda_variants", "--cuda-variants", default="bf16,compile",
                   help="on CUDA, extra variants: bf16 (autocast), compile (torch.compile) (default: %(default)s)")
    p.add_argument("--cpu_variants", "--cpu-variants", default="",
                   help="on the CPU, the same extra variants, e.g. bf16,compile (default: none)")
    p.add_argument("--probe_timeout", "--probe-timeout", type=float, default=900,
                   help="seconds per memory probe (default: %(default)s)")
    p.add_argument("--scaling_n", "--scaling-n", default=None,
                   help="token counts (default: 1024,4096,16384,65536; 256 with --tiny)")
    p.add_argument("--scaling_cap", "--scaling-cap", type=float, default=None,
                   help="seconds allowed per scaling point (default: 60; 30 with --tiny)")
    p.add_argument("--scaling_mem_gb", "--scaling-mem-gb", type=float, default=8.0,
                   help="address-space cap per scaling point, GiB (default: %(default)s)")
    p.add_argument("--plot", default=None,
                   help="scaling plot path (default: docs/images/scaling.png; none with --tiny)")
    p.add_argument("--capture_steps", "--capture-steps", type=int, default=32,
                   help="training steps per epoch in the capture benchmark (default: %(default)s = 1000 samples / 32)")
    p.add_argument("--capture_e2e", "--capture-e2e", action="store_true",
                   help="also time train.py end to end with vs without --save_attention_maps")
    p.add_argument("--malloc_tune", "--malloc-tune", action="store_true",
                   help="glibc mallopt: keep large freed blocks instead of unmapping them (see machine.tune_malloc)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    configs = (args.configs or ("tiny" if args.tiny else "small,exp1,exp3")).split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        parser.error(f"--sections: unknown section(s) {', '.join(sorted(sections - set(SECTIONS)))}; "
                     f"choose from {', '.join(SECTIONS)}")
    for flag in ("cuda_variants", "cpu_variants"):  # comma-separated on the command line, a set from here on
        kinds = set(filter(None, getattr(args, flag).split(",")))
        if kinds - set(VARIANT_KINDS):
            parser.error(f"--{flag}: unknown variant(s) {', '.join(sorted(kinds - set(VARIANT_KINDS)))}; "
                         f"choose from {', '.join(VARIANT_KINDS)}")
        setattr(args, flag, kinds)
    if args.compare and not have_theirs():
        msg = "perceiver-pytorch is not installed (pip install perceiver-pytorch)"
        if not args.tiny:
            parser.error(f"--compare: {msg}")
        print(f"note: skipping --compare: {msg}", file=sys.stderr)
        args.compare = None
    if args.tiny:
        args.iters, args.warmup = 1, 0
    if args.scaling_n is None:
        args.scaling_n = "256" if args.tiny else "1024,4096,16384,65536"
    if args.scaling_cap is None:
        args.scaling_cap = 30.0 if args.tiny else 60.0
    if args.plot is None and not args.tiny:
        args.plot = str(ROOT / "docs" / "images" / "scaling.png")
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = tune_malloc() if args.malloc_tune else {"applied": False}
    device = torch.device(args.device)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    res: dict = {"machine": {**machine_info(device), "malloc_tune": malloc}, "args": vars(args), "goals_spec": GOALS}
    if "speed" in sections:
        res["configs"] = {name: bench_config(name, args, device, log) for name in configs}
    if "scaling" in sections and device.type == "cpu":
        res["scaling"] = bench_scaling(args, log)
    if "capture" in sections:
        res["capture"] = bench_capture(args, device, log)
    with contextlib.suppress(Exception):
        res["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    res["goals"] = evaluate_goals(res)
    print(render(res), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return res


if __name__ == "__main__":
    main()
