"""The Perceiver (Jaegle et al., "Perceiver: General Perception with Iterative Attention", ICML 2021).

A fixed-size latent array (M x D) reads the input (N tokens) through cross-attention, then refines itself with
a latent transformer; this repeats for ``num_cross_attend_stages`` stages. The cost is O(M*N + M^2) per layer
instead of a transformer's O(N^2), so N can be large.

    config = PerceiverConfig(in_channels=3, num_classes=10, pos_dim=2)
    model = Perceiver(config)
    logits = model(x, pos)                                # x: (B, N, C); pos: (N, D) or (B, N, D)
    logits, attn = model(x, pos, return_attention=True)   # + every attention map the forward pass used

This file is the plain computation, written as the paper describes it. With ``config.kernels = "auto"`` (the
default) the cross-attention and MLP blocks are replaced by subclasses from `perceiver/kernels.py` that compute
the same function with fewer operations and less memory (same parameters, same state dict; equality tests in
tests/test_kernels.py). ``kernels = "plain"`` runs exactly what is written here.

Paper choices and where this departs from them (docs/MODEL.md):
- Pre-LayerNorm residual blocks with a GELU MLP. The cross-attention projects each input token, the channels and
  the positional features concatenated, to keys and values; ``input_norm`` adds the paper's LayerNorm over that
  whole token (App. C); ``cross_dim`` sets the width of the cross-attention's queries, keys and values
  (default: the latent width; Perceiver IO's ImageNet model uses the input token's width).
- Weight sharing (paper §4.1): the first cross-attend and the first latent transformer have their own weights;
  every later stage shares one cross-attend and one latent transformer.
- Classification: the latents are averaged (or a learned ``cls`` latent is read) and projected to logits.
- Not the paper's, off by default: ``stem="conv"`` puts a convolution per pixel before the cross-attention
  (`perceiver/stem.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import PerceiverConfig
from .position import FourierEncoding, LearnedEncoding
from .stem import ConvStem

__all__ = ["Perceiver", "PerceiverConfig"]

# Standard deviation of a unit normal truncated to [-2, 2]: dividing by it makes a truncated-normal init have the
# standard deviation asked for (as in DeepMind's code, haiku's VarianceScaling).
TRUNC_NORMAL_STD = 0.87962566103423978


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


# ------------------------------------------------------------------------------------------------- the model


class Perceiver(nn.Module):
    def __init__(self, config: PerceiverConfig):
        super().__init__()
        self.config = c = config
        if c.use_learned_pe:
            self.pos_enc = LearnedEncoding(num_tokens=c.num_tokens, dim=c.pe_features)
        else:
            self.pos_enc = FourierEncoding(pos_dim=c.pos_dim, num_bands=c.fourier_bands, max_freq=c.max_freq)
        self.stem = None
        if c.stem == "conv":
            self.stem = ConvStem(in_channels=c.in_channels, width=c.stem_width, image_size=c.image_size)

        self.latents = nn.Parameter(torch.empty(c.num_latents, c.latent_dim))
        self.cls = nn.Parameter(torch.empty(1, c.latent_dim)) if c.output_pooling == "cls" else None

        if c.kernels == "auto":  # the same modules with exact speed-ups (imported here: kernels builds on this file)
            from . import kernels
            cross_cls, mlp_cls = kernels.fast_blocks(c)
        else:
            cross_cls, mlp_cls = CrossAttention, MLP

        def mlp(drop_path: float = 0.0) -> MLP:
            return mlp_cls(dim=c.latent_dim, ratio=c.mlp_ratio, dropout=c.dropout, drop_path=drop_path)

        def cross() -> CrossAttention:
            return cross_cls(latent_dim=c.latent_dim, in_channels=c.token_channels, pe_features=c.pe_features,
                             dim=c.cross_width, heads=c.cross_heads, input_norm=c.input_norm, mlp=mlp(),
                             dropout=c.dropout)

        # Distinct modules; `stage_modules` maps each stage to its (cross, latent) pair.
        n_distinct = min(c.num_cross_attend_stages, 2) if c.weight_sharing else c.num_cross_attend_stages
        depth = n_distinct * c.num_transformer_blocks
        rates = iter([c.drop_path * i / max(1, depth - 1) for i in range(depth)])  # stochastic depth, rising

        def latent() -> LatentTransformer:
            blocks = []
            for _ in range(c.num_transformer_blocks):
                p = next(rates)
                blocks.append(SelfAttention(dim=c.latent_dim, heads=c.num_heads, mlp=mlp(p), dropout=c.dropout,
                                            drop_path=p))
            return LatentTransformer(blocks)

        self.cross_layers = nn.ModuleList(cross() for _ in range(n_distinct))
        self.latent_layers = nn.ModuleList(latent() for _ in range(n_distinct))
        self.stage_modules = [min(s, n_distinct - 1) for s in range(c.num_cross_attend_stages)]

        self.norm_out = nn.LayerNorm(c.latent_dim) if c.final_norm else nn.Identity()
        self.head = nn.Linear(c.latent_dim, c.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Linear layers: std 1/sqrt(fan_in), truncated at 2 std, as DeepMind's code. A fixed small std (0.02,
        # ViT-style) makes the attention over N = 1024 pixels start out uniform, and the gradient reaching each
        # attention logit scales with 1/N (docs/RECIPES.md: 0.21 vs 0.33 validation accuracy after 3 epochs).
        correction = 1.0 / TRUNC_NORMAL_STD if self.config.init == "fan_in" else 1.0
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                std = correction / math.sqrt(m.weight[0].numel())  # fan-in: in_features, or in_channels * k * k
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # The latent array: small, so the first cross-attention's queries are dominated by its LayerNorm'd pattern.
        nn.init.trunc_normal_(self.latents, std=0.02, a=-0.04, b=0.04)
        if self.cls is not None:
            nn.init.trunc_normal_(self.cls, std=0.02, a=-0.04, b=0.04)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def position_features(self, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        """(N, F) shared or (B, N, F) per-sample position features for the tokens x (B, N, C)."""
        c = self.config
        if c.use_learned_pe:
            return self.pos_enc(x.shape[1])
        if pos is None:
            if not c.pos_from_input:
                raise ValueError(f"this model needs the positions of its {x.shape[1]} tokens: call model(x, pos) "
                                 f"with pos of shape (N, {c.pos_dim}) or (B, N, {c.pos_dim}) in [-1, 1] (for an "
                                 f"image, perceiver.position.grid_positions(H, W))")
            pos = x[..., : c.pos_dim]  # point clouds: the coordinates are the first pos_dim channels
        if pos.shape[-2] != x.shape[1]:
            raise ValueError(f"got {x.shape[1]} tokens but {pos.shape[-2]} positions")
        return self.pos_enc(pos)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None, *, return_attention: bool = False):
        c = self.config
        if x.dim() != 3 or x.shape[-1] != c.in_channels:
            raise ValueError(f"expected tokens of shape (B, N, {c.in_channels}), got {tuple(x.shape)}")
        b = x.shape[0]
        if self.stem is not None:
            x = self.stem(x)  # (B, N, stem_width)
        ckpt = c.activation_checkpointing and self.training and torch.is_grad_enabled()
        # recomputing a checkpointed stage must redo the same work, so nothing is shared between stages then
        tokens = Tokens(x, self.position_features(x, pos), cache=None if ckpt else {})
        latents = self.latents.expand(b, -1, -1)  # (B, M, D)
        if self.cls is not None:
            latents = torch.cat([latents, self.cls.expand(b, -1, -1)], dim=1)  # (B, M + 1, D)

        cross_maps, self_maps = [], []
        for i in self.stage_modules:
            latents, w = self._run(self.cross_layers[i], ckpt, latents, tokens, return_attention)
            cross_maps.append(w)
            stage_self = []
            for block in self.latent_layers[i].blocks:
                latents, w = self._run(block, ckpt, latents, return_attention)
                stage_self.append(w)
            self_maps.append(stage_self)

        latents = self.norm_out(latents)
        pooled = latents[:, -1] if self.cls is not None else latents.mean(dim=1)  # (B, D)
        logits = self.head(pooled)
        if return_attention:
            return logits, {"cross": cross_maps, "self": self_maps}
        return logits

    @staticmethod
    def _run(module: nn.Module, ckpt: bool, *args):
        if ckpt:
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)
