"""Optimizers: LAMB, weight-decay exclusions, and the `--optimizer lamb|adamw` switch.

The Perceiver (Jaegle et al., ICML 2021, arXiv 2103.03206) is trained with LAMB (You et al., "Large Batch
Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020, arXiv 1904.00962). Its reference JAX
code uses ``optax.lamb``; this module's `Lamb` with its default settings computes the same update.

    optimizer = build_optimizer(model, name="lamb", lr=4e-3, weight_decay=0.1)

Biases, every 1-D parameter (norm weights and the like) and parameters named like the latent array or the
positional/cls embeddings are put in a group without weight decay (`param_groups`).
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "DEFAULT_NO_DECAY", "Lamb", "param_groups", "build_optimizer"]

#: The valid values of ``build_optimizer(name=...)`` (and of the ``--optimizer`` flag).
OPTIMIZERS = ("lamb", "adamw")

#: Parameter-name patterns kept out of weight decay by default (see `param_groups` for the matching rule):
#: the latent array, learned positional embeddings and the cls latent. (The Perceiver's reference code decays
#: these and excludes only biases and norm parameters: pass ``no_decay=()`` to reproduce that.)
DEFAULT_NO_DECAY = ("latents", "latent", "pos_emb", "pos_embedding", "cls", "cls_token", "cls_latent")

_BIAS_CORRECTIONS = ("moments", "step_size", "none")


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check_hyperparameters(options: dict) -> dict:
    """Validate LAMB hyper-parameters (a group or the defaults); returns them with `bias_correction` normalised."""
    lr, betas, eps, wd = options["lr"], options["betas"], options["eps"], options["weight_decay"]
    if not (_is_real(lr) and lr >= 0.0):
        raise ValueError(f"Lamb: lr must be a finite number >= 0, got {lr!r}")
    if not (isinstance(betas, Sequence) and len(betas) == 2):
        raise ValueError(f"Lamb: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        if not (_is_real(beta) and 0.0 <= beta < 1.0):
            raise ValueError(f"Lamb: betas[{i}] must be in [0, 1), got {beta!r}")
    if not (_is_real(eps) and eps >= 0.0):
        raise ValueError(f"Lamb: eps must be a finite number >= 0, got {eps!r}")
    if not (_is_real(wd) and wd >= 0.0):
        raise ValueError(f"Lamb: weight_decay must be a finite number >= 0, got {wd!r}")
    clamp = options["clamp_value"]
    if clamp is not None and not (_is_real(clamp) and clamp > 0.0):
        raise ValueError(f"Lamb: clamp_value must be None (no clamp) or a finite number > 0, got {clamp!r}")
    bc = options["bias_correction"]
    if bc is True:
        bc = "moments"
    elif bc is False:
        bc = "none"
    if bc not in _BIAS_CORRECTIONS:
        raise ValueError(
            f"Lamb: bias_correction must be True, False or one of {', '.join(map(repr, _BIAS_CORRECTIONS))}; "
            f"got {options['bias_correction']!r}"
        )
    if options["foreach"] is None:  # PyTorch's "default" spelling
        options = {**options, "foreach": True}
    for flag in ("trust_ratio", "foreach", "capturable"):
        if not isinstance(options[flag], bool):
            raise ValueError(f"Lamb: {flag} must be True or False, got {options[flag]!r}")
    return {**options, "betas": (float(betas[0]), float(betas[1])), "bias_correction": bc}


class Lamb(torch.optim.Optimizer):
    r"""LAMB: Adam moments, decoupled weight decay and a per-parameter trust ratio.

    From You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"
    (ICLR 2020, https://arxiv.org/abs/1904.00962), Algorithm 2. For each parameter tensor ``w`` with gradient
    ``g`` at step ``t``::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        update = m_hat / (sqrt(v_hat) + eps) + weight_decay * w      # m_hat = m / (1 - beta1**t), v_hat likewise
        trust_ratio = phi(||w||) / ||update||                        # 1 when either norm is 0
        w = w - lr * trust_ratio * update

    where ``phi(x) = min(x, clamp_value)`` (identity when ``clamp_value`` is None) and the norms are
    Frobenius norms of the whole tensor. With the defaults this is ``optax.lamb`` (the optimizer of the
    Perceiver's reference code).

    Args:
        params: parameters or parameter-group dicts (see `param_groups`); every option below may be set per group.
        lr: learning rate, >= 0.
        betas: ``(beta1, beta2)``, each in [0, 1).
        eps: added to ``sqrt(v_hat)``, >= 0.
        weight_decay: decoupled weight decay, >= 0; added to the update (inside the trust ratio, as in the paper).
        clamp_value: upper bound on ``||w||`` in the trust ratio (the paper's ``phi``); None for no bound.
        bias_correction: ``True`` / ``"moments"``: Adam bias correction of ``m`` and ``v`` (paper v5, optax).
            ``False`` / ``"none"``: no bias correction (paper v3). ``"step_size"``: torch_optimizer's ``debias=True``:
            the uncorrected update is used for the trust ratio and the step is then multiplied by
            ``sqrt(1 - beta2**t) / (1 - beta1**t)``.
        trust_ratio: False fixes the trust ratio at 1, which turns LAMB into Adam with decoupled weight decay
            (with ``bias_correction=True`` this is `torch.optim.AdamW`).
        foreach: batch the math across each group's parameters with ``torch._foreach_*`` ops (one kernel per
            operation per device/dtype instead of one per parameter); False uses a per-parameter loop. Both compute
            the same thing. None (PyTorch's spelling of "default") means True.
        capturable: keep each parameter's step count on the parameter's device and compute the bias corrections
            there, as tensors: nothing is read back to the host, and a compiled step traces the counts as tensors
            instead of specialising on their values (no recompilation as they grow). False (like
            `torch.optim.Adam`): the counts live on the host and the corrections are Python numbers, which costs
            fewer kernels eagerly. Both compute the same update (to float32 rounding of the corrections).

    Correspondence with ``torch_optimizer.Lamb(lr, betas, eps, weight_decay, clamp_value, adam, debias)``: the
    same steps (to float rounding) as ``Lamb(lr, betas, eps, weight_decay, clamp_value=clamp_value,
    trust_ratio=not adam, bias_correction="step_size" if debias else False)``. Differences: torch_optimizer's
    defaults are ``clamp_value=10, debias=False`` (no bias correction) where ours are ``None, True``; it rejects
    ``lr == 0`` (ours allows it, e.g. for warmup from zero); it keeps ``clamp_value``/``adam``/``debias`` on the
    optimizer rather than per group, and stores ``weight_norm``/``adam_norm``/``trust_ratio`` in the state (ours
    keeps only ``step``, ``exp_avg``, ``exp_avg_sq``, like `torch.optim.Adam`).

    Unlike timm's / NVIDIA apex's LAMB, the trust ratio is applied to every parameter, including those in groups
    without weight decay (as in the paper, optax and torch_optimizer), and gradients are not clipped here.
    Sparse gradients are not supported.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        clamp_value: float | None = None,
        bias_correction: bool | str = True,
        trust_ratio: bool = True,
        foreach: bool | None = True,
        capturable: bool = False,
    ) -> None:
        defaults = _check_hyperparameters(
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                clamp_value=clamp_value,
                bias_correction=bias_correction,
                trust_ratio=trust_ratio,
                foreach=foreach,
                capturable=capturable,
            )
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its own options are validated like the constructor's."""
        super().add_param_group(param_group)
        self.param_groups[-1].update(_check_hyperparameters(self.param_groups[-1]))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimisation step; `closure` (optional) re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            capturable = group.get("capturable", False)  # absent from groups saved before the option existed
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"Lamb does not support sparse gradients (parameter of shape {tuple(p.shape)}); "
                        "use a dense layer (e.g. nn.Embedding(..., sparse=False))"
                    )
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device if capturable else None)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif capturable and state["step"].device != p.device:  # counts loaded from a host-count run
                    state["step"] = state["step"].to(p.device, torch.float32)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            if group["foreach"]:
                # foreach ops need every list on one device and dtype.
                buckets: dict[tuple, list[int]] = {}
                for i, p in enumerate(params):
                    buckets.setdefault((p.device, p.dtype), []).append(i)
                for idx in buckets.values():
                    _lamb_foreach(
                        group,
                        *([lst[i] for i in idx] for lst in (params, grads, exp_avgs, exp_avg_sqs, steps)),
                    )
            else:
                _lamb_loop(group, params, grads, exp_avgs, exp_avg_sqs, steps)
        return loss


