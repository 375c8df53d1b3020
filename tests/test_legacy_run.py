"""A run directory written by an earlier version of train.py still evaluates and resumes.

tests/data/legacy_run is a tiny shapes2d run made by that version: the command in its config.json, stopped by
SIGINT after the first batch of its second epoch (last.pt holds the position and the epoch's partial sums), then
scored with ``--eval_only`` (its eval.json). Runs are compared with a tolerance, since the saved figures come from
another machine.
"""
import json
import shutil

import pytest
import torch

from conftest import REPO, run_train_in
from perceiver.rundir import TIMING_FIELDS, RunDir

LEGACY = REPO / "tests" / "data" / "legacy_run"
#: the command that made it, without --logs_dir and --experiment_name
COMMAND = ["--dataset", "shapes2d", "--shapes_train_size", "40", "--shapes_test_size", "20", "--num_latents", "4",
           "--latent_dim", "8", "--num_cross_attend_stages", "1", "--num_transformer_blocks", "1", "--num_heads", "1",
           "--fourier_bands", "2", "--batch_size", "10", "--num_workers", "0", "--optimizer", "adamw", "--lr",
           "0.003", "--scheduler", "cosine", "--warmup_epochs", "0.5", "--epochs", "2", "--limit_train_batches", "2",
           "--dropout", "0.1", "--save_metrics", "--device", "cpu", "--no_progress"]


@pytest.fixture
def legacy(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "logs" / "legacy_run")
    shutil.copytree(LEGACY, run.path)
    return run


def close(a, b) -> bool:
    """Equal rows or values, floats to 1e-5."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return b == pytest.approx(a, rel=1e-5, abs=1e-8)
    return a == b


def learning(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def test_the_fixture_is_what_it_says():
    run = RunDir(LEGACY)
    command = run.read_config()["command"].replace(" --logs_dir logs --experiment_name legacy_run", "")
    assert command == " ".join(["train.py", *COMMAND])
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (1, 1, 3) and state["partial"]
    assert run.read_status()["state"] == "interrupted"


def test_eval_only_scores_it_as_the_version_that_wrote_it(legacy, tmp_path):
    before = json.loads(legacy.eval_path.read_text())
    res = run_train_in(tmp_path / "logs", ["--eval_only", "--resume", str(legacy.path)], tiny=False)
    assert res.code == 0, res.err
    after = json.loads(legacy.eval_path.read_text())
    assert after["checkpoint"].endswith("last.pt") and after["n"] == before["n"] == 20
    assert close({k: before[k] for k in ("test_loss", "test_acc", "confusion", "per_class_acc", "epoch")},
                 {k: after[k] for k in ("test_loss", "test_acc", "confusion", "per_class_acc", "epoch")})


def test_resume_finishes_it_as_an_uninterrupted_run_would(legacy, tmp_path):
    config = legacy.config_path.read_text()
    res = run_train_in(tmp_path / "logs", ["--resume", str(legacy.path)], tiny=False, name="legacy_run")
    assert res.code == 0, res.err
    assert legacy.read_status()["state"] == "finished" and legacy.config_path.read_text() == config
    ref = run_train_in(tmp_path / "ref", COMMAND, tiny=False, name="ref")
    assert ref.code == 0, ref.err
    reference = RunDir(ref.run_dir)
    assert [r["epoch"] for r in legacy.read_metrics()] == [1, 2]
    assert close(learning(legacy.read_metrics()), learning(reference.read_metrics()))
    assert close(legacy.read_steps(), reference.read_steps())
    assert close(legacy.read_per_class(), reference.read_per_class())
    resumed = torch.load(legacy.last_checkpoint, weights_only=True)
    fresh = torch.load(reference.last_checkpoint, weights_only=True)
    assert resumed["finished"] and close(resumed["best"], fresh["best"])
    for k, w in fresh["model"].items():
        r = resumed["model"][k]
        if k.endswith(".qkv.bias"):
            # The key bias adds the same q·b to every score of a query, which the softmax ignores: its gradient is
            # zero up to rounding, and AdamW turns that rounding, which differs between CPUs, into steps of about
            # the learning rate. It changes no output; the query and value biases must still agree.
            dim = w.shape[0] // 3
            r, w = torch.cat([r[:dim], r[2 * dim:]]), torch.cat([w[:dim], w[2 * dim:]])
        torch.testing.assert_close(r, w, rtol=1e-5, atol=1e-5, msg=k)
