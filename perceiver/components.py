"""Building a run's parts from its resolved arguments: seeds, data (with the validation split), loaders, model.

Kept apart from the epoch loop (`perceiver.trainer`) so that `--eval_only` and the tests can build the same
pieces without training. The batches of a split come from a DataLoader, or from device memory when
``--device_data`` allows it (`use_device_data`).
"""
from __future__ import annotations

import argparse
import copy
import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from .data import DataBundle, build_dataset
from .data.device import DeviceBatches, device_data_reason
from .data.device import nbytes as device_nbytes
from .data.subset import stratified_subset
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


def take_train_size(dataset, size: int, seed: int) -> Subset:
    """``--train_size``: a stratified, seeded part of ``dataset`` (`perceiver.data.subset`), as one flat Subset of
    the underlying dataset (the device data path reads a Subset's indices)."""
    labels = dataset_labels(dataset)
    if size > len(labels):
        raise DataError(f"--train_size {size} is more than the {len(labels)} training samples there are (after "
                        f"--val_split); use at most {len(labels)}")
    keep = stratified_subset(labels, size, seed=seed)
    if isinstance(dataset, Subset):
        return Subset(dataset.dataset, [dataset.indices[i] for i in keep])
    return Subset(dataset, keep.tolist())


def build_data(args: argparse.Namespace) -> tuple[DataBundle, object, object | None]:
    """(bundle, training set, validation set or None): the validation split first, then ``--train_size`` of the
    rest, so that runs on parts of different sizes are validated on the same images."""
    bundle = build_dataset(args)
    train, val = bundle.train, None
    if args.val_split > 0:
        train, val = split_train_val(bundle.train, args.val_split, args.seed)
    if getattr(args, "train_size", None):
        train = take_train_size(train, args.train_size, args.seed)
    return bundle, train, val


def use_device_data(args: argparse.Namespace, datasets: list, info: DistInfo, log=None) -> bool:
    """Whether the splits are served from device memory (`perceiver.data.device`), per ``--device_data``."""
    if args.device_data == "off":
        return False
    reasons = [r for r in map(device_data_reason, datasets) if r]
    if reasons:
        if args.device_data == "on":
            raise DataError(f"--device_data on: {reasons[0]}; use --device_data off")
        return False
    if args.device_data == "on":
        return True
    if info.device.type != "cuda":  # auto: worth it where a host-side pipeline would starve the device
        return False
    free, _ = torch.cuda.mem_get_info(info.device)
    fits = sum(device_nbytes(d) for d in datasets) < 0.25 * free
    if not fits and log is not None:
        log.info("the dataset takes more than a quarter of the free GPU memory: batches come from the DataLoader")
    return fits


def train_loader(dataset, args: argparse.Namespace, info: DistInfo, *, on_device: bool):
    """(batches, sampler): shuffled by (seed, epoch) through `EpochSampler`; the trainer re-seeds the loader's
    augmentation per epoch (`seed_loader`), so no global RNG stream decides the data order or the augmentation."""
    sampler = EpochSampler(dataset, info=info, shuffle=True, seed=args.seed)
    if on_device:
        return DeviceBatches(dataset, sampler=sampler, batch_size=args.batch_size, device=info.device), sampler
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                        pin_memory=info.device.type == "cuda", drop_last=False, generator=torch.Generator())
    return loader, sampler


def seed_loader(loader, seed: int) -> None:
    """Seed this epoch's augmentation: the DataLoader's worker seeds, or the device path's batch generators."""
    if isinstance(loader, DeviceBatches):
        loader.seed_epoch(seed)
    else:
        loader.generator.manual_seed(seed)


def eval_loader(dataset, args: argparse.Namespace, info: DistInfo, *, on_device: bool = False):
    sampler = ShardSampler(dataset, info=info)
    if on_device:
        return DeviceBatches(dataset, sampler=sampler, batch_size=args.batch_size, device=info.device)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                      pin_memory=info.device.type == "cuda", generator=torch.Generator().manual_seed(args.seed))


def batches_per_epoch(sampler: EpochSampler, args: argparse.Namespace) -> int:
    full = math.ceil((len(sampler) + sampler.skip) / args.batch_size)
    return min(full, args.limit_train_batches) if args.limit_train_batches else full


#: model flags that hold a PerceiverConfig field of the same name; the two "no_" flags hold its negation
_FIELD_FLAGS = ("fourier_bands", "max_freq", "use_learned_pe", "num_latents", "latent_dim", "num_cross_attend_stages",
                "num_transformer_blocks", "num_heads", "cross_heads", "cross_dim", "input_norm", "stem", "stem_width",
                "mlp_ratio", "dropout", "drop_path", "output_pooling", "init")
_NEGATED_FLAGS = {"no_final_norm": "final_norm", "no_weight_sharing": "weight_sharing"}


def model_config(args: argparse.Namespace, bundle: DataBundle) -> PerceiverConfig:
    fields = {name: getattr(args, name) for name in _FIELD_FLAGS}
    fields.update({name: not getattr(args, flag) for flag, name in _NEGATED_FLAGS.items()})
    return PerceiverConfig(
        in_channels=bundle.in_channels, num_classes=bundle.num_classes, pos_dim=bundle.pos_dim,
        pos_from_input=bundle.kind == "pointcloud", num_tokens=bundle.num_tokens,
        # the image size only with a stem, so that the configs of runs saved before the stem existed still match
        image_size=bundle.image_size if args.stem != "none" else None,
        kernels=args.kernels, activation_checkpointing=args.activation_checkpointing, **fields)


def model_flags(model: dict) -> dict:
    """The model flags that a saved model configuration (`PerceiverConfig.to_dict`) was built from: a run saved
    before a model flag existed resumes with the value its weights were trained with, not today's default."""
    flags = {name: model[name] for name in _FIELD_FLAGS if name in model}
    flags.update({flag: not model[name] for flag, name in _NEGATED_FLAGS.items() if name in model})
    return flags


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