def _bias_corrections(group: dict, steps: list[torch.Tensor]) -> tuple[list | None, list | None, list | None]:
    """Per parameter at its step count ``t`` (already advanced): the divisors of m (``1 - beta1**t``) and of
    sqrt(v) (``sqrt(1 - beta2**t)``), and the step-size factor (their ratio), each None where the group's
    `bias_correction` has none. Python numbers from host counts; 0-d device tensors when the group is `capturable`
    (nothing read back)."""
    mode = group["bias_correction"]
    if mode == "none":
        return None, None, None
    beta1, beta2 = group["betas"]
    if group.get("capturable", False):
        bc1 = torch._foreach_pow(beta1, steps)  # beta1**t
        torch._foreach_sub_(bc1, 1.0)
        torch._foreach_neg_(bc1)  # 1 - beta1**t
        bc2 = torch._foreach_pow(beta2, steps)
        torch._foreach_sub_(bc2, 1.0)
        torch._foreach_neg_(bc2)
        torch._foreach_sqrt_(bc2)  # sqrt(1 - beta2**t)
        if mode == "moments":
            return bc1, bc2, None
        return None, None, torch._foreach_div(bc2, bc1)
    ts = [s.item() for s in steps]  # host tensors: reading them waits for no device
    bc1 = [1.0 - beta1**t for t in ts]
    bc2 = [math.sqrt(1.0 - beta2**t) for t in ts]
    if mode == "moments":
        return bc1, bc2, None
    return None, None, [b2 / b1 for b1, b2 in zip(bc1, bc2)]


