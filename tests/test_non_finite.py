"""Non-finite numbers, named at their source and never breaking a file. Every writer of the run directory's JSON
(metrics.jsonl, steps.jsonl, per_class.jsonl, status.json, config.json, eval.json, the rows a resume rewrites)
records NaN and infinity as null in strict JSON, and the readers and figures take null as "no value"; a
non-finite evaluation loss is one warning line naming the split (training and --eval_only); data holding NaN or
infinite values, or labels that are not class numbers, are refused when they are loaded, naming the file and item."""
import json
import math
import pickle

import h5py
import numpy as np
import pytest
import torch

import visualize_attention
import visualize_results
from conftest import run_train_in
from perceiver.data.cifar10 import load_cifar10
from perceiver.data.modelnet40 import load_modelnet40
from perceiver.errors import DataError
from perceiver.rundir import EpochRow, RunDir, atomic_write_json, read_jsonl
from perceiver.viz import synthetic
from data_files import write_cifar, write_modelnet
from test_viz_scripts import SMALL

NAN, INF = float("nan"), float("inf")


def strict(text: str):
    """Parse JSON as any strict reader does: NaN / Infinity literals are an error."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def strict_lines(path):
    return [strict(line) for line in path.read_text().splitlines()]


def row(epoch=1, **fields):
    base = dict(epoch=epoch, step=10 * epoch, lr=0.01, train_loss=1.0, train_acc=0.5, train_samples=64,
                train_batches=4, test_loss=1.2, test_acc=0.4, test_samples=32, best_acc=None, is_best=False)
    return EpochRow(**{**base, **fields})


WRITERS = {  # name -> (write into run, read back the written object)
    "metrics.jsonl": (lambda run: run.append_metrics(row(test_loss=NAN, val_loss=INF, val_acc=0.5, lr=-INF)),
                      lambda run: strict_lines(run.metrics_path)[0]),
    "steps.jsonl": (lambda run: run.append_step({"epoch": 1, "step": 4, "loss": 0.7, "lr": 0.1,
                                                 "grad_norm": np.float32(INF)}),
                    lambda run: strict_lines(run.steps_path)[0]),
    "per_class.jsonl": (lambda run: run.append_per_class({"epoch": 1, "split": "test", "per_class_acc": [NAN, 0.5],
                                                          "confusion": np.array([[1.0, INF], [0.0, 2.0]])}),
                        lambda run: strict_lines(run.per_class_path)[0]),
    "status.json": (lambda run: run.write_status("running", epoch=1, epochs=2, loss=np.float64(NAN)),
                    lambda run: strict(run.status_path.read_text())),
    "config.json": (lambda run: run.write_config({"args": {"lr": 0.1, "max_time": INF}}),
                    lambda run: strict(run.config_path.read_text())),
    "eval.json": (lambda run: atomic_write_json(run.eval_path, {"test_loss": np.float32(NAN), "test_acc": 0.25,
                                                                "per_class_acc": np.array([-INF, 1.0])}),
                  lambda run: strict(run.eval_path.read_text())),
}
EXPECTED = {
    "metrics.jsonl": {"test_loss": None, "val_loss": None, "lr": None, "val_acc": 0.5, "train_loss": 1.0},
    "steps.jsonl": {"grad_norm": None, "loss": 0.7, "lr": 0.1},
    "per_class.jsonl": {"per_class_acc": [None, 0.5], "confusion": [[1.0, None], [0.0, 2.0]]},
    "status.json": {"loss": None, "state": "running"},
    "config.json": {"args": {"lr": 0.1, "max_time": None}},
    "eval.json": {"test_loss": None, "test_acc": 0.25, "per_class_acc": [None, 1.0]},
}


@pytest.mark.parametrize("name", WRITERS)
def test_every_run_file_writer_records_non_finite_numbers_as_null(tmp_path, name):
    run = RunDir(tmp_path / "run")
    run.create()
    write, read = WRITERS[name]
    write(run)
    got = read(run)
    assert {k: got[k] for k in EXPECTED[name]} == EXPECTED[name]


def test_a_resume_rewrites_old_non_finite_rows_as_strict_json(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    # an older version wrote NaN literals into these files; a resume rewrites them
    run.metrics_path.write_text('{"epoch": 1, "test_loss": NaN}\n{"epoch": 2, "test_loss": Infinity}\n')
    run.steps_path.write_text('{"epoch": 1, "step": 1, "grad_norm": Infinity}\n{"epoch": 2, "step": 2}\n')
    run.truncate_metrics(1, last_step=1)
    assert strict_lines(run.metrics_path) == [{"epoch": 1, "test_loss": None}]
    assert strict_lines(run.steps_path) == [{"epoch": 1, "step": 1, "grad_norm": None}]


def test_figures_read_runs_with_null_values(tmp_path, capsys):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=4, attention_epochs=(1, 4), **SMALL)
    rows = read_jsonl(run.metrics_path)
    rows[2].update(test_loss=NAN, train_loss=INF, lr=NAN)
    run.metrics_path.write_text("")
    for r in rows:
        run.append_metrics(row(**{k: v for k, v in r.items() if k in EpochRow.__dataclass_fields__}))
    for step in range(1, 5):
        run.append_step({"epoch": 1, "step": step, "loss": 1.0, "lr": NAN if step == 2 else 0.1})
    assert visualize_results.cli(["--output_dir", str(run.path), "--dpi", "40"]) == 0
    report = strict((run.plots_dir / "training_metrics.json").read_text())
    assert report["epochs_completed"] == 4
    assert visualize_attention.cli(["--logs_dir", str(run.path), "--html"]) == 0
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ train.py


@pytest.fixture
def nan_outputs_in_evaluation(monkeypatch):
    """The model's evaluation outputs are NaN (as an overflow in half precision would make them); training is
    untouched, and so is every gradient norm made infinite."""
    import perceiver.engine as engine
    import perceiver.step as step

    real = engine.view_log_probs
    monkeypatch.setattr(engine, "view_log_probs", lambda *a, **k: real(*a, **k) * NAN)
    update = step.TrainStep.update
    monkeypatch.setattr(step.TrainStep, "update",
                        lambda self, lr: (update(self, lr), torch.tensor(INF))[1])


def test_a_non_finite_evaluation_loss_is_one_line_per_split_and_the_files_stay_valid(tmp_path,
                                                                                     nan_outputs_in_evaluation):
    logs = tmp_path / "logs"
    res = run_train_in(logs, ["--epochs", "2", "--val_split", "0.25", "--save_metrics", "--grad_clip", "1"])
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    run = RunDir(res.run_dir)
    for e in (1, 2):
        for split in ("validation", "test"):
            line = (f"epoch {e}: the {split} loss is nan (not finite): the model gives NaN or infinite outputs on "
                    f"some {split} items; metrics.jsonl records it as null")
            assert sum(line in out for out in res.out.splitlines()) == 1, res.out
    rows = strict_lines(run.metrics_path)
    assert [(r["epoch"], r["test_loss"], r["val_loss"]) for r in rows] == [(1, None, None), (2, None, None)]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    steps = strict_lines(run.steps_path)
    assert len(steps) == rows[-1]["step"] and all(s["grad_norm"] is None for s in steps)
    assert [r["epoch"] for r in strict_lines(run.per_class_path)] == [1, 1, 2, 2]
    assert not run.best_checkpoint.exists()  # never chosen on a NaN validation loss
    assert visualize_results.cli(["--output_dir", str(run.path), "--dpi", "40"]) == 0


def test_eval_only_with_a_non_finite_loss_warns_and_writes_strict_json(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    assert run_train_in(logs, ["--epochs", "1"]).code == 0
    import perceiver.engine as engine

    real = engine.view_log_probs
    monkeypatch.setattr(engine, "view_log_probs", lambda *a, **k: real(*a, **k) * NAN)
    res = run_train_in(logs, ["--eval_only", "--resume", str(logs / "run")], tiny=False)
    assert res.code == 0, res.err
    assert res.err.strip().splitlines() == [
        "warning: the test loss is nan (not finite): the model gives NaN or infinite outputs on some test items; "
        "eval.json records it as null"]
    out = strict((logs / "run" / "eval.json").read_text())
    assert out["test_loss"] is None and 0 <= out["test_acc"] <= 1


# ---------------------------------------------------------------------------------------------- the loaders


def _edit_h5(path, key, edit):
    with h5py.File(path, "r") as f:
        data = {k: f[k][...] for k in f}
    data[key] = edit(data[key])
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f[k] = v


def _set(index, value, dtype=None):
    def edit(a):
        a = a.astype(dtype) if dtype else a.copy()
        a[index] = value
        return a
    return edit


@pytest.mark.parametrize("file,key,edit,message", [
    ("ply_data_train1.h5", "data", _set((2, 5, 1), NAN), "shape 2 (of 4) holds NaN or infinite values"),
    ("ply_data_test0.h5", "data", _set((1, 0, 0), INF), "shape 1 (of 5) holds NaN or infinite values"),
    ("ply_data_test0.h5", "data", _set((slice(3, 5), 0, 2), -INF), "shape 3 and 1 more (of 5) holds NaN or"),
    ("ply_data_train0.h5", "data", _set((4, 1, 1), 1e39, np.float64), "shape 4 (of 6) holds NaN or infinite"),
    ("ply_data_train0.h5", "label", _set((3, 0), NAN, np.float32), "label 3 is nan, not a class number"),
    ("ply_data_test0.h5", "label", _set((0, 0), 2.5, np.float64), "label 0 is 2.5, not a class number"),
])
def test_modelnet40_refuses_non_finite_points_and_labels_naming_file_and_item(tmp_path, file, key, edit, message):
    folder = write_modelnet(tmp_path)
    _edit_h5(folder / file, key, edit)
    with pytest.raises(DataError) as e:
        load_modelnet40(tmp_path, download=False)
    assert str(e.value).startswith(f"{folder / file}: {message}")


def test_train_py_on_modelnet40_with_an_infinite_coordinate_is_one_line(tmp_path):
    folder = write_modelnet(tmp_path / "data", points=32)
    _edit_h5(folder / "ply_data_test0.h5", "data", _set((1, 0, 0), INF))
    res = run_train_in(tmp_path / "logs", ["--dataset", "modelnet40", "--data_dir", str(tmp_path / "data"),
                                           "--modelnet40_num_points", "16", "--epochs", "1"])
    assert res.code == 1 and len(res.err.strip().splitlines()) == 1, res.err
    assert res.err.startswith(f"error: {folder / 'ply_data_test0.h5'}: shape 1 (of 5) holds NaN or infinite values")
    assert not (tmp_path / "logs" / "run").exists()


@pytest.mark.parametrize("labels,message", [
    ([0, 1, NAN, 3], "label 2 is nan, not a class number"),
    ([0, 1, 2.5, 3], "label 2 is 2.5, not a class number"),
    (["a", "b", "c", "d"], "the labels are <U1 values, not class numbers"),
    ([0, [1, 2], 2, 3], "'labels' is not a list of class numbers"),
])
def test_cifar10_refuses_labels_that_are_not_class_numbers(tmp_path, labels, message):
    folder = write_cifar(tmp_path)
    with open(folder / "data_batch_3", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"labels"] = labels
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path, download=False)
    assert str(e.value).startswith(f"{folder / 'data_batch_3'}: {message}")


def test_integral_float_labels_still_load(tmp_path):
    folder = write_modelnet(tmp_path)
    _edit_h5(folder / "ply_data_test0.h5", "label", lambda a: a.astype(np.float64))
    splits, _, _ = load_modelnet40(tmp_path, download=False)
    assert list(splits["test"][1]) == [0, 1, 2, 3, 4]
