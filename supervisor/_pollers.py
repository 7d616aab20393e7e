"""How the reactor waits for readiness: ``selectors``, or the gevent hub under gevent (internal).

Both pollers have one small interface: ``register``/``modify``/``unregister`` a
descriptor with ``READ``/``WRITE`` events, and ``select(timeout)`` returning
``(fd, events)`` pairs.

Why not gevent's own ``selectors`` replacement under gevent: its ``select()``
waits on an ``Event`` that a readiness callback sets, and setting an ``Event``
queues the wake-up behind every greenlet already runnable. With thousands of
session actors runnable at once the reactor then reads nothing until all of
them have run (measured: the first echo of 1,000 was read only after the last
of the 1,000 sends, 0.3-0.6 s later). :class:`GeventPoller` switches to the
waiting reactor straight from the readiness callback, as gevent does for a
greenlet blocked in ``recv``.
"""

from __future__ import annotations

import selectors
from typing import Any, Protocol

from supervisor._runtime import gevent_patched

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
_EV_READ = 1
_EV_WRITE = 2
"""libev's event bits (gevent's loop.io flags)."""
_LOWEST_PRIORITY = -2
"""libev's EV_MINPRI: of the watchers due in one iteration, called last."""


class Poller(Protocol):
    """Internal: readiness of registered descriptors, called from the reactor only."""

    def register(self, fd: int, events: int) -> None: ...

    def modify(self, fd: int, events: int) -> None: ...

    def unregister(self, fd: int) -> None: ...

    def select(self, timeout: float | None) -> list[tuple[int, int]]: ...


class SelectorPoller:
    """Internal: ``selectors.DefaultSelector`` (epoll on Linux)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def register(self, fd: int, events: int) -> None:
        self._selector.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._selector.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self._selector.unregister(fd)

    def select(self, timeout: float | None) -> list[tuple[int, int]]:
        return [(key.fd, events) for key, events in self._selector.select(timeout)]


class GeventPoller:
    """Internal: one libev io watcher per descriptor; readiness switches to the waiting reactor.

    The switch waits for the end of the loop iteration that found the descriptors
    ready: a check watcher at the lowest priority runs after every io callback of
    the iteration, so one switch hands the reactor all of them (a switch per
    descriptor ran a whole pass of the reactor's loop per descriptor: the loop's
    own work outside the handlers was 3.3 % of the client's CPU at 1,000 chat
    sessions, 1.7 % with one switch per iteration), and
    still before the greenlets those callbacks made runnable (gevent runs them
    at the start of the next iteration).
    """

    def __init__(self) -> None:
        # gevent exists only in that runtime (and ships no type stubs).
        from gevent import get_hub  # type: ignore[import-untyped]  # noqa: PLC0415
        from gevent.hub import Waiter  # type: ignore[import-untyped]  # noqa: PLC0415

        self._hub = get_hub()
        self._new_waiter = Waiter
        self._watchers: dict[int, Any] = {}
        self._ready: dict[int, int] = {}
        self._waiter: Any = None
        """The reactor's ``Waiter`` while it waits in :meth:`select`."""
        # Unreferenced: it never keeps the loop running by itself. The lowest priority:
        # libev calls it after the io watchers of the same iteration.
        self._end_of_iteration = self._hub.loop.check(ref=False, priority=_LOWEST_PRIORITY)
        self._end_of_iteration.start(self._wake)

    def register(self, fd: int, events: int) -> None:
        flags = (_EV_READ if events & READ else 0) | (_EV_WRITE if events & WRITE else 0)
        watcher = self._hub.loop.io(fd, flags)
        watcher.start(self._fired, fd, pass_events=True)
        self._watchers[fd] = watcher

    def modify(self, fd: int, events: int) -> None:
        self.unregister(fd)
        self.register(fd, events)

    def unregister(self, fd: int) -> None:
        watcher = self._watchers.pop(fd)
        watcher.stop()
        watcher.close()
        self._ready.pop(fd, None)

    def _fired(self, events: int, fd: int) -> None:
        """In the hub: note the readiness; :meth:`_wake` hands it over."""
        bits = (READ if events & _EV_READ else 0) | (WRITE if events & _EV_WRITE else 0)
        self._ready[fd] = self._ready.get(fd, 0) | bits

    def _wake(self) -> None:
        """In the hub, once per loop iteration: wake the reactor if it waits and has work."""
        if self._ready and self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.switch(None)

    def select(self, timeout: float | None) -> list[tuple[int, int]]:
        if not self._ready and (timeout is None or timeout > 0):
            waiter = self._waiter = self._new_waiter(self._hub)
            timer = None
            if timeout is not None:
                timer = self._hub.loop.timer(timeout)
                timer.start(waiter.switch, None)
            try:
                waiter.get()
            finally:
                self._waiter = None
                if timer is not None:
                    timer.close()
        ready, self._ready = self._ready, {}
        return list(ready.items())


def make_poller() -> Poller:
    """The gevent poller in a gevent-patched process, else the selectors one."""
    if gevent_patched():
        return GeventPoller()
    return SelectorPoller()
