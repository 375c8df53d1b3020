"""attention/epoch_XXXX.npz: the attention maps of the probe samples at one epoch (`AttentionSnapshot`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DamagedFileError, RunDirError
from .files import atomic_write

ATTENTION_PATTERN = "epoch_{:04d}.npz"


@dataclass
class AttentionSnapshot:
    """The attention maps of the probe samples at one epoch, as read back from ``attention/epoch_XXXX.npz``.

    Arrays (S probe samples, M latents, N input tokens in the order the model saw them):
      cross:  (stages, S, cross_heads, M, N)
      self_:  (stages, blocks, S, heads, M, M), or None when the model has no latent blocks
      inputs: images (S, H, W, C) uint8 for image runs; points (S, N, 3) float32 for point clouds
    """

    epoch: int
    kind: str  # "image" | "pointcloud"
    cross: np.ndarray
    self_: np.ndarray | None
    inputs: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    probs: np.ndarray
    sample_indices: np.ndarray
    class_names: list[str]
    image_shape: tuple[int, ...] | None = None
    permutation: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_stages(self) -> int:
        return self.cross.shape[0]

    def non_finite(self) -> tuple[int, int]:
        """(attention weights that are NaN or infinite, all of them), cross and self together."""
        arrays = [a for a in (self.cross, self.self_) if a is not None]
        return (sum(int(np.size(a) - np.count_nonzero(np.isfinite(a))) for a in arrays),
                sum(int(np.size(a)) for a in arrays))

    def cross_in_input_order(self, stage: int = 0) -> np.ndarray:
        """Cross-attention of one stage with the token axis in original input order: (S, heads, M, N).

        For permuted-pixel runs token ``i`` is pixel ``permutation[i]``, so scattering through the permutation
        lines the map up with the picture again.
        """
        attn = self.cross[stage].astype(np.float32)
        if self.permutation is None:
            return attn
        out = np.empty_like(attn)
        out[..., self.permutation] = attn
        return out

    def cross_as_image(self, stage: int = 0) -> np.ndarray:
        """Cross-attention reshaped onto the image grid: (S, heads, M, H, W). Image runs only."""
        if self.kind != "image" or self.image_shape is None:
            raise ValueError("cross_as_image needs an image run; point clouds have no grid")
        h, w = self.image_shape[:2]
        attn = self.cross_in_input_order(stage)
        return attn.reshape(*attn.shape[:-1], h, w)  # (S, heads, M, H, W)


def save_attention(path: str | os.PathLike, snap: AttentionSnapshot) -> None:
    arrays = {
        "epoch": np.int64(snap.epoch),
        "kind": np.array(snap.kind),
        # float16 halves the size; attention weights need ~3 significant digits for the figures
        "cross": snap.cross.astype(np.float16),
        "inputs": snap.inputs,
        "labels": snap.labels.astype(np.int64),
        "preds": snap.preds.astype(np.int64),
        "probs": snap.probs.astype(np.float32),
        "sample_indices": snap.sample_indices.astype(np.int64),
        "class_names": np.array(snap.class_names),
    }
    if snap.self_ is not None:
        arrays["self"] = snap.self_.astype(np.float16)
    if snap.image_shape is not None:
        arrays["image_shape"] = np.array(snap.image_shape, dtype=np.int64)
    if snap.permutation is not None:
        arrays["permutation"] = snap.permutation.astype(np.int64)
    for k, v in snap.extra.items():
        arrays[f"extra_{k}"] = np.asarray(v)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_attention(path: str | os.PathLike) -> AttentionSnapshot:
    """Read one attention file; a damaged one raises `DamagedFileError` naming it (visualizers skip it)."""
    bad = "not a readable attention file"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":  # np.load would try unpickling anything that is not a zip or .npy file
            what = "it starts with other bytes" if head else "it is empty"
            raise DamagedFileError(path, f"{bad}: not an .npz archive ({what})")
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist; train with --save_attention_maps to write attention files") from None
    except DamagedFileError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, OSError: a damaged file
        raise DamagedFileError(path, f"{bad}: {type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
    try:
        snap = AttentionSnapshot(
            epoch=int(d["epoch"]),
            kind=str(d["kind"]),
            cross=d["cross"],
            self_=d.get("self"),
            inputs=d["inputs"],
            labels=d["labels"],
            preds=d["preds"],
            probs=d["probs"],
            sample_indices=d["sample_indices"],
            class_names=[str(c) for c in d["class_names"]],
            image_shape=tuple(int(v) for v in d["image_shape"]) if "image_shape" in d else None,
            permutation=d.get("permutation"),
            extra={k[len("extra_"):]: v for k, v in d.items() if k.startswith("extra_")},
        )
    except KeyError as e:
        raise DamagedFileError(path, f"{bad}: it lacks the array {e}; it was not written by this version of "
                                     f"train.py") from None
    except (TypeError, ValueError) as e:
        raise DamagedFileError(path, f"{bad}: {type(e).__name__}: {e}") from None
    samples = len(snap.labels)
    if (snap.cross.ndim != 5 or snap.cross.shape[1] != samples or len(snap.inputs) != samples
            or (snap.self_ is not None and (snap.self_.ndim != 6 or snap.self_.shape[2] != samples))):
        raise DamagedFileError(path, f"{bad}: cross-attention {snap.cross.shape}, inputs {snap.inputs.shape} and "
                                     f"{samples} labels do not fit (stages, samples, heads, latents, tokens)")
    problem = shape_problem(snap)
    if problem:
        raise DamagedFileError(path, f"its arrays do not fit together: {problem}")
    return snap


def shape_problem(snap: AttentionSnapshot) -> str | None:
    """What makes a readable snapshot's arrays inconsistent (a figure could not be drawn from it), or None."""
    n, latents = snap.cross.shape[-1], snap.cross.shape[-2]
    if snap.kind == "image":
        shape = snap.image_shape
        if shape is None or len(shape) != 3 or min(shape) < 1:
            return f"an image run's file without a valid image shape ({shape})"
        h, w = shape[:2]
        if n != h * w:
            return f"cross-attention over {n} positions for a {h}x{w} image ({h * w} pixels)"
        if snap.inputs.ndim == 4 and tuple(snap.inputs.shape[1:]) != tuple(shape):
            return f"probe images {tuple(snap.inputs.shape[1:])} for an image shape {tuple(shape)}"
    elif snap.kind == "pointcloud":
        if snap.inputs.ndim != 3 or snap.inputs.shape[1] != n or snap.inputs.shape[2] < 3:
            return f"cross-attention over {n} positions for probe clouds {tuple(snap.inputs.shape)}"
    else:
        return f"unknown kind {snap.kind!r}"
    if snap.permutation is not None and (snap.permutation.shape != (n,) or not np.array_equal(
            np.sort(snap.permutation), np.arange(n))):
        return f"a pixel permutation of shape {snap.permutation.shape} that is not one of {n} positions"
    if snap.self_ is not None and snap.self_.shape[-2:] != (latents, latents):
        return f"self-attention {snap.self_.shape[-2:]} between {latents} latents"
    classes = len(snap.class_names)
    if snap.probs.shape not in ((len(snap.labels), classes), (len(snap.labels),)):
        return f"probabilities {snap.probs.shape} for {len(snap.labels)} samples of {classes} classes"
    if len(snap.preds) != len(snap.labels) or (len(snap.preds) and not (
            0 <= snap.preds.min() and snap.preds.max() < classes and -1 <= snap.labels.min()
            and snap.labels.max() < classes)):
        return f"labels or predictions outside the {classes} classes"
    return None


