"""Tests for perceiver/optim.py: LAMB against torch_optimizer.Lamb and a float64 reference, foreach vs loop,
state-dict resumption and argument validation (weight-decay groups and build_optimizer:
test_optim_build.py)."""

import io
import math

import pytest
import torch
from torch import nn

from perceiver.optim import Lamb, param_groups

torch_optimizer = pytest.importorskip("torch_optimizer")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))


def _random_grads(model, gen):
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * 0.1


def _run(make_opt, steps=6, seed=0, groups=False):
    """Train a fresh MLP for `steps` steps on seeded random gradients; returns its parameters."""
    model = _mlp(seed)
    opt = make_opt(param_groups(model, 0.05) if groups else model.parameters())
    gen = torch.Generator().manual_seed(1234)
    for _ in range(steps):
        _random_grads(model, gen)
        opt.step()
    return [p.detach().clone() for p in model.parameters()], opt


def _assert_params_close(a, b, rtol=1e-6, atol=1e-7):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------------------------
# Agreement with torch_optimizer.Lamb
# ---------------------------------------------------------------------------------------------------------------

TORCH_OPTIMIZER_CASES = [
    # (torch_optimizer kwargs, our kwargs)
    (dict(weight_decay=0.0), dict(weight_decay=0.0, clamp_value=10, bias_correction=False)),
    (dict(weight_decay=0.1), dict(weight_decay=0.1, clamp_value=10, bias_correction=False)),
    (dict(weight_decay=0.1, clamp_value=0.5), dict(weight_decay=0.1, clamp_value=0.5, bias_correction=False)),
    (dict(weight_decay=0.1, debias=True), dict(weight_decay=0.1, clamp_value=10, bias_correction="step_size")),
    (dict(weight_decay=0.0, debias=True), dict(weight_decay=0.0, clamp_value=10, bias_correction="step_size")),
    (
        dict(weight_decay=0.1, adam=True),
        dict(weight_decay=0.1, clamp_value=10, bias_correction=False, trust_ratio=False),
    ),
    (
        dict(weight_decay=0.1, adam=True, debias=True),
        dict(weight_decay=0.1, clamp_value=10, bias_correction="step_size", trust_ratio=False),
    ),
]


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("theirs,ours", TORCH_OPTIMIZER_CASES)
def test_matches_torch_optimizer_lamb(theirs, ours, foreach):
    common = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-6)
    ref, _ = _run(lambda ps: torch_optimizer.Lamb(ps, **common, **theirs))
    got, _ = _run(lambda ps: Lamb(ps, **common, **ours, foreach=foreach))
    _assert_params_close(got, ref)
    # and the steps actually moved the weights
    assert not all(torch.equal(a, b) for a, b in zip(got, [p.detach() for p in _mlp().parameters()]))


def test_clamp_value_is_active_in_the_comparison():
    """clamp_value=0.5 must change the result (the first Linear's weight norm is > 0.5), so the case above tests it."""
    common = dict(lr=0.02, weight_decay=0.1, bias_correction=False)
    a, _ = _run(lambda ps: Lamb(ps, **common, clamp_value=0.5))
    b, _ = _run(lambda ps: Lamb(ps, **common, clamp_value=None))
    assert not torch.allclose(a[0], b[0])


# ---------------------------------------------------------------------------------------------------------------
# The paper's update (float64 reference) and AdamW
# ---------------------------------------------------------------------------------------------------------------


