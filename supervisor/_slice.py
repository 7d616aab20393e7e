"""How long the loop and the actor pool's workers run before they let others run (internal).

Under gevent nothing else runs (the hub, an asyncio loop on it, the other
greenlets) until the running greenlet waits or yields; yielding after every
piece of work is a trip through the hub each time. Both therefore work in
slices: they yield once they have run ``YIELD_EVERY`` without waiting.

How they yield differs by runtime. On threads, ``time.sleep(0)`` hands the GIL
over. Under gevent, ``sleep(0)`` only queues the greenlet behind the other
callbacks, and gevent polls for I/O again only every 50 callbacks: four busy
workers yielding 2 ms slices to one another kept an asyncio loop on the hub
(waiting on its timer) out for 70-170 ms (``tests/test_aio_heartbeat.py``,
traced with ``greenlet.settrace``). A timer sleep resumes the greenlet on the
loop's next iteration, after I/O and timers have had their turn: the default,
fair to a service's loop. A process that runs nothing but sessions (the load
test) calls :func:`favour_throughput`: with the timer sleep the workers got
so small a share of each iteration that 10,000 sessions completed 25,186
turns in a run instead of 51,986.
"""

from __future__ import annotations

import time

from supervisor._runtime import gevent_patched

YIELD_EVERY = 0.002
"""Seconds of work back to back before yielding."""

GEVENT_YIELD_S = 1e-6
"""A timer sleep this short still waits for the hub's next loop iteration."""


_fair_to_io = True
"""Under gevent, yield with a timer sleep (see the module's docstring)."""


def favour_throughput() -> None:
    """Under gevent, yield with ``sleep(0)``: for a process that runs only sessions."""
    global _fair_to_io  # one process-wide choice, made at start-up
    _fair_to_io = False


class TimeSlice:
    """Internal: the current slice of one thread (the loop's, or one worker's)."""

    __slots__ = ("_pause", "_started")

    def __init__(self) -> None:
        self._started = time.monotonic()
        # Decided when the thread starts: a gevent process is patched by then.
        self._pause = GEVENT_YIELD_S if _fair_to_io and gevent_patched() else 0.0

    def restart(self) -> None:
        """The thread has just waited (every other thread could run): a new slice."""
        self._started = time.monotonic()

    def share(self) -> None:
        """Yield if the slice is used up, and start a new one."""
        if time.monotonic() - self._started >= YIELD_EVERY:
            time.sleep(self._pause)
            self._started = time.monotonic()
