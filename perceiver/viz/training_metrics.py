"""Training-curve analysis for the dashboard: pure numpy, no matplotlib.

Input: the rows of ``metrics.jsonl`` (one per finished epoch; accuracies are fractions in [0, 1]).
Output: arrays for the curves and the dashboard metrics, all accuracies kept as fractions.

Definitions (the dashboard's "performance metrics"; n = number of epochs written so far):

=================  =======================================  ========================================================
metric             formula                                  notes
=================  =======================================  ========================================================
Stability          ``1 - std(test_acc[last 10 epochs])``    population std (ddof=0) of the test accuracy over the
                                                            last ``min(10, n)`` epochs; ``None`` when n < 2
Convergence        ``1 - |loss[n] - loss[n-1]|``            test loss (train loss when no test loss); ``None``
                                                            when n < 2
Generalization     ``1 - |train_acc[n] - test_acc[n]|``     final epoch
Improvement        ``test_acc[n] - test_acc[1]``            first to last epoch
Overfitting        ``max(0, train_acc[n] - test_acc[n])``   final epoch
=================  =======================================  ========================================================

Training state (colour-coded on the dashboard): the least-squares slope of the test loss over the last
``min(10, n)`` epochs, divided by the mean loss of that window (relative change per epoch):

* **diverging**  relative slope ``> +1 %`` per epoch, or a non-finite loss;
* **converged**  relative slope within ``±1 %`` per epoch;
* **converging** relative slope ``< -1 %`` per epoch (the loss is still falling);
* **undetermined** fewer than 3 epochs.

Gap diagnosis (final epoch, gap = train_acc - test_acc):

* **overfitting**  gap ``> 0.05`` (train beats test by more than 5 points);
* **underfitting** gap ``<= 0.05`` and train accuracy ``< 0.60`` (the model does not fit even its training set);
* **balanced**     otherwise.

Loss axes switch to a log scale when all losses are positive and ``max / min > 10`` (they span a decade).
Polynomial trend lines need at least 4 epochs: degree 1 below 8 epochs, 2 below 20, 3 from 20 on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..rundir import SERIES_FIELDS

STABILITY_WINDOW = 10
STATE_WINDOW = 10
STATE_MIN_EPOCHS = 3
CONVERGED_REL_SLOPE = 0.01
OVERFIT_GAP = 0.05
UNDERFIT_TRAIN_ACC = 0.60
LOG_SCALE_RATIO = 10.0

DEFINITIONS = {
    "stability": "1 - std(test_acc over the last min(10, n) epochs), population std",
    "convergence": "1 - |final_loss - previous_loss| (test loss; train loss if no test loss)",
    "generalization": "1 - |train_acc - test_acc| at the final epoch",
    "improvement": "final test_acc - initial test_acc",
    "overfitting": "max(0, train_acc - test_acc) at the final epoch",
    "state": (f"relative least-squares slope of the test loss over the last min({STATE_WINDOW}, n) epochs: "
              f"> +{CONVERGED_REL_SLOPE:.0%}/epoch diverging, within ±{CONVERGED_REL_SLOPE:.0%} converged, "
              f"< -{CONVERGED_REL_SLOPE:.0%} converging; undetermined below {STATE_MIN_EPOCHS} epochs"),
    "diagnosis": (f"final gap = train_acc - test_acc: > {OVERFIT_GAP} overfitting; otherwise train_acc < "
                  f"{UNDERFIT_TRAIN_ACC} underfitting; else balanced"),
}

_FIELDS = SERIES_FIELDS  # the numeric per-epoch fields of metrics.jsonl (perceiver/rundir/ owns the schema)


@dataclass
class Series:
    """Per-epoch columns of metrics.jsonl as float arrays (NaN where a row lacks the field)."""

    epochs: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.epochs)

    def get(self, name: str) -> np.ndarray:
        return self.columns.get(name, np.full(len(self.epochs), np.nan))

    def has(self, name: str) -> bool:
        return name in self.columns and bool(np.isfinite(self.columns[name]).any())

    def __getattr__(self, name: str) -> np.ndarray:
        if name in _FIELDS:
            return self.get(name)
        raise AttributeError(name)


def _float(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def series_from_rows(rows: list[dict]) -> Series:
    """Sort rows by epoch; a repeated epoch (a resumed run) keeps its last row; rows without an epoch are dropped."""
    by_epoch: dict[int, dict] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        try:
            epoch = int(row["epoch"])
        except (KeyError, TypeError, ValueError):
            continue
        by_epoch[epoch] = row
    epochs = sorted(by_epoch)
    cols = {}
    keys = set(_FIELDS)
    for row in by_epoch.values():
        keys.update(k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    keys.discard("epoch")
    for k in sorted(keys):
        arr = np.array([_float(by_epoch[e].get(k)) for e in epochs], dtype=float)
        if np.isfinite(arr).any():
            cols[k] = arr
    return Series(np.array(epochs, dtype=int), cols)


def finite_last(x: np.ndarray) -> float | None:
    idx = np.flatnonzero(np.isfinite(x))
    return float(x[idx[-1]]) if len(idx) else None


def _finite_first(x: np.ndarray) -> float | None:
    idx = np.flatnonzero(np.isfinite(x))
    return float(x[idx[0]]) if len(idx) else None


def rolling(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing rolling mean and population std (the first points use the epochs available); NaNs ignored."""
    x = np.asarray(x, dtype=float)
    mean = np.full(len(x), np.nan)
    std = np.full(len(x), np.nan)
    for i in range(len(x)):
        w = x[max(0, i - window + 1): i + 1]
        w = w[np.isfinite(w)]
        if len(w):
            mean[i] = w.mean()
            std[i] = w.std()
    return mean, std


