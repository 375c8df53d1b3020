"""train.py's command line, from the typed flags to checked, resolved arguments: the one module of the library that
handles train.py's argparse namespace; train.py turns it into `perceiver.settings.Settings`, which the library takes.

    args, explicit = parse(train.build_parser, argv)   # --preset and --config applied, dataset defaults, checks
    settings = Settings.from_flags(vars(args))

- `add_config_flags`: an argument group's flags generated from the `PerceiverConfig` fields declared with
  `perceiver.config.option` (names, help, choices, defaults).
- `with_presets`, `read_flag_file`, `to_argv`: ``--preset`` (perceiver/presets.py) and ``--config`` files become
  command-line tokens, so they go through the same argparse checks as typed flags.
- `resolve_defaults`, `validate`, `ignored_flags`: per-dataset defaults, the checks (one line, exit code 2: the
  model's are `PerceiverConfig.check_options`, worded with the flags), and notes on flags without effect.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

from .config import ConfigError, PerceiverConfig
from .data import DATASET_DEFAULTS, PER_DATASET_FLAGS, POINT_CLOUD_DATASETS, DataSettings, per_dataset_values
from .presets import preset_flags
from .rundir import RunDir, default_run_name, location_problem
from .schedule import default_milestones


def parse(make_parser: Callable[[], argparse.ArgumentParser], argv: list[str]) -> tuple[argparse.Namespace, set[str]]:
    """train.py's arguments, checked (`parser.error` for a bad one), and the flags that count as typed."""
    args, explicit = with_presets(make_parser, argv)
    resolve_defaults(args)
    validate(make_parser(), args, explicit)
    return args, explicit


def parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90.5``, ``45:00`` (MM:SS) or ``12:00:00`` (HH:MM:SS)."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or any(p < 0 or not math.isfinite(p) for p in parts):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use seconds (3600) or HH:MM:SS (01:00:00)")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: it must be positive")
    return seconds


def dataset_defaults_text(flag: str) -> str:
    """``cifar10 64, modelnet40 8, ...``: each dataset's default of a per-dataset flag, for --help."""
    return ", ".join(f"{name} {d[flag]}" for name, d in DATASET_DEFAULTS.items())


