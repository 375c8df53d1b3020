#!/usr/bin/env python
"""Speed and memory of the Perceiver: training/evaluation throughput, peak memory, FLOPs, scaling in N.

    python benchmarks/bench.py                                   # our model, configs small, exp1, exp3 + scaling
    python benchmarks/bench.py --compare perceiver-pytorch --json out.json   # + lucidrains' Perceiver, ratios
    python benchmarks/bench.py --configs exp1 --iters 5 --warmup 1 --sections speed
    python benchmarks/bench.py --tiny                            # smoke test: a tiny config, one iteration

Sections (``--sections``, default all):

- ``speed``: per config (``--configs``), for every model variant: training samples/s (forward + backward +
  LAMB step), evaluation samples/s (eval mode, ``torch.inference_mode``), peak memory, parameter count,
  FLOPs per sample (``torch.utils.flop_counter.FlopCounterMode``: the FLOPs the model actually executes) and
  achieved FLOP/s as a fraction of the machine's fp32 matmul rate, which is timed in the same rounds as the
  models so that both see the same load. Variants are timed alternately in the same process (round-robin,
  the order reversed every other round), after ``--warmup`` untimed rounds; we report the median of
  ``--iters`` rounds and the min-max. CPU peak memory is the peak RSS of a fresh subprocess per (config,
  variant, train/eval) that builds the model, runs the steps and reads its own ``VmHWM``; "step memory" is
  that peak minus the RSS just before the first step (model, data and imports excluded). On CUDA: max
  allocated bytes, with bf16-autocast and ``torch.compile`` variants added.
- ``scaling``: one training step at N = 1k, 4k, 16k, 64k point-cloud tokens for our Perceiver and for a plain
  ``torch.nn.TransformerEncoder`` of the same width, each point in its own subprocess with a time cap
  (``--scaling-cap`` seconds per point) and an address-space cap (``--scaling-mem-gb``); table + log-log plot.
- ``capture``: the cost of saving attention maps: an epoch of training steps of the ``small`` config with vs
  without the probe pass that ``train.py --save_attention_maps`` runs once per epoch (eval mode,
  ``return_attention=True`` on 8 probe samples, maps converted to float16 and written to disk).

``--compare perceiver-pytorch`` adds lucidrains' ``perceiver_pytorch.Perceiver`` (``pip install
perceiver-pytorch``) at the closest equivalent settings (`theirs_kwargs`), and "ours-ff6", our model with
``mlp_ratio=6``: their feed-forward is GEGLU with mult 4 (D -> 8D -> gate -> 4D -> D, 12 D^2 weights), ours is
GELU with ``mlp_ratio`` (2 r D^2 weights), so ratio 6 matches their MLP FLOPs and parameters exactly.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perceiver.model import Perceiver, PerceiverConfig  # noqa: E402
from perceiver.position import fourier_features, grid_positions  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import fmt_mem, fmt_rate  # noqa: E402  (one formatting of rates and memory for both outputs)

# ------------------------------------------------------------------------------------------------ configs

#: Benchmark configurations. ``small`` is the README / train.py quick start (built-in shapes2d: 32x32 RGB,
#: 16 Fourier bands); edit it here if the quick start changes. Dropout is 0 everywhere: the two libraries
#: place dropout differently, and it is not what is being compared.
CONFIGS: dict[str, dict] = {
    "small": dict(kind="image", hw=(32, 32), batch=32, lr=1e-3, model=dict(
        in_channels=3, num_classes=10, pos_dim=2, fourier_bands=16, max_freq=32.0, num_latents=32, latent_dim=64,
        num_cross_attend_stages=1, num_transformer_blocks=2, num_heads=2)),
    "exp1": dict(kind="image", hw=(32, 32), batch=64, lr=4e-3, model=dict(  # README Experiment 1 (CIFAR-10)
        in_channels=3, num_classes=10, pos_dim=2, fourier_bands=64, max_freq=32.0, num_latents=96,
        latent_dim=384, num_cross_attend_stages=4, num_transformer_blocks=4, num_heads=3)),
    "exp3": dict(kind="points", n=2048, batch=8, lr=1e-3, model=dict(  # README Experiment 3 (ModelNet40)
        in_channels=3, num_classes=40, pos_dim=3, fourier_bands=64, max_freq=1120.0, num_latents=128,
        latent_dim=512, num_cross_attend_stages=2, num_transformer_blocks=6, num_heads=8)),
    "tiny": dict(kind="image", hw=(8, 8), batch=4, lr=1e-3, model=dict(  # smoke tests
        in_channels=3, num_classes=5, pos_dim=2, fourier_bands=4, max_freq=8.0, num_latents=8, latent_dim=32,
        num_cross_attend_stages=2, num_transformer_blocks=1, num_heads=2)),
}

#: The scaling study: point clouds of N xyz points; our Perceiver vs a transformer encoder of the same width
#: whose depth equals the Perceiver's latent blocks (stages x blocks).
SCALING = dict(batch=2, lr=1e-3, model=dict(
    in_channels=3, num_classes=40, pos_dim=3, fourier_bands=32, max_freq=1120.0, num_latents=128, latent_dim=256,
    num_cross_attend_stages=2, num_transformer_blocks=2, num_heads=4))
SCALING_TINY = dict(batch=2, lr=1e-3, model=dict(
    in_channels=3, num_classes=5, pos_dim=3, fourier_bands=4, max_freq=64.0, num_latents=8, latent_dim=32,
    num_cross_attend_stages=1, num_transformer_blocks=1, num_heads=2))

GOALS = {  # Issue 6 (CPU): ours/theirs on exp1, small; FLOP/s fraction; scaling
    "exp1_train_speedup": 1.3, "exp1_eval_speedup": 1.3, "exp1_memory_ratio": 0.6, "small_train_speedup": 2.0,
    "exp1_flops_fraction": 0.8, "scaling_growth_4k_64k": 17.0, "capture_overhead": 0.05,
}


# ------------------------------------------------------------------------------------------------ machine


def machine_info(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(), "logical_cpus": os.cpu_count(), "device": str(device)}
    with contextlib.suppress(Exception):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields_ = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["cpu_model"] = fields_.get("Model name", "").strip()
        info["cores_per_socket"] = fields_.get("Core(s) per socket", "").strip()
        info["sockets"] = fields_.get("Socket(s)", "").strip()
    if "cpu_model" not in info or not info["cpu_model"]:
        info["cpu_model"] = platform.processor()
    with contextlib.suppress(Exception):
        info["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def tune_malloc() -> dict:
    """glibc: serve large tensors from the heap and keep freed memory (no mmap/munmap + page faults per tensor).

    By default glibc maps every allocation above a (dynamic, <= 32 MiB) threshold with mmap and unmaps it on
    free, so each large activation costs its page faults again on every step. This is the ``mallopt`` version
    of ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...``; it changes how fast
    memory is obtained, not how much a step needs. Applies to this process only; both libraries benefit.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return {"applied": False}
    m_trim_threshold, m_mmap_threshold = -1, -3
    got = {}
    for value in (1 << 30, 1 << 28, 1 << 26, 1 << 25):
        if libc.mallopt(m_mmap_threshold, value):
            got["mmap_threshold"] = value
            break
    if libc.mallopt(m_trim_threshold, (1 << 31) - 1):
        got["trim_threshold"] = (1 << 31) - 1
    return {"applied": bool(got), **got}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_fn(device: torch.device, dtype=torch.float32, n: int | None = None):
    """A large square matmul, for the machine's measured peak: returns (fn, flops per call)."""
    n = n or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 3 if device.type == "cpu" else 20

    def fn():
        for _ in range(reps):
            torch.mm(a, b)
    return fn, 2 * n ** 3 * reps


