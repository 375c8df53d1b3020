"""A data path that lives on the accelerator: a whole split uploaded once, each batch drawn, augmented and
normalised there, with no worker processes and no per-sample Python.

    batches = DeviceBatches(dataset, sampler=sampler, batch_size=64, device=torch.device("cuda"))
    batches.seed_epoch(seed * 100_003 + epoch)
    for x, y in batches: ...        # x (B, N, C) float32 on the device, y (B,) int64

It serves the same samples in the same order as the DataLoader path (both iterate the same sampler) and draws the
same augmentations from the same distributions: images, a crop of the zero-padded image and a horizontal flip
with probability 1/2 (`perceiver.data.images.random_crop_flip`); point clouds, a random K-point subset in
training, per-axis scaling, rotation about the up axis and jitter (`perceiver.data.points.augment_cloud`). Each
batch's randomness comes from a generator seeded by (epoch seed, batch number), so a resumed epoch replays its
batches exactly; the values differ from the DataLoader path's, whose workers draw from torch's global generator.

`device_data_reason` says why a dataset cannot take this path (a torchvision augmentation policy, a dataset type
it does not know); the trainer then keeps the DataLoader.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from .images import ImageTokens
from .points import SCALE_RANGE, PointClouds


def _unwrap(dataset) -> tuple[object, torch.Tensor | None]:
    """(the underlying dataset, the indices a Subset selects or None)."""
    if isinstance(dataset, Subset):
        return dataset.dataset, torch.as_tensor(dataset.indices, dtype=torch.long)
    return dataset, None


def device_data_reason(dataset) -> str | None:
    """None when `DeviceBatches` can serve ``dataset``, else why not."""
    base, _ = _unwrap(dataset)
    if type(base) not in (ImageTokens, PointClouds):
        return f"{type(base).__name__} is not an image or point-cloud dataset of this package"
    policy = getattr(base, "policy", None)
    if policy is not None and getattr(base, "augment", False):
        return f"the augmentation policy {type(policy).__name__} runs per image on the CPU"
    return None


def nbytes(dataset) -> int:
    base, idx = _unwrap(dataset)
    arr = base.images if isinstance(base, ImageTokens) else base.points
    per_item = arr[0].nbytes if len(arr) else 0
    return per_item * (len(idx) if idx is not None else len(arr))


class DeviceBatches:
    def __init__(self, dataset, *, sampler, batch_size: int, device: torch.device, drop_last: bool = False):
        reason = device_data_reason(dataset)
        if reason:
            raise ValueError(f"the device data path cannot serve this dataset: {reason}")
        base, idx = _unwrap(dataset)
        self.sampler, self.batch_size, self.device, self.drop_last = sampler, batch_size, device, drop_last
        self.labels = torch.as_tensor(base.labels if idx is None else base.labels[idx.numpy()]).to(device)
        self.epoch_seed = 0
        if isinstance(base, ImageTokens):
            images = base.images if idx is None else base.images[idx.numpy()]
            self.data = torch.as_tensor(images).to(device)  # (n, H, W, C) uint8
            self.scale, self.shift = base._scale.to(device), base._shift.to(device)
            self.permutation = base.permutation.to(device) if base.permutation is not None else None
            self.pad = base.pad if base.augment else None
            self.kind = "image"
        else:
            points = base.points if idx is None else base.points[idx.numpy()]
            self.data = torch.as_tensor(points).to(device)  # (n, P, 3) float32
            self.num_points, self.eval_index = base.num_points, base.eval_index.to(device)
            self.train, self.augment = base.train, base.train and base.augment
            self.rotate, self.jitter = base.rotate, base.jitter
            self.kind = "pointcloud"

    def seed_epoch(self, seed: int) -> None:
        self.epoch_seed = int(seed)

    def __len__(self) -> int:
        return (len(self.sampler) // self.batch_size if self.drop_last
                else math.ceil(len(self.sampler) / self.batch_size))

    def __iter__(self):
        order = list(self.sampler)
        first = getattr(self.sampler, "skip", 0) // self.batch_size  # batch number of a resumed epoch's first
        for k in range(0, len(self) * self.batch_size, self.batch_size):
            idx = torch.tensor(order[k:k + self.batch_size], dtype=torch.long).to(self.device, non_blocking=True)
            gen = torch.Generator(device=self.device)
            gen.manual_seed(self.epoch_seed * 1_000_003 + first + k // self.batch_size)
            x = self._images(idx, gen) if self.kind == "image" else self._points(idx, gen)
            yield x, self.labels[idx]

    # ---------------------------------------------------------------------------------------------------- images
    def _images(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        images = self.data[idx]  # (B, H, W, C) uint8
        b, h, w, c = images.shape
        if self.pad is not None:
            images = crop_flip(images, pad=self.pad, generator=gen)
        x = images.reshape(b, h * w, c).float() * self.scale + self.shift  # (B, H*W, C), row-major pixels
        return x[:, self.permutation] if self.permutation is not None else x

    # ---------------------------------------------------------------------------------------------- point clouds
    def _points(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        clouds = self.data[idx]  # (B, P, 3)
        b, stored, _ = clouds.shape
        if not self.train:
            clouds = clouds[:, self.eval_index]  # (B, K, 3)
        elif self.num_points < stored:
            pick = torch.rand(b, stored, generator=gen, device=self.device).argsort(dim=1)[:, :self.num_points]
            clouds = clouds.gather(1, pick[..., None].expand(-1, -1, 3))  # (B, K, 3)
        if self.augment:
            clouds = augment_clouds(clouds, rotate=self.rotate, jitter=self.jitter, generator=gen)
        centred = clouds - clouds.mean(dim=1, keepdim=True)
        radius = centred.norm(dim=2).amax(dim=1)  # (B,)
        return centred / radius.clamp_min(1e-12)[:, None, None]


def crop_flip(images: torch.Tensor, *, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Per image: a random H x W crop of the zero-padded image, then a left-right flip with probability 1/2.

    images: (B, H, W, C), any dtype; the crop offsets are uniform in 0..2*pad per axis, as `random_crop_flip`.
    """
    b, h, w, _ = images.shape
    dev = images.device
    if pad > 0:
        padded = F.pad(images, (0, 0, pad, pad, pad, pad))  # (B, H + 2 pad, W + 2 pad, C)
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (B, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]  # (B, 1, W)
        images = padded[torch.arange(b, device=dev)[:, None, None], rows, cols]  # (B, H, W, C)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(2), images)


def augment_clouds(clouds: torch.Tensor, *, rotate: bool, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """`perceiver.data.points.augment_cloud` for a batch (B, K, 3): scaling, rotation about +y, jitter."""
    b, dev = clouds.shape[0], clouds.device
    low, high = SCALE_RANGE
    clouds = clouds * (low + (high - low) * torch.rand(b, 1, 3, generator=generator, device=dev))
    if rotate:
        angle = torch.rand(b, generator=generator, device=dev) * 2 * math.pi
        c, s, zero, one = angle.cos(), angle.sin(), torch.zeros(b, device=dev), torch.ones(b, device=dev)
        rotation = torch.stack([torch.stack([c, zero, -s], -1), torch.stack([zero, one, zero], -1),
                                torch.stack([s, zero, c], -1)], dim=1)  # (B, 3, 3), the x-z plane
        clouds = clouds @ rotation
    if jitter > 0:
        clouds = clouds + jitter * torch.randn(clouds.shape, generator=generator, device=dev)
    return clouds
