"""Everything a training run is made of, built from its resolved arguments (`build_parts`).

    parts = build_parts(args, info, log)
    parts.step.forward_backward(x, y); parts.step.update(lr)      # perceiver.step.TrainStep
    evaluate(parts.eval_model, parts.test_loader, pos=parts.pos, ...)

`perceiver.trainer` runs the epochs over these parts; `perceiver.components` holds the individual builders.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch

from . import components as comp
from . import probes
from .data import DataBundle
from .data.mixing import BatchMix, flip_index
from .distributed import DistInfo, EpochSampler, barrier
from .ema import EMA
from .model import Perceiver, PerceiverConfig
from .optim import build_optimizer
from .schedule import LRSchedule, scaled_lr
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


def build_parts(args: argparse.Namespace, info: DistInfo, log) -> RunParts:
    if info.is_main:
        bundle, train_set, val_set = comp.build_data(args)
    barrier(info)  # rank 0 first: a download happens once
    if not info.is_main:
        bundle, train_set, val_set = comp.build_data(args)
    config = comp.model_config(args, bundle)
    model = comp.build_model(config, info.device)
    optimizer = build_optimizer(model, name=args.optimizer, lr=args.lr, weight_decay=args.weight_decay)
    amp = setup_amp(args.use_amp, info.device)
    datasets = [d for d in (train_set, val_set, bundle.test) if d is not None]
    on_device = comp.use_device_data(args, datasets, info, log)
    loader, sampler = comp.train_loader(train_set, args, info, on_device=on_device)
    batches = comp.batches_per_epoch(sampler, args)
    steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
    global_batch = args.batch_size * args.gradient_accumulation_steps * info.world_size
    schedule = LRSchedule(args.scheduler, base_lr=scaled_lr(args.lr, global_batch, base_batch=args.lr_base_batch,
                                                            rule=args.lr_scaling),
                          epochs=args.epochs, steps_per_epoch=steps_per_epoch, warmup_epochs=args.warmup_epochs,
                          milestones=args.lr_milestones, gamma=args.lr_gamma, step_size=args.lr_step_size,
                          t_max=args.T_max_cosine, eta_min=args.eta_min_cosine)
    train_model = model
    if info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device] if info.device.type == "cuda" else None)
    ema = EMA(model, decay=args.ema_decay) if args.ema_decay > 0 else None
    mixer = None
    if args.mixup_alpha > 0 or args.cutmix_alpha > 0:
        mixer = BatchMix(num_classes=bundle.num_classes, mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha,
                         prob=args.mix_prob, image_shape=bundle.image_shape, permutation=bundle.permutation)
    pos = bundle.positions.to(info.device) if bundle.positions is not None else None
    step = TrainStep(train_model, optimizer, pos=pos, amp=amp, grad_clip=args.grad_clip,
                     label_smoothing=args.label_smoothing, mixer=mixer, ema=ema, compile=args.compile,
                     compile_mode=args.compile_mode)
    flip = None
    if args.tta:
        flip = flip_index(bundle.image_shape, bundle.permutation).to(info.device)
    probe_idx = probes.pick_probes(probes.dataset_labels(bundle.test), args.num_probe_samples, seed=args.seed) \
        if args.save_attention_maps else None
    return RunParts(
        bundle=bundle, train_set=train_set, val_set=val_set, config=config, model=model, train_model=train_model,
        ema=ema, optimizer=optimizer, amp=amp, schedule=schedule, step=step, loader=loader, sampler=sampler,
        test_loader=comp.eval_loader(bundle.test, args, info, on_device=on_device),
        val_loader=comp.eval_loader(val_set, args, info, on_device=on_device) if val_set is not None else None,
        on_device=on_device, pos=pos, flip=flip, probe_idx=probe_idx, batches=batches,
        steps_per_epoch=steps_per_epoch)

