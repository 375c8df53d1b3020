"""Point clouds as token sets: unit-sphere normalisation, training augmentation, and the `PointClouds` dataset
shared by ModelNet40 and shapes3d.

Every cloud a model sees is centred on its centroid and scaled so its farthest point lies on the unit sphere,
so the xyz channels double as positions in [-1, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

# Anisotropic scaling range per axis (as PointNet++/DGCNN-style training): mild enough to keep shapes recognisable.
SCALE_RANGE = (0.8, 1.25)


def normalize_cloud(points: torch.Tensor) -> torch.Tensor:
    """Centre (K, 3) points on their centroid and scale them into the unit sphere (farthest point at radius 1)."""
    centred = points - points.mean(dim=0, keepdim=True)
    radius = centred.norm(dim=1).max()
    return centred / radius.clamp_min(1e-12)  # a degenerate single-point cloud stays at the origin


def augment_cloud(points: torch.Tensor, *, rotate: bool = False, jitter: float = 0.0) -> torch.Tensor:
    """Random per-axis scaling, optional rotation about the up axis (+y), optional gaussian jitter; (K, 3)."""
    low, high = SCALE_RANGE
    points = points * torch.empty(3).uniform_(low, high)
    if rotate:
        angle = torch.rand(()).item() * 2 * math.pi
        c, s = math.cos(angle), math.sin(angle)
        # rotation in the x-z plane leaves y (up) alone
        rotation = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
        points = points @ rotation
    if jitter > 0:
        points = points + jitter * torch.randn_like(points)
    return points


class PointClouds(Dataset):
    """Clouds (n, P, 3) served as K-point float32 tokens (K, 3), normalised into the unit sphere.

    Training (`train=True`) draws a fresh random K-subset per call (all P points, in stored order, when K == P);
    evaluation uses one fixed seeded K-subset for every shape, so it is deterministic. Augmentation applies only
    when `train and augment`. Raw data stays accessible as `points` (n, P, 3) float32 and `labels` (n,) int64.
    Randomness comes from torch's global RNG so that each DataLoader worker draws its own.
    """

    def __init__(self, points: np.ndarray, labels: np.ndarray, *, num_points: int, train: bool,
                 augment: bool = False, rotate: bool = False, jitter: float = 0.0, eval_seed: int = 0):
        if points.ndim != 3 or points.shape[2] != 3 or len(points) != len(labels):
            raise ValueError(f"expected points (n, P, 3) and n labels, got {points.shape} and {len(labels)} labels")
        if not 1 <= num_points <= points.shape[1]:
            raise ValueError(f"num_points must be in 1..{points.shape[1]}, got {num_points}")
        self.points = np.ascontiguousarray(points, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_points = num_points
        self.train = train
        self.augment = augment
        self.rotate = rotate
        self.jitter = jitter
        stored = points.shape[1]
        # sorted, so that K == P gives the identity and a subset keeps the stored point order
        generator = torch.Generator().manual_seed(eval_seed)
        self.eval_index = torch.randperm(stored, generator=generator)[:num_points].sort().values

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        cloud = torch.from_numpy(self.points[index])  # (P, 3)
        stored = cloud.shape[0]
        if not self.train:
            cloud = cloud[self.eval_index]  # (K, 3)
        elif self.num_points < stored:
            cloud = cloud[torch.randperm(stored)[:self.num_points]]  # (K, 3)
        if self.train and self.augment:
            cloud = augment_cloud(cloud, rotate=self.rotate, jitter=self.jitter)
        return normalize_cloud(cloud), int(self.labels[index])


def pointcloud_bundle_fields(num_points: int) -> dict:
    """The DataBundle fields shared by every point-cloud dataset."""
    return {
        "kind": "pointcloud", "num_tokens": num_points, "in_channels": 3, "pos_dim": 3, "positions": None,
        "image_shape": None, "permutation": None, "mean": None, "std": None,
    }
