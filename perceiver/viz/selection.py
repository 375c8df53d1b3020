"""Pick one attention map out of an `AttentionSnapshot`: pure numpy, no matplotlib.

Selectors (the flags of `visualize_attention.py`) and their defaults:

* ``attention``: ``"cross"`` (latents attending to the input, one map per cross-attention stage) or ``"self"``
  (latents attending to latents, one map per latent block of a stage).
* ``stage``: cross-attention stage / stage of the latent blocks, default 0 (the first read of the raw input).
* ``block``: latent self-attention block within the stage, default -1 (the last, nearest the classifier).
* ``sample``: probe sample index, default 0.
* ``head``: an attention head, or ``None`` (default) for the mean over heads.
* ``latent``: the query row shown as a heatmap. ``"auto"`` (default) takes the **most concentrated latent**
  (lowest entropy of the head-reduced map for that sample), the latent that looks most clearly at something;
  ``"mean"`` averages the rows of all latents; an integer picks that latent.

Cross-attention is always returned in the original input order: for permuted-pixel runs the token axis is
scattered back through the stored permutation (`AttentionSnapshot.cross_in_input_order`), so heatmaps line up
with the picture.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PerceiverError
from ..rundir import AttentionSnapshot
from . import attention_stats as st


@dataclass
class AttentionView:
    """One head-reduced attention matrix and the row chosen from it, with the input it belongs to."""

    epoch: int
    kind: str  # "image" | "pointcloud"
    attention: str  # "cross" | "self"
    stage: int
    num_stages: int
    block: int | None  # self-attention block (None for cross)
    num_blocks: int | None
    sample: int
    head: int | None  # None = mean over heads
    num_heads: int
    latent: int | None  # None = mean over latents
    latent_rule: str  # "most concentrated" | "mean over latents" | "chosen"
    matrix: np.ndarray  # (M, N): rows = latents (queries); columns = input positions (cross) or latents (self)
    row: np.ndarray  # (N,) the selected latent's attention (or the mean row)
    image: np.ndarray | None  # (H, W, C) uint8 for image runs
    points: np.ndarray | None  # (N, 3) for point clouds
    image_shape: tuple | None
    permuted: bool
    label: int | None
    pred: int | None
    prob: float | None
    class_names: list

    @property
    def num_latents(self) -> int:
        return self.matrix.shape[0]

    @property
    def num_positions(self) -> int:
        return self.matrix.shape[1]

    @property
    def on_grid(self) -> bool:
        """True when the columns are image pixels (cross-attention of an image run)."""
        return self.attention == "cross" and self.kind == "image" and self.image_shape is not None

    def as_grid(self, values: np.ndarray) -> np.ndarray:
        h, w = self.image_shape[:2]
        return np.asarray(values).reshape(h, w)

    def class_name(self, idx: int | None) -> str:
        if idx is None:
            return "?"
        return self.class_names[idx] if 0 <= idx < len(self.class_names) else str(idx)

    def describe(self, short: bool = False) -> str:
        if self.attention == "cross":
            what = f"cross-attention, stage {self.stage + 1}/{self.num_stages}"
        else:
            what = (f"latent self-attention, stage {self.stage + 1}/{self.num_stages}, "
                    f"block {self.block + 1}/{self.num_blocks}")
        head = "mean of heads" if self.head is None else f"head {self.head}"
        if self.latent is None:
            lat = "mean of latents"
        elif self.latent_rule == "most concentrated":
            lat = f"latent {self.latent} (most concentrated)"
        else:
            lat = f"latent {self.latent}"
        return f"{what}; {head}; {lat}" if not short else f"{head}; {lat}"

    def sample_caption(self) -> str:
        pred = self.class_name(self.pred)
        conf = f" ({self.prob:.0%})" if self.prob is not None else ""
        if self.label is None or self.label < 0:  # an input without a label (perceiver.predict)
            return f"pred: {pred}{conf}"
        ok = "correct" if self.label == self.pred else "wrong"
        return f"true: {self.class_name(self.label)} · pred: {pred}{conf} · {ok}"


def _index(value: int, size: int, what: str, flag: str) -> int:
    if not -size <= value < size:
        raise PerceiverError(f"{flag} {value} is out of range: the attention file holds {size} {what} "
                             f"(0-{size - 1})")
    return value % size


def parse_head(text: str | int | None) -> int | None:
    if text is None or (isinstance(text, str) and text.lower() in ("mean", "avg", "all")):
        return None
    return int(text)


def parse_latent(text: str | int | None) -> str | int:
    if text is None:
        return "auto"
    if isinstance(text, str) and text.lower() in ("auto", "mean"):
        return text.lower()
    return int(text)


def attention_tensor(snap: AttentionSnapshot, attention: str, stage: int, block: int | None):
    """(S, heads, M, N) weights of one stage (cross, input order) or one block (self), plus resolved indices."""
    if attention == "cross":
        stage = _index(stage, snap.cross.shape[0], "cross-attention stages", "--stage")
        return snap.cross_in_input_order(stage), stage, None, None
    if attention != "self":
        raise PerceiverError(f"unknown attention kind {attention!r}; use cross or self")
    if snap.self_ is None or snap.self_.size == 0:
        raise PerceiverError(f"epoch {snap.epoch}: this run saved no latent self-attention (the model has no "
                             f"latent blocks); use --attention cross")
    stage = _index(stage, snap.self_.shape[0], "self-attention stages", "--stage")
    nb = snap.self_.shape[1]
    block = _index(-1 if block is None else block, nb, "latent blocks per stage", "--block")
    return snap.self_[stage, block].astype(np.float32), stage, block, nb


def select_view(snap: AttentionSnapshot, *, attention: str = "cross", stage: int = 0, block: int | None = -1,
                sample: int = 0, head: int | None = None, latent: str | int = "auto") -> AttentionView:
    """Reduce a snapshot to one (M, N) matrix and one row; see the module docstring for the selectors."""
    weights, stage, block, nb = attention_tensor(snap, attention, stage, block)
    s_count = weights.shape[0]
    sample = _index(sample, s_count, "probe samples", "--sample")
    per_head = weights[sample]  # (heads, M, N)
    n_heads = per_head.shape[0]
    if head is None:
        matrix = per_head.astype(np.float64).mean(0)
    else:
        head = _index(head, n_heads, "heads", "--head")
        matrix = per_head[head].astype(np.float64)
    matrix = st.normalize(matrix, -1)

    latent = parse_latent(latent)
    if latent == "auto":
        idx, rule = st.most_concentrated(matrix), "most concentrated"
    elif latent == "mean":
        idx, rule = None, "mean over latents"
    else:
        idx, rule = _index(latent, matrix.shape[0], "latents", "--latent"), "chosen"
    row = matrix.mean(0) if idx is None else matrix[idx]

    image = points = None
    if snap.kind == "image":
        img = np.asarray(snap.inputs[sample])
        image = img if img.ndim == 3 else img[..., None]
    else:
        points = np.asarray(snap.inputs[sample], dtype=np.float32)[:, :3]

    def _item(arr, cast):
        try:
            return cast(np.asarray(arr)[sample])
        except (IndexError, TypeError, ValueError):
            return None

    pred = _item(snap.preds, int)
    prob = None
    try:
        probs = np.asarray(snap.probs)[sample]
        prob = float(probs[pred]) if probs.ndim == 1 and pred is not None else float(probs)
    except (IndexError, TypeError, ValueError):
        prob = None
    return AttentionView(
        epoch=snap.epoch, kind=snap.kind, attention=attention, stage=stage,
        num_stages=(snap.cross.shape[0] if attention == "cross" else snap.self_.shape[0]),
        block=block, num_blocks=nb, sample=sample, head=head, num_heads=n_heads, latent=idx, latent_rule=rule,
        matrix=matrix, row=row, image=image, points=points, image_shape=snap.image_shape,
        permuted=snap.permutation is not None, label=_item(snap.labels, int), pred=pred, prob=prob,
        class_names=list(snap.class_names),
    )


def figure_tag(attention: str, stage: int, block: int | None, sample: int, num_blocks: int | None = None) -> str:
    """File-name tag for non-default selections ('' for cross-attention, stage 0, sample 0)."""
    tag = ""
    if attention == "self":
        tag += "_self"
        if stage != 0 or (block is not None and num_blocks is not None and block != num_blocks - 1):
            tag += f"_stage{stage}_block{block}"
    elif stage != 0:
        tag += f"_stage{stage}"
    if sample != 0:
        tag += f"_sample{sample}"
    return tag
