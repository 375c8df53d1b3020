"""The models compared (ours, its ablations, lucidrains' perceiver-pytorch) and the steps that are timed."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.configs import Batch, ours_config
from perceiver.model import Perceiver

#: Our model's variants: config overrides and a description. The ``ours-no-*`` ablations turn off one exact
#: speed-up of perceiver/kernels.py each: the factorised cross-attention (every layer uses the "project" path:
#: K/V materialised, position half once per batch) and the MLP's GELU recomputation; "ours-plain" runs the
#: plain model of perceiver/model.py. Variants differ by their PerceiverConfig only.
OURS_VARIANTS: dict[str, tuple[dict, str]] = {
    "ours": ({}, ""),  # its note names the config's MLP ratio (build_variant)
    "ours-ff6": ({"mlp_ratio": 6.0}, "mlp_ratio 6 = their GEGLU's FLOPs and weights"),
    "ours-ckpt": ({"activation_checkpointing": True}, "activation checkpointing"),
    "ours-no-absorb": ({"cross_kernel": "project"}, "ablation: K/V materialised (project path)"),
    "ours-no-recompute": ({"gelu_recompute": False}, "ablation: plain autograd MLP"),
    "ours-neither": ({"cross_kernel": "project", "gelu_recompute": False}, "ablation: both off"),
    "ours-plain": ({"kernels": "plain"}, "ablation: the plain model (perceiver/model.py as written)"),
}


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
class Variant:
    name: str
    model: nn.Module
    forward: Callable[[Batch], torch.Tensor]
    autocast: torch.dtype | None = None
    note: str = ""
    flops_from: str | None = None  # compiled variants: count FLOPs on the eager twin
    params: int = 0


def build_variant(name: str, cfg: dict, device: torch.device) -> Variant:
    """``base[+bf16][+compile]``: base is a key of OURS_VARIANTS or "theirs"; the suffixes add bf16 autocast and
    torch.compile (on CUDA by default, on the CPU with ``--cpu-variants``)."""
    base = name.split("+")[0]
    if base in OURS_VARIANTS:
        over, note = OURS_VARIANTS[base]
        model = Perceiver(ours_config(cfg, **over)).to(device)
        if base == "ours":
            ratio = model.config.mlp_ratio
            note = f"mlp_ratio {ratio:g}" + {4.0: " (train.py's default is 1; 4 matches their feed-forward width)",
                                             1.0: " (train.py's default)"}.get(ratio, "")

        def forward(b: Batch, m: nn.Module = model):
            return m(b.x, b.pos)
    elif base == "theirs":
        from perceiver_pytorch import Perceiver as TheirPerceiver
        from perceiver_pytorch.perceiver_pytorch import fourier_encode
        model = TheirPerceiver(**theirs_kwargs(cfg)).to(device)
        note = "perceiver-pytorch " + their_version()
        mc = cfg["model"]
        if cfg["kind"] == "image":
            def forward(b: Batch, m: nn.Module = model):
                return m(b.image)
        else:
            def forward(b: Batch, m: nn.Module = model):
                feats = fourier_encode(b.x, mc["max_freq"], mc["fourier_bands"]).flatten(-2)  # (B, N, 3 (2K + 1))
                return m(torch.cat([b.x, feats], dim=-1))
    else:
        raise ValueError(f"unknown variant {name!r}")
    v = Variant(name, model, forward, note=note, params=sum(p.numel() for p in model.parameters()))
    if "+bf16" in name:
        v.autocast = torch.bfloat16
        v.note += ", bf16 autocast"
    if "+compile" in name:
        v.forward = lambda b, _c=torch.compile(model): forward(b, _c)
        v.flops_from = name.replace("+compile", "")
        v.note += ", torch.compile"
    return v


def their_version() -> str:
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
    """LAMB (perceiver/optim.py) for every model, ours or theirs."""
    from perceiver.optim import build_optimizer
    return build_optimizer(model, name="lamb", lr=lr, weight_decay=1e-4)


def _autocast(v: Variant, device: torch.device):
    if v.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=v.autocast)


def train_step_fn(v: Variant, batch: Batch, opt: torch.optim.Optimizer, device: torch.device) -> Callable[[], None]:
    """One training step: forward, cross-entropy, backward, optimizer step."""
    def step():
        v.model.train()
        opt.zero_grad(set_to_none=True)
        with _autocast(v, device):
            loss = F.cross_entropy(v.forward(batch).float(), batch.y)
        loss.backward()
        opt.step()
    return step


def eval_step_fn(v: Variant, batch: Batch, device: torch.device, inference: bool = True) -> Callable[[], None]:
    """One evaluation forward in eval mode (``inference_mode`` unless ``inference=False``)."""
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
    """Forward and backward without the optimizer: what the FLOPs of a training step are counted on."""
    def step():
        v.model.train()
        with _autocast(v, device):
            loss = F.cross_entropy(v.forward(batch).float(), batch.y)
        loss.backward()
        v.model.zero_grad(set_to_none=True)
    return step
