"""Building a run's parts from its settings: seeds, data (with the validation split), loaders, model config.

Kept apart from the epoch loop (`perceiver.trainer`) so that `--eval_only` and the tests can build the same
pieces without training. The batches of a split come from a DataLoader, or from device memory when
``--device_data`` allows it (`use_device_data`).
"""
from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from .data import DataBundle, DataSettings, build_dataset
from .data.device import DeviceBatches, device_data_reason
from .data.device import nbytes as device_nbytes
from .distributed import DistInfo, EpochSampler, ShardSampler
from .errors import DataError
from .model import Perceiver, PerceiverConfig
from .probes import dataset_labels


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def eval_view(dataset):
    """A copy of a training dataset that serves evaluation items: no augmentation, fixed point subsets."""
    view = copy.copy(dataset)
    if hasattr(view, "augment"):
        view.augment = False
    if hasattr(view, "train"):
        view.train = False
    return view


def split_train_val(dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """A stratified, seeded hold-out: about ``fraction`` of every class (at least one sample of each class that
    has two or more) goes to validation; validation items are served without augmentation."""
    labels = dataset_labels(dataset)
    rng = np.random.default_rng([seed, 1])  # a stream of its own: independent of data order and weights
    val: list[int] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1) if len(idx) > 1 else 0
        val.extend(int(i) for i in idx[:k])
    if not val:
        raise DataError(f"--val_split {fraction} leaves no validation samples: the training set is too small")
    keep = np.setdiff1d(np.arange(len(labels)), val)
    return Subset(dataset, keep.tolist()), Subset(eval_view(dataset), sorted(val))


def build_data(data: DataSettings, *, val_split: float = 0.0) -> tuple[DataBundle, object, object | None]:
    """(bundle, training set, validation set or None); the validation split is drawn with ``data.seed``."""
    bundle = build_dataset(data)
    if val_split > 0:
        train, val = split_train_val(bundle.train, val_split, data.seed)
        return bundle, train, val
    return bundle, bundle.train, None


def use_device_data(mode: str, datasets: list, info: DistInfo, log=None) -> bool:
    """Whether the splits are served from device memory (`perceiver.data.device`), per ``--device_data`` (mode)."""
    if mode == "off":
        return False
    reasons = [r for r in map(device_data_reason, datasets) if r]
    if reasons:
        if mode == "on":
            raise DataError(f"--device_data on: {reasons[0]}; use --device_data off")
        return False
    if mode == "on":
        return True
    if info.device.type != "cuda":  # auto: worth it where a host-side pipeline would starve the device
        return False
    free, _ = torch.cuda.mem_get_info(info.device)
    fits = sum(device_nbytes(d) for d in datasets) < 0.25 * free
    if not fits and log is not None:
        log.info("the dataset takes more than a quarter of the free GPU memory: batches come from the DataLoader")
    return fits


def train_loader(dataset, *, batch_size: int, num_workers: int, seed: int, info: DistInfo, on_device: bool,
                 drop_last: bool = False):
    """(batches, sampler): shuffled by (seed, epoch) through `EpochSampler`; the trainer re-seeds the loader's
    augmentation per epoch (`seed_loader`), so no global RNG stream decides the data order or the augmentation.
    ``drop_last`` (under ``--compile``) leaves out the last partial batch of an epoch: every step has the same
    shapes, so the compiled graphs are reused (a different few samples are left out each epoch, as the order is
    reshuffled)."""
    sampler = EpochSampler(dataset, info=info, shuffle=True, seed=seed)
    if on_device:
        return DeviceBatches(dataset, sampler=sampler, batch_size=batch_size, device=info.device,
                             drop_last=drop_last), sampler
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=info.device.type == "cuda", drop_last=drop_last, generator=torch.Generator())
    return loader, sampler


def seed_loader(loader, seed: int) -> None:
    """Seed this epoch's augmentation: the DataLoader's worker seeds, or the device path's batch generators."""
    if isinstance(loader, DeviceBatches):
        loader.seed_epoch(seed)
    else:
        loader.generator.manual_seed(seed)