def rolling_window(n: int) -> int:
    """Rolling window for the convergence panel: ~10 % of the run, between 2 and 10 epochs."""
    return int(min(10, max(2, round(n / 10))))


def trend_degree(n: int) -> int | None:
    if n < 4:
        return None
    if n < 8:
        return 1
    if n < 20:
        return 2
    return 3


def poly_trend(epochs: np.ndarray, values: np.ndarray, num: int = 200):
    """Least-squares polynomial trend (degree from `trend_degree`) as (x, y) arrays, or None when it makes no sense."""
    ok = np.isfinite(values)
    x, y = np.asarray(epochs, dtype=float)[ok], np.asarray(values, dtype=float)[ok]
    deg = trend_degree(len(x))
    if deg is None or np.ptp(x) == 0:
        return None
    poly = np.polynomial.Polynomial.fit(x, y, deg)
    xs = np.linspace(x.min(), x.max(), num)
    return xs, poly(xs)


def use_log_scale(*arrays: np.ndarray) -> bool:
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays]) if arrays else np.array([])
    vals = vals[np.isfinite(vals)]
    if len(vals) < 2 or (vals <= 0).any():
        return False
    return bool(vals.max() / vals.min() > LOG_SCALE_RATIO)


def training_state(loss: np.ndarray, epochs: np.ndarray | None = None) -> tuple[str, float | None]:
    """(state, relative slope per epoch) of a loss curve; see the module docstring for the thresholds."""
    loss = np.asarray(loss, dtype=float)
    if epochs is None:
        epochs = np.arange(len(loss))
    present = ~np.isnan(loss)
    loss, epochs = loss[present], np.asarray(epochs, dtype=float)[present]
    if len(loss) and not np.isfinite(loss).all():
        return "diverging", None
    if len(loss) < STATE_MIN_EPOCHS:
        return "undetermined", None
    w_loss, w_ep = loss[-STATE_WINDOW:], epochs[-STATE_WINDOW:]
    mean = float(np.mean(w_loss))
    slope = float(np.polyfit(w_ep, w_loss, 1)[0]) if np.ptp(w_ep) > 0 else 0.0
    rel = slope / mean if mean > 0 else slope
    if rel > CONVERGED_REL_SLOPE:
        return "diverging", rel
    if rel >= -CONVERGED_REL_SLOPE:
        return "converged", rel
    return "converging", rel


