"""One I/O loop for every open connection in the process (internal).

A single thread (a greenlet under gevent's monkey-patching) waits on every
registered socket (``_pollers``: ``selectors``, so epoll on Linux; under gevent
the hub's own watchers) and calls its handler when it is ready, when
another thread pokes it, or when a timer it set falls due. It starts on first
use and lives as long as the process.

What a handler does is its own business (``_streams.Streams`` reads, decodes
and writes a WebSocket); this module only promises: handlers run one at a time
in the loop, never concurrently with each other; ``poke`` from any thread is
cheap and coalesced (one wake-up byte however many pokes arrive meanwhile);
and the loop never blocks on one handler and never dies of one: a handler that
raises is logged and told to end (:meth:`Handler.crashed`), and the loop goes on.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from supervisor._logging import get_logger
from supervisor._pollers import READ, Poller, make_poller
from supervisor._runtime import new_lock
from supervisor._slice import TimeSlice

_log = get_logger("supervisor.reactor")

THREAD_NAME = "supervisor-reactor"


class Handler(Protocol):
    """What the loop calls; every method runs in the loop thread, one handler at a time."""

    def ready(self, events: int) -> None:
        """The registered descriptor is readable (``READ``) and/or writable (``WRITE``)."""

    def poked(self) -> None:
        """Another thread asked for attention (see :meth:`Reactor.poke`)."""

    def timer(self, now: float) -> None:
        """A time set with :meth:`Reactor.call_at` has come (it may have been moved since)."""

    def crashed(self, error: BaseException) -> None:
        """A call above raised: end, release the descriptor (:meth:`Reactor.watch` with 0)."""


class Reactor:
    """Internal: the process-wide loop; see the module docstring."""

    def __init__(self) -> None:
        self._lock = new_lock()
        self._pokes: list[Handler] = []
        self._woken = False
        """A wake-up byte is in flight: later pokes need not send another."""
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._poller: Poller | None = None
        self._wake_fd = -1
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._timers: list[tuple[float, int, Handler]] = []
        self._order = itertools.count()
        self._interest: dict[int, int] = {}
        """Events each registered descriptor is watched for (loop thread only)."""
        self._slice = TimeSlice()
        """Handlers run since the loop last waited or yielded (loop thread only): under
        gevent a round can hold hundreds of descriptors and pokes (a supervisor
        stopping closes every connection at once), and nothing else, an asyncio
        loop on the same hub included, runs until the loop waits."""
        self._watched: dict[int, Handler] = {}
        """Its handler: a key from a descriptor dropped earlier in the same round is stale."""

    # --- any thread ---------------------------------------------------------------------

    def poke(self, handler: Handler) -> None:
        """Call ``handler.poked()`` in the loop soon; starts the loop on first use."""
        with self._lock:
            if self._thread is None:
                self._start()
            self._pokes.append(handler)
            if self._woken or threading.get_ident() == self._ident:
                return  # a wake-up is pending already, or the loop drains pokes itself
            self._woken = True
            wake = self._wake_w
        assert wake is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.write(wake.fileno(), b"\0")  # the pipe is full: the loop is woken anyway

    def in_loop(self) -> bool:
        """True in the loop thread itself."""
        return threading.get_ident() == self._ident

    @property
    def thread(self) -> threading.Thread | None:
        """The loop's thread once started (tests count threads)."""
        return self._thread

    # --- loop thread only -----------------------------------------------------------------

    def watch(self, fd: int, handler: Handler, events: int) -> None:
        """Watch ``fd`` for ``events`` (``READ | WRITE``, or 0 to stop watching it)."""
        assert self._poller is not None
        current = self._interest.get(fd, 0)
        if events == current:
            return
        if not events:
            del self._interest[fd]
            del self._watched[fd]
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._poller.unregister(fd)
            return
        if current:
            self._poller.modify(fd, events)
        else:
            self._poller.register(fd, events)
        self._interest[fd] = events
        self._watched[fd] = handler

    def call_at(self, when: float, handler: Handler) -> None:
        """Call ``handler.timer(now)`` once ``time.monotonic()`` reaches ``when``."""
        heapq.heappush(self._timers, (when, next(self._order), handler))

    # --- the loop -------------------------------------------------------------------------

    def _start(self) -> None:
        """Make the poller and the wake-up pair, start the thread (lock held)."""
        self._poller = make_poller()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self._poller.register(self._wake_fd, READ)
        self._thread = threading.Thread(target=self._run, daemon=True, name=THREAD_NAME)
        self._thread.start()

    def _run(self) -> None:
        self._ident = threading.get_ident()
        poller = self._poller
        assert poller is not None
        watched = self._watched
        while True:
            try:
                timeout = self._timeout()
                ready = poller.select(timeout)
            except Exception:  # noqa: BLE001 - the loop outlives anything one select meets
                _log.exception("reactor_select_failed")
                time.sleep(0.01)
                continue
            self._slice.restart()
            for fd, events in ready:
                if fd == self._wake_fd:
                    self._drain_wakeups()
                elif (handler := watched.get(fd)) is not None:  # not ended this round
                    self._call(handler, handler.ready, events)
                    self._slice.share()
            self._drain_pokes()
            self._fire_timers()

    def _timeout(self) -> float | None:
        with self._lock:
            if self._pokes:
                return 0.0
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _drain_wakeups(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._wake_r.fileno(), 4096):
                pass

    def _drain_pokes(self) -> None:
        with self._lock:
            pokes, self._pokes = self._pokes, []
            self._woken = False
        for handler in pokes:
            self._call(handler, handler.poked)
            self._slice.share()

    def _fire_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, handler = heapq.heappop(timers)
            self._call(handler, handler.timer, now)

    @staticmethod
    def _call(handler: Handler, method: Callable[..., None], *args: float) -> None:
        try:
            method(*args)
        except Exception as exc:  # noqa: BLE001 - one connection's bug never ends the loop
            _log.exception("reactor_handler_failed", call=method.__name__)
            try:
                handler.crashed(exc)
            except Exception:  # noqa: BLE001
                _log.exception("reactor_handler_crash_failed")


_reactor = Reactor()


def reactor() -> Reactor:
    """The process-wide loop (started on its first poke)."""
    return _reactor


def _forget_after_fork() -> None:
    """A forked child has no loop thread: it starts its own on first use."""
    global _reactor
    _reactor = Reactor()


os.register_at_fork(after_in_child=_forget_after_fork)
