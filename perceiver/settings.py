"""A training run's settings: train.py's resolved flags, typed and frozen, one dataclass per group of flags.

    settings = Settings.from_flags(flags)   # flags: {dest: value} of every train.py flag (config.json's "args")
    settings.optim.lr, settings.schedule.scheduler, settings.data (perceiver.data.DataSettings)
    settings.model                          # the PerceiverConfig options: {field: value}

The library reads these, or the plain values it needs from them, never the command line's namespace
(`perceiver/cli.py` is the one module that handles it). `flags` keeps the dict the settings were built from: it is
what config.json and each checkpoint record as "args", and what a resumed run is compared with (a flag added to
train.py later is filled in by `perceiver.resume.merge_flags` before a saved run's flags become settings again).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .config import PerceiverConfig
from .data import DataSettings


@dataclass(frozen=True)
class RunSettings:
    """Which run: where it lives, its seed, and what this invocation does with it."""

    experiment_name: str
    logs_dir: str
    seed: int
    resume: str | None
    overwrite: bool
    eval_only: bool

    @property
    def path(self) -> Path:
        return Path(self.logs_dir) / self.experiment_name


@dataclass(frozen=True)
class BatchSettings:
    batch_size: int                  # per process, resolved from the dataset's default
    num_workers: int
    val_split: float


@dataclass(frozen=True)
class RegularisationSettings:
    ema_decay: float
    mixup_alpha: float
    cutmix_alpha: float
    mix_prob: float
    tta: bool


@dataclass(frozen=True)
class OptimSettings:
    optimizer: str
    lr: float
    weight_decay: float
    epochs: int
    max_time: float | None           # seconds
    lr_scaling: str
    lr_base_batch: int
    gradient_accumulation_steps: int
    grad_clip: float
    label_smoothing: float
    use_amp: bool


@dataclass(frozen=True)
class ScheduleSettings:
    scheduler: str
    warmup_epochs: float
    lr_milestones: tuple[int, ...]   # resolved: 70/85/95 % of the epochs unless given
    lr_gamma: float
    lr_step_size: int
    T_max_cosine: float | None
    eta_min_cosine: float


@dataclass(frozen=True)
class LogSettings:
    save_metrics: bool
    save_attention_maps: bool
    attention_save_interval: int
    num_probe_samples: int
    use_tensorboard: bool


@dataclass(frozen=True)
class RuntimeSettings:
    device: str
    threads: int
    compile: bool
    compile_mode: str
    device_data: str
    sync_every: int
    no_progress: bool
    limit_train_batches: int | None
    limit_eval_batches: int | None


@dataclass(frozen=True)
class Settings:
    run: RunSettings
    data: DataSettings
    batches: BatchSettings
    model: Mapping[str, Any]         # PerceiverConfig options, {field: value}
    regularisation: RegularisationSettings
    optim: OptimSettings
    schedule: ScheduleSettings
    logging: LogSettings
    runtime: RuntimeSettings
    flags: Mapping[str, Any]         # the resolved flags themselves, {dest: value}: the run's record ("args")

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> "Settings":
        """From every train.py flag, resolved (`perceiver.cli.parse`, or a run's saved "args" merged with today's
        flags); per-dataset flags such as ``--batch_size_cifar10`` stay in ``flags`` only, resolved already."""
        flags = dict(flags)
        return cls(run=_pick(RunSettings, flags), data=DataSettings.from_flags(flags),
                   batches=_pick(BatchSettings, flags),
                   model=MappingProxyType(PerceiverConfig.options_from_flags(flags)),
                   regularisation=_pick(RegularisationSettings, flags), optim=_pick(OptimSettings, flags),
                   schedule=_pick(ScheduleSettings, flags), logging=_pick(LogSettings, flags),
                   runtime=_pick(RuntimeSettings, flags), flags=MappingProxyType(flags))


def _pick(cls: type, flags: Mapping[str, Any]):
    """A group's dataclass from the flags of the same names (lists become tuples: the settings are frozen)."""
    return cls(**{f.name: tuple(flags[f.name]) if isinstance(flags[f.name], list) else flags[f.name]
                  for f in fields(cls)})
