"""Tests of perceiver/data: tiny fixtures in the official on-disk formats, built in tmp_path; no network."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from data_files import CLASSES, NAMES, write_cifar, write_modelnet
from perceiver.components import eval_view
from perceiver.data import AUTO_AUGMENT, DataSettings, build_dataset
from perceiver.data import cifar10 as cifar_module
from perceiver.data import download as download_module
from perceiver.data import points as points_module
from perceiver.data.augment import AutoAugment
from perceiver.data.images import grid_positions, random_crop_flip
from perceiver.errors import DataError


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every download fails (and is recorded) unless a test installs its own fake."""
    calls = []

    def refuse(url, download_root, **kwargs):
        calls.append((url, download_root))
        raise RuntimeError("network disabled in tests")

    monkeypatch.setattr(download_module, "download_and_extract_archive", refuse)
    return calls


def ns(**flags) -> DataSettings:
    return DataSettings.from_flags({"seed": 0, **flags})


# ----------------------------------------------------------------------------------------------------- CIFAR-10
def raw_tokens(folder: Path, name: str, index: int) -> torch.Tensor:
    """Pixel index-th image of a batch file as (1024, 3) uint8 tokens, decoded independently of the loader."""
    with open(folder / name, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = batch[b"data"] if b"data" in batch else batch["data"]
    planes = torch.from_numpy(data[index].reshape(3, 1024))  # R, G, B planes, row-major
    return planes.T  # (1024, 3)


def normalised(tokens: torch.Tensor) -> torch.Tensor:
    return (tokens.float() / 255 - torch.tensor(cifar_module.MEAN)) / torch.tensor(cifar_module.STD)


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar_reads_official_layout(tmp_path, str_keys):
    folder = write_cifar(tmp_path, str_keys=str_keys)
    bundle = build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path), no_augment=True))
    assert (len(bundle.train), len(bundle.test)) == (20, 6)
    assert bundle.class_names == CLASSES and bundle.num_classes == 10
    assert (bundle.kind, bundle.num_tokens, bundle.in_channels, bundle.pos_dim) == ("image", 1024, 3, 2)
    assert bundle.image_shape == (32, 32, 3) and bundle.permutation is None
    assert torch.equal(bundle.positions, grid_positions(32, 32))
    assert "subset or re-packed copy" in bundle.source
    x, label = bundle.test[3]
    assert x.shape == (1024, 3) and x.dtype == torch.float32 and type(label) is int and label == 3
    assert torch.allclose(x, normalised(raw_tokens(folder, "test_batch", 3)), atol=1e-5)
    # data_batch_2 starts at image 4 of the train split
    assert torch.allclose(bundle.train[5][0], normalised(raw_tokens(folder, "data_batch_2", 1)), atol=1e-5)
    assert bundle.train.images.shape == (20, 32, 32, 3) and bundle.train.images.dtype == np.uint8
    assert list(bundle.train.labels[:10]) == list(range(10))


def test_cifar_permutation(tmp_path):
    write_cifar(tmp_path)
    flags = dict(dataset="cifar10", data_dir=str(tmp_path), no_augment=True, permute_pixels=True)
    plain = build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path), no_augment=True))
    a = build_dataset(ns(permute_pixels_seed=7, **flags))
    b = build_dataset(ns(permute_pixels_seed=7, **flags))
    c = build_dataset(ns(permute_pixels_seed=8, **flags))
    perm = a.permutation
    assert perm.dtype == torch.long and torch.equal(perm, b.permutation) and not torch.equal(perm, c.permutation)
    assert torch.equal(torch.sort(perm).values, torch.arange(1024))
    # token i is row-major pixel perm[i], in train and test alike; un-permuting recovers the plain tokens
    for split in ("train", "test"):
        x_plain, x_perm = getattr(plain, split)[1][0], getattr(a, split)[1][0]
        assert torch.equal(x_perm, x_plain[perm])
        assert torch.equal(x_perm[torch.argsort(perm)], x_plain)
    # positions travel with their pixels: (row, col) of pixel perm[i], scaled to [-1, 1]
    rows, cols = perm // 32, perm % 32
    expected = torch.stack([rows, cols], dim=1).float() / 31 * 2 - 1
    assert torch.allclose(a.positions, expected, atol=1e-6)