def eval_loader(dataset, *, batch_size: int, num_workers: int, seed: int, info: DistInfo, on_device: bool = False):
    sampler = ShardSampler(dataset, info=info)
    if on_device:
        return DeviceBatches(dataset, sampler=sampler, batch_size=batch_size, device=info.device)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=info.device.type == "cuda", generator=torch.Generator().manual_seed(seed))


def batches_per_epoch(sampler: EpochSampler, *, batch_size: int, limit: int | None, drop_last: bool = False) -> int:
    samples = len(sampler) + sampler.skip  # this process's share of an epoch
    if drop_last and samples < batch_size:
        raise DataError(f"--compile drops the last partial batch of an epoch (every step keeps the same shapes), and "
                        f"the {samples} training samples per process make no full batch of {batch_size}: lower "
                        f"--batch_size")
    full = samples // batch_size if drop_last else math.ceil(samples / batch_size)
    return min(full, limit) if limit else full


def data_fields(bundle: DataBundle, *, stem: str) -> dict:
    """The `PerceiverConfig` fields that come from the data (the shape of its tokens and labels)."""
    return dict(in_channels=bundle.in_channels, num_classes=bundle.num_classes, pos_dim=bundle.pos_dim,
                pos_from_input=bundle.kind == "pointcloud", num_tokens=bundle.num_tokens,
                # the image size only with a stem, so that the configs of runs saved before the stem existed match
                image_size=bundle.image_size if stem != "none" else None)


def model_config(bundle: DataBundle, options: Mapping[str, Any], *, saved: dict | None = None) -> PerceiverConfig:
    """A run's model for ``bundle``: every option given (`perceiver.settings.Settings.model`), or, resuming, the
    checkpoint's own configuration ``saved`` (`PerceiverConfig.to_dict`) with the options this invocation sets."""
    if saved is None:
        return PerceiverConfig(**data_fields(bundle, stem=options["stem"]), **options)
    stem = options.get("stem", saved.get("stem", "none"))
    return PerceiverConfig.from_dict({**saved, **data_fields(bundle, stem=stem), **options})


def build_model(config: PerceiverConfig, device: torch.device) -> Perceiver:
    return Perceiver(config).to(device)


def check_data_fits(config: PerceiverConfig, bundle: DataBundle, checkpoint) -> None:
    """The dataset must produce what the checkpoint's model was built for (eval of a run on other data)."""
    from .errors import CheckpointError

    want = {"num_classes": config.num_classes, "in_channels": config.in_channels, "pos_dim": config.pos_dim}
    got = {"num_classes": bundle.num_classes, "in_channels": bundle.in_channels, "pos_dim": bundle.pos_dim}
    if config.use_learned_pe:
        want["num_tokens"], got["num_tokens"] = config.num_tokens, bundle.num_tokens
    if config.stem != "none":
        want["image_size"], got["image_size"] = config.image_size, bundle.image_size
    diff = [f"{k}: model {want[k]} vs data {got[k]}" for k in want if want[k] != got[k]]
    if diff:
        raise CheckpointError(f"checkpoint {checkpoint} does not fit dataset {bundle.name} ({'; '.join(diff)})")


def dataset_facts(bundle: DataBundle, train, val, test) -> dict:
    return {
        "name": bundle.name, "kind": bundle.kind, "source": bundle.source, "num_classes": bundle.num_classes,
        "class_names": list(bundle.class_names), "num_tokens": bundle.num_tokens,
        "in_channels": bundle.in_channels, "pos_dim": bundle.pos_dim,
        "image_shape": list(bundle.image_shape) if bundle.image_shape is not None else None,
        "permuted": bundle.permutation is not None,
        "mean": list(bundle.mean) if bundle.mean is not None else None,
        "std": list(bundle.std) if bundle.std is not None else None,
        "train_size": len(train), "val_size": len(val) if val is not None else 0, "test_size": len(test),
    }