# ------------------------------------------------------------------------------------------------ variants


def theirs_kwargs(cfg: dict) -> dict:
    """lucidrains' ``Perceiver`` at the settings closest to ours (the mapping this benchmark documents).

    depth = stages, weight_tie_layers = our weight sharing (both: stage 1 own weights, stages 2.. one shared set),
    self_per_cross_attn = blocks, cross_heads = 1 with cross_dim_head = latent_dim (our cross-attention works
    at the latent width; their default dim_head 64 would make it 6x narrower), latent_dim_head =
    latent_dim / heads, num_freq_bands / max_freq as ours (their bands are linspace(1, max_freq / 2) too).
    Images: input_axis 2 (their built-in Fourier grid = our grid positions); point clouds: their built-in
    encoding would encode the token index, not xyz, so fourier_encode_data=False and the forward appends
    ``fourier_encode(xyz)`` (their function) to the channels, like ours does. Differences that remain: their
    feed-forward is GEGLU mult 4 (compare with ours-ff6), they LayerNorm the input tokens before the K/V
    projection, their q/k/v projections have no bias.
    """
    m = cfg["model"]
    feats = m["pos_dim"] * (2 * m["fourier_bands"] + 1)
    points = cfg["kind"] == "points"
    return dict(
        num_freq_bands=m["fourier_bands"], depth=m["num_cross_attend_stages"], max_freq=m["max_freq"],
        input_channels=m["in_channels"] + (feats if points else 0), input_axis=1 if points else 2,
        num_latents=m["num_latents"], latent_dim=m["latent_dim"], cross_heads=1, latent_heads=m["num_heads"],
        cross_dim_head=m["latent_dim"], latent_dim_head=m["latent_dim"] // m["num_heads"],
        num_classes=m["num_classes"], attn_dropout=0.0, ff_dropout=0.0, weight_tie_layers=True,
        fourier_encode_data=not points, self_per_cross_attn=m["num_transformer_blocks"])


@dataclass
class Batch:
    x: torch.Tensor            # (B, N, C)
    pos: torch.Tensor | None   # (N, D) or None (positions are the xyz channels)
    y: torch.Tensor
    image: torch.Tensor | None = None  # (B, H, W, C) view of x, for perceiver-pytorch


def make_batch(cfg: dict, device: torch.device, batch: int | None = None, n: int | None = None) -> Batch:
    g = torch.Generator().manual_seed(0)
    b = batch or cfg["batch"]
    m = cfg["model"]
    y = torch.randint(0, m["num_classes"], (b,), generator=g)
    if cfg.get("kind", "points") == "image":
        h, w = cfg["hw"]
        x = torch.randn(b, h * w, m["in_channels"], generator=g)
        return Batch(x.to(device), grid_positions(h, w).to(device), y.to(device),
                     x.view(b, h, w, -1).to(device))
    pts = torch.randn(b, n or cfg["n"], 3, generator=g)
    pts = pts / pts.norm(dim=-1, keepdim=True).clamp_min(1e-6) * torch.rand(b, pts.shape[1], 1, generator=g) ** (1 / 3)
    return Batch(pts.to(device), None, y.to(device))  # uniform in the unit ball, like normalised ModelNet40


@dataclass
class Variant:
    name: str
    model: nn.Module
    forward: Callable[[Batch], torch.Tensor]
    autocast: torch.dtype | None = None
    note: str = ""
    flops_from: str | None = None  # compiled variants: count FLOPs on the eager twin
    params: int = 0
    extra: dict = field(default_factory=dict)


def ours_config(cfg: dict, **overrides) -> PerceiverConfig:
    base = {**cfg["model"], "dropout": 0.0}
    base.setdefault("pos_from_input", cfg.get("kind", "points") != "image")
    return PerceiverConfig(**{**base, **overrides})