def test_cifar_augmentation(tmp_path):
    write_cifar(tmp_path)
    augmented = build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path)))
    plain = build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path), no_augment=True))
    torch.manual_seed(0)
    draws = [augmented.train[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(augmented.test[0][0], augmented.test[0][0])
    assert torch.equal(augmented.test[0][0], plain.test[0][0])
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_random_crop_flip_shifts_content():
    image = torch.arange(5 * 6 * 2, dtype=torch.uint8).reshape(5, 6, 2) + 1  # no zero pixel in the image
    torch.manual_seed(0)
    for _ in range(20):
        out = random_crop_flip(image, pad=2)
        assert out.shape == image.shape
        # every output is the image (maybe mirrored) shifted by at most 2 pixels into a zero canvas
        found = False
        for candidate in (out, out.flip(1)):
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    shifted = torch.zeros_like(image)
                    src = image[max(0, dy):5 + min(0, dy), max(0, dx):6 + min(0, dx)]
                    shifted[max(0, -dy):5 - max(0, dy), max(0, -dx):6 - max(0, dx)] = src
                    found |= torch.equal(candidate, shifted)
        assert found
    flips = {torch.equal(random_crop_flip(image, pad=0), image.flip(1)) for _ in range(20)}
    assert flips == {True, False}  # pad 0: only the flip, about half the time


@pytest.mark.parametrize("name", AUTO_AUGMENT[1:])
def test_auto_augment_policy(name):
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    policy = AutoAugment(name)

    def draws(seed):
        torch.manual_seed(seed)
        return [policy(image) for _ in range(12)]

    first = draws(0)
    assert all(out.shape == (32, 32, 3) and out.dtype == torch.uint8 for out in first)
    assert all(torch.equal(a, b) for a, b in zip(first, draws(0)))  # reproducible from torch's global seed
    assert not all(torch.equal(a, b) for a, b in zip(first, draws(1)))
    changed = [not torch.equal(out, image) for out in first]
    assert sum(changed) >= 6  # most draws alter the image (TrivialAugment's identity op is 1 in 31)
    with pytest.raises(ValueError, match="uint8"):
        policy(image.float())


def test_randaugment_settings_reach_torchvision():
    assert (AutoAugment("randaugment").policy.num_ops, AutoAugment("randaugment").policy.magnitude) == (2, 9)
    policy = AutoAugment("randaugment", num_ops=1, magnitude=4).policy
    assert (policy.num_ops, policy.magnitude) == (1, 4)
    with pytest.raises(ValueError, match="unknown augmentation policy"):
        AutoAugment("cutout")


@pytest.mark.parametrize("name", ["trivial", "randaugment"])
def test_cifar_auto_augment_on_the_grid_before_permuting(tmp_path, name):
    write_cifar(tmp_path)
    flags = dict(dataset="cifar10", data_dir=str(tmp_path), auto_augment=name, crop_padding=2)
    grid = build_dataset(ns(**flags))
    permuted = build_dataset(ns(permute_pixels=True, **flags))
    crop_flip = build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path), crop_padding=2))
    perm = permuted.permutation
    differs = 0
    for seed in range(16):
        torch.manual_seed(seed)
        x_grid = grid.train[seed % 20][0]
        torch.manual_seed(seed)
        x_perm = permuted.train[seed % 20][0]
        # the same draws on the image grid, then the fixed permutation: geometric ops act on true neighbours
        assert torch.equal(x_perm, x_grid[perm])
        torch.manual_seed(seed)
        differs += not torch.equal(x_grid, crop_flip.train[seed % 20][0])  # same crop and flip, then the policy
    assert differs >= 12
    # evaluation items are never augmented: the test split and the validation view of the training set
    plain = build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path), no_augment=True))
    assert torch.equal(grid.test[0][0], plain.test[0][0])
    assert torch.equal(eval_view(grid.train)[0][0], plain.train[0][0])


def test_cifar_corrupt_batch_names_the_file(tmp_path):
    folder = write_cifar(tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3"):
        build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path)))


def test_cifar_missing_with_failing_download(tmp_path, no_network):
    with pytest.raises(DataError) as err:
        build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path / "data")))
    message = str(err.value)
    assert "could not download CIFAR-10" in message and "network disabled" in message
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and "\n" not in message
    assert no_network == [(cifar_module.URL, str(tmp_path / "data"))]


def test_cifar_partial_copy_is_not_overwritten(tmp_path, no_network):
    folder = write_cifar(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="missing.*test_batch"):
        build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path)))
    assert no_network == []


def test_cifar_download_then_load(tmp_path, monkeypatch):
    def fake_download(url, download_root, **kwargs):
        assert kwargs["md5"] == cifar_module.ARCHIVE_MD5
        write_cifar(Path(download_root))

    monkeypatch.setattr(download_module, "download_and_extract_archive", fake_download)
    bundle = build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path)))
    assert len(bundle.train) == 20 and "downloaded from" in bundle.source


