"""Checks every loader applies to what it reads from disk: numbers a model can learn from, refused with one line
naming the file and the item otherwise."""
from __future__ import annotations

import numpy as np

from ..errors import DataError


def finite_items(values: np.ndarray, path, what: str = "item") -> None:
    """Refuse NaN or infinite values in (n, ...) ``values``; the message names the first bad item and the count.

    Call it after the cast to the type the model is fed: a float64 value beyond float32's range becomes infinite.
    """
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        others = f" and {int(bad.sum()) - 1} more" if bad.sum() > 1 else ""
        raise DataError(f"{path}: {what} {first}{others} (of {len(values)}) holds NaN or infinite values; repair or "
                        f"remove {'it' if not others else 'them'} (a model cannot learn from them)")


def class_labels(raw, path) -> np.ndarray:
    """int64 (n,) class numbers from stored labels; a label that is not a whole number (NaN, 2.5, text) is refused."""
    arr = np.asarray(raw).reshape(-1)
    if arr.dtype.kind in "biu":
        return arr.astype(np.int64)
    if arr.dtype.kind != "f":
        raise DataError(f"{path}: the labels are {arr.dtype} values, not class numbers")
    bad = ~(np.isfinite(arr) & (arr == np.round(arr)))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: label {first} is {arr[first]}, not a class number (a whole number)")
    return arr.astype(np.int64)
