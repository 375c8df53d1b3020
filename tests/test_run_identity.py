"""A run directory belongs to one run, on one set of data: --resume writes only into the run its checkpoint
belongs to (a checkpoint from outside any run starts a new run, never in an existing one, named after its real
dataset under --logs_dir); a resume on other data is refused naming what differs, --eval_only on other data
records what it scored; empty splits, a changed --kernels and a first-epoch resume are one line; the advice of a
non-finite loss is a command that works (--lr and --grad_clip accepted on resume, recorded in config.json)."""
import contextlib
import io
import json
import pickle
import re
import shlex
import shutil

import pytest
import torch

import train
from conftest import run_train_in
from perceiver.rundir import RunDir, RunLock
from data_files import write_cifar

#: the tiny model of conftest's TINY_TRAIN, on CIFAR-10 files (20 train / 6 test images per write_cifar)
CIFAR = ["--dataset", "cifar10", "--num_latents", "8", "--latent_dim", "32", "--num_cross_attend_stages", "1",
         "--num_transformer_blocks", "1", "--num_heads", "2", "--fourier_bands", "4", "--batch_size", "8",
         "--num_workers", "0", "--warmup_epochs", "0.5", "--optimizer", "adamw", "--lr", "0.003", "--no_progress",
         "--no_augment"]


