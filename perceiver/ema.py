"""An exponential moving average of a model's weights (Polyak averaging), kept and evaluated as its own model.

    ema = EMA(model, decay=0.999)
    ... optimizer.step(); ema.update()        # on the device, no host round-trip
    evaluate(ema.model, ...)

The average starts with the model's initial weights and a short warm-up of the decay, ``min(decay, (1 + t) /
(10 + t))`` after ``t`` updates, so the first epochs are not dominated by the random initialisation. The update
count and the decay live in device tensors: nothing is read back to the host, and a compiled training step is not
recompiled as the count grows. Buffers that are not floating point are copied.
"""
from __future__ import annotations

import copy

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, *, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.source = model
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        device = next(model.parameters()).device
        self.updates = torch.zeros((), dtype=torch.float32, device=device)
        self._pairs()

    def _pairs(self) -> None:
        # the source's own parameters, not the detached views of its state_dict: traced into one graph with the
        # optimizer step that updates those parameters, the views gave wrong weights (torch 2.14, inductor;
        # tests/test_compile.py compares a compiled run with the eager one)
        src = {**dict(self.source.named_parameters()), **dict(self.source.named_buffers())}
        dst = self.model.state_dict()
        self._float = [(dst[k], src[k]) for k in dst if dst[k].is_floating_point()]
        self._other = [(dst[k], src[k]) for k in dst if not dst[k].is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        weight = 1.0 - torch.clamp((1.0 + self.updates) / (10.0 + self.updates), max=self.decay)  # 0-d, on device
        averaged, current = (list(t) for t in zip(*self._float))
        # average += weight * (current - average): lerp's formula. torch._foreach_lerp_ takes its weight as a
        # number (a tensor would be read back to the host every step); a 0-d tensor factor is not.
        step = torch._foreach_sub(current, averaged)
        torch._foreach_mul_(step, weight)
        torch._foreach_add_(averaged, step)
        for dst, src in self._other:
            dst.copy_(src)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates.detach().cpu(), "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates.copy_(state["updates"])