def _lamb_loop(group, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step += 1
        bc1, bc2, factor = (None if c is None else c[0] for c in _bias_corrections(group, [step]))
        m.mul_(beta1).add_(g, alpha=1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = v.sqrt()
        if bc2 is not None:
            denom.div_(bc2)
        update = m.div(denom.add_(group["eps"]))
        if bc1 is not None:
            update.div_(bc1)
        if group["weight_decay"] != 0.0:
            update.add_(p, alpha=group["weight_decay"])
        scale = -lr if factor is None else -lr * factor  # a number, or a device tensor: no host round-trip
        if group["trust_ratio"]:
            w_norm = torch.linalg.vector_norm(p)
            if group["clamp_value"] is not None:
                w_norm = w_norm.clamp(max=group["clamp_value"])
            u_norm = torch.linalg.vector_norm(update)
            trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
            update.mul_(trust.mul_(scale))
        else:
            update.mul_(scale)
        p.add_(update)


def _lamb_foreach(group, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    torch._foreach_add_(steps, 1.0)
    bc1s, bc2s, factors = _bias_corrections(group, steps)

    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    if bc2s is not None:
        torch._foreach_div_(denoms, bc2s)
    torch._foreach_add_(denoms, group["eps"])
    updates = torch._foreach_div(exp_avgs, denoms)
    del denoms
    if bc1s is not None:
        torch._foreach_div_(updates, bc1s)
    if group["weight_decay"] != 0.0:
        torch._foreach_add_(updates, params, alpha=group["weight_decay"])
    if group["trust_ratio"]:
        w_norms = torch.stack(torch._foreach_norm(params))
        if group["clamp_value"] is not None:
            w_norms.clamp_(max=group["clamp_value"])
        u_norms = torch.stack(torch._foreach_norm(updates))
        trust = torch.where((w_norms > 0) & (u_norms > 0), w_norms / u_norms, 1.0)
        if factors is None:
            trust.mul_(-lr)
        else:  # per parameter: steps may differ within a group
            scales = [-lr * f for f in factors]
            trust.mul_(torch.stack(scales) if isinstance(scales[0], torch.Tensor)
                       else torch.tensor(scales, dtype=trust.dtype).to(trust.device, non_blocking=True))
        torch._foreach_mul_(updates, list(trust.unbind()))
    elif factors is not None:
        torch._foreach_mul_(updates, [-lr * f for f in factors])
    else:
        torch._foreach_mul_(updates, -lr)
    torch._foreach_add_(params, updates)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    parts = name.split(".")
    return any(
        fnmatch.fnmatchcase(name, pat) or any(fnmatch.fnmatchcase(part, pat) for part in parts) for pat in patterns
    )


def param_groups(
    model: nn.Module, weight_decay: float, *, no_decay: Iterable[str] = DEFAULT_NO_DECAY
) -> list[dict]:
    """Split `model`'s trainable parameters into a decayed group and a group without weight decay.

    No decay for: biases (a name ending in ``bias``), every parameter with ``ndim <= 1`` (norm weights and
    scales), and every parameter whose dotted name, or one component of it, matches a pattern in `no_decay`
    (``fnmatch`` syntax, case-sensitive): with the default, ``encoder.latents`` and ``pos_emb`` match, while
    ``cls_head.weight`` does not. Frozen parameters (``requires_grad=False``) are left out; shared parameters
    appear once.

    Returns ``[{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]``;
    both groups are always present (possibly empty), so optimizer state dicts keep one layout.
    """
    if not (_is_real(weight_decay) and weight_decay >= 0.0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if isinstance(no_decay, str):
        no_decay = (no_decay,)
    no_decay = tuple(no_decay)
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith("bias") or _matches(name, no_decay):
            keep.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": keep, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float | None = None,
    exclude_from_decay: bool = True,
    no_decay: Iterable[str] = DEFAULT_NO_DECAY,
) -> torch.optim.Optimizer:
    """The optimizer behind ``--optimizer lamb|adamw``; build it after moving the model to its device.

    ``name="lamb"``: `Lamb` with its defaults (optax.lamb's update). ``name="adamw"``: `torch.optim.AdamW`,
    fused when every parameter is on a CUDA device, foreach otherwise. `eps` defaults to 1e-6 for LAMB (as
    optax and the paper's code) and 1e-8 for AdamW (PyTorch's default). With `exclude_from_decay`, biases,
    1-D parameters and parameters matching `no_decay` get no weight decay (`param_groups`); otherwise every
    parameter is decayed.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    if exclude_from_decay:
        groups = param_groups(model, weight_decay, no_decay=no_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if not any(g["params"] for g in groups):
        raise ValueError("build_optimizer: the model has no trainable parameters")
    if key == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=1e-6 if eps is None else eps, weight_decay=weight_decay)
    fused = all(p.device.type == "cuda" and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(
        groups,
        lr=lr,
        betas=betas,
        eps=1e-8 if eps is None else eps,
        weight_decay=weight_decay,
        foreach=None if fused else True,
        fused=True if fused else None,
    )
