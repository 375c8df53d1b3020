"""The machine a benchmark runs on: its description, glibc malloc tuning, and its matmul rate ("peak")."""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from typing import Callable

import torch

from benchmarks.timing import timed_rounds


def machine_info(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(), "logical_cpus": os.cpu_count(), "device": str(device)}
    with contextlib.suppress(Exception):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["cpu_model"] = fields.get("Model name", "").strip()
        info["cores_per_socket"] = fields.get("Core(s) per socket", "").strip()
        info["sockets"] = fields.get("Socket(s)", "").strip()
    if not info.get("cpu_model"):
        info["cpu_model"] = platform.processor()
    with contextlib.suppress(Exception):
        info["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def tune_malloc() -> dict:
    """glibc: serve large tensors from the heap and keep freed memory (no mmap/munmap + page faults per tensor).

    By default glibc maps every allocation above a (dynamic, <= 32 MiB) threshold with mmap and unmaps it on
    free, so each large activation costs its page faults again on every step. This is the ``mallopt`` version
    of ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...``; it changes how fast
    memory is obtained, not how much a step needs. Applies to this process only; both libraries benefit.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return {"applied": False}
    m_trim_threshold, m_mmap_threshold = -1, -3
    got = {}
    for value in (1 << 30, 1 << 28, 1 << 26, 1 << 25):
        if libc.mallopt(m_mmap_threshold, value):
            got["mmap_threshold"] = value
            break
    if libc.mallopt(m_trim_threshold, (1 << 31) - 1):
        got["trim_threshold"] = (1 << 31) - 1
    return {"applied": bool(got), **got}


def matmul_fn(device: torch.device, dtype: torch.dtype = torch.float32,
              n: int | None = None) -> tuple[Callable[[], None], int]:
    """A few large square matmuls, the machine's measured peak: returns (fn, FLOPs per call).

    Timed in the same rounds as the models (`timing.timed_rounds`), it gives the rate the machine reached at
    that load, against which a model's achieved FLOP/s is a fraction.
    """
    n = n or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 3 if device.type == "cpu" else 20

    def fn():
        for _ in range(reps):
            torch.mm(a, b)
    return fn, 2 * n ** 3 * reps


def matmul_peak(device: torch.device, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16), *,
                warmup: int = 1, iters: int = 5) -> dict[str, dict]:
    """The matmul rate of the device on its own, per dtype ("fp32", "bf16", "fp16"): FLOP/s of the median and of
    the fastest round."""
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    fns = {names[d]: matmul_fn(device, d) for d in dtypes}
    times = timed_rounds({k: fn for k, (fn, _) in fns.items()}, warmup=warmup, iters=iters, device=device)
    return {k: {"median_flops": flops / times[k]["median_s"], "best_flops": flops / times[k]["min_s"]}
            for k, (_, flops) in fns.items()}
