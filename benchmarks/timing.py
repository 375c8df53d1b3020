"""Timing callables against each other, counting the FLOPs they execute, and a time budget's seconds left.

    times = timed_rounds({"a": fn_a, "b": fn_b}, warmup=1, iters=5, device=device)
    times["a"]["median_s"], times["a"]["min_s"], times["a"]["max_s"]
    flops = count_flops(fn_a)
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarise(ts: list[float]) -> dict:
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "n": len(ts),
            "all_s": [round(t, 5) for t in ts]}


def timed_rounds(fns: dict[str, Callable[[], None]], *, warmup: int, iters: int, device: torch.device,
                 log: Callable[[str], None] = lambda s: None) -> dict[str, dict]:
    """Time functions alternately: every round runs each once, the order reversed on odd rounds.

    Functions timed in the same rounds see the same machine load (other jobs, thermal state), so their ratios
    are far steadier than their absolute times. ``warmup`` untimed rounds come first. Returns per function
    `summarise` of the ``iters`` wall-clock times plus ``cpu_median_s``: the median CPU seconds of this process
    per call (all threads), which tells waiting for a busy machine apart from computing.
    """
    names = list(fns)
    for w in range(warmup):
        for k in names:
            fns[k]()
        log(f"    warm-up round {w + 1}/{warmup} done")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(iters):
        for k in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fns[k]()
            sync(device)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        log(f"    round {r + 1}/{iters}: " + ", ".join(f"{k} {wall[k][-1]:.3f}s" for k in names))
    return {k: {**summarise(wall[k]), "cpu_median_s": statistics.median(cpu[k])} for k in names}


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs that ``fn`` executes, as ``torch.utils.flop_counter`` counts them (matrix products, attention)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class Budget:
    """Seconds left of a time budget, counted from its creation."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()
