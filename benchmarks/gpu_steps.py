"""The GPU check's in-process sections: training steps of Experiment 1's model timed in this process, not through
train.py (``benchmarks/gpu_check.py`` runs them and says what each measures).

- ``section_mfu``: model FLOPs per second over the measured bf16 matmul rate, at large batches
- ``section_peer``: ours against perceiver-pytorch and Hugging Face's Perceiver, each at its fastest
- ``section_profile``: where one of our steps spends its time
"""
from __future__ import annotations

import time

import torch

from benchmarks.configs import CONFIGS, make_batch
from benchmarks.step_profile import describe, profile_step
from benchmarks.timing import Budget, count_flops, timed_rounds
from benchmarks.variants import build_variant, fwd_bwd_fn, have_theirs, make_optimizer, train_step_fn

#: --smoke: the sections on a model small enough for a CPU
SMOKE_MODEL = CONFIGS["tiny"]


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def exp1_cfg(args) -> dict:
    return SMOKE_MODEL if args.smoke else CONFIGS["exp1"]


def section_mfu(args, device: torch.device, out: dict, budget: Budget) -> None:
    cfg = exp1_cfg(args)
    batches = [8] if args.smoke else [512, 2048]
    peak = out["matmul_peak"]["bf16" if device.type == "cuda" else "fp32"]["median_flops"]
    results, last_s = {}, 0.0
    for bsz in batches:
        if results and budget.left() < 2 * last_s:  # the next, larger batch would take longer than the last
            results[bsz] = {"status": f"skipped: {budget.left():.0f}s left, the last batch took {last_s:.0f}s"}
            break
        t0 = time.perf_counter()
        torch._dynamo.reset()  # each batch its own static graph
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
        last_s = time.perf_counter() - t0
    out["mfu_by_batch"] = results
    measured = [b for b in results if "mfu" in results[b]]
    if measured:
        best = max(measured, key=lambda b: results[b]["mfu"])
        out["exp1_large_batch_mfu"] = results[best]["mfu"]
        out["exp1_large_batch"] = best


def section_peer(args, device: torch.device, out: dict, budget: Budget) -> None:
    cfg = exp1_cfg(args)
    torch._dynamo.reset()
    kinds = ["+bf16"] if args.no_compile else ["+bf16", "+bf16+compile"]
    # ours-no-absorb: keys/values materialised; tells whether the CPU's cheapest cross-attention also wins here
    models = ["ours", "ours-no-absorb"] + (["theirs"] if have_theirs() else [])
    variants = {f"{m}{k}": build_variant(f"{m}{k}", cfg, device) for m in models for k in kinds}
    batch = make_batch(cfg, device, batch=cfg["batch"])
    fns = {n: train_step_fn(v, batch, make_optimizer(v.model, cfg["lr"]), device) for n, v in variants.items()}
    hf = hf_peer(cfg, device, batch)
    if hf is not None:
        fns["hf+bf16"] = hf
    times = timed_rounds(fns, warmup=3, iters=args.iters, device=device, log=log)
    rate = {n: cfg["batch"] / t["median_s"] for n, t in times.items()}
    ours = max(r for n, r in rate.items() if n.startswith("ours+"))
    out["absorb_vs_project_speed"] = ours / max(r for n, r in rate.items() if n.startswith("ours-no-absorb"))
    out["peer"] = {"samples_per_s": rate, "params": {n: v.params for n, v in variants.items()},
                   "perceiver_pytorch": "timed" if have_theirs() else "not installed (pip install perceiver-pytorch)",
                   "transformers": "timed" if hf is not None else "not importable"}
    msg = f"peer: ours {ours:.0f} samples/s"
    if have_theirs():
        theirs = max(r for n, r in rate.items() if n.startswith("theirs"))
        out["exp1_vs_peer_train_speed"] = ours / theirs
        msg += f", perceiver-pytorch {theirs:.0f} samples/s, ratio {ours / theirs:.2f}"
    if hf is not None:
        out["exp1_vs_hf_train_speed"] = ours / rate["hf+bf16"]
        msg += f", Hugging Face {rate['hf+bf16']:.0f} samples/s"
    log(msg)


def section_profile(args, device: torch.device, out: dict) -> None:
    cfg = exp1_cfg(args)
    torch._dynamo.reset()
    v = build_variant("ours+bf16" + ("" if args.no_compile else "+compile"), cfg, device)
    step = train_step_fn(v, make_batch(cfg, device, batch=cfg["batch"]), make_optimizer(v.model, cfg["lr"]), device)
    out["profile"] = {"batch": cfg["batch"], **profile_step(step, device, steps=2 if args.smoke else 10,
                                                            warmup=1 if args.smoke else 3)}
    for line in describe(out["profile"]):
        log(line)


def hf_peer(cfg: dict, device: torch.device, batch):
    """A training step of Hugging Face's PerceiverForImageClassificationFourier at the config's sizes, or None."""
    try:
        from transformers import PerceiverConfig as HFConfig
        from transformers import PerceiverForImageClassificationFourier
    except Exception:  # noqa: BLE001 - an optional peer
        return None
    m = cfg["model"]
    hf_cfg = HFConfig(num_latents=m["num_latents"], d_latents=m["latent_dim"], num_blocks=m["num_cross_attend_stages"],
                      num_self_attends_per_block=m["num_transformer_blocks"],
                      num_self_attention_heads=m["num_heads"], num_cross_attention_heads=1,
                      num_labels=m["num_classes"], image_size=cfg["hw"][0])
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
