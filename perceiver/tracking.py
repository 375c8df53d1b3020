"""What a run reports while it trains: console + train.log, TensorBoard, and the stop signals it listens to.

- `setup_logging`: the ``perceiver.train`` logger prints to stdout and appends to ``train.log`` (rank 0; other
  ranks print warnings only).
- `TensorBoard`: a thin wrapper that is a no-op when ``--use_tensorboard`` is off (or on ranks > 0).
- `StopSignals`: SIGINT/SIGTERM set a flag that the training loop reads at the next optimizer-step boundary; a
  second Ctrl-C raises `KeyboardInterrupt` at once.
"""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import numpy as np

LOGGER_NAME = "perceiver.train"


def setup_logging(log_path: Path | None, *, main_process: bool) -> logging.Logger:
    log = logging.getLogger(LOGGER_NAME)
    close_logging(log)
    log.setLevel(logging.INFO if main_process else logging.WARNING)
    log.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if log_path is not None and main_process:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(log_path, mode="a", encoding="utf-8")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(file)
    return log


def close_logging(log: logging.Logger | None = None) -> None:
    log = log or logging.getLogger(LOGGER_NAME)
    for handler in list(log.handlers):
        handler.flush()
        handler.close()
        log.removeHandler(handler)


class TensorBoard:
    def __init__(self, path: Path | None, *, purge_step: int | None = None):
        self.writer = None
        if path is not None:
            from torch.utils.tensorboard import SummaryWriter  # imported only when asked for: it is slow

            self.writer = SummaryWriter(log_dir=str(path), purge_step=purge_step)

    def scalars(self, row: dict, epoch: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            group = key.split("_", 1)[0] if key.split("_", 1)[0] in ("train", "test", "val") else "misc"
            self.writer.add_scalar(f"{group}/{key}", value, epoch)
        self.writer.flush()

    def images(self, images: dict[str, np.ndarray], epoch: int) -> None:
        if self.writer is None:
            return
        for tag, batch in images.items():
            self.writer.add_images(tag, batch, epoch, dataformats="NCHW")
        self.writer.flush()

    def hparams(self, hparams: dict, metrics: dict) -> None:
        if self.writer is None:
            return
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()
                 if v is not None}
        self.writer.add_hparams(clean, {f"hparam/{k}": v for k, v in metrics.items() if v is not None},
                                run_name=".")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class StopSignals:
    """Catch SIGINT/SIGTERM: the first asks for a clean stop, a second Ctrl-C interrupts at once."""

    EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self, log: logging.Logger):
        self.log = log
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopSignals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signum = signum
        name = signal.Signals(signum).name
        self.log.warning(f"received {name}: stopping at the next step boundary and saving a checkpoint "
                         f"(press Ctrl-C again to exit at once, without saving)")

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return self.EXIT_CODES.get(self.signum, 1)
