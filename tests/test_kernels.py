"""The exact speed-ups of perceiver/kernels.py compute what the plain blocks of perceiver/blocks.py compute.

Each case builds the plain model and the fast one from the same config (only the kernel fields differ), loads the
same weights into both, and compares logits, attention maps and every gradient in float64.
"""
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from perceiver import kernels
from perceiver.kernels import FastCrossAttention, FastMLP, ScaledSoftmax
from perceiver.blocks import MLP, Tokens
from perceiver.model import Perceiver, PerceiverConfig
from perceiver.position import grid_positions

# input_norm off by default here (the plain projection of [x, pe]); it has its own cases.
BASE = dict(in_channels=3, num_classes=5, pos_dim=2, fourier_bands=4, max_freq=8.0, num_latents=6, latent_dim=32,
            num_cross_attend_stages=3, num_transformer_blocks=1, num_heads=2, input_norm=False)


def pair(**kw):
    """(plain model, fast model) with identical float64 weights, non-zero biases included."""
    torch.manual_seed(0)
    plain = Perceiver(PerceiverConfig(**{**BASE, **kw, "kernels": "plain"})).double()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fast = Perceiver(PerceiverConfig(**{**BASE, **kw})).double()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def run(model, x, pos):
    model.zero_grad()
    logits, attn = model(x, pos, return_attention=True)
    logits.pow(2).sum().backward()
    return logits, attn["cross"], [p.grad.clone() for p in model.parameters()]


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-10, atol=1e-12)
    for u, v in zip(a[1], b[1]):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)
    for u, v in zip(a[2], b[2]):
        torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-12)


POSITIONS = {"grid": lambda: grid_positions(8, 8).double(),
             "per-sample": lambda: grid_positions(8, 8).double().expand(2, -1, -1), None: lambda: None}


@pytest.mark.parametrize("kw, pos", [
    (dict(), "grid"),                                   # shared positions, narrow features: absorb
    (dict(fourier_bands=16), "grid"),                   # shared positions, wide features, one head: shared_kv
    (dict(cross_heads=2), "grid"),                      # several heads
    (dict(pos_dim=3, pos_from_input=True), None),       # point clouds: per-sample positions from the input
    (dict(use_learned_pe=True, num_tokens=64), "grid"),
    (dict(output_pooling="cls"), "per-sample"),
    (dict(cross_dim=12, cross_heads=2), "grid"),        # a cross-attention narrower than the latents
    # the input norm: per-token statistics, and its affine folded into the projection when positions are shared
    (dict(input_norm=True), "grid"),
    (dict(input_norm=True, fourier_bands=16), "grid"),
    (dict(input_norm=True, cross_heads=2), "grid"),
    (dict(input_norm=True, use_learned_pe=True, num_tokens=64), "grid"),  # gradients reach the shared part
    (dict(input_norm=True, cross_dim=48), "per-sample"),
    (dict(input_norm=True, pos_dim=3, pos_from_input=True), None),
])
@pytest.mark.parametrize("kernel", ["auto", "absorb", "shared_kv", "project"])
def test_fast_cross_attention_matches_the_plain_model(kw, pos, kernel):
    shared = pos == "grid" or kw.get("use_learned_pe", False)
    if kernel == "shared_kv" and (kw.get("cross_heads", 1) > 1 or not shared):
        pytest.skip("shared_kv needs one head and positions shared by the batch")
    plain, fast = pair(**kw, cross_kernel=kernel)
    x = torch.rand(2, 64, 3, dtype=torch.double) * 2 - 1
    assert isinstance(fast.cross_layers[0], FastCrossAttention)
    assert_same(run(fast, x, POSITIONS[pos]()), run(plain, x, POSITIONS[pos]()))


def test_auto_picks_the_cheap_evaluation_for_each_shape():
    _, fast = pair()
    layer = fast.cross_layers[0]
    assert layer.plan(6, 3, layer.pe_features) == "absorb"  # 18 position features, heads 32 wide
    assert layer.plan(6, 3, 40) == "shared_kv"
    layer.heads = 4
    assert layer.plan(6, 3, 40) == "project"


