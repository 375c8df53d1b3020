"""The Perceiver (Jaegle et al., "Perceiver: General Perception with Iterative Attention", ICML 2021).

A fixed-size latent array (M x D) reads the input (N tokens) through cross-attention, then refines itself with
a latent transformer; this repeats for ``num_cross_attend_stages`` stages. The cost is O(M*N + M^2) per layer
instead of a transformer's O(N^2), so N can be large.

    config = PerceiverConfig(in_channels=3, num_classes=10, pos_dim=2)
    model = Perceiver(config)
    logits = model(x, pos)                                # x: (B, N, C); pos: (N, D) or (B, N, D)
    logits, attn = model(x, pos, return_attention=True)   # + every attention map the forward pass used

Design choices, and why:
- Pre-LayerNorm residual blocks with a GELU MLP, as the paper.
- The raw inputs are not layer-normalised before the key/value projection: the datasets already normalise
  each channel, and a LayerNorm over the 3 RGB channels of one pixel would erase its brightness. This makes
  the projection of ``[x, position features]`` split exactly into ``x @ W_x + pe @ W_pe``, and the position
  half, the same for every sample of a batch of images, is computed once per batch instead of once per image.
- Weight sharing (paper §4.1): the first cross-attend and the first latent transformer have their own weights;
  every later stage shares one cross-attend and one latent transformer. Shared stages see the same input
  through the same weights, so their keys and values are computed once per forward pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .position import FourierEncoding, LearnedEncoding, fourier_num_features


@dataclass
class PerceiverConfig:
    in_channels: int = 3
    num_classes: int = 10
    pos_dim: int = 2                     # coordinates per token: 2 for images, 3 for point clouds
    num_tokens: int | None = None        # N; required by the learned positional encoding
    fourier_bands: int = 64
    max_freq: float = 32.0               # samples per axis of [-1, 1]; see perceiver/position.py
    use_learned_pe: bool = False
    learned_pe_dim: int | None = None    # default: as wide as the Fourier features, for a like-for-like comparison
    num_latents: int = 96
    latent_dim: int = 384
    num_cross_attend_stages: int = 4
    num_transformer_blocks: int = 4
    num_heads: int = 3                   # latent self-attention heads
    cross_heads: int = 1                 # the paper uses a single cross-attention head
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    output_pooling: str = "mean"         # "mean" over latents, or "cls": a dedicated learned latent
    weight_sharing: bool = True
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "pos_dim", "num_latents", "latent_dim",
                     "num_cross_attend_stages", "num_heads", "cross_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_transformer_blocks < 0:
            raise ValueError(f"num_transformer_blocks must be >= 0, got {self.num_transformer_blocks}")
        for name, heads in (("num_heads", self.num_heads), ("cross_heads", self.cross_heads)):
            if self.latent_dim % heads:
                raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by {name} ({heads})")
        if self.output_pooling not in ("mean", "cls"):
            raise ValueError(f"output_pooling must be 'mean' or 'cls', got {self.output_pooling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.use_learned_pe and not self.num_tokens:
            raise ValueError("the learned positional encoding needs num_tokens (the fixed input size)")

    @property
    def pe_features(self) -> int:
        fourier = fourier_num_features(self.pos_dim, self.fourier_bands)
        if self.use_learned_pe:
            return self.learned_pe_dim or fourier
        return fourier

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PerceiverConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PerceiverConfig fields: {', '.join(unknown)}")
        return cls(**d)


# --------------------------------------------------------------------------------------------- building blocks


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, need_weights: bool):
    """Softmax attention; q: (B, h, M, d), k/v: (B, h, N, d) -> out (B, h, M, d) and the weights or None."""
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v), None
    # The same computation as the fused kernel, spelled out so the weights it used can be returned.
    weights = torch.softmax((q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5), dim=-1)  # (B, h, M, N)
    return weights @ v, weights


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = t.shape
    return t.view(b, n, heads, d // heads).transpose(1, 2)  # (B, heads, n, head_dim)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)  # (B, n, heads * head_dim)


class MLP(nn.Module):
    def __init__(self, *, dim: int, ratio: float, dropout: float):
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm(x)))))


class CrossAttention(nn.Module):
    """Latents (queries) attend to the input tokens (keys/values), then an MLP; both residual."""

    def __init__(self, *, latent_dim: int, in_channels: int, pe_features: int, heads: int, mlp_ratio: float,
                 dropout: float):
        super().__init__()
        self.heads, self.in_channels = heads, in_channels
        self.norm_q = nn.LayerNorm(latent_dim)
        self.to_q = nn.Linear(latent_dim, latent_dim)
        # One projection of the concatenated [x, pe] input; forward() applies its two column blocks separately.
        self.to_kv = nn.Linear(in_channels + pe_features, 2 * latent_dim)
        self.proj = nn.Linear(latent_dim, latent_dim)
        self.drop = nn.Dropout(dropout)
        self.mlp = MLP(dim=latent_dim, ratio=mlp_ratio, dropout=dropout)

    def keys_values(self, x: torch.Tensor, pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the input: x (B, N, C), pe (N, F) shared or (B, N, F) -> two (B, heads, N, d)."""
        w, c = self.to_kv.weight, self.in_channels
        kv = F.linear(x, w[:, :c])  # (B, N, 2D)
        # For a shared (N, F) encoding this runs once per batch, not once per sample.
        kv = kv + F.linear(pe.to(x.dtype), w[:, c:], self.to_kv.bias)  # (B, N, 2D), broadcast over B if shared
        k, v = kv.chunk(2, dim=-1)
        return _split_heads(k, self.heads), _split_heads(v, self.heads)

    def forward(self, latents: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], need_weights: bool = False):
        q = _split_heads(self.to_q(self.norm_q(latents)), self.heads)  # (B, heads, M, d)
        out, weights = _attend(q, kv[0], kv[1], need_weights)
        latents = latents + self.drop(self.proj(_merge_heads(out)))
        return self.mlp(latents), weights


