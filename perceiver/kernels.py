"""Exact speed-ups of the Perceiver's blocks: the same functions as `perceiver/blocks.py`, computed with fewer
operations and less memory. Chosen with ``PerceiverConfig(kernels="auto")`` (the default); ``kernels="plain"``
runs blocks.py as written. The subclasses here keep the parameters and state-dict keys of the blocks they replace,
so a checkpoint loads either way; tests/test_kernels.py checks values and gradients against the plain blocks.

Cross-attention (`FastCrossAttention`). The keys and values are ``t @ W^T + b`` for each token ``t = [x, pe]``
(or its LayerNorm with ``input_norm``). Split the token into a per-sample part ``xs`` (B, N, Cs) and, when the
batch shares its positions, a shared part ``ps`` (N, F) (`Parts`); with per-sample positions everything is in
``xs``. Three evaluations, picked per shape by `FastCrossAttention.plan` (or pinned with ``cross_kernel``):

- ``"absorb"``: when a head is wider than the shared position features (with per-sample positions: when it pays),
  move the projection to the (few) latents. A query's scores are ``(q W_k) [xs, ps]^T`` and the output is
  ``(P [xs, ps]) W_v^T + b_v``, so the (B, N, 2 dim) keys/values are never built: a stage costs O(M N (C + F))
  in a few large matrix products, and backward keeps only the (B, heads, M, N) attention weights. ``q . b_k`` is
  the same for every key, so the softmax ignores it; a row of weights sums to 1, so ``b_v`` is added once. The
  shared part's products run once per batch, not per sample.
- ``"shared_kv"``: one head narrower than the features, shared positions: the position half of the keys/values
  is projected once per batch, (N, 2 dim); the few per-sample channels are absorbed as above.
- ``"project"``: keys/values materialised, (B, heads, N, d), then scaled_dot_product_attention; the position half
  is still projected once per batch when shared.

The input norm with shared positions (`centred_parts`) keeps the shared part. Its affine folds into the projection,
``W' = W diag(gamma)``, ``b' = W beta + b``, and a token's normed projection is
``W' (t - mu_n) / sigma_n + b' = (W'_x xc_n + W'_p pc_n - (W' 1) delta_n) / sigma_n + b'``, with the token centred
on the shared part's mean: ``pc = pe - mean(pe)`` once per batch, ``xc = x - mean(pe)`` and the small remainder
``delta = mu - mean(pe)`` per sample. So ``xs = [xc, -delta]`` (one more column, weighted by ``W' 1``),
``ps = pc``, and each token's contribution is scaled by ``1 / sigma_n`` (B, N): the scores once the two parts are
summed, the attention weights before they multiply the tokens (`ScaledSoftmax`, in place: on CPU a fresh
(B, hM, N) buffer costs more than a pass over one). Only (B, N) statistics are per sample beyond ``x``; sigma comes
from the two parts' centred sums of squares (no ``E[t^2] - mu^2`` cancellation).

Weight-shared stages see the same tokens through the same weights, so what depends only on those is computed once
per forward pass (`perceiver.blocks.Tokens.cache`); the norm's statistics, which depend on the tokens alone, once
for all layers.

MLP (`FastMLP`). Training holds ``h = fc1(y)`` but not ``gelu(h)`` for backward (`GeluMLP`): a quarter less
activation memory per block at no measurable time cost. CPU float32 inference runs fc1 + bias + GELU as one oneDNN
call. Both step aside under autocast and torch.compile, which do their own fusion.
"""
from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .blocks import MLP, CrossAttention, Tokens, attend, merge_heads, split_heads
from .config import PerceiverConfig

_keys = itertools.count()

#: The softmax's shifted scores are floored here before ``exp``. Torch's vectorised ``exp`` on x86 CPUs runs about
#: a hundred times slower for arguments below about -87, whose results underflow to subnormals or zero, and a trained
#: model's sharp cross-attention puts most of a row's 1024 scores down there: late epochs ran 2 to 3 times slower than
#: the first (docs/PERFORMANCE.md). e^-60 (1e-26) is far below what float32 can add to the row's largest term (1),
#: so the floor changes no weight that matters, and it keeps the weights, their products and gradients clear of
#: subnormal values.
SOFTMAX_FLOOR = -60.0


def fast_blocks(config: PerceiverConfig):
    """(cross-attention class, MLP class) with the config's kernel choices bound."""
    pin = None if config.cross_kernel == "auto" else config.cross_kernel
    return (functools.partial(FastCrossAttention, pin=pin),
            functools.partial(FastMLP, recompute_gelu=config.gelu_recompute))


# -------------------------------------------------------------------------------------------------------- MLP


