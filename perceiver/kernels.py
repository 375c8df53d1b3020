"""Exact speed-ups of the Perceiver's blocks: the same functions as `perceiver/model.py`, computed with fewer
operations and less memory. Chosen with ``PerceiverConfig(kernels="auto")`` (the default); ``kernels="plain"``
runs model.py as written. The subclasses here keep the parameters and state-dict keys of the blocks they replace,
so a checkpoint loads either way; tests/test_kernels.py checks values and gradients against the plain blocks.

Cross-attention (`FastCrossAttention`). The keys and values are ``t @ W^T + b`` for each token ``t = [x, pe]``
(or its LayerNorm with ``input_norm``). Split the token into a per-sample part ``xs`` and, when the batch shares
its positions and there is no input norm, a shared part ``ps = pe`` (N, F). Three evaluations, picked per shape
by `FastCrossAttention.plan` (or pinned with ``cross_kernel``):

- ``"absorb"``: when a head is wider than the token, move the projection to the (few) latents. A query's scores
  are ``(q W_k) [xs, 1, ps]^T`` and the output is ``(P [xs, 1, ps]) W_v^T``, so the (B, N, 2 dim) keys/values are
  never built: a stage costs O(M N (C + F)) in a few large matrix products, and backward keeps only the
  (B, heads, M, N) attention weights. The ``1`` column carries the biases (``q . b_k`` is the same for every key;
  a row of weights sums to 1 for ``b_v``). The shared part's products run once per batch, not per sample.
- ``"shared_kv"``: one head narrower than the features, shared positions: the position half of the keys/values
  is projected once per batch, (N, 2 dim); the few per-sample channels are absorbed as above.
- ``"project"``: keys/values materialised, (B, heads, N, d), then scaled_dot_product_attention; the position half
  is still projected once per batch when shared.

Weight-shared stages see the same tokens through the same weights, so what depends only on those is computed once
per forward pass (`perceiver.model.Tokens.cache`).

MLP (`FastMLP`). Training holds ``h = fc1(y)`` but not ``gelu(h)`` for backward (`GeluMLP`): a quarter less
activation memory per block at no measurable time cost. CPU float32 inference runs fc1 + bias + GELU as one oneDNN
call. Both step aside under autocast and torch.compile, which do their own fusion.
"""
from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F

from .model import MLP, CrossAttention, PerceiverConfig, Tokens, attend, merge_heads, split_heads

_keys = itertools.count()


def fast_blocks(config: PerceiverConfig):
    """(cross-attention class, MLP class) with the config's kernel choices bound."""
    pin = None if config.cross_kernel == "auto" else config.cross_kernel
    return (functools.partial(FastCrossAttention, pin=pin),
            functools.partial(FastMLP, recompute_gelu=config.gelu_recompute))


# -------------------------------------------------------------------------------------------------------- MLP


class GeluMLP(torch.autograd.Function):
    """``fc2(gelu(fc1(y)))`` that keeps only ``y`` and ``h = fc1(y)`` for backward, not ``gelu(h)``.

    Autograd would store both the (rows, hidden) tensor ``h`` (for GELU's derivative) and ``gelu(h)`` (for fc2's
    weight gradient). Here backward recomputes ``gelu(h)`` (one elementwise pass) and reuses its buffer for the
    gradient flowing into fc2's input. The results are those of the plain composition (same kernels).
    """

    @staticmethod
    def forward(ctx, y, w1, b1, w2, b2):
        y2 = y.reshape(-1, y.shape[-1])  # (rows, dim)
        h = torch.addmm(b1, y2, w1.t())  # (rows, hidden)
        out = torch.addmm(b2, F.gelu(h), w2.t())  # (rows, dim)
        ctx.save_for_backward(y2, h, w1, w2)
        ctx.y_shape = y.shape
        return out.view(*y.shape[:-1], w2.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        y2, h, w1, w2 = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])  # (rows, dim)
        need_y, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad
        buf = F.gelu(h)  # recomputed activation
        gw2 = g.t().mm(buf) if need_w2 else None
        gb2 = g.sum(0) if need_b2 else None
        torch.mm(g, w2, out=buf)  # d loss / d gelu(h), in the same buffer
        torch.ops.aten.gelu_backward.grad_input(buf, h, grad_input=buf)  # d loss / d h, in place
        gw1 = buf.t().mm(y2) if need_w1 else None
        gb1 = buf.sum(0) if need_b1 else None
        gy = buf.mm(w1).view(ctx.y_shape) if need_y else None
        return gy, gw1, gb1, gw2, gb2