def test_cifar_checksums_only_for_full_release(tmp_path, monkeypatch):
    folder = write_cifar(tmp_path, per_batch=4, test_size=4)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setattr(cifar_module, "IMAGES_PER_FULL_BATCH", 4)  # pretend 4 images is the full batch size
    monkeypatch.setattr(cifar_module, "FILE_MD5", md5)
    assert "full official release, checksums OK" in build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path))).source
    monkeypatch.setitem(md5, "data_batch_2", "0" * 32)
    source = build_dataset(ns(dataset="cifar10", data_dir=str(tmp_path))).source
    assert "md5 differs" in source and "data_batch_2" in source


# --------------------------------------------------------------------------------------------------- ModelNet40
def modelnet(tmp_path, **flags):
    return build_dataset(ns(dataset="modelnet40", data_dir=str(tmp_path), **flags))


def test_modelnet_reads_pointnet_layout(tmp_path):
    folder = write_modelnet(tmp_path)
    bundle = modelnet(tmp_path, modelnet40_num_points=16)
    assert (len(bundle.train), len(bundle.test)) == (10, 5)
    assert bundle.class_names == NAMES and bundle.num_classes == 5
    assert (bundle.kind, bundle.num_tokens, bundle.in_channels, bundle.pos_dim) == ("pointcloud", 16, 3, 3)
    assert bundle.positions is None and bundle.permutation is None and bundle.image_shape is None
    assert "subset or re-packed copy" in bundle.source
    assert list(bundle.train.labels) == [0, 1, 2, 3, 4, 0, 0, 1, 2, 3]
    x, label = bundle.test[2]
    assert x.shape == (16, 3) and x.dtype == torch.float32 and type(label) is int and label == 2
    # evaluation clouds: a subset of the stored points, centred and scaled into the unit sphere
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.isclose(x.norm(dim=1).max(), torch.tensor(1.0))
    with h5py.File(folder / "ply_data_test0.h5") as f:
        stored = torch.from_numpy(f["data"][2])
    subset = stored[bundle.test.eval_index]
    expected = subset - subset.mean(0)
    assert torch.allclose(x, expected / expected.norm(dim=1).max(), atol=1e-5)


def test_modelnet_subsets(tmp_path):
    write_modelnet(tmp_path)
    bundle = modelnet(tmp_path, modelnet40_num_points=16, no_augment=True)
    assert torch.equal(bundle.test[0][0], bundle.test[0][0])
    assert torch.equal(bundle.test[0][0], modelnet(tmp_path, modelnet40_num_points=16).test[0][0])
    torch.manual_seed(0)
    assert not torch.equal(bundle.train[0][0], bundle.train[0][0])  # a fresh random 16 of 64 each time
    full = modelnet(tmp_path, modelnet40_num_points=64, no_augment=True)
    assert torch.equal(full.train[0][0], full.train[0][0])  # all points, no augmentation: deterministic
    augmented = modelnet(tmp_path, modelnet40_num_points=64)
    assert not torch.equal(augmented.train[0][0], augmented.train[0][0])
    assert torch.equal(augmented.test[0][0], full.test[0][0])  # never augmented at evaluation


def test_rotation_is_about_the_up_axis(monkeypatch):
    monkeypatch.setattr(points_module, "SCALE_RANGE", (1.0, 1.0))
    cloud = torch.randn(50, 3)
    torch.manual_seed(0)
    rotated = points_module.augment_cloud(cloud, rotate=True)
    assert not torch.allclose(rotated, cloud)
    assert torch.allclose(rotated[:, 1], cloud[:, 1])
    assert torch.allclose(rotated[:, [0, 2]].norm(dim=1), cloud[:, [0, 2]].norm(dim=1), atol=1e-5)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_modelnet_corrupt_file_names_it(tmp_path, damage):
    folder = write_modelnet(tmp_path)
    path = folder / "ply_data_train1.h5"
    path.write_bytes(path.read_bytes()[:3000] if damage == "truncate" else b"not an hdf5 file" * 100)
    with pytest.raises(DataError, match="ply_data_train1.h5"):
        modelnet(tmp_path)


def test_modelnet_missing_listed_file(tmp_path):
    folder = write_modelnet(tmp_path)
    (folder / "ply_data_test0.h5").unlink()
    with pytest.raises(DataError, match="ply_data_test0.h5"):
        modelnet(tmp_path)


def test_modelnet_too_many_points(tmp_path):
    write_modelnet(tmp_path, points=64)
    with pytest.raises(DataError, match="modelnet40_num_points"):
        modelnet(tmp_path, modelnet40_num_points=65)


