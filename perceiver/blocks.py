"""The Perceiver's building blocks, as the paper describes them: attention, the cross-attention and latent
self-attention blocks, the MLP, stochastic depth, and `Tokens`, the input of one forward pass.

`perceiver/model.py` assembles these into the Perceiver; `perceiver/kernels.py` subclasses `CrossAttention` and
`MLP` with exact speed-ups (same parameters, same state dict). ``evaluation`` says how a block computes its
function: ``"plain"`` here, the speed-up a kernels.py block picks there (`perceiver.model.Perceiver.kernel_plan`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------- helpers


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, need_weights: bool):
    """Softmax attention; q: (B, h, M, d), k/v: (B, h, N, d) -> out (B, h, M, d) and the weights or None."""
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v), None
    # The same computation as the fused kernel, spelled out so the weights it used can be returned.
    weights = torch.softmax((q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5), dim=-1)  # (B, h, M, N)
    return weights @ v, weights


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = t.shape
    return t.view(b, n, heads, d // heads).transpose(1, 2)  # (B, heads, n, head_dim)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)  # (B, n, heads * head_dim)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, drop a residual branch for a whole sample with
    probability ``p`` and scale the kept ones by 1 / (1 - p); the identity at evaluation."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.p  # (B, 1, 1)
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass(eq=False)
class Tokens:
    """The input of one forward pass: tokens x (B, N, C) and their position features pe, (N, F) when the whole
    batch shares them (image grids) or (B, N, F). ``cache`` holds what weight-shared stages can reuse."""

    x: torch.Tensor
    pe: torch.Tensor
    cache: dict | None = field(default_factory=dict)  # None: recompute everything (activation checkpointing)

    @property
    def shared(self) -> bool:
        return self.pe.dim() == 2

    def joined(self) -> torch.Tensor:
        """[x, pe] per token: (B, N, C + F)."""
        pe = self.pe.to(self.x.dtype)
        return torch.cat([self.x, pe.expand(self.x.shape[0], -1, -1) if self.shared else pe], dim=-1)


# ---------------------------------------------------------------------------------------------- building blocks


class MLP(nn.Module):
    """Pre-LayerNorm GELU MLP with a residual connection."""

    def __init__(self, *, dim: int, ratio: float, dropout: float, drop_path: float = 0.0):
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.drop(self.fc2(F.gelu(self.fc1(self.norm(x))))))

    def evaluation(self) -> str:
        return "plain"


class CrossAttention(nn.Module):
    """The latents (queries) attend to the input tokens (keys/values), then an MLP; both residual."""

    def __init__(self, *, latent_dim: int, in_channels: int, pe_features: int, dim: int, heads: int,
                 input_norm: bool, mlp: nn.Module, dropout: float):
        super().__init__()
        self.heads, self.in_channels, self.pe_features, self.dim = heads, in_channels, pe_features, dim
        input_dim = in_channels + pe_features
        self.norm_q = nn.LayerNorm(latent_dim)
        self.norm_kv = nn.LayerNorm(input_dim) if input_norm else None
        self.to_q = nn.Linear(latent_dim, dim)
        self.to_kv = nn.Linear(input_dim, 2 * dim)  # one projection of the token [x, pe]
        self.proj = nn.Linear(dim, latent_dim)
        self.drop = nn.Dropout(dropout)
        self.mlp = mlp

    def forward(self, latents: torch.Tensor, tokens: Tokens, need_weights: bool = False):
        q = self.to_q(self.norm_q(latents))  # (B, M, dim)
        out, weights = self.attend(q, tokens, need_weights)  # (B, M, dim)
        latents = latents + self.drop(self.proj(out))
        return self.mlp(latents), weights

    def evaluation(self, num_latents: int, *, shared_positions: bool) -> str:
        """How this block computes its function for ``num_latents`` queries; positions shared by the batch or not."""
        return "plain"

    def attend(self, q: torch.Tensor, tokens: Tokens, need_weights: bool):
        inputs = tokens.joined()  # (B, N, C + F)
        if self.norm_kv is not None:
            inputs = self.norm_kv(inputs)
        k, v = self.to_kv(inputs).chunk(2, dim=-1)  # (B, N, dim) each
        out, weights = attend(split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads),
                              need_weights)
        return merge_heads(out), weights


class SelfAttention(nn.Module):
    """A latent transformer block: multi-head self-attention over the latents, then an MLP; both residual."""

    def __init__(self, *, dim: int, heads: int, mlp: nn.Module, dropout: float, drop_path: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(self.norm(x)).chunk(3, dim=-1))  # (B, h, M, d)
        out, weights = attend(q, k, v, need_weights)
        x = x + self.drop_path(self.drop(self.proj(merge_heads(out))))
        return self.mlp(x), weights


class LatentTransformer(nn.Module):
    def __init__(self, blocks: list[SelfAttention]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
