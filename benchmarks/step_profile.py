"""The ``profile`` section of the GPU check: where one training step's time goes.

Experiment 1's model at its batch (64), bf16 autocast, compiled, LAMB: the step the ``peer`` section times. After a
warm-up (which holds the compilation), ``torch.profiler`` records ``steps`` steps and reports, per step:

- ``wall_s``: the host's wall time (the device synchronised at the end);
- ``device_busy_s``: the summed time of the kernels the device ran (CUDA only);
- ``kernels``: kernel launches (CUDA only);
- ``top``: the operators with the most self time on the device (on a CPU: on the host), per step.

A step whose ``device_busy_s`` is far below its ``wall_s`` leaves the device idle, waiting on the host (Python,
dispatch, launches): CUDA-graph replay (``--compile_mode reduce-overhead``) is what removes that. One whose busy
time is close to its wall time is bound by the kernels in ``top``.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks.timing import sync


def profile_step(step: Callable[[], None], device: torch.device, *, steps: int = 10, warmup: int = 3,
                 top: int = 15) -> dict:
    for _ in range(warmup):
        step()
    sync(device)
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        wall = (time.perf_counter() - t0) / steps
    out: dict = {"steps": steps, "wall_s": wall}
    if on_cuda:
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        out["kernels"] = len(kernels) / steps
        out["device_busy_s"] = sum(e.time_range.elapsed_us() for e in kernels) / 1e6 / steps
        out["device_idle_fraction"] = max(0.0, 1.0 - out["device_busy_s"] / wall)
    key = "self_device_time_total" if on_cuda else "self_cpu_time_total"
    averages = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    out["top_by"] = "device self time" if on_cuda else "host self time"
    out["top"] = [{"op": e.key, "calls": e.count / steps, "self_s": getattr(e, key) / 1e6 / steps}
                  for e in averages[:top]]
    return out


def describe(res: dict) -> list[str]:
    """The figures as log lines."""
    lines = [f"profile: {res['wall_s'] * 1e3:.1f} ms per step"
             + (f", device busy {res['device_busy_s'] * 1e3:.1f} ms ({res['kernels']:.0f} kernels), idle "
                f"{res['device_idle_fraction']:.0%}" if "kernels" in res else "")]
    lines += [f"    {t['self_s'] * 1e3:8.2f} ms  {t['calls']:6.1f} calls  {t['op'][:90]}" for t in res["top"]]
    return lines
