"""Supervisor-wide admission control for handshakes (internal).

Bounds the handshakes in flight and the handshakes started per second, so a
server restart does not turn thousands of sessions into a reconnect storm (I7).
Waiting happens in the connecting thread, never in an actor's mailbox.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class AdmissionCancelled(Exception):
    """Internal: the connection was aborted while it waited for admission."""


class Admission:
    """Internal: a counting limit plus evenly spaced start times."""

    def __init__(self, max_in_flight: int, max_per_second: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._max_in_flight = max_in_flight
        self._interval = 1.0 / max_per_second
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._in_flight = 0
        self._waiting = 0
        self._next_start = 0.0

    @property
    def in_flight(self) -> int:
        """Handshakes admitted and not finished."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Handshakes queued for a free slot."""
        return self._waiting

    def acquire(self, cancelled: threading.Event) -> None:
        """Block until this handshake may start; raise if ``cancelled`` is set first."""
        with self._cond:
            self._waiting += 1
            try:
                while self._in_flight >= self._max_in_flight and not cancelled.is_set():
                    self._cond.wait()
            finally:
                self._waiting -= 1
            if cancelled.is_set():
                raise AdmissionCancelled
            self._in_flight += 1
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self._interval
        if start > now:
            self._sleep(start - now)

    def release(self) -> None:
        """A handshake finished (either way): let the next one in."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify()

    def wake_all(self) -> None:
        """Wake every waiter so cancelled ones can leave."""
        with self._cond:
            self._cond.notify_all()
