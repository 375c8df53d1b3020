"""Batch-level augmentations on token batches: mixup, cutmix, and the horizontal flip of test-time averaging.

Mixup (Zhang et al., ICLR 2018) blends two samples and their labels, ``lam * a + (1 - lam) * b`` with ``lam ~
Beta(alpha, alpha)``. CutMix (Yun et al., ICCV 2019) pastes a rectangle of one image into another and weights the
labels by area. Each batch is mixed with its own reversal. Tokens are images in (possibly permuted) pixel order,
so a rectangle is cut in image space and mapped to token positions through the permutation; a point cloud can be
mixed up (its tokens blended pairwise) but not cut.

    mix = BatchMix(num_classes=10, mixup_alpha=0.8, cutmix_alpha=1.0, image_shape=(32, 32), permutation=None)
    x, target = mix(x, y)          # target: (B, K) class probabilities for the cross-entropy

The mixing coefficients and boxes are drawn on the host (numpy's global generator, saved in checkpoints), so a
resumed run draws the same ones; no device value is read back.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class BatchMix:
    def __init__(self, *, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 image_shape: tuple[int, ...] | None = None, permutation: torch.Tensor | None = None):
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= prob <= 1:
            raise ValueError("mixup/cutmix alphas must be >= 0 and the probability in [0, 1]")
        if cutmix_alpha > 0 and image_shape is None:
            raise ValueError("cutmix needs images: a point cloud has no rectangle to cut")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha, self.prob = num_classes, mixup_alpha, cutmix_alpha, prob
        self.image_shape, self.permutation = image_shape, permutation  # token i shows pixel permutation[i]

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # one-hot by comparison: F.one_hot reads the labels' min and max back to the host on some devices
        target = (y[:, None] == torch.arange(self.num_classes, device=y.device)).to(torch.float32)  # (B, K)
        if np.random.rand() >= self.prob:
            return x, target
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or np.random.rand() < 0.5)
        if use_cutmix:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            mask, lam = self._box(lam, x.device)  # (N,) True inside the pasted rectangle
            x = torch.where(mask[None, :, None], x.flip(0), x)
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            x = x * lam + x.flip(0) * (1.0 - lam)
        return x, target * lam + target.flip(0) * (1.0 - lam)

    def _box(self, lam: float, device: torch.device) -> tuple[torch.Tensor, float]:
        """A rectangle of about (1 - lam) of the image, centred uniformly, clipped at the border; the mask over
        tokens and the exact share of the image left outside it."""
        h, w = self.image_shape[:2]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
        pixels = torch.zeros(h, w, dtype=torch.bool)
        pixels[y0:y1, x0:x1] = True
        mask = pixels.flatten()  # row-major pixel order
        if self.permutation is not None:
            mask = mask[self.permutation]  # token order
        return mask.to(device, non_blocking=True), 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def flip_index(image_shape: tuple[int, ...], permutation: torch.Tensor | None) -> torch.Tensor:
    """Token indices that mirror an image left-right: ``x[:, flip_index(...)]`` is the flipped image's tokens.

    Row-major pixel (r, c) becomes (r, W - 1 - c); with a permutation, token i shows pixel ``permutation[i]``, so
    token i of the flipped image is the token that showed the mirrored pixel.
    """
    h, w = image_shape[:2]
    mirrored = torch.arange(h * w).view(h, w).flip(1).flatten()  # pixel p of the flip shows pixel mirrored[p]
    if permutation is None:
        return mirrored
    token_of_pixel = torch.argsort(permutation)
    return token_of_pixel[mirrored[permutation]]
