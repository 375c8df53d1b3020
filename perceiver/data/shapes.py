"""Built-in toy datasets generated in memory from the seed, for smoke runs and tests without any download.

- `shapes2d`: 32x32 RGB images of 10 drawn shapes (random size and position, random
  colours with the shape brighter than the background, pixel noise), served exactly like CIFAR-10 (1024 RGB tokens, grid positions, optional pixel permutation); `masks` records each shape's pixels.
- `shapes3d`: point clouds sampled on the surfaces of 10 solids (random anisotropic scale and 3-D rotation),
  served like ModelNet40 (centred, unit sphere, xyz tokens).

Train and test come from two independent streams of `np.random.SeedSequence(seed)`, so both are deterministic for
a seed and never share samples by construction. Classes are balanced (sizes differ by at most one). The samples
are already randomised, so no training augmentation is applied on top.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import DataBundle, DataSettings
from .images import ImageTokens, image_bundle_fields
from .points import PointClouds, pointcloud_bundle_fields

IMAGE_SIZE = 32
# Geometry: shapes 10 to 20 px across, anywhere in the frame (wholly inside it). The quick start's 16-latent,
# 64-wide Perceiver learns this in a minute on one CPU thread (docs/RESULTS.md).
HALF_SIZE_RANGE = (5.0, 10.0)  # shape half-extent in pixels
CENTRE_JITTER = 16.0  # the shape's centre lies within this many pixels of the image centre (per axis)
# Per-channel colour ranges: any hue, but the shape is always brighter than its background by at least 96 levels
# per channel. That makes "is this pixel part of the object?" a property of the pixel itself; with unrestricted
# colours a model has to compare each pixel with the background first, and a small one stays at chance.
BACKGROUND_RANGE = (0, 80)
FOREGROUND_RANGE = (176, 255)
NOISE_STD = 12.0  # gaussian pixel noise, in 0..255 units
SCALE_RANGE_3D = (0.8, 1.25)  # per-axis scaling of the solids: anisotropic but moderate


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    train, test = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(train), np.random.default_rng(test)


def _balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------- 2-D
# Inside-tests on (u, v): pixel offsets from the shape's centre in units of its half-size, u to the right and
# v downwards, so every shape fits in the box |u|, |v| <= 1. All are mirror-symmetric left-right.
def _box(u, v):
    return np.maximum(np.abs(u), np.abs(v))


SHAPES2D: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u ** 2 + v ** 2 <= 1.0,
    "square": lambda u, v: _box(u, v) <= 0.8,
    "triangle": lambda u, v: (v <= 0.8) & (np.abs(u) <= (v + 1.0) / 2.0),  # apex up, base 1.8 wide
    "x_cross": lambda u, v: (np.minimum(np.abs(u - v), np.abs(u + v)) <= 0.45) & (_box(u, v) <= 1.0),
    "ring": lambda u, v: (u ** 2 + v ** 2 <= 1.0) & (u ** 2 + v ** 2 >= 0.5 ** 2),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "horizontal_bar": lambda u, v: (np.abs(v) <= 0.3) & (np.abs(u) <= 1.0),
    "vertical_bar": lambda u, v: (np.abs(u) <= 0.3) & (np.abs(v) <= 1.0),
    "plus": lambda u, v: ((np.abs(u) <= 0.3) | (np.abs(v) <= 0.3)) & (_box(u, v) <= 1.0),
    "frame": lambda u, v: (_box(u, v) <= 1.0) & (_box(u, v) >= 0.55),
}


def generate_shapes2d(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n images: uint8 (n, 32, 32, 3), bool masks (n, 32, 32) of the shape's pixels, int64 labels (n,)."""
    labels = _balanced_labels(rng, n, len(SHAPES2D))
    half = rng.uniform(*HALF_SIZE_RANGE, size=n).astype(np.float32)  # (n,)
    # centre (row, col) near the image centre, and far enough from the border that the whole shape is in the frame
    middle = (IMAGE_SIZE - 1) / 2
    low = np.maximum(half, middle - CENTRE_JITTER)[:, None]  # (n, 1)
    high = np.minimum(IMAGE_SIZE - 1 - half, middle + CENTRE_JITTER)[:, None]
    centre = rng.uniform(low, high, size=(n, 2)).astype(np.float32)  # (n, 2)
    pixel = np.arange(IMAGE_SIZE, dtype=np.float32)
    v = (pixel[None, :, None] - centre[:, 0, None, None]) / half[:, None, None]  # (n, H, 1)
    u = (pixel[None, None, :] - centre[:, 1, None, None]) / half[:, None, None]  # (n, 1, W)
    u, v = np.broadcast_arrays(u, v)  # (n, H, W) each
    masks = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for label, inside in enumerate(SHAPES2D.values()):
        idx = labels == label
        masks[idx] = inside(u[idx], v[idx])

    background = rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1, size=(n, 3))
    foreground = rng.integers(FOREGROUND_RANGE[0], FOREGROUND_RANGE[1] + 1, size=(n, 3))
    images = np.where(masks[..., None], foreground[:, None, None, :], background[:, None, None, :])  # (n, H, W, 3)
    images = images.astype(np.float32) + NOISE_STD * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), masks, labels


