"""Bad input that used to end in a traceback, or in a line that hid the cause, is one line naming the problem:
a --logs_dir that is a file and names too long for the file system (refused before any data is loaded), a
checkpoint whose model configuration holds a value of the wrong type, and weights that do not fit the model
(the missing, unexpected and mis-shaped names listed), on --resume, --eval_only and predict alike."""
import shutil

import pytest
import torch

from conftest import run_train_in
from perceiver.predict import main as predict
from perceiver.rundir import RunDir, location_problem

# ------------------------------------------------------------------------------------- where a run can live


@pytest.mark.parametrize("where", ["logs_dir_is_a_file", "inside_a_file", "run_is_a_file", "long_name",
                                   "long_logs_dir_part", "long_path"])
def test_a_run_folder_that_cannot_be_created_is_one_line_exit_2(tmp_path, where):
    (tmp_path / "afile").write_text("not a folder")
    logs, name = tmp_path / "logs", "run"
    if where == "logs_dir_is_a_file":
        logs, message = tmp_path / "afile", f"--logs_dir {tmp_path / 'afile'} is a file, not a folder"
    elif where == "inside_a_file":
        logs = tmp_path / "afile" / "logs"
        message = f"--logs_dir {logs} is inside {tmp_path / 'afile'}, which is a file, not a folder"
    elif where == "run_is_a_file":
        logs, name = tmp_path, "afile"
        message = f"{tmp_path / 'afile'} is a file, not a run folder: choose another --experiment_name"
    elif where == "long_name":
        name = "r" * 300
        message = "--experiment_name: the name " + "r" * 40 + "... is 300 bytes long; the file system"
    elif where == "long_logs_dir_part":
        logs = tmp_path / ("L" * 256) / "logs"
        message = "--logs_dir: the name " + "L" * 40 + "... is 256 bytes long"
    else:
        logs = tmp_path.joinpath(*["d" * 250] * 17)
        message = f"the run folder {logs / name} makes paths of about"
    res = run_train_in(logs, ["--epochs", "1"], name=name)
    lines = res.err.strip().splitlines()
    assert res.code == 2 and len(lines) == 1, res.err
    assert lines[0].split(": error: ", 1)[1].startswith(message)
    assert not (tmp_path / "logs").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_usual_locations_have_no_problem(tmp_path):
    (tmp_path / "logs" / "old").mkdir(parents=True)
    for logs, name in ((tmp_path / "logs", "old"), (tmp_path / "logs", "new"), (tmp_path / "a" / "b", "c"),
                       ("logs", "x" * 255)):
        assert location_problem(logs, name) is None


# ------------------------------------------------------------------------------------ damaged checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    res = run_train_in(logs, ["--epochs", "2"])
    assert res.code == 0, res.err
    return res.run_dir


def edited_run(trained, tmp_path, edit):
    """A copy of the trained run whose last.pt is edited and marked as stopped after epoch 1 (so --resume trains)."""
    run = RunDir(tmp_path / "logs" / "run")
    shutil.copytree(trained, run.path)
    run.best_checkpoint.unlink(missing_ok=True)
    state = torch.load(run.last_checkpoint, weights_only=True)
    edit(state)
    state.update(epoch=1, finished=False)
    torch.save(state, run.last_checkpoint)
    return run


def _config(**values):
    return lambda state: state["model_config"].update(values)


@pytest.mark.parametrize("edit,message", [
    (_config(num_latents="8"), "num_latents='8', expected int"),
    (_config(latent_dim=32.5), "latent_dim=32.5, expected int"),
    (_config(num_heads=None), "num_heads=None, expected int"),
    (_config(stem=3), "stem=3, expected str"),
    (_config(mlp_ratio=float("nan")), "mlp_ratio=nan, expected float"),
    (_config(use_learned_pe="yes", image_size=[32]),
     "use_learned_pe='yes', expected bool; image_size=[32], expected tuple[int, int] | None"),
])
def test_a_model_config_value_of_the_wrong_type_is_one_line_everywhere(trained, tmp_path, capsys, edit, message):
    run = edited_run(trained, tmp_path, edit)
    want = (f"error: checkpoint {run.last_checkpoint}: its model configuration holds values of the wrong type "
            f"({message}); the file was edited or damaged")
    for argv in (["--resume", str(run.path)], ["--eval_only", "--resume", str(run.last_checkpoint)]):
        res = run_train_in(run.path.parent, argv, tiny=False)
        assert (res.code, res.err.strip().splitlines()) == (1, [want]), res.err
    assert predict(["--run_dir", str(run.last_checkpoint), "a.png"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [want]


def test_a_model_config_value_its_checks_refuse_is_one_line(trained, tmp_path):
    run = edited_run(trained, tmp_path, _config(stem="conv2d"))
    res = run_train_in(run.path.parent, ["--resume", str(run.path)], tiny=False)
    assert res.code == 1 and res.err.strip().splitlines() == [
        f"error: checkpoint {run.last_checkpoint}: its model configuration does not fit this version of perceiver "
        f"(stem must be one of none, conv; got 'conv2d')"]


def _mangle(state):
    weights = state["model"]
    missing = sorted(weights)[:2]
    for key in missing:
        del weights[key]
    weights["head.extra"] = torch.zeros(3)
    weights["latents"] = torch.zeros(5, 7)
    state["mangled"] = missing  # for the test to read back


def test_weights_that_do_not_fit_list_the_missing_unexpected_and_mis_shaped_names(trained, tmp_path, capsys):
    run = edited_run(trained, tmp_path, _mangle)
    state = torch.load(run.last_checkpoint, weights_only=True)
    shape = tuple(torch.load(trained / "checkpoints" / "last.pt", weights_only=True)["model"]["latents"].shape)
    detail = (f"missing 2: {', '.join(state['mangled'])}; unexpected 1: head.extra; shape of latents (5, 7) in the "
              f"checkpoint, {shape} in the model")
    want = f"error: checkpoint {run.last_checkpoint}: the weights do not fit the model ({detail})"
    for argv in (["--resume", str(run.path)], ["--eval_only", "--resume", str(run.last_checkpoint)]):
        res = run_train_in(run.path.parent, argv, tiny=False)
        assert (res.code, res.err.strip().splitlines()) == (1, [want]), res.err
    assert predict(["--run_dir", str(run.last_checkpoint), "a.png"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [want]
