#!/usr/bin/env python
"""Markdown tables from a ``bench.py --json`` file (for docs/PERFORMANCE.md).

    python benchmarks/report.py out.json > tables.md
"""
from __future__ import annotations

import json
import sys


def fmt_rate(r: dict) -> str:
    """Median samples/s with the min-max range (console table and markdown alike)."""
    return f"{r['samples_per_s']:.1f} ({r['samples_per_s_min']:.1f}-{r['samples_per_s_max']:.1f})"


def fmt_mem(m: dict | None) -> str:
    """Peak memory in MiB and, in brackets, what the step itself added; or why it was not measured."""
    if not m:
        return "-"
    if "peak_rss_mb" in m:
        return f"{m['peak_rss_mb']:,.0f} (+{m['step_mb']:,.0f})"
    if "peak_allocated_mb" in m:
        return f"{m['peak_allocated_mb']:,.0f} (+{m['step_mb']:,.0f})"
    return m.get("status", "?")


def render(res: dict) -> str:
    out = []
    mi = res["machine"]
    out.append(f"Machine: {mi.get('cpu_model')}, {mi.get('logical_cpus')} logical CPUs "
               f"({mi.get('sockets', '?')} socket x {mi.get('cores_per_socket', '?')} cores), torch {mi['torch']}, "
               f"{mi['threads']} thread(s), device {mi['device']}" + (f" ({mi['gpu']})" if "gpu" in mi else "")
               + f"; load average at start {mi.get('loadavg_start')}, at end {mi.get('loadavg_end')}.")
    for name, r in res.get("configs", {}).items():
        pk = r["matmul_peak_flops"]["train"]["fp32"]
        out.append("")
        out.append(f"**{name}** (batch {r['batch']}; fp32 matmul rate timed in the same rounds: {pk / 1e9:.0f} GFLOP/s)")
        out.append("")
        out.append("| variant | params | train samples/s, median (min-max) | eval samples/s | train GFLOP/sample "
                   "| train FLOP/s, % of matmul | train peak RSS MiB (step) | eval peak RSS MiB (step) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for n, v in r["variants"].items():
            out.append(f"| {n} ({v['note']}) | {v['params']:,} | {fmt_rate(v['train'])} | {fmt_rate(v['eval'])} | "
                       f"{v['train']['flops_per_sample'] / 1e9:.3g} | {100 * v['train']['fraction_of_matmul_peak']:.0f}% "
                       f"(best round {100 * v['train']['fraction_of_matmul_peak_best']:.0f}%) | "
                       f"{fmt_mem(v.get('memory_train'))} | {fmt_mem(v.get('memory_eval'))} |")
        rat = r.get("ratios", {})
        if rat:
            out.append("")
            out.append("| ours / theirs | train speed | eval speed | train peak RSS | train step memory "
                       "| eval peak RSS | train FLOPs | params |")
            out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            for key, x in rat.items():
                def g(k):
                    return f"{x[k]:.2f}x" if k in x else "-"
                out.append(f"| {key} | {g('train_speed')} (best {g('train_speed_best')}) | {g('eval_speed')} "
                           f"(best {g('eval_speed_best')}) | {g('memory_train_peak_rss_mb')} | "
                           f"{g('memory_train_step_mb')} | {g('memory_eval_peak_rss_mb')} | {g('train_flops')} | "
                           f"{g('params')} |")
    sc = res.get("scaling")
    if sc:
        out.append("")
        out.append(f"**Scaling** (one training step, batch {sc['settings']['batch']}, cap {sc['cap_s']:.0f} s per point, "
                   f"step memory = peak RSS minus RSS before the first step)")
        out.append("")
        out.append("| N tokens | Perceiver s/step | Perceiver MiB | Transformer s/step | Transformer MiB |")
        out.append("|---:|---:|---:|---:|---:|")
        for n in sc["n"]:
            cells = []
            for model in ("perceiver", "transformer"):
                p = sc["points"][model].get(str(n), {})
                if p.get("status") == "ok":
                    cells += [f"{p['step_s']:.2f}", f"{p['step_mb']:,.0f}"]
                else:
                    status = p.get("status", "-")
                    cells += [f"{status}" + (f" (> {sc['cap_s']:.0f} s)" if status == "timeout" else ""), "-"]
            out.append(f"| {n:,} | " + " | ".join(cells) + " |")
        if "perceiver_growth_4k_64k" in sc:
            g = sc["perceiver_growth_4k_64k"]
            out.append("")
            out.append(f"Perceiver from 4k to 64k tokens (16x): step time x{g['time']:.1f}, step memory x{g['memory']:.1f}.")
    cap = res.get("capture")
    if cap:
        out.append("")
        out.append(f"**Attention capture**: an epoch of {cap['steps_per_epoch']} training steps "
                   f"{cap['epoch']['median_s']:.2f} s; with the probe pass {cap['epoch+probe']['median_s']:.2f} s; "
                   f"the probe pass alone {1000 * cap['probe']['median_s']:.1f} ms = "
                   f"{100 * cap['overhead_from_probe_time']:.2f}% of the epoch (difference of the medians: "
                   f"{100 * cap['overhead']:+.2f}%).")
        e2e = cap.get("train_py")
        if e2e and "overhead" in e2e:
            out.append(f"`train.py` end to end (shapes2d quick start, 2 epochs, maps saved every epoch): "
                       f"{', '.join(f'{t:.1f}' for t in e2e['without_s'])} s without, "
                       f"{', '.join(f'{t:.1f}' for t in e2e['with_s'])} s with `--save_attention_maps` "
                       f"({100 * e2e['overhead']:+.1f}%).")
    goals = res.get("goals")
    if goals:
        out.append("")
        out.append("| goal | measured | |")
        out.append("|---|---:|---|")
        for gl in goals:
            out.append(f"| {gl['goal']} | {gl['value']} | {'met' if gl['met'] else 'not met'} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(json.load(open(sys.argv[1]))))