def diagnose_gap(train_acc: float | None, test_acc: float | None) -> str:
    if train_acc is None or test_acc is None:
        return "undetermined"
    gap = train_acc - test_acc
    if gap > OVERFIT_GAP:
        return "overfitting"
    if train_acc < UNDERFIT_TRAIN_ACC:
        return "underfitting"
    return "balanced"


def _best(epochs: np.ndarray, x: np.ndarray, mode: str) -> tuple[float | None, int | None]:
    ok = np.flatnonzero(np.isfinite(x))
    if not len(ok):
        return None, None
    i = ok[np.argmax(x[ok])] if mode == "max" else ok[np.argmin(x[ok])]
    return float(x[i]), int(epochs[i])


def compute_metrics(rows_or_series) -> dict:
    """Every number the dashboard shows, as a JSON-ready dict (accuracies as fractions)."""
    s = rows_or_series if isinstance(rows_or_series, Series) else series_from_rows(rows_or_series)
    n = len(s)
    train_acc, test_acc = s.get("train_acc"), s.get("test_acc")
    loss = s.get("test_loss") if s.has("test_loss") else s.get("train_loss")
    loss_name = "test_loss" if s.has("test_loss") else "train_loss"

    final_train, final_test = finite_last(train_acc), finite_last(test_acc)
    recent = test_acc[-STABILITY_WINDOW:]
    recent = recent[np.isfinite(recent)]
    stability = float(1.0 - recent.std()) if len(recent) >= 2 else None
    finite_loss = loss[np.isfinite(loss)]
    convergence = float(1.0 - abs(finite_loss[-1] - finite_loss[-2])) if len(finite_loss) >= 2 else None
    both = final_train is not None and final_test is not None
    generalization = float(1.0 - abs(final_train - final_test)) if both else None
    overfitting = float(max(0.0, final_train - final_test)) if both else None
    first_test = _finite_first(test_acc)
    improvement = float(final_test - first_test) if final_test is not None and n >= 2 else None
    state, rel_slope = training_state(loss, s.epochs)

    best = {}
    for name, mode in (("test_acc", "max"), ("train_acc", "max"), ("val_acc", "max"), ("test_acc_top5", "max"),
                       ("test_loss", "min"), ("train_loss", "min"), ("val_loss", "min")):
        if s.has(name):
            value, epoch = _best(s.epochs, s.get(name), mode)
            best[name] = {"value": value, "epoch": epoch}
    final = {name: finite_last(s.get(name)) for name in _FIELDS if s.has(name)}
    if s.has("elapsed_s"):  # wall time since the start, written by train.py
        total_time = finite_last(s.get("elapsed_s"))
    elif s.has("epoch_time_s"):
        total_time = float(np.nansum(s.get("epoch_time_s")))
    else:
        total_time = None
    return {
        "epochs_completed": n,
        "first_epoch": int(s.epochs[0]) if n else None,
        "last_epoch": int(s.epochs[-1]) if n else None,
        "accuracy_unit": "fraction in [0, 1]",
        "metrics": {
            "stability": stability,
            "convergence": convergence,
            "generalization": generalization,
            "improvement": improvement,
            "overfitting": overfitting,
        },
        "state": {
            "label": state,
            "loss": loss_name,
            "relative_slope_per_epoch": rel_slope,
            "window_epochs": int(min(STATE_WINDOW, n)),
            "threshold": CONVERGED_REL_SLOPE,
        },
        "gap": {
            "final": float(final_train - final_test) if both else None,
            "diagnosis": diagnose_gap(final_train, final_test),
            "overfit_threshold": OVERFIT_GAP,
            "underfit_train_acc": UNDERFIT_TRAIN_ACC,
        },
        "best": best,
        "final": final,
        "total_time_s": total_time,
        "definitions": DEFINITIONS,
    }
