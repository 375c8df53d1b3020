"""When training stops early: SIGINT/SIGTERM (Ctrl-C, or a cluster's preemption notice) and the time budget.

The first SIGINT or SIGTERM only sets a flag; the epoch loop asks `StopConditions.wants_stop` after every optimizer
step and, in a distributed run, the ranks agree at their next sync point (`perceiver.engine`), so every rank stops
after the same step and rank 0 saves the position. torchrun forwards the signal it receives to every rank; a
signal sent to one rank reaches the others through that agreement. A second Ctrl-C raises `KeyboardInterrupt` at
once (nothing saved). Exit codes: 130 for SIGINT, 143 for SIGTERM.
"""
from __future__ import annotations

import logging
import signal
import time

from .engine import Stop


class StopConditions:
    EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self, log: logging.Logger, *, max_time: float | None, elapsed_before: float = 0.0):
        self.log = log
        self.max_time = max_time
        self.elapsed_before = elapsed_before  # training time of the earlier runs of a resumed run
        self.started = time.monotonic()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    # ----------------------------------------------------------------------------------------------- the clock
    def restart_clock(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    @property
    def time_up(self) -> bool:
        return bool(self.max_time) and self.elapsed() >= self.max_time

    # --------------------------------------------------------------------------------------------------- signals
    def install(self) -> "StopConditions":
        for sig in self.EXIT_CODES:
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
        self.log.warning(f"received {signal.Signals(signum).name}: stopping after the current step and saving a "
                         f"checkpoint (press Ctrl-C again to exit at once, without saving)")

    @property
    def signalled(self) -> bool:
        return self.signum is not None

    def wants_stop(self) -> Stop:
        """This process's wish to stop now; the ranks agree on it in the epoch loop."""
        if self.signalled:
            return Stop.SIGNAL
        return Stop.TIME if self.time_up else Stop.NO

    def exit_code(self) -> int:
        return self.EXIT_CODES.get(self.signum, 130)

    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a stop request from another process"
