"""Reads of tensor values by the host, caught where they happen, and a harness that watches train.py's step loop.

On a GPU, a read of a device tensor's value (``.item()``, ``float(t)``, ``if t:``, ``torch.equal``, ``.tolist()``,
a boolean mask, whose result size is data-dependent) makes the host wait for every queued kernel. On the CPU these
calls cost nothing and every tensor is a host tensor, so the tests decide what *would* live on the accelerator:
every tensor the training step touches, except

- the batches a DataLoader assembles (its work is done by host processes on any machine; the guard is off while
  the loop asks it for a batch; a device-resident data path is watched like the step itself), and
- the tensors named in `HOST_TENSORS`, which stay on the host in a GPU run too.

Reads of the tensors named in `KNOWN_SYNCS` do wait for the device, by design; they are counted apart, by name, like
the host tensors (both are recognised at the moment of the read), so a test states exactly which it allows.

A read is seen at the dispatcher (`TorchDispatchMode`: ``aten::_local_scalar_dense``, ``aten::item``,
``aten::equal``, ``aten::is_nonzero``, ``aten::nonzero``, ``aten::masked_select``, indexing with a boolean mask),
which catches reads made inside C++ (an argument parser turning a 0-d tensor into a number, for instance).
``Tensor.tolist`` / ``.numpy()`` / ``.cpu()`` of a CPU tensor read its memory without any dispatch (on a GPU they
are a device-to-host copy), so those are seen one level up, by a `TorchFunctionMode`.

`StepLoopWatch` arms the guard over `perceiver.engine.train_one_epoch` as the trainer calls it, except in its sync
points: a window opens when the loop all-reduces its running values (every ``--sync_every`` steps, at a stop, at the
end of the epoch) and closes when the loop asks for its next batch.
"""
from __future__ import annotations

import contextlib
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: ops that read a value (or a data-dependent size) back to the host
READ_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::equal", "aten::is_nonzero", "aten::nonzero",
            "aten::masked_select", "aten::allclose"}
#: Tensor methods that read a CPU tensor's memory without a dispatch (a device-to-host copy on a GPU)
READ_METHODS = {"tolist", "numpy", "__array__", "cpu"}


def _first_tensor(args) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    return None


def _reads(func, args) -> bool:
    name = func._schema.name
    if name in READ_OPS:
        return True
    if name in ("aten::index", "aten::index_put", "aten::index_put_"):  # a boolean mask: its size is data
        indices = args[1] if len(args) > 1 else ()
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
    return False


REPO = Path(__file__).resolve().parent.parent


def _where() -> str:
    """The innermost frames of the project's code that led to a read, for the report."""
    ours = [f for f in traceback.extract_stack()
            if f.filename.startswith(str(REPO)) and f.filename != __file__ and "/.venv/" not in f.filename]
    return " <- ".join(f"{Path(f.filename).relative_to(REPO)}:{f.lineno} {f.name}" for f in reversed(ours[-3:]))


@dataclass
class HostReads:
    """Records every host read of a tensor while `armed`; a read of a tensor that ``host(t)`` names (returns a
    name for, else None) is counted apart, by that name."""

    host: object = lambda t: None
    armed: bool = True
    found: list[str] = field(default_factory=list)         # reads of would-be device tensors: "op at where"
    named: Counter = field(default_factory=Counter)        # reads of the tensors `host` names, by name

    def seen(self, what: str, tensor: torch.Tensor | None) -> None:
        if not self.armed:
            return
        name = self.host(tensor) if tensor is not None else None
        if name:
            self.named[name] += 1
        else:
            self.found.append(f"{what} at {_where()}")

    @contextlib.contextmanager
    def disarmed(self):
        was, self.armed = self.armed, False
        try:
            yield
        finally:
            self.armed = was

    @contextlib.contextmanager
    def watching(self):
        with _DispatchReads(self), _MethodReads(self):
            yield self


class _DispatchReads(TorchDispatchMode):
    def __init__(self, reads: HostReads):
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.reads.armed and _reads(func, args):
            self.reads.seen(func._schema.name, _first_tensor(args))
        return func(*args, **(kwargs or {}))


class _MethodReads(TorchFunctionMode):
    def __init__(self, reads: HostReads):
        super().__init__()
        self.reads = reads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if self.reads.armed and name in READ_METHODS and args and isinstance(args[0], torch.Tensor):
            self.reads.seen(f"Tensor.{name}", args[0])
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------------------------ tensors kept on the host


def _same_memory(t: torch.Tensor, tensors) -> bool:
    ptr = t.untyped_storage().data_ptr()
    return any(isinstance(s, torch.Tensor) and s.untyped_storage().data_ptr() == ptr for s in tensors)


