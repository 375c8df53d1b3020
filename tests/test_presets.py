"""train.py --preset / --config: a preset is the specification's command, typed flags override it, a run's
config.json restarts the same run, bad files give one line."""
import argparse
import json
import shlex
from pathlib import Path

import pytest

import train
from perceiver import cli
from perceiver.presets import PRESETS

# The three commands of the specification (shared/spec/seed-readme.md, "Esperimenti"), copied verbatim.
SPEC_EXPERIMENTS = {
    "exp1": r"""
python train.py \
    --experiment_name perceiver_cifar10_fourier \
    --dataset cifar10 \
    --data_dir ./data \
    --cifar10_fourier_bands 64 \
    --cifar10_max_freq 32.0 \
    --num_latents 96 \
    --latent_dim 384 \
    --num_cross_attend_stages 4 \
    --num_transformer_blocks 4 \
    --num_heads 3 \
    --dropout 0.2 \
    --output_pooling mean \
    --optimizer lamb \
    --lr 0.004 \
    --scheduler multistep \
    --epochs 120 \
    --batch_size_cifar10 64 \
    --num_workers 4 \
    --save_attention_maps \
    --use_tensorboard
""",
    "exp2": r"""
python train.py \
    --experiment_name perceiver_cifar10_permuted_learned_pe \
    --dataset cifar10 \
    --data_dir ./data \
    --use_learned_pe \
    --permute_pixels \
    --permute_pixels_seed 42 \
    --num_latents 96 \
    --latent_dim 384 \
    --num_cross_attend_stages 1 \
    --num_transformer_blocks 4 \
    --num_heads 3 \
    --dropout 0.2 \
    --output_pooling mean \
    --optimizer lamb \
    --lr 0.004 \
    --scheduler multistep \
    --epochs 120 \
    --batch_size_cifar10 64 \
    --num_workers 4 \
    --save_attention_maps \
    --attention_save_interval 10 \
    --save_metrics \
    --use_tensorboard
""",
    "exp3": r"""
python train.py \
    --experiment_name perceiver_modelnet40_fourier \
    --dataset modelnet40 \
    --data_dir ./data \
    --modelnet40_num_points 2048 \
    --modelnet40_fourier_bands 64 \
    --modelnet40_max_freq 1120.0 \
    --num_latents 128 \
    --latent_dim 512 \
    --num_cross_attend_stages 2 \
    --num_transformer_blocks 6 \
    --num_heads 8 \
    --dropout 0.1 \
    --output_pooling mean \
    --optimizer lamb \
    --lr 0.001 \
    --scheduler multistep \
    --epochs 120 \
    --batch_size_modelnet40 8 \
    --num_workers 0 \
    --save_attention_maps \
    --attention_save_interval 10 \
    --save_metrics \
    --use_tensorboard
""",
}
# The README's quick start, flag by flag.
QUICKSTART = ("--experiment_name quickstart --dataset shapes2d --epochs 24 --num_latents 16 --latent_dim 64 "
              "--num_cross_attend_stages 1 --num_transformer_blocks 2 --num_heads 2 --threads 1 --device_data on "
              "--optimizer adamw --lr 0.002 --init trunc_fan_in --mlp_ratio 4 --save_attention_maps --save_metrics")

# The README's 10-minute CIFAR-10 run on the whole training split, flag by flag.
CIFAR10_10MIN = ("--experiment_name cifar10_10min --dataset cifar10 --num_latents 16 --latent_dim 128 "
                 "--num_cross_attend_stages 2 --num_transformer_blocks 2 --num_heads 4 --max_time 600 "
                 "--crop_padding 0 --save_metrics")
# The README's one-hour run: the same with the hour's budget, 64 latents, the random crop back on, compiled.
CIFAR10_1H = (CIFAR10_10MIN.replace("cifar10_10min", "cifar10_1h").replace("--max_time 600", "--max_time 3600")
              .replace("--crop_padding 0", "--crop_padding 4").replace("--num_latents 16", "--num_latents 64")
              + " --compile")


def spec_argv(name: str) -> list[str]:
    words = shlex.split(SPEC_EXPERIMENTS[name].replace("\\\n", " "))  # join the continued lines
    assert words[:2] == ["python", "train.py"]
    return words[2:]


def resolved(argv):
    """What train.py would run with: the parsed, dataset-resolved arguments and the flags counted as typed."""
    args, explicit = cli.with_presets(train.build_parser, argv)
    return vars(cli.resolve_defaults(args)), explicit


@pytest.mark.parametrize("name", ["exp1", "exp2", "exp3"])
def test_preset_is_exactly_the_specification_command(name):
    from_preset, typed_preset = resolved(["--preset", name])
    from_spec, typed_spec = resolved(spec_argv(name))
    assert from_preset == from_spec
    # every flag of the command counts as typed (a resumed run is checked against them), except --data_dir,
    # which a preset leaves to the user (the specification's ./data is the default)
    assert typed_spec - typed_preset == {"data_dir"} and typed_preset <= typed_spec
    assert "preset" not in from_preset and "config" not in from_preset


