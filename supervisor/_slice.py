"""How long the loop and the actor pool's workers run before they let others run (internal).

Under gevent nothing else runs (the hub, an asyncio loop on it, the other
greenlets) until the running greenlet waits or yields; yielding after every
piece of work is a trip through the hub each time. Both therefore work in
slices: they yield once they have run ``YIELD_EVERY`` without waiting.
"""

from __future__ import annotations

import time

YIELD_EVERY = 0.002
"""Seconds of work back to back before yielding (``time.sleep(0)``)."""


class TimeSlice:
    """Internal: the current slice of one thread (the loop's, or one worker's)."""

    __slots__ = ("_started",)

    def __init__(self) -> None:
        self._started = time.monotonic()

    def restart(self) -> None:
        """The thread has just waited (every other thread could run): a new slice."""
        self._started = time.monotonic()

    def share(self) -> None:
        """Yield if the slice is used up, and start a new one."""
        if time.monotonic() - self._started >= YIELD_EVERY:
            time.sleep(0)
            self._started = time.monotonic()
