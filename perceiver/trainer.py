"""The training run behind `train.py`: the epoch loop, evaluation, checkpoints, probes, stops and resumes.

`train(settings, explicit=..., argv=...)` returns the process exit code: 0 finished (or nothing to do), 130/143 stopped
by SIGINT/SIGTERM after saving a checkpoint. User-fixable failures raise `PerceiverError` (train.py prints one
line and exits 1); a non-finite loss is one of them.

Order of writes at the end of epoch ``e`` (rank 0): metrics.jsonl row -> per_class.jsonl -> attention file ->
best.pt (if a new best) -> last.pt -> status.json. A crash anywhere leaves last.pt at ``e - 1`` or ``e``; resuming
from ``e - 1`` first drops the rows a crashed run wrote after it (`RunDir.truncate_metrics`), then replays epoch
``e``: data order, augmentation and dropout all come from saved or (seed, epoch)-derived generators, so without
``--max_time`` the replay is exact, bit for bit. Under ``--max_time`` the learning rate also follows the wall clock
(the ranks' agreed one, see `perceiver.engine`), which runs differently the second time: the replay sees the same
batches but rates that differ slightly, and the budget left decides where the run ends.
best.pt follows the validation accuracy with ``--val_split``; without one no image is held out to choose on, and
the run's model is its last epoch (last.pt; --eval_only reads it).
"""
from __future__ import annotations

from dataclasses import asdict

import torch

from . import checkpoint as ckpt
from . import components as comp
from . import distributed
from . import epoch, tracking
from .engine import EpochResult, EpochSums, LoopState, NonFiniteLossError, Stop, StepRecord, train_one_epoch
from .epoch import Best
from .errors import PerceiverError, RunDirError, UsageError
from .parts import build_parts
from .resume import clear_run, invocation_options, restore_training, start_resume
from .rundir import RunDir, RunLock, launcher
from .settings import Settings
from .stopping import StopConditions


def train(settings: Settings, *, explicit: set[str], argv: list[str]) -> int:
    """``explicit``: the flags typed (or given by --preset / --config), which a resumed run must agree with."""
    resume, run, options, resumed = None, RunDir(settings.run.path), settings.model, None
    if settings.run.resume:
        resumed = start_resume(settings, explicit)  # the checkpoint's flags merged, the run directory chosen
        settings, run, resume = resumed.settings, resumed.run, resumed.state
        options = invocation_options(settings.model, explicit)
        if resume.get("finished"):
            what = f"checkpoint {resume['path']}" if resumed.new_run else str(run.path)
            print(f"{what} already finished ({resume['epoch']} epochs); nothing to do. Start a new run to train "
                  f"further.", flush=True)
            return 0
    comp.set_threads(settings.runtime.threads)
    info = distributed.setup(settings.runtime.device)
    log = tracking.setup_logging(None, main_process=info.is_main)
    trainer = Trainer(settings, info=info, run=run, resume=resume, argv=argv, log=log, options=options,
                      new_run=resumed is None or resumed.new_run, changes=resumed.changes if resumed else [])
    try:
        code = trainer.fit()
        if code == 0:
            distributed.barrier(info)  # rank 0 writes the last files: no rank tears down before it is done
        return code
    finally:
        trainer.lock.release()  # first: a signal after the handlers are restored would leave it behind
        trainer.stop.restore()
        trainer.tb.close()
        tracking.close_logging(log)
        trainer.parts = None  # the DDP wrapper, which holds the process group: `cleanup` frees both
        distributed.cleanup()


