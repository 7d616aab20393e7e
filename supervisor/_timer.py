"""One scheduler thread for every delayed restart (internal).

A timer thread per backing-off session would cost a thread each during a storm,
exactly when threads are scarce; one heap serves them all: restarts, connect
timeouts and every session's next command deadline.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from supervisor._logging import get_logger

_log = get_logger(__name__)


COMPACT_AT = 64
"""Cancelled timers the heap may hold before it is rebuilt without them (and only
while they are at least half of it: each rebuild costs one pass over the heap)."""


class Timer:
    """Internal: one pending call; :meth:`Scheduler.cancel` drops what it holds."""

    __slots__ = ("args", "callback")

    def __init__(self, callback: Callable[..., None] | None, args: tuple[Any, ...]) -> None:
        self.callback = callback
        self.args = args


class Scheduler:
    """Internal: runs short callbacks after a delay, in one daemon thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._cancelled = 0
        """Cancelled timers still in the heap."""
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="supervisor-timer", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Timer:
        """Run ``callback(*args)`` after ``delay`` seconds, unless cancelled first.

        Receivers ignore a call that came too late (stale generation or loss
        number), so cancelling is for memory, not for correctness: the
        arguments ride in the timer, not in a closure (three more objects for
        the cycle collector per call), and a cancelled timer leaves the heap
        at its next rebuild instead of waiting out its delay.
        """
        timer = Timer(callback, args)
        entry = (self._clock() + max(delay, 0.0), next(self._order), timer)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # due before anything else: wake the thread to re-wait
                self._cond.notify()
        return timer

    def cancel(self, timer: Timer) -> None:
        """Drop ``timer``'s call (nothing if it ran or was cancelled already)."""
        with self._cond:
            if timer.callback is None:
                return
            timer.callback, timer.args = None, ()
            self._cancelled += 1
            heap = self._heap
            if self._cancelled >= COMPACT_AT and 2 * self._cancelled >= len(heap):
                self._heap = [entry for entry in heap if entry[2].callback is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    @property
    def pending(self) -> int:
        """Timers in the heap, cancelled ones not yet dropped included (tests)."""
        return len(self._heap)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    due = self._heap[0][0] - self._clock()
                    if due <= 0:
                        break
                    self._cond.wait(due)
                if self._stopped:
                    return
                _, _, timer = heapq.heappop(self._heap)
                callback, args = timer.callback, timer.args
                if callback is None:
                    self._cancelled -= 1
                    continue
                timer.callback, timer.args = None, ()  # ran: a late cancel() is a no-op
            try:
                callback(*args)
            except Exception:  # noqa: BLE001 - a failed callback must not stop every later restart
                _log.exception("scheduled_callback_failed")