def build_shapes2d(data: DataSettings) -> DataBundle:
    """The shapes2d bundle for the `data` flags (shapes_train_size, shapes_test_size, permute_pixels[_seed])."""
    train_rng, test_rng = _streams(data.seed)
    train_images, train_masks, train_labels = generate_shapes2d(data.shapes_train_size, train_rng)
    test_images, test_masks, test_labels = generate_shapes2d(data.shapes_test_size, test_rng)
    pixels = train_images.reshape(-1, 3).astype(np.float32) / 255.0  # (n*H*W, 3)
    mean = tuple(float(m) for m in pixels.mean(axis=0))
    std = tuple(float(s) for s in pixels.std(axis=0))
    fields = image_bundle_fields(train_images, permute=data.permute_pixels, permute_seed=data.permute_pixels_seed)
    common = {"mean": mean, "std": std, "permutation": fields["permutation"], "augment": False}
    train = ImageTokens(train_images, train_labels, masks=train_masks, **common)
    test = ImageTokens(test_images, test_labels, masks=test_masks, **common)
    source = (f"built-in shapes2d generated in memory (seed {data.seed}): {len(train)} train / {len(test)} test "
              f"images")
    return DataBundle(name="shapes2d", train=train, test=test, num_classes=len(SHAPES2D),
                      class_names=list(SHAPES2D), mean=mean, std=std, source=source, **fields)


