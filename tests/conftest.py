"""Shared test helpers. Several test modules use this file: append to it, don't overwrite it."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# One thread per process, for this process (set before torch is imported) and every subprocess a test starts:
# on a 2-core machine running a test and a child process, two OpenMP threads each wait on each other for
# seconds per step (tests check behaviour, never speed).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# ----------------------------------------------------------------------------------- train.py runs (trainer)

#: a Perceiver small enough for a CPU test: 8 latents x 32, 1 stage, 1 block; 64 train / 32 test shapes2d images
TINY_TRAIN = [
    "--dataset", "shapes2d", "--shapes_train_size", "64", "--shapes_test_size", "32", "--num_latents", "8",
    "--latent_dim", "32", "--num_cross_attend_stages", "1", "--num_transformer_blocks", "1", "--num_heads", "2",
    "--fourier_bands", "4", "--batch_size", "16", "--num_workers", "0", "--warmup_epochs", "0.5",
    "--optimizer", "adamw", "--lr", "0.003", "--scheduler", "cosine",
]


@dataclass
class TrainResult:
    code: int
    out: str
    err: str
    run_dir: Path


def _subprocess_env(extra: dict | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.update(extra or {})
    return env


def train_command(faults: str | None) -> list[str]:
    """The script a subprocess runs: train.py, or train.py behind tests/fault_run.py's injected faults."""
    if faults:
        return [str(REPO / "tests" / "fault_run.py"), faults]
    return [str(REPO / "train.py")]


def run_train_in(logs: Path, args: list[str], *, name: str = "run", tiny: bool = True, subprocess_: bool = False,
                 faults: str | None = None, timeout: float = 240) -> TrainResult:
    """Run train.py with ``--logs_dir logs --experiment_name name`` (+ TINY_TRAIN unless ``tiny=False``).

    In-process by default (no interpreter start-up: fast), in a subprocess with ``subprocess_=True`` (needed for
    signals, SIGKILL, and checking what a real process prints). ``faults``: see tests/faults.py.
    """
    argv = (TINY_TRAIN if tiny else []) + ["--logs_dir", str(logs), "--experiment_name", name] + list(args)
    run_dir = logs / name
    if subprocess_:
        p = subprocess.run([sys.executable, *train_command(faults), *argv], cwd=REPO, env=_subprocess_env(),
                           capture_output=True, text=True, timeout=timeout)
        return TrainResult(p.returncode, p.stdout, p.stderr, run_dir)
    import torch
    import train
    from faults import install

    threads = torch.get_num_threads()
    undo = install(faults or "")
    out, err = io.StringIO(), io.StringIO()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = train.main(argv)
            except SystemExit as e:  # argparse errors
                code = e.code if isinstance(e.code, int) else 1
    finally:
        undo()
        torch.set_num_threads(threads)
    return TrainResult(code, out.getvalue(), err.getvalue(), run_dir)


@pytest.fixture
def run_train(tmp_path):
    """``run_train(args, name="run", tiny=True, subprocess_=False, faults=None)`` -> TrainResult, logs in tmp_path."""
    def _run(args, **kw):
        return run_train_in(tmp_path / "logs", args, **kw)
    return _run


def bundle_of(run_dir: Path):
    """The DataBundle a run was trained on, rebuilt from its config.json."""
    import json

    from perceiver.data import DataSettings, build_dataset

    args = json.loads((run_dir / "config.json").read_text())["args"]
    return build_dataset(DataSettings.from_flags(args))
