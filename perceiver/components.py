"""Building a run's parts from its settings: seeds, data (with the validation split), loaders, model config.

Kept apart from the epoch loop (`perceiver.trainer`) so that `--eval_only` and the tests can build the same
pieces without training. The batches of a split come from a DataLoader, or from device memory when
``--device_data`` allows it (`use_device_data`).
"""
from __future__ import annotations

import copy
import hashlib
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
from .data.subset import stratified_subset
from .distributed import DistInfo, EpochSampler, ShardSampler
from .errors import DataError, UsageError
from .model import Perceiver, PerceiverConfig
from .probes import dataset_labels


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def flush_denormals() -> None:
    """Treat subnormal floats as zero in CPU arithmetic (FTZ/DAZ), as GPUs do in most kernels.

    A matrix product whose inputs hold subnormal values (a sharp attention's tiny weights, late in training) runs
    several times slower on x86 CPUs; values under 1.2e-38 change no result that float32 can show. Call it before the
    first parallel operation: the threads of torch's CPU pool take the setting from the thread that starts them."""
    torch.set_flush_denormal(True)


def set_threads(threads: int) -> None:
    """--threads, applied once the run's flags are final (a resumed run's come from its checkpoint); 0 keeps
    PyTorch's default, one thread per core."""
    if threads:
        torch.set_num_threads(threads)


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
        raise UsageError(f"--val_split {fraction} leaves no validation items: the training split has {len(labels)} "
                         f"items, and at least 2 of one class are needed; raise --val_split or use more data")
    keep = np.setdiff1d(np.arange(len(labels)), val)
    return Subset(dataset, keep.tolist()), Subset(eval_view(dataset), sorted(val))


def take_train_size(dataset, size: int, seed: int) -> Subset:
    """``--train_size``: a stratified, seeded part of ``dataset`` (`perceiver.data.subset`), as one flat Subset of
    the underlying dataset (the device data path reads a Subset's indices)."""
    labels = dataset_labels(dataset)
    if size > len(labels):
        raise UsageError(f"--train_size {size} is more than the {len(labels)} training samples there are (after "
                         f"--val_split); use at most {len(labels)}")
    keep = stratified_subset(labels, size, seed=seed)
    if isinstance(dataset, Subset):
        return Subset(dataset.dataset, [dataset.indices[i] for i in keep])
    return Subset(dataset, keep.tolist())


def build_data(data: DataSettings, *, val_split: float = 0.0) -> tuple[DataBundle, object, object | None]:
    """(bundle, training set, validation set or None): the validation split first (drawn with ``data.seed``), then
    ``--train_size`` of the rest, so that runs on parts of different sizes are validated on the same images."""
    bundle = build_dataset(data)
    train, val = bundle.train, None
    if val_split > 0:
        train, val = split_train_val(bundle.train, val_split, data.seed)
    if data.train_size:
        train = take_train_size(train, data.train_size, data.seed)
    return bundle, train, val


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


# ------------------------------------------------------------------------------------------ the data's identity

#: items of a split whose raw values enter its fingerprint (evenly spaced), besides every label
FINGERPRINT_ITEMS = 64


def _raw_rows(dataset, rows: np.ndarray):
    """The stored values (uint8 images, float32 points) of ``rows`` of a dataset or Subset, or None."""
    if isinstance(dataset, Subset):
        return _raw_rows(dataset.dataset, np.asarray(dataset.indices)[rows])
    for name in ("images", "points"):
        if getattr(dataset, name, None) is not None:
            return np.ascontiguousarray(getattr(dataset, name)[rows])
    return None


def split_fingerprint(dataset) -> dict:
    """``{"items": n, "hash": ...}``: a hash of every label and of the stored values of up to
    `FINGERPRINT_ITEMS` evenly spaced items (milliseconds for CIFAR-10's 50,000 images)."""
    labels = dataset_labels(dataset)
    h = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    rows = np.unique(np.linspace(0, len(labels) - 1, min(len(labels), FINGERPRINT_ITEMS)).astype(np.int64))
    raw = _raw_rows(dataset, rows) if len(labels) else None
    if raw is not None:
        h.update(raw.tobytes())
    elif len(labels):  # a dataset without stored arrays: its items as served for evaluation
        view = eval_view(dataset)
        for i in rows:
            h.update(np.asarray(view[int(i)][0], dtype=np.float32).tobytes())
    return {"items": len(labels), "hash": h.hexdigest()[:16]}


def data_fingerprint(bundle: DataBundle, train, val, test) -> dict:
    """What a run was trained on: dataset, classes, token layout (pixel permutation, point count) and each split's
    `split_fingerprint`; config.json and every checkpoint record it, and a resume must find the same."""
    perm = bundle.permutation
    return {
        "dataset": bundle.name, "class_names": list(bundle.class_names), "num_tokens": bundle.num_tokens,
        "permutation": hashlib.sha256(perm.numpy().astype(np.int64).tobytes()).hexdigest()[:16]
        if perm is not None else None,
        "train": split_fingerprint(train), "val": split_fingerprint(val) if val is not None else None,
        "test": split_fingerprint(test),
    }


def fingerprint_differences(saved: dict, now: dict, splits=("train", "val", "test")) -> list[str]:
    """What differs between two `data_fingerprint` records (the keys ``saved`` has), one phrase each."""
    out = []
    if saved.get("dataset") != now.get("dataset"):
        out.append(f"dataset {now.get('dataset')} where the run has {saved.get('dataset')}")
    if "class_names" in saved and saved["class_names"] != now.get("class_names"):
        out.append(f"classes {now.get('class_names')} where the run has {saved['class_names']}")
    if "num_tokens" in saved and saved["num_tokens"] != now.get("num_tokens"):
        out.append(f"{now.get('num_tokens')} tokens per item where the run has {saved['num_tokens']}")
    if "permutation" in saved and saved["permutation"] != now.get("permutation"):
        out.append("another pixel permutation")
    for split in splits:
        a, b = saved.get(split), now.get(split)
        if split not in saved or a == b:
            continue
        if a is None or b is None:
            out.append(f"{'a' if b else 'no'} {split} split where the run has {'none' if b else 'one'}")
        elif a["items"] != b["items"]:
            out.append(f"{split} split of {b['items']} items where the run had {a['items']}")
        else:
            out.append(f"{split} split of the same size ({b['items']} items) with other labels or content")
    return out


def check_splits(train, test, *, world_size: int = 1) -> None:
    """Refuse (`UsageError`, one line) a split too small to train or score on: every process needs a training item
    (``train=None``: not training) and the test set at least one item."""
    sizes = {"test": (len(test), 1)}
    if train is not None:
        sizes = {"training": (len(train), world_size), **sizes}
    for split, (n, least) in sizes.items():
        if n < least:
            per = f" (one per process, {world_size} processes)" if split == "training" and world_size > 1 else ""
            raise UsageError(f"the {split} split has {n} item{'s' if n != 1 else ''} and at least {least} "
                             f"{'is' if least == 1 else 'are'} needed{per}: check --data_dir and the dataset's "
                             f"{split} files")
