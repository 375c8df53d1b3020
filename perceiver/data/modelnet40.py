"""ModelNet40 from the PointNet HDF5 release `<data_dir>/modelnet40_ply_hdf5_2048/`, read with h5py.

`train_files.txt` / `test_files.txt` list the h5 files with whatever prefix the packager used (the original says
`data/modelnet40_ply_hdf5_2048/...`), so entries are resolved by basename inside the dataset folder. Each h5 holds
`data` (n, 2048, 3) float32 and `label` (n, 1); `shape_names.txt` names the classes in label order. Only plain
numeric datasets stored in the file itself are read (HDF5 has no pickles; object, string and reference arrays and
links to other files are refused).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import DataError
from . import DataBundle, DataSettings
from .checks import class_labels, finite_items
from .download import fetch_archive
from .points import PointClouds, pointcloud_bundle_fields

FOLDER = "modelnet40_ply_hdf5_2048"
DEFAULT_URL = "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip"
URL_ENV = "PERCEIVER_MODELNET40_URL"
LIST_FILES = {"train": "train_files.txt", "test": "test_files.txt"}
NAMES_FILE = "shape_names.txt"
FULL_SIZES = {"train": 9840, "test": 2468}  # shapes in the official split


def download_url(flag_value: str | None) -> str:
    """The flag wins over the environment variable, which wins over the historical Stanford URL."""
    return flag_value or os.environ.get(URL_ENV) or DEFAULT_URL


def _manual_fix(folder: Path, url: str) -> str:
    return (f"download {url} (or a mirror of modelnet40_ply_hdf5_2048.zip; pass its URL with --modelnet40_url or "
            f"{URL_ENV}) and extract it into {folder.parent} so that {folder}/ holds {NAMES_FILE}, "
            f"{LIST_FILES['train']}, {LIST_FILES['test']} and the ply_data_*.h5 files they list")


def read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One h5 file -> points (n, P, 3) float32 and labels (n,) int64; DataError naming the file if unreadable, and
    the shape if one holds NaN or infinite coordinates or a label that is not a class number."""
    try:
        with h5py.File(path, "r") as f:
            absent = [key for key in ("data", "label") if key not in f]
            if absent:
                raise DataError(f"{path} lacks the dataset(s) {', '.join(absent)} of a ModelNet40 h5 file")
            for key in ("data", "label"):  # plain numbers stored in this file: no objects, no links elsewhere
                item = f[key]
                if (not isinstance(f.get(key, getlink=True), h5py.HardLink) or not isinstance(item, h5py.Dataset)
                        or item.dtype.kind not in "biuf"):
                    raise DataError(f"{path}: '{key}' is not an array of numbers stored in the file ("
                                    f"{getattr(item, 'dtype', type(item).__name__)}); not a ModelNet40 h5 file")
            with np.errstate(over="ignore", invalid="ignore"):  # out of float32's range: inf, refused below
                points = np.asarray(f["data"][...], dtype=np.float32)
            raw_labels = f["label"][...]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py reports truncation/garbage as OSError, KeyError, ValueError...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path} is corrupt or truncated ({reason}); delete it and download ModelNet40 again") \
            from None
    labels = class_labels(raw_labels, path)
    if points.ndim != 3 or points.shape[2] != 3 or len(points) != len(labels):
        raise DataError(f"{path} holds data {points.shape} with {len(labels)} labels; expected (n, P, 3) with "
                        f"n labels")
    finite_items(points, path, "shape")
    return points, labels


def _list_h5(folder: Path, list_name: str) -> list[Path]:
    """The h5 files named in a list file, resolved by basename inside the dataset folder."""
    list_path = folder / list_name
    entries = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    if not entries:
        raise DataError(f"{list_path} lists no h5 files")
    paths = [folder / Path(entry.replace("\\", "/")).name for entry in entries]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{list_path} lists {', '.join(missing)}, missing from {folder}; restore them or "
                        f"download ModelNet40 again")
    return paths


