"""Tiny dataset files in the official on-disk formats, for the tests to build in tmp_path (never downloaded)."""
from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np

#: CIFAR-10's class names, in the order of the release's batches.meta
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_batch(n: int, start: int, rng: np.random.Generator, *, str_keys: bool) -> dict:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [(start + i) % 10 for i in range(n)]
    batch = {"batch_label": "fixture", "labels": labels, "data": data,
             "filenames": [f"img_{start + i}.png" for i in range(n)]}
    return batch if str_keys else {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in batch.items()}


def write_cifar(root: Path, *, per_batch: int = 4, test_size: int = 6, str_keys: bool = False) -> Path:
    """The official python layout with tiny batches, pickled with protocol 2 like the originals."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": cifar_batch(per_batch, (i - 1) * per_batch, rng, str_keys=str_keys)
               for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(test_size, 0, rng, str_keys=str_keys)
    names = CLASSES if str_keys else [c.encode() for c in CLASSES]
    batches["batches.meta"] = {("label_names" if str_keys else b"label_names"): names}
    for name, obj in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return folder


#: the first ModelNet40 class names, for the tiny release of write_modelnet
NAMES = ["airplane", "bathtub", "bed", "bench", "bookshelf"]


def write_modelnet(root: Path, *, points: int = 64) -> Path:
    """The PointNet HDF5 layout: two train files and one test file, listed with the original's prefix."""
    folder = root / "modelnet40_ply_hdf5_2048"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {"ply_data_train0.h5": 6, "ply_data_train1.h5": 4, "ply_data_test0.h5": 5}
    for name, n in files.items():
        with h5py.File(folder / name, "w") as f:
            f["data"] = rng.normal(size=(n, points, 3)).astype(np.float32) * 0.3 + 0.1
            f["label"] = (np.arange(n) % len(NAMES)).astype(np.uint8)[:, None]  # (n, 1) as in the release
    prefix = "data/modelnet40_ply_hdf5_2048/"
    (folder / "train_files.txt").write_text(f"{prefix}ply_data_train0.h5\n{prefix}ply_data_train1.h5\n")
    (folder / "test_files.txt").write_text(f"{prefix}ply_data_test0.h5\n")
    (folder / "shape_names.txt").write_text("\n".join(NAMES) + "\n")
    return folder
