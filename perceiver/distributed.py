"""Distributed data parallel helpers: process-group setup, samplers, reductions.

``torchrun --nproc_per_node N train.py ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; `setup` then joins
the group (NCCL on GPUs, Gloo on CPU). A plain ``python train.py`` is a world of one and every helper here is a
no-op for it, so the training code has a single path.

Data order: `EpochSampler` is a `DistributedSampler` (also used for a world of one) whose shuffle is seeded with
``seed + epoch``, never with a global RNG stream, so a resumed run sees the same order as an uninterrupted one;
``set_epoch(epoch, skip=k)`` drops the first ``k`` samples of this rank's share (a mid-epoch resume).
Evaluation uses `ShardSampler`: every sample exactly once across ranks (no padding), so the all-reduced test
metrics equal the single-process ones.
"""
from __future__ import annotations

import datetime
import gc
import itertools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_name: str) -> DistInfo:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def cleanup() -> None:
    """Destroy the process group now, while the interpreter is fully alive.

    DistributedDataParallel keeps the group alive and sits in reference cycles, so without a collection here the
    group outlived `destroy_process_group` until the garbage collector met it at interpreter exit, where gloo's
    worker threads can abort the process (SIGABRT, "terminate called without an active exception") after a
    finished run. Callers drop their references to the DDP model first.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce(tensor: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum`` or ``max``) on this rank's device; identity in a world of one."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


class EpochSampler(DistributedSampler):
    """`DistributedSampler` shuffled by ``seed + epoch`` that can skip the start of an epoch (mid-epoch resume)."""

    def __init__(self, dataset, *, info: DistInfo, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = max(0, int(skip))

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` in order: each sample on exactly one rank (evaluation)."""

    def __init__(self, dataset, *, info: DistInfo):
        self.n, self.rank, self.world = len(dataset), info.rank, info.world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))
