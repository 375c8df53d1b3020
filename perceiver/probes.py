"""Attention probes: a fixed handful of test samples whose attention maps are saved during training.

The probes are picked once per run (`pick_probes`: class-balanced, seeded by ``--seed``, so the same samples at
every epoch and in a resumed run) and run through ``model(x, pos, return_attention=True)`` in eval mode after an
epoch's evaluation (`capture`); the result is a `perceiver.rundir.AttentionSnapshot`. One forward pass of
``--num_probe_samples`` samples: it does not slow training noticeably.
"""
from __future__ import annotations

import numpy as np
import torch

from .rundir import AttentionSnapshot


def dataset_labels(dataset) -> np.ndarray:
    """The labels of a dataset (``.labels`` when it has them, else read item by item); Subsets supported."""
    if isinstance(dataset, torch.utils.data.Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def pick_probes(labels: np.ndarray, count: int, *, seed: int) -> np.ndarray:
    """``count`` indices, round-robin over the classes present (each class shuffled with ``seed``)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked: list[int] = []
    depth = 0
    while len(picked) < min(count, len(labels)):
        for idx in per_class:
            if depth < len(idx) and len(picked) < count:
                picked.append(int(idx[depth]))
        depth += 1
    return np.array(picked, dtype=np.int64)


def probe_inputs(dataset, indices: np.ndarray, kind: str) -> np.ndarray:
    """What a figure shows for each probe: the original uint8 images, or the (S, N, 3) points the model saw."""
    if kind == "image" and getattr(dataset, "images", None) is not None:
        return np.asarray(dataset.images[indices], dtype=np.uint8)
    # point clouds: the evaluation tokens are the normalised points themselves (xyz channels)
    return np.stack([np.asarray(dataset[int(i)][0], dtype=np.float32)[:, :3] for i in indices])


@torch.no_grad()
def capture(model, dataset, indices: np.ndarray, *, epoch: int, bundle, device: torch.device,
            pos: torch.Tensor | None) -> AttentionSnapshot:
    was_training = model.training
    model.eval()
    xs, ys = zip(*(dataset[int(i)] for i in indices))
    x = torch.stack([torch.as_tensor(v) for v in xs]).to(device)
    logits, attn = model(x, pos, return_attention=True)
    model.train(was_training)
    probs = torch.softmax(logits.float(), dim=-1)
    cross = np.stack([a.float().cpu().numpy() for a in attn["cross"]])  # (stages, S, heads, M, N)
    self_ = None
    if attn["self"] and attn["self"][0]:
        self_ = np.stack([np.stack([a.float().cpu().numpy() for a in stage]) for stage in attn["self"]])
    perm = bundle.permutation.cpu().numpy() if bundle.permutation is not None else None
    return AttentionSnapshot(
        epoch=epoch, kind=bundle.kind, cross=cross, self_=self_,
        inputs=probe_inputs(dataset, indices, bundle.kind),
        labels=np.array(ys, dtype=np.int64), preds=probs.argmax(-1).cpu().numpy(),
        probs=probs.cpu().numpy(), sample_indices=np.asarray(indices, dtype=np.int64),
        class_names=list(bundle.class_names),
        image_shape=tuple(bundle.image_shape) if bundle.image_shape is not None else None, permutation=perm,
    )


def heatmaps(snap: AttentionSnapshot) -> dict[str, np.ndarray]:
    """TensorBoard images (N, 1, H, W) in [0, 1]: cross-attention of stage 1, averaged over heads and latents."""
    if snap.kind == "image" and snap.image_shape is not None:
        maps = snap.cross_as_image(0).mean(axis=(1, 2))  # (S, H, W)
        out = {"attention/cross_stage1_mean": _normalise(maps)[:, None]}
        out["attention/inputs"] = (snap.inputs.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
        return out
    maps = snap.cross[0].astype(np.float32).mean(axis=1)  # (S, M, N): latents x points
    return {"attention/cross_stage1_latents_x_points": _normalise(maps)[:, None]}


def _normalise(maps: np.ndarray) -> np.ndarray:
    lo = maps.min(axis=tuple(range(1, maps.ndim)), keepdims=True)
    hi = maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True)
    return (maps - lo) / np.maximum(hi - lo, 1e-12)