def add_config_flags(group) -> None:
    """Add the `PerceiverConfig` flags of this argument group (named by its title), in field order."""
    for flag in PerceiverConfig.flags():
        if flag.group != group.title:
            continue
        help = flag.help
        if flag.per_dataset:
            help += f" (default: %(default)s = the dataset's: {dataset_defaults_text(flag.name)})"
        elif "(default:" not in help:
            help += " (default: %(default)s)"
        if flag.type is bool:
            action = "store_false" if flag.default and not flag.inverted else "store_true"
            group.add_argument(f"--{flag.name}", dest=flag.dest, action=action, help=help)
        else:
            group.add_argument(f"--{flag.name}", dest=flag.dest, type=flag.type, choices=flag.choices,
                               default=None if flag.per_dataset else flag.default, help=help)


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the dataset-dependent defaults (the generic flag, else the dataset's own flag, else the dataset's
    default from `perceiver.data.DATASET_DEFAULTS`), milestones and the run name."""
    for general, value in per_dataset_values(vars(args)).items():
        setattr(args, general, value)
    if args.lr_milestones is None:
        args.lr_milestones = default_milestones(args.epochs) if args.epochs > 0 else []
    if args.experiment_name is None:
        args.experiment_name = default_run_name(args.dataset)
    return args


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace, explicit: set[str]) -> None:
    """Reject impossible or contradictory flags with one line (exit code 2)."""
    err = parser.error
    try:
        DataSettings.from_flags(vars(args)).check()
        PerceiverConfig.check_options(PerceiverConfig.options_from_flags(vars(args)))
    except ConfigError as e:
        flags = {f.field: f"--{f.name}" for f in PerceiverConfig.flags()}
        err(e.describe(lambda field: flags.get(field, field)))
    except ValueError as e:
        err(str(e))
    for name in ("epochs", "batch_size", "batch_size_cifar10", "batch_size_modelnet40", "gradient_accumulation_steps",
                 "attention_save_interval", "num_probe_samples", "lr_step_size", "sync_every", "lr_base_batch",
                 "limit_train_batches", "limit_eval_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            err(f"--{name} must be a positive integer, got {value}")
    for name in ("num_workers", "threads"):
        if getattr(args, name) < 0:
            err(f"--{name} must be >= 0, got {getattr(args, name)}")
    for name in ("lr", "lr_gamma", "T_max_cosine"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            err(f"--{name} must be a positive number, got {value}")
    for name in ("weight_decay", "grad_clip", "eta_min_cosine", "warmup_epochs"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            err(f"--{name} must be a number >= 0, got {value}")
    for name in ("mixup_alpha", "cutmix_alpha"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            err(f"--{name} must be a number >= 0 (0 = off), got {getattr(args, name)}")
    if not 0.0 <= args.mix_prob <= 1.0:
        err(f"--mix_prob is a probability and must be in [0, 1], got {args.mix_prob}")
    if not 0.0 <= args.ema_decay < 1.0:
        err(f"--ema_decay must be in [0, 1) (0 = off; e.g. 0.999), got {args.ema_decay}")
    if args.dataset in POINT_CLOUD_DATASETS:
        for flag in ("cutmix_alpha", "tta"):
            if getattr(args, flag):
                err(f"--{flag} needs an image dataset, not {args.dataset}: a point cloud has no rectangle to cut "
                    f"and no mirror image to average over (drop --{flag})")
    if not 0.0 <= args.label_smoothing < 1.0:
        err(f"--label_smoothing must be in [0, 1), got {args.label_smoothing}")
    if not 0.0 <= args.val_split < 1.0:
        err(f"--val_split is a fraction of the training set and must be in [0, 1), got {args.val_split}")
    if args.warmup_epochs > args.epochs:
        err(f"--warmup_epochs ({args.warmup_epochs:g}) is longer than --epochs ({args.epochs})")
    bad = [m for m in args.lr_milestones if not 1 <= m < args.epochs]
    if bad:
        err(f"--lr_milestones {' '.join(map(str, bad))} out of range: milestones are epochs in 1..{args.epochs - 1} "
            f"(--epochs {args.epochs})")
    if sorted(set(args.lr_milestones)) != list(args.lr_milestones):
        err("--lr_milestones must be strictly increasing, e.g. --lr_milestones 30 60 90")
    if args.eta_min_cosine >= args.lr and args.scheduler == "cosine":
        err(f"--eta_min_cosine ({args.eta_min_cosine}) must be below --lr ({args.lr})")
    for flag, scheds in (("lr_milestones", ("multistep",)), ("lr_step_size", ("step",)),
                         ("T_max_cosine", ("cosine",)), ("eta_min_cosine", ("cosine",)),
                         ("lr_gamma", ("multistep", "step"))):
        if flag in explicit and args.scheduler not in scheds:
            err(f"--{flag} applies to --scheduler {'/'.join(scheds)}, not {args.scheduler}")
    if args.use_learned_pe and args.dataset in POINT_CLOUD_DATASETS:
        err(f"--use_learned_pe needs an image dataset: the points of a {args.dataset} cloud have no fixed order "
            f"to learn an embedding per position; use the Fourier features (drop --use_learned_pe)")
    if args.stem != "none" and args.dataset in POINT_CLOUD_DATASETS:
        err(f"--stem {args.stem} needs an image dataset: a {args.dataset} cloud has no pixel grid to convolve "
            f"(drop --stem)")
    if args.stem != "none" and args.permute_pixels:
        err(f"--stem {args.stem} convolves neighbouring pixels, which --permute_pixels scatters: drop one of them")
    if args.experiment_name in ("", ".", "..") or re.search(r"[/\\\x00]", args.experiment_name):
        err(f"--experiment_name {args.experiment_name!r} must be a plain folder name (no '/', not '.' or '..')")
    problem = location_problem(args.logs_dir, args.experiment_name)
    if problem and (not args.resume or {"logs_dir", "experiment_name"} & explicit):
        err(problem)
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            err("--device cuda: no CUDA device is visible; use --device cpu or --device auto")
    if args.compile and no_cpp_compiler(args.device):
        err("--compile on a CPU generates C++ and no C++ compiler was found (g++, or the one $CXX names): install "
            "one (e.g. apt-get install g++) or run eagerly with --no_compile")
    if args.resume and args.overwrite:
        err("--resume continues a run and --overwrite deletes it: pass one of them")
    if args.eval_only and not args.resume:
        err("--eval_only needs --resume RUN (the run directory or checkpoint to evaluate)")
    if args.eval_only and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        err("--eval_only runs in one process: launch it with python, not torchrun")
    if args.resume and not Path(args.resume).exists():
        err(f"--resume {args.resume}: no such run directory or checkpoint file")
    if args.resume and Path(args.resume).is_dir() and not RunDir(args.resume).holds_run():
        err(f"--resume {args.resume}: this folder holds no training run (no config.json, status.json or "
            f"checkpoints/last.pt)")
    if not args.resume:
        run = RunDir(Path(args.logs_dir) / args.experiment_name)
        if run.holds_run() and not args.overwrite:
            err(f"{run.path} already holds a run: pass --resume {run.path} to continue it, --overwrite to "
                f"delete it and start over, or choose another --experiment_name")


def no_cpp_compiler(device: str) -> bool:
    """Whether a CPU run's torch.compile would fail at its first step for want of a C++ compiler, asked of
    inductor's own search (which reads $CXX), so that the answer is the one the compilation would get."""
    import torch
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return False
    from torch._inductor import cpp_builder, exc
    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return True
    return False