@pytest.mark.parametrize("bands, mode", [(4, "absorb"), (16, "shared_kv")])
def test_the_input_norm_keeps_shared_positions_on_the_cheap_evaluations(bands, mode):
    _, fast = pair(input_norm=True, fourier_bands=bands)
    layer = fast.cross_layers[0]
    x = torch.rand(2, 64, 3, dtype=torch.double)
    tokens = Tokens(x, fast.position_features(x, POSITIONS["grid"]()))
    parts = layer._parts(tokens)
    assert parts.ps is not None and parts.ps.shape == (64, layer.pe_features)  # no per-sample position features
    assert layer.plan(6, parts.xs.shape[-1], parts.ps.shape[-1]) == mode


@pytest.mark.parametrize("kw, pos", [
    (dict(), "grid"), (dict(fourier_bands=16), "grid"), (dict(fourier_bands=16, cross_heads=4), "grid"),
    (dict(input_norm=True), "grid"), (dict(output_pooling="cls", cross_dim=64, cross_heads=2), "grid"),
    (dict(pos_dim=3, pos_from_input=True), None), (dict(pos_dim=3, pos_from_input=True, cross_heads=4), None),
    (dict(cross_kernel="project"), "grid"), (dict(gelu_recompute=False), "grid"),
])
def test_the_kernel_plan_names_what_the_forward_pass_runs(monkeypatch, kw, pos):
    plain, fast = pair(**kw)
    ran = {}
    real_plan = FastCrossAttention.plan

    def spy(layer, *args):
        mode = real_plan(layer, *args)
        ran[next(n for n, m in fast.named_modules() if m is layer)] = mode
        return mode
    monkeypatch.setattr(FastCrossAttention, "plan", spy)
    x = torch.rand(2, 64, 3, dtype=torch.double) * 2 - 1
    fast(x, POSITIONS[pos]())
    plan = fast.kernel_plan()
    assert ran and {name: plan[name] for name in ran} == ran
    assert set(plan) == {n for n, m in fast.named_modules() if isinstance(m, (FastCrossAttention, FastMLP))}
    mlp = "plain" if kw.get("gelu_recompute") is False else "recompute_gelu"
    assert {plan[n] for n in plan if n not in ran} == {mlp}
    assert set(plain.kernel_plan().values()) == {"plain"} and plain.kernel_plan().keys() == plan.keys()


def test_the_input_norm_in_float32_stays_close_to_the_plain_model():
    # tokens far from zero mean (a large mu against sigma): float32 agrees with the plain LayerNorm path
    torch.manual_seed(0)
    cfg = dict(BASE, input_norm=True, kernels="plain")
    plain = Perceiver(PerceiverConfig(**cfg))
    x, pos = torch.rand(2, 64, 3) * 0.1 + 30.0, grid_positions(8, 8)
    for kernel in ("absorb", "project"):
        fast = Perceiver(PerceiverConfig(**{**cfg, "kernels": "auto", "cross_kernel": kernel}))
        fast.load_state_dict(plain.state_dict())
        torch.testing.assert_close(fast(x, pos), plain(x, pos), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(fourier_bands=16), dict(use_learned_pe=True, num_tokens=64)])
