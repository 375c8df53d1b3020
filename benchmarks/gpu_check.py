#!/usr/bin/env python
"""The GPU check: the specification's Experiment 1 on one GPU, end to end and against perceiver-pytorch.

    python benchmarks/gpu_check.py --data_dir ./data --json benchmarks/results/gpu.json      # one GPU, < 8 min
    python benchmarks/gpu_check.py --device cpu --smoke --json /tmp/gpu_smoke.json           # every section, tiny

On a lent GPU machine (the working tree travels; data and the peer's wheel must be carried in ignored folders):

    mkdir -p data && cp -r ../shared/data/cifar-10-batches-py data/         # the 5000-image sample
    python3 -m pip download --no-deps --only-binary=:all: -d .whl perceiver-pytorch==0.11.0
    # there, with carry ["data", ".whl"]:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    python benchmarks/gpu_check.py --data_dir data --json benchmarks/results/gpu.json

Sections, each timed against the ``--budget_s`` left (a section that would not fit is marked skipped):

- ``trainpy``: ``train.py --preset exp1 --device cuda --use_amp --compile`` (device-resident data chosen
  automatically) for ``--epochs`` epochs on the CIFAR-10 in ``--data_dir``: training samples/s of the steady-state
  epochs (epoch 1 holds the compilation; ``compile_s`` is its extra time) and the final test accuracy.
- ``plain``: the same run on the plain path (float32, eager, DataLoader, ``--device_data off``), same seed and
  epochs: ``fast_vs_plain_acc_diff`` = |fast - plain| test accuracy (the speed must not cost learning).
- ``mfu``: Exp1's model alone at growing batches (bf16 autocast, compiled, LAMB): model FLOPs per second
  (`torch.utils.flop_counter` on the eager model) / the bf16 matmul rate measured in the same run; the best batch.
- ``cudagraphs``: the ``trainpy`` run again with ``--compile_mode reduce-overhead`` (CUDA-graph replay); the
  faster of the two is ``exp1_b64_trainpy_samples_per_s``.
- ``peer``: ours vs lucidrains' perceiver-pytorch (``pip install perceiver-pytorch``; and Hugging Face's
  ``PerceiverForImageClassificationFourier`` when ``transformers`` is importable), training steps in bf16 at batch
  64, each model at its fastest of eager and compiled, timed alternately in this process; and ours with the
  cross-attention's keys/values materialised (``absorb_vs_project_speed``: which evaluation to prefer on a GPU).

The JSON holds every figure, the goals of issue 11 and whether each is met.
"""
from __future__ import annotations

import argparse
import json
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

from benchmarks.configs import CONFIGS, make_batch  # noqa: E402
from benchmarks.machine import matmul_peak  # noqa: E402
from benchmarks.timing import count_flops, timed_rounds  # noqa: E402
from benchmarks.variants import build_variant, fwd_bwd_fn, have_theirs, make_optimizer, train_step_fn  # noqa: E402
from perceiver.rundir import RunDir  # noqa: E402

GOALS = {"exp1_b64_trainpy_samples_per_s": (">=", 8000), "exp1_large_batch_mfu": (">=", 0.40),
         "exp1_vs_peer_train_speed": (">=", 3.0), "fast_vs_plain_acc_diff": ("<=", 0.02)}

#: --smoke: the same sections on a model and data small enough for a CPU in a minute
SMOKE_TRAIN = ["--dataset", "shapes2d", "--shapes_train_size", "64", "--shapes_test_size", "32", "--num_latents", "8",
               "--latent_dim", "32", "--num_cross_attend_stages", "2", "--num_transformer_blocks", "1",
               "--num_heads", "2", "--fourier_bands", "4", "--batch_size", "16", "--num_workers", "0"]