#: Our model's variants: config overrides and a description. The ``ours-no-*`` ablations turn off one exact
#: speed-up of perceiver/kernels.py each: the factorised cross-attention (every layer uses the "project" path:
#: K/V materialised, position half once per batch) and the MLP's GELU recomputation; "ours-plain" runs the
#: plain model of perceiver/model.py.
OURS_VARIANTS: dict[str, tuple[dict, str]] = {
    "ours": ({}, "mlp_ratio 4 (default)"),
    "ours-ff6": ({"mlp_ratio": 6.0}, "mlp_ratio 6 = their GEGLU's FLOPs and weights"),
    "ours-ckpt": ({"activation_checkpointing": True}, "activation checkpointing"),
    "ours-no-absorb": ({"cross_kernel": "project"}, "ablation: K/V materialised (project path)"),
    "ours-no-recompute": ({"gelu_recompute": False}, "ablation: plain autograd MLP"),
    "ours-neither": ({"cross_kernel": "project", "gelu_recompute": False}, "ablation: both off"),
    "ours-plain": ({"kernels": "plain"}, "ablation: the plain model (perceiver/model.py as written)"),
}


def build_variant(name: str, cfg: dict, device: torch.device) -> Variant:
    base = name.split("+")[0]
    if base in OURS_VARIANTS:
        over, note = OURS_VARIANTS[base]
        model = Perceiver(ours_config(cfg, **over)).to(device)
        fwd_model = model

        def forward(b: Batch, _m=None):
            return (_m or fwd_model)(b.x, b.pos)
        v = Variant(name, model, forward, note=note)
    elif base == "theirs":
        from perceiver_pytorch import Perceiver as TheirPerceiver
        from perceiver_pytorch.perceiver_pytorch import fourier_encode
        kw = theirs_kwargs(cfg)
        model = TheirPerceiver(**kw).to(device)
        m = cfg["model"]
        fwd_model = model
        if cfg["kind"] == "image":
            def forward(b: Batch, _m=None):
                return (_m or fwd_model)(b.image)
        else:
            def forward(b: Batch, _m=None):
                feats = fourier_encode(b.x, m["max_freq"], m["fourier_bands"]).flatten(-2)  # (B, N, 3 (2K + 1))
                return (_m or fwd_model)(torch.cat([b.x, feats], dim=-1))
        v = Variant(name, model, forward, note="perceiver-pytorch " + _their_version())
    else:
        raise ValueError(f"unknown variant {name!r}")
    v.params = sum(p.numel() for p in v.model.parameters())
    if "+bf16" in name:
        v.autocast = torch.bfloat16
        v.note += ", bf16 autocast"
    if "+compile" in name:
        compiled = torch.compile(v.model)
        inner = v.forward
        v.forward = lambda b, _f=inner, _c=compiled: _f(b, _c)
        v.flops_from = name.replace("+compile", "")
        v.note += ", torch.compile"
    return v


def _their_version() -> str:
    with contextlib.suppress(Exception):
        from importlib.metadata import version
        return version("perceiver-pytorch")
    return "?"


def have_theirs() -> bool:
    try:
        import perceiver_pytorch  # noqa: F401
        return True
    except Exception:
        return False


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    try:
        from perceiver.optim import build_optimizer
        return build_optimizer(model, name="lamb", lr=lr, weight_decay=1e-4)
    except ImportError:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)


def _autocast(v: Variant, device: torch.device):
    if v.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=v.autocast)


def train_step_fn(v: Variant, batch: Batch, opt: torch.optim.Optimizer, device: torch.device) -> Callable[[], None]:
    def step():
        v.model.train()
        opt.zero_grad(set_to_none=True)
        with _autocast(v, device):
            loss = F.cross_entropy(v.forward(batch).float(), batch.y)
        loss.backward()
        opt.step()
    return step


def eval_step_fn(v: Variant, batch: Batch, device: torch.device, inference: bool = True) -> Callable[[], None]:
    # FlopCounterMode's module hooks trip over no-grad views of parameters (they keep requires_grad without a
    # grad_fn): FLOPs are counted with autograd on, which does not change the forward's FLOPs.
    grad_off = torch.inference_mode if inference else contextlib.nullcontext

    def step():
        v.model.eval()
        with grad_off(), _autocast(v, device):
            v.forward(batch)
        v.model.train()
    return step


def fwd_bwd_fn(v: Variant, batch: Batch, device: torch.device) -> Callable[[], None]:
    def step():
        v.model.train()
        with _autocast(v, device):
            loss = F.cross_entropy(v.forward(batch).float(), batch.y)
        loss.backward()
        v.model.zero_grad(set_to_none=True)
    return step


