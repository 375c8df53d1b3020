"""CIFAR-10 from the official python layout `<data_dir>/cifar-10-batches-py/`, read with a restricted unpickler.

torchvision's `CIFAR10` class is not used for reading because it refuses anything but the exact official files;
this loader accepts subsets and re-packed copies (any number of images per batch, bytes or str keys) and checks
md5 sums only when the batches have the full release's size. Missing data is downloaded from the official URL.

A pickle can call any function it names, so a tampered "CIFAR-10" could run code the moment it is opened. The
files are read by `_CifarUnpickler`, which builds only what the official files (and copies re-pickled with numpy)
hold: dicts, lists, str/bytes, numbers and numpy arrays (empty ones included); a file that names anything else is
refused unopened.
"""

from __future__ import annotations

import codecs
import hashlib
import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10

from ..errors import DataError
from . import DataBundle, DataSettings
from .augment import AutoAugment
from .checks import class_labels
from .download import fetch_archive
from .images import ImageTokens, image_bundle_fields

FOLDER = "cifar-10-batches-py"
URL = CIFAR10.url  # https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz
ARCHIVE_MD5 = CIFAR10.tgz_md5
TRAIN_FILES = [name for name, _ in CIFAR10.train_list]  # data_batch_1 .. data_batch_5
TEST_FILES = [name for name, _ in CIFAR10.test_list]  # test_batch
META_FILE = CIFAR10.meta["filename"]  # batches.meta
FILE_MD5 = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
FILE_MD5[META_FILE] = CIFAR10.meta["md5"]
IMAGES_PER_FULL_BATCH = 10000

# Per-channel statistics of the 50,000 training images in [0, 1] units. The std is the true pixel std; the
# often-copied (0.2023, 0.1994, 0.2010) is a mean of per-image stds and under-scales the inputs.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# The label names of the official batches.meta, in label order: what `perceiver.inference` falls back to for a
# checkpoint file that travels without its run directory and without the dataset.
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _manual_fix(folder: Path) -> str:
    return (f"download {URL} yourself and extract it into {folder.parent} so that {folder}/ holds "
            f"{', '.join(TRAIN_FILES + TEST_FILES + [META_FILE])}")


class _Refused(pickle.UnpicklingError):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (``encode(str, 'latin1')``), and nothing more."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


def _empty_bytes(*args):
    """``bytes()`` as protocol 0-2 pickles spell an empty bytes object (the buffer of an empty array), and nothing
    more: ``bytes(n)`` with a huge n would be a way to exhaust memory."""
    if args:
        raise _Refused(f"bytes{args!r}")
    return b""