SMOKE_MODEL = CONFIGS["tiny"]


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_trainpy(name: str, extra: list[str], args, logs: Path) -> dict:
    """One train.py run in a fresh process; its per-epoch figures from metrics.jsonl."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--preset", "exp1", "--data_dir", args.data_dir, "--logs_dir",
           str(logs), "--experiment_name", name, "--epochs", str(args.epochs), "--seed", "0", "--no_progress",
           "--device", args.device, *(SMOKE_TRAIN if args.smoke else []), *extra]
    log(" ".join(cmd[1:]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"train.py {name} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    rows = RunDir(logs / name).read_metrics()
    rates = [r["samples_per_s"] for r in rows]
    steady = sorted(rates[1:])[len(rates[1:]) // 2] if len(rates) > 1 else rates[0]  # median without epoch 1
    first = rows[0]
    return {"epochs": len(rows), "samples_per_s_per_epoch": rates, "steady_samples_per_s": steady,
            "compile_s": max(0.0, first["train_time_s"] - first["train_samples"] / steady),
            "test_acc": rows[-1]["test_acc"], "wall_s": wall,
            "data_on_device": RunDir(logs / name).read_config().get("data_on_device")}


def section_trainpy(args, logs: Path, out: dict) -> None:
    fast_flags = ["--use_amp"] + ([] if args.no_compile else ["--compile"])
    fast = run_trainpy("fast", fast_flags, args, logs)
    out["trainpy_fast"] = fast
    out["exp1_b64_trainpy_samples_per_s"] = fast["steady_samples_per_s"]
    out["compile_s"] = fast["compile_s"]
    log(f"train.py fast path: {fast['steady_samples_per_s']:.0f} samples/s steady, compile {fast['compile_s']:.1f}s, "
        f"test acc {fast['test_acc']:.4f}")


def section_cudagraphs(args, logs: Path, out: dict) -> None:
    """The fast path with CUDA-graph replay (--compile_mode reduce-overhead); the faster of the two is reported."""
    graphs = run_trainpy("graphs", ["--use_amp", "--compile", "--compile_mode", "reduce-overhead"], args, logs)
    out["trainpy_cudagraphs"] = graphs
    log(f"train.py with CUDA graphs: {graphs['steady_samples_per_s']:.0f} samples/s steady")
    if graphs["steady_samples_per_s"] > out.get("exp1_b64_trainpy_samples_per_s", 0):
        out["exp1_b64_trainpy_samples_per_s"] = graphs["steady_samples_per_s"]
        out["compile_s"] = graphs["compile_s"]
        out["exp1_b64_trainpy_mode"] = "reduce-overhead"


def section_plain(args, logs: Path, out: dict) -> None:
    plain = run_trainpy("plain", ["--device_data", "off"], args, logs)
    out["trainpy_plain"] = plain
    if "trainpy_fast" in out:
        out["fast_vs_plain_acc_diff"] = abs(out["trainpy_fast"]["test_acc"] - plain["test_acc"])
    log(f"train.py plain path: {plain['steady_samples_per_s']:.0f} samples/s, test acc {plain['test_acc']:.4f}")


def exp1_cfg(args) -> dict:
    return SMOKE_MODEL if args.smoke else CONFIGS["exp1"]


def section_mfu(args, device: torch.device, out: dict) -> None:
    cfg = exp1_cfg(args)
    batches = [8, 16] if args.smoke else [256, 512, 1024, 2048]
    peak = out["matmul_peak"]["bf16" if device.type == "cuda" else "fp32"]["median_flops"]
    results = {}
    for bsz in batches:
        try:
            v = build_variant("ours+bf16" + ("" if args.no_compile else "+compile"), cfg, device)
            eager = build_variant("ours+bf16", cfg, device)
            batch = make_batch(cfg, device, batch=bsz)
            flops = count_flops(fwd_bwd_fn(eager, batch, device))
            step = train_step_fn(v, batch, make_optimizer(v.model, cfg["lr"]), device)
            t = timed_rounds({"step": step}, warmup=1 if args.smoke else 3, iters=args.iters,
                             device=device)["step"]["median_s"]
            results[bsz] = {"flops_per_step": flops, "step_s": t, "samples_per_s": bsz / t,
                            "mfu": flops / t / peak}
            log(f"mfu batch {bsz}: {bsz / t:.0f} samples/s, {flops / t / 1e12:.1f} TFLOP/s, "
                f"MFU {flops / t / peak:.3f}")
            del v, eager, batch, step
        except torch.OutOfMemoryError:
            results[bsz] = {"status": "out of memory"}
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    best = max((b for b in results if "mfu" in results[b]), key=lambda b: results[b]["mfu"])
    out["mfu_by_batch"] = results
    out["exp1_large_batch_mfu"] = results[best]["mfu"]
    out["exp1_large_batch"] = best


def section_peer(args, device: torch.device, out: dict) -> None:
    cfg = exp1_cfg(args)
    if not have_theirs():
        out["peer"] = {"status": "skipped: perceiver-pytorch is not installed (pip install perceiver-pytorch)"}
        return
    kinds = ["+bf16"] if args.no_compile else ["+bf16", "+bf16+compile"]
    # ours-no-absorb: keys/values materialised; tells whether the CPU's cheapest cross-attention also wins here
    names = [f"{m}{k}" for m in ("ours", "ours-no-absorb", "theirs") for k in kinds]
    variants = {n: build_variant(n, cfg, device) for n in names}
    batch = make_batch(cfg, device, batch=cfg["batch"])
    fns = {n: train_step_fn(v, batch, make_optimizer(v.model, cfg["lr"]), device) for n, v in variants.items()}
    hf = hf_peer(cfg, device, batch) if not args.smoke else None
    if hf is not None:
        fns["hf+bf16"] = hf
    times = timed_rounds(fns, warmup=3, iters=args.iters, device=device, log=log)
    rate = {n: cfg["batch"] / t["median_s"] for n, t in times.items()}
    ours = max(r for n, r in rate.items() if n.startswith("ours"))
    out["absorb_vs_project_speed"] = max(r for n, r in rate.items() if n.startswith("ours+")) / max(
        r for n, r in rate.items() if n.startswith("ours-no-absorb"))
    theirs = max(r for n, r in rate.items() if n.startswith("theirs"))
    out["peer"] = {"samples_per_s": rate, "params": {n: v.params for n, v in variants.items()}}
    out["exp1_vs_peer_train_speed"] = ours / theirs
    if "hf+bf16" in rate:
        out["exp1_vs_hf_train_speed"] = ours / rate["hf+bf16"]
    log(f"peer: ours {ours:.0f} samples/s, perceiver-pytorch {theirs:.0f} samples/s, ratio {ours / theirs:.2f}")


def hf_peer(cfg: dict, device: torch.device, batch):
    """A training step of Hugging Face's PerceiverForImageClassificationFourier at Exp1's sizes, or None."""
    try:
        from transformers import PerceiverConfig as HFConfig
        from transformers import PerceiverForImageClassificationFourier
    except Exception:  # noqa: BLE001 - an optional peer
        return None
    m = cfg["model"]
    hf_cfg = HFConfig(num_latents=m["num_latents"], d_latents=m["latent_dim"], num_blocks=m["num_cross_attend_stages"],
                      num_self_attends_per_block=m["num_transformer_blocks"],
                      num_self_attention_heads=m["num_heads"], num_cross_attention_heads=1, num_labels=10,
                      image_size=32)
    model = PerceiverForImageClassificationFourier(hf_cfg).to(device)
    opt = make_optimizer(model, cfg["lr"])
    images = batch.image.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(inputs=images).logits.float(), batch.y)
        loss.backward()
        opt.step()
    return step


def goals(out: dict) -> dict:
    res = {}
    for key, (op, target) in GOALS.items():
        value = out.get(key)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        res[key] = {"target": f"{op} {target}", "value": value, "met": met}
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="./data", help="folder holding cifar-10-batches-py/ (default: %(default)s)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of each train.py run (default: %(default)s)")
    p.add_argument("--iters", type=int, default=10, help="timed rounds of the step benchmarks (default: %(default)s)")
    p.add_argument("--sections", nargs="+", default=["trainpy", "plain", "mfu", "peer", "cudagraphs"],
                   choices=["trainpy", "plain", "mfu", "peer", "cudagraphs"], help="(default: all, in this order)")
    p.add_argument("--budget_s", type=float, default=450, help="stop starting sections after this (default: 450)")
    p.add_argument("--smoke", action="store_true", help="tiny model and data: checks the script, measures nothing")
    p.add_argument("--no_compile", action="store_true", help="eager only (default: compiled where it applies)")
    p.add_argument("--json", default=None, help="write every figure here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu --smoke to check the script")
    if args.smoke:
        args.epochs, args.iters = min(args.epochs, 2), min(args.iters, 2)
        if args.device == "cpu" and "cudagraphs" in args.sections:
            args.sections.remove("cudagraphs")  # CUDA graphs need CUDA
        args.no_compile = args.no_compile or args.device == "cpu"  # inductor on a CPU takes minutes to build
    device = torch.device(args.device)
    start = time.perf_counter()
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "smoke": args.smoke,
           "command": " ".join(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])])}
    out["matmul_peak"] = matmul_peak(device, (torch.float32, torch.bfloat16) if device.type == "cuda"
                                     else (torch.float32,))
    log("matmul peak: " + ", ".join(f"{k} {v['median_flops'] / 1e12:.1f} TFLOP/s"
                                      for k, v in out["matmul_peak"].items()))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        sections = {"trainpy": lambda: section_trainpy(args, Path(tmp), out),
                    "plain": lambda: section_plain(args, Path(tmp), out),
                    "mfu": lambda: section_mfu(args, device, out), "peer": lambda: section_peer(args, device, out),
                    "cudagraphs": lambda: section_cudagraphs(args, Path(tmp), out)}
        for name in args.sections:
            left = args.budget_s - (time.perf_counter() - start)
            if left <= 0:
                out.setdefault("skipped", []).append(f"{name}: time budget spent")
                continue
            log(f"section {name} ({left:.0f}s of the budget left)")
            try:
                sections[name]()
            except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
                out.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
                log(f"section {name} failed: {type(e).__name__}: {e}")
    out["goals"] = goals(out)
    out["total_s"] = time.perf_counter() - start
    for key, g in out["goals"].items():
        value = "-" if g["value"] is None else f"{g['value']:.4g}"
        verdict = "no figure" if g["met"] is None else ("met" if g["met"] else "NOT met")
        log(f"{key:36s} {value:>10}  goal {g['target']:>8}  {verdict}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
        log(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
    sys.exit(0)
