"""``supervisor.aio``: the same supervisor and sessions, awaited from asyncio.

::

    async with AsyncSupervisor.start() as sup:
        session = sup.open(SessionSpec(url=..., protocol="chainlit"))
        await session.resume("thread-1")
        turn = await session.chat("hello")
        async for item in session.events():   # Event and Lifecycle records, in order
            ...

Nothing here blocks the event loop. Each command goes to the session's actor
exactly as ``Session`` sends it (at call time, so calls keep their order), and
its answer comes back through ``loop.call_soon_threadsafe``. Cancelling a task
that awaits a command cancels the wait only: the command goes on in the
session (a Resume still switches the thread), as the session's state belongs
to its actor, not to the awaiting task.

Events and lifecycle reports reach ``session.events()`` through a bounded
buffer (``event_buffer`` per session). When it is full, newer items are
dropped and counted (``supervisor_events_dropped_total``), and the iterator
raises :class:`~supervisor.errors.EventsOverflowed` at the gap, after every
item from before it; iterating again carries on after the gap. The session's
last report (CLOSED or FAILED) is never dropped: it says why the iteration ends.

Supported: asyncio with the thread runtime (the default), and asyncio's
default loop in a gevent-patched process (``gevent.monkey.patch_all()`` first;
uvloop does not cooperate with gevent). ``docs/services.md`` has the loop's
measured worst gaps in both.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, Self, TypeVar

import pykka

from supervisor._futures import CallbackFuture, on_loop, post_to_loop
from supervisor._metrics import MetricsSample
from supervisor._supervisor_actor import FailureCallback
from supervisor.errors import EventsOverflowed
from supervisor.health import Health, HealthThresholds
from supervisor.messages import Event, Lifecycle, LifecycleKind, ResumeResult, SessionState
from supervisor.policy import RestartPolicy
from supervisor.protocols.chat import TurnResult
from supervisor.session import Session
from supervisor.spec import SessionSpec
from supervisor.supervisor import Supervisor

T = TypeVar("T")

Item = Event | Lifecycle
DEFAULT_EVENT_BUFFER = 1024
"""Events and lifecycle reports buffered per session for ``events()``."""

_TERMINAL = (LifecycleKind.CLOSED, LifecycleKind.FAILED)


def _checked_buffer(limit: int) -> int:
    """``limit`` if it can bound an event buffer; ``ValueError`` before anything starts."""
    if limit < 1:
        msg = f"event_buffer must be at least 1, got {limit}"
        raise ValueError(msg)
    return limit


class _Gap:
    """Where items were dropped, and how many (internal)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 1