def test_quickstart_preset_is_the_readme_command():
    assert resolved(["--preset", "quickstart"])[0] == resolved(shlex.split(QUICKSTART))[0]
    assert set(PRESETS) == {"exp1", "exp2", "exp3", "quickstart", "cifar10_10min", "cifar10_1h"}


def test_cifar10_10min_preset_is_the_readme_command():
    assert resolved(["--preset", "cifar10_10min"])[0] == resolved(shlex.split(CIFAR10_10MIN))[0]
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\\\n", " ").split())
    assert f"python train.py {CIFAR10_10MIN}" in readme


def test_cifar10_1h_preset_is_the_10min_run_with_an_hour_64_latents_the_crop_and_compile():
    assert resolved(["--preset", "cifar10_1h"])[0] == resolved(shlex.split(CIFAR10_1H))[0]
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "python train.py --preset cifar10_1h --data_dir ../shared/data-full --seed 0" in readme
    assert ("`--preset cifar10_1h` is `--preset cifar10_10min` with `--max_time 3600 --crop_padding 4 --num_latents 64"
            " --compile`" in readme)


def test_each_named_model_is_defined_once_for_the_presets_the_benchmarks_and_the_demo():
    from benchmarks.configs import CONFIGS
    from perceiver.presets import MODELS
    from perceiver.settings import Settings
    from perceiver.viz import demo

    for preset, model in (("quickstart", "small"), ("cifar10_10min", "cifar_cpu"), ("exp1", "exp1"),
                          ("exp2", "exp2"), ("exp3", "exp3")):
        assert MODELS[model].items() <= PRESETS[preset][1].items(), preset
    assert {**MODELS["cifar_cpu"], "num_latents": 64}.items() <= PRESETS["cifar10_1h"][1].items()
    # the benchmarks' models: those of the quick start and of experiments 1 and 3, resolved as train.py does
    sizes = ("fourier_bands", "max_freq", "num_latents", "latent_dim", "num_cross_attend_stages",
             "num_transformer_blocks", "num_heads")
    for config, preset in (("small", "quickstart"), ("exp1", "exp1"), ("exp3", "exp3")):
        model = Settings.from_flags(resolved(["--preset", preset])[0]).model
        assert {k: CONFIGS[config]["model"][k] for k in sizes} == {k: model[k] for k in sizes}, config
    # the demo trains the quick start's model
    demo_model = Settings.from_flags(resolved(demo.train_command("logs")[2:])[0]).model
    quickstart = Settings.from_flags(resolved(["--preset", "quickstart"])[0]).model
    assert {k: demo_model[k] for k in sizes} == {k: quickstart[k] for k in sizes}


def test_typed_flags_override_the_preset_wherever_they_are():
    for argv in (["--preset", "exp1", "--lr", "0.01", "--epochs", "3"],
                 ["--lr", "0.01", "--epochs", "3", "--preset", "exp1"]):
        args, _ = resolved(argv)
        assert args["lr"] == 0.01 and args["epochs"] == 3 and args["lr_milestones"] == [2]
        assert args["num_latents"] == 96 and args["fourier_bands"] == 64 and args["batch_size"] == 64
    args, explicit = resolved(["--preset", "exp3", "--data_dir", "/data/modelnet"])
    assert args["data_dir"] == "/data/modelnet" and args["max_freq"] == 1120.0 and "data_dir" in explicit


def test_no_compile_turns_off_the_hour_preset_compilation_typed_or_from_a_file(tmp_path):
    assert resolved(["--preset", "cifar10_1h"])[0]["compile"] is True
    for argv in (["--preset", "cifar10_1h", "--no_compile"], ["--no_compile", "--preset", "cifar10_1h"]):
        args, explicit = resolved(argv)
        assert args["compile"] is False and "compile" in explicit
        assert args["num_latents"] == 64 and args["max_time"] == 3600
    flags = tmp_path / "eager.json"
    flags.write_text('{"compile": false}')
    assert resolved(["--preset", "cifar10_1h", "--config", str(flags)])[0]["compile"] is False
    flags.write_text('{"compile": true}')
    assert resolved(["--config", str(flags)])[0]["compile"] is True
    assert resolved([])[0]["compile"] is False


def test_preset_notes_flags_that_do_not_apply():
    args, explicit = resolved(["--preset", "exp1", "--fourier_bands", "16"])
    assert args["fourier_bands"] == 16
    notes = cli.ignored_flags(argparse.Namespace(**args), explicit)
    assert notes == ["--cifar10_fourier_bands is overridden by --fourier_bands"]


def test_bad_preset_name_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "exp4"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid choice: 'exp4'" in err and "exp1" in err