def test_the_input_norm_without_attention_maps_gives_the_same_gradients(kw):
    plain, fast = pair(input_norm=True, **kw)  # the maps are not built then (ScaledSoftmax's output only)
    x = torch.rand(2, 64, 3, dtype=torch.double) * 2 - 1
    results = []
    for model in (fast, plain):
        model.zero_grad()
        logits = model(x, POSITIONS["grid"]())
        logits.pow(2).sum().backward()
        results.append((logits, [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    for u, v in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-12)


def test_the_input_norm_without_the_in_place_softmax(monkeypatch):
    monkeypatch.setattr(kernels, "custom_autograd_ok", lambda t: False)  # as under autocast or torch.compile
    for kw in (dict(), dict(fourier_bands=16)):
        plain, fast = pair(input_norm=True, **kw)
        x = torch.rand(2, 64, 3, dtype=torch.double) * 2 - 1
        assert_same(run(fast, x, POSITIONS["grid"]()), run(plain, x, POSITIONS["grid"]()))


def test_scaled_softmax_gradients():
    torch.manual_seed(0)
    a = torch.randn(2 * 3, 5, dtype=torch.double, requires_grad=True)  # (B R, N)
    s = (torch.rand(2, 5, dtype=torch.double) + 0.5).requires_grad_()  # (B, N)
    assert torch.autograd.gradcheck(lambda a, s: ScaledSoftmax.apply(a.clone(), s), (a, s))
    expected = torch.softmax(a.view(2, 3, 5) * s[:, None], dim=-1) * s[:, None]
    torch.testing.assert_close(ScaledSoftmax.apply(a.detach().clone(), s.detach()).view(2, 3, 5), expected)


def test_scaled_softmax_of_sharp_scores_writes_no_subnormal_weights():
    """A trained model's sharp cross-attention: most scores of a row lie 88 or more below its largest. Their exps
    are subnormal floats, on which the CPU's exp and matrix products run many times slower; the kernel floors them."""
    torch.manual_seed(0)
    a = torch.cat([torch.zeros(4, 1), -88 - 20 * torch.rand(4, 1023)], dim=1)  # (B R, N), float32
    s = torch.rand(2, 1024) + 0.5  # (B, N)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(False)  # what a process has unless it flushes (train.py does)
    try:
        expected = torch.softmax(a.view(2, 2, 1024) * s[:, None], dim=-1) * s[:, None]
        got = ScaledSoftmax.apply(a.clone(), s).view(2, 2, 1024)
    finally:
        torch.set_num_threads(threads)
    tiny = torch.finfo(torch.float32).tiny
    assert ((expected != 0) & (expected.abs() < tiny)).any()  # the plain softmax does write subnormals here
    assert not ((got != 0) & (got.abs() < tiny)).any()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-20)


def test_flush_denormals_reaches_every_thread_of_the_pool():
    """train.py flushes subnormals before its first parallel operation; the pool's threads, started later, inherit
    it (a product of subnormals is zero in every chunk, whichever thread computed it)."""
    code = ("import torch; from perceiver.components import flush_denormals; flush_denormals(); "
            "torch.set_num_threads(2); x = torch.full((1 << 22,), 1e-39); "
            "print(int((x * 1.0).count_nonzero()), int((torch.full((1 << 22,), 1.0) * 1.0).count_nonzero()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", str(1 << 22)]


def test_train_py_flushes_subnormals_before_it_trains(run_train, monkeypatch):
    import perceiver.components as comp

    calls = []
    monkeypatch.setattr(comp, "flush_denormals", lambda: calls.append(True))
    assert run_train(["--epochs", "1", "--limit_train_batches", "1", "--limit_eval_batches", "1"]).code == 0
    assert calls == [True]


def test_shared_kv_refuses_shapes_it_cannot_compute():
    _, fast = pair(cross_heads=2, cross_kernel="shared_kv")
    with pytest.raises(ValueError, match="one cross-attention head"):
        fast(torch.rand(2, 64, 3, dtype=torch.double), POSITIONS["grid"]())


def test_activation_checkpointing_with_fast_kernels_gives_the_same_gradients():
    plain, fast = pair(activation_checkpointing=True)
    x = torch.rand(2, 64, 3, dtype=torch.double)
    assert_same(run(fast, x, POSITIONS["grid"]()), run(plain, x, POSITIONS["grid"]()))


@pytest.mark.parametrize("recompute", [True, False])
def test_fast_mlp_gives_the_plain_values_and_gradients(recompute):
    torch.manual_seed(0)
    plain = MLP(dim=16, ratio=3.0, dropout=0.0).double()
    fast = FastMLP(dim=16, ratio=3.0, dropout=0.0, recompute_gelu=recompute).double()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 16, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(fast, (x,))
    grads = []
    for mlp in (plain, fast):
        x.grad = None
        mlp(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in mlp.parameters()] + [x.grad.clone()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_fused_inference_matches_the_plain_mlp_in_float32():
    torch.manual_seed(0)
    plain = MLP(dim=32, ratio=4.0, dropout=0.0)
    fast = FastMLP(dim=32, ratio=4.0, dropout=0.0)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(3, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_loads_into_either_kernel_choice():
    plain, fast = pair(input_norm=True)
    assert plain.state_dict().keys() == fast.state_dict().keys()
    assert PerceiverConfig(**BASE, kernels="plain").identity() == PerceiverConfig(**BASE).identity()
