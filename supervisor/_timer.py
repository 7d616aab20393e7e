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


class Scheduler:
    """Internal: runs short callbacks after a delay, in one daemon thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="supervisor-timer", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` after ``delay`` seconds. Not cancellable: receivers
        ignore a call that came too late (stale generation or loss number).

        The arguments ride in the heap's entry: a closure per call would hold
        them in cells, three more objects for the cycle collector to track while
        the timer waits (a handshake deadline waits ``connect_timeout``, long
        after most handshakes are over).
        """
        entry = (self._clock() + max(delay, 0.0), next(self._order), callback, args)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # due before anything else: wake the thread to re-wait
                self._cond.notify()

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
                _, _, callback, args = heapq.heappop(self._heap)
            try:
                callback(*args)
            except Exception:  # noqa: BLE001 - a failed callback must not stop every later restart
                _log.exception("scheduled_callback_failed")
