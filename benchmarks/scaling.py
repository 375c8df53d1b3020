"""The ``scaling`` section: one training step at N = 1k .. 64k tokens, our Perceiver vs a transformer encoder.

Each (model, N) point runs in a fresh subprocess (``python -m benchmarks.scaling SPEC``, see `memory.run_child`)
with a time cap and an address-space cap, so that the quadratic model running out of time or memory is a
result ("timeout", "oom") instead of a stalled machine.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.configs import SCALING, SCALING_TINY, make_batch, ours_config
from benchmarks.memory import apply_process_settings, child_main, reset_peak_rss, rss_status, run_child
from benchmarks.variants import Variant, make_optimizer, train_step_fn
from perceiver.model import Perceiver, PerceiverConfig
from perceiver.position import fourier_features


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
        h = self.encoder(self.embed(torch.cat([x, feats], dim=-1)))  # (B, N, D)
        return self.head(self.norm(h.mean(dim=1)))


def scaling_point(spec: dict) -> dict:
    """In a fresh subprocess: train steps of one model at one N; time per step and peak RSS."""
    import resource
    apply_process_settings(spec)
    cfg = {**spec["scaling"], "kind": "points", "n": spec["n"]}
    c = ours_config(cfg)
    torch.manual_seed(0)
    model = Perceiver(c) if spec["model"] == "perceiver" else TransformerClassifier(c)
    batch = make_batch(cfg, torch.device("cpu"))
    v = Variant(spec["model"], model, lambda b: model(b.x, b.pos))
    fn = train_step_fn(v, batch, make_optimizer(model, cfg["lr"]), torch.device("cpu"))
    before = rss_status()
    if spec.get("mem_gb"):  # an allocation past the cap fails (reported as "oom") instead of swamping the machine
        limit = int((before["VmSize"] + spec["mem_gb"] * 1024) * 2 ** 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    reset_peak_rss()
    times = []
    start = time.perf_counter()
    try:
        while len(times) < spec["steps"]:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > spec["cap"]:
                break
    except (RuntimeError, MemoryError) as e:
        return {"status": "oom", "error": str(e).splitlines()[0][:200]}
    timed = times[1:] if len(times) > 1 else times  # the first step is the warm-up when there are others
    peak = rss_status()["VmHWM"]
    return {"status": "ok", "step_s": statistics.median(timed), "all_s": times, "peak_rss_mb": peak,
            "step_mb": peak - before["VmRSS"], "params": sum(p.numel() for p in model.parameters())}


def bench_scaling(args, log) -> dict:
    sc = SCALING_TINY if args.tiny else SCALING
    ns = [int(n) for n in args.scaling_n.split(",")]
    out = {"settings": sc, "cap_s": args.scaling_cap, "mem_cap_gb": args.scaling_mem_gb, "n": ns, "points": {}}
    for model in ("perceiver", "transformer"):
        pts = out["points"][model] = {}
        stopped = None
        for n in ns:
            if stopped:  # a larger N would only take longer or need more
                pts[str(n)] = {"status": "skipped", "after": stopped}
                continue
            log(f"[scaling] {model} N={n}")
            spec = {"scaling": sc, "model": model, "n": n, "steps": 1 if args.tiny else 3, "cap": args.scaling_cap,
                    "mem_gb": args.scaling_mem_gb, "threads": torch.get_num_threads(), "malloc_tune": args.malloc_tune}
            r = run_child("scaling", spec, timeout=args.scaling_cap + 90)
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
    """Log-log step time and step memory against N, with linear and quadratic guides through the first point."""
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


if __name__ == "__main__":
    child_main(scaling_point)
