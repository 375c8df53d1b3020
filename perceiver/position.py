"""Positional encodings: Fourier features of positions in [-1, 1], and learned per-token vectors.

Fourier features follow the Perceiver paper (Jaegle et al. 2021, §3.2 and App. B) and DeepMind's code:
``num_bands`` frequencies ``f_k`` linearly spaced from 1 to ``max_freq / 2`` and, per position axis,
``[sin(pi f_k x), cos(pi f_k x)]`` plus the raw coordinate ``x``. A position axis therefore yields
``2 * num_bands + 1`` features, and ``D`` axes yield ``D * (2 * num_bands + 1)``.

What ``max_freq`` means: the number of samples the input has along an axis of [-1, 1]. The top frequency
``max_freq / 2`` is the Nyquist frequency of that sampling: for a 32-pixel image axis (``max_freq=32``) the
finest band completes one period every two pixels. For point clouds the paper's ``max_freq=1120`` has no
pixel grid behind it; we read it the same way, as a resolution of 1120 steps across [-1, 1] (a band of
560 cycles, periods of ~0.0036 in the unit-sphere coordinates of ModelNet40), which is how DeepMind's code
computes its bands.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def fourier_num_features(pos_dim: int, num_bands: int) -> int:
    return pos_dim * (2 * num_bands + 1)


def fourier_features(pos: torch.Tensor, *, num_bands: int, max_freq: float) -> torch.Tensor:
    """Fourier features of positions ``pos`` (..., D) in [-1, 1] -> (..., D * (2 * num_bands + 1))."""
    freqs = torch.linspace(1.0, max_freq / 2.0, num_bands, device=pos.device, dtype=pos.dtype)
    angles = math.pi * pos.unsqueeze(-1) * freqs  # (..., D, bands)
    feats = torch.cat([angles.sin(), angles.cos(), pos.unsqueeze(-1)], dim=-1)  # (..., D, 2 * bands + 1)
    return feats.flatten(-2)  # (..., D * (2 * bands + 1))


def grid_positions(*shape: int) -> torch.Tensor:
    """Row-major positions of a grid of the given shape, each axis spanning [-1, 1]: (prod(shape), len(shape))."""
    axes = [torch.linspace(-1.0, 1.0, n) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, len(shape))  # (H * W, 2) for an image


class FourierEncoding(nn.Module):
    """Fourier features of token positions, cached for positions shared by the whole batch.

    A ``(N, D)`` position tensor (an image grid, permuted or not) is encoded once and reused for as long as the
    caller passes the same tensor; ``(B, N, D)`` positions (point clouds: every sample has its own) are encoded
    on every call. Under torch.compile the features are computed in the graph instead (a few fused elementwise
    operations), so the cache never breaks the graph.
    """

    def __init__(self, *, pos_dim: int, num_bands: int, max_freq: float):
        super().__init__()
        if num_bands < 1 or max_freq <= 0:
            raise ValueError(f"Fourier encoding needs num_bands >= 1 and max_freq > 0, got {num_bands}, {max_freq}")
        self.pos_dim, self.num_bands, self.max_freq = pos_dim, num_bands, max_freq
        self.num_features = fourier_num_features(pos_dim, num_bands)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return f"pos_dim={self.pos_dim}, num_bands={self.num_bands}, max_freq={self.max_freq}"

    def encode(self, pos: torch.Tensor) -> torch.Tensor:
        return fourier_features(pos, num_bands=self.num_bands, max_freq=self.max_freq)

    def _cached(self, pos: torch.Tensor) -> torch.Tensor:
        # Identity + version key: cheap (no hashing of the contents every batch), and an in-place edit of the
        # positions bumps the version. The cache holds a reference to `pos`, so its id cannot be reused.
        key = (id(pos), pos._version, pos.device, pos.dtype)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= 8:
                self._cache.clear()
            with torch.no_grad():
                hit = self._cache[key] = (pos, self.encode(pos))
        return hit[1]

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        if pos.shape[-1] != self.pos_dim:
            raise ValueError(f"positions have {pos.shape[-1]} coordinates, the encoding expects {self.pos_dim}")
        if pos.dim() == 2 and not pos.requires_grad and not torch.compiler.is_compiling():
            return self._cached(pos)
        return self.encode(pos)


class LearnedEncoding(nn.Module):
    """One learned vector per input position (token index).

    Initialised truncated-normal with std 0.02 (as ViT's position embeddings; the paper does not state an init).
    """

    def __init__(self, *, num_tokens: int, dim: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.num_features = dim
        self.pos_emb = nn.Parameter(torch.empty(num_tokens, dim))
        nn.init.trunc_normal_(self.pos_emb, std=0.02, a=-0.04, b=0.04)

    def forward(self, num_tokens: int) -> torch.Tensor:
        if num_tokens != self.num_tokens:
            raise ValueError(f"learned positional encoding was built for {self.num_tokens} tokens, got {num_tokens}; "
                             f"learned encodings need a fixed input size (use Fourier features otherwise)")
        return self.pos_emb  # (N, dim)
