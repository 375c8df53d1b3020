"""Peak memory of a step: RSS in a fresh subprocess on the CPU, max allocated bytes on CUDA.

A CPU probe runs in its own process (`run_child`: ``python -m benchmarks.<module> SPEC``, the answer on a line
``RESULT {json}``) so that nothing another model allocated earlier is still counted: it builds one model, reads
its RSS, resets the high-water mark, runs the steps and reports ``VmHWM``.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch

from benchmarks.configs import make_batch
from benchmarks.machine import tune_malloc
from benchmarks.timing import sync
from benchmarks.variants import build_variant, eval_step_fn, make_optimizer, train_step_fn

ROOT = Path(__file__).resolve().parents[1]


def rss_status() -> dict[str, float]:
    """VmRSS / VmHWM / VmSize of this process in MiB (Linux); ru_maxrss elsewhere."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmSize"):
                    out[key] = int(rest.split()[0]) / 1024
    except OSError:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024
        out = {"VmRSS": float("nan"), "VmHWM": peak, "VmSize": float("nan")}
    return out


def reset_peak_rss() -> None:
    """Set the high-water mark (VmHWM) to the current RSS (Linux >= 4.0; elsewhere the process's peak stays)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def apply_process_settings(spec: dict) -> None:
    """A child process runs with its parent's thread count and malloc tuning."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("malloc_tune"):
        tune_malloc()


def memory_probe(spec: dict) -> dict:
    """In a fresh subprocess: build one variant, run ``steps`` train (or eval) steps, report RSS figures (MiB)."""
    apply_process_settings(spec)
    device = torch.device(spec["device"])
    cfg = spec["cfg"]
    v = build_variant(spec["variant"], cfg, device)
    batch = make_batch(cfg, device)
    if spec["mode"] == "train":
        fn = train_step_fn(v, batch, make_optimizer(v.model, cfg["lr"]), device)
    else:
        fn = eval_step_fn(v, batch, device)
    before = rss_status()
    reset_peak_rss()
    for _ in range(spec["steps"]):
        fn()
    peak = rss_status()["VmHWM"]
    return {"baseline_rss_mb": before["VmRSS"], "peak_rss_mb": peak, "step_mb": peak - before["VmRSS"]}


def run_child(module: str, spec: dict, timeout: float) -> dict:
    """Run ``benchmarks.<module>`` in a fresh interpreter on ``spec``; its RESULT, or why there is none."""
    cmd = [sys.executable, "-m", f"benchmarks.{module}", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_s": timeout}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    oom = proc.returncode in (-9, 137) or any("memory" in t.lower() for t in tail)
    return {"status": "oom" if oom else "error", "returncode": proc.returncode, "tail": tail}


def child_main(fn: Callable[[dict], dict]) -> None:
    """The child's side of `run_child`: the spec is argv[1], the answer one RESULT line on stdout."""
    print("RESULT " + json.dumps(fn(json.loads(sys.argv[1]))), flush=True)


def cuda_memory(fn: Callable[[], None], steps: int, device: torch.device) -> dict:
    """Max allocated bytes over ``steps`` calls of ``fn``, and what they added to the allocation before (MiB)."""
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    for _ in range(steps):
        fn()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"baseline_mb": base / 2 ** 20, "peak_allocated_mb": peak / 2 ** 20, "step_mb": (peak - base) / 2 ** 20}


if __name__ == "__main__":
    child_main(memory_probe)
