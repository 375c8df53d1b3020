"""What a run reports while it trains: console + train.log, and TensorBoard.

- `setup_logging`: the ``perceiver.train`` logger prints to stdout and appends to ``train.log`` (rank 0; other
  ranks print warnings only). A train.log that cannot be opened is a `WriteError`; one that stops accepting lines
  (disk full) gives one warning and the console goes on.
- `TensorBoard`: a thin wrapper that is a no-op when ``--use_tensorboard`` is off (or on ranks > 0).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from .rundir import write_error

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
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            file = _LogFile(log_path, mode="a", encoding="utf-8")
        except OSError as e:
            raise write_error(log_path, e) from None
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(file)
    return log


def close_logging(log: logging.Logger | None = None) -> None:
    log = log or logging.getLogger(LOGGER_NAME)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        for step in (handler.flush, handler.close):
            try:
                step()
            except OSError:  # a full disk: _LogFile already said so; the error being reported matters more
                pass


class _LogFile(logging.FileHandler):
    """train.log. When a line cannot be written (disk full), say so once and stop writing the file instead of
    printing logging's traceback for every line; the console keeps the log, and the run's next checkpoint or
    metrics write reports the problem as its error."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            return super().handleError(record)
        self.failed = True
        print(f"warning: {write_error(self.baseFilename, exc)}; train.log stops here, the console keeps the log",
              file=sys.stderr, flush=True)
        try:
            self.close()
        except OSError:
            pass


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


# -------------------------------------------------------------------------------------------- what is printed


def config_json(settings, parts, info, argv: list[str]) -> dict:
    """config.json: the resolved flags ("args") and everything needed to read the run without the code."""
    import time

    import torch

    from .components import dataset_facts

    return {
        "args": dict(settings.flags), "model": parts.config.to_dict(), "num_parameters": parts.model.num_parameters(),
        "dataset": dataset_facts(parts.bundle, parts.train_set, parts.val_set, parts.bundle.test), "data": parts.data,
        "schedule": parts.schedule.describe(), "steps_per_epoch": parts.steps_per_epoch,
        "amp": parts.amp.describe(), "data_on_device": parts.on_device, "torch_version": torch.__version__,
        "python_version": sys.version.split()[0], "device": str(info.device), "world_size": info.world_size,
        "seed": settings.run.seed, "command": " ".join(["train.py", *argv]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def log_run(log: logging.Logger, settings, parts, info, run, resume: dict | None, state) -> None:
    """The run's header: where it writes, the data, every flag, the model and the schedule."""
    import torch

    log.info(f"run directory: {run.path}" + (f" (resuming {resume['path']} at epoch {state.epoch}, batch "
                                              f"{state.batch})" if resume else ""))
    log.info(f"data: {parts.bundle.source}" + ("; batches served from device memory" if parts.on_device else ""))
    line = "config:"
    for item in (f"{k}={v}" for k, v in sorted(settings.flags.items())):
        if len(line) + len(item) > 118:
            log.info(line)
            line = "   "
        line += " " + item
    log.info(line)
    threads = torch.get_num_threads()  # in effect: a resumed run applies its own --threads
    cpu = f" ({threads} thread{'s' * (threads > 1)})" if info.device.type == "cpu" else ""
    log.info(f"model: {parts.model.num_parameters():,} parameters; device {info.device} x {info.world_size}{cpu}; amp "
             f"{parts.amp.describe()}; {parts.steps_per_epoch} steps/epoch of {settings.batches.batch_size} x "
             f"{settings.optim.gradient_accumulation_steps} x {info.world_size} samples")
    max_time = settings.optim.max_time
    log.info(f"schedule: {parts.schedule.describe()}" + (f"; planned over --max_time {max_time:g}s"
                                                         if max_time else ""))
    heads = parts.config.cross_heads
    if heads > 1 and "project" in parts.model.kernel_plan().values():
        hint = (f"; --cross_dim {heads * (parts.config.pe_features + 1)} or more keeps the cheaper path"
                if parts.pos is not None else "")
        log.warning(f"--cross_heads {heads}: heads of {parts.config.cross_width // heads} features are too narrow for "
                    f"the cheap cross-attention (perceiver/kernels.py), so keys and values are built in full: about "
                    f"2.8x the training step of the small CIFAR-10 model (docs/RECIPES_SAMPLE.md){hint}")
    if settings.optim.use_amp and info.device.type == "cpu":
        log.warning("--use_amp on CPU: bfloat16 autocast runs, but it is usually slower than float32 on CPUs; it "
                    "helps on GPUs")


def epoch_line(row, epochs: int) -> str:
    """One console line per epoch, from a `perceiver.rundir.EpochRow`."""
    parts = [f"epoch {row.epoch}/{epochs}" + (" (partial: time budget)" if row.partial else ""),
             f"train loss {row.train_loss:.4f} acc {row.train_acc:.4f}"]
    if row.val_acc is not None:
        val = f"val loss {row.val_loss:.4f} acc {row.val_acc:.4f}"
        parts.append(val + (f" (raw weights {row.raw_val_acc:.4f})" if row.raw_val_acc is not None else ""))
    test = f"test loss {row.test_loss:.4f} acc {row.test_acc:.4f}"
    if row.test_acc_top5 is not None:
        test += f" top5 {row.test_acc_top5:.4f}"
    parts += [test, f"lr {row.lr:.3g}", f"{row.epoch_time_s:.1f}s, {row.samples_per_s:.0f} samples/s"
              + (" *best*" if row.is_best else "")]
    return " | ".join(parts)
