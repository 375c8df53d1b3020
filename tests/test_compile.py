"""train.py --compile on the CPU with inductor (the backend a GPU run uses, generating C++ here): the model and
LAMB's update are compiled at the first steps and never again, and the compiled run learns what the eager run
learns. Slow (inductor's first compilation of each graph takes tens of seconds on 2 cores; later runs reuse its
on-disk cache), so the runs share one model and batch shape, and every compiled run is also a recompile check."""
import math

import pytest
import torch
from torch._dynamo.utils import counters

from perceiver.rundir import RunDir
from perceiver.step import TrainStep

pytestmark = pytest.mark.slow

#: 72 images at batch 16: 4 full batches and a partial one of 8, which --compile drops
RUN = ["--epochs", "2", "--shapes_train_size", "72", "--no_progress", "--save_metrics", "--sync_every", "2"]


@pytest.fixture
def compiled_once(monkeypatch):
    """From the end of the first optimizer step on, a recompilation raises (error_on_recompile); returns the
    number of graphs dynamo compiled."""
    torch._dynamo.reset()
    counters.clear()
    real = TrainStep.update

    def update(self, lr):
        out = real(self, lr)
        torch._dynamo.config.error_on_recompile = True  # the model compiled at step 1, the update at step 2
        return out
    monkeypatch.setattr(TrainStep, "update", update)
    with torch._dynamo.config.patch(error_on_recompile=False):  # restored on the way out
        yield lambda: counters["stats"]["unique_graphs"]
    torch._dynamo.reset()


CASES = {
    "lamb, ema, clip, accumulation": (["--optimizer", "lamb", "--ema_decay", "0.9", "--grad_clip", "1",
                                       "--gradient_accumulation_steps", "2"], 2),
    "lamb, no ema, no clip, reduce-overhead": (["--optimizer", "lamb", "--grad_clip", "0",
                                                "--compile_mode", "reduce-overhead"], 2),
    "adamw, ema, clip, accumulation": (["--optimizer", "adamw", "--ema_decay", "0.9", "--grad_clip", "1",
                                        "--gradient_accumulation_steps", "2"], 1),
    "adamw, no ema, no clip": (["--optimizer", "adamw", "--grad_clip", "0"], 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_training_step_compiles_once(run_train, compiled_once, name):
    flags, graphs = CASES[name]
    res = run_train(RUN + ["--compile"] + flags)
    assert res.code == 0, res.err[-2000:]
    rows = RunDir(res.run_dir).read_metrics()
    assert [r["train_samples"] for r in rows] == [64, 64]  # the partial batch of 8 dropped in both epochs
    assert compiled_once() == graphs  # the model (its backward with it), and LAMB's update: one graph each


def test_train_py_compile_learns_what_the_eager_run_learns(run_train, compiled_once):
    flags = ["--shapes_train_size", "96", "--optimizer", "lamb", "--ema_decay", "0.9", "--lr", "0.006"]
    compiled = run_train(RUN + flags + ["--compile"], name="compiled")
    assert compiled.code == 0, compiled.err[-2000:]
    eager = run_train(RUN + flags, name="eager")
    assert eager.code == 0, eager.err[-2000:]
    steps = [s["loss"] for s in RunDir(compiled.run_dir).read_steps()]
    assert len(steps) == 12 and sum(steps[-4:]) < sum(steps[:4])  # 6 steps an epoch; the loss goes down
    a, b = RunDir(compiled.run_dir).read_metrics(), RunDir(eager.run_dir).read_metrics()
    for ra, rb in zip(a, b):
        for key in ("train_loss", "test_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), key
        for key in ("train_acc", "test_acc"):
            assert ra[key] == rb[key], key
    for sa, sb in zip(RunDir(compiled.run_dir).read_steps(), RunDir(eager.run_dir).read_steps()):
        assert sa["loss"] == pytest.approx(sb["loss"], rel=1e-4) and math.isfinite(sa["grad_norm"])
