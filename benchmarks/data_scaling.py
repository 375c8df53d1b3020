#!/usr/bin/env python
"""Accuracy against the number of training images at one budget: train.py runs on parts of the training split.

Each (size, seed) is one ``train.py --train_size SIZE --seed SEED`` run (a stratified, seeded part of the split;
for one seed a smaller part lies inside a larger one) with the flags of ``--preset`` and any train.py flags given
after ``--``. The runs go to ``--logs_dir/n<SIZE>_s<SEED>``; a finished run is read again rather than repeated, an
unfinished one is resumed, so the study can be stopped and started. Then the script reads the run directories
and writes ``<out>.png`` (accuracy against images, log scale, every seed and the mean), ``<out>.md`` (the table)
and ``<out>.json`` (every figure). The accuracy is the last epoch's model on the test images (the run's
``test_acc``; train.py keeps the last epoch without a validation split), with its validation accuracy beside it
when the runs hold out a ``--val_split``.

    python benchmarks/data_scaling.py --data_dir ../shared/data-full --preset cifar10_10min \\
        --sizes 5000 12500 25000 50000 --seeds 0 1 --jobs 1 --logs_dir logs/data_scaling \\
        --out docs/images/data_scaling
    python benchmarks/data_scaling.py ... --report_only      # only read the runs and write the figure and tables

The budget is the preset's (``--max_time 600`` for cifar10_10min) unless ``--max_time`` is given. Runs that share
the machine (``--jobs 2``) each get fewer samples per second than one alone; pass ``--threads`` so that jobs x
threads does not exceed the cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from perceiver.rundir import RunDir  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="./data", help="train.py --data_dir (default: %(default)s)")
    p.add_argument("--preset", default="cifar10_10min",
                   help="train.py --preset for every run; 'none' for none (default: %(default)s)")
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 12500, 25000, 50000],
                   help="training images per point (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds per point (default: %(default)s)")
    p.add_argument("--max_time", default=None,
                   help="training budget of every run, train.py's --max_time (default: %(default)s = the preset's)")
    p.add_argument("--threads", type=int, default=None,
                   help="train.py --threads of every run (default: %(default)s = the preset's, else torch's)")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (default: %(default)s)")
    p.add_argument("--nice", type=int, default=0, help="niceness added to every run (default: %(default)s)")
    p.add_argument("--logs_dir", default="logs/data_scaling",
                   help="parent folder of the runs (default: %(default)s)")
    p.add_argument("--out", default="data_scaling",
                   help="path prefix of the outputs: <out>.png, <out>.md, <out>.json (default: %(default)s)")
    p.add_argument("--report_only", action="store_true",
                   help="start no run: read the run directories there are and write the outputs (default: %(default)s)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if any(n < 1 for n in args.sizes):
        p.error("--sizes are numbers of training images, each >= 1")
    for flag in ("--train_size", "--seed", "--experiment_name", "--logs_dir", "--resume", "--overwrite"):
        if any(tok == flag or tok.startswith(flag + "=") for tok in extra):
            p.error(f"{flag} is set by the script for each run: leave it out of the train.py flags after --")
    return args, extra


def run_name(size: int, seed: int) -> str:
    return f"n{size}_s{seed}"


def train_command(args: argparse.Namespace, extra: list[str], size: int, seed: int) -> list[str]:
    run = RunDir(Path(args.logs_dir) / run_name(size, seed))
    if run.holds_run():  # stopped before its end: continue it (with --max_time, within what is left of the budget)
        cmd = ["--resume", str(run.path)]
    else:
        cmd = (["--preset", args.preset] if args.preset != "none" else []) + [
            "--data_dir", args.data_dir, "--train_size", str(size), "--seed", str(seed)]
        if args.max_time is not None:
            cmd += ["--max_time", str(args.max_time)]
        cmd += extra + ["--logs_dir", args.logs_dir, "--experiment_name", run_name(size, seed)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    return [sys.executable, str(REPO / "train.py"), *cmd, "--no_progress"]


def finished(run: RunDir) -> bool:
    status = run.read_status() if run.path.is_dir() else None
    return bool(status) and status.get("state") == "finished"


def run_all(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Run what is not finished, ``--jobs`` at a time; returns one line per run that failed."""
    todo = [(n, s) for n in args.sizes for s in args.seeds if not finished(RunDir(Path(args.logs_dir) / run_name(n, s)))]
    Path(args.logs_dir).mkdir(parents=True, exist_ok=True)
    running: list[tuple[subprocess.Popen, str, Path]] = []
    failures: list[str] = []

    def wait_below(slots: int) -> None:
        """Wait until fewer than ``slots`` runs are running, noting each that ends."""
        while len(running) >= slots:
            for item in [i for i in running if i[0].poll() is not None]:
                running.remove(item)
                p, name, console = item
                print(f"{time.strftime('%H:%M:%S')} {name}: exit code {p.returncode}", flush=True)
                if p.returncode != 0:
                    tail = console.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                    failures.append(f"{name}: exit code {p.returncode}: {tail[0]} (see {console})")
            if len(running) >= slots:
                time.sleep(1)

    for size, seed in todo:
        wait_below(args.jobs)
        name = run_name(size, seed)
        cmd = train_command(args, extra, size, seed)
        console = Path(args.logs_dir) / f"{name}.console.txt"
        print(f"{time.strftime('%H:%M:%S')} {name}: {' '.join(cmd[1:])}", flush=True)
        with open(console, "a") as out:
            nice = args.nice
            p = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                 preexec_fn=(lambda: os.nice(nice)) if nice else None)
        running.append((p, name, console))
    wait_below(1)
    return failures