# ----------------------------------------------------------------------------------------------------------- 3-D
# Each sampler returns m clouds of p points (m, p, 3) on a canonical solid of extent about [-1, 1]^3, y up.
# Solids made of parts pick each point's part with probability proportional to the part's area, so the density
# is uniform over the surface (the torus, sampled in its angles, is slightly denser on the inner side).
def _sphere(rng, m, p):
    v = rng.standard_normal((m, p, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _disc(rng, m, p, *, y, radius=1.0):
    r = radius * np.sqrt(rng.random((m, p)))  # sqrt: uniform over the area, not the radius
    t = rng.uniform(0, 2 * np.pi, (m, p))
    return np.stack([r * np.cos(t), np.full((m, p), y), r * np.sin(t)], axis=-1)


def _tube(rng, m, p, *, y0, y1, radius=1.0):
    t = rng.uniform(0, 2 * np.pi, (m, p))
    return np.stack([radius * np.cos(t), rng.uniform(y0, y1, (m, p)), radius * np.sin(t)], axis=-1)


def _mix(rng, parts):
    """parts: [(area, (m, p, 3) points)]; each point is taken from one part, chosen in proportion to area."""
    areas = np.array([area for area, _ in parts], dtype=np.float64)
    stacked = np.stack([points for _, points in parts])  # (parts, m, p, 3)
    choice = rng.choice(len(parts), size=stacked.shape[1:3], p=areas / areas.sum())  # (m, p)
    return np.take_along_axis(stacked, choice[None, ..., None], axis=0)[0]  # (m, p, 3)


def _mesh(vertices, faces):
    """Sampler for a triangle mesh: area-weighted face, then a uniform point in it."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]  # (F, 3 corners, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)

    def sample(rng, m, p):
        t = tri[rng.choice(len(tri), size=(m, p), p=area / area.sum())]  # (m, p, 3, 3)
        a, b = rng.random((2, m, p, 1))
        fold = a + b > 1  # reflect the far half of the unit square onto the triangle: uniform barycentrics
        a, b = np.where(fold, 1 - a, a), np.where(fold, 1 - b, b)
        return t[..., 0, :] + a * (t[..., 1, :] - t[..., 0, :]) + b * (t[..., 2, :] - t[..., 0, :])

    return sample


def _cube(rng, m, p):
    points = rng.uniform(-1, 1, (m, p, 3))
    axis = rng.integers(0, 3, (m, p, 1))  # pin one coordinate to +-1: a point on one of the 6 equal faces
    np.put_along_axis(points, axis, rng.choice([-1.0, 1.0], size=(m, p, 1)), axis=-1)
    return points


def _cone(rng, m, p):
    t = np.sqrt(rng.random((m, p)))  # distance from the apex, as a fraction: uniform over the lateral area
    a = rng.uniform(0, 2 * np.pi, (m, p))
    lateral = np.stack([t * np.cos(a), 1 - 2 * t, t * np.sin(a)], axis=-1)
    return _mix(rng, [(np.sqrt(5) * np.pi, lateral), (np.pi, _disc(rng, m, p, y=-1.0))])


def _torus(rng, m, p, major=1.0, minor=0.35):
    a, b = rng.uniform(0, 2 * np.pi, (2, m, p))
    ring = major + minor * np.cos(b)
    return np.stack([ring * np.cos(a), minor * np.sin(b), ring * np.sin(a)], axis=-1)


def _capsule(rng, m, p):
    caps = 0.5 * _sphere(rng, m, p)
    caps[..., 1] += 0.5 * np.sign(caps[..., 1])  # split the sphere at the equator and pull the halves apart
    return _mix(rng, [(np.pi, _tube(rng, m, p, y0=-0.5, y1=0.5, radius=0.5)), (np.pi, caps)])


def _hemisphere(rng, m, p):
    dome = _sphere(rng, m, p)
    dome[..., 1] = np.abs(dome[..., 1])
    return _mix(rng, [(2 * np.pi, dome), (np.pi, _disc(rng, m, p, y=0.0))])


SHAPES3D: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "sphere": _sphere,
    "cube": _cube,
    "cylinder": lambda rng, m, p: _mix(rng, [(4 * np.pi, _tube(rng, m, p, y0=-1.0, y1=1.0)),
                                             (np.pi, _disc(rng, m, p, y=1.0)), (np.pi, _disc(rng, m, p, y=-1.0))]),
    "cone": _cone,
    "torus": _torus,
    "pyramid": _mesh([(-1, -1, -1), (1, -1, -1), (1, -1, 1), (-1, -1, 1), (0, 1, 0)],
                     [(0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 0, 4), (0, 1, 2), (0, 2, 3)]),
    "capsule": _capsule,
    "octahedron": _mesh([(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)],
                        [(x, y, z) for x in (0, 1) for y in (2, 3) for z in (4, 5)]),
    "hemisphere": _hemisphere,
    "tetrahedron": _mesh([(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)],
                         [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]),
}


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniformly random 3-D rotations (n, 3, 3), from normalised gaussian quaternions."""
    q = rng.standard_normal((n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=1)  # (n, 3 rows, 3 cols)


def generate_shapes3d(n: int, num_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n clouds float32 (n, num_points, 3), centred and inside the unit sphere, and int64 labels (n,)."""
    labels = _balanced_labels(rng, n, len(SHAPES3D))
    points = np.empty((n, num_points, 3))
    for label, sampler in enumerate(SHAPES3D.values()):
        idx = np.flatnonzero(labels == label)
        points[idx] = sampler(rng, len(idx), num_points)
    points *= rng.uniform(*SCALE_RANGE_3D, size=(n, 1, 3))  # scale along the solid's own axes, then rotate
    points = np.einsum("npj,nij->npi", points, _random_rotations(rng, n))  # p' = R p for every point
    points -= points.mean(axis=1, keepdims=True)
    points /= np.linalg.norm(points, axis=-1).max(axis=1)[:, None, None]
    return points.astype(np.float32), labels


def build_shapes3d(data: DataSettings) -> DataBundle:
    """The shapes3d bundle for the `data` flags (shapes_train_size, shapes_test_size, shapes_num_points)."""
    train_rng, test_rng = _streams(data.seed)
    k = data.shapes_num_points
    # every stored point is used (K == P), so training items are as deterministic as the test ones
    train = PointClouds(*generate_shapes3d(data.shapes_train_size, k, train_rng), num_points=k, train=True)
    test = PointClouds(*generate_shapes3d(data.shapes_test_size, k, test_rng), num_points=k, train=False)
    source = (f"built-in shapes3d generated in memory (seed {data.seed}): {len(train)} train / {len(test)} test "
              f"clouds of {k} points")
    return DataBundle(name="shapes3d", train=train, test=test, num_classes=len(SHAPES3D),
                      class_names=list(SHAPES3D), source=source, **pointcloud_bundle_fields(k))
