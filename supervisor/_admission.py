"""Supervisor-wide admission control for handshakes (internal).

Bounds the handshakes in flight and the handshakes started per second, so a
server restart does not turn thousands of sessions into a reconnect storm (I7).

Nothing waits in a thread: a connection asks for a slot with
:meth:`Admission.request` and its handshake thread is started only once it is
admitted. Waiting requests are data in :class:`AdmissionQueue` (pure code, the
clock passed in), bounded by ``max_waiting`` and in practice by the number of
sessions (a session has at most one handshake pending). An admitted request
takes its slot at once and gets a start time, evenly spaced by the per-second
limit; a timer starts it then, not a sleeping thread.

Two classes of request, so a storm of one cannot starve the other: a session's
first connect, and everything else (resumes, reconnects after a loss or a
crash). While both wait, ``FIRST_SHARE`` of every ``FIRST_SHARE + 1``
admissions go to first connects (a session not connected yet is not in the
test at all, while one waiting for a resume keeps its connection); while one
class waits alone, it takes every slot. So neither class starves: a first
connect with k requests ahead of it in its class is admitted within
k + 1 + ceil((k + 1) / FIRST_SHARE) admissions, any other request within
(k + 1) * (FIRST_SHARE + 1).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from supervisor._logging import get_logger
from supervisor._runtime import new_lock

_log = get_logger("supervisor.admission")

MAX_WAITING = 1_000_000
"""Requests queued at most; past it a handshake fails at once (far above any session
count one process holds: the real bound is one request per session)."""

FIRST_SHARE = 3
"""While both classes wait, first connects take this many admissions per other one."""

WAITING, ADMITTED, CANCELLED = "waiting", "admitted", "cancelled"

CallLater = Callable[[float, Callable[[], None]], object]


def _spent() -> None:
    """A ticket's ``start`` once taken (admitted) or withdrawn (cancelled).

    ``start`` is most often a bound method of the requester, which holds its
    ticket: dropping it ends that reference cycle, so a finished connection is
    freed by reference counting, not left to the cycle collector.
    """


class Ticket:
    """Internal: one handshake's request for a slot."""

    __slots__ = ("first", "start", "state")

    def __init__(self, start: Callable[[], None], *, first: bool) -> None:
        self.start = start
        """Called once, when admitted: starts the handshake (its thread)."""
        self.first = first
        """A session's first connect (else a resume, a reconnect or a restart)."""
        self.state = WAITING


class AdmissionQueue:
    """Internal, pure: which waiting requests may start now, and when to look again.

    Callers hold a lock around it; the clock comes in as ``now``.
    """

    def __init__(self, max_in_flight: int, max_per_second: float,
                 max_waiting: int = MAX_WAITING) -> None:
        if max_in_flight <= 0 or max_per_second <= 0 or max_waiting <= 0:
            msg = "admission limits must be positive"
            raise ValueError(msg)
        self._max_in_flight = max_in_flight
        self._interval = 1.0 / max_per_second
        self._max_waiting = max_waiting
        self._queues: dict[bool, deque[Ticket]] = {True: deque(), False: deque()}
        """By class (``first``), oldest first; cancelled tickets are skipped when met."""
        self._firsts_in_row = 0
        """First connects admitted since the last other request (while both waited)."""
        self._next_start = -math.inf
        self.in_flight = 0
        """Admitted and not finished."""
        self.waiting = 0
        """Queued and neither admitted nor cancelled."""

    def push(self, ticket: Ticket) -> bool:
        """Queue ``ticket``; False (not queued) when ``max_waiting`` wait already."""
        if self.waiting >= self._max_waiting:
            return False
        self._queues[ticket.first].append(ticket)
        self.waiting += 1
        return True

    def cancel(self, ticket: Ticket) -> bool:
        """Withdraw a waiting ticket; False if it was admitted (or withdrawn) already."""
        if ticket.state != WAITING:
            return False
        ticket.state = CANCELLED
        self.waiting -= 1
        queue = self._queues[ticket.first]
        if len(queue) > 2 * self.waiting + 16:  # mostly cancelled: drop them (bounded memory)
            self._queues[ticket.first] = deque(t for t in queue if t.state == WAITING)
        return True

    def finish(self) -> None:
        """An admitted handshake ended (either way)."""
        self.in_flight -= 1

    def admit(self, now: float) -> list[tuple[Ticket, float]]:
        """The tickets admitted now (each takes a slot), with the time each may start:
        now, or later to keep starts ``1 / max_per_second`` apart. Call again on
        ``push`` and ``finish``: nothing else frees a slot."""
        admitted: list[tuple[Ticket, float]] = []
        while self.waiting and self.in_flight < self._max_in_flight:
            ticket = self._pop()
            ticket.state = ADMITTED
            self.waiting -= 1
            self.in_flight += 1
            start = max(now, self._next_start)
            self._next_start = start + self._interval
            admitted.append((ticket, start))
        return admitted

    def _pop(self) -> Ticket:
        """The next waiting ticket: ``FIRST_SHARE`` first connects per other one while
        both classes wait; the class that waits alone otherwise."""
        firsts, others = self._queues[True], self._queues[False]
        for queue in (firsts, others):
            while queue and queue[0].state != WAITING:
                queue.popleft()
        if firsts and (not others or self._firsts_in_row < FIRST_SHARE):
            self._firsts_in_row += 1
            return firsts.popleft()
        if others:
            self._firsts_in_row = 0
            return others.popleft()
        msg = "admission queue counted a waiting ticket it does not hold"
        raise AssertionError(msg)