def read_run(run: RunDir, size: int, seed: int) -> dict | None:
    """The figures of one run directory, or None when it holds no finished epoch."""
    rows = run.read_metrics(skip=lambda msg: None) if run.metrics_path.exists() else []
    if not rows:
        return None
    last = rows[-1]
    train_samples = sum(r.get("train_samples", 0) for r in rows)
    train_time = sum(r.get("train_time_s", 0.0) for r in rows)
    config = run.read_config() if run.config_path.exists() else {}
    return {
        "size": size, "seed": seed, "run_dir": str(run.path), "finished": finished(run),
        "train_images": config.get("dataset", {}).get("train_size"),
        "test_acc": last.get("test_acc"), "val_acc": last.get("val_acc"), "train_acc": last.get("train_acc"),
        "epochs": round(train_samples / max(1, config.get("dataset", {}).get("train_size") or size), 2),
        "samples_per_s": round(train_samples / train_time, 1) if train_time > 0 else None,
        "elapsed_s": last.get("elapsed_s"),
    }


def summarise(runs: list[dict]) -> list[dict]:
    points = []
    for size in sorted({r["size"] for r in runs}):
        accs = [r["test_acc"] for r in runs if r["size"] == size and r["test_acc"] is not None]
        if accs:
            points.append({"size": size, "n": len(accs), "mean": statistics.fmean(accs), "min": min(accs),
                           "max": max(accs)})
    return points


def markdown(runs: list[dict], points: list[dict], title: str) -> str:
    has_val = any(r["val_acc"] is not None for r in runs)
    lines = [f"{title}", "",
             "| training images | seed | test accuracy (last epoch) |" + (" validation accuracy |" if has_val else "")
             + " epochs | samples/s | finished |",
             "|---|---|---|" + ("---|" if has_val else "") + "---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["size"], r["seed"])):
        val = f" {r['val_acc']:.3f} |" if has_val and r["val_acc"] is not None else (" – |" if has_val else "")
        lines.append(f"| {r['size']:,} | {r['seed']} | {r['test_acc']:.3f} |{val} {r['epochs']:g} | "
                     f"{r['samples_per_s'] if r['samples_per_s'] is not None else '–'} | "
                     f"{'yes' if r['finished'] else 'no'} |")
    lines += ["", "| training images | runs | mean test accuracy | range |", "|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['size']:,} | {p['n']} | **{p['mean']:.3f}** | {p['min']:.3f} – {p['max']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], points: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in runs:
        if r["test_acc"] is not None:
            ax.scatter(r["size"], 100 * r["test_acc"], color="tab:blue", alpha=0.5, s=18)
    ax.plot([p["size"] for p in points], [100 * p["mean"] for p in points], "-o", color="tab:blue",
            label="mean over seeds")
    for p in points:
        ax.annotate(f"{100 * p['mean']:.1f}", (p["size"], 100 * p["mean"]), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks([p["size"] for p in points], [f"{p['size']:,}" for p in points])
    ax.minorticks_off()
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    failures = [] if args.report_only else run_all(args, extra)
    runs = [r for n in args.sizes for s in args.seeds
            if (r := read_run(RunDir(Path(args.logs_dir) / run_name(n, s)), n, s)) is not None]
    if not runs:
        print(f"error: no run under {args.logs_dir} has finished an epoch", file=sys.stderr)
        return 1
    points = summarise(runs)
    budget = f"--max_time {args.max_time}" if args.max_time else f"the budget of --preset {args.preset}"
    title = f"Test accuracy against training images, {budget}" + (f" ({' '.join(extra)})" if extra else "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, points, out.with_suffix(".png"), title)
    out.with_suffix(".md").write_text(markdown(runs, points, title))
    out.with_suffix(".json").write_text(json.dumps(
        {"preset": args.preset, "max_time": args.max_time, "train_flags": extra, "runs": runs, "points": points},
        indent=2) + "\n")
    for p in points:
        print(f"{p['size']:>7,} images: mean test accuracy {p['mean']:.3f} over {p['n']} runs")
    print(f"wrote {out.with_suffix('.png')}, {out.with_suffix('.md')}, {out.with_suffix('.json')}")
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
