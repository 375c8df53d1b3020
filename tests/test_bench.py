"""Smoke test of benchmarks/bench.py: the tiny config, one iteration, every section; no timing assertions.

Also checks that the model's fast cross-attention paths (see `perceiver.model.CrossAttention`) compute what the
plain path computes, since the benchmark's figures are only meaningful if they do.
"""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402

from perceiver.model import CrossAttention, Perceiver, PerceiverConfig  # noqa: E402
from perceiver.position import grid_positions  # noqa: E402

HAVE_THEIRS = importlib.util.find_spec("perceiver_pytorch") is not None


def test_tiny_benchmark_runs_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--json", str(out), "--quiet", "--threads", "1"]
    if HAVE_THEIRS:
        argv += ["--compare", "perceiver-pytorch"]
    bench.main(argv)
    res = json.loads(out.read_text())
    tiny = res["configs"]["tiny"]
    ours = tiny["variants"]["ours"]
    for mode in ("train", "eval"):
        assert ours[mode]["samples_per_s"] > 0
        assert ours[mode]["flops_per_sample"] > 0
        assert 0 < ours[mode]["fraction_of_matmul_peak"]
        assert ours[f"memory_{mode}"]["peak_rss_mb"] > 0
    assert ours["params"] == Perceiver(bench.ours_config(bench.CONFIGS["tiny"])).num_parameters()
    if HAVE_THEIRS:
        assert "ours/theirs" in tiny["ratios"] and tiny["ratios"]["ours/theirs"]["train_speed"] > 0
    points = res["scaling"]["points"]
    assert points["perceiver"]["256"]["status"] == "ok" and points["transformer"]["256"]["status"] == "ok"
    assert res["capture"]["epoch"]["median_s"] > 0 and "overhead" in res["capture"]
    assert res["machine"]["torch"] == torch.__version__


def test_compare_without_perceiver_pytorch_is_skipped_in_tiny_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "have_theirs", lambda: False)
    res = bench.main(["--tiny", "--quiet", "--sections", "speed", "--no-memory", "--compare", "perceiver-pytorch"])
    assert set(res["configs"]["tiny"]["variants"]) == {"ours"}


@pytest.mark.parametrize("kw, pos", [
    (dict(), "grid"),                                   # shared positions, narrow features: absorb
    (dict(fourier_bands=16, cross_heads=1), "grid"),    # shared positions, wide features: shared_kv
    (dict(cross_heads=2), "grid"),                      # several heads: absorb or project
    (dict(pos_dim=3), None),                            # point clouds: per-sample positions
    (dict(use_learned_pe=True, num_tokens=64), "grid"),
    (dict(output_pooling="cls"), "per-sample"),
])
@pytest.mark.parametrize("mode", ["absorb", "shared_kv"])
def test_fast_cross_attention_paths_match_the_plain_path(kw, pos, mode):
    torch.manual_seed(0)
    cfg = PerceiverConfig(**{**dict(in_channels=3, num_classes=5, pos_dim=2, fourier_bands=4, max_freq=8.0,
                                    num_latents=6, latent_dim=32, num_cross_attend_stages=3,
                                    num_transformer_blocks=1, num_heads=2), **kw})
    model = Perceiver(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # non-zero biases
    x = torch.rand(2, 64, 3, dtype=torch.double) * 2 - 1
    positions = {"grid": grid_positions(8, 8).double(), "per-sample": grid_positions(8, 8).double().expand(2, -1, -1),
                 None: None}[pos]
    shared = pos == "grid" or cfg.use_learned_pe
    if mode == "shared_kv" and (cfg.cross_heads > 1 or not shared):
        pytest.skip("shared_kv needs one head and shared positions")

    def run(force):
        CrossAttention.force_mode = force
        try:
            model.zero_grad()
            logits, attn = model(x, positions, return_attention=True)
            logits.pow(2).sum().backward()
            return logits, attn["cross"], [p.grad.clone() for p in model.parameters()]
        finally:
            CrossAttention.force_mode = None

    ref, fast = run("project"), run(mode)
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-10, atol=1e-12)
    for a, b in zip(fast[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(fast[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_mlp_recomputation_gives_the_plain_gradients():
    from perceiver.model import MLP
    torch.manual_seed(0)
    mlp = MLP(dim=16, ratio=3.0, dropout=0.0).double()
    x = torch.randn(2, 5, 16, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(mlp, (x,))
    grads = []
    for recompute in (True, False):
        MLP.recompute_gelu = recompute
        try:
            mlp.zero_grad()
            x.grad = None
            mlp(x).pow(2).sum().backward()
            grads.append([p.grad.clone() for p in mlp.parameters()] + [x.grad.clone()])
        finally:
            MLP.recompute_gelu = True
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