class Admission:
    """Internal: the queue above behind a lock, with a timer for the spacing.

    ``request`` never blocks; an admitted ticket's ``start`` runs at its start
    time: at once in whichever thread admitted it (the requester, or a handshake
    that released its slot), outside the lock, or later in the timer's thread.
    """

    def __init__(self, max_in_flight: int, max_per_second: float,
                 clock: Callable[[], float] = time.monotonic,
                 call_later: CallLater | None = None,
                 max_waiting: int = MAX_WAITING) -> None:
        self._queue = AdmissionQueue(max_in_flight, max_per_second, max_waiting)
        self._clock = clock
        self._call_later = call_later
        self._lock = new_lock()
        self._pumping = False
        """A thread is in ``_pump``'s loop (guarded by ``_lock``)."""

    @property
    def in_flight(self) -> int:
        """Handshakes admitted and not finished."""
        return self._queue.in_flight

    @property
    def waiting(self) -> int:
        """Handshakes queued for a slot."""
        return self._queue.waiting

    def request(self, start: Callable[[], None], *, first: bool = False) -> Ticket | None:
        """Queue a handshake; ``start()`` is called once it is admitted (maybe at once).

        None when the queue is full (``max_waiting``): the handshake fails.
        """
        ticket = Ticket(start, first=first)
        with self._lock:
            if not self._queue.push(ticket):
                return None
        self._pump()
        return ticket

    def cancel(self, ticket: Ticket) -> bool:
        """Withdraw a waiting request; False if it was admitted already."""
        with self._lock:
            cancelled = self._queue.cancel(ticket)
        if cancelled:
            ticket.start = _spent
        return cancelled

    def release(self) -> None:
        """An admitted handshake finished (either way): let the next one in."""
        with self._lock:
            self._queue.finish()
        self._pump()

    def _pump(self) -> None:
        """Start what may start now, until nothing more may; one thread at a time.

        A start can free its slot at once (no thread to be had: ``release()``
        from inside ``start()``), which pumps again: that call returns, and
        this loop admits the next, so a thousand waiting requests never
        recurse a thousand deep.
        """
        with self._lock:
            if self._pumping:
                return  # the pumping thread's next round admits for this caller too
            self._pumping = True
        try:
            while True:
                now = self._clock()
                with self._lock:
                    admitted = self._queue.admit(now)
                    if not admitted:
                        self._pumping = False
                        return
                for ticket, start_at in admitted:
                    start, ticket.start = ticket.start, _spent
                    if start_at <= now:
                        self._start(start)
                    else:
                        self._later(start_at - now, partial(self._start, start))
        except BaseException:
            with self._lock:
                self._pumping = False
            raise

    def _start(self, start: Callable[[], None]) -> None:
        """Run one admitted ``start``; one that raises gives its slot back, not the rest's."""
        try:
            start()
        except Exception:  # noqa: BLE001 - a bug in one start must not strand the others
            _log.exception("admission_start_failed")
            self.release()

    def _later(self, delay: float, start: Callable[[], None]) -> None:
        if self._call_later is None:
            self._call_later = _shared_timer()
        self._call_later(delay, start)


_timer_lock = threading.Lock()
_timer: CallLater | None = None


def _shared_timer() -> CallLater:
    """One scheduler thread for admissions made without a timer (tests, tools); a
    supervisor's admission uses the supervisor's own scheduler."""
    global _timer  # one per process, made on first use
    with _timer_lock:
        if _timer is None:
            from supervisor._timer import Scheduler  # noqa: PLC0415 - only when needed

            _timer = Scheduler().call_later
        return _timer
