"""The device work of one training step: forward, loss and backward of each batch, then the optimizer update.

    step = TrainStep(model, optimizer, pos=pos, amp=setup_amp(True, device), grad_clip=1.0)
    loss, correct = step.forward_backward(x, y, scale=1.0)   # device tensors: nothing is read back to the host
    grad_norm = step.update(lr)                 # clip, optimizer step, EMA, zero_grad; a device tensor or None

Nothing here reads a tensor back to the host (no ``.item()``, ``float(t)``, ``bool(t)``), so a GPU can run ahead
of Python for as many steps as the epoch loop lets it (`perceiver.engine` reads the accumulated metrics at its
sync points; tests/test_host_sync.py checks it at the dispatcher). The one exception is float16 training (GPUs
without bfloat16) with LAMB or a foreach AdamW: ``scaler.step`` reads the overflow flag on the host at every step to
skip an overflowed step. torch's fused AdamW, which `perceiver.optim.build_optimizer` picks on CUDA, takes the flag
on the device instead.

Mixed precision (`setup_amp`): bfloat16 autocast on CUDA when supported, else float16 with a `GradScaler`; on CPU,
bfloat16 autocast (correct but usually slower than float32 there; the trainer warns).

Compilation (``compile=True``): the model is compiled as one graph (``torch.compile(model, fullgraph=True)``; its
backward is compiled with it) and, with LAMB, the update (clipping, the optimizer step over both parameter groups
and the EMA) as a second graph, also without a break. The update keeps everything that changes from step to step
in device tensors (the learning rate, LAMB's step counts and bias corrections: `Lamb`'s ``capturable``; the EMA's
count), so it is traced once; its first call runs eagerly to create the optimizer's state, and the gradients are
reset outside it (``zero_grad`` sets them to None eagerly). ``compile_mode`` goes to the model's `torch.compile`:
``"reduce-overhead"`` replays CUDA graphs (fewer launches for a small model at batch 64), ``"max-autotune"`` also
searches kernel configurations; the update is compiled in the default mode. Every step must have the same shapes
for the graphs to be reused: under ``--compile`` the trainer drops the last partial batch of an epoch.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .optim import Lamb


@dataclass
class Amp:
    enabled: bool = False
    dtype: torch.dtype | None = None
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = None

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if not self.enabled:
            return "off (float32)"
        return f"{str(self.dtype).replace('torch.', '')} autocast" + (" + GradScaler" if self.scaler else "")


def setup_amp(use_amp: bool, device: torch.device) -> Amp:
    if not use_amp:
        return Amp(device_type=device.type)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Amp(True, torch.bfloat16, "cuda")
        return Amp(True, torch.float16, "cuda", torch.amp.GradScaler("cuda"))
    return Amp(True, torch.bfloat16, device.type)


def compute_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against class indices (B,) or class probabilities (B, K) (mixup/cutmix targets)."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write the learning rate into every param group; a rate held in a tensor is updated in place (no recompile
    of a compiled step, no host round-trip)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class TrainStep:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, pos: torch.Tensor | None,
                 amp: Amp, grad_clip: float = 0.0, label_smoothing: float = 0.0, mixer=None, ema=None,
                 compile: bool = False, compile_mode: str = "default"):
        self.model, self.optimizer, self.pos, self.amp = model, optimizer, pos, amp
        self.grad_clip, self.label_smoothing, self.mixer, self.ema = grad_clip, label_smoothing, mixer, ema
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.forward = model
        self._update = self._update_eager
        if compile:
            self.forward = torch.compile(model, fullgraph=True, mode=compile_mode)
            # LAMB's update compiles with its changing numbers in tensors; torch's AdamW is already one fused kernel
            # on CUDA (and refuses a tensor rate in its foreach form); the GradScaler checks overflow on the host
            if isinstance(optimizer, Lamb) and amp.scaler is None:
                self._compiled_update = torch.compile(self._update_eager, fullgraph=True)
                self._update = self._first_compiled_update

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, *, scale: float = 1.0):
        """Accumulate ``scale`` x the gradient of this batch's loss; returns (loss, correct) as device tensors."""
        target = y
        if self.mixer is not None:
            x, target = self.mixer(x, y)
        with self.amp.autocast():
            logits = self.forward(x, self.pos)
        loss = compute_loss(logits, target, self.label_smoothing)
        scaled = loss * scale
        (self.amp.scaler.scale(scaled) if self.amp.scaler else scaled).backward()
        return loss.detach(), (logits.detach().argmax(dim=-1) == y).sum()

    def update(self, lr: float) -> torch.Tensor | None:
        """Clip, step, update the EMA, zero the gradients; returns the gradient norm before clipping (or None)."""
        set_lr(self.optimizer, lr)
        if self.amp.scaler is not None:
            self.amp.scaler.unscale_(self.optimizer)
            norm = self._clip()
            self.amp.scaler.step(self.optimizer)
            self.amp.scaler.update()
            self._average()
        else:
            norm = self._update()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _update_eager(self) -> torch.Tensor | None:
        norm = self._clip()
        self.optimizer.step()
        self._average()
        return norm

    def _first_compiled_update(self) -> torch.Tensor | None:
        """Hold the learning rate and LAMB's step counts on the device, run the first update eagerly (it creates
        the optimizer's state, which a traced update would then see change), and compile from the next one.
        Called at the first step, after a resumed run has loaded its optimizer state."""
        device = self.params[0].device
        for group in self.optimizer.param_groups:
            group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32, device=device)
            group["capturable"] = True
        norm = self._update_eager()
        self._update = self._compiled_update
        return norm

    def _clip(self) -> torch.Tensor | None:
        if self.grad_clip <= 0:
            return None
        return torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)

    def _average(self) -> None:
        if self.ema is not None:
            self.ema.update()