class EventStream:
    """One session's events and lifecycle reports, as an async iterator (bounded).

    Filled from the session's actor thread, read on the event loop by one
    consumer at a time. It ends after the session's CLOSED or FAILED report.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int,
                 on_drop: Callable[[int], None]) -> None:
        self._loop = loop
        self._limit = _checked_buffer(limit)
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._items: deque[Item | _Gap] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def put(self, item: Item) -> None:
        """Add ``item`` (any thread); never blocks: a full buffer drops and counts it.

        The terminal report (CLOSED or FAILED) is always kept, so the consumer
        learns why the iteration ends: the bound is ``limit`` items, one gap and
        that one report.
        """
        dropped = False
        with self._lock:
            if self._closed:
                return
            terminal = isinstance(item, Lifecycle) and item.kind in _TERMINAL
            if terminal or len(self._items) < self._limit:
                self._items.append(item)
            else:
                dropped = True
                last = self._items[-1]
                if isinstance(last, _Gap):
                    last.count += 1
                else:
                    self._items.append(_Gap())
            if terminal:
                self._closed = True
            waiter, self._waiter = self._waiter, None
        if dropped:
            self._on_drop(1)
        if waiter is not None:
            post_to_loop(self._loop, _wake, waiter)

    def close(self) -> None:
        """End the iteration once the buffered items are read (any thread)."""
        with self._lock:
            self._closed = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            post_to_loop(self._loop, _wake, waiter)

    def __len__(self) -> int:
        return len(self._items)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item:
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    break
                if self._closed:
                    raise StopAsyncIteration
                waiter = self._waiter = self._loop.create_future()
            await waiter
        if isinstance(item, _Gap):
            raise EventsOverflowed(item.count)
        return item


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AsyncSession:
    """An asyncio handle to one supervised session; every command returns an awaitable."""

    __slots__ = ("_events", "_loop", "_session")

    def __init__(self, session: Session, loop: asyncio.AbstractEventLoop,
                 events: EventStream) -> None:
        self._session = session
        self._loop = loop
        self._events = events

    @property
    def id(self) -> str:
        return self._session.id

    @property
    def spec(self) -> SessionSpec:
        return self._session.spec

    @property
    def sync(self) -> Session:
        """The thread-safe ``Session`` handle behind this one."""
        return self._session

    def _awaitable(self, future: pykka.Future[T]) -> asyncio.Future[T]:
        if not isinstance(future, CallbackFuture):
            msg = "supervisor.aio needs futures made by supervisor._futures.new_future()"
            raise TypeError(msg)
        return on_loop(future, self._loop)

    def resume(self, thread_id: str | None, *,
               timeout: float | None = None) -> asyncio.Future[ResumeResult]:
        """Switch to ``thread_id``; resolves once connected for it (or as superseded).

        ``timeout`` overrides ``SessionSpec.resume_timeout`` (``ResumeTimeout``)."""
        return self._awaitable(self._session.resume(thread_id, timeout=timeout))

    def send(self, data: str | bytes, *, timeout: float | None = None) -> asyncio.Future[None]:
        """Send one frame; resolves once written (``SendTimeout`` past ``timeout``)."""
        return self._awaitable(self._session.send(data, timeout=timeout))

    def emit(self, event: str, data: Any = None, *,
             timeout: float | None = None) -> asyncio.Future[None]:
        """Emit a Socket.IO event; resolves once written (``SendTimeout`` past ``timeout``)."""
        return self._awaitable(self._session.emit(event, data, timeout=timeout))

    def call(self, event: str, data: Any = None, *,
             timeout: float | None = None) -> asyncio.Future[Any]:
        """Emit a Socket.IO event; resolves with the server's acknowledgement
        (``ReplyTimeout`` past ``timeout``)."""
        return self._awaitable(self._session.call(event, data, timeout=timeout))

    def chat(self, text: str, *, timeout: float | None = None) -> asyncio.Future[TurnResult]:
        """Chainlit: send ``text``; resolves with the reply turn once it ends
        (``ReplyTimeout`` past ``timeout``)."""
        return self._awaitable(self._session.chat(text, timeout=timeout))

    def close(self) -> asyncio.Future[None]:
        """Close the session for good; resolves once the socket is closed."""
        return self._awaitable(self._session.close())

    def state(self) -> SessionState:
        """The latest published snapshot (never waits)."""
        return self._session.state()

    def events(self) -> EventStream:
        """``Event`` and ``Lifecycle`` records in the order the session handled them.

        One consumer at a time. Ends after the session closes or fails; raises
        ``EventsOverflowed`` where the bounded buffer had to drop items.
        """
        return self._events

    def __repr__(self) -> str:
        return f"<AsyncSession {self._session!r}>"


class AsyncSupervisor:
    """An asyncio face on a :class:`~supervisor.Supervisor`; an async context manager."""

    def __init__(self, supervisor: Supervisor, event_buffer: int = DEFAULT_EVENT_BUFFER) -> None:
        self._sup = supervisor
        self._event_buffer = _checked_buffer(event_buffer)
        self._streams: dict[str, EventStream] = {}

    @classmethod
    def start(cls, policy: RestartPolicy | None = None, *,
              on_session_failed: FailureCallback | None = None,
              event_buffer: int = DEFAULT_EVENT_BUFFER) -> AsyncSupervisor:
        """Start a supervisor (its actor thread starts at once; nothing is awaited).

        ``event_buffer`` (at least 1, else ``ValueError``) bounds each session's
        ``events()`` buffer unless ``open()`` says otherwise."""
        _checked_buffer(event_buffer)  # before a supervisor starts that nobody would stop
        return cls(Supervisor.start(policy, on_session_failed=on_session_failed), event_buffer)

    @property
    def supervisor(self) -> Supervisor:
        """The synchronous supervisor behind this one."""
        return self._sup

    def open(self, spec: SessionSpec, *, event_buffer: int | None = None) -> AsyncSession:
        """Open a session on the running loop; it connects at once, nothing is awaited.

        ``event_buffer``: this session's bound for ``events()`` (at least 1, else
        ``ValueError`` before anything opens); None, the supervisor's."""
        loop = asyncio.get_running_loop()
        session_id = spec.session_id
        limit = self._event_buffer if event_buffer is None else event_buffer
        stream = EventStream(loop, limit, self._sup._tap.count_events_dropped)
        user_event, user_lifecycle = spec.on_event, spec.on_lifecycle

        def on_event(event: Event) -> Any:
            stream.put(event)
            return None if user_event is None else user_event(event)

        def on_lifecycle(report: Lifecycle) -> Any:
            stream.put(report)
            if report.kind in _TERMINAL:
                self._streams.pop(session_id, None)
            return None if user_lifecycle is None else user_lifecycle(report)

        # Registered before the session exists: its terminal report, however
        # early, unregisters it, and stop() closes it if none comes.
        self._streams[session_id] = stream
        try:
            session = self._sup.open(replace(spec, on_event=on_event, on_lifecycle=on_lifecycle))
        except BaseException:
            if self._streams.get(session_id) is stream:
                del self._streams[session_id]
            raise
        return AsyncSession(session, loop, stream)

    def metrics(self) -> MetricsSample:
        """Counters and session totals (never waits on an actor)."""
        return self._sup.metrics()

    def health(self, thresholds: HealthThresholds | None = None) -> Health:
        """Healthy or not, and why (never waits on an actor)."""
        return self._sup.health(thresholds)

    async def stop(self, timeout: float = 10.0) -> None:
        """Close every session and stop, in a worker thread; bounded by ``timeout``."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, lambda: self._sup.stop(timeout))
        finally:
            for stream in list(self._streams.values()):
                stream.close()
            self._streams.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<AsyncSupervisor {self._sup!r}>"


__all__ = ["AsyncSession", "AsyncSupervisor", "EventStream", "EventsOverflowed"]
