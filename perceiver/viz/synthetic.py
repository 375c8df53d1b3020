"""Synthetic run directories for tests and documentation: no torch, no training.

`make_run(path, kind=...)` writes a config, metrics.jsonl, status.json and attention snapshots through the
`perceiver.rundir` writer, with attention maps whose structure is known (each latent looks at one Gaussian blob
that sharpens with the epochs), so figures and statistics can be checked against expectations.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..rundir import AttentionSnapshot, EpochRow, RunDir

CLASS_NAMES = ["circle", "square", "triangle"]


def metrics_rows(epochs: int, seed: int = 0) -> list[EpochRow]:
    """Plausible training curves: accuracies rise and losses fall, test lagging behind train."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(1, epochs + 1):
        t = e / max(epochs, 1)
        train_acc = 0.35 + 0.6 * (1 - math.exp(-4 * t)) + rng.normal(0, 0.005)
        test_acc = 0.33 + 0.5 * (1 - math.exp(-4 * t)) + rng.normal(0, 0.01)
        rows.append(EpochRow(
            epoch=e, step=10 * e, train_loss=1.1 * math.exp(-3 * t) + 0.02, test_loss=1.15 * math.exp(-2.5 * t) + 0.15,
            train_acc=min(train_acc, 1.0), test_acc=min(test_acc, 1.0), test_acc_top5=min(1.0, test_acc + 0.1),
            lr=0.004 * (0.1 if t > 0.7 else 1.0), train_samples=1000, train_batches=10, test_samples=300,
            best_acc=None, is_best=False, epoch_time_s=2.0 + rng.normal(0, 0.1), samples_per_s=500 + rng.normal(0, 10),
        ))
    return rows


def _blob_maps(coords: np.ndarray, centers: np.ndarray, width: float) -> np.ndarray:
    """(M, N) softmax-like rows: latent m puts a Gaussian of ``width`` on centers[m] over positions coords (N, D)."""
    d2 = ((coords[None, :, :] - centers[:, None, :]) ** 2).sum(-1)
    logits = -d2 / (2 * width ** 2)
    logits -= logits.max(1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(1, keepdims=True)


def _image(h: int, w: int, shape: int, rng) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.35, 0.65, 2) * (h, w)
    r = 0.25 * min(h, w)
    if shape == 0:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    elif shape == 1:
        inside = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    else:
        inside = (yy - cy + r >= 0) & (yy - cy - r <= 0) & (abs(xx - cx) <= (yy - cy + r) / 2)
    img = np.zeros((h, w, 3), dtype=np.uint8) + np.array([30, 40, 60], dtype=np.uint8)
    img[inside] = rng.integers(120, 255, 3)
    return img


def make_snapshot(kind: str, epoch: int, epochs: int, *, permutation: np.ndarray | None = None, samples: int = 3,
                  stages: int = 2, heads: int = 2, latents: int = 8, blocks: int = 2, size: int = 16,
                  points: int = 256, seed: int = 0) -> AttentionSnapshot:
    """A snapshot whose latent m looks at blob m; blobs sharpen as ``epoch / epochs`` grows."""
    rng = np.random.default_rng(seed)
    t = epoch / max(epochs, 1)
    width = 0.6 * (1 - t) + 0.12 * t
    if kind == "image":
        yy, xx = np.mgrid[0:size, 0:size]
        coords = np.stack([yy.ravel(), xx.ravel()], 1) / (size - 1) * 2 - 1  # row-major pixel order
        inputs = np.stack([_image(size, size, i % 3, rng) for i in range(samples)])
        centers = rng.uniform(-0.7, 0.7, (latents, 2))
    else:
        v = rng.normal(size=(samples, points, 3))
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
        inputs = (v * np.array([1.0, 0.6, 0.4])).astype(np.float32)
        coords = inputs[0].astype(np.float64)
        centers = coords[rng.choice(points, latents, replace=False)]
    n = coords.shape[0]
    cross = np.empty((stages, samples, heads, latents, n), dtype=np.float32)
    for s in range(stages):
        for h in range(heads):
            base = _blob_maps(coords, np.roll(centers, s + h, axis=0), width * (1 + 0.3 * h))
            noise = rng.uniform(0.9, 1.1, (samples, latents, n))
            maps = base[None] * noise
            cross[s, :, h] = maps / maps.sum(-1, keepdims=True)
    if permutation is not None:  # the model saw token i = pixel permutation[i]
        cross = cross[..., permutation]
    self_ = None
    if blocks:
        lat = np.linspace(-1, 1, latents)[:, None]
        self_ = np.empty((stages, blocks, samples, heads, latents, latents), dtype=np.float32)
        for s in range(stages):
            for b in range(blocks):
                base = _blob_maps(lat, np.roll(lat, b + 1, axis=0), 0.3 + 0.5 * (1 - t))
                self_[s, b] = base[None, None]
    labels = np.arange(samples) % len(CLASS_NAMES)
    preds = labels.copy()
    if t < 0.5:
        preds = (labels + 1) % len(CLASS_NAMES)
    probs = np.full((samples, len(CLASS_NAMES)), 0.1, dtype=np.float32)
    probs[np.arange(samples), preds] = 0.8
    return AttentionSnapshot(
        epoch=epoch, kind=kind, cross=cross, self_=self_, inputs=inputs, labels=labels, preds=preds, probs=probs,
        sample_indices=np.arange(samples), class_names=CLASS_NAMES,
        image_shape=(size, size, 3) if kind == "image" else None, permutation=permutation,
    )


def make_run(path, *, kind: str = "image", epochs: int = 6, attention_epochs=(1, 3, 6), permuted: bool = False,
             state: str = "finished", seed: int = 0, **snapshot_kwargs) -> RunDir:
    """Write a complete synthetic run directory at ``path`` and return it."""
    run = RunDir(Path(path))
    run.create()
    size = snapshot_kwargs.get("size", 16)
    perm = np.random.default_rng(seed + 1).permutation(size * size) if permuted and kind == "image" else None
    run.write_config({
        "args": {"experiment_name": run.name, "dataset": "shapes2d" if kind == "image" else "shapes3d",
                 "epochs": epochs, "permute_pixels": bool(permuted), "save_attention_maps": True},
        "model": {"num_latents": snapshot_kwargs.get("latents", 8), "output_pooling": "mean"},
        "dataset": {"name": "synthetic", "kind": kind, "num_classes": len(CLASS_NAMES),
                    "class_names": CLASS_NAMES},
        "num_parameters": 12345,
    })
    for row in metrics_rows(epochs, seed):
        run.append_metrics(row)
    for e in attention_epochs:
        if e <= epochs:
            run.save_attention(make_snapshot(kind, e, epochs, permutation=perm, seed=seed, **snapshot_kwargs))
    run.write_status(state, epoch=epochs, epochs=epochs)
    return run