def _host_step_counts(optimizer) -> list[torch.Tensor]:
    """Step counts that torch's optimizers keep on the host (groups neither fused nor capturable)."""
    out = []
    for group in optimizer.param_groups:
        if group.get("fused") or group.get("capturable"):
            continue
        out += [optimizer.state[p]["step"] for p in group["params"] if "step" in optimizer.state.get(p, {})]
    return out


def _found_inf(scaler) -> list[torch.Tensor]:
    if scaler is None:
        return []
    return [t for state in scaler._per_optimizer_states.values() for t in state["found_inf_per_device"].values()]


#: Tensors that stay on the host in a GPU run too, by the name the tests use (given the TrainStep). Reading them
#: waits for no device. "host step counts": torch's optimizers without ``fused``/``capturable`` (and `Lamb` without
#: ``capturable``) keep each parameter's step count on the CPU and read it as a number.
HOST_TENSORS = {
    "host step counts": lambda step: _host_step_counts(step.optimizer),
}

#: Device tensors read at every step by design, named so that the tests say where a GPU run waits.
#: "found_inf": with float16 and a GradScaler, ``scaler.step`` reads the overflow flag to skip an overflowed step,
#: unless the optimizer takes the flag on the device (``_step_supports_amp_scaling``: torch's fused AdamW, which
#: `perceiver.optim.build_optimizer` picks on CUDA; not `Lamb`).
KNOWN_SYNCS = {
    "found_inf": lambda step: _found_inf(step.amp.scaler),
}


class StepLoopWatch:
    """Watches every `train_one_epoch` the trainer runs (see the module's docstring); `install()` / `remove()`."""

    def __init__(self):
        self.reads = HostReads(host=self._host_kind, armed=False)
        self.step = None
        self.updates = 0                 # optimizer steps done in the watched loops
        self.windows: list[int] = []     # the step count at each opened sync window
        self.epoch_ends: list[int] = []  # the step count at the end of each watched loop
        self._undo = []

    def _host_kind(self, t: torch.Tensor) -> str | None:
        for name, tensors in {**HOST_TENSORS, **KNOWN_SYNCS}.items():
            if _same_memory(t, tensors(self.step)):
                return name
        return None

    def install(self) -> StepLoopWatch:
        import perceiver.engine as engine
        import perceiver.trainer as trainer

        real_epoch, real_reduce = trainer.train_one_epoch, engine.all_reduce

        def watched_epoch(step, loader, **kw):
            self.step = step
            real_update = step.update

            def counted_update(lr):
                out = real_update(lr)
                self.updates += 1
                return out
            step.update = counted_update
            try:
                with self.reads.watching():
                    self.reads.armed = True
                    try:
                        return real_epoch(step, _WatchedBatches(loader, self), **kw)
                    finally:
                        self.reads.armed = False
                        self.epoch_ends.append(self.updates)
            finally:
                del step.update

        def sync_point(*a, **kw):
            if self.reads.armed:
                self.windows.append(self.updates)
            self.reads.armed = False
            return real_reduce(*a, **kw)

        trainer.train_one_epoch, engine.all_reduce = watched_epoch, sync_point
        self._undo = [(trainer, "train_one_epoch", real_epoch), (engine, "all_reduce", real_reduce)]
        return self

    def remove(self) -> None:
        for module, name, value in self._undo:
            setattr(module, name, value)
        self._undo = []

    def check_sync_points(self, sync_every: int) -> None:
        """Every window opened at a multiple of ``sync_every`` steps or at the end of an epoch."""
        odd = [w for w in self.windows if w % sync_every and w not in self.epoch_ends]
        assert not odd, f"sync windows opened at steps {odd}, not multiples of {sync_every} nor epoch ends"


class _WatchedBatches:
    """The loader as the loop sees it: asking for a batch closes a sync window; a DataLoader's own work (host
    processes on any machine) is not watched."""

    def __init__(self, loader, watch: StepLoopWatch):
        self.loader, self.watch = loader, watch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        host_side = isinstance(self.loader, torch.utils.data.DataLoader)
        sampler = getattr(self.loader, "sampler", None)
        if not host_side and sampler is not None:  # the device path's order is drawn on the host
            self.loader.sampler = _HostSampler(sampler, self.watch.reads)
        try:
            it = None
            while True:
                self.watch.reads.armed = True
                with self.watch.reads.disarmed() if host_side else contextlib.nullcontext():
                    try:
                        it = it or iter(self.loader)
                        batch = next(it)
                    except StopIteration:
                        return
                yield batch
        finally:
            if not host_side and sampler is not None:
                self.loader.sampler = sampler


class _HostSampler:
    """A sampler whose order (drawn from a host generator on any machine) is not watched."""

    def __init__(self, sampler, reads: HostReads):
        self._sampler = sampler
        self._reads = reads

    def __getattr__(self, name):
        return getattr(self._sampler, name)

    def __len__(self) -> int:
        return len(self._sampler)

    def __iter__(self):
        with self._reads.disarmed():
            order = list(self._sampler)
        return iter(order)