class Trainer:
    def __init__(self, settings: Settings, *, info: distributed.DistInfo, run: RunDir, resume: dict | None,
                 argv: list[str], log, options=None, new_run: bool = True, changes: list[dict] = ()):
        self.settings, self.info, self.run, self.resume, self.argv, self.log = settings, info, run, resume, argv, log
        self.new_run = new_run  # a new run directory: config.json is written (also when it starts from a checkpoint)
        self.changes = list(changes)  # optimiser flags this resume changes, recorded in config.json
        self.options = settings.model if options is None else options  # the model options: see build_parts
        self.main = info.is_main
        self.stop = StopConditions(log, max_time=settings.optim.max_time)
        self.tb = tracking.TensorBoard(None)
        self.state = LoopState()  # replaced, never changed: by the engine's result, then by the next epoch's start
        self.best = Best.start(validation=settings.batches.val_split > 0)
        self.started = False
        self.lock = RunLock(run.path)  # rank 0 holds it from before its first write to the end of the run

    def fit(self) -> int:
        seed = self.settings.run.seed
        comp.seed_everything(seed)
        self.parts = build_parts(self.settings, self.info, self.log, options=self.options,
                                 saved_config=self.resume["model_config"] if self.resume is not None else None)
        if self.resume is not None:
            self._check_same_data()
            self._restore()
        comp.seed_everything(seed + 1000 * self.info.rank)  # rank 0 draws what a 1-process run draws
        if self.resume is not None:  # last: the generators continue exactly where the checkpoint left them
            ranks = self.resume.get("rng_ranks") or []
            ckpt.restore_rng(ranks[self.info.rank] if len(ranks) == self.info.world_size else self.resume["rng"])
        self._prepare_run_dir()
        self.stop.install()
        tracking.log_run(self.log, self.settings, self.parts, self.info, self.run, self.resume, self.state)
        self.stop.restart_clock()
        try:
            self._status("running")
            return self._loop()
        except NonFiniteLossError as e:
            self._status("failed", message=str(e))
            raise PerceiverError(self._non_finite_advice(e)) from None
        except KeyboardInterrupt:
            self._status("interrupted", message="second Ctrl-C: stopped at once, nothing saved")
            self.log.warning(f"stopped at once; resume from the last checkpoint: {self._resume_command()}")
            return 130
        except BaseException as e:
            self._status("failed", message=str(e) if isinstance(e, PerceiverError) else f"{type(e).__name__}: {e}")
            raise

    def _check_same_data(self) -> None:
        """A resumed run must see the data it was trained on (the fingerprint its checkpoint or config.json
        recorded; runs saved before fingerprints were recorded are not checked)."""
        saved = self.resume.get("data")
        if saved is None and not self.new_run and self.run.config_path.is_file():
            try:
                saved = self.run.read_config().get("data")
            except PerceiverError:
                saved = None
        if not isinstance(saved, dict):
            return
        diff = comp.fingerprint_differences(saved, self.parts.data)
        if diff:
            was = self.resume["args"].get("data_dir")
            raise UsageError(f"--resume {self.resume['path']}: the data differs from the run's ({'; '.join(diff)}): "
                             f"resume with the data it was trained on (--data_dir {was} when it started), or start a "
                             f"new run on this data")

    def _restore(self) -> None:
        self.state, best, elapsed = restore_training(self.parts, self.resume, world_size=self.info.world_size,
                                                     run_path=self.run.path)
        self.best = best or self.best
        self.stop.elapsed_before = elapsed

    def _prepare_run_dir(self) -> None:
        run = self.run
        if self.main:
            note = self.lock.acquire()
            if note:
                self.log.warning(note)
            if self.settings.run.overwrite and self.resume is None:
                removed = clear_run(run)
                if removed:
                    print(f"--overwrite: removed {', '.join(removed)} from {run.path}", flush=True)
            run.create()
            if self.resume is not None and not self.new_run:
                run.truncate_metrics(self.state.epoch - 1, last_step=self.state.global_step)
        distributed.barrier(self.info)
        self.log = self.stop.log = tracking.setup_logging(run.log_path, main_process=self.main)
        if self.main and self.new_run:
            config = tracking.config_json(self.settings, self.parts, self.info, self.argv)
            if self.resume is not None:
                config["started_from"] = self.resume["path"]
            run.write_config(config)
        if self.changes and self.main:
            for c in self.changes:
                self.log.warning(f"--{c['flag']} changed on resume: {c['old']} -> {c['new']} from epoch {c['epoch']} "
                                 f"(recorded in {run.config_path.name})")
            try:
                run.record_resume_changes(self.changes)
            except RunDirError as e:  # no config.json to add to: the log line above is the record
                self.log.warning(f"could not record it: {e}")
        if self.main and self.settings.logging.use_tensorboard:
            self.tb = tracking.TensorBoard(run.tensorboard_dir, purge_step=self.state.epoch if self.resume else None)
        self.started = True

    # ---------------------------------------------------------------------------------------------- the loop
    def _write_steps(self, records: list[StepRecord]) -> None:
        if self.main and self.settings.logging.save_metrics:
            for r in records:
                self.run.append_step({k: v for k, v in asdict(r).items() if v is not None and v == v})

    def _loop(self) -> int:
        st, p = self.settings, self.parts
        while self.state.epoch <= st.optim.epochs:
            s = self.state
            p.sampler.set_epoch(s.epoch, skip=s.batch * st.batches.batch_size)
            comp.seed_loader(p.loader, st.run.seed * 100_003 + s.epoch)
            # the budget's clock: this process's, read at the sync points only, where the ranks agree on one
            result = train_one_epoch(p.step, p.loader, state=s, lr=p.lr, clock=self.stop.elapsed,
                                     wants_stop=self.stop.wants_stop, on_steps=self._write_steps,
                                     accum_steps=st.optim.gradient_accumulation_steps,
                                     limit_batches=st.runtime.limit_train_batches, sync_every=st.runtime.sync_every,
                                     info=self.info, show_progress=not st.runtime.no_progress)
            self.state = result.state
            if result.stop == Stop.SIGNAL and not result.complete:
                return self._interrupt(result)
            last = self._end_epoch(result, time_up=result.stop == Stop.TIME)
            if last:
                return self._finish()
            self.state = self.state.next_epoch()
            if result.stop == Stop.SIGNAL or self._agree(self.stop.signalled):
                return self._interrupt(None)
        return self._finish()

    def _agree(self, flag: bool) -> bool:
        """True on every rank when it is True on any."""
        t = torch.tensor([float(flag)], device=self.info.device)
        return bool(distributed.all_reduce(t, self.info, op="max").item())

    def _end_epoch(self, result: EpochResult, *, time_up: bool) -> bool:
        """Evaluate, log and save the epoch; True when it is the run's last."""
        st, s = self.settings, self.state
        evals = epoch.evaluate_splits(self.parts, self.info, limit_batches=st.runtime.limit_eval_batches,
                                      show_progress=not st.runtime.no_progress)
        last = s.epoch >= st.optim.epochs or self._agree(time_up or self.stop.time_up)  # time spent evaluating counts
        self.best, is_best = self.best.after(evals, s.epoch)
        row = epoch.metrics_row(result, evals, best=self.best, is_best=is_best, elapsed_s=self.stop.elapsed())
        if self.main:
            epoch.write_epoch(self.run, self.tb, self.parts, st.logging, row, evals, last=last,
                              device=self.info.device)
        self.log.info(tracking.epoch_line(row, st.optim.epochs))
        self._save(epochs_done=s.epoch, batch_in_epoch=0, finished=last, best=is_best)
        self._status("running")
        return last

    # ---------------------------------------------------------------------------------------- saving, stopping
    def _save(self, *, epochs_done: int, batch_in_epoch: int, finished: bool, best: bool = False,
              partial: EpochSums | None = None) -> None:
        rng = ckpt.capture_rng()
        rng_ranks = [rng]
        if self.info.enabled:  # every rank's generators, so each rank resumes its own dropout stream
            rng_ranks = distributed.gather_objects(rng, self.info)
        if not self.main:
            return
        p = self.parts
        state = ckpt.build_checkpoint(
            config=p.config, model=p.model, ema=p.ema, optimizer=p.optimizer, schedule=p.schedule,
            scaler=p.amp.scaler, epoch=epochs_done, batch_in_epoch=batch_in_epoch,
            global_step=self.state.global_step, elapsed_s=self.stop.elapsed(), best=self.best.to_dict(),
            partial=asdict(partial) if partial is not None else None, args=dict(self.settings.flags), rng=rng,
            rng_ranks=rng_ranks, world_size=self.info.world_size, finished=finished, data=p.data)
        if best:
            ckpt.save_checkpoint(self.run.best_checkpoint, state)
        ckpt.save_checkpoint(self.run.last_checkpoint, state)

    def _interrupt(self, result: EpochResult | None) -> int:
        s = self.state
        if result is not None:  # mid-epoch: save the position and the running sums of this epoch
            self._save(epochs_done=s.epoch - 1, batch_in_epoch=s.batch, finished=False, partial=result.sums)
            where = f"epoch {s.epoch} after batch {s.batch}/{result.batches_total}"
        else:
            where = f"the end of epoch {s.epoch - 1}"
        signum = torch.tensor([float(self.stop.signum or 0)], device=self.info.device)
        distributed.all_reduce(signum, self.info, op="max")
        self.stop.signum = self.stop.signum or int(signum.item()) or None
        name = self.stop.signal_name()
        self._status("interrupted", message=f"stopped by {name} at {where}")
        self.log.warning(f"interrupted by {name} at {where}; checkpoint: {self.run.last_checkpoint}")
        self.log.warning(f"resume with: {self._resume_command()}")
        return self.stop.exit_code()

    def _finish(self) -> int:
        self._status("finished", message="time budget spent" if self.stop.time_up else "")
        self.tb.hparams({k: v for k, v in self.settings.flags.items() if not isinstance(v, (list, tuple))},
                        {"final_test_acc": self.best.value if self.best.metric == "last" else None,
                         "best_val_acc": self.best.val_acc})
        b = self.best
        if b.metric == "val_acc":
            summary = f"best val_acc {b.value:.4f} at epoch {b.epoch} (checkpoints/best.pt)"
        else:
            summary = f"last epoch {b.epoch}, test acc {b.value:.4f} (checkpoints/last.pt)"
        self.log.info(f"finished: {summary}; run directory {self.run.path}")
        return 0

    def _status(self, state: str, message: str = "") -> None:
        if self.main and self.started:
            try:
                self.run.write_status(state, epoch=self.state.epoch, epochs=self.settings.optim.epochs,
                                      message=message, step=self.state.global_step, world_size=self.info.world_size)
            except PerceiverError:
                if state != "failed":  # "failed" is written while reporting an error: that error is the news
                    raise

    def _non_finite_advice(self, e: NonFiniteLossError) -> str:
        """The error of a non-finite loss, with advice that works: `--resume` accepts a changed ``--lr`` and
        ``--grad_clip`` (`perceiver.resume.OPTIMISER_OVERRIDES`); before the first checkpoint, a new start."""
        o = self.settings.optim
        lower = f"--lr {o.lr / 4:g}"
        clip = f"--grad_clip {o.grad_clip / 4:g}" if o.grad_clip else "--grad_clip 1"
        if not self.run.last_checkpoint.is_file():
            amp = ", or without --use_amp" if o.use_amp else ""
            return (f"{e}: no checkpoint was saved yet (the first is written at the end of epoch 1); start again with "
                    f"a lower rate or a tighter clip ({lower} or {clip}{amp}) and --overwrite")
        amp = ("; if reduced precision overflows, only a new run without --use_amp helps" if o.use_amp else "")
        return (f"{e}: no checkpoint holds weights updated with it; {self.run.last_checkpoint} is the last good one: "
                f"resume it with a lower rate or a tighter clip, e.g. `{self._resume_command()} {lower}` (or {clip}; "
                f"the change is recorded in config.json){amp}")

    def _resume_command(self) -> str:
        return f"{launcher(self.info.world_size)} train.py --resume {self.run.path}"


__all__ = ["train", "Trainer"]
