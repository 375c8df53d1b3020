#!/usr/bin/env python
"""The GPU check: the specification's Experiment 1 on one GPU, end to end and against its peers.

    python benchmarks/gpu_check.py --data_dir ./data --json benchmarks/results/gpu.json      # one GPU, < 8 min
    python benchmarks/gpu_check.py --device cpu --smoke --json /tmp/gpu_smoke.json           # every section, tiny
    python benchmarks/gpu_check.py --sections peer --json /tmp/peer.json                     # one section alone

On a lent GPU machine, `benchmarks/gpu_run.sh` runs it (docs/PERFORMANCE.md, "On a GPU", says what travels).

Sections, in the order given (default: all, in this order):

- ``trainpy``: ``train.py --preset exp1 --device cuda --use_amp --compile`` (device-resident data chosen
  automatically) for ``--epochs`` epochs on the CIFAR-10 in ``--data_dir``, seed 0: training samples/s of the
  steady-state epochs (epoch 1 holds the compilation; ``compile_s`` is its extra time), the final test accuracy,
  and the recompilations and graph breaks torch logged (``TORCH_LOGS=recompiles,graph_breaks``).
- ``plain``: the same run on the plain path (float32, eager, DataLoader, ``--device_data off``), same seed.
- ``peer``: training steps at Exp1's sizes, batch 64, bf16, each model at its fastest of eager and compiled, timed
  alternately in this process: ours, ours with the cross-attention's keys/values materialised
  (``absorb_vs_project_speed``), lucidrains' perceiver-pytorch when installed, Hugging Face's
  ``PerceiverForImageClassificationFourier`` (eager) when ``transformers`` is importable.
- ``mfu``: Exp1's model alone at batches 512 and 2048 (bf16 autocast, compiled, LAMB): model FLOPs per second
  (`torch.utils.flop_counter` on the eager model) / the bf16 matmul rate measured in the same run; the best batch.
- ``cudagraphs``: the ``trainpy`` run with ``--compile_mode reduce-overhead`` (CUDA-graph replay on a GPU); the
  faster of the two is ``exp1_b64_trainpy_samples_per_s``.
- ``seeds``: the ``trainpy`` and ``plain`` runs again with seed 1, so that the accuracy comparison rests on two
  seeds of each path.
- ``profile``: where the ``peer`` section's step of our model (batch 64) spends its time: wall time against the
  device's busy time, kernel launches, the top operators (`benchmarks/step_profile.py`).

``fast_vs_plain_acc_diff`` = |mean fast - mean plain| test accuracy over the seeds run. Its standard error is the
binomial one of the two means on the test set (``fast_vs_plain_acc["se"]``); the goal is met when the difference
plus two standard errors is within it, missed when the difference less two standard errors exceeds it, and
otherwise undecided: the test set cannot tell.

Time: before a section starts, its time is estimated (`PLAN_S`, then from the sections already measured: a run of
train.py costs what the last one of its kind did) and the section is skipped, with the reason recorded, when the
estimate exceeds what is left of ``--budget_s``; a train.py run is also stopped when the budget runs out. The JSON
is written after every section, so a killed check keeps the sections it finished.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_steps import log, section_mfu, section_peer, section_profile  # noqa: E402
from benchmarks.machine import matmul_peak  # noqa: E402
from benchmarks.timing import Budget  # noqa: E402
from perceiver.rundir import RunDir  # noqa: E402

#: the GPU targets, measured by this script on one H200
GOALS = {"exp1_b64_trainpy_samples_per_s": (">=", 8000), "exp1_large_batch_mfu": (">=", 0.40),
         "exp1_vs_peer_train_speed": (">=", 3.0), "fast_vs_plain_acc_diff": ("<=", 0.02)}
SECTIONS = ("trainpy", "plain", "peer", "mfu", "cudagraphs", "seeds", "profile")

#: planning figures of each section's seconds before anything is measured: (one GPU, --smoke on a 2-core CPU)
PLAN_S = {"trainpy": (150, 150), "plain": (90, 30), "peer": (180, 120), "mfu": (150, 90), "cudagraphs": (150, 150),
          "seeds": (240, 180), "profile": (120, 60)}

#: --smoke: the train.py sections on data and a model small enough for a CPU (the others: gpu_steps.SMOKE_MODEL)
SMOKE_TRAIN = ["--dataset", "shapes2d", "--shapes_train_size", "64", "--shapes_test_size", "32", "--num_latents", "8",
               "--latent_dim", "32", "--num_cross_attend_stages", "2", "--num_transformer_blocks", "1",
               "--num_heads", "2", "--fourier_bands", "4", "--batch_size", "16", "--num_workers", "0"]
Z = 2.0  # standard errors on each side of the accuracy difference


# ------------------------------------------------------------------------------------------------- train.py


def run_trainpy(name: str, extra: list[str], args, logs: Path, budget: Budget, *, seed: int = 0) -> dict:
    """One train.py run in a fresh process; its per-epoch figures from metrics.jsonl, and what torch logged about
    recompiling. Stopped (an error) when the budget runs out."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--preset", "exp1", "--data_dir", args.data_dir, "--logs_dir",
           str(logs), "--experiment_name", name, "--epochs", str(args.epochs), "--seed", str(seed), "--no_progress",
           "--device", args.device, *(SMOKE_TRAIN if args.smoke else []), *extra]
    log(" ".join(cmd[1:]))
    env = {**os.environ, "TORCH_LOGS": "recompiles,graph_breaks"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env,
                              timeout=max(1.0, budget.left()))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"train.py {name} stopped after {time.perf_counter() - t0:.0f}s: the budget ran out")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"train.py {name} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    rows = RunDir(logs / name).read_metrics()
    rates = [r["samples_per_s"] for r in rows]
    steady = sorted(rates[1:])[len(rates[1:]) // 2] if len(rates) > 1 else rates[0]  # median without epoch 1
    first = rows[0]
    recompiles = [line for line in proc.stderr.splitlines() if "Recompiling function" in line]
    breaks = [line for line in proc.stderr.splitlines() if "Graph break" in line]
    return {"seed": seed, "epochs": len(rows), "samples_per_s_per_epoch": rates, "steady_samples_per_s": steady,
            "compile_s": max(0.0, first["train_time_s"] - first["train_samples"] / steady),
            "test_acc": rows[-1]["test_acc"], "test_samples": rows[-1]["test_samples"], "wall_s": wall,
            "recompiles": len(recompiles), "graph_breaks": len(breaks), "compile_log": (recompiles + breaks)[:20],
            "data_on_device": RunDir(logs / name).read_config().get("data_on_device")}


def fast_flags(args) -> list[str]:
    return ["--use_amp"] + ([] if args.no_compile else ["--compile"])


PLAIN_FLAGS = ["--device_data", "off"]


def section_trainpy(args, logs: Path, out: dict, budget: Budget) -> None:
    fast = run_trainpy("fast", fast_flags(args), args, logs, budget)
    out["trainpy_fast"] = fast
    out["exp1_b64_trainpy_samples_per_s"] = fast["steady_samples_per_s"]
    out["exp1_b64_trainpy_mode"] = "default"
    out["compile_s"] = fast["compile_s"]
    compare_accuracy(out)
    log(f"train.py fast path: {fast['steady_samples_per_s']:.0f} samples/s steady, compile {fast['compile_s']:.1f}s, "
        f"test acc {fast['test_acc']:.4f}, {fast['recompiles']} recompilations, {fast['graph_breaks']} graph breaks")


def section_plain(args, logs: Path, out: dict, budget: Budget) -> None:
    plain = run_trainpy("plain", PLAIN_FLAGS, args, logs, budget)
    out["trainpy_plain"] = plain
    compare_accuracy(out)
    log(f"train.py plain path: {plain['steady_samples_per_s']:.0f} samples/s, test acc {plain['test_acc']:.4f}")


def section_cudagraphs(args, logs: Path, out: dict, budget: Budget) -> None:
    """The fast path with CUDA-graph replay (--compile_mode reduce-overhead); the faster of the two is reported."""
    graphs = run_trainpy("graphs", ["--use_amp", "--compile", "--compile_mode", "reduce-overhead"], args, logs,
                         budget)
    out["trainpy_cudagraphs"] = graphs
    log(f"train.py with --compile_mode reduce-overhead: {graphs['steady_samples_per_s']:.0f} samples/s steady, "
        f"{graphs['recompiles']} recompilations")
    if graphs["steady_samples_per_s"] > out.get("exp1_b64_trainpy_samples_per_s", 0):
        out["exp1_b64_trainpy_samples_per_s"] = graphs["steady_samples_per_s"]
        out["compile_s"] = graphs["compile_s"]
        out["exp1_b64_trainpy_mode"] = "reduce-overhead"


def section_seeds(args, logs: Path, out: dict, budget: Budget) -> None:
    """Seed 1 of the fast and the plain path, for the accuracy comparison."""
    out["trainpy_fast_seed1"] = run_trainpy("fast_seed1", fast_flags(args), args, logs, budget, seed=1)
    compare_accuracy(out)
    out["trainpy_plain_seed1"] = run_trainpy("plain_seed1", PLAIN_FLAGS, args, logs, budget, seed=1)
    compare_accuracy(out)


def compare_accuracy(out: dict) -> None:
    """``fast_vs_plain_acc_diff`` and its standard error, from every seed of both paths run so far."""
    fast = [out[k]["test_acc"] for k in ("trainpy_fast", "trainpy_fast_seed1") if k in out]
    plain = [out[k]["test_acc"] for k in ("trainpy_plain", "trainpy_plain_seed1") if k in out]
    if not fast or not plain:
        return
    n = out.get("trainpy_plain", out.get("trainpy_plain_seed1"))["test_samples"]
    mf, mp = sum(fast) / len(fast), sum(plain) / len(plain)
    se = math.sqrt(mf * (1 - mf) / (n * len(fast)) + mp * (1 - mp) / (n * len(plain)))
    diff = abs(mf - mp)
    target = GOALS["fast_vs_plain_acc_diff"][1]
    verdict = "met" if diff + Z * se <= target else "not met" if diff - Z * se > target else "undecided"
    out["fast_vs_plain_acc_diff"] = diff
    out["fast_vs_plain_acc"] = {
        "fast": fast, "plain": plain, "test_images": n, "diff": diff, "se": se, "verdict": verdict,
        "rule": f"se = sqrt(pf (1 - pf) / (n kf) + pp (1 - pp) / (n kp)) over kf, kp seeds of n test images; "
                f"met when diff + {Z:g} se <= {target}, not met when diff - {Z:g} se > {target}, else undecided"}


# --------------------------------------------------------------------------------------------------- driver


def estimate(name: str, args, out: dict) -> tuple[float, str]:
    """(seconds, basis) a section is expected to take."""
    runs = {k: out[k]["wall_s"] for k in ("trainpy_fast", "trainpy_cudagraphs", "trainpy_plain") if k in out}
    plan = PLAN_S[name][1 if args.smoke else 0]
    if name in ("trainpy", "cudagraphs") and runs.get("trainpy_fast", runs.get("trainpy_cudagraphs")):
        return runs.get("trainpy_fast", runs.get("trainpy_cudagraphs")), "the compiled train.py run measured"
    if name == "plain" and "trainpy_plain" in runs:
        return runs["trainpy_plain"], "the plain train.py run measured"
    if name == "seeds" and "trainpy_fast" in runs and "trainpy_plain" in runs:
        return runs["trainpy_fast"] + runs["trainpy_plain"], "the seed-0 runs measured"
    return plan, "planning figure (PLAN_S)"


def goals(out: dict) -> dict:
    res = {}
    for key, (op, target) in GOALS.items():
        value = out.get(key)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        res[key] = {"target": f"{op} {target}", "value": value, "met": met}
    if "fast_vs_plain_acc" in out:  # decided only beyond the noise of the test set
        verdict = out["fast_vs_plain_acc"]["verdict"]
        res["fast_vs_plain_acc_diff"]["met"] = {"met": True, "not met": False}.get(verdict)
        res["fast_vs_plain_acc_diff"]["verdict"] = verdict
    return res


def write(out: dict, path: str | None) -> None:
    """The JSON as it stands (written whole, then renamed: a kill leaves the previous version)."""
    out["goals"] = goals(out)
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
        tmp.replace(p)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="./data", help="folder holding cifar-10-batches-py/ (default: %(default)s)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of each train.py run (default: %(default)s)")
    p.add_argument("--iters", type=int, default=10, help="timed rounds of the step benchmarks (default: %(default)s)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS,
                   help="sections to run, in this order (default: all: %(default)s)")
    p.add_argument("--budget_s", type=float, default=450,
                   help="seconds for the whole check: a section whose estimate exceeds what is left is skipped, a "
                        "train.py run is stopped when it runs out (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="tiny model and data: checks the script, measures nothing")
    p.add_argument("--no_compile", action="store_true", help="eager only (default: compiled where it applies)")
    p.add_argument("--json", default=None, help="write every figure here, after every section")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu --smoke to check the script")
    if args.smoke:
        args.epochs, args.iters = min(args.epochs, 2), min(args.iters, 2)
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "smoke": args.smoke,
           "command": " ".join(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
           "budget_s": args.budget_s, "sections": {}}
    out["matmul_peak"] = matmul_peak(device, (torch.float32, torch.bfloat16) if device.type == "cuda"
                                     else (torch.float32,), warmup=0 if args.smoke else 1, iters=1 if args.smoke else 5)
    log("matmul peak: " + ", ".join(f"{k} {v['median_flops'] / 1e12:.1f} TFLOP/s"
                                      for k, v in out["matmul_peak"].items()))
    write(out, args.json)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        logs = Path(tmp)
        run = {"trainpy": lambda: section_trainpy(args, logs, out, budget),
               "plain": lambda: section_plain(args, logs, out, budget),
               "mfu": lambda: section_mfu(args, device, out, budget),
               "peer": lambda: section_peer(args, device, out, budget),
               "cudagraphs": lambda: section_cudagraphs(args, logs, out, budget),
               "seeds": lambda: section_seeds(args, logs, out, budget),
               "profile": lambda: section_profile(args, device, out)}
        for name in args.sections:
            est, basis = estimate(name, args, out)
            record = out["sections"][name] = {"estimate_s": round(est, 1), "basis": basis}
            if est > budget.left():
                record["status"] = f"skipped: estimated {est:.0f}s ({basis}), {max(0.0, budget.left()):.0f}s left"
                log(f"section {name} {record['status']}")
                write(out, args.json)
                continue
            log(f"section {name} (estimated {est:.0f}s, {budget.left():.0f}s of the budget left)")
            t0 = time.perf_counter()
            try:
                run[name]()
                record["status"] = "done"
            except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
                record["status"] = f"failed: {type(e).__name__}: {e}"
                log(f"section {name} failed: {type(e).__name__}: {e}")
            record["wall_s"] = round(time.perf_counter() - t0, 1)
            out["total_s"] = budget.elapsed()
            write(out, args.json)
    out["total_s"] = budget.elapsed()
    write(out, args.json)
    for key, g in out["goals"].items():
        value = "-" if g["value"] is None else f"{g['value']:.4g}"
        verdict = g.get("verdict") or ("no figure" if g["met"] is None else "met" if g["met"] else "NOT met")
        log(f"{key:36s} {value:>10}  goal {g['target']:>8}  {verdict}")
    if args.json:
        log(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
    sys.exit(0)