def custom_autograd_ok(t: torch.Tensor) -> bool:
    """Whether the hand-written autograd functions here (`GeluMLP`, `ScaledSoftmax`) may run on ``t``: not under
    autocast, whose casts their backward would not replay, nor torch.compile, which fuses the plain composition."""
    return not (torch.compiler.is_compiling() or torch.is_autocast_enabled(t.device.type))


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
        if not custom_autograd_ok(y) or y.dtype != self.fc1.weight.dtype:
            return super().forward(x)
        if torch.is_grad_enabled():
            if not self.recompute_gelu:
                return super().forward(x)
            out = GeluMLP.apply(y, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        else:
            a = fused_linear_gelu(y, self.fc1) if y.device.type == "cpu" and y.dtype == torch.float32 else None
            out = self.fc2(a if a is not None else F.gelu(self.fc1(y)))
        return x + self.drop_path(self.drop(out))

    def evaluation(self) -> str:
        """Training's evaluation (CPU float32 inference fuses fc1 and GELU either way)."""
        return "recompute_gelu" if self.recompute_gelu else "plain"


# --------------------------------------------------------------------------------------------- cross-attention


class ScaledSoftmax(torch.autograd.Function):
    """``softmax(a * s) * s`` along N, in a's buffer: a (B R, N) scores, s (B, N) the input norm's 1 / sigma per key.

    The attention weights of the norm's unscaled token parts (`centred_parts`). Composed from autograd ops, each
    scaling would write a fresh (B R, N) tensor forward and backward, and a fresh buffer of that size (page faults on
    first touch) costs several in-place passes. Here forward works in place and backward writes one buffer; the
    plain weights are ``result / s``.
    """

    @staticmethod
    def forward(ctx, a, s):
        b, n = s.shape
        s3 = s[:, None, :]  # (B, 1, N)
        raw = a.clone() if ctx.needs_input_grad[1] else None  # s's gradient needs the unscaled scores
        z = a.view(b, -1, n).mul_(s3)  # (B, R, N)
        z.sub_(z.amax(-1, keepdim=True)).clamp_(min=SOFTMAX_FLOOR).exp_()
        z.div_(z.sum(-1, keepdim=True)).mul_(s3)
        ctx.mark_dirty(a)
        ctx.save_for_backward(a, s, raw)
        return a

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        pw, s, raw = ctx.saved_tensors
        b, n = s.shape
        pw, g, s3 = pw.view(b, -1, n), grad.view(b, -1, n), s[:, None, :]  # (B, R, N), (B, R, N), (B, 1, N)
        # softmax's backward with P = pw / s and dL/dP = g s:  d/da = s P (g s - sum_N(g s P)) = pw (g s - r)
        gpw = g * pw  # the one fresh (B, R, N) buffer
        r = gpw.sum(-1, keepdim=True)  # (B, R, 1)
        gs = None
        if ctx.needs_input_grad[1]:  # through both scalings: sum_R (g pw + ga a) / s
            gs = gpw.sum(1)
        ga = gpw.mul_(s3).addcmul_(pw, r, value=-1.0)  # in place
        if gs is not None:
            gs = (gs + (ga * raw.view(b, -1, n)).sum(1)) / s
        return ga.view(grad.shape), gs


class Parts(NamedTuple):
    """What a cross-attention reads of its tokens: keys/values are ``(W_xs xs + W_ps ps) * scale + b`` per token.

    xs: (B, N, Cs) per sample; ps: (N, F) shared by the batch, or None; scale: (B, N), or None for 1.
    """

    xs: torch.Tensor
    ps: torch.Tensor | None
    scale: torch.Tensor | None


def centred_parts(x: torch.Tensor, pe: torch.Tensor, eps: float) -> Parts:
    """The tokens [x, pe] (x: (B, N, C), pe: (N, F) shared) LayerNorm'd without the affine, as
    ``(t - mu) / sigma = ([xc, pc] - delta 1) * scale``, never building a (B, N, C + F) tensor.

    Both parts are centred on the shared part's per-token mean ``mp``: ``pc = pe - mp`` once per batch,
    ``xc = x - mp`` per sample, and ``delta = mu - mp = C mean(xc) / (C + F)`` is small (a mean over the C of C + F
    features). The variance combines the two groups' centred sums of squares (Chan et al.'s parallel formula), so it
    has no E[t^2] - mu^2 cancellation. Returns xs = [xc, -delta], whose last column the projection W 1 multiplies.
    """
    c, f = x.shape[-1], pe.shape[-1]
    mp = pe.mean(-1, keepdim=True)  # (N, 1)
    pc = pe - mp  # (N, F)
    xc = x - mp  # (B, N, C)
    mx = xc.mean(-1, keepdim=True)  # (B, N, 1): mean(x) - mp
    m2 = (xc - mx).square().sum(-1) + pc.square().sum(-1) + mx.squeeze(-1).square() * (c * f / (c + f))  # (B, N)
    scale = torch.rsqrt(m2 / (c + f) + eps)  # 1 / sigma, (B, N)
    return Parts(torch.cat([xc, mx * (-c / (c + f))], dim=-1), pc, scale)  # xs: (B, N, C + 1)


class FastCrossAttention(CrossAttention):
    def __init__(self, *, pin: str | None = None, **kw):
        super().__init__(**kw)
        self.pin = pin
        self.key = next(_keys)  # this layer's entries in Tokens.cache (weight-shared stages reuse them)

    def attend(self, q: torch.Tensor, tokens: Tokens, need_weights: bool):
        parts = self._parts(tokens)
        mode = self.plan(q.shape[1], parts.xs.shape[-1], None if parts.ps is None else parts.ps.shape[-1])
        if mode == "project":
            k, v = self._cached(tokens, "kv", lambda: self._project(parts))
            out, weights = attend(split_heads(q, self.heads), k, v, need_weights)
            return merge_heads(out), weights
        if mode == "shared_kv":
            if parts.ps is None or self.heads != 1:
                raise ValueError("cross_kernel 'shared_kv' needs one cross-attention head and positions shared by "
                                 "the batch")
            return self._shared_kv(q, parts, self._cached(tokens, "pe_kv", lambda: self._project_shared(parts)),
                                   need_weights)
        return self._absorb(q, parts, need_weights)

    def evaluation(self, num_latents: int, *, shared_positions: bool) -> str:
        if shared_positions:  # the channels (and the norm's -delta column) per sample, the features shared
            return self.plan(num_latents, self.in_channels + (self.norm_kv is not None), self.pe_features)
        return self.plan(num_latents, self.in_channels + self.pe_features, None)

    def plan(self, num_latents: int, per_sample: int, shared: int | None) -> str:
        """The cheapest exact evaluation for ``num_latents`` queries and tokens of ``per_sample`` columns per sample
        and ``shared`` columns shared by the batch (None: none), in multiply-adds per token and stage (module doc)."""
        if self.pin is not None:
            return self.pin
        h, m, d = self.heads, num_latents, self.dim // self.heads
        if shared is not None:  # absorb: h*M*F (+ the per-sample columns) per token; project: M*dim
            if shared < d:
                return "absorb"
            return "shared_kv" if h == 1 else "project"
        fa = per_sample + 1  # absorb h*M*fa vs project (fa + M) * dim
        return "absorb" if h * m * fa < self.dim * (fa + m) else "project"

    def _parts(self, tokens: Tokens) -> Parts:
        if tokens.shared:
            pe = tokens.pe.to(tokens.x.dtype)
            if self.norm_kv is None:
                return Parts(tokens.x, pe, None)
            # The statistics depend on the tokens only, not on this layer's weights: once per forward for all layers.
            eps = self.norm_kv.eps
            return self._cached(tokens, ("centred", eps), lambda: centred_parts(tokens.x, pe, eps),
                                shared_by_layers=True)
        if self.norm_kv is not None:  # per-sample positions: nothing to share, the normed tokens are per sample
            return Parts(self._cached(tokens, "normed", lambda: self.norm_kv(tokens.joined())), None, None)
        return Parts(self._cached(tokens, "joined", tokens.joined, shared_by_layers=True), None, None)

    def _cached(self, tokens: Tokens, name, compute, *, shared_by_layers: bool = False):
        if tokens.cache is None:
            return compute()
        key = name if shared_by_layers else (self.key, name)
        if key not in tokens.cache:
            tokens.cache[key] = compute()
        return tokens.cache[key]

    def _weights(self, parts: Parts):
        """(W_xs (2 dim, Cs), b (2 dim), W_ps (2 dim, F) or None): the projection of `parts`.

        With the input norm (``scale`` set), its affine is folded in: ``W' = W diag(gamma)``, ``b' = W beta + b``,
        and the last per-sample column (``-delta``, see `centred_parts`) is multiplied by ``W' 1``.
        """
        w, b = self.to_kv.weight, self.to_kv.bias
        if parts.scale is None:
            cs = parts.xs.shape[-1]
            return w[:, :cs], b, None if parts.ps is None else w[:, cs:]
        wg, c = w * self.norm_kv.weight, self.in_channels
        return (torch.cat([wg[:, :c], wg.sum(1, keepdim=True)], dim=1), torch.addmv(b, w, self.norm_kv.bias),
                wg[:, c:])

    def _project(self, parts: Parts):
        xs, ps, scale = parts
        w_xs, b, w_ps = self._weights(parts)
        kv = F.linear(xs, w_xs)  # (B, N, 2 dim)
        if ps is not None:
            kv = kv + F.linear(ps, w_ps, None if scale is not None else b)  # (N, 2 dim), once per batch
        elif scale is None:
            kv = kv + b
        if scale is not None:
            kv = torch.addcmul(b, kv, scale[..., None])  # (B, N, 2 dim)
        k, v = kv.chunk(2, dim=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)  # (B, heads, N, d) each

    def _project_shared(self, parts: Parts):
        return F.linear(parts.ps, self._weights(parts)[2]).chunk(2, dim=-1)  # (N, dim) each, no bias, unscaled

    # The key bias adds q . b_k to all of a query's scores, which the softmax ignores: absorb and shared_kv drop it.
    # The value bias is added to the output as is, since each row of attention weights sums to 1.

    def _absorb(self, q: torch.Tensor, parts: Parts, need_weights: bool):
        xs, ps, scale = parts
        b, m, dim = q.shape
        h, d, cs = self.heads, dim // self.heads, xs.shape[-1]
        w_xs, bias, w_ps = self._weights(parts)
        w = w_xs if ps is None else torch.cat([w_xs, w_ps], dim=1)  # (2 dim, Cs + F)
        fa = w.shape[1]
        wk, wv = (w[:dim] * d ** -0.5).view(h, d, fa), w[dim:].view(h, d, fa)
        qk = torch.einsum("bmhd,hdf->bhmf", q.view(b, m, h, d), wk).reshape(b, h * m, fa)  # (B, hM, Cs + F)
        scores = torch.bmm(qk[..., :cs], xs.transpose(1, 2))  # (B, hM, N)
        n = scores.shape[-1]
        if ps is not None:  # + the shared part's scores, one (B hM, F) x (F, N) product for the whole batch
            scores = torch.addmm(scores.view(b * h * m, n), qk[..., cs:].reshape(b * h * m, -1), ps.t())
        probs, pw = self._softmax(b, scores, scale, need_weights)  # (B, hM, N) each; probs None if not needed
        ctx = torch.bmm(pw, xs)  # (B, hM, Cs): the attention-weighted tokens
        if ps is not None:
            ctx = torch.cat([ctx, (pw.view(b * h * m, n) @ ps).view(b, h * m, -1)], dim=-1)  # (B, hM, fa)
        out = torch.einsum("bhmf,hdf->bmhd", ctx.view(b, h, m, fa), wv).reshape(b, m, dim)
        return out + bias[dim:], None if probs is None else probs.view(b, h, m, n)

    @staticmethod
    def _softmax(b: int, scores: torch.Tensor, scale: torch.Tensor | None, need_weights: bool):
        """(attention weights or None, the weights of the unscaled parts), (B, R, N) each: scores (B R, N) or
        (B, R, N)."""
        n = scores.shape[-1]
        if scale is None:
            probs = torch.softmax(scores, dim=-1).view(b, -1, n)  # (B, R, N)
            return probs, probs
        s3 = scale[:, None, :]  # (B, 1, N): the norm's 1 / sigma, on the scores and on the weights
        if not custom_autograd_ok(scores):
            probs = torch.softmax(scores.view(b, -1, n) * s3, dim=-1)
            return probs, probs * s3
        pw = ScaledSoftmax.apply(scores, scale).view(b, -1, n)
        return (pw / s3 if need_weights else None), pw

    def _shared_kv(self, q: torch.Tensor, parts: Parts, pe_kv, need_weights: bool):
        xs, ps, scale = parts
        b, m, dim = q.shape  # one head
        k_pe, v_pe = pe_kv  # (N, dim) each
        cs = xs.shape[-1]
        w_xs, bias, _ = self._weights(parts)  # (2 dim, Cs): the per-sample columns
        q = q * dim ** -0.5
        scores = torch.bmm(q @ w_xs[:dim], xs.transpose(1, 2))  # (B, M, N)
        n = scores.shape[-1]
        scores = torch.addmm(scores.view(b * m, n), q.reshape(b * m, dim), k_pe.t())  # (B M, N)
        probs, pw = self._softmax(b, scores, scale, need_weights)  # (B, M, N) each
        out = torch.addmm(torch.bmm(pw, xs).view(b * m, cs) @ w_xs[dim:].t(), pw.view(b * m, n), v_pe)
        return (out + bias[dim:]).view(b, m, dim), None if probs is None else probs.view(b, 1, m, n)