def count_flops(fn: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------ timing


def timed_rounds(fns: dict[str, Callable[[], None]], *, warmup: int, iters: int, device: torch.device,
                 log: Callable[[str], None] = lambda s: None) -> dict[str, list[float]]:
    """Round-robin timing: every round runs every function once (order reversed on odd rounds)."""
    names = list(fns)
    for w in range(warmup):
        for k in names:
            fns[k]()
        log(f"    warm-up round {w + 1}/{warmup} done")
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(iters):
        for k in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fns[k]()
            sync(device)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        log(f"    round {r + 1}/{iters}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k in names))
    timed_rounds.cpu = cpu  # CPU seconds of this process per call (all threads): see summarise()
    return times


def summarise(ts: list[float]) -> dict:
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "n": len(ts),
            "all_s": [round(t, 5) for t in ts]}


# ------------------------------------------------------------------------------------------------ memory


def _rss_status() -> dict[str, float]:
    """VmRSS / VmHWM / VmSize of this process in MiB (Linux); ru_maxrss elsewhere."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmSize"):
                    out[key] = int(rest.split()[0]) / 1024
    except OSError:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024
        out = {"VmRSS": float("nan"), "VmHWM": peak, "VmSize": float("nan")}
    return out


def memory_probe(spec: dict) -> dict:
    """Run in a fresh subprocess: build one variant, run `steps` train (or eval) steps, report RSS figures."""
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("malloc_tune"):
        tune_malloc()
    cfg = spec["cfg"]
    v = build_variant(spec["variant"], cfg, device)
    batch = make_batch(cfg, device)
    if spec["mode"] == "train":
        fn = train_step_fn(v, batch, make_optimizer(v.model, cfg["lr"]), device)
    else:
        fn = eval_step_fn(v, batch, device)
    before = _rss_status()
    with contextlib.suppress(OSError):  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    for _ in range(spec["steps"]):
        fn()
    after = _rss_status()
    peak = after["VmHWM"]
    return {"baseline_rss_mb": before["VmRSS"], "peak_rss_mb": peak, "step_mb": peak - before["VmRSS"]}


def run_subprocess(flag: str, spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), flag, json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_s": timeout}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    oom = proc.returncode in (-9, 137) or any("memory" in t.lower() for t in tail)
    return {"status": "oom" if oom else "error", "returncode": proc.returncode, "tail": tail}


def cuda_memory(fn: Callable[[], None], steps: int, device: torch.device) -> dict:
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    for _ in range(steps):
        fn()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"baseline_mb": base / 2 ** 20, "peak_allocated_mb": peak / 2 ** 20, "step_mb": (peak - base) / 2 ** 20}


# ------------------------------------------------------------------------------------------------ speed


def bench_config(name: str, args, device: torch.device, log) -> dict:
    cfg = CONFIGS[name]
    names = ["ours"]
    if args.compare:
        names += ["ours-ff6", "theirs"]
    if args.checkpointing:
        names.append("ours-ckpt")
    if args.ablation:
        names += ["ours-no-absorb", "ours-no-recompute", "ours-neither"]
    if device.type == "cuda" and not args.no_cuda_variants:
        kinds = set(args.cuda_variants.split(","))
        if "bf16" in kinds:
            names += ["ours+bf16"] + (["theirs+bf16"] if args.compare else [])
        if "compile" in kinds:
            names += ["ours+compile", "ours+bf16+compile"] if "bf16" in kinds else ["ours+compile"]
    log(f"[{name}] variants: {', '.join(names)}")
    torch.manual_seed(0)
    variants = {n: build_variant(n, cfg, device) for n in names}
    batch = make_batch(cfg, device)
    bsz = batch.x.shape[0]
    opts = {n: make_optimizer(v.model, cfg["lr"]) for n, v in variants.items()}
    result: dict = {"config": name, "settings": cfg, "batch": bsz, "variants": {}}
    if "theirs" in variants:
        result["theirs_kwargs"] = theirs_kwargs(cfg)

    # FLOPs per sample: one forward+backward (train) and one forward (eval), counted on eager models.
    flops = {}
    for n, v in variants.items():
        src = variants[v.flops_from] if v.flops_from else v
        if v.flops_from and v.flops_from in flops:
            flops[n] = flops[v.flops_from]
            continue
        flops[n] = {"train": count_flops(fwd_bwd_fn(src, batch, device)) / bsz,
                    "eval": count_flops(eval_step_fn(src, batch, device, inference=False)) / bsz}
    mm, mm_flops = matmul_fn(device)
    peaks = {"matmul_fp32": mm}
    if device.type == "cuda":
        mm16, mm16_flops = matmul_fn(device, torch.bfloat16)
        peaks["matmul_bf16"] = mm16
    for mode in ("train", "eval"):
        fns = {n: (train_step_fn(v, batch, opts[n], device) if mode == "train" else eval_step_fn(v, batch, device))
               for n, v in variants.items()}
        fns.update(peaks)
        log(f"[{name}] timing {mode} ({args.warmup} warm-up + {args.iters} rounds)")
        times = timed_rounds(fns, warmup=args.warmup, iters=args.iters, device=device, log=log)
        mm_rate = mm_flops / statistics.median(times["matmul_fp32"])
        best_peak = {"fp32": mm_flops / min(times["matmul_fp32"])}
        if device.type == "cuda":
            best_peak["bf16"] = mm16_flops / min(times["matmul_bf16"])
        result.setdefault("matmul_peak_flops", {})[mode] = {"fp32": mm_rate}
        if device.type == "cuda":
            result["matmul_peak_flops"][mode]["bf16"] = mm16_flops / statistics.median(times["matmul_bf16"])
        cpu = timed_rounds.cpu
        for n, v in variants.items():
            s = summarise(times[n])
            s["cpu_median_s"] = statistics.median(cpu[n])
            rate = flops[n][mode] * bsz / s["median_s"]
            peak = result["matmul_peak_flops"][mode]["bf16" if v.autocast is torch.bfloat16 else "fp32"]
            r = result["variants"].setdefault(n, {"note": v.note, "params": v.params})
            r[mode] = {**s, "samples_per_s": bsz / s["median_s"], "samples_per_s_min": bsz / s["max_s"],
                       "samples_per_s_max": bsz / s["min_s"], "flops_per_sample": flops[n][mode],
                       "achieved_flops": rate, "fraction_of_matmul_peak": rate / peak,
                       "fraction_of_matmul_peak_best": flops[n][mode] * bsz / s["min_s"] / best_peak[
                           "bf16" if v.autocast is torch.bfloat16 else "fp32"]}

    # Peak memory: CUDA in process (max allocated); CPU in a fresh subprocess per measurement (peak RSS).
    jobs = [(n, mode) for n in variants for mode in ("train", "eval")] if not args.no_memory else []
    if device.type == "cuda":
        for n, mode in jobs:
            v = variants[n]
            fn = train_step_fn(v, batch, opts[n], device) if mode == "train" else eval_step_fn(v, batch, device)
            result["variants"][n][f"memory_{mode}"] = cuda_memory(fn, 2, device)
    else:
        def probe(job):
            n, mode = job
            log(f"[{name}] memory probe: {n} {mode} (fresh subprocess)")
            spec = {"cfg": cfg, "variant": n, "mode": mode, "steps": 2, "device": str(device),
                    "threads": torch.get_num_threads(), "malloc_tune": args.malloc_tune}
            return run_subprocess("--_memory_probe", spec, timeout=args.probe_timeout)
        # Sequential for real measurements; the smoke test (--tiny) runs its probes side by side.
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=4 if args.tiny else 1) as pool:
            for (n, mode), mem in zip(jobs, pool.map(probe, jobs)):
                result["variants"][n][f"memory_{mode}"] = mem
    del variants, opts
    result["ratios"] = ratios(result)
    return result


def ratios(res: dict) -> dict:
    """ours / theirs: speed ratios (> 1: ours faster) and memory ratios (< 1: ours smaller)."""
    out = {}
    vs = res["variants"]
    if "theirs" not in vs:
        return out
    t = vs["theirs"]
    for n in ("ours", "ours-ff6", "ours-ckpt"):
        if n not in vs:
            continue
        o = vs[n]
        r = {"train_speed": o["train"]["samples_per_s"] / t["train"]["samples_per_s"],
             "eval_speed": o["eval"]["samples_per_s"] / t["eval"]["samples_per_s"],
             "train_speed_best": t["train"]["min_s"] / o["train"]["min_s"],  # fastest round vs fastest round
             "eval_speed_best": t["eval"]["min_s"] / o["eval"]["min_s"],
             "params": o["params"] / t["params"],
             "train_flops": o["train"]["flops_per_sample"] / t["train"]["flops_per_sample"]}
        for mode in ("train", "eval"):
            mo, mt = o.get(f"memory_{mode}", {}), t.get(f"memory_{mode}", {})
            for key in ("peak_rss_mb", "step_mb", "peak_allocated_mb"):
                if key in mo and key in mt and mt[key]:
                    r[f"memory_{mode}_{key}"] = mo[key] / mt[key]
        out[f"{n}/theirs"] = r
    return out


# ------------------------------------------------------------------------------------------------ scaling


class TransformerClassifier(nn.Module):
    """A plain transformer encoder over all N tokens: embed [xyz, Fourier(xyz)], pre-norm layers, mean-pool."""

    def __init__(self, c: PerceiverConfig):
        super().__init__()
        self.bands, self.max_freq = c.fourier_bands, c.max_freq
        self.embed = nn.Linear(c.in_channels + c.pe_features, c.latent_dim)
        layer = nn.TransformerEncoderLayer(c.latent_dim, c.num_heads, dim_feedforward=int(c.mlp_ratio * c.latent_dim),
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.num_cross_attend_stages * c.num_transformer_blocks,
                                             enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.latent_dim)
        self.head = nn.Linear(c.latent_dim, c.num_classes)

    def forward(self, x: torch.Tensor, pos=None) -> torch.Tensor:
        feats = fourier_features(x, num_bands=self.bands, max_freq=self.max_freq)
        h = self.encoder(self.embed(torch.cat([x, feats], dim=-1)))
        return self.head(self.norm(h.mean(dim=1)))


def scaling_point(spec: dict) -> dict:
    """Run in a fresh subprocess: train steps of one model at one N; time per step and peak RSS."""
    import resource
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("malloc_tune"):
        tune_malloc()
    sc = spec["scaling"]
    cfg = {**sc, "kind": "points", "n": spec["n"]}
    c = ours_config(cfg)
    torch.manual_seed(0)
    model = Perceiver(c) if spec["model"] == "perceiver" else TransformerClassifier(c)
    batch = make_batch(cfg, torch.device("cpu"))
    v = Variant(spec["model"], model, lambda b: model(b.x, b.pos))
    fn = train_step_fn(v, batch, make_optimizer(model, cfg["lr"]), torch.device("cpu"))
    before = _rss_status()
    if spec.get("mem_gb"):  # an allocation past the cap fails (reported as "oom") instead of swamping the machine
        limit = int((before["VmSize"] + spec["mem_gb"] * 1024) * 2 ** 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    times = []
    start = time.perf_counter()
    try:
        while len(times) < spec["steps"]:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > spec["cap"] and len(times) >= 1:
                break
    except (RuntimeError, MemoryError) as e:
        return {"status": "oom", "error": str(e).splitlines()[0][:200]}
    timed = times[1:] if len(times) > 1 else times  # the first step is the warm-up when there are others
    peak = _rss_status()["VmHWM"]
    return {"status": "ok", "step_s": statistics.median(timed), "all_s": times,
            "peak_rss_mb": peak, "step_mb": peak - before["VmRSS"], "params": sum(p.numel() for p in model.parameters())}


def bench_scaling(args, log) -> dict:
    sc = SCALING_TINY if args.tiny else SCALING
    ns = [int(n) for n in args.scaling_n.split(",")]
    out = {"settings": sc, "cap_s": args.scaling_cap, "mem_cap_gb": args.scaling_mem_gb, "n": ns, "points": {}}
    for model in ("perceiver", "transformer"):
        pts = out["points"][model] = {}
        stopped = None
        for n in ns:
            if stopped:
                pts[str(n)] = {"status": "skipped", "after": stopped}
                continue
            log(f"[scaling] {model} N={n}")
            spec = {"scaling": sc, "model": model, "n": n, "steps": 1 if args.tiny else 3, "cap": args.scaling_cap,
                    "mem_gb": args.scaling_mem_gb, "threads": torch.get_num_threads(), "malloc_tune": args.malloc_tune}
            r = run_subprocess("--_scaling_point", spec, timeout=args.scaling_cap + 90)
            pts[str(n)] = r
            log(f"    {r.get('status')}: " + (f"{r['step_s']:.3f} s/step, {r['step_mb']:.0f} MiB"
                                             if r.get("status") == "ok" else json.dumps(r)[:200]))
            if r.get("status") != "ok":
                stopped = f"{r.get('status')} at N={n}"
    p = out["points"]["perceiver"]
    if all(p.get(k, {}).get("status") == "ok" for k in ("4096", "65536")):
        out["perceiver_growth_4k_64k"] = {"time": p["65536"]["step_s"] / p["4096"]["step_s"],
                                          "memory": p["65536"]["step_mb"] / max(p["4096"]["step_mb"], 1e-9)}
    if args.plot:
        with contextlib.suppress(Exception):
            plot_scaling(out, args.plot)
            out["plot"] = str(args.plot)
    return out


def plot_scaling(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"perceiver": ("tab:blue", "o", "Perceiver (M = {m} latents)"),
              "transformer": ("tab:red", "s", "Transformer encoder over N tokens")}
    m = out["settings"]["model"]["num_latents"]
    for ax, key, label in ((axes[0], "step_s", "training step time (s)"),
                           (axes[1], "step_mb", "peak memory of a training step (MiB)")):
        for model, pts in out["points"].items():
            color, marker, name = styles[model]
            ok = [(int(n), r[key]) for n, r in pts.items() if r.get("status") == "ok"]
            if ok:
                ax.loglog(*zip(*ok), marker=marker, color=color, label=name.format(m=m))
            bad = [(int(n), r["status"]) for n, r in pts.items() if r.get("status") in ("timeout", "oom")]
            for n, status in bad:
                y = ok[-1][1] if ok else 1.0
                ax.scatter([n], [y], marker="x", color=color, s=80)
                ax.annotate(f"{status}\n(> {out['cap_s']:.0f} s)" if status == "timeout" else status,
                            (n, y), textcoords="offset points", xytext=(-10, 8), fontsize=8, color=color)
            if ok and model == "perceiver":
                n0, y0 = ok[0]
                xs = [n0, int(max(out["n"]))]
                ax.loglog(xs, [y0 * x / n0 for x in xs], ":", color="gray", label="linear in N")
                ax.loglog(xs, [y0 * (x / n0) ** 2 for x in xs], "--", color="lightgray", label="quadratic in N")
        ax.set_xlabel("input tokens N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("O(M·N + M²) vs O(N²): one training step, batch {b}, width {d}, CPU".format(
        b=out["settings"]["batch"], d=out["settings"]["model"]["latent_dim"]))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ capture


def bench_capture(args, device: torch.device, log) -> dict:
    """An epoch of training steps with vs without the once-per-epoch attention probe pass."""
    cfg = CONFIGS["tiny" if args.tiny else "small"]
    steps = 2 if args.tiny else args.capture_steps
    torch.manual_seed(0)
    v = build_variant("ours", cfg, device)
    batch = make_batch(cfg, device)
    probe = make_batch(cfg, device, batch=8)
    opt = make_optimizer(v.model, cfg["lr"])
    step = train_step_fn(v, batch, opt, device)
    tmp = tempfile.mkdtemp(prefix="bench_capture_")

    def probe_pass():
        import numpy as np
        v.model.eval()
        with torch.no_grad():
            logits, attn = v.model(probe.x, probe.pos, return_attention=True)
        v.model.train()
        cross = np.stack([a.float().cpu().numpy() for a in attn["cross"]]).astype(np.float16)
        self_ = np.stack([np.stack([a.float().cpu().numpy() for a in s]) for s in attn["self"]]).astype(np.float16)
        np.savez(os.path.join(tmp, "attention.npz"), cross=cross, self_=self_,  # as perceiver.rundir does
                            probs=torch.softmax(logits.float(), -1).cpu().numpy())

    def epoch(with_probe: bool):
        def fn():
            for _ in range(steps):
                step()
            if with_probe:
                probe_pass()
        return fn

    log(f"[capture] epoch of {steps} steps (batch {batch.x.shape[0]}) with vs without the probe pass")
    times = timed_rounds({"epoch": epoch(False), "epoch+probe": epoch(True), "probe": probe_pass},
                         warmup=1 if not args.tiny else 0, iters=max(3, args.iters) if not args.tiny else 1,
                         device=device, log=log)
    out = {k: summarise(t) for k, t in times.items()}
    out["steps_per_epoch"] = steps
    out["overhead"] = out["epoch+probe"]["median_s"] / out["epoch"]["median_s"] - 1
    out["overhead_from_probe_time"] = out["probe"]["median_s"] / out["epoch"]["median_s"]
    if args.capture_e2e and (ROOT / "train.py").exists() and not args.tiny:
        out["train_py"] = capture_e2e(log)
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


# ------------------------------------------------------------------------------------------------ report


def format_report(res: dict) -> str:
    lines = []
    mi = res["machine"]
    lines.append(f"machine: {mi.get('cpu_model')} | {mi.get('logical_cpus')} logical CPUs | torch {mi['torch']} | "
                 f"{mi['threads']} threads | device {mi['device']}" + (f" ({mi['gpu']})" if "gpu" in mi else ""))
    for name, r in res.get("configs", {}).items():
        pk = r["matmul_peak_flops"]
        lines.append("")
        lines.append(f"== {name}: batch {r['batch']}; fp32 matmul rate measured alongside: "
                     f"{pk['train']['fp32'] / 1e9:.0f} GFLOP/s (train rounds), {pk['eval']['fp32'] / 1e9:.0f} (eval)")
        hdr = (f"{'variant':<20}{'params':>11}  {'train samples/s [min-max]':<27}{'eval samples/s [min-max]':<27}"
               f"{'train GFLOP/smp':>15}{'%peak':>7}{'eval %peak':>11}  {'train peak MiB (step)':<22}"
               f"{'eval peak MiB (step)':<22}")
        lines.append(hdr)
        for n, v in r["variants"].items():
            lines.append(f"{n:<20}{v['params']:>11,}  {fmt_rate(v['train']):<27}{fmt_rate(v['eval']):<27}"
                         f"{v['train']['flops_per_sample'] / 1e9:>15.3g}{100 * v['train']['fraction_of_matmul_peak']:>6.0f}%"
                         f"{100 * v['eval']['fraction_of_matmul_peak']:>10.0f}%  {fmt_mem(v.get('memory_train')):<22}"
                         f"{fmt_mem(v.get('memory_eval')):<22}")
        for key, rr in r.get("ratios", {}).items():
            mem = " ".join(f"{k.replace('memory_', 'mem ')} {val:.2f}x" for k, val in rr.items() if k.startswith("memory"))
            lines.append(f"  {key}: train speed {rr['train_speed']:.2f}x (best rounds {rr['train_speed_best']:.2f}x), "
                         f"eval speed {rr['eval_speed']:.2f}x (best {rr['eval_speed_best']:.2f}x), "
                         f"train FLOPs {rr['train_flops']:.2f}x, params {rr['params']:.2f}x;\n      {mem}")
    sc = res.get("scaling")
    if sc:
        lines.append("")
        lines.append(f"== scaling: one training step, batch {sc['settings']['batch']}, cap {sc['cap_s']} s/point")
        lines.append(f"{'N':>8}  {'Perceiver s/step':>17} {'MiB':>8}   {'Transformer s/step':>19} {'MiB':>8}")
        for n in sc["n"]:
            cells = []
            for model in ("perceiver", "transformer"):
                p = sc["points"][model].get(str(n), {})
                if p.get("status") == "ok":
                    cells.append(f"{p['step_s']:>17.3f} {p['step_mb']:>8.0f}")
                else:
                    cells.append(f"{p.get('status', '-'):>17} {'':>8}")
            lines.append(f"{n:>8}  {cells[0]}   {cells[1]:>28}")
        if "perceiver_growth_4k_64k" in sc:
            g = sc["perceiver_growth_4k_64k"]
            lines.append(f"  Perceiver 4k -> 64k tokens (16x): time {g['time']:.1f}x, memory {g['memory']:.1f}x")
    cap = res.get("capture")
    if cap:
        lines.append("")
        lines.append(f"== attention capture: epoch of {cap['steps_per_epoch']} steps {cap['epoch']['median_s']:.3f} s, "
                     f"with probe pass {cap['epoch+probe']['median_s']:.3f} s, probe alone {cap['probe']['median_s']:.4f} s"
                     f" -> overhead {100 * cap['overhead']:+.2f}% (probe/epoch {100 * cap['overhead_from_probe_time']:.2f}%)")
        if "train_py" in cap and "overhead" in cap["train_py"]:
            lines.append(f"   train.py end to end (2 epochs shapes2d): {100 * cap['train_py']['overhead']:+.1f}%")
    goals = res.get("goals")
    if goals:
        lines.append("")
        lines.append("== goals")
        for g in goals:
            status = "MET" if g["met"] else ("not met" if g["met"] is not None else "n/a")
            lines.append(f"  {g['goal']:<58} measured {g['value']:<10} {status}")
    return "\n".join(lines)


def evaluate_goals(res: dict) -> list[dict]:
    out = []

    def add(goal, value, met, fmt="{:.2f}x"):
        out.append({"goal": goal, "value": fmt.format(value) if value is not None else "-", "raw": value,
                    "met": met})
    cfgs = res.get("configs", {})
    e1 = cfgs.get("exp1", {}).get("ratios", {})
    for key in ("ours/theirs", "ours-ff6/theirs"):
        r = e1.get(key)
        if r:
            add(f"exp1 {key} train samples/s >= {GOALS['exp1_train_speedup']}x", r["train_speed"],
                r["train_speed"] >= GOALS["exp1_train_speedup"])
            add(f"exp1 {key} eval samples/s >= {GOALS['exp1_eval_speedup']}x", r["eval_speed"],
                r["eval_speed"] >= GOALS["exp1_eval_speedup"])
            for k in ("memory_train_peak_rss_mb", "memory_train_step_mb", "memory_train_peak_allocated_mb"):
                if k in r:
                    add(f"exp1 {key} {k.replace('memory_train_', 'train ')} <= {GOALS['exp1_memory_ratio']}x", r[k],
                        r[k] <= GOALS["exp1_memory_ratio"])
    s = cfgs.get("small", {}).get("ratios", {})
    for key in ("ours/theirs", "ours-ff6/theirs"):
        if key in s:
            add(f"small {key} train samples/s >= {GOALS['small_train_speedup']}x", s[key]["train_speed"],
                s[key]["train_speed"] >= GOALS["small_train_speedup"])
    if "exp1" in cfgs and "ours" in cfgs["exp1"]["variants"]:
        f = cfgs["exp1"]["variants"]["ours"]["train"]["fraction_of_matmul_peak"]
        add(f"exp1 ours train FLOP/s >= {GOALS['exp1_flops_fraction']:.0%} of matmul peak", f,
            f >= GOALS["exp1_flops_fraction"], "{:.0%}")
        fb = cfgs["exp1"]["variants"]["ours"]["train"]["fraction_of_matmul_peak_best"]
        add("  (the same, fastest round vs fastest matmul round)", fb, fb >= GOALS["exp1_flops_fraction"], "{:.0%}")
    g = res.get("scaling", {}).get("perceiver_growth_4k_64k")
    if g:
        add(f"scaling 4k->64k time <= {GOALS['scaling_growth_4k_64k']}x", g["time"], g["time"] <= 17)
        add(f"scaling 4k->64k memory <= {GOALS['scaling_growth_4k_64k']}x", g["memory"], g["memory"] <= 17)
    cap = res.get("capture")
    if cap:
        # The probe pass timed on its own over the epoch's time: the same quantity as the difference of the two
        # epoch medians, without the epoch-to-epoch noise (which is larger than the probe pass itself).
        add(f"attention capture adds <= {GOALS['capture_overhead']:.0%} to an epoch", cap["overhead_from_probe_time"],
            cap["overhead_from_probe_time"] <= GOALS["capture_overhead"], "{:+.2%}")
    return out


# ------------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=None, help=f"comma-separated, from {', '.join(CONFIGS)} "
                   "(default: small,exp1,exp3; tiny with --tiny)")
    p.add_argument("--sections", default="speed,scaling,capture", help="speed, scaling, capture (default: all)")
    p.add_argument("--compare", choices=["perceiver-pytorch"], default=None,
                   help="also benchmark lucidrains' perceiver-pytorch (pip install perceiver-pytorch)")
    p.add_argument("--iters", type=int, default=5, help="timed rounds per measurement (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", default=None, metavar="FILE", help="write every figure to FILE")
    p.add_argument("--tiny", action="store_true", help="smoke test: tiny config, 1 iteration, tiny scaling")
    p.add_argument("--checkpointing", action="store_true",
                   help="add the variant ours-ckpt (activation checkpointing): its memory/time trade-off")
    p.add_argument("--ablation", action="store_true",
                   help="add ours-no-absorb / ours-no-recompute / ours-neither: each optimisation switched off")
    p.add_argument("--no_memory", "--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--no_cuda_variants", "--no-cuda-variants", action="store_true",
                   help="on CUDA, skip the bf16 / torch.compile variants")
    p.add_argument("--cuda_variants", "--cuda-variants", default="bf16,compile",
                   help="on CUDA, extra variants: bf16 (autocast), compile (torch.compile) (default: %(default)s)")
    p.add_argument("--probe_timeout", "--probe-timeout", type=float, default=900, help="seconds per memory probe")
    p.add_argument("--scaling_n", "--scaling-n", default=None, help="token counts (default 1024,4096,16384,65536)")
    p.add_argument("--scaling_cap", "--scaling-cap", type=float, default=None,
                   help="seconds allowed per scaling point (default 60; 30 with --tiny)")
    p.add_argument("--scaling_mem_gb", "--scaling-mem-gb", type=float, default=8.0,
                   help="address-space cap per scaling point, GiB (default: %(default)s)")
    p.add_argument("--plot", default=None, help="scaling plot path (default docs/images/scaling.png; none with --tiny)")
    p.add_argument("--capture_steps", "--capture-steps", type=int, default=32,
                   help="training steps per epoch in the capture benchmark (default: %(default)s = 1000 samples / 32)")
    p.add_argument("--capture_e2e", "--capture-e2e", action="store_true",
                   help="also time train.py end to end with vs without --save_attention_maps")
    p.add_argument("--malloc_tune", "--malloc-tune", action="store_true",
                   help="glibc mallopt: keep large freed blocks instead of unmapping them (see tune_malloc)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--_memory_probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_scaling_point", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args._memory_probe:
        print("RESULT " + json.dumps(memory_probe(json.loads(args._memory_probe))), flush=True)
        return {}
    if args._scaling_point:
        print("RESULT " + json.dumps(scaling_point(json.loads(args._scaling_point))), flush=True)
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = tune_malloc() if args.malloc_tune else {"applied": False}
    device = torch.device(args.device)
    if args.tiny:
        args.iters, args.warmup = 1, 0
    configs = (args.configs or ("tiny" if args.tiny else "small,exp1,exp3")).split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"error: unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if args.scaling_n is None:
        args.scaling_n = "256" if args.tiny else "1024,4096,16384,65536"
    if args.scaling_cap is None:
        args.scaling_cap = 30.0 if args.tiny else 60.0
    if args.plot is None and not args.tiny:
        args.plot = str(ROOT / "docs" / "images" / "scaling.png")
    if args.compare and not have_theirs():
        msg = "perceiver-pytorch is not installed (pip install perceiver-pytorch)"
        if not args.tiny:
            raise SystemExit(f"error: --compare: {msg}")
        print(f"note: skipping --compare: {msg}", file=sys.stderr)
        args.compare = None
    sections = set(args.sections.split(","))

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    res: dict = {"machine": {**machine_info(device), "malloc_tune": malloc}, "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                 "goals_spec": GOALS}
    if "speed" in sections:
        res["configs"] = {}
        for name in configs:
            res["configs"][name] = bench_config(name, args, device, log)
    if "scaling" in sections and device.type == "cpu":
        res["scaling"] = bench_scaling(args, log)
    if "capture" in sections:
        res["capture"] = bench_capture(args, device, log)
    with contextlib.suppress(Exception):
        res["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    res["goals"] = evaluate_goals(res)
    print(format_report(res), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return res


if __name__ == "__main__":
    main()
