"""The ``speed`` section: every variant of one config timed together; FLOPs, peak memory, ratios to theirs."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from benchmarks.configs import CONFIGS, make_batch
from benchmarks.machine import matmul_fn
from benchmarks.memory import cuda_memory, run_child
from benchmarks.timing import count_flops, timed_rounds
from benchmarks.variants import (build_variant, eval_step_fn, fwd_bwd_fn, make_optimizer, theirs_kwargs,
                                 train_step_fn)


#: The extra variants of our model (``--cuda-variants``, ``--cpu-variants``): bf16 autocast, torch.compile
VARIANT_KINDS = ("bf16", "compile")


def variant_names(args, device: torch.device) -> list[str]:
    """The variants the command line asks for, ``ours`` first."""
    names = ["ours"]
    if args.compare:
        names += ["ours-ff6", "theirs"]
    if args.checkpointing:
        names.append("ours-ckpt")
    if args.ablation:
        names += ["ours-no-absorb", "ours-no-recompute", "ours-neither", "ours-plain"]
    if device.type == "cuda":
        kinds = set() if args.no_cuda_variants else args.cuda_variants
    else:
        kinds = args.cpu_variants
    if "bf16" in kinds:
        names += ["ours+bf16"] + (["theirs+bf16"] if args.compare else [])
    if "compile" in kinds:
        names += ["ours+compile", "ours+bf16+compile"] if "bf16" in kinds else ["ours+compile"]
    return names


def bench_config(name: str, args, device: torch.device, log) -> dict:
    cfg = CONFIGS[name]
    names = variant_names(args, device)
    log(f"[{name}] variants: {', '.join(names)}")
    torch.manual_seed(0)
    variants = {n: build_variant(n, cfg, device) for n in names}
    batch = make_batch(cfg, device)
    bsz = batch.x.shape[0]
    opts = {n: make_optimizer(v.model, cfg["lr"]) for n, v in variants.items()}
    result: dict = {"config": name, "settings": cfg, "batch": bsz, "variants": {}}
    if "theirs" in variants:
        result["theirs_kwargs"] = theirs_kwargs(cfg)

    # FLOPs per sample: one forward+backward (train) and one forward (eval), counted on eager models.
    flops = {}
    for n, v in variants.items():
        if v.flops_from and v.flops_from in flops:
            flops[n] = flops[v.flops_from]
            continue
        src = variants[v.flops_from] if v.flops_from else v
        flops[n] = {"train": count_flops(fwd_bwd_fn(src, batch, device)) / bsz,
                    "eval": count_flops(eval_step_fn(src, batch, device, inference=False)) / bsz}

    # The matmul rate ("peak") is timed in the same rounds as the models, so that both see the same load.
    peaks = {"fp32": matmul_fn(device)}
    if device.type == "cuda" or any(v.autocast is torch.bfloat16 for v in variants.values()):
        peaks["bf16"] = matmul_fn(device, torch.bfloat16)
    for mode in ("train", "eval"):
        fns = {n: (train_step_fn(v, batch, opts[n], device) if mode == "train" else eval_step_fn(v, batch, device))
               for n, v in variants.items()}
        fns.update({f"matmul_{k}": fn for k, (fn, _) in peaks.items()})
        log(f"[{name}] timing {mode} ({args.warmup} warm-up + {args.iters} rounds)")
        times = timed_rounds(fns, warmup=args.warmup, iters=args.iters, device=device, log=log)
        peak = {k: mm_flops / times[f"matmul_{k}"]["median_s"] for k, (_, mm_flops) in peaks.items()}
        best_peak = {k: mm_flops / times[f"matmul_{k}"]["min_s"] for k, (_, mm_flops) in peaks.items()}
        result.setdefault("matmul_peak_flops", {})[mode] = peak
        for n, v in variants.items():
            s = times[n]
            dtype = "bf16" if v.autocast is torch.bfloat16 else "fp32"
            step_flops = flops[n][mode] * bsz
            r = result["variants"].setdefault(n, {"note": v.note, "params": v.params})
            r[mode] = {**s, "samples_per_s": bsz / s["median_s"], "samples_per_s_min": bsz / s["max_s"],
                       "samples_per_s_max": bsz / s["min_s"], "flops_per_sample": flops[n][mode],
                       "achieved_flops": step_flops / s["median_s"],
                       "fraction_of_matmul_peak": step_flops / s["median_s"] / peak[dtype],
                       "fraction_of_matmul_peak_best": step_flops / s["min_s"] / best_peak[dtype]}

    # Peak memory: CUDA in process (max allocated); CPU in a fresh subprocess per measurement (peak RSS).
    jobs = [] if args.no_memory else [(n, mode) for n in variants for mode in ("train", "eval")]
    if device.type == "cuda":
        for n, mode in jobs:
            v = variants[n]
            fn = train_step_fn(v, batch, opts[n], device) if mode == "train" else eval_step_fn(v, batch, device)
            result["variants"][n][f"memory_{mode}"] = cuda_memory(fn, 2, device)
    else:
        def probe(job):
            n, mode = job
            log(f"[{name}] memory probe: {n} {mode} (fresh subprocess)")
            spec = {"cfg": cfg, "variant": n, "mode": mode, "steps": 2, "device": str(device),
                    "threads": torch.get_num_threads(), "malloc_tune": args.malloc_tune}
            return run_child("memory", spec, timeout=args.probe_timeout)
        # Sequential for real measurements; the smoke test (--tiny) runs its probes side by side.
        with ThreadPoolExecutor(max_workers=4 if args.tiny else 1) as pool:
            for (n, mode), mem in zip(jobs, pool.map(probe, jobs)):
                result["variants"][n][f"memory_{mode}"] = mem
    del variants, opts
    result["ratios"] = ratios(result)
    return result


def ratios(res: dict) -> dict:
    """ours / theirs: speed ratios (> 1: ours faster) and memory ratios (< 1: ours smaller)."""
    out = {}
    vs = res["variants"]
    if "theirs" not in vs:
        return out
    t = vs["theirs"]
    for n in ("ours", "ours-ff6", "ours-ckpt"):
        if n not in vs:
            continue
        o = vs[n]
        r = {"train_speed": o["train"]["samples_per_s"] / t["train"]["samples_per_s"],
             "eval_speed": o["eval"]["samples_per_s"] / t["eval"]["samples_per_s"],
             "train_speed_best": t["train"]["min_s"] / o["train"]["min_s"],  # fastest round vs fastest round
             "eval_speed_best": t["eval"]["min_s"] / o["eval"]["min_s"],
             "params": o["params"] / t["params"],
             "train_flops": o["train"]["flops_per_sample"] / t["train"]["flops_per_sample"]}
        for mode in ("train", "eval"):
            mo, mt = o.get(f"memory_{mode}", {}), t.get(f"memory_{mode}", {})
            for key in ("peak_rss_mb", "step_mb", "peak_allocated_mb"):
                if key in mo and key in mt and mt[key]:
                    r[f"memory_{mode}_{key}"] = mo[key] / mt[key]
        out[f"{n}/theirs"] = r
    return out
