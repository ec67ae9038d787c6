"""A fixed-rate loop on its own thread with absolute steady-clock deadlines.

An executor timer in Python drifts and bunches under load; absolute deadlines keep the
average rate exact, and a tick that starts more than one period late is counted as
missed (skipped) rather than silently run twice in a row.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

_SPIN_S = 2e-4  # last stretch before a deadline is spun, not slept, for sub-100 us jitter
_WAKE_GRACE = 0.5  # extra fraction of a period the timer waits after a woken tick


class DeadlineLoop:
    """Calls ``tick()`` every ``period_s``; counts overruns and missed deadlines."""

    def __init__(
        self, period_s: float, tick: Callable[[], None], name: str = "control_loop", realtime_priority: int = 0
    ) -> None:
        if not period_s > 0:
            raise ValueError("period must be positive")
        self.period_s = period_s
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ticks = 0
        self.missed = 0
        self.overruns = 0
        self.last_work_s = 0.0
        self._priority = realtime_priority
        self._tick_done = threading.Event()
        self._wake = threading.Event()
        self.realtime_error = ""  # why SCHED_FIFO could not be set, if it was asked for
        self.errors = 0  # ticks that raised: counted, never the end of the loop
        self.last_error = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        """Fresh input: tick now rather than at the next deadline, and re-phase the period.

        After a woken tick the next deadline is 1.5 periods away, so inputs arriving at the
        control rate (with some jitter) drive every tick -- one action per input, no extra
        timer ticks in between -- and the timer only takes over when inputs are late.
        """
        self._wake.set()

    def wait_for_slack(self) -> None:
        """Block until a tick has just finished (at most two periods).

        Work that must hold the GIL in one piece (creating an onnxruntime session) started
        right after a tick has nearly the whole period before the next deadline.
        """
        self._tick_done.clear()
        self._tick_done.wait(2 * self.period_s)

    def _run(self) -> None:
        if self._priority > 0:
            try:  # pid 0 = this thread on Linux; needs CAP_SYS_NICE or an rtprio limit
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self._priority))
            except (OSError, AttributeError) as exc:
                self.realtime_error = str(exc)
        period = self.period_s
        deadline = time.monotonic()
        while not self._stop.is_set():
            deadline += period
            now = time.monotonic()
            late = now - deadline
            if late > period:
                skipped = int(late // period)
                self.missed += skipped
                deadline += skipped * period
            while (remaining := deadline - time.monotonic()) > 0:
                if remaining > _SPIN_S and self._wake.wait(remaining - _SPIN_S):
                    self._wake.clear()
                    deadline = time.monotonic() + _WAKE_GRACE * period  # tick now; timer waits 1.5 periods
                    break
            start = time.monotonic()
            try:
                self._tick()
            except Exception as exc:  # the loop outlives any tick; the owner reports the count
                self.errors += 1
                self.last_error = repr(exc)
            self.last_work_s = time.monotonic() - start
            self.ticks += 1
            self._tick_done.set()
            if self.last_work_s > period:
                self.overruns += 1