def _numpy_globals() -> dict:
    """The functions and classes a pickled numpy array or scalar names, under both numpy 1.x and 2.x spellings."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    admitted = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode,
                ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes}
    for package in ("numpy.core", "numpy._core"):  # the official files name numpy.core; numpy 2 writes numpy._core
        admitted[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct  # ndarray, protocols 0-4
        admitted[(f"{package}.multiarray", "scalar")] = multiarray.scalar  # numpy scalars (np.int64 labels)
        admitted[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # ndarray, protocol 5
    return admitted


class _CifarUnpickler(pickle.Unpickler):
    """Admits the globals of `_numpy_globals` only; anything else (os.system, builtins.eval, ...) is refused before
    its module is even imported."""

    ADMITTED = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.ADMITTED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _read_pickle(path: Path) -> dict:
    """Load one CIFAR pickle as a dict with str keys (the originals have bytes keys, re-packed copies str)."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"the CIFAR-10 reader refuses to load {path}: it asks for {exc.what}, which a CIFAR-10 file "
                        f"never holds; the file was tampered with or is not CIFAR-10 (delete it and download "
                        f"CIFAR-10 again from {URL})") from None
    except Exception as exc:  # noqa: BLE001 - truncation shows up as EOFError, UnpicklingError, ValueError, ...
        raise DataError(f"{path} is corrupt or truncated ({type(exc).__name__}); delete it and download "
                        f"CIFAR-10 again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 pickle (holds a {type(obj).__name__}, not a dict)")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in obj.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (n, 32, 32, 3) uint8 and labels (n,) int64."""
    batch = _read_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path} lacks the 'data'/'labels' entries of a CIFAR-10 batch (keys: {sorted(batch)})")
    data = np.asarray(batch["data"])
    try:
        labels = class_labels(batch["labels"], path)
    except ValueError:  # a ragged list
        raise DataError(f"{path}: 'labels' is not a list of class numbers") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path} holds data {data.dtype} {data.shape} with {len(labels)} labels; expected uint8 "
                        f"(n, 3072) with n labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path} has labels outside 0..9 (min {labels.min()}, max {labels.max()})")
    # each row is the red plane, then green, then blue, each 32x32 row-major
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (n, 32, 32, 3)
    return np.ascontiguousarray(images), labels


def read_class_names(path: Path) -> list[str]:
    meta = _read_pickle(path)
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != 10:
        raise DataError(f"{path} has no list of 10 'label_names'")
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_cifar10(data_dir: str | Path, *, download: bool = True) -> tuple[dict, list[str], str]:
    """Read (downloading if absent) the release: ({'train'|'test': (images, labels)}, class names, source line)."""
    folder = Path(data_dir) / FOLDER
    required = TRAIN_FILES + TEST_FILES + [META_FILE]
    missing = [name for name in required if not (folder / name).is_file()]
    downloaded = False
    # Download only into an empty spot: fetching over a partial copy would silently replace files a user put there.
    if download and len(missing) == len(required):
        fetch_archive(URL, root=folder.parent, md5=ARCHIVE_MD5, what="CIFAR-10", manual_fix=_manual_fix(folder))
        downloaded = True
        missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 files missing in {folder}: {', '.join(missing)}; {_manual_fix(folder)}")

    splits = {}
    for split, names in (("train", TRAIN_FILES), ("test", TEST_FILES)):
        parts = [read_batch(folder / name) for name in names]
        splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    class_names = read_class_names(folder / META_FILE)
    sizes = f"{len(splits['train'][1])} train / {len(splits['test'][1])} test images"

    full_size = (len(splits["train"][1]) == IMAGES_PER_FULL_BATCH * len(TRAIN_FILES)
                 and len(splits["test"][1]) == IMAGES_PER_FULL_BATCH * len(TEST_FILES))
    if not full_size:
        case = "subset or re-packed copy (checksums not verified)"
    else:
        bad = [name for name in required if _md5(folder / name) != FILE_MD5[name]]
        # Full-size files that parse but differ are most likely re-pickled, not damaged (damage breaks pickle).
        case = (f"full-size copy whose md5 differs from the official release in {', '.join(bad)} (re-packed?)"
                if bad else "full official release, checksums OK")
    origin = f"downloaded from {URL} into {folder}" if downloaded else f"read from {folder}"
    return splits, class_names, f"CIFAR-10 {origin}: {case}; {sizes}"


def build_cifar10(data: DataSettings) -> DataBundle:
    """The CIFAR-10 bundle for the `data` flags (data_dir, permute_pixels[_seed], no_augment, crop_padding,
    auto_augment, randaugment_*)."""
    splits, class_names, source = load_cifar10(data.data_dir)
    fields = image_bundle_fields(splits["train"][0], permute=data.permute_pixels,
                                 permute_seed=data.permute_pixels_seed)
    common = {"mean": MEAN, "std": STD, "permutation": fields["permutation"]}
    policy = None if data.auto_augment == "none" else AutoAugment(
        data.auto_augment, num_ops=data.randaugment_ops, magnitude=data.randaugment_magnitude)
    train = ImageTokens(*splits["train"], augment=not data.no_augment, pad=data.crop_padding, policy=policy,
                        **common)
    test = ImageTokens(*splits["test"], augment=False, **common)
    return DataBundle(name="cifar10", train=train, test=test, num_classes=len(class_names),
                      class_names=class_names, mean=MEAN, std=STD, source=source, **fields)