def test_help_shows_presets_and_config(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--preset {cifar10_10min,cifar10_1h,exp1,exp2,exp3,quickstart}" in out and "--config FILE.json" in out
    assert "exp3: Experiment 3: ModelNet40 point clouds" in out


# -------------------------------------------------------------------------------------------------- --config


def write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_flat_json_of_flags_with_overrides(tmp_path):
    cfg = write(tmp_path / "flags.json", {"dataset": "shapes2d", "--lr": 0.002, "lr_milestones": [3, 6],
                                          "scheduler": "multistep", "epochs": 8, "save_metrics": True,
                                          "max_time": "1:00"})
    args, explicit = resolved(["--config", cfg, "--epochs", "10"])
    assert args["dataset"] == "shapes2d" and args["lr"] == 0.002 and args["lr_milestones"] == [3, 6]
    assert args["epochs"] == 10 and args["save_metrics"] and args["max_time"] == 60.0
    assert {"dataset", "lr", "lr_milestones", "epochs", "save_metrics", "max_time"} <= explicit
    # a switch that turns something off is named by its dest, as config.json saves it
    assert not resolved(["--config", write(tmp_path / "off.json", {"input_norm": False})])[0]["input_norm"]
    assert resolved(["--config", write(tmp_path / "on.json", {"input_norm": True})])[0]["input_norm"]
    # the file wins over the preset, typed flags over both
    args, _ = resolved(["--preset", "exp1", "--config", cfg, "--num_latents", "7"])
    assert args["lr"] == 0.002 and args["dataset"] == "shapes2d" and args["num_latents"] == 7
    assert args["latent_dim"] == 384


@pytest.mark.parametrize("content, message", [
    ({"learning_rate": 0.1, "lr": 0.1, "epoch": 3}, "unknown flags epoch, learning_rate"),
    ({"optimizer": "sgd"}, "argument --optimizer: invalid choice: 'sgd'"),
    ({"epochs": "ten"}, "argument --epochs: invalid int value: 'ten'"),
    ({"use_amp": "yes"}, "--use_amp is a switch"),
    ({"resume": "logs/x"}, "--resume must be typed on the command line"),
    ([1, 2], "must hold a JSON object"),
    ("{not json", "not a readable JSON file"),
    (None, "no such file"),
])
def test_bad_config_file_is_one_line_naming_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SystemExit) as e:
        train.main(["--config", str(path), "--logs_dir", str(tmp_path / "logs")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--config {path}: " in err and message in err, err


def test_config_of_a_run_starts_the_same_run_again(run_train, tmp_path):
    first = run_train(["--epochs", "1", "--scheduler", "cosine", "--limit_train_batches", "2"], name="first")
    assert first.code == 0, first.err
    saved = json.loads((first.run_dir / "config.json").read_text())["args"]

    cfg = str(first.run_dir / "config.json")
    again, explicit = resolved(["--config", cfg, "--experiment_name", "second"])
    for key, value in saved.items():
        if key not in ("experiment_name", "overwrite", "resume", "eval_only"):
            assert again[key] == value, key
    # values the dataset would resolve to anyway and defaults do not count as typed: a cosine run's recorded
    # milestones do not trip "--lr_milestones applies to multistep", nor pin a resumed run
    assert "lr_milestones" not in explicit and "max_freq" not in explicit and "seed" not in explicit
    assert {"dataset", "num_latents", "optimizer", "limit_train_batches", "batch_size", "fourier_bands"} <= explicit

    # the recorded run name is the old run's: one line says so instead of touching it
    res = run_train(["--config", cfg], tiny=False, name="first")
    assert res.code == 2 and "already holds a run" in res.err and len(res.err.strip().splitlines()) == 1
    res = run_train(["--config", cfg, "--epochs", "2"], tiny=False, name="second")
    assert res.code == 0, res.err
    rows = json.loads((res.run_dir / "config.json").read_text())
    assert rows["args"]["epochs"] == 2 and rows["model"] == json.loads(
        (first.run_dir / "config.json").read_text())["model"]
    assert "--config" in rows["command"] and "preset" not in rows["args"]


def test_resume_with_the_preset_checks_its_flags(run_train, tmp_path):
    base = ["--preset", "quickstart", "--epochs", "2", "--limit_train_batches", "1", "--limit_eval_batches", "1"]
    res = run_train(base, name="qs")
    assert res.code == 0, res.err
    # the same command with --resume is accepted (the run is finished: nothing to do)
    res = run_train([*base, "--resume", str(res.run_dir)], name="qs")
    assert res.code == 0 and "already finished" in res.out, res.err
    # a preset whose flags differ from the run's is refused, naming them
    res = run_train(["--preset", "exp1", "--resume", str(tmp_path / "logs" / "qs")], tiny=False, name="qs")
    assert res.code == 1 and "--dataset: 'shapes2d' -> 'cifar10'" in res.err
