"""A model option is declared in one place: a `PerceiverConfig` field made with `option(...)`. A new field (here a
dummy one, on a subclass put in PerceiverConfig's place everywhere) is a train.py flag with its help, reaches the
model, is saved with the run and its checkpoints, and resumes; a resume that changes it is refused."""
import sys
from dataclasses import dataclass

import pytest
import torch

from conftest import run_train_in
from perceiver.config import PerceiverConfig, option
from perceiver.rundir import RunDir


@dataclass
class WithDummy(PerceiverConfig):
    dummy_width: int = option(5, "width of nothing in particular: an option declared for a test")


@pytest.fixture
def dummy_option(monkeypatch):
    """PerceiverConfig replaced by WithDummy in every module that names it; the configs the run builds recorded."""
    import perceiver.cli, perceiver.components, perceiver.inference, perceiver.resume, perceiver.score  # noqa: F401
    import perceiver.settings, perceiver.trainer  # noqa: F401
    import train  # noqa: F401

    for name, module in list(sys.modules.items()):
        if (name == "train" or name.startswith("perceiver")) and getattr(module, "PerceiverConfig", None) is \
                PerceiverConfig:
            monkeypatch.setattr(module, "PerceiverConfig", WithDummy)
    built = []
    real = perceiver.components.build_model

    def build_model(config, device):
        model = real(config, device)
        built.append(model)
        return model
    monkeypatch.setattr(perceiver.components, "build_model", build_model)
    return built


def test_a_new_config_field_is_a_flag_reaches_the_model_is_saved_and_resumes(dummy_option, tmp_path):
    import train

    parser = train.build_parser()
    model_group = next(g for g in parser._action_groups if g.title == "model")
    flag = next(a for a in model_group._group_actions if a.option_strings == ["--dummy_width"])
    assert flag.type is int and flag.default == 5
    assert "width of nothing in particular: an option declared for a test (default: 5)" in \
        " ".join(parser.format_help().split())

    stopped = run_train_in(tmp_path, ["--epochs", "2", "--dummy_width", "7"], faults="sigint_step:6")
    assert stopped.code == 130, stopped.err
    assert [m.config.dummy_width for m in dummy_option] == [7]  # the model trained was built with it
    run = RunDir(stopped.run_dir)
    config = run.read_config()
    assert config["model"]["dummy_width"] == 7 and config["args"]["dummy_width"] == 7
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert state["model_config"]["dummy_width"] == 7 and state["args"]["dummy_width"] == 7

    changed = run_train_in(tmp_path, ["--resume", str(run.path), "--dummy_width", "8"], tiny=False)
    assert changed.code == 1 and "--dummy_width: 7 -> 8" in changed.err
    resumed = run_train_in(tmp_path, ["--resume", str(run.path)], tiny=False)
    assert resumed.code == 0, resumed.err
    assert dummy_option[-1].config.dummy_width == 7 and [r["epoch"] for r in run.read_metrics()] == [1, 2]
    assert torch.load(run.last_checkpoint, weights_only=True)["model_config"]["dummy_width"] == 7


def test_a_new_config_field_with_a_bad_value_is_one_line(dummy_option, tmp_path):
    """Choices and types come from the field too."""
    @dataclass
    class WithChoice(PerceiverConfig):
        dummy_mode: str = option("a", "a dummy choice", choices=("a", "b"))

    import train

    parser = train.build_parser()
    assert "--dummy_width" in parser.format_help()
    res = run_train_in(tmp_path, ["--dummy_width", "seven"])
    assert res.code == 2 and "argument --dummy_width: invalid int value: 'seven'" in res.err
    assert len(res.err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="dummy_mode must be one of a, b; got 'c'"):
        WithChoice(dummy_mode="c")