_FUSED_OK = torch.backends.mkldnn.is_available()


def fused_linear_gelu(y: torch.Tensor, fc: torch.nn.Linear) -> torch.Tensor | None:
    """``gelu(fc(y))`` as one oneDNN matmul with bias and exact GELU fused (no autograd; CPU float32).

    The op is the one torch.compile's CPU backend emits; where it is missing or fails, returns None once and is
    not tried again (the caller falls back to the plain composition).
    """
    global _FUSED_OK
    if not _FUSED_OK:
        return None
    try:
        out = torch.ops.mkldnn._linear_pointwise(y.reshape(-1, y.shape[-1]), fc.weight, fc.bias, "gelu", [], "none")
    except (AttributeError, RuntimeError, NotImplementedError):
        _FUSED_OK = False
        return None
    return out.view(*y.shape[:-1], fc.out_features)


class FastMLP(MLP):
    def __init__(self, *, recompute_gelu: bool = True, **kw):
        super().__init__(**kw)
        self.recompute_gelu = recompute_gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        if torch.compiler.is_compiling() or torch.is_autocast_enabled(y.device.type) \
                or y.dtype != self.fc1.weight.dtype:
            return super().forward(x)  # autocast's casts are not replayed by the custom backward; compile fuses
        if torch.is_grad_enabled():
            if not self.recompute_gelu:
                return super().forward(x)
            out = GeluMLP.apply(y, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        else:
            a = fused_linear_gelu(y, self.fc1) if y.device.type == "cpu" and y.dtype == torch.float32 else None
            out = self.fc2(a if a is not None else F.gelu(self.fc1(y)))
        return x + self.drop_path(self.drop(out))


# --------------------------------------------------------------------------------------------- cross-attention


class FastCrossAttention(CrossAttention):
    def __init__(self, *, pin: str | None = None, **kw):
        super().__init__(**kw)
        self.pin = pin
        self.key = next(_keys)  # this layer's entries in Tokens.cache (weight-shared stages reuse them)

    def attend(self, q: torch.Tensor, tokens: Tokens, need_weights: bool):
        xs, ps = self._parts(tokens)
        mode = self.plan(q.shape[1], xs.shape[-1], ps)
        if mode == "project":
            k, v = self._cached(tokens, "kv", lambda: self._project(xs, ps))
            out, weights = attend(split_heads(q, self.heads), k, v, need_weights)
            return merge_heads(out), weights
        if mode == "shared_kv":
            if ps is None or self.heads != 1:
                raise ValueError("cross_kernel 'shared_kv' needs one cross-attention head and positions shared by "
                                 "the batch")
            return self._shared_kv(q, xs, ps, self._cached(tokens, "pe_kv", lambda: self._project_shared(ps)))
        return self._absorb(q, xs, ps)

    def plan(self, num_latents: int, per_sample: int, ps: torch.Tensor | None) -> str:
        """The cheapest exact evaluation for these shapes (multiply-adds per token and stage; see the module doc)."""
        if self.pin is not None:
            return self.pin
        h, m, d = self.heads, num_latents, self.dim // self.heads
        if ps is not None:  # absorb: h*M*F (+ the per-sample columns) per token; project: M*dim
            if ps.shape[-1] < d:
                return "absorb"
            return "shared_kv" if h == 1 else "project"
        fa = per_sample + 1  # absorb h*M*fa vs project (fa + M) * dim
        return "absorb" if h * m * fa < self.dim * (fa + m) else "project"

    # What the layer reads of the tokens: a per-sample part (B, N, Cs) and a shared part (N, F) or None.
    def _parts(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.norm_kv is not None:  # the norm couples a token's channels with its position: all per sample
            return self._cached(tokens, "normed", lambda: (self.norm_kv(tokens.joined()), None))
        if tokens.shared:
            return tokens.x, tokens.pe.to(tokens.x.dtype)
        return self._cached(tokens, "joined", tokens.joined, shared_by_layers=True), None

    def _cached(self, tokens: Tokens, name: str, compute, *, shared_by_layers: bool = False):
        if tokens.cache is None:
            return compute()
        key = name if shared_by_layers else (self.key, name)
        if key not in tokens.cache:
            tokens.cache[key] = compute()
        return tokens.cache[key]

    def _project(self, xs: torch.Tensor, ps: torch.Tensor | None):
        w, cs = self.to_kv.weight, xs.shape[-1]
        kv = F.linear(xs, w[:, :cs])  # (B, N, 2 dim)
        if ps is not None:
            kv = kv + F.linear(ps, w[:, cs:], self.to_kv.bias)  # (N, 2 dim), once per batch, broadcast over B
        else:
            kv = kv + self.to_kv.bias
        k, v = kv.chunk(2, dim=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)  # (B, heads, N, d) each

    def _project_shared(self, ps: torch.Tensor):
        cs = self.to_kv.in_features - ps.shape[-1]
        return F.linear(ps, self.to_kv.weight[:, cs:]).chunk(2, dim=-1)  # (N, dim) each, no bias

    def _augmented_weight(self, cs: int) -> torch.Tensor:
        """[W_xs, b, W_ps]: (2 dim, Cs + 1 + F), the projection of the tokens [xs, 1, ps]."""
        w, b = self.to_kv.weight, self.to_kv.bias
        return torch.cat([w[:, :cs], b[:, None], w[:, cs:]], dim=1)

    def _absorb(self, q: torch.Tensor, xs: torch.Tensor, ps: torch.Tensor | None):
        b, m, dim = q.shape
        h, d, c1 = self.heads, dim // self.heads, xs.shape[-1] + 1
        w = self._augmented_weight(xs.shape[-1])  # (2 dim, Cs + 1 + F)
        fa = w.shape[1]
        wk, wv = (w[:dim] * d ** -0.5).view(h, d, fa), w[dim:].view(h, d, fa)
        qk = torch.einsum("bmhd,hdf->bhmf", q.view(b, m, h, d), wk).reshape(b, h * m, fa)  # (B, hM, Cs + 1 + F)
        x1 = F.pad(xs, (0, 1), value=1.0)  # (B, N, Cs + 1): [xs, 1]
        scores = torch.bmm(qk[..., :c1], x1.transpose(1, 2))  # (B, hM, N)
        n = scores.shape[-1]
        if ps is not None:  # + the shared part's scores, one (B hM, F) x (F, N) product for the whole batch
            scores = torch.addmm(scores.view(b * h * m, n), qk[..., c1:].reshape(b * h * m, -1), ps.t())
        probs = torch.softmax(scores.view(b, h * m, n), dim=-1)  # (B, hM, N)
        ctx = torch.bmm(probs, x1)  # (B, hM, Cs + 1): the attention-weighted tokens
        if ps is not None:
            ctx = torch.cat([ctx, (probs.view(b * h * m, n) @ ps).view(b, h * m, -1)], dim=-1)  # (B, hM, fa)
        out = torch.einsum("bhmf,hdf->bmhd", ctx.view(b, h, m, fa), wv).reshape(b, m, dim)
        return out, probs.view(b, h, m, n)

    def _shared_kv(self, q: torch.Tensor, xs: torch.Tensor, ps: torch.Tensor, pe_kv):
        b, m, dim = q.shape  # one head
        k_pe, v_pe = pe_kv  # (N, dim) each
        c1 = xs.shape[-1] + 1
        w = self._augmented_weight(xs.shape[-1])[:, :c1]  # (2 dim, Cs + 1): the per-sample and bias columns
        x1 = F.pad(xs, (0, 1), value=1.0)  # (B, N, Cs + 1)
        q = q * dim ** -0.5
        scores = torch.bmm(q @ w[:dim], x1.transpose(1, 2))  # (B, M, N)
        n = scores.shape[-1]
        scores = torch.addmm(scores.view(b * m, n), q.reshape(b * m, dim), k_pe.t())
        probs = torch.softmax(scores.view(b, m, n), dim=-1)
        out = torch.addmm(torch.bmm(probs, x1).view(b * m, c1) @ w[dim:].t(), probs.view(b * m, n), v_pe)
        return out.view(b, m, dim), probs.view(b, 1, m, n)
