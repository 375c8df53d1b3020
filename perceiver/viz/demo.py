"""The work behind `demo_visualizations.py`: make a small run when none is given, draw every figure on it, and
follow a run that is still training.

The demo run is a short CPU training of `train.py` on the built-in ``shapes2d`` images (generated in memory, no
download), with attention maps saved every epoch. It is started as a subprocess (``sys.executable train.py ...``),
so the visualizers never import torch or the training engine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import PerceiverError, RunDirError
from ..presets import MODELS
from ..rundir import RunDir
from . import reports
from .comparison import DEFAULT_ALPHAS, epoch_comparison_figure, parametric_figure
from .export import save_figure

DEMO_NAME = "demo_shapes2d"
REPO_ROOT = Path(__file__).resolve().parents[2]

# The quick start's model (perceiver/presets.py) on a data set small enough for about a minute on a laptop CPU.
DEMO_TRAIN_ARGS = (
    "--dataset", "shapes2d", *(token for flag, value in MODELS["small"].items() for token in (f"--{flag}", str(value))),
    "--dropout", "0.0", "--batch_size", "32",
    "--optimizer", "adamw", "--lr", "0.002", "--warmup_epochs", "0.5", "--scheduler", "cosine",
    "--shapes_train_size", "800", "--shapes_test_size", "200", "--num_workers", "0", "--device", "cpu",
    "--save_metrics", "--save_attention_maps", "--attention_save_interval", "1", "--num_probe_samples", "4",
)


def train_command(logs_dir: str | Path, name: str = DEMO_NAME, epochs: int = 6, overwrite: bool = False,
                  train_script: str | Path | None = None) -> list[str]:
    script = Path(train_script) if train_script else REPO_ROOT / "train.py"
    cmd = [sys.executable, str(script), "--experiment_name", name, "--logs_dir", str(logs_dir),
           "--epochs", str(epochs), *DEMO_TRAIN_ARGS]
    return cmd + (["--overwrite"] if overwrite else [])


def run_is_complete(run: RunDir) -> bool:
    """A finished run with metrics and at least one attention file."""
    status = None
    try:
        status = run.read_status()
    except RunDirError:
        return False
    return bool(status and status.get("state") == "finished" and run.read_metrics(skip=reports.skip)
                and run.attention_epochs())


def start_training(cmd: list[str], log_path: Path) -> subprocess.Popen:
    script = Path(cmd[1])
    if not script.exists():
        raise PerceiverError(f"{script} not found: the demo trains with train.py; run it from the repository "
                             f"or pass --logs_dir logs/<experiment> to show an existing run")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(script.parent),
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        log.close()  # the child holds its own descriptor


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def make_demo_run(logs_dir: str | Path, name: str = DEMO_NAME, epochs: int = 6, overwrite: bool = False,
                  train_script: str | Path | None = None) -> RunDir:
    """Train the demo run in the foreground; its console output goes to ``<logs_dir>/<name>.demo.log``."""
    logs_dir = Path(logs_dir)
    cmd = train_command(logs_dir.resolve(), name, epochs, overwrite, train_script)
    log_path = logs_dir / f"{name}.demo.log"
    reports.info(f"no run given: training a small demo run ({epochs} epochs on shapes2d, CPU; about a minute)\n"
                 f"  {' '.join(cmd[1:])}\n  console output: {log_path}")
    proc = start_training(cmd, log_path)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    if rc != 0:
        raise PerceiverError(f"the demo training failed (exit code {rc}): {_tail(log_path)} (full log: {log_path})")
    return RunDir(logs_dir / name)


# --------------------------------------------------------------------------------------------- rendering


@dataclass
class DemoOptions:
    cmap: str = "viridis"
    alpha: float = 0.6
    alphas: tuple = DEFAULT_ALPHAS
    formats: tuple = ("png", "svg", "pdf")
    dpi: int = 150
    compare: tuple[int, int] | None = None  # epochs to compare (default: first and last saved)
    sample: int = 0
    experiment: str | None = None
    done_epochs: set = field(default_factory=set)  # --watch: epochs whose comprehensive figures exist


def render_demo(run: RunDir, out_dir: Path, opts: DemoOptions, *, only_new: bool = False) -> list[Path]:
    """Every figure of the toolkit for one run, each in ``opts.formats``.

    Dashboard (with attention row), the six-panel analysis of the last saved epoch (cross-attention, and latent
    self-attention when the model has latent blocks), the evolution across epochs, the comparison between two
    epochs and the parametric grid. With ``only_new`` (watch mode) epochs already drawn are skipped.
    """
    written = reports.render_dashboard(run, out_dir, title=opts.experiment, enhanced_attention=True, cmap=opts.cmap,
                                       alpha=opts.alpha, dpi=opts.dpi, formats=opts.formats)
    epochs = run.attention_epochs()
    if not epochs:
        reports.warn(f"{run.path}: no attention maps yet; the attention figures follow once train.py saves them "
                     f"(--save_attention_maps)")
        return written
    newest = reports.load_readable(run, reversed(epochs))  # damaged files are skipped with a warning
    if newest is None:
        reports.warn(f"{run.path}: no attention file could be read; the attention figures are left out")
        return written
    last = newest[0]
    base = reports.AttentionOptions(sample=opts.sample, cmap=opts.cmap, alpha=opts.alpha, dpi=opts.dpi,
                                    formats=opts.formats, experiment=opts.experiment)
    if not (only_new and last in opts.done_epochs):
        base.epochs = [last]
        written += reports.render_attention(run, out_dir, base)
        try:
            written += reports.render_attention(run, out_dir, _replace(base, attention="self"))
        except PerceiverError as e:  # no latent blocks: cross-attention only
            reports.warn(str(e))
        opts.done_epochs.add(last)
    written += reports.render_attention(run, out_dir, _replace(base, epochs=None, comprehensive=False,
                                                               create_evolution=True))
    first, second = opts.compare or (reports.load_readable(run, epochs)[0], last)
    pair = reports.choose_epochs(epochs, [first, second], str(run.path))
    if len(pair) == 2 and pair[0] != pair[1]:
        views = reports.fixed_latent_views(run, pair, base)
        if len(views) == 2:
            fig = epoch_comparison_figure(views[0], views[1], opts.cmap, opts.alpha, opts.experiment or run.name)
            written += save_figure(fig, out_dir, "epoch_comparison", opts.formats, opts.dpi)
    elif len(epochs) < 2:
        reports.warn(f"{run.path}: one saved attention epoch; the epoch comparison needs two")
    views = reports.fixed_latent_views(run, [last], base)
    if views:
        fig = parametric_figure(views[0], alphas=opts.alphas, experiment=opts.experiment or run.name)
        written += save_figure(fig, out_dir, "parametric_analysis", opts.formats, opts.dpi)
    return written


def _replace(opts: reports.AttentionOptions, **changes) -> reports.AttentionOptions:
    from dataclasses import replace

    return replace(opts, **changes)


# ------------------------------------------------------------------------------------------------- watch


def watch(run: RunDir, render: Callable[[], list[Path]], *, interval: float = 10.0, timeout: float = 3600.0,
          proc: subprocess.Popen | None = None, sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> str:
    """Re-render whenever a new epoch lands in metrics.jsonl; return the final state of the run.

    Stops when status.json leaves ``running`` (after a last render), when ``timeout`` seconds pass
    (returns ``"timeout"``), or when the training process ``proc`` (the demo's own) exits. With ``proc``, files
    left by an earlier run in the same folder are ignored until status.json carries the new process id.
    """
    start = clock()
    seen = -1
    state = "unknown"
    while True:
        try:
            status = run.read_status() or {}
        except RunDirError:
            status = {}  # being replaced: read it next time
        state = str(status.get("state", "unknown"))
        if proc is not None and status.get("pid") != proc.pid:
            state = "starting"  # no status yet, or the previous run's files until train.py --overwrite clears them
            rows = []
        else:
            rows = run.read_metrics(skip=reports.skip)
        epoch = max((int(r.get("epoch", 0)) for r in rows if isinstance(r, dict)), default=0) if rows else 0
        if rows and epoch != seen:
            seen = epoch
            planned = status.get("epochs", "?")
            reports.info(f"[watch] epoch {epoch}/{planned} ({state}): re-rendering")
            try:
                for path in render():
                    reports.info(f"  wrote {path}")
            except PerceiverError as e:
                reports.warn(str(e))
        finished = (state not in ("running", "starting", "unknown")
                    or (proc is not None and proc.poll() is not None)
                    or (proc is None and not status))  # no status.json: not a train.py run to follow
        if finished:
            if proc is not None and proc.poll() is not None and state in ("running", "starting"):
                state = "failed" if proc.returncode else state
            return state
        if clock() - start >= timeout:
            return "timeout"
        sleep(interval)
