"""The device-resident data path (perceiver/data/device.py) against the DataLoader path, on CPU tensors.

Deterministic parts (order, normalisation, permutation, evaluation subsets) must give the same batches; random
augmentations must draw from the same distributions.
"""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from perceiver.components import eval_view, split_train_val
from perceiver.data.device import DeviceBatches, augment_clouds, crop_flip, device_data_reason
from perceiver.data.images import ImageTokens, pixel_permutation, random_crop_flip
from perceiver.data.points import PointClouds, augment_cloud
from perceiver.distributed import DistInfo, EpochSampler, ShardSampler

CPU = torch.device("cpu")


def images(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, n)


def image_set(augment=False, permute=False, **kw):
    x, y = images()
    perm = pixel_permutation(64, seed=3) if permute else None
    return ImageTokens(x, y, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), permutation=perm, augment=augment, **kw)


def cloud_set(train=False, augment=False, num_points=20, **kw):
    rng = np.random.default_rng(1)
    return PointClouds(rng.normal(size=(12, 32, 3)).astype(np.float32), rng.integers(0, 4, 12),
                       num_points=num_points, train=train, augment=augment, **kw)


def both_paths(dataset, batch_size=5, epoch=2, skip=0, shard=False):
    info = DistInfo()
    if shard:
        sampler = ShardSampler(dataset, info=info)
    else:
        sampler = EpochSampler(dataset, info=info, seed=7)
        sampler.set_epoch(epoch, skip=skip)
    loader = list(DataLoader(dataset, batch_size=batch_size, sampler=sampler))
    device = DeviceBatches(dataset, sampler=sampler, batch_size=batch_size, device=CPU)
    device.seed_epoch(11)
    return loader, list(device), device


@pytest.mark.parametrize("make", [
    lambda: image_set(),
    lambda: image_set(permute=True),
    lambda: cloud_set(),                              # evaluation: the fixed point subset
    lambda: cloud_set(num_points=32, train=True),     # every point, in stored order
    lambda: split_train_val(image_set(augment=True), 0.25, seed=0)[1],   # a validation Subset of an eval view
    lambda: split_train_val(image_set(permute=True), 0.25, seed=0)[0],
])
@pytest.mark.parametrize("shard", [False, True])
def test_deterministic_batches_equal_the_dataloader_batches(make, shard):
    ref, got, device = both_paths(make(), shard=shard)
    assert len(got) == len(ref) == len(device)
    for (xa, ya), (xb, yb) in zip(ref, got):
        torch.testing.assert_close(xb, xa, rtol=1e-6, atol=1e-6)
        assert torch.equal(ya, yb)


def test_drop_last_serves_the_full_batches_of_the_dataloader():
    dataset = image_set()  # 24 images: 4 batches of 5 and one of 4
    sampler = EpochSampler(dataset, info=DistInfo(), seed=7)
    ref = list(DataLoader(dataset, batch_size=5, sampler=sampler, drop_last=True))
    device = DeviceBatches(dataset, sampler=sampler, batch_size=5, device=CPU, drop_last=True)
    got = list(device)
    assert len(got) == len(ref) == len(device) == 4
    for (xa, ya), (xb, yb) in zip(ref, got):
        torch.testing.assert_close(xb, xa, rtol=1e-6, atol=1e-6)
        assert torch.equal(ya, yb)


def test_a_resumed_epoch_replays_the_same_augmented_batches():
    dataset = image_set(augment=True, pad=2)
    _, full, _ = both_paths(dataset, epoch=3)
    _, tail, _ = both_paths(dataset, epoch=3, skip=10)  # two batches of 5 already trained
    for (xa, ya), (xb, yb) in zip(full[2:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_crop_flip_draws_the_dataloader_distribution():
    torch.manual_seed(0)
    image = torch.arange(6 * 6, dtype=torch.float32).view(6, 6, 1) + 1  # every pixel distinct, none zero
    n = 3000
    loader_draws = torch.stack([random_crop_flip(image, pad=2) for _ in range(n)])
    gen = torch.Generator().manual_seed(0)
    device_draws = crop_flip(image.expand(n, -1, -1, -1), pad=2, generator=gen)

    def describe(batch):  # how far the content moved and how often it was mirrored
        centre = batch[:, 2:4, 2:4, 0]
        flipped = (centre[:, 0, 0] > centre[:, 0, 1]).float()  # a mirrored row runs backwards
        zeros = (batch == 0).float().mean(dim=(1, 2, 3))       # the share of padding that came in
        return flipped.mean().item(), zeros.mean().item(), (zeros == 0).float().mean().item()

    for a, b in zip(describe(loader_draws), describe(device_draws)):
        assert a == pytest.approx(b, abs=0.04)


def test_point_cloud_augmentation_draws_the_dataloader_distribution():
    torch.manual_seed(0)
    cloud = torch.randn(64, 3)
    n = 2000
    ref = torch.stack([augment_cloud(cloud, rotate=True, jitter=0.01) for _ in range(n)])
    got = augment_clouds(cloud.expand(n, -1, -1), rotate=True, jitter=0.01,
                         generator=torch.Generator().manual_seed(0))
    for stat in (lambda t: t[..., 1].std(dim=1),                     # the up axis: scaled, never rotated
                 lambda t: t[..., [0, 2]].norm(dim=-1).mean(dim=1),  # radius in the rotation plane
                 lambda t: torch.atan2(t[:, 0, 2], t[:, 0, 0])):      # the angle of one point
        a, b = stat(ref), stat(got)
        assert a.mean().item() == pytest.approx(b.mean().item(), abs=0.05 * a.std().item() + 1e-3)
        assert a.std().item() == pytest.approx(b.std().item(), rel=0.1)


def test_training_point_subsets_are_random_and_distinct():
    dataset = cloud_set(train=True, num_points=10)
    _, batches, _ = both_paths(dataset, batch_size=12)
    x, _ = batches[0]
    assert x.shape == (12, 10, 3)
    radii = x.norm(dim=-1).amax(dim=1)
    torch.testing.assert_close(radii, torch.ones(12))  # normalised into the unit sphere, as the dataset does


def test_datasets_the_device_path_cannot_serve_are_named():
    assert device_data_reason(image_set()) is None and device_data_reason(eval_view(cloud_set())) is None
    assert "not an image or point-cloud" in device_data_reason(torch.utils.data.TensorDataset(torch.zeros(2)))
    with pytest.raises(ValueError, match="cannot serve"):
        DeviceBatches(torch.utils.data.TensorDataset(torch.zeros(2)), sampler=[0, 1], batch_size=1, device=CPU)


def test_train_py_with_device_data_on_cpu(run_train):
    res = run_train(["--epochs", "2", "--device_data", "on", "--val_split", "0.25"])
    assert res.code == 0, res.err
    from perceiver.rundir import RunDir
    run = RunDir(res.run_dir)
    assert run.read_config()["data_on_device"] is True and "batches served from device memory" in res.out
    assert len(run.read_metrics()) == 2


def test_a_cpu_augmentation_policy_keeps_the_dataloader_but_not_for_evaluation():
    from perceiver.data.augment import AutoAugment
    train = image_set(augment=True, policy=AutoAugment("trivial"))
    assert "policy" in device_data_reason(train)
    assert device_data_reason(eval_view(train)) is None  # evaluation never applies it
