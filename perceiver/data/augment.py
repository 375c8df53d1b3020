"""Image augmentation policies of torchvision (TrivialAugment, RandAugment, AutoAugment's CIFAR-10 policy) applied
to the uint8 `(H, W, C)` images of `ImageTokens` before they become tokens.

The policies draw their operations and magnitudes from torch's global RNG, like `random_crop_flip`, so each
DataLoader worker (seeded per epoch by the trainer) augments differently and a run is reproducible from its seed.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from . import AUTO_AUGMENT


class AutoAugment:
    """Callable `(H, W, C) uint8 -> (H, W, C) uint8` applying one of torchvision's policies per image.

    `trivial`: TrivialAugmentWide (one random op, random magnitude); `randaugment`: RandAugment with `num_ops` ops at
    `magnitude` (0..30; None = torchvision's 2 and 9); `autoaugment`: the AutoAugment policy searched on CIFAR-10.
    Pixels an op moves in from outside the image (rotate, shear, translate) are filled with 0, like the canvas of
    `random_crop_flip`.
    """

    def __init__(self, name: str, *, num_ops: int | None = None, magnitude: int | None = None):
        if name == "trivial":
            policy = v2.TrivialAugmentWide()
        elif name == "randaugment":
            given = {"num_ops": num_ops, "magnitude": magnitude}
            policy = v2.RandAugment(**{k: v for k, v in given.items() if v is not None})
        elif name == "autoaugment":
            policy = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
        else:
            raise ValueError(f"unknown augmentation policy {name!r}; choose one of {', '.join(AUTO_AUGMENT[1:])}")
        self.name = name
        self.policy = policy

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ValueError(f"expected a uint8 (H, W, C) image, got {image.dtype} {tuple(image.shape)}")
        out = self.policy(image.permute(2, 0, 1))  # torchvision works on (C, H, W)
        return out.permute(1, 2, 0)  # (H, W, C)

    def __repr__(self) -> str:
        return f"AutoAugment({self.name!r})"
