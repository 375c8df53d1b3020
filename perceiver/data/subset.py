"""A stratified, seeded part of a training set (``--train_size``), for runs on fewer images than a split holds.

Every sample gets a place in one seeded order that interleaves the classes in proportion to their sizes (the
j-th of a class's ``n`` shuffled samples sits at ``(j + 1/2) / n``); a subset of ``size`` is the first ``size`` of
that order. So each class keeps its share of the split to within one sample, and for one seed a smaller subset
is always part of a larger one: a data-scaling curve adds images rather than drawing new ones at each size.
"""
from __future__ import annotations

import numpy as np


def stratified_subset(labels: np.ndarray, size: int, *, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` samples of ``labels``, stratified by class; ValueError if ``size`` is too big."""
    labels = np.asarray(labels)
    if not 1 <= size <= len(labels):
        raise ValueError(f"a subset of {size} from {len(labels)} samples")
    rng = np.random.default_rng([seed, 2])  # a stream of its own, apart from the validation split's [seed, 1]
    index, key = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        index.append(members)
        key.append((np.arange(len(members)) + 0.5) / len(members))
    index, key = np.concatenate(index), np.concatenate(key)
    order = np.argsort(key, kind="stable")  # ties (equal class sizes) in class order
    return np.sort(index[order[:size]])
