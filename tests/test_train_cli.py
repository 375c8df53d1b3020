"""train.py end to end (in-process, tiny): every run-directory file, flag validation, overwrite protection,
--eval_only, --val_split, --max_time, determinism."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, _subprocess_env
from perceiver.rundir import TIMING_FIELDS
from perceiver.rundir import RunDir


def learning(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


# ------------------------------------------------------------------------------------------------- end to end


def test_tiny_run_writes_every_file_of_the_run_directory(run_train):
    res = run_train(["--epochs", "2", "--save_metrics", "--save_attention_maps", "--attention_save_interval", "5",
                     "--use_tensorboard", "--grad_clip", "1.0"])
    assert res.code == 0, res.err
    run = RunDir(res.run_dir)
    assert "config:" in res.out and "batch_size=16" in res.out and "epoch 2/2" in res.out

    cfg = run.read_config()
    for key in ("args", "model", "num_parameters", "dataset", "torch_version", "device", "seed"):
        assert key in cfg
    assert cfg["dataset"]["source"].startswith("built-in shapes2d") and cfg["model"]["latent_dim"] == 32
    assert cfg["args"]["batch_size"] == 16 and cfg["args"]["lr_milestones"] == [1]

    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_acc_top5", "lr", "epoch_time_s",
                    "samples_per_s"):
            assert key in r
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= r["test_acc_top5"] <= 1
        assert r["train_samples"] == 64 and r["test_samples"] == 32
    steps = run.read_steps()
    assert [s["step"] for s in steps] == list(range(1, 9)) and all("grad_norm" in s for s in steps)
    per_class = run.read_per_class()
    assert [p["epoch"] for p in per_class] == [1, 2]
    assert np.array(per_class[0]["confusion"]).shape == (10, 10) and np.sum(per_class[0]["confusion"]) == 32

    assert run.attention_epochs() == [1, 2]  # epoch 1 and the last
    snap = run.load_attention(2)
    assert snap.kind == "image" and snap.cross.shape == (1, 8, 1, 8, 1024) and snap.self_.shape == (1, 1, 8, 2, 8, 8)
    assert snap.inputs.shape == (8, 32, 32, 3) and snap.inputs.dtype == np.uint8
    assert np.allclose(snap.cross.astype(np.float32).sum(-1), 1, atol=1e-2)
    assert len(set(snap.labels.tolist())) == 8 and snap.image_shape == (32, 32, 3) and len(snap.class_names) == 10
    assert np.array_equal(run.load_attention(1).sample_indices, snap.sample_indices)  # fixed probes
    assert snap.probs.shape == (8, 10) and np.array_equal(snap.preds, snap.probs.argmax(1))

    assert any(run.tensorboard_dir.glob("events.out.tfevents.*"))
    assert "epoch 2/2" in run.log_path.read_text()
    status = run.read_status()
    assert status["state"] == "finished" and status["epochs"] == 2
    last = torch.load(run.last_checkpoint, weights_only=True)
    assert last["epoch"] == 2 and last["finished"] and last["best"] == {"metric": "last", "value": rows[-1]["test_acc"],
                                                                        "epoch": 2}
    assert not run.best_checkpoint.exists()  # no validation split: nothing chosen on the test images
    assert not list(run.path.rglob("*.tmp"))


def test_point_cloud_run_with_amp_cls_pooling_and_probes(run_train):
    res = run_train(["--epochs", "1", "--dataset", "shapes3d", "--shapes_num_points", "48", "--use_amp",
                     "--output_pooling", "cls", "--save_attention_maps", "--num_probe_samples", "3",
                     "--no_weight_sharing", "--num_cross_attend_stages", "2"])
    assert res.code == 0, res.err
    assert "--use_amp on CPU" in res.out  # said once: allowed, but usually slower on CPU
    snap = RunDir(res.run_dir).load_attention(1)
    assert snap.kind == "pointcloud" and snap.inputs.shape == (3, 48, 3) and snap.cross.shape == (2, 3, 1, 9, 48)
    assert snap.permutation is None and snap.image_shape is None


def test_narrow_cross_attention_heads_warn_and_the_suggested_width_silences_it(run_train):
    res = run_train(["--epochs", "1", "--cross_heads", "2"])
    assert res.code == 0, res.err
    warning = [line for line in res.out.splitlines() if line.startswith("--cross_heads 2:")]
    assert len(warning) == 1 and "built in full" in warning[0]
    width = warning[0].split("--cross_dim ")[1].split()[0]
    res = run_train(["--epochs", "1", "--cross_heads", "2", "--cross_dim", width], name="wide")
    assert res.code == 0, res.err
    assert "--cross_heads" not in res.out.replace("cross_heads=2", "")


def test_permuted_pixels_with_learned_pe_records_the_permutation(run_train):
    res = run_train(["--epochs", "1", "--permute_pixels", "--use_learned_pe", "--save_attention_maps",
                     "--num_probe_samples", "2"])
    assert res.code == 0, res.err
    snap = RunDir(res.run_dir).load_attention(1)
    assert snap.permutation is not None and sorted(snap.permutation.tolist()) == list(range(1024))
    assert snap.cross_as_image(0).shape == (2, 1, 8, 32, 32)


def test_same_seed_same_metrics_other_seed_differs(run_train):
    args = ["--epochs", "2", "--dropout", "0.1"]
    a, b = run_train(args, name="a"), run_train(args, name="b")
    c = run_train(args + ["--seed", "1"], name="c")
    assert a.code == b.code == c.code == 0
    ra, rb, rc = (RunDir(r.run_dir).read_metrics() for r in (a, b, c))
    assert learning(ra) == learning(rb)
    assert learning(ra) != learning(rc)
    assert all(set(TIMING_FIELDS) <= set(r) for r in ra)


# ---------------------------------------------------------------------------------- overwrite, eval, val, time


def test_existing_run_is_refused_and_overwrite_stays_inside_the_run(run_train, tmp_path):
    first = run_train(["--epochs", "1"])
    assert first.code == 0
    again = run_train(["--epochs", "1"])
    assert again.code == 2 and "already holds a run" in again.err and "--resume" in again.err
    assert "--overwrite" in again.err and again.err.count("\n") == 1
    (first.run_dir / "notes.txt").write_text("mine")
    (tmp_path / "logs" / "other.txt").write_text("mine too")
    res = run_train(["--epochs", "1", "--seed", "3", "--overwrite"])
    assert res.code == 0, res.err
    assert (first.run_dir / "notes.txt").read_text() == "mine" and (tmp_path / "logs" / "other.txt").exists()
    assert len(RunDir(res.run_dir).read_metrics()) == 1
    assert RunDir(res.run_dir).read_config()["seed"] == 3


def test_eval_only_writes_eval_json_and_touches_nothing_else(run_train):
    res = run_train(["--epochs", "2"])
    assert res.code == 0
    run = RunDir(res.run_dir)
    before = {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.is_file()}
    ev = run_train(["--eval_only", "--resume", str(run.path), "--batch_size", "8"], tiny=False)
    assert ev.code == 0, ev.err
    assert {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.is_file() and p.name != "eval.json"} == before
    out = json.loads(run.eval_path.read_text())
    for key in ("test_loss", "test_acc", "test_acc_top5", "n", "data_dir", "checkpoint"):
        assert key in out
    assert out["checkpoint"].endswith("last.pt") and out["n"] == 32  # no validation split: the last epoch
    assert out["test_acc"] == pytest.approx(run.read_metrics()[-1]["test_acc"]) and "test loss" in ev.out


def test_val_split_is_stratified_and_drives_best(run_train):
    res = run_train(["--epochs", "2", "--val_split", "0.25"])
    assert res.code == 0, res.err
    run = RunDir(res.run_dir)
    facts = run.read_config()["dataset"]
    # 6-7 samples per class: round(0.25 * n) = 2 of each class held out
    assert (facts["train_size"], facts["val_size"]) == (44, 20)
    rows = run.read_metrics()
    assert all("val_acc" in r and "val_loss" in r for r in rows)
    best = torch.load(run.best_checkpoint, weights_only=True)["best"]
    assert best["metric"] == "val_acc" and best["value"] == max(r["val_acc"] for r in rows)
    ev = run_train(["--eval_only", "--resume", str(run.path)], tiny=False)
    assert ev.code == 0 and json.loads(run.eval_path.read_text())["checkpoint"].endswith("best.pt")


def test_max_time_budget_stops_and_finishes(run_train):
    res = run_train(["--epochs", "10000", "--max_time", "2", "--scheduler", "cosine", "--save_metrics"])
    assert res.code == 0, res.err
    run = RunDir(res.run_dir)
    status = run.read_status()
    assert status["state"] == "finished" and "time budget" in status["message"]
    rows = run.read_metrics()
    assert 1 <= len(rows) < 10000 and rows[-1]["elapsed_s"] >= 2
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert state["finished"] and state["elapsed_s"] >= 2
    lrs = [s["lr"] for s in run.read_steps()]
    assert lrs[-1] <= 0.5 * max(lrs)  # the cosine was planned over the budget, not over 10000 epochs
    again = run_train(["--resume", str(run.path)], tiny=False)
    assert again.code == 0 and "already finished" in again.out


def test_resume_keeps_the_remaining_time_budget(run_train):
    stopped = run_train(["--epochs", "3", "--max_time", "01:00:00", "--scheduler", "cosine", "--save_metrics"],
                        faults="sigint_step:6")
    assert stopped.code == 130, stopped.err
    run = RunDir(stopped.run_dir)
    spent = torch.load(run.last_checkpoint, weights_only=True)["elapsed_s"]
    assert spent > 0
    resumed = run_train(["--resume", str(run.path)], tiny=False)
    assert resumed.code == 0, resumed.err
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["elapsed_s"] > spent
    assert torch.load(run.last_checkpoint, weights_only=True)["elapsed_s"] >= rows[-1]["elapsed_s"]


# ------------------------------------------------------------------------------------------------- bad flags

BAD_FLAGS = [
    (["--no_such_flag"], 2, "unrecognized arguments"),
    (["--epochs", "abc"], 2, "--epochs"),
    (["--epochs", "0"], 2, "--epochs"),
    (["--lr", "-1"], 2, "--lr"),
    (["--lr", "nan"], 2, "--lr"),
    (["--latent_dim", "30", "--num_heads", "4"], 2, "divisible"),
    (["--dataset", "imagenet"], 2, "--dataset"),
    (["--scheduler", "multistep", "--epochs", "3", "--lr_milestones", "50"], 2, "--lr_milestones"),
    (["--scheduler", "multistep", "--epochs", "5", "--lr_milestones", "3", "2"], 2, "increasing"),
    (["--scheduler", "cosine", "--lr_milestones", "1"], 2, "--lr_milestones"),
    (["--modelnet40_num_points", "4096"], 2, "--modelnet40_num_points"),
    (["--dataset", "shapes3d", "--permute_pixels"], 2, "--permute_pixels"),
    (["--dataset", "shapes3d", "--use_learned_pe"], 2, "--use_learned_pe"),
    (["--resume", "RUN", "--overwrite"], 2, "--overwrite"),
    (["--resume", "/nonexistent/run"], 2, "--resume"),
    (["--resume", "EMPTY"], 2, "holds no training run"),
    (["--eval_only"], 2, "--eval_only"),
    (["--dropout", "1.5"], 2, "--dropout"),
    (["--batch_size", "0"], 2, "--batch_size"),
    (["--optimizer", "sgd"], 2, "--optimizer"),
    (["--max_time", "soon"], 2, "--max_time"),
    (["--max_time", "-5"], 2, "--max_time"),
    (["--val_split", "1.5"], 2, "--val_split"),
    (["--experiment_name", "../escape"], 2, "--experiment_name"),
    (["--output_pooling", "max"], 2, "--output_pooling"),
    (["--gradient_accumulation_steps", "0"], 2, "--gradient_accumulation_steps"),
    (["--warmup_epochs", "10", "--epochs", "3"], 2, "--warmup_epochs"),
    (["--num_workers", "-1"], 2, "--num_workers"),
    (["--label_smoothing", "1"], 2, "--label_smoothing"),
    (["--stem", "conv", "--permute_pixels"], 2, "--permute_pixels"),
    (["--stem", "conv", "--dataset", "shapes3d"], 2, "--stem conv needs an image dataset"),
    (["--stem", "conv", "--stem_width", "0"], 2, "--stem_width"),
    (["--dataset", "cifar10", "--data_dir", "PARTIAL"], 1, "CIFAR-10 files missing"),
    (["--compile", "--batch_size", "128"], 1, "make no full batch of 128"),
]


@pytest.mark.parametrize("args,code,needle", BAD_FLAGS, ids=[" ".join(a) for a, _, _ in BAD_FLAGS])
def test_bad_invocations_fail_with_one_line(run_train, tmp_path, args, code, needle):
    (tmp_path / "empty").mkdir()
    partial = tmp_path / "partial" / "cifar-10-batches-py"
    partial.mkdir(parents=True)
    (partial / "batches.meta").write_bytes(b"")
    subst = {"RUN": str(tmp_path), "EMPTY": str(tmp_path / "empty"), "PARTIAL": str(tmp_path / "partial")}
    res = run_train([subst.get(a, a) for a in args])
    assert res.code == code, (res.out, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and needle in lines[0], res.err
    assert "Traceback" not in res.err + res.out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_device_cuda_without_gpu_is_refused(run_train):
    res = run_train(["--device", "cuda"])
    assert res.code == 2 and "--device cuda" in res.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's C++ compiler")
def test_compile_without_a_cpp_compiler_is_refused_before_the_run_starts(tmp_path):
    """Inductor would fail at the first step, after the data is loaded and the run folder made."""
    p = subprocess.run([sys.executable, "train.py", "--dataset", "shapes2d", "--compile", "--logs_dir",
                        str(tmp_path), "--experiment_name", "run"], cwd=REPO,
                       env=_subprocess_env({"CXX": str(tmp_path / "no-such-g++")}), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "no C++ compiler was found" in lines[0] and "--no_compile" in lines[0], p.stderr
    assert not (tmp_path / "run").exists()


def test_real_process_prints_one_line_and_no_traceback(tmp_path):
    """The same guarantees in a real interpreter (argparse error, and a runtime error caught in main)."""
    for args, code in ((["--epochs", "-3"], 2), (["--resume", str(tmp_path / "x.pt")], 1)):
        if code == 1:
            (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
        p = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=_subprocess_env(), capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == code and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
