"""Everything a training run is made of, built from its settings (`build_parts`).

    parts = build_parts(settings, info, log)
    parts.step.forward_backward(x, y); parts.step.update(lr)      # perceiver.step.TrainStep
    evaluate(parts.eval_model, parts.test_loader, pos=parts.pos, ...)

`perceiver.trainer` runs the epochs over these parts; `perceiver.components` holds the individual builders.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from . import components as comp
from . import probes
from .data import DataBundle
from .data.mixing import BatchMix, flip_index
from .distributed import DistInfo, EpochSampler, barrier
from .ema import EMA
from .engine import LearningRate
from .model import Perceiver, PerceiverConfig
from .optim import build_optimizer
from .schedule import LRSchedule, scaled_lr
from .settings import Settings
from .step import Amp, TrainStep, setup_amp


@dataclass
class RunParts:
    bundle: DataBundle
    train_set: object
    val_set: object | None
    config: PerceiverConfig
    model: Perceiver                  # the trained weights (unwrapped: what checkpoints hold)
    train_model: torch.nn.Module      # the same, wrapped for DDP when distributed
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    amp: Amp
    schedule: LRSchedule
    lr: LearningRate                  # the rate of each step: the schedule as a function of the loop state
    step: TrainStep
    loader: object                    # DataLoader or DeviceBatches
    sampler: EpochSampler
    test_loader: object
    val_loader: object | None
    on_device: bool                   # batches come from device memory
    pos: torch.Tensor | None          # the positions shared by every image, on the device
    flip: torch.Tensor | None         # token indices of the mirrored image, for --tta
    probe_idx: object | None
    batches: int                      # batches per epoch
    steps_per_epoch: int

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights evaluated, probed and saved as best.pt: the average when --ema_decay keeps one."""
        return self.ema.model if self.ema is not None else self.model


def build_parts(settings: Settings, info: DistInfo, log, *, options: Mapping[str, Any] | None = None,
                saved_config: dict | None = None) -> RunParts:
    """The run's parts. The model: `components.model_config` of ``options`` (default: ``settings.model``), on the
    checkpoint's configuration ``saved_config`` when the run resumes one."""
    s, b, o = settings, settings.batches, settings.optim
    if info.is_main:
        bundle, train_set, val_set = comp.build_data(s.data, val_split=b.val_split)
    barrier(info)  # rank 0 first: a download happens once
    if not info.is_main:
        bundle, train_set, val_set = comp.build_data(s.data, val_split=b.val_split)
    config = comp.model_config(bundle, s.model if options is None else options, saved=saved_config)
    model = comp.build_model(config, info.device)
    optimizer = build_optimizer(model, name=o.optimizer, lr=o.lr, weight_decay=o.weight_decay)
    amp = setup_amp(o.use_amp, info.device)
    datasets = [d for d in (train_set, val_set, bundle.test) if d is not None]
    on_device = comp.use_device_data(s.runtime.device_data, datasets, info, log)
    loaders = dict(batch_size=b.batch_size, num_workers=b.num_workers, seed=s.run.seed, info=info, on_device=on_device)
    drop_last = s.runtime.compile  # compiled steps keep one shape: the last partial batch is left out
    loader, sampler = comp.train_loader(train_set, drop_last=drop_last, **loaders)
    batches = comp.batches_per_epoch(sampler, batch_size=b.batch_size, limit=s.runtime.limit_train_batches,
                                     drop_last=drop_last)
    steps_per_epoch = math.ceil(batches / o.gradient_accumulation_steps)
    global_batch = b.batch_size * o.gradient_accumulation_steps * info.world_size
    sch = s.schedule
    schedule = LRSchedule(sch.scheduler, base_lr=scaled_lr(o.lr, global_batch, base_batch=o.lr_base_batch,
                                                           rule=o.lr_scaling),
                          epochs=o.epochs, steps_per_epoch=steps_per_epoch, warmup_epochs=sch.warmup_epochs,
                          milestones=sch.lr_milestones, gamma=sch.lr_gamma, step_size=sch.lr_step_size,
                          t_max=sch.T_max_cosine, eta_min=sch.eta_min_cosine)
    train_model = model
    if info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device] if info.device.type == "cuda" else None)
    r = s.regularisation
    ema = EMA(model, decay=r.ema_decay) if r.ema_decay > 0 else None
    mixer = None
    if r.mixup_alpha > 0 or r.cutmix_alpha > 0:
        mixer = BatchMix(num_classes=bundle.num_classes, mixup_alpha=r.mixup_alpha, cutmix_alpha=r.cutmix_alpha,
                         prob=r.mix_prob, image_shape=bundle.image_shape, permutation=bundle.permutation)
    pos = bundle.positions.to(info.device) if bundle.positions is not None else None
    step = TrainStep(train_model, optimizer, pos=pos, amp=amp, grad_clip=o.grad_clip,
                     label_smoothing=o.label_smoothing, mixer=mixer, ema=ema, compile=s.runtime.compile,
                     compile_mode=s.runtime.compile_mode)
    flip = None
    if r.tta:
        flip = flip_index(bundle.image_shape, bundle.permutation).to(info.device)
    probe_idx = probes.pick_probes(probes.dataset_labels(bundle.test), s.logging.num_probe_samples,
                                   seed=s.run.seed) if s.logging.save_attention_maps else None
    return RunParts(
        bundle=bundle, train_set=train_set, val_set=val_set, config=config, model=model, train_model=train_model,
        ema=ema, optimizer=optimizer, amp=amp, schedule=schedule,
        lr=LearningRate(schedule, steps_per_epoch=steps_per_epoch, epochs=o.epochs, max_time=o.max_time),
        step=step, loader=loader, sampler=sampler,
        test_loader=comp.eval_loader(bundle.test, **loaders),
        val_loader=comp.eval_loader(val_set, **loaders) if val_set is not None else None,
        on_device=on_device, pos=pos, flip=flip, probe_idx=probe_idx, batches=batches,
        steps_per_epoch=steps_per_epoch)