def ignored_flags(args: argparse.Namespace, explicit: set[str]) -> list[str]:
    """Typed flags that have no effect with the other flags given (said once, not an error)."""
    notes = []
    for general, own in PER_DATASET_FLAGS.items():
        for dataset, flag in own.items():
            if flag not in explicit:
                continue
            if dataset != args.dataset:
                notes.append(f"--{flag} applies to --dataset {dataset} only")
            elif general in explicit:
                notes.append(f"--{flag} is overridden by --{general}")
    if args.use_learned_pe:
        notes += [f"--{n} has no effect with --use_learned_pe" for n in sorted(explicit)
                  if n.endswith("fourier_bands") or n.endswith("max_freq")]
    return notes


# ------------------------------------------------------------------ --preset and --config: flags as typed tokens


def to_argv(flags: dict, actions: dict[str, list[argparse.Action]]) -> list[str]:
    """Command-line tokens for ``{dest: value}``; ``actions`` maps each dest to its argparse actions.

    A switch is typed when its value is the one the switch sets (``True`` for ``--save_metrics``, ``False`` for
    ``--no_input_norm``, whose dest is ``input_norm``; ``--compile`` and ``--no_compile`` share one, so a file's
    ``false`` can turn off a preset's ``--compile``); ``None`` leaves any flag at its default; lists become
    ``nargs`` values. Raises ValueError (one line) for a value the flag cannot take.
    """
    argv: list[str] = []
    for dest, value in flags.items():
        action = actions[dest][0]
        flag = action.option_strings[0]
        if action.nargs == 0:  # store_true / store_false
            if not isinstance(value, bool):
                raise ValueError(f"{flag} is a switch: its value must be true or false, got {value!r}")
            argv += [a.option_strings[0] for a in actions[dest] if a.const == value][:1]
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


def read_flag_file(path: str, parser: argparse.ArgumentParser) -> tuple[dict, set[str]]:
    """The flags of ``--config FILE`` and the ones that count as typed; ValueError (one line) for a bad file.

    A run's config.json lists every flag, resolved: those still at their default, or at the value the dataset
    would give them anyway (`resolve_defaults`), count as not typed (so they neither trigger
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
            if getattr(resolve_defaults(probe), name) == flags[name]:
                flags[name] = None
    return flags, {k for k, v in flags.items() if v != defaults[k]}


def with_presets(make_parser: Callable[[], argparse.ArgumentParser],
                 argv: list[str]) -> tuple[argparse.Namespace, set[str]]:
    """Parse ``argv`` on top of the flags of --preset and --config (applied in that order, so typed flags win);
    returns the arguments and the flags that count as typed (the typed ones, the preset's, the file's)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    explicit = typed_flags(make_parser, argv) - {"preset", "config"}
    actions: dict[str, list[argparse.Action]] = {}
    for a in parser._actions:
        if a.option_strings:
            actions.setdefault(a.dest, []).append(a)
    base: list[str] = []
    sources = [(f"--preset {args.preset}", lambda: (preset_flags(args.preset), None))] if args.preset else []
    if args.config:
        sources.append((f"--config {args.config}", lambda: read_flag_file(args.config, parser)))
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
