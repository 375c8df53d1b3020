"""Named flag sets for `train.py --preset NAME`: the specification's three experiments and the README's quick start.

A preset is shorthand for typing its flags: ``python train.py --preset exp1 --data_dir ./data`` is the
specification's Experiment 1 command, and any flag typed after (or before) ``--preset`` overrides the preset's
value. ``--data_dir`` is left out of every preset: the specification's ``./data`` is already the default, and a
preset never decides where your data lives.

`to_argv` turns a flag dict (a preset, or the JSON of ``--config``) into command-line tokens, so both go through
the same argparse checks as typed flags.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

#: name -> (one-line description, flags). Values as in the specification's commands (docs/TRAINING.md).
PRESETS: dict[str, tuple[str, dict]] = {
    "exp1": ("Experiment 1: CIFAR-10, Fourier features", {
        "experiment_name": "perceiver_cifar10_fourier", "dataset": "cifar10",
        "cifar10_fourier_bands": 64, "cifar10_max_freq": 32.0, "num_latents": 96, "latent_dim": 384,
        "num_cross_attend_stages": 4, "num_transformer_blocks": 4, "num_heads": 3, "dropout": 0.2,
        "output_pooling": "mean", "optimizer": "lamb", "lr": 0.004, "scheduler": "multistep", "epochs": 120,
        "batch_size_cifar10": 64, "num_workers": 4, "save_attention_maps": True, "use_tensorboard": True,
    }),
    "exp2": ("Experiment 2: CIFAR-10, permuted pixels, learned positional encoding", {
        "experiment_name": "perceiver_cifar10_permuted_learned_pe", "dataset": "cifar10",
        "use_learned_pe": True, "permute_pixels": True, "permute_pixels_seed": 42, "num_latents": 96,
        "latent_dim": 384, "num_cross_attend_stages": 1, "num_transformer_blocks": 4, "num_heads": 3,
        "dropout": 0.2, "output_pooling": "mean", "optimizer": "lamb", "lr": 0.004, "scheduler": "multistep",
        "epochs": 120, "batch_size_cifar10": 64, "num_workers": 4, "save_attention_maps": True,
        "attention_save_interval": 10, "save_metrics": True, "use_tensorboard": True,
    }),
    "exp3": ("Experiment 3: ModelNet40 point clouds, Fourier features", {
        "experiment_name": "perceiver_modelnet40_fourier", "dataset": "modelnet40",
        "modelnet40_num_points": 2048, "modelnet40_fourier_bands": 64, "modelnet40_max_freq": 1120.0,
        "num_latents": 128, "latent_dim": 512, "num_cross_attend_stages": 2, "num_transformer_blocks": 6,
        "num_heads": 8, "dropout": 0.1, "output_pooling": "mean", "optimizer": "lamb", "lr": 0.001,
        "scheduler": "multistep", "epochs": 120, "batch_size_modelnet40": 8, "num_workers": 0,
        "save_attention_maps": True, "attention_save_interval": 10, "save_metrics": True, "use_tensorboard": True,
    }),
    "quickstart": ("the README's quick start: built-in shapes2d, a small model, 60 s on one CPU thread", {
        "experiment_name": "quickstart", "dataset": "shapes2d", "max_time": 60, "num_latents": 16,
        "latent_dim": 64, "num_cross_attend_stages": 1, "num_transformer_blocks": 2, "num_heads": 2, "threads": 1,
        # not the paper's recipe: 16 latents, batches from memory (1.6x the steps in 60 s) and AdamW; docs/RESULTS.md
        "device_data": "on", "optimizer": "adamw", "lr": 0.002, "init": "trunc_fan_in", "mlp_ratio": 4.0,
        "save_attention_maps": True, "save_metrics": True,
    }),
}


def preset_flags(name: str) -> dict:
    return dict(PRESETS[name][1])


def to_argv(flags: dict, actions: dict) -> list[str]:
    """Command-line tokens for ``{dest: value}``; ``actions`` maps each dest to its argparse action.

    A switch is typed when its value is the one the switch sets (``True`` for ``--save_metrics``, ``False`` for
    ``--no_input_norm``, whose dest is ``input_norm``); ``None`` leaves any flag at its default; lists become
    ``nargs`` values. Raises ValueError (one line) for a value the flag cannot take.
    """
    argv: list[str] = []
    for dest, value in flags.items():
        action = actions[dest]
        flag = action.option_strings[0]
        if action.nargs == 0:  # store_true / store_false
            if not isinstance(value, bool):
                raise ValueError(f"{flag} is a switch: its value must be true or false, got {value!r}")
            if value == action.const:
                argv.append(flag)
        elif value is None or value is False:
            continue
        elif isinstance(value, (list, tuple)):
            if action.nargs is None:
                raise ValueError(f"{flag} takes one value, got a list {value!r}")
            argv += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            raise ValueError(f"{flag} takes a plain value, got {value!r}")
        else:
            argv += [flag, str(value)]
    return argv


def describe() -> str:
    """One line per preset, for --help."""
    return "; ".join(f"{name}: {text}" for name, (text, _) in PRESETS.items())


# ------------------------------------------------------------------ train.py's parse: presets and flag files


def typed_flags(make_parser: Callable[[], argparse.ArgumentParser], argv: list[str]) -> set[str]:
    """The destinations of the flags actually typed on the command line."""
    parser = make_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    ns, _ = parser.parse_known_args(argv)
    return set(vars(ns))


#: flags that describe one invocation, never taken from a --config file (a run's config.json records them too)
INVOCATION_ONLY = ("preset", "config", "resume", "overwrite", "eval_only")
#: filled from the dataset by `resolve_defaults`; a run's config.json holds their resolved values
RESOLVED = ("batch_size", "fourier_bands", "max_freq", "lr_milestones")


def read_flag_file(path: str, parser: argparse.ArgumentParser,
                   resolve: Callable[[argparse.Namespace], argparse.Namespace]) -> tuple[dict, set[str]]:
    """The flags of ``--config FILE`` and the ones that count as typed; ValueError (one line) for a bad file.

    A run's config.json lists every flag, resolved: those still at their default, or at the value the dataset
    would give them anyway (``resolve`` fills the dataset's defaults), count as not typed (so they neither trigger
    notes nor pin a resumed run).
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError("must hold a JSON object of flags, {\"flag\": value, ...}, or be a run's config.json")
    known = {a.dest for a in parser._actions if a.option_strings}
    if isinstance(data.get("args"), dict):  # a run's config.json
        flags = {k: v for k, v in data["args"].items() if k not in INVOCATION_ONLY}
    else:
        flags = {k.lstrip("-"): v for k, v in data.items()}
        typed_only = sorted(set(flags) & set(INVOCATION_ONLY))
        if typed_only:
            raise ValueError(f"{', '.join('--' + k for k in typed_only)} must be typed on the command line")
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ValueError(f"unknown flag{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (train.py --help "
                         f"lists the flags)")
    if "args" not in data:
        return flags, {k for k, v in flags.items() if v is not None}
    defaults = vars(parser.parse_args([]))
    for name in RESOLVED:
        if flags.get(name) is not None:
            probe = argparse.Namespace(**{**defaults, **flags, name: None, "experiment_name": "x"})
            if getattr(resolve(probe), name) == flags[name]:
                flags[name] = None
    return flags, {k for k, v in flags.items() if v != defaults[k]}