def load_modelnet40(data_dir: str | Path, *, url: str | None = None, download: bool = True
                    ) -> tuple[dict, list[str], str]:
    """Read (downloading if absent) the release: ({'train'|'test': (points, labels)}, class names, source line)."""
    folder = Path(data_dir) / FOLDER
    url = download_url(url)
    required = [NAMES_FILE, *LIST_FILES.values()]
    missing = [name for name in required if not (folder / name).is_file()]
    downloaded = False
    # Download only into an empty spot: fetching over a partial copy would silently replace files a user put there.
    if download and len(missing) == len(required):
        fetch_archive(url, root=folder.parent, md5=None, what="ModelNet40", manual_fix=_manual_fix(folder, url))
        downloaded = True
        missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise DataError(f"ModelNet40 files missing in {folder}: {', '.join(missing)}; {_manual_fix(folder, url)}")

    class_names = [line.strip() for line in (folder / NAMES_FILE).read_text().splitlines() if line.strip()]
    if not class_names:
        raise DataError(f"{folder / NAMES_FILE} lists no class names")
    splits = {}
    for split, list_name in LIST_FILES.items():
        parts = [(path, *read_h5(path)) for path in _list_h5(folder, list_name)]
        stored = {p[1].shape[1] for p in parts}
        if len(stored) != 1:
            raise DataError(f"the {split} h5 files in {folder} disagree on points per shape ({sorted(stored)})")
        for path, _, labels in parts:
            if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
                raise DataError(f"{path} has labels outside 0..{len(class_names) - 1} "
                                f"({len(class_names)} names in {NAMES_FILE})")
        splits[split] = (np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))

    counts = {split: len(labels) for split, (_, labels) in splits.items()}
    sizes = f"{counts['train']} train / {counts['test']} test shapes"
    case = ("full official release (no checksums published)" if counts == FULL_SIZES
            else "subset or re-packed copy (checksums not verified)")
    origin = f"downloaded from {url} into {folder}" if downloaded else f"read from {folder}"
    return splits, class_names, f"ModelNet40 {origin}: {case}; {sizes}"


def select_classes(splits: dict, class_names: list[str], keep: list[str]) -> tuple[dict, list[str]]:
    """Keep the shapes of the named classes only, relabelled 0..k-1 in the order of ``keep``."""
    unknown = [name for name in keep if name not in class_names]
    if unknown:
        raise DataError(f"--modelnet40_classes: unknown class {', '.join(unknown)}; the classes are those of "
                        f"{NAMES_FILE}: {', '.join(class_names)}")
    relabel = np.full(len(class_names), -1, dtype=np.int64)
    relabel[[class_names.index(name) for name in keep]] = np.arange(len(keep))
    out = {}
    for split, (points, labels) in splits.items():
        new = relabel[labels]
        mask = new >= 0
        if not mask.any():
            raise DataError(f"--modelnet40_classes: the {split} split has no shape of {', '.join(keep)}")
        out[split] = (points[mask], new[mask])
    return out, list(keep)


def build_modelnet40(data: DataSettings) -> DataBundle:
    """The ModelNet40 bundle for the `data` flags (data_dir, modelnet40_*, no_augment)."""
    splits, class_names, source = load_modelnet40(data.data_dir, url=data.modelnet40_url)
    k = data.modelnet40_num_points
    stored = min(points.shape[1] for points, _ in splits.values())
    if not 1 <= k <= stored:
        raise DataError(f"--modelnet40_num_points {k} is outside 1..{stored}, the points per shape stored in "
                        f"{Path(data.data_dir) / FOLDER}")
    if data.modelnet40_classes:
        splits, class_names = select_classes(splits, class_names, data.modelnet40_classes)
    train = PointClouds(*splits["train"], num_points=k, train=True, augment=not data.no_augment,
                        rotate=data.modelnet40_rotate, jitter=data.modelnet40_jitter)
    test = PointClouds(*splits["test"], num_points=k, train=False)
    return DataBundle(name="modelnet40", train=train, test=test, num_classes=len(class_names),
                      class_names=class_names, source=source, **pointcloud_bundle_fields(k))
