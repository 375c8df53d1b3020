"""Dataset registry: the `DataBundle` contract, the `data` command-line flags, `DataSettings` and `build_dataset`.

Every dataset yields `(x, label)` with `x` a float32 `(N, C)` token array (one token per pixel or per point) and
`label` an int; the bundle carries everything else a model or a visualizer needs (positions, permutation,
normalisation statistics, class names). The loaders live in `cifar10.py`, `modelnet40.py` and `shapes.py`.
"""

from __future__ import annotations

import argparse
import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

DATASETS = ("cifar10", "modelnet40", "shapes2d", "shapes3d")
POINT_CLOUD_DATASETS = ("modelnet40", "shapes3d")
AUTO_AUGMENT = ("none", "trivial", "randaugment", "autoaugment")  # torchvision policies, see augment.py

# Per-dataset training defaults that train.py reads when its own flags are left unset. CIFAR-10 and ModelNet40
# follow the paper; the built-in sets are sized for a CPU smoke run (32x32 images need no more than the
# Nyquist frequency 16 = max_freq / 2; the unit-sphere toy solids need no fine detail).
DATASET_DEFAULTS: dict[str, dict] = {
    "cifar10": {"batch_size": 64, "fourier_bands": 16, "max_freq": 32.0},  # 16: measured better than 64 at 32x32
    "modelnet40": {"batch_size": 8, "fourier_bands": 64, "max_freq": 1120.0},
    "shapes2d": {"batch_size": 32, "fourier_bands": 16, "max_freq": 32.0},
    "shapes3d": {"batch_size": 32, "fourier_bands": 16, "max_freq": 32.0},
}

#: The specification's per-dataset flags: generic flag -> {dataset: that dataset's own flag}. A typed generic flag
#: wins, then the dataset's own flag, then DATASET_DEFAULTS (`per_dataset_values`).
PER_DATASET_FLAGS: dict[str, dict[str, str]] = {
    "batch_size": {"cifar10": "batch_size_cifar10", "modelnet40": "batch_size_modelnet40"},
    "fourier_bands": {"cifar10": "cifar10_fourier_bands", "modelnet40": "modelnet40_fourier_bands"},
    "max_freq": {"cifar10": "cifar10_max_freq", "modelnet40": "modelnet40_max_freq"},
}


def per_dataset_values(flags: Mapping) -> dict:
    """``{generic flag: value}`` for ``flags["dataset"]``: the generic flag when set, else the dataset's own flag,
    else the dataset's default (flags absent from ``flags`` count as unset)."""
    dataset, out = flags["dataset"], {}
    for general, own in PER_DATASET_FLAGS.items():
        value = flags.get(general)
        if value is None:
            specific = flags.get(own[dataset]) if dataset in own else None
            value = specific if specific is not None else DATASET_DEFAULTS[dataset][general]
        out[general] = value
    return out

# dataset name -> (module, builder function); imported lazily so that e.g. h5py is only needed for ModelNet40.
_BUILDERS = {
    "cifar10": ("cifar10", "build_cifar10"),
    "modelnet40": ("modelnet40", "build_modelnet40"),
    "shapes2d": ("shapes", "build_shapes2d"),
    "shapes3d": ("shapes", "build_shapes3d"),
}


@dataclass
class DataBundle:
    """A train/test pair plus the metadata the model and the visualizers need (see docs/ARCHITECTURE.md)."""

    name: str  # 'cifar10' | 'modelnet40' | 'shapes2d' | 'shapes3d'
    kind: str  # 'image' | 'pointcloud'
    train: torch.utils.data.Dataset  # items: (x float32 (N, C), label int)
    test: torch.utils.data.Dataset
    num_classes: int
    class_names: list[str]
    num_tokens: int  # N
    in_channels: int  # C
    pos_dim: int  # 2 for images, 3 for point clouds
    positions: torch.Tensor | None  # images: (N, 2) (row, col) in [-1, 1], permuted like the pixels
    image_shape: tuple | None  # (H, W, C) for images
    permutation: torch.Tensor | None  # (N,) long: token i is row-major pixel permutation[i]
    mean: tuple[float, ...] | None  # per-channel normalisation statistics (images)
    std: tuple[float, ...] | None
    source: str  # one line: where the data came from and which case

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of an image dataset's pixel grid; None for point clouds."""
        return tuple(self.image_shape[:2]) if self.image_shape is not None else None