def with_presets(make_parser: Callable[[], argparse.ArgumentParser], argv: list[str], *,
                 resolve: Callable[[argparse.Namespace], argparse.Namespace]) -> tuple[argparse.Namespace, set[str]]:
    """Parse ``argv`` on top of the flags of --preset and --config (applied in that order, so typed flags win);
    returns the arguments and the flags that count as typed (the typed ones, the preset's, the file's)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    explicit = typed_flags(make_parser, argv) - {"preset", "config"}
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    base: list[str] = []
    sources = [(f"--preset {args.preset}", lambda: (preset_flags(args.preset), None))] if args.preset else []
    if args.config:
        sources.append((f"--config {args.config}", lambda: read_flag_file(args.config, parser, resolve)))
    for where, read in sources:
        try:
            flags, typed = read()
            tokens = to_argv(flags, actions)
        except ValueError as e:
            parser.error(f"{where}: {e}")
        check = make_parser()
        check.error = lambda message, where=where: parser.error(f"{where}: {message}")
        check.parse_args(tokens)  # a bad value in the file is reported against the file
        base += tokens
        explicit |= set(flags) if typed is None else typed
    if base:
        args = parser.parse_args(base + argv)
    del args.preset, args.config  # resolved into the other flags; the run's config.json records the command
    return args, explicit
