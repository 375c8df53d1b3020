"""--train_size: a stratified, seeded part of the training split, nested across sizes, after --val_split."""
import json
from collections import Counter

import numpy as np
import pytest

from torch.utils.data import Subset

from perceiver.components import build_data as build_split
from perceiver.data import DataSettings
from perceiver.data.subset import stratified_subset
from perceiver.errors import UsageError
from perceiver.probes import dataset_labels


def test_each_class_keeps_its_share_and_smaller_parts_lie_inside_larger_ones():
    labels = np.repeat(np.arange(4), [40, 20, 30, 10])  # unbalanced: shares 0.4, 0.2, 0.3, 0.1
    parts = {n: stratified_subset(labels, n, seed=3) for n in (10, 25, 50, 100)}
    for n, idx in parts.items():
        assert len(idx) == len(set(idx.tolist())) == n
        counts = Counter(labels[idx].tolist())
        for c, share in enumerate((0.4, 0.2, 0.3, 0.1)):
            assert abs(counts[c] - share * n) <= 1, (n, c, counts)
    assert set(parts[10]) <= set(parts[25]) <= set(parts[50]) <= set(parts[100]) == set(range(100))
    assert not np.array_equal(stratified_subset(labels, 25, seed=4), parts[25])  # another seed, another part
    assert np.array_equal(stratified_subset(labels, 25, seed=3), parts[25])  # deterministic
    with pytest.raises(ValueError):
        stratified_subset(labels, 101, seed=0)


def build_data(val_split=0.0, **flags):
    base = dict(dataset="shapes2d", shapes_train_size=200, shapes_test_size=20, seed=1)
    return build_split(DataSettings.from_flags({**base, **flags}), val_split=val_split)


def test_the_part_is_taken_after_the_validation_split():
    _, full_train, val = build_data(val_split=0.1)
    _, part, val_again = build_data(val_split=0.1, train_size=60)
    assert val_again.indices == val.indices  # the same validation images whatever the part's size
    assert len(part) == 60 and set(part.indices) <= set(full_train.indices)
    assert not isinstance(part.dataset, Subset)  # one flat Subset (the device data path reads its indices)
    assert sorted(Counter(dataset_labels(part).tolist()).values()) == [6] * 10
    _, whole, _ = build_data(train_size=200)
    assert len(whole) == 200
    with pytest.raises(UsageError, match="--train_size 181 is more than the 180 training samples"):
        build_data(val_split=0.1, train_size=181)


def test_train_py_trains_on_the_part(run_train):
    res = run_train(["--epochs", "1", "--train_size", "32", "--val_split", "0.25"])
    assert res.code == 0, res.err
    config = json.loads((res.run_dir / "config.json").read_text())
    assert config["dataset"]["train_size"] == 32 and config["dataset"]["val_size"] == 20  # per class, a rounded quarter
    row = json.loads((res.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["train_samples"] == 32


def test_bad_train_size_is_one_line(run_train):
    res = run_train(["--epochs", "1", "--train_size", "0"])
    assert res.code == 2 and "--train_size is a number of training samples and must be >= 1" in res.err
    res = run_train(["--epochs", "1", "--train_size", "65"], name="too_many")
    assert res.code == 2 and "--train_size 65 is more than the 64 training samples" in res.err
    assert not res.run_dir.exists()  # refused before anything is written, like every other bad flag