@dataclass(frozen=True)
class DataSettings:
    """What `build_dataset` reads: the values of the `data` flags (`add_data_args`) and the seed of the built-in
    datasets. `from_flags` takes any dict of flags, such as a run's saved "args"."""

    dataset: str
    data_dir: str
    modelnet40_num_points: int
    permute_pixels: bool
    permute_pixels_seed: int
    no_augment: bool
    crop_padding: int
    auto_augment: str
    randaugment_ops: int | None
    randaugment_magnitude: int | None
    modelnet40_rotate: bool
    modelnet40_jitter: float
    modelnet40_url: str | None
    modelnet40_classes: tuple[str, ...] | None
    shapes_train_size: int
    shapes_test_size: int
    shapes_num_points: int
    seed: int = 0

    @classmethod
    def from_flags(cls, flags: Mapping) -> "DataSettings":
        """Missing data flags take their defaults, a missing or None seed is 0 (the built-in sets must be
        reproducible), other keys are ignored."""
        values = {**_flag_defaults(), **flags}
        if values.get("seed") is None:
            values["seed"] = 0
        if values["modelnet40_classes"] is not None:
            values["modelnet40_classes"] = tuple(values["modelnet40_classes"])
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def check(self) -> None:
        """Raise ValueError, one line naming the flags, for data flags that make no sense (alone or together)."""
        point_cloud = self.dataset in POINT_CLOUD_DATASETS
        if self.permute_pixels and point_cloud:
            raise ValueError(f"--permute_pixels needs an image dataset (cifar10, shapes2d), not {self.dataset}: "
                             "point clouds have no pixel order to permute")
        if not 1 <= self.modelnet40_num_points <= 2048:
            raise ValueError(f"--modelnet40_num_points must be in 1..2048 (the release has 2048 points per shape), "
                             f"got {self.modelnet40_num_points}")
        if not 0 <= self.crop_padding <= 16:
            raise ValueError(f"--crop_padding must be in 0..16 pixels, got {self.crop_padding}")
        if self.auto_augment != "none" and self.dataset != "cifar10":
            raise ValueError(f"--auto_augment applies to --dataset cifar10 only, not {self.dataset}")
        if self.auto_augment != "none" and self.no_augment:
            raise ValueError(f"--auto_augment {self.auto_augment} is a training augmentation: drop it or "
                             f"--no_augment")
        randaugment_given = self.randaugment_ops is not None or self.randaugment_magnitude is not None
        if randaugment_given and self.auto_augment != "randaugment":
            raise ValueError(f"--randaugment_ops/--randaugment_magnitude need --auto_augment randaugment, "
                             f"not {self.auto_augment}")
        if self.randaugment_ops is not None and self.randaugment_ops < 1:
            raise ValueError(f"--randaugment_ops must be >= 1, got {self.randaugment_ops}")
        if self.randaugment_magnitude is not None and not 0 <= self.randaugment_magnitude <= 30:
            raise ValueError(f"--randaugment_magnitude must be in 0..30, got {self.randaugment_magnitude}")
        if self.modelnet40_jitter < 0:
            raise ValueError(f"--modelnet40_jitter is a standard deviation and must be >= 0, got "
                             f"{self.modelnet40_jitter}")
        uses_modelnet_aug = self.modelnet40_rotate or self.modelnet40_jitter > 0
        if uses_modelnet_aug and self.dataset != "modelnet40":
            raise ValueError(f"--modelnet40_rotate/--modelnet40_jitter apply to --dataset modelnet40 only, not "
                             f"{self.dataset}")
        if uses_modelnet_aug and self.no_augment:
            raise ValueError("--modelnet40_rotate/--modelnet40_jitter are training augmentations: drop them or "
                             "--no_augment")
        if self.modelnet40_classes and self.dataset != "modelnet40":
            raise ValueError(f"--modelnet40_classes applies to --dataset modelnet40 only, not {self.dataset}")
        if self.modelnet40_classes and len(set(self.modelnet40_classes)) != len(self.modelnet40_classes):
            raise ValueError("--modelnet40_classes lists a class twice")
        if self.dataset.startswith("shapes"):
            for flag in ("shapes_train_size", "shapes_test_size"):
                if getattr(self, flag) < 10:
                    raise ValueError(f"--{flag} must be at least 10 (one sample per class), got "
                                     f"{getattr(self, flag)}")
            if self.shapes_num_points < 1:
                raise ValueError(f"--shapes_num_points must be >= 1, got {self.shapes_num_points}")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Add the `data` argument group (dataset choice, location, permutation, augmentation, sizes)."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="cifar10",
                   help="dataset to train on; shapes2d/shapes3d are generated in memory (default: %(default)s)")
    g.add_argument("--data_dir", default="./data",
                   help="folder holding cifar-10-batches-py/ and modelnet40_ply_hdf5_2048/; missing ones are "
                        "downloaded there (default: %(default)s)")
    g.add_argument("--modelnet40_num_points", type=int, default=2048,
                   help="points per ModelNet40 shape, 1..2048: a random subset each time in training, a fixed "
                        "one at evaluation (default: %(default)s)")
    g.add_argument("--permute_pixels", action="store_true",
                   help="apply one fixed random permutation to the pixels of every image, train and test alike; "
                        "positions travel with their pixels (default: %(default)s)")
    g.add_argument("--permute_pixels_seed", type=int, default=42,
                   help="seed of the pixel permutation (default: %(default)s)")
    g.add_argument("--no_augment", action="store_true",
                   help="turn off training augmentation (CIFAR-10 crop, flip and --auto_augment, ModelNet40 "
                        "scaling; the built-in datasets are never augmented) (default: %(default)s)")
    g.add_argument("--crop_padding", type=int, default=4,
                   help="CIFAR-10 training augmentation: random crops of the image padded by this many pixels "
                        "besides the horizontal flips; 0 = flips only, which overfits from about 20 epochs on "
                        "(docs/RECIPES.md) (default: %(default)s)")
    g.add_argument("--auto_augment", choices=AUTO_AUGMENT, default="none",
                   help="CIFAR-10 training augmentation after the crop and flip: torchvision's TrivialAugmentWide, "
                        "RandAugment (see --randaugment_ops/--randaugment_magnitude) or the AutoAugment CIFAR-10 "
                        "policy (default: %(default)s)")
    g.add_argument("--randaugment_ops", type=int, default=None,
                   help="--auto_augment randaugment: operations per image (default: %(default)s = torchvision's 2)")
    g.add_argument("--randaugment_magnitude", type=int, default=None,
                   help="--auto_augment randaugment: magnitude of every operation, 0..30 "
                        "(default: %(default)s = torchvision's 9)")
    g.add_argument("--modelnet40_rotate", action="store_true",
                   help="ModelNet40 training augmentation: random rotation about the up (+y) axis "
                        "(default: %(default)s)")
    g.add_argument("--modelnet40_jitter", type=float, default=0.0,
                   help="ModelNet40 training augmentation: std of gaussian per-point jitter, 0 = off "
                        "(default: %(default)s)")
    g.add_argument("--modelnet40_url", default=None,
                   help="download URL of modelnet40_ply_hdf5_2048.zip; also env var PERCEIVER_MODELNET40_URL "
                        "(default: %(default)s = the Stanford URL)")
    g.add_argument("--modelnet40_classes", nargs="+", default=None, metavar="NAME",
                   help="ModelNet40: train and test on these classes only (names from shape_names.txt), "
                        "relabelled 0..k-1 in the order given (default: %(default)s = all 40)")
    g.add_argument("--shapes_train_size", type=int, default=3000,
                   help="shapes2d/shapes3d: number of training samples (default: %(default)s)")
    g.add_argument("--shapes_test_size", type=int, default=1000,
                   help="shapes2d/shapes3d: number of test samples (default: %(default)s)")
    g.add_argument("--shapes_num_points", type=int, default=256,
                   help="shapes3d: points per shape (default: %(default)s)")


@functools.cache
def _defaults() -> tuple:
    parser = argparse.ArgumentParser(add_help=False)
    add_data_args(parser)
    return tuple(vars(parser.parse_args([])).items())


def _flag_defaults() -> dict:
    return dict(_defaults())


def build_dataset(data: DataSettings) -> DataBundle:
    """Build the bundle named by ``data.dataset`` (``DataSettings.from_flags({"dataset": ..., ...})`` for a few
    flags). Raises `perceiver.errors.DataError` for missing data that cannot be downloaded and for corrupt files."""
    if data.dataset not in _BUILDERS:
        raise ValueError(f"unknown dataset {data.dataset!r}; choose one of {', '.join(DATASETS)}")
    module_name, func_name = _BUILDERS[data.dataset]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, func_name)(data)


__all__ = ["AUTO_AUGMENT", "DATASETS", "DATASET_DEFAULTS", "PER_DATASET_FLAGS", "DataBundle", "DataSettings",
           "add_data_args", "build_dataset", "per_dataset_values"]
