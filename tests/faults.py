"""Fault injection for the tests, from outside the library: patches that make a step's loss non-finite, send a
signal after a step, or SIGKILL the process after an epoch's checkpoint.

    undo = install("nan_step:6,sigterm_step:9")      # in-process (run_train_in(..., faults=...))
    python tests/fault_run.py "kill_epoch:1" <train.py arguments>      # in a subprocess or under torchrun

Kinds (N counts from the start of the process): ``nan_step:N`` the loss of the N-th batch becomes NaN (the N-th
optimizer step without gradient accumulation); ``sigint_step:N`` / ``sigterm_step:N`` / ``double_sigint_step:N``
the process signals itself after optimizer step N; ``kill_epoch:N`` SIGKILL right after last.pt of epoch N is
written. ``rank:R`` limits the faults to the process of that rank (torchrun).
"""
from __future__ import annotations

import os
import signal


def parse(spec: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, n = item.partition(":")
        out[kind] = int(n)
    return out


def install(spec: str):
    """Apply the faults of ``spec``; returns a function that undoes the patches."""
    import perceiver.checkpoint as ckpt
    import perceiver.step as step

    faults = parse(spec)
    if "rank" in faults and int(os.environ.get("RANK", "0")) != faults["rank"]:
        return lambda: None
    originals = (step.compute_loss, step.TrainStep.update, ckpt.save_checkpoint)
    calls = {"loss": 0, "update": 0}

    def compute_loss(logits, target, label_smoothing=0.0):
        loss = originals[0](logits, target, label_smoothing)
        calls["loss"] += 1
        return loss * float("nan") if faults.get("nan_step") == calls["loss"] else loss

    def update(self, lr):
        norm = originals[1](self, lr)
        calls["update"] += 1
        for kind, sig, times in (("sigint_step", signal.SIGINT, 1), ("sigterm_step", signal.SIGTERM, 1),
                                 ("double_sigint_step", signal.SIGINT, 2)):
            for _ in range(times if faults.get(kind) == calls["update"] else 0):
                os.kill(os.getpid(), sig)  # the handler runs before os.kill returns
        return norm

    def save_checkpoint(path, state):
        originals[2](path, state)
        if (str(path).endswith("last.pt") and state.get("epoch") == faults.get("kill_epoch")
                and not state.get("batch_in_epoch")):
            os.kill(os.getpid(), signal.SIGKILL)

    step.compute_loss, step.TrainStep.update, ckpt.save_checkpoint = compute_loss, update, save_checkpoint

    def undo():
        step.compute_loss, step.TrainStep.update, ckpt.save_checkpoint = originals

    return undo
