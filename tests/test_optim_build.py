"""Tests for perceiver/optim.py's weight-decay groups and build_optimizer: which parameters decay, shared and frozen
parameters, each optimizer name, and LAMB lowering a loss."""

import pytest
import torch
from torch import nn

from perceiver.optim import DEFAULT_NO_DECAY, OPTIMIZERS, Lamb, build_optimizer, param_groups


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(8, 16))
        self.pos_emb = nn.Parameter(torch.randn(10, 16))
        self.proj = nn.Linear(4, 16)
        self.norm = nn.LayerNorm(16)
        self.cls_head = nn.Linear(16, 5)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.frozen = nn.Parameter(torch.randn(3, 3), requires_grad=False)


def test_param_groups_split():
    model = _Toy()
    decay, keep = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert {names[id(p)] for p in decay["params"]} == {"proj.weight", "cls_head.weight"}
    assert {names[id(p)] for p in keep["params"]} == {
        "latents", "pos_emb", "proj.bias", "norm.weight", "norm.bias", "cls_head.bias", "scale",
    }
    # a custom skip list (fnmatch patterns), and one that skips only 1-D parameters
    decay, _ = param_groups(model, 0.1, no_decay=("pos_*",))
    assert {names[id(p)] for p in decay["params"]} == {"proj.weight", "cls_head.weight", "latents"}
    decay, _ = param_groups(model, 0.1, no_decay=())
    assert len(decay["params"]) == 4
    assert "latents" in DEFAULT_NO_DECAY


def test_param_groups_nested_names_and_shared_parameters():
    inner = _Toy()
    model = nn.ModuleDict({"encoder": inner, "alias": inner})
    decay, keep = param_groups(model, 0.1)
    assert len(decay["params"]) + len(keep["params"]) == 9  # each shared parameter once, the frozen one left out
    assert any(p is inner.latents for p in keep["params"])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_build_optimizer(name):
    model = _Toy()
    opt = build_optimizer(model, name=name.upper() if name == "lamb" else name, lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, Lamb if name == "lamb" else torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["eps"] == (1e-6 if name == "lamb" else 1e-8)
    if name == "adamw":
        assert opt.param_groups[0]["foreach"] is True  # CPU parameters: foreach, not fused
    x = torch.randn(2, 4)
    loss = model.cls_head(model.norm(model.proj(x))).sum()
    loss.backward()
    opt.step()
    single = build_optimizer(model, name=name, lr=1e-3, weight_decay=0.1, exclude_from_decay=False, eps=1e-7)
    assert len(single.param_groups) == 1 and single.param_groups[0]["eps"] == 1e-7


def test_build_optimizer_unknown_name():
    with pytest.raises(ValueError, match="lamb, adamw"):
        build_optimizer(_Toy(), name="sgd", lr=1e-3, weight_decay=0.0)


def test_lamb_reduces_the_loss_on_a_tiny_regression():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen) + 0.5
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = build_optimizer(model, name="lamb", lr=0.02, weight_decay=1e-4)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