def _reference_lamb(w0, grads, lr, betas, eps, wd):
    """Textbook LAMB (bias-corrected moments, no clamp) in float64, for one tensor."""
    w = w0.double().clone()
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    b1, b2 = betas
    for t, g in enumerate(grads, start=1):
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps) + wd * w
        wn, un = w.norm(), update.norm()
        trust = wn / un if wn > 0 and un > 0 else 1.0
        w = w - lr * trust * update
    return w


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_default_lamb_matches_the_paper_update(foreach, wd):
    gen = torch.Generator().manual_seed(0)
    w0 = [torch.randn(5, 7, generator=gen), torch.randn(7, generator=gen), torch.zeros(3, 3)]
    grads = [[torch.randn(w.shape, generator=gen) for w in w0] for _ in range(5)]
    params = [nn.Parameter(w.clone()) for w in w0]
    opt = Lamb(params, lr=0.01, betas=(0.9, 0.999), eps=1e-6, weight_decay=wd, foreach=foreach)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    for i, p in enumerate(params):
        ref = _reference_lamb(w0[i], [gs[i] for gs in grads], 0.01, (0.9, 0.999), 1e-6, wd)
        torch.testing.assert_close(p.detach().double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [True, False])
def test_without_trust_ratio_is_adamw(foreach):
    common = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    ref, _ = _run(lambda ps: torch.optim.AdamW(ps, **common, foreach=False))
    got, _ = _run(lambda ps: Lamb(ps, **common, trust_ratio=False, foreach=foreach))
    _assert_params_close(got, ref)


# ---------------------------------------------------------------------------------------------------------------
# Trust-ratio edge cases
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [True, False])
def test_trust_ratio_is_one_for_an_all_zero_weight(foreach):
    g = torch.tensor([[0.5, -2.0], [1e-3, 3.0]])
    w = nn.Parameter(torch.zeros(2, 2))
    w.grad = g.clone()
    lr, eps = 0.1, 1e-6
    Lamb([w], lr=lr, eps=eps, weight_decay=0.1, foreach=foreach).step()
    # step 1 with bias correction: m_hat = g, v_hat = g^2, so the update is g / (|g| + eps) and the trust ratio is 1
    torch.testing.assert_close(w.detach(), -lr * g / (g.abs() + eps))


@pytest.mark.parametrize("foreach", [True, False])
def test_zero_update_leaves_the_weight_unchanged(foreach):
    w = nn.Parameter(torch.randn(4, 3))
    w0 = w.detach().clone()
    w.grad = torch.zeros_like(w)
    Lamb([w], lr=0.1, weight_decay=0.0, foreach=foreach).step()
    assert torch.equal(w.detach(), w0)  # update norm 0 -> trust ratio 1, no NaN


# ---------------------------------------------------------------------------------------------------------------
# foreach vs loop, parameters without gradients, state dict
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(weight_decay=0.1),
        dict(weight_decay=0.1, clamp_value=0.5),
        dict(weight_decay=0.1, bias_correction=False),
        dict(weight_decay=0.1, bias_correction="step_size"),
        dict(weight_decay=0.1, trust_ratio=False),
    ],
)
def test_foreach_and_loop_agree(kwargs):
    a, opt_a = _run(lambda ps: Lamb(ps, lr=0.01, foreach=True, **kwargs), groups=True)
    b, opt_b = _run(lambda ps: Lamb(ps, lr=0.01, foreach=False, **kwargs), groups=True)
    # Same operations in the same order: bitwise equal on the CPU (CUDA foreach kernels may round differently).
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for p in opt_a.state:
        assert set(opt_a.state[p]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("foreach", [True, False])
def test_parameters_without_grad_are_skipped(foreach):
    a, b = nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3, 3))
    b0 = b.detach().clone()
    opt = Lamb([a, b], lr=0.1, foreach=foreach)
    a.grad = torch.randn(3, 3)
    opt.step()
    assert torch.equal(b.detach(), b0) and b not in opt.state
    b.grad = torch.randn(3, 3)
    a.grad = torch.randn(3, 3)
    opt.step()  # steps now differ within the group (2 vs 1)
    assert opt.state[a]["step"].item() == 2 and opt.state[b]["step"].item() == 1


