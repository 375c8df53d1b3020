"""An exponential moving average of a model's weights (Polyak averaging), kept and evaluated as its own model.

    ema = EMA(model, decay=0.999)
    ... optimizer.step(); ema.update()        # on the device, no host round-trip
    evaluate(ema.model, ...)

The average starts with the model's initial weights and a short warm-up of the decay, ``min(decay, (1 + t) /
(10 + t))`` after ``t`` updates, so the first epochs are not dominated by the random initialisation. The update
count lives in a device tensor: a compiled training step is not recompiled as it grows. Buffers that are not
floating point are copied.
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
        src, dst = self.source.state_dict(), self.model.state_dict()
        self._float = [(dst[k], src[k]) for k in dst if dst[k].is_floating_point()]
        self._other = [(dst[k], src[k]) for k in dst if not dst[k].is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = torch.clamp((1.0 + self.updates) / (10.0 + self.updates), max=self.decay)
        averaged, current = zip(*self._float)
        torch._foreach_lerp_(list(averaged), list(current), 1.0 - decay)
        for dst, src in self._other:
            dst.copy_(src)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates.detach().cpu(), "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates.copy_(state["updates"])