def main(argv) -> tuple[int, str, str]:
    """train.py in this process, without conftest's --logs_dir/--experiment_name."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = train.main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def unfinished(tmp_path):
    """A shapes2d run stopped after epoch 1 of 2 (a SIGINT at the first step of epoch 2)."""
    res = run_train_in(tmp_path / "logs", ["--epochs", "2"], name="A", faults="sigint_step:4")
    assert res.code == 130, res.err
    return RunDir(res.run_dir)


# ---------------------------------------------------------------------------------------- resume identity


def test_a_checkpoint_from_outside_a_run_never_writes_into_an_existing_run(unfinished, tmp_path):
    logs = tmp_path / "logs"
    loose = tmp_path / "a.pt"
    shutil.copy(unfinished.last_checkpoint, loose)
    assert run_train_in(logs, ["--epochs", "1"], name="B").code == 0
    before, before_a = snapshot(logs / "B"), snapshot(unfinished.path)
    res = run_train_in(logs, ["--resume", str(loose)], name="B", tiny=False)
    line = one_line(res.err)
    assert res.code == 2 and f"{logs / 'B'} already holds" in line and "--experiment_name" in line, line
    assert f"--resume {logs / 'B'}" in line
    assert snapshot(logs / "B") == before and snapshot(unfinished.path) == before_a

    # a new name: a new run, with its own config.json, continuing from the checkpoint's epoch
    res = run_train_in(logs, ["--resume", str(loose)], name="C", tiny=False)
    assert res.code == 0, res.err
    new = RunDir(logs / "C")
    config = new.read_config()
    assert config["started_from"] == str(loose) and config["args"]["experiment_name"] == "C"
    assert config["args"]["dataset"] == "shapes2d" and config["data"]["train"]["items"] == 64
    assert [r["epoch"] for r in new.read_metrics()] == [2] and new.read_status()["state"] == "finished"
    assert snapshot(unfinished.path) == before_a and snapshot(logs / "B") == before


def test_without_a_name_the_new_run_is_named_after_its_dataset_under_logs_dir(unfinished, tmp_path, monkeypatch):
    loose = tmp_path / "a.pt"
    shutil.copy(unfinished.last_checkpoint, loose)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = main(["--resume", str(loose), "--logs_dir", str(tmp_path / "new_logs")])
    assert code == 0, err
    runs = list((tmp_path / "new_logs").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"shapes2d_\d{8}-\d{6}", runs[0].name)
    assert (runs[0] / "config.json").is_file() and (runs[0] / "checkpoints" / "last.pt").is_file()
    assert list(elsewhere.iterdir()) == []  # nothing under ./logs


def test_a_checkpoint_inside_a_run_writes_into_that_run_only(unfinished, tmp_path):
    before = snapshot(unfinished.path)
    for target in (unfinished.path, unfinished.last_checkpoint):
        res = run_train_in(tmp_path / "logs", ["--resume", str(target)], name="B", tiny=False)
        line = one_line(res.err)
        assert res.code == 2 and f"continues the run in {unfinished.path}" in line and "--experiment_name" in line
    assert snapshot(unfinished.path) == before and not (tmp_path / "logs" / "B").exists()
    res = run_train_in(tmp_path / "logs", ["--resume", str(unfinished.last_checkpoint)], name="A", tiny=False)
    assert res.code == 0, res.err
    assert [r["epoch"] for r in unfinished.read_metrics()] == [1, 2]


# ------------------------------------------------------------------------------------------- data identity


def cifar_dir(root, **kw):
    write_cifar(root, **kw)
    return root


def relabel(folder, name, index, label):
    with open(folder / name, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"labels"][index] = label
    with open(folder / name, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.fixture
def cifar_run(tmp_path):
    """A CIFAR-10 run on 20 training images, stopped after epoch 1 of 2."""
    data = cifar_dir(tmp_path / "d1")
    res = run_train_in(tmp_path / "logs", CIFAR + ["--data_dir", str(data), "--epochs", "2"], tiny=False,
                       faults="sigint_step:3")
    assert res.code == 130, res.err
    return RunDir(res.run_dir), data


def test_config_json_records_the_data_fingerprint(cifar_run):
    run, _ = cifar_run
    data = run.read_config()["data"]
    assert data["dataset"] == "cifar10" and data["class_names"][:2] == ["airplane", "automobile"]
    assert data["train"]["items"] == 20 and data["test"]["items"] == 6 and data["val"] is None
    assert len(data["train"]["hash"]) == 16 and data["train"]["hash"] != data["test"]["hash"]
    assert torch.load(run.last_checkpoint, weights_only=True)["data"] == data


@pytest.mark.parametrize("change,needle", [
    (lambda root: cifar_dir(root, per_batch=3), "train split of 15 items where the run had 20"),
    (lambda root: relabel(cifar_dir(root) / "cifar-10-batches-py", "data_batch_2", 0, 9),
     "train split of the same size (20 items) with other labels or content"),
    (lambda root: relabel(cifar_dir(root) / "cifar-10-batches-py", "test_batch", 5, 0),
     "test split of the same size (6 items)"),
])
def test_resume_on_other_data_is_refused_naming_what_differs(cifar_run, tmp_path, change, needle):
    run, data = cifar_run
    before = snapshot(run.path)
    change(tmp_path / "d2")
    res = run_train_in(tmp_path / "logs", ["--resume", str(run.path), "--data_dir", str(tmp_path / "d2")],
                       tiny=False)
    line = one_line(res.err)
    assert res.code == 2 and needle in line and f"--data_dir {data}" in line, line
    assert snapshot(run.path) == before


def test_resume_on_the_same_data_in_another_folder_is_accepted(cifar_run, tmp_path):
    run, data = cifar_run
    shutil.copytree(data, tmp_path / "copy")
    res = run_train_in(tmp_path / "logs", ["--resume", str(run.path), "--data_dir", str(tmp_path / "copy")],
                       tiny=False)
    assert res.code == 0, res.err
    assert run.read_status()["state"] == "finished"


def test_eval_only_on_other_data_records_what_it_scored_and_refuses_other_classes(cifar_run, tmp_path):
    run, _ = cifar_run
    other = cifar_dir(tmp_path / "d2", test_size=9)
    res = run_train_in(tmp_path / "logs", ["--eval_only", "--resume", str(run.path), "--data_dir", str(other)],
                       tiny=False)
    assert res.code == 0, res.err
    scored = json.loads(run.eval_path.read_text())
    assert scored["n"] == 9 and scored["data"]["test"]["items"] == 9
    assert scored["data"]["test"]["hash"] != run.read_config()["data"]["test"]["hash"]

    renamed = cifar_dir(tmp_path / "d3")
    meta = renamed / "cifar-10-batches-py" / "batches.meta"
    names = pickle.loads(meta.read_bytes())
    names[b"label_names"] = names[b"label_names"][::-1]
    meta.write_bytes(pickle.dumps(names, protocol=2))
    before = run.eval_path.read_bytes()
    res = run_train_in(tmp_path / "logs", ["--eval_only", "--resume", str(run.path), "--data_dir", str(renamed)],
                       tiny=False)
    line = one_line(res.err)
    assert res.code == 2 and "trained on the classes" in line and "--data_dir" in line, line
    assert run.eval_path.read_bytes() == before


# ------------------------------------------------------------------------------------------ empty splits


@pytest.mark.parametrize("sizes,needle", [
    ({"per_batch": 0}, "the training split has 0 items and at least 1 is needed"),
    ({"test_size": 0}, "the test split has 0 items and at least 1 is needed"),
])
def test_an_empty_split_is_one_line_before_training(tmp_path, sizes, needle):
    data = cifar_dir(tmp_path / "d", **sizes)
    res = run_train_in(tmp_path / "logs", CIFAR + ["--data_dir", str(data), "--epochs", "1"], tiny=False)
    line = one_line(res.err)
    assert res.code == 2 and needle in line and "--data_dir" in line, line
    assert not res.run_dir.exists() and "test acc" not in res.out


def test_eval_only_on_an_empty_test_split_is_one_line(cifar_run, tmp_path):
    run, _ = cifar_run
    empty = cifar_dir(tmp_path / "d2", test_size=0)
    res = run_train_in(tmp_path / "logs", ["--eval_only", "--resume", str(run.path), "--data_dir", str(empty)],
                       tiny=False)
    assert res.code == 2 and "the test split has 0 items" in one_line(res.err)
    assert not run.eval_path.exists()


def test_a_validation_split_that_leaves_nothing_is_one_line(run_train):
    # 10 shapes: one per class, so no class can give an image to validation
    res = run_train(["--shapes_train_size", "10", "--val_split", "0.2", "--epochs", "1"])
    line = one_line(res.err)
    assert res.code == 2 and "--val_split 0.2 leaves no validation items" in line, line
    assert not res.run_dir.exists()


# ---------------------------------------------------------------------------- --kernels, first-epoch resume


def test_kernels_cannot_change_on_resume_but_can_for_eval_only(unfinished, tmp_path):
    before = snapshot(unfinished.path)
    res = run_train_in(tmp_path / "logs", ["--resume", str(unfinished.path), "--kernels", "plain"], name="A",
                       tiny=False)
    line = one_line(res.err)
    assert res.code == 1 and "--kernels: 'auto' -> 'plain'" in line and "drop these flags" in line, line
    assert snapshot(unfinished.path) == before
    res = run_train_in(tmp_path / "logs", ["--eval_only", "--resume", str(unfinished.path), "--kernels", "plain"],
                       name="A", tiny=False)
    assert res.code == 0, res.err
    res = run_train_in(tmp_path / "logs", ["--resume", str(unfinished.path), "--kernels", "auto"], name="A",
                       tiny=False)
    assert res.code == 0, res.err


def test_a_resume_in_the_first_epoch_names_the_running_train_py(tmp_path):
    run = RunDir(tmp_path / "logs" / "run")
    run.create()
    run.write_config({"args": {}})
    run.write_status("running", epoch=1, epochs=2)
    with RunLock(run.path):  # held by this (live) process, as by a train.py in its first epoch
        res = run_train_in(tmp_path / "logs", ["--resume", str(run.path)], tiny=False)
    line = one_line(res.err)
    assert res.code == 1 and "has no checkpoint yet" in line and "still running its first epoch" in line, line
    assert "--overwrite" not in line
    res = run_train_in(tmp_path / "logs", ["--resume", str(run.path)], tiny=False)
    line = one_line(res.err)
    assert res.code == 1 and "ended before the end of its first epoch" in line and "--overwrite" in line, line


# ---------------------------------------------------------------------------------------- non-finite advice


def advised(err: str) -> list[str]:
    """The train.py arguments of the command an error line advises (between backquotes)."""
    command = re.search(r"`python train.py ([^`]*)`", err)
    assert command, err
    return shlex.split(command.group(1))


def test_the_non_finite_advice_is_a_resume_that_works_and_is_recorded(run_train):
    res = run_train(["--epochs", "3", "--save_metrics"], faults="nan_step:6")
    line = one_line(res.err)
    assert res.code == 1 and "--grad_clip 0.25" in line, line
    argv = advised(line)
    assert argv[:2] == ["--resume", str(res.run_dir)] and argv[2:] == ["--lr", "0.00075"]
    again = run_train(argv, tiny=False)
    assert again.code == 0, again.err
    run = RunDir(res.run_dir)
    assert run.read_config()["changed_on_resume"] == [{"epoch": 2, "flag": "lr", "old": 0.003, "new": 0.00075}]
    assert torch.load(run.last_checkpoint, weights_only=True)["args"]["lr"] == 0.00075
    assert "--lr changed on resume: 0.003 -> 0.00075 from epoch 2" in again.out
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]
    assert run.read_config()["args"]["lr"] == 0.003  # "args" stay the flags the run started with


def test_a_non_finite_loss_in_the_first_epoch_says_there_is_no_checkpoint(run_train):
    res = run_train(["--epochs", "2"], faults="nan_step:2")
    line = one_line(res.err)
    assert res.code == 1 and "no checkpoint was saved yet" in line and "--overwrite" in line, line
    assert "last.pt" not in line and "--resume" not in line
    again = run_train(["--epochs", "2", "--lr", "0.00075", "--overwrite"])
    assert again.code == 0, again.err
