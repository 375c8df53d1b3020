"""The Perceiver (Jaegle et al., "Perceiver: General Perception with Iterative Attention", ICML 2021).

A fixed-size latent array (M x D) reads the input (N tokens) through cross-attention, then refines itself with
a latent transformer; this repeats for ``num_cross_attend_stages`` stages. The cost is O(M*N + M^2) per layer
instead of a transformer's O(N^2), so N can be large.

    config = PerceiverConfig(in_channels=3, num_classes=10, pos_dim=2)
    model = Perceiver(config)
    logits = model(x, pos)                                # x: (B, N, C); pos: (N, D) or (B, N, D)
    logits, attn = model(x, pos, return_attention=True)   # + every attention map the forward pass used

This file assembles the blocks of `perceiver/blocks.py`, the plain computation written as the paper describes it.
With ``config.kernels = "auto"`` (the default) the cross-attention and MLP blocks are their subclasses from
`perceiver/kernels.py`, which compute the same function with fewer operations and less memory (same parameters,
same state dict; equality tests in tests/test_kernels.py); `Perceiver.kernel_plan` says which evaluation each block
runs. ``kernels = "plain"`` runs exactly what blocks.py writes.

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

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import MLP, CrossAttention, LatentTransformer, SelfAttention, Tokens
from .config import PerceiverConfig
from .kernels import fast_blocks
from .position import FourierEncoding, LearnedEncoding
from .stem import ConvStem

__all__ = ["Perceiver", "PerceiverConfig"]

# Standard deviation of a unit normal truncated to [-2, 2]: dividing by it makes a truncated-normal init have the
# standard deviation asked for (as in DeepMind's code, haiku's VarianceScaling).
TRUNC_NORMAL_STD = 0.87962566103423978


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

        cross_cls, mlp_cls = fast_blocks(c) if c.kernels == "auto" else (CrossAttention, MLP)

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
        # attention logit scales with 1/N (docs/RECIPES_SAMPLE.md: 0.21 vs 0.33 validation accuracy after 3 epochs).
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

    def kernel_plan(self, *, shared_positions: bool | None = None) -> dict[str, str]:
        """Which evaluation each cross-attention and MLP block runs, by module name: ``"plain"`` (blocks.py as
        written), or a speed-up of kernels.py: ``"absorb"``, ``"shared_kv"``, ``"project"`` (cross-attention,
        chosen from the shapes) and ``"recompute_gelu"`` (MLP). ``shared_positions``: whether a batch shares its
        tokens' positions (image grids, learned encodings) or each sample has its own (default: its own when they
        come from the input, as for point clouds)."""
        c = self.config
        if shared_positions is None:
            shared_positions = c.use_learned_pe or not c.pos_from_input
        queries = c.num_latents + (self.cls is not None)
        plan = {}
        for name, module in self.named_modules():
            if isinstance(module, CrossAttention):
                plan[name] = module.evaluation(queries, shared_positions=shared_positions)
            elif isinstance(module, MLP):
                plan[name] = module.evaluation()
        return plan

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
