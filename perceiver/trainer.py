"""The training run behind `train.py`: setup, the epoch loop, checkpoints, probes, logging, stops and resumes.

`main(args, explicit=..., argv=...)` returns the process exit code: 0 finished (or nothing to do), 130/143 stopped
by SIGINT/SIGTERM after saving a checkpoint. User-fixable failures raise `PerceiverError` (train.py prints one
line and exits 1); a non-finite loss is one of them.

Order of writes at the end of epoch ``e`` (rank 0): metrics.jsonl row -> per_class.jsonl -> attention file ->
best.pt (if a new best) -> last.pt -> status.json. A crash anywhere leaves last.pt at ``e - 1`` or ``e``; resuming
from ``e - 1`` first drops the rows a crashed run wrote after it (`RunDir.truncate_metrics`), then replays epoch
``e`` exactly: data order, augmentation and dropout all come from saved or (seed, epoch)-derived generators.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import components as comp
from . import distributed as dist
from . import probes
from .engine import LoopState, NonFiniteLossError, StepInfo, evaluate, parse_faults, per_class_accuracy, \
    setup_amp, train_one_epoch
from .errors import PerceiverError
from .model import PerceiverConfig
from .optim import build_optimizer
from .resume import EVAL_OVERRIDES, RESUME_OVERRIDES, check_not_running, clear_run, locate, merge_args
from .rundir import RunDir
from .schedule import LRSchedule, progress
from .tracking import StopSignals, TensorBoard, close_logging, setup_logging


def main(args: argparse.Namespace, *, explicit: set[str], argv: list[str]) -> int:
    state = None
    run = RunDir(Path(args.logs_dir) / args.experiment_name)
    if args.resume:
        located, path = locate(args.resume, eval_only=args.eval_only)
        state = ckpt.load_checkpoint(path)
        args = merge_args(state["args"], args, explicit, checkpoint=path,
                          allowed=EVAL_OVERRIDES if args.eval_only else RESUME_OVERRIDES)
        if args.eval_only:
            from .evaluation import evaluate_checkpoint

            return evaluate_checkpoint(args, state, path, located)
        run = located or RunDir(Path(args.logs_dir) / args.experiment_name)
        if state.get("finished"):
            print(f"{run.path} already finished ({state['epoch']} epochs, best {state['best']['metric']} "
                  f"{state['best']['value']:.4f}); nothing to do. Start a new run to train further.", flush=True)
            return 0
        state["path"] = str(path)
    info = dist.setup(args.device)
    log = setup_logging(None, main_process=info.is_main)
    trainer = Trainer(args, info=info, run=run, resume=state, argv=argv, log=log)
    try:
        return trainer.fit()
    finally:
        trainer.close()
        close_logging(log)
        dist.cleanup()


class Trainer:
    def __init__(self, args, *, info: dist.DistInfo, run: RunDir, resume: dict | None, argv: list[str], log):
        self.args, self.info, self.run, self.resume, self.argv, self.log = args, info, run, resume, argv, log
        self.main = info.is_main
        self.signals = StopSignals(log)
        self.tb = TensorBoard(None)
        self.state = LoopState()
        self.best = {"metric": "val_acc" if args.val_split > 0 else "test_acc", "value": -math.inf, "epoch": 0}
        self.elapsed0 = 0.0
        self.t0 = time.monotonic()
        self.synced_elapsed = 0.0
        self.time_up = False
        self.remote_stop = False
        self.run_started = False

    # -------------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        a, info = self.args, self.info
        comp.seed_everything(a.seed)
        if a.use_amp and info.device.type == "cpu":
            self.log.warning("--use_amp on CPU: bfloat16 autocast runs, but it is usually slower than float32 on "
                             "CPUs; it helps on GPUs")
        if info.is_main:
            self.bundle, self.train_set, self.val_set = comp.build_data(a)
        dist.barrier(info)  # rank 0 first: a download happens once
        if not info.is_main:
            self.bundle, self.train_set, self.val_set = comp.build_data(a)
        b = self.bundle
        self.config = comp.model_config(a, b)
        self.model = comp.build_model(self.config, info.device)
        self.optimizer = build_optimizer(self.model, name=a.optimizer, lr=a.lr, weight_decay=a.weight_decay)
        self.amp = setup_amp(a.use_amp, info.device)
        self.loader, self.sampler = comp.train_loader(self.train_set, a, info)
        self.test_loader = comp.eval_loader(b.test, a, info)
        self.val_loader = comp.eval_loader(self.val_set, a, info) if self.val_set is not None else None
        self.batches = comp.batches_per_epoch(self.sampler, a)
        self.steps_per_epoch = math.ceil(self.batches / a.gradient_accumulation_steps)
        self.schedule = LRSchedule(a.scheduler, base_lr=a.lr, epochs=a.epochs, steps_per_epoch=self.steps_per_epoch,
                                   warmup_epochs=a.warmup_epochs, milestones=a.lr_milestones, gamma=a.lr_gamma,
                                   step_size=a.lr_step_size, t_max=a.T_max_cosine, eta_min=a.eta_min_cosine)
        self.pos = b.positions.to(info.device) if b.positions is not None else None
        self.probe_idx = probes.pick_probes(probes.dataset_labels(b.test), a.num_probe_samples, seed=a.seed) \
            if a.save_attention_maps else None
        if self.resume is not None:
            self._load_resume_state()
        comp.seed_everything(a.seed + 1000 * info.rank)  # dropout differs per rank; rank 0 equals a 1-process run
        if self.resume is not None:  # last: the generators continue exactly where the checkpoint left them
            ranks = self.resume.get("rng_ranks") or []
            ckpt.restore_rng(ranks[info.rank] if len(ranks) == info.world_size else self.resume["rng"])
        self.train_model = self.model
        if info.enabled:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[info.device] if info.device.type == "cuda" else None)
        if a.compile:
            self.train_model = torch.compile(self.train_model)

    def _load_resume_state(self) -> None:
        s, path = self.resume, self.resume["path"]
        ckpt.check_model_config(path, PerceiverConfig.from_dict(s["model_config"]).identity(),
                                self.config.identity())
        ckpt.load_model_weights(path, self.model, s)
        try:
            self.optimizer.load_state_dict(s["optimizer"])
            if self.amp.scaler is not None and s.get("scaler"):
                self.amp.scaler.load_state_dict(s["scaler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise ckpt.CheckpointError(f"checkpoint {path}: the optimizer state does not fit ({e})") from None
        self.state = LoopState(epoch=s["epoch"] + 1, batch=s.get("batch_in_epoch", 0), global_step=s["global_step"])
        if self.state.batch and s.get("partial"):
            sums = dict(s["partial"])
            self.state.sums = sums if self.main else {k: 0 * v for k, v in sums.items()}
        if self.state.batch and s.get("world_size", 1) != self.info.world_size:
            self.log.warning(f"resuming mid-epoch with {self.info.world_size} processes instead of "
                             f"{s.get('world_size', 1)}: the rest of epoch {self.state.epoch} sees another data order")
        self.best = dict(s.get("best") or self.best)
        self.elapsed0 = float(s.get("elapsed_s", 0.0))
        self.synced_elapsed = self.elapsed0

    def _prepare_run_dir(self) -> None:
        a, run = self.args, self.run
        if self.main:
            check_not_running(run)
            if a.overwrite and self.resume is None:
                removed = clear_run(run)
                if removed:
                    print(f"--overwrite: removed {', '.join(removed)} from {run.path}", flush=True)
            run.create()
            if self.resume is not None:
                run.truncate_metrics(self.state.epoch - 1, last_step=self.state.global_step)
        dist.barrier(self.info)
        self.log = setup_logging(run.log_path, main_process=self.main)
        self.signals.log = self.log
        if self.main and self.resume is None:
            run.write_config(self._config_json())
        if self.main and a.use_tensorboard:
            self.tb = TensorBoard(run.tensorboard_dir, purge_step=self.state.epoch if self.resume else None)
        self.run_started = True

    def _config_json(self) -> dict:
        a = self.args
        return {
            "args": vars(a), "model": self.config.to_dict(), "num_parameters": self.model.num_parameters(),
            "dataset": comp.dataset_facts(self.bundle, self.train_set, self.val_set, self.bundle.test),
            "schedule": self.schedule.describe(), "steps_per_epoch": self.steps_per_epoch,
            "amp": self.amp.describe(), "torch_version": torch.__version__, "python_version": sys.version.split()[0],
            "device": str(self.info.device), "world_size": self.info.world_size, "seed": a.seed,
            "command": " ".join(["train.py", *self.argv]), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _print_config(self) -> None:
        a, b = self.args, self.bundle
        self.log.info(f"run directory: {self.run.path}" + (f" (resuming {self.resume['path']} at epoch "
                      f"{self.state.epoch}, batch {self.state.batch})" if self.resume else ""))
        self.log.info(f"data: {b.source}")
        items = [f"{k}={v}" for k, v in sorted(vars(a).items())]
        line = "config:"
        for item in items:
            if len(line) + len(item) > 118:
                self.log.info(line)
                line = "   "
            line += " " + item
        self.log.info(line)
        self.log.info(f"model: {self.model.num_parameters():,} parameters; device {self.info.device} x "
                      f"{self.info.world_size}; amp {self.amp.describe()}; {self.steps_per_epoch} steps/epoch "
                      f"of {a.batch_size} x {a.gradient_accumulation_steps} x {self.info.world_size} samples")
        self.log.info(f"schedule: {self.schedule.describe()}" + (f"; planned over --max_time {a.max_time:g}s"
                                                                  if a.max_time else ""))

    # ---------------------------------------------------------------------------------------------- the loop
    def elapsed(self) -> float:
        return self.elapsed0 + time.monotonic() - self.t0

    def _set_lr(self, global_step: int) -> float:
        a = self.args
        elapsed = self.synced_elapsed if self.info.enabled else self.elapsed()
        t = progress(step=global_step, steps_per_epoch=self.steps_per_epoch, epochs=a.epochs,
                     elapsed_s=elapsed, max_time_s=a.max_time)
        return self.schedule.apply(self.optimizer, t)

    def _on_step(self, step: StepInfo) -> bool:
        if self.main and self.args.save_metrics:
            row = {"epoch": step.epoch, "step": step.global_step, "step_in_epoch": step.step_in_epoch,
                   "loss": step.loss, "lr": step.lr}
            if step.grad_norm is not None and math.isfinite(step.grad_norm):
                row["grad_norm"] = step.grad_norm
            self.run.append_step(row)
        for kind, sig, times in (("sigint_step", signal.SIGINT, 1), ("sigterm_step", signal.SIGTERM, 1),
                                 ("double_sigint_step", signal.SIGINT, 2)):
            for _ in range(times if self.faults.get(kind) == step.global_step else 0):
                os.kill(os.getpid(), sig)  # the handler runs before os.kill returns to this loop
        elapsed = self.elapsed()
        time_up = bool(self.args.max_time) and elapsed >= self.args.max_time
        stop = self.signals.requested
        if self.info.enabled:
            flags = torch.tensor([float(stop), float(time_up), elapsed], dtype=torch.float64,
                                 device=self.info.device)
            dist.all_reduce(flags, self.info, op="max")
            self.remote_stop |= bool(flags[0]) and not stop
            stop, time_up, self.synced_elapsed = bool(flags[0]), bool(flags[1]), float(flags[2])
        self.time_up |= time_up
        return stop or time_up

    def fit(self) -> int:
        self.setup()
        self._prepare_run_dir()
        self.signals.install()
        self.faults = parse_faults()
        self._print_config()
        a, run = self.args, self.run
        self.t0 = time.monotonic()
        try:
            return self._loop()
        except NonFiniteLossError as e:
            msg = (f"{e}: the weights were not updated with it; {run.last_checkpoint} is the last good checkpoint. "
                   f"Lower --lr, set --grad_clip or drop --use_amp, then --resume {run.path}")
            self._status("failed", message=str(e))
            raise PerceiverError(msg) from None
        except KeyboardInterrupt:
            self._status("interrupted", message="second Ctrl-C: stopped at once, nothing saved")
            self.log.warning(f"stopped at once; resume from the last checkpoint: {self._resume_command()}")
            return 130
        except PerceiverError as e:
            self._status("failed", message=str(e))
            raise
        except BaseException as e:
            self._status("failed", message=f"{type(e).__name__}: {e}")
            raise

    def _loop(self) -> int:
        a, s = self.args, self.state
        self._status("running")
        while s.epoch <= a.epochs:
            if s.batch == 0:
                s.reset_epoch_sums()
            self.sampler.set_epoch(s.epoch, skip=s.batch * a.batch_size)
            self.loader.generator.manual_seed(a.seed * 100_003 + s.epoch)
            stats = train_one_epoch(
                self.train_model, self.loader, self.optimizer, state=s, device=self.info.device, pos=self.pos,
                amp=self.amp, accum_steps=a.gradient_accumulation_steps, grad_clip=a.grad_clip,
                label_smoothing=a.label_smoothing, limit_batches=a.limit_train_batches, set_lr=self._set_lr,
                on_step=self._on_step, info=self.info)
            if stats["stopped"] and not stats["complete"] and not self.time_up:
                return self._interrupt(stats)
            self._end_epoch(stats, partial=not stats["complete"])
            if self.faults.get("kill_epoch") == s.epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            last = s.epoch >= a.epochs or self.time_up
            if last:
                return self._finish()
            s.epoch, s.batch = s.epoch + 1, 0
            if self.signals.requested or self.remote_stop:
                return self._interrupt(None)
        return self._finish()

    def _end_epoch(self, stats: dict, *, partial: bool) -> None:
        a, s, info = self.args, self.state, self.info
        kw = dict(device=info.device, pos=self.pos, amp=self.amp, num_classes=self.bundle.num_classes, info=info,
                  limit_batches=a.limit_eval_batches)
        val = evaluate(self.model, self.val_loader, desc="val", **kw) if self.val_loader is not None else None
        test = evaluate(self.model, self.test_loader, desc="test", **kw)
        if a.max_time and not self.time_up:  # spent during evaluation: this epoch is the last
            spent = torch.tensor([float(self.elapsed() >= a.max_time)], device=info.device)
            self.time_up = dist.all_reduce(spent, info, op="max").item() > 0
        row = {"epoch": s.epoch, "train_loss": stats["loss"], "train_acc": stats["acc"], "test_loss": test["loss"],
               "test_acc": test["acc"], "lr": self.optimizer.param_groups[0]["lr"], "step": s.global_step,
               "train_samples": stats["n"], "train_batches": stats["batches"], "test_samples": test["n"]}
        if "acc_top5" in test:
            row["test_acc_top5"] = test["acc_top5"]
        if val is not None:
            row.update(val_loss=val["loss"], val_acc=val["acc"])
            if "acc_top5" in val:
                row["val_acc_top5"] = val["acc_top5"]
        if partial:
            row["partial"] = True  # the time budget ran out inside this epoch
        value = row[self.best["metric"]]
        is_best = math.isfinite(value) and math.isfinite(row["test_loss"]) and value > self.best["value"]
        if is_best:
            self.best = {"metric": self.best["metric"], "value": value, "epoch": s.epoch}
        row.update(best_acc=self.best["value"], is_best=is_best)
        row.update(epoch_time_s=stats["time_s"] + test["time_s"] + (val["time_s"] if val else 0.0),
                   train_time_s=stats["time_s"], eval_time_s=test["time_s"] + (val["time_s"] if val else 0.0),
                   samples_per_s=stats["samples_per_s"], elapsed_s=self.elapsed())
        if self.main:
            self.run.append_metrics(row)
            if a.save_metrics:
                for split, res in (("test", test), ("val", val)):
                    if res is not None:
                        self.run.append_per_class({"epoch": s.epoch, "split": split, "confusion": res["confusion"],
                                                   "per_class_acc": per_class_accuracy(res["confusion"])})
            self.tb.scalars(row, s.epoch)
            last = s.epoch >= a.epochs or self.time_up
            if a.save_attention_maps and (s.epoch == 1 or s.epoch % a.attention_save_interval == 0 or last):
                snap = probes.capture(self.model, self.bundle.test, self.probe_idx, epoch=s.epoch,
                                      bundle=self.bundle, device=info.device, pos=self.pos)
                self.run.save_attention(snap)
                self.tb.images(probes.heatmaps(snap), s.epoch)
        self._log_epoch(row)
        finished = s.epoch >= a.epochs or self.time_up
        self._save(epochs_done=s.epoch, batch_in_epoch=0, finished=finished, best=is_best)
        self._status("running")

    def _log_epoch(self, row: dict) -> None:
        a = self.args
        parts = [f"epoch {row['epoch']}/{a.epochs}" + (" (partial: time budget)" if row.get("partial") else ""),
                 f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"]
        if "val_acc" in row:
            parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}")
        test = f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f}"
        if "test_acc_top5" in row:
            test += f" top5 {row['test_acc_top5']:.4f}"
        parts += [test, f"lr {row['lr']:.3g}",
                  f"{row['epoch_time_s']:.1f}s, {row['samples_per_s']:.0f} samples/s" + (" *best*" if row["is_best"]
                                                                                         else "")]
        self.log.info(" | ".join(parts))

    # ---------------------------------------------------------------------------------------- saving, stopping
    def _save(self, *, epochs_done: int, batch_in_epoch: int, finished: bool, best: bool = False,
              partial: dict | None = None) -> None:
        rng = ckpt.capture_rng()
        if self.info.enabled:  # every rank's generators, so each rank resumes its own dropout stream
            gathered = [None] * self.info.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered[0] if self.info.is_main else rng
            rng_ranks = gathered
        else:
            rng_ranks = [rng]
        if not self.main:
            return
        state = {
            "format": ckpt.CHECKPOINT_FORMAT, "model_config": self.config.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": dict(vars(self.schedule)),
            "scaler": self.amp.scaler.state_dict() if self.amp.scaler is not None else None,
            "epoch": epochs_done, "batch_in_epoch": batch_in_epoch, "global_step": self.state.global_step,
            "elapsed_s": self.elapsed(), "best": dict(self.best), "partial": partial, "args": vars(self.args),
            "rng": rng, "rng_ranks": rng_ranks, "world_size": self.info.world_size, "finished": finished,
            "torch_version": str(torch.__version__),
        }
        if best:
            ckpt.save_checkpoint(self.run.best_checkpoint, state)
        ckpt.save_checkpoint(self.run.last_checkpoint, state)

    def _interrupt(self, stats: dict | None) -> int:
        s = self.state
        if stats is not None:  # mid-epoch: save the position and the running sums of this epoch
            sums = dict(s.sums)
            if self.info.enabled:
                sums.update(loss_sum=stats["loss_sum"], correct=stats["correct"], n=stats["n"])
            self._save(epochs_done=s.epoch - 1, batch_in_epoch=s.batch, finished=False, partial=sums)
            where = f"epoch {s.epoch} after batch {s.batch}/{stats['batches_total']}"
        else:
            where = f"the end of epoch {s.epoch - 1}"
        sig = self.signals.signum
        name = signal.Signals(sig).name if sig else "a stop request on another rank"
        self._status("interrupted", message=f"stopped by {name} at {where}")
        self.log.warning(f"interrupted by {name} at {where}; checkpoint: {self.run.last_checkpoint}")
        self.log.warning(f"resume with: {self._resume_command()}")
        return self.signals.exit_code if sig else 130

    def _finish(self) -> int:
        a = self.args
        self._status("finished", message="time budget spent" if self.time_up else "")
        self.tb.hparams({k: v for k, v in vars(a).items() if not isinstance(v, (list, tuple))},
                        {"best_acc": self.best["value"] if math.isfinite(self.best["value"]) else None})
        self.log.info(f"finished: best {self.best['metric']} {self.best['value']:.4f} at epoch {self.best['epoch']}; "
                      f"run directory {self.run.path}")
        return 0

    def _status(self, state: str, message: str = "") -> None:
        if self.main and self.run_started:
            self.run.write_status(state, epoch=self.state.epoch, epochs=self.args.epochs, message=message,
                                  step=self.state.global_step, world_size=self.info.world_size)

    def _resume_command(self) -> str:
        if self.info.enabled:
            return f"torchrun --nproc_per_node {self.info.world_size} train.py --resume {self.run.path}"
        return f"python train.py --resume {self.run.path}"

    def close(self) -> None:
        self.signals.restore()
        self.tb.close()