def test_closure_is_evaluated_with_grad_and_its_loss_returned():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = Lamb([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(5.0)
    assert w.detach().norm() < math.sqrt(5.0)


@pytest.mark.parametrize("foreach", [True, False])
def test_state_dict_round_trip_is_bitwise(foreach):
    k, m = 4, 3
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    y = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))

    def make(seed=0):
        model = _mlp(seed)
        return model, Lamb(param_groups(model, 0.05), lr=0.01, weight_decay=0.05, foreach=foreach)

    def train(model, opt, n):
        for _ in range(n):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    model, opt = make()
    train(model, opt, k + m)
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    model, opt = make()
    train(model, opt, k)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    del model, opt
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model, opt = make(seed=99)  # different initial weights: everything must come from the checkpoint
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    train(model, opt, m)
    resumed = [p.detach() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed))
    assert {opt.state[p]["step"].item() for p in model.parameters()} == {k + m}


# ---------------------------------------------------------------------------------------------------------------
# capturable: step counts and bias corrections on the device, nothing read back
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("bias_correction", [True, "step_size", False])
def test_capturable_computes_the_same_steps_as_host_counts(foreach, bias_correction):
    kw = dict(lr=0.01, weight_decay=0.05, foreach=foreach, bias_correction=bias_correction)
    host, _ = _run(lambda ps: Lamb(ps, **kw), groups=True)
    dev, opt = _run(lambda ps: Lamb(ps, capturable=True, **kw), groups=True)
    # the corrections are float32 tensors instead of Python floats: equal to float32 rounding
    _assert_params_close(dev, host, rtol=2e-5, atol=1e-6)
    assert {opt.state[p]["step"].item() for p in opt.state} == {6}


@pytest.mark.parametrize("capturable", [True, False])
def test_a_step_reads_back_only_host_step_counts(capturable):
    """At the dispatcher (tests/host_reads.py): with `capturable` nothing is read; without, only the host counts."""
    from host_reads import HostReads

    model = _mlp()
    opt = Lamb(param_groups(model, 0.05), lr=0.01, capturable=capturable)
    for group in opt.param_groups:
        group["lr"] = torch.tensor(0.01)  # as the compiled step holds it
    counts = lambda t: "counts" if any(t is s["step"] for s in opt.state.values()) else None  # noqa: E731
    reads = HostReads(host=counts)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        _random_grads(model, gen)
        with reads.watching():
            opt.step()
    assert not reads.found
    assert reads.named == ({} if capturable else {"counts": 3 * len(opt.state)})


def test_capturable_resumes_from_host_counts():
    """A checkpoint of an optimizer with host counts, loaded where counts live on the device (a compiled run)."""
    ref, _ = _run(lambda ps: Lamb(ps, lr=0.01), steps=6)
    model = _mlp()
    opt = Lamb(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1234)
    for _ in range(3):
        _random_grads(model, gen)
        opt.step()
    state = opt.state_dict()
    opt = Lamb(model.parameters(), lr=0.01, capturable=True)
    opt.load_state_dict(state)
    for group in opt.param_groups:
        group["capturable"] = True  # what the compiled step sets after loading
    for _ in range(3):
        _random_grads(model, gen)
        opt.step()
    _assert_params_close([p.detach() for p in model.parameters()], ref, rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-1e-3), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.0, 0.999)), r"betas\[0\]"),
        (dict(betas=(0.9, -0.1)), r"betas\[1\]"),
        (dict(betas=(0.9,)), "pair"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(clamp_value=0.0), "clamp_value"),
        (dict(bias_correction="adam"), "bias_correction"),
        (dict(trust_ratio="yes"), "trust_ratio"),
        (dict(capturable=1), "capturable"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lamb([nn.Parameter(torch.zeros(2))], **kwargs)


def test_invalid_group_options_raise_value_error():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="weight_decay"):
        Lamb([{"params": [a]}, {"params": [b], "weight_decay": -1.0}])


def test_lr_zero_is_allowed_and_does_nothing():
    w = nn.Parameter(torch.randn(3))
    w0 = w.detach().clone()
    w.grad = torch.randn(3)
    Lamb([w], lr=0.0).step()
    assert torch.equal(w.detach(), w0)


def test_sparse_gradients_raise_a_clear_error():
    emb = nn.Embedding(10, 4, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        Lamb(emb.parameters(), lr=0.1).step()
