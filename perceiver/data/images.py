"""Images as token sets: pixel grid positions, the fixed pixel permutation, crop/flip augmentation, and the
`ImageTokens` dataset shared by CIFAR-10 and shapes2d (the torchvision policies are in `augment.py`).

An image becomes `H*W` tokens of `C` channels in row-major pixel order; with a permutation, token `i` is
row-major pixel `permutation[i]`, and the positions are permuted the same way so each pixel keeps its position.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..position import grid_positions


def pixel_permutation(num_pixels: int, *, seed: int) -> torch.Tensor:
    """The fixed random pixel order for `seed`: long (num_pixels,), independent of any global RNG state."""
    return torch.randperm(num_pixels, generator=torch.Generator().manual_seed(seed))


def random_crop_flip(image: torch.Tensor, *, pad: int) -> torch.Tensor:
    """Random `H x W` crop of the zero-padded image, then a horizontal flip with probability 1/2.

    `image` is (H, W, C). Cropping a zero-padded image at offset (pad + dy, pad + dx) equals shifting the image by
    (-dy, -dx) into a zero canvas, which avoids allocating the padded copy. Uses torch's global RNG so that each
    DataLoader worker (seeded differently by torch) draws its own crops.
    """
    height, width = image.shape[:2]
    dy, dx = torch.randint(-pad, pad + 1, (2,)).tolist()
    out = torch.zeros_like(image)
    out[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)] = \
        image[max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)]
    if torch.rand(()) < 0.5:
        out = out.flip(1)
    return out


class ImageTokens(Dataset):
    """uint8 images (n, H, W, C) served as normalised float32 tokens (H*W, C), optionally augmented and permuted.

    With `augment`, each training item is randomly cropped (`pad` > 0) and flipped, then passed through `policy`
    (an `(H, W, C) -> (H, W, C)` uint8 callable such as `augment.AutoAugment`) when one is given; all of it happens
    on the image grid, before the tokens are permuted.

    The raw arrays stay accessible for probes and displays: `images` (n, H, W, C) uint8, `labels` (n,) int64, and
    `masks` (n, H, W) bool where the dataset knows where the object is (shapes2d).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, mean: tuple[float, ...], std: tuple[float, ...],
                 permutation: torch.Tensor | None = None, augment: bool = False, pad: int = 4,
                 policy: Callable[[torch.Tensor], torch.Tensor] | None = None, masks: np.ndarray | None = None):
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 images (n, H, W, C) and n labels, got {images.dtype} {images.shape} "
                             f"and {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.masks = masks
        self.permutation = permutation
        self.augment = augment
        self.pad = pad
        self.policy = policy
        # Normalising in [0, 1] units: x = (pixel / 255 - mean) / std, i.e. pixel * scale + shift.
        self._scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))
        self._shift = -torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index])  # (H, W, C) uint8
        if self.augment:
            image = random_crop_flip(image, pad=self.pad)
            if self.policy is not None:
                image = self.policy(image)  # (H, W, C) uint8
        channels = image.shape[-1]
        x = image.reshape(-1, channels).float() * self._scale + self._shift  # (H*W, C), row-major pixels
        if self.permutation is not None:
            x = x[self.permutation]  # (H*W, C): token i = pixel permutation[i]
        return x, int(self.labels[index])


def image_bundle_fields(images: np.ndarray, *, permute: bool, permute_seed: int) -> dict:
    """The DataBundle fields that follow from the image geometry: tokens, channels, positions, permutation."""
    _, height, width, channels = images.shape
    positions = grid_positions(height, width)  # built before permuting, then permuted with the pixels
    permutation = pixel_permutation(height * width, seed=permute_seed) if permute else None
    if permutation is not None:
        positions = positions[permutation]
    return {
        "kind": "image", "num_tokens": height * width, "in_channels": channels, "pos_dim": 2,
        "positions": positions, "image_shape": (height, width, channels), "permutation": permutation,
    }
