#!/usr/bin/env python
"""The goals and the tables of a benchmark run, one formatting for the console and for markdown.

``bench.py`` prints `render(res)` when it finishes; the same tables as markdown (the README's, see
docs/PERFORMANCE.md) come from its ``--json`` file:

    python benchmarks/report.py out.json > tables.md
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.configs import GOALS  # noqa: E402


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align: str  # one letter per column: "l" or "r"


def render_table(t: Table, markdown: bool) -> str:
    if markdown:
        def line(cells):
            return "| " + " | ".join(cells) + " |"
        rule = ["|" + "|".join("---:" if a == "r" else "---" for a in t.align) + "|"]
    else:
        widths = [max(len(r[i]) for r in [t.header, *t.rows]) for i in range(len(t.header))]

        def line(cells):
            return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, t.align)).rstrip()
        rule = []
    return "\n".join([line(t.header), *rule, *(line(r) for r in t.rows)])


def title(name: str, detail: str, markdown: bool) -> str:
    return f"**{name}** ({detail})" if markdown else f"== {name}: {detail}"


def fmt_rate(r: dict) -> str:
    """Median samples/s with the min-max range."""
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


def machine_line(mi: dict) -> str:
    return (f"Machine: {mi.get('cpu_model')}, {mi.get('logical_cpus')} logical CPUs "
            f"({mi.get('sockets', '?')} socket x {mi.get('cores_per_socket', '?')} cores), torch {mi['torch']}, "
            f"{mi['threads']} thread(s), device {mi['device']}" + (f" ({mi['gpu']})" if "gpu" in mi else "")
            + f"; load average at start {mi.get('loadavg_start')}, at end {mi.get('loadavg_end')}.")


def config_blocks(name: str, r: dict, markdown: bool) -> list:
    pk = r["matmul_peak_flops"]
    out = [title(name, f"batch {r['batch']}; fp32 matmul rate timed in the same rounds: "
                       f"{pk['train']['fp32'] / 1e9:.0f} GFLOP/s (train rounds), {pk['eval']['fp32'] / 1e9:.0f} (eval)",
                 markdown)]
    rows = [[n, f"{v['params']:,}", fmt_rate(v["train"]), fmt_rate(v["eval"]),
             f"{v['train']['flops_per_sample'] / 1e9:.3g}",
             f"{v['train']['fraction_of_matmul_peak']:.0%} ({v['train']['fraction_of_matmul_peak_best']:.0%})",
             f"{v['eval']['fraction_of_matmul_peak']:.0%}", fmt_mem(v.get("memory_train")),
             fmt_mem(v.get("memory_eval")), v["note"]] for n, v in r["variants"].items()]
    out.append(Table(["variant", "params", "train samples/s (min-max)", "eval samples/s (min-max)",
                      "train GFLOP/sample", "train % of matmul (best round)", "eval % of matmul",
                      "train peak MiB (step)", "eval peak MiB (step)", "note"], rows, "lrrrrrrrrl"))
    if r.get("ratios"):
        def g(x, *keys):
            k = next((k for k in keys if k in x), None)
            return f"{x[k]:.2f}x" if k else "-"
        rows = [[key, f"{g(x, 'train_speed')} (best {g(x, 'train_speed_best')})",
                 f"{g(x, 'eval_speed')} (best {g(x, 'eval_speed_best')})",
                 g(x, "memory_train_peak_rss_mb", "memory_train_peak_allocated_mb"), g(x, "memory_train_step_mb"),
                 g(x, "memory_eval_peak_rss_mb", "memory_eval_peak_allocated_mb"), g(x, "memory_eval_step_mb"),
                 g(x, "train_flops"), g(x, "params")]
                for key, x in r["ratios"].items()]
        out.append(Table(["ours / theirs", "train speed", "eval speed", "train peak memory", "train step memory",
                          "eval peak memory", "eval step memory", "train FLOPs", "params"], rows, "lrrrrrrrr"))
    return out


def scaling_blocks(sc: dict, markdown: bool) -> list:
    out = [title("Scaling", f"one training step, batch {sc['settings']['batch']}, cap {sc['cap_s']:.0f} s per point, "
                            "step memory = peak RSS minus RSS before the first step", markdown)]
    rows = []
    for n in sc["n"]:
        cells = [f"{n:,}"]
        for model in ("perceiver", "transformer"):
            p = sc["points"][model].get(str(n), {})
            if p.get("status") == "ok":
                cells += [f"{p['step_s']:.3g}", f"{p['step_mb']:,.0f}"]
            else:
                status = p.get("status", "-")
                cells += [status + (f" (> {sc['cap_s']:.0f} s)" if status == "timeout" else ""), "-"]
        rows.append(cells)
    out.append(Table(["N tokens", "Perceiver s/step", "Perceiver MiB", "Transformer s/step", "Transformer MiB"],
                     rows, "rrrrr"))
    if "perceiver_growth_4k_64k" in sc:
        g = sc["perceiver_growth_4k_64k"]
        out.append(f"Perceiver from 4k to 64k tokens (16x): step time x{g['time']:.1f}, "
                   f"step memory x{g['memory']:.1f}.")
    return out


def capture_blocks(cap: dict, markdown: bool) -> list:
    text = (f"an epoch of {cap['steps_per_epoch']} training steps {cap['epoch']['median_s']:.2f} s; "
            f"with the probe pass {cap['epoch+probe']['median_s']:.2f} s; the probe pass alone "
            f"{1000 * cap['probe']['median_s']:.1f} ms = {100 * cap['overhead_from_probe_time']:.2f}% of the epoch "
            f"(difference of the medians: {100 * cap['overhead']:+.2f}%).")
    e2e = cap.get("train_py")
    if e2e and "overhead" in e2e:
        text += (f" `train.py` end to end (shapes2d quick start, 2 epochs, maps saved every epoch): "
                 f"{', '.join(f'{t:.1f}' for t in e2e['without_s'])} s without, "
                 f"{', '.join(f'{t:.1f}' for t in e2e['with_s'])} s with `--save_attention_maps` "
                 f"({100 * e2e['overhead']:+.1f}%).")
    return [("**Attention capture**: " if markdown else "== attention capture: ") + text]


def goals_blocks(goals: list[dict], markdown: bool) -> list:
    rows = [[g["goal"], g["value"], "met" if g["met"] else "not met"] for g in goals]
    return [Table(["goal", "measured", "status"], rows, "lrl")]


def render(res: dict, markdown: bool = False) -> str:
    """Every table of a run (`bench.main`'s result or its --json file), for the console or as markdown."""
    blocks: list = [machine_line(res["machine"])]
    for name, r in res.get("configs", {}).items():
        blocks += config_blocks(name, r, markdown)
    if res.get("scaling"):
        blocks += scaling_blocks(res["scaling"], markdown)
    if res.get("capture"):
        blocks += capture_blocks(res["capture"], markdown)
    if res.get("goals"):
        blocks += goals_blocks(res["goals"], markdown)
    return "\n\n".join(render_table(b, markdown) if isinstance(b, Table) else b for b in blocks)


def evaluate_goals(res: dict) -> list[dict]:
    """Each goal of `configs.GOALS` that the run measured: its figure and whether it is met."""
    out = []

    def add(goal, value, met, fmt="{:.2f}x"):
        out.append({"goal": goal, "value": fmt.format(value) if value is not None else "-", "raw": value,
                    "met": met})
    cfgs = res.get("configs", {})
    e1 = cfgs.get("exp1", {}).get("ratios", {})
    for key in ("ours/theirs", "ours-ff6/theirs"):
        r = e1.get(key)
        if r:
            add(f"exp1 {key} train samples/s >= {GOALS['exp1_train_speedup']}x", r["train_speed"],
                r["train_speed"] >= GOALS["exp1_train_speedup"])
            add(f"exp1 {key} eval samples/s >= {GOALS['exp1_eval_speedup']}x", r["eval_speed"],
                r["eval_speed"] >= GOALS["exp1_eval_speedup"])
            for k in ("memory_train_peak_rss_mb", "memory_train_step_mb", "memory_train_peak_allocated_mb"):
                if k in r:
                    add(f"exp1 {key} {k.replace('memory_train_', 'train ')} <= {GOALS['exp1_memory_ratio']}x", r[k],
                        r[k] <= GOALS["exp1_memory_ratio"])
    s = cfgs.get("small", {}).get("ratios", {})
    for key in ("ours/theirs", "ours-ff6/theirs"):
        if key in s:
            add(f"small {key} train samples/s >= {GOALS['small_train_speedup']}x", s[key]["train_speed"],
                s[key]["train_speed"] >= GOALS["small_train_speedup"])
    if "exp1" in cfgs and "ours" in cfgs["exp1"]["variants"]:
        train = cfgs["exp1"]["variants"]["ours"]["train"]
        f, fb = train["fraction_of_matmul_peak"], train["fraction_of_matmul_peak_best"]
        add(f"exp1 ours train FLOP/s >= {GOALS['exp1_flops_fraction']:.0%} of matmul peak", f,
            f >= GOALS["exp1_flops_fraction"], "{:.0%}")
        add("  (the same, fastest round vs fastest matmul round)", fb, fb >= GOALS["exp1_flops_fraction"], "{:.0%}")
    g = res.get("scaling", {}).get("perceiver_growth_4k_64k")
    if g:
        cap = GOALS["scaling_growth_4k_64k"]
        add(f"scaling 4k->64k time <= {cap}x", g["time"], g["time"] <= cap)
        add(f"scaling 4k->64k memory <= {cap}x", g["memory"], g["memory"] <= cap)
    cap = res.get("capture")
    if cap:
        # The probe pass timed on its own over the epoch's time: the same quantity as the difference of the two
        # epoch medians, without the epoch-to-epoch noise (which is larger than the probe pass itself).
        add(f"attention capture adds <= {GOALS['capture_overhead']:.0%} to an epoch", cap["overhead_from_probe_time"],
            cap["overhead_from_probe_time"] <= GOALS["capture_overhead"], "{:+.2%}")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="The tables of a bench.py --json file, as markdown.")
    p.add_argument("json_file", help="written by python benchmarks/bench.py --json FILE")
    args = p.parse_args(argv)
    path = Path(args.json_file)
    if not path.is_file():
        p.error(f"{path} does not exist; write it with python benchmarks/bench.py --json {path}")
    print(render(json.loads(path.read_text()), markdown=True))


if __name__ == "__main__":
    main()
