"""Attention statistics: entropy, sparsity, top-k. Pure numpy, no matplotlib.

Every function takes attention weights with the attended axis last (a row of a softmax: non-negative, summing
to 1; rows are renormalised defensively because the run directory stores float16).

* entropy ``H = -sum p log p`` in nats; **normalised entropy** ``H / log N`` in [0, 1] (1 = uniform over the N
  positions, 0 = all mass on one position); **concentration** = ``1 - normalised entropy``.
* **effective positions** ``exp(H)``: how many equally weighted positions would give the same entropy.
* **sparsity** = Gini coefficient of the weights in [0, 1) (0 = uniform, -> 1 = one position takes everything).
* **top-5 % mass**: the share of attention held by the most attended 5 % of positions (uniform: 0.05).
* **coverage** (a whole map): the fraction of input positions that are in the top 5 % of at least one latent.
"""
from __future__ import annotations

import math

import numpy as np

TOP_FRACTION = 0.05
_EPS = 1e-12


def normalize(p: np.ndarray, axis: int = -1) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    total = p.sum(axis=axis, keepdims=True)
    n = p.shape[axis]
    return np.where(total > _EPS, p / np.maximum(total, _EPS), 1.0 / n)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis``."""
    p = normalize(p, axis)
    return -(p * np.log(np.maximum(p, _EPS))).sum(axis=axis)


def normalized_entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.asarray(p).shape[axis]
    return entropy(p, axis) / math.log(n) if n > 1 else np.zeros(np.asarray(p).shape[:axis] or ())


def effective_positions(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(entropy(p, axis))


def gini(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Gini coefficient along ``axis``: 0 for uniform weights, (N-1)/N when one position holds all the mass."""
    p = np.moveaxis(normalize(p, axis), axis, -1)
    n = p.shape[-1]
    s = np.sort(p, axis=-1)
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return (2.0 * (s * ranks).sum(-1) / n) - (n + 1.0) / n


def top_k_count(n: int, fraction: float = TOP_FRACTION) -> int:
    return max(1, int(math.ceil(fraction * n)))


def top_mass(p: np.ndarray, fraction: float = TOP_FRACTION, axis: int = -1) -> np.ndarray:
    """Share of the attention mass held by the top ``fraction`` of positions."""
    p = np.moveaxis(normalize(p, axis), axis, -1)
    k = top_k_count(p.shape[-1], fraction)
    return -np.sort(-p, axis=-1)[..., :k].sum(-1)


def top_mask(p: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ``ceil(fraction * N)`` most attended positions of a 1-D map (ties broken by index)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    k = top_k_count(p.size, fraction)
    mask = np.zeros(p.size, dtype=bool)
    mask[np.argsort(-p, kind="stable")[:k]] = True
    return mask


def cumulative_mass(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of positions, cumulative mass) with positions sorted from most to least attended; starts at (0, 0)."""
    p = normalize(np.asarray(p, dtype=np.float64).ravel())
    c = np.concatenate([[0.0], np.cumsum(np.sort(p)[::-1])])
    return np.linspace(0.0, 1.0, p.size + 1), c


def row_stats(a: np.ndarray, fraction: float = TOP_FRACTION) -> dict[str, np.ndarray]:
    """Per-row (per latent / query) statistics of an (M, N) map."""
    a = normalize(a, -1)
    return {
        "entropy": entropy(a),
        "normalized_entropy": normalized_entropy(a),
        "max": a.max(-1),
        "gini": gini(a),
        "top_mass": top_mass(a, fraction),
        "effective_positions": effective_positions(a),
    }


def column_stats(a: np.ndarray, fraction: float = TOP_FRACTION) -> dict[str, np.ndarray | float]:
    """Per-column (per input position / key) statistics of an (M, N) map: what each position receives."""
    a = normalize(a, -1)
    m, n = a.shape
    k = top_k_count(n, fraction)
    in_top = np.zeros(n, dtype=bool)
    in_top[np.unique(np.argsort(-a, axis=-1, kind="stable")[:, :k])] = True
    mean = a.mean(0)
    return {
        "mean": mean,
        "max": a.max(0),
        "std": a.std(0),
        "uniform": 1.0 / n,
        "above_uniform": float((mean > 1.0 / n).mean()),
        "coverage": float(in_top.mean()),
    }


def most_concentrated(a: np.ndarray) -> int:
    """Index of the row with the lowest entropy (ties: the first)."""
    return int(np.argmin(entropy(a, -1)))


def summary(p: np.ndarray, fraction: float = TOP_FRACTION) -> dict[str, float]:
    """Scalar statistics of one attention row (JSON-ready floats)."""
    p = normalize(np.asarray(p, dtype=np.float64).ravel())
    n = p.size
    return {
        "positions": int(n),
        "entropy": float(entropy(p)),
        "normalized_entropy": float(normalized_entropy(p)),
        "concentration": float(1.0 - normalized_entropy(p)),
        "effective_positions": float(effective_positions(p)),
        "gini": float(gini(p)),
        "top_mass": float(top_mass(p, fraction)),
        "peak": float(p.max()),
        "peak_over_uniform": float(p.max() * n),
    }