def test_modelnet_missing_with_failing_download(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("PERCEIVER_MODELNET40_URL", raising=False)
    with pytest.raises(DataError) as err:
        modelnet(tmp_path)
    message = str(err.value)
    assert "could not download ModelNet40" in message and "--modelnet40_url" in message
    assert "modelnet40_ply_hdf5_2048" in message and "shape_names.txt" in message and "\n" not in message
    monkeypatch.setenv("PERCEIVER_MODELNET40_URL", "http://mirror.invalid/env.zip")
    with pytest.raises(DataError):
        modelnet(tmp_path)
    with pytest.raises(DataError):
        modelnet(tmp_path, modelnet40_url="http://mirror.invalid/flag.zip")
    urls = [url for url, _ in no_network]
    assert urls == ["https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip",
                    "http://mirror.invalid/env.zip", "http://mirror.invalid/flag.zip"]


def test_modelnet_class_subset_relabels_in_the_given_order(tmp_path):
    write_modelnet(tmp_path)
    full = modelnet(tmp_path, modelnet40_num_points=16)
    sub = modelnet(tmp_path, modelnet40_num_points=16, modelnet40_classes=["bed", "airplane"])
    assert sub.class_names == ["bed", "airplane"] and sub.num_classes == 2
    expected = [{2: 0, 0: 1}[int(y)] for y in full.train.labels if int(y) in (0, 2)]
    assert sub.train.labels.tolist() == expected
    with pytest.raises(DataError, match="unknown class"):
        modelnet(tmp_path, modelnet40_num_points=16, modelnet40_classes=["nope"])


# ---------------------------------------------------------------------------------------------- built-in shapes
SMALL = dict(shapes_train_size=200, shapes_test_size=50)


def test_shapes2d(tmp_path):
    a = build_dataset(ns(dataset="shapes2d", **SMALL))
    again = build_dataset(ns(dataset="shapes2d", **SMALL))
    other = build_dataset(ns(dataset="shapes2d", seed=1, **SMALL))
    assert np.array_equal(a.train.images, again.train.images) and np.array_equal(a.test.masks, again.test.masks)
    assert not np.array_equal(a.train.images, other.train.images)
    assert not np.array_equal(a.train.images[:50], a.test.images)  # train and test from different streams
    assert (a.kind, a.num_tokens, a.in_channels, a.pos_dim, a.image_shape) == ("image", 1024, 3, 2, (32, 32, 3))
    assert a.num_classes == len(a.class_names) == 10
    assert list(np.bincount(a.train.labels)) == [20] * 10 and list(np.bincount(a.test.labels)) == [5] * 10
    x, label = a.test[0]
    assert x.shape == (1024, 3) and x.dtype == torch.float32 and label == a.test.labels[0]
    # tokens are the normalised pixels
    mean, std = torch.tensor(a.mean), torch.tensor(a.std)
    pixels = torch.from_numpy(a.test.images[0]).reshape(1024, 3).float() / 255
    assert torch.allclose(x, (pixels - mean) / std, atol=1e-5)
    # the mask marks the drawn shape: its pixels have a colour clearly apart from the background's
    images, masks = a.train.images.astype(np.float32), a.train.masks
    assert masks.shape == (200, 32, 32) and masks.any(axis=(1, 2)).all() and (~masks).any(axis=(1, 2)).all()
    for image, mask in zip(images, masks):
        gap = np.abs(image[mask].mean(axis=0) - image[~mask].mean(axis=0))
        assert (gap > 50).all()
        assert image[~mask].std(axis=0).max() < 15  # the background is one colour plus noise


def test_shapes2d_permuted():
    plain = build_dataset(ns(dataset="shapes2d", **SMALL))
    permuted = build_dataset(ns(dataset="shapes2d", permute_pixels=True, **SMALL))
    assert torch.equal(permuted.test[4][0], plain.test[4][0][permuted.permutation])
    assert torch.equal(permuted.positions, plain.positions[permuted.permutation])


def test_shapes3d():
    a = build_dataset(ns(dataset="shapes3d", shapes_num_points=64, **SMALL))
    again = build_dataset(ns(dataset="shapes3d", shapes_num_points=64, **SMALL))
    other = build_dataset(ns(dataset="shapes3d", seed=1, shapes_num_points=64, **SMALL))
    assert np.array_equal(a.train.points, again.train.points) and not np.array_equal(a.train.points, other.train.points)
    assert (a.kind, a.num_tokens, a.in_channels, a.pos_dim, a.positions) == ("pointcloud", 64, 3, 3, None)
    assert list(np.bincount(a.train.labels)) == [20] * 10 and list(np.bincount(a.test.labels)) == [5] * 10
    x, label = a.train[3]
    assert x.shape == (64, 3) and x.dtype == torch.float32 and label == a.train.labels[3]
    assert torch.equal(x, a.train[3][0])
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.isclose(x.norm(dim=1).max(), torch.tensor(1.0))