class SelfAttention(nn.Module):
    """A latent transformer block: multi-head self-attention over the latents, then an MLP; both residual."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.mlp = MLP(dim=dim, ratio=mlp_ratio, dropout=dropout)

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(self.norm(x)).chunk(3, dim=-1))  # (B, h, M, d)
        out, weights = _attend(q, k, v, need_weights)
        x = x + self.drop(self.proj(_merge_heads(out)))
        return self.mlp(x), weights


class LatentTransformer(nn.Module):
    def __init__(self, *, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            SelfAttention(dim=dim, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(depth))


# ------------------------------------------------------------------------------------------------- the model


class Perceiver(nn.Module):
    def __init__(self, config: PerceiverConfig):
        super().__init__()
        self.config = c = config
        if c.use_learned_pe:
            self.pos_enc = LearnedEncoding(num_tokens=c.num_tokens, dim=c.pe_features)
        else:
            self.pos_enc = FourierEncoding(pos_dim=c.pos_dim, num_bands=c.fourier_bands, max_freq=c.max_freq)

        self.latents = nn.Parameter(torch.empty(c.num_latents, c.latent_dim))
        self.cls = nn.Parameter(torch.empty(1, c.latent_dim)) if c.output_pooling == "cls" else None

        def cross() -> CrossAttention:
            return CrossAttention(latent_dim=c.latent_dim, in_channels=c.in_channels, pe_features=c.pe_features,
                                  heads=c.cross_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout)

        def latent() -> LatentTransformer:
            return LatentTransformer(dim=c.latent_dim, depth=c.num_transformer_blocks, heads=c.num_heads,
                                     mlp_ratio=c.mlp_ratio, dropout=c.dropout)

        # Distinct modules; `stage_modules` maps each stage to its (cross, latent) pair.
        n_distinct = min(c.num_cross_attend_stages, 2) if c.weight_sharing else c.num_cross_attend_stages
        self.cross_layers = nn.ModuleList(cross() for _ in range(n_distinct))
        self.latent_layers = nn.ModuleList(latent() for _ in range(n_distinct))
        self.stage_modules = [min(s, n_distinct - 1) for s in range(c.num_cross_attend_stages)]

        self.norm_out = nn.LayerNorm(c.latent_dim)
        self.head = nn.Linear(c.latent_dim, c.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.latents, std=0.02, a=-0.04, b=0.04)
        if self.cls is not None:
            nn.init.trunc_normal_(self.cls, std=0.02, a=-0.04, b=0.04)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def position_features(self, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        """(N, F) shared or (B, N, F) per-sample position features for the tokens x (B, N, C)."""
        if self.config.use_learned_pe:
            return self.pos_enc(x.shape[1])
        if pos is None:  # point clouds: the coordinates are the first pos_dim channels
            pos = x[..., : self.config.pos_dim]
        if pos.shape[-2] != x.shape[1]:
            raise ValueError(f"got {x.shape[1]} tokens but {pos.shape[-2]} positions")
        return self.pos_enc(pos)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None, *, return_attention: bool = False):
        if x.dim() != 3 or x.shape[-1] != self.config.in_channels:
            raise ValueError(f"expected tokens of shape (B, N, {self.config.in_channels}), got {tuple(x.shape)}")
        c = self.config
        b = x.shape[0]
        pe = self.position_features(x, pos)
        latents = self.latents.expand(b, -1, -1)  # (B, M, D)
        if self.cls is not None:
            latents = torch.cat([latents, self.cls.expand(b, -1, -1)], dim=1)  # (B, M + 1, D)

        ckpt = c.activation_checkpointing and self.training and torch.is_grad_enabled()
        kv_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        cross_maps, self_maps = [], []
        for i in self.stage_modules:
            cross, latent = self.cross_layers[i], self.latent_layers[i]
            if i not in kv_cache:  # shared stages reuse the keys/values of the same input and weights
                kv_cache[i] = cross.keys_values(x, pe)
            latents, w = self._run(cross, ckpt, latents, kv_cache[i], return_attention)
            cross_maps.append(w)
            stage_self = []
            for block in latent.blocks:
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

