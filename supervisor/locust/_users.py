"""Locust users that each drive one supervised chat session.

The scenario is ``supervisor loadtest``'s own
(:class:`~supervisor.loadtest.driver.Driver`): log in, connect, chat turns,
and every ``--resume-every`` seconds a thread switch with Resume. Locust paces
it: the default task plays one step (a resume when one is due, else a turn)
and ``wait_time`` is ``--think-time``. A subclass that declares its own tasks
replaces the default one and talks to ``self.session`` (a
:class:`ChatSession`), whose ``chat``, ``turn`` and ``resume`` are measured.

Every measured step fires a Locust request event with its real duration:
``connect`` (each completed handshake), ``resume``, ``first_token`` and
``turn``, with the protocol as the request type; failures carry the typed
error (``ReplyTimeout``, ``HandshakeRefused``, ``Timeout`` ...).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar, cast

import pykka
from locust import User, task
from locust.exception import StopUser

from supervisor.errors import SupervisorError
from supervisor.loadtest.driver import FAILED_TURN_PAUSE_S, Cancelled, Driver, RunContext
from supervisor.loadtest.metrics import Metrics
from supervisor.loadtest.target import session_url
from supervisor.locust import _plugin  # noqa: F401 - registers our Locust event listeners
from supervisor.locust._engine import Engine, engine_for
from supervisor.messages import Lifecycle, LifecycleKind, ResumeResult, SessionStatus
from supervisor.protocols.chat import TurnResult
from supervisor.session import Session

T = TypeVar("T")

REQUEST_NAMES = ("connect", "resume", "first_token", "turn")
"""The latencies reported to Locust as requests (one name each)."""

_FAILURE_TYPES: dict[str, type[Exception]] = {}


def failure(kind: str, message: str) -> Exception:
    """An exception named ``kind`` (an error type name from a lifecycle event)."""
    name = kind if kind.isidentifier() else "ConnectError"
    if name not in _FAILURE_TYPES and len(_FAILURE_TYPES) < 100:
        _FAILURE_TYPES[name] = type(name, (Exception,), {"__module__": __name__})
    return _FAILURE_TYPES.get(name, Exception)(message)


class RequestEvents:
    """Fires Locust request events for one protocol."""

    __slots__ = ("_fire", "_protocol")

    def __init__(self, environment: Any, protocol: str) -> None:
        self._fire = environment.events.request.fire
        self._protocol = protocol

    def success(self, name: str, seconds: float, length: int = 0) -> None:
        self._fire(request_type=self._protocol, name=name, response_time=seconds * 1000.0,
                   response_length=length, exception=None, context={})

    def failure(self, name: str, seconds: float, exc: BaseException) -> None:
        self._fire(request_type=self._protocol, name=name, response_time=seconds * 1000.0,
                   response_length=0, exception=exc, context={})


class _Tap:
    """The process's metrics, seen by one driver: request latencies also go to Locust."""

    __slots__ = ("_events", "_metrics")

    def __init__(self, metrics: Metrics, events: RequestEvents) -> None:
        self._metrics = metrics
        self._events = events

    def record(self, name: str, seconds: float) -> None:
        self._metrics.record(name, seconds)
        if name in REQUEST_NAMES:
            self._events.success(name, seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metrics, name)


class LocustDriver(Driver):
    """The load test's driver, stepped by Locust tasks, its failures reported to Locust."""

    def __init__(self, ctx: RunContext, number: int, engine: Engine, events: RequestEvents,
                 rng: Any) -> None:
        super().__init__(ctx, number, rng)
        self.engine = engine
        self.events = events
        self.last_value: Any = None
        self._op_started = ctx.clock()
        self._connecting: dict[int, float] = {}
        every = ctx.config.resume_every if ctx.config.threads_per_session > 1 else 0.0
        self._every = every
        self._next_resume = math.inf

    # --- hooks into the load test's driver ----------------------------------------

    def on_lifecycle(self, event: Lifecycle) -> None:
        super().on_lifecycle(event)
        if event.kind is LifecycleKind.CONNECTING:
            self._connecting[event.generation] = event.at
            return
        began = self._connecting.pop(event.generation, None)
        if event.kind is LifecycleKind.LOST and began is not None:  # the handshake failed
            self.events.failure("connect", max(0.0, event.at - began), failure(
                event.error or "ConnectError", event.reason or "handshake failed"))

    def _wait(self, future: pykka.Future[T], limit: float) -> T:
        value = super()._wait(future, limit)
        self.last_value = value
        return value

    def _failed(self, what: str, exc: BaseException) -> None:
        super()._failed(what, exc)
        self.events.failure(what, self.ctx.clock() - self._op_started, exc)

    # --- what the user's tasks call ------------------------------------------------

    def begin(self) -> bool:
        """Log in, open the session and wait for its first connect; False if it never does."""
        ctx, metrics = self.ctx, self.ctx.metrics
        metrics.session_started()
        started = ctx.clock()
        try:
            cookies = ctx.credentials(self.number)
        except SupervisorError as exc:
            metrics.error(f"login_{type(exc).__name__}")
            metrics.session_failed(self.session_id, f"login failed: {exc}")
            self.events.failure("connect", ctx.clock() - started, exc)
            return False
        self.session = ctx.supervisor.open(self._spec(cookies))
        connected = self._connect_first(self.session)
        if self._every:
            self._next_resume = ctx.clock() + self.rng.uniform(0.0, self._every)
        return connected

    def step(self) -> None:
        """One step of the scenario: a resume when due, else a turn (while turns are left)."""
        session = self._live()
        now = self.ctx.clock()
        if now >= self._next_resume:
            self.resume_next()
            self._next_resume = self.ctx.clock() + self._every
            return
        config = self.ctx.config
        if config.turns == 0 or self._turns_done < config.turns:
            if not self._measured(lambda: self._turn(session)):
                self.ctx.stop.wait(FAILED_TURN_PAUSE_S)
        else:  # every turn played: only resumes are left, or nothing
            self.ctx.stop.wait(min(max(0.0, self._next_resume - now), 1.0))

    def resume_next(self) -> None:
        """Switch to the session's next thread (the load test's rotation)."""
        session = self._live()
        self._measured(lambda: self._resume(session))

    def resume_to(self, thread_id: str) -> ResumeResult | None:
        """Switch to ``thread_id``; its result, or None when it failed (reported to Locust)."""
        session = self._live()
        saved = self.threads, self._thread_index
        self.threads, self._thread_index = [thread_id], 0
        self.last_value = None
        try:
            self._measured(lambda: self._resume(session))
        finally:
            self.threads, self._thread_index = saved
        value = self.last_value
        return value if isinstance(value, ResumeResult) else None

    def measured_turn(self, message: str | None = None) -> bool:
        """One measured chat turn with ``message`` (default ``--message``); False if it failed."""
        session = self._live()
        config = self.ctx.config
        if message is not None and message != config.message:
            self.ctx.config = dataclasses.replace(config, message=message)
        self.last_value = None
        try:
            return self._measured(lambda: self._turn(session))
        finally:
            self.ctx.config = config

    def end(self) -> None:
        """Stop waiting and close the session (not waited for: Locust is stopping us)."""
        self.ctx.stop.set()
        session = self.session
        if session is not None:
            self.engine.metrics.stale_frames_dropped += session.state().stale_frames_dropped
            session.close()

    def _measured(self, action: Any) -> bool:
        self._op_started = self.ctx.clock()
        try:
            return action() is not False
        except Cancelled:
            raise StopUser from None

    def _live(self) -> Session:
        session = self.session
        if session is None or session.state().status is SessionStatus.FAILED:
            raise StopUser
        return session


class ChatSession:
    """``self.session`` of a supervised user: measured chat calls on top of the session.

    ``chat``, ``turn`` and ``resume`` block (bounded by ``--turn-timeout`` and
    ``--connect-timeout``), record into the run's chat metrics and fire Locust
    request events; on failure they return None or False (the failure is
    already reported). ``emit``, ``send``, ``call`` and ``state`` are the
    session's own (futures, unmeasured); ``raw`` is the
    :class:`~supervisor.Session` itself.
    """

    __slots__ = ("_driver",)

    def __init__(self, driver: LocustDriver) -> None:
        self._driver = driver

    @property
    def raw(self) -> Session:
        session = self._driver.session
        if session is None:
            raise StopUser
        return session

    @property
    def id(self) -> str:
        return self._driver.session_id

    @property
    def threads(self) -> list[str]:
        """The thread ids this session's default scenario cycles through."""
        return list(self._driver.threads)

    def chat(self, text: str | None = None) -> TurnResult | None:
        """Chainlit: one measured turn; the reply, or None when the turn failed."""
        if self._driver.ctx.config.protocol != "chainlit":
            msg = "chat() needs a Chainlit session; use turn() for socketio and websocket"
            raise TypeError(msg)
        ok = self._driver.measured_turn(text)
        value = self._driver.last_value
        return value if ok and isinstance(value, TurnResult) else None

    def turn(self, text: str | None = None) -> bool:
        """One measured turn in any protocol (websocket, socketio: until the reply)."""
        return self._driver.measured_turn(text)

    def resume(self, thread_id: str | None = None) -> ResumeResult | None:
        """Switch threads (measured): to ``thread_id``, or the scenario's next thread."""
        if thread_id is None:
            self._driver.resume_next()
            value = self._driver.last_value
            return value if isinstance(value, ResumeResult) else None
        return self._driver.resume_to(thread_id)

    def emit(self, event: str, data: Any = None) -> pykka.Future[None]:
        return self.raw.emit(event, data)

    def send(self, data: str | bytes) -> pykka.Future[None]:
        return self.raw.send(data)

    def call(self, event: str, data: Any = None) -> pykka.Future[Any]:
        return self.raw.call(event, data)

    def state(self) -> Any:
        return self.raw.state()


class SupervisedUser(User):
    """A Locust user driving one supervised session (base class; see the protocol classes).

    Class attributes: ``protocol``, and ``options``, a mapping of
    ``supervisor loadtest`` option names (underscores) to values, e.g.
    ``options = {"message": "hi", "resume_every": 10}``; command-line options
    override them.
    """

    abstract = True
    protocol: ClassVar[str] = "chainlit"
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        engine = engine_for(environment)
        settings = engine.settings(type(self), environment)
        self.config = settings.config
        events = RequestEvents(environment, self.config.protocol)
        number = engine.next_number()
        ctx = RunContext(config=self.config, metrics=_metrics_view(engine.metrics, events),
                         supervisor=engine.supervisor,
                         session_url=session_url(self.config, settings.base_url),
                         stop=threading.Event(), deadline=math.inf,
                         credentials=engine.credentials(settings), clock=time.monotonic)
        self.driver = LocustDriver(ctx, number, engine, events, engine.rng(settings, number))
        self.session = ChatSession(self.driver)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Locust merges inherited tasks with a subclass's own: a subclass that
        # declares tasks of its own means them instead of the default step.
        super().__init_subclass__(**kwargs)
        own = [item for item in cls.tasks if item is not SupervisedUser.step]
        if own:
            cls.tasks = own

    def wait_time(self) -> float:
        """``--think-time`` between tasks (override as with any Locust user)."""
        return float(self.config.think_time)

    def on_start(self) -> None:
        # A session that never connects stops its user at the first step (StopUser
        # raised from on_start would be logged by Locust as an error with a traceback).
        self.driver.begin()

    def on_stop(self) -> None:
        self.driver.end()

    @task
    def step(self) -> None:
        """The default scenario's step: a resume when due, else a chat turn."""
        self.driver.step()


def _metrics_view(metrics: Metrics, events: RequestEvents) -> Metrics:
    # Duck-typed: the driver only calls Metrics' recording methods on it.
    return cast("Metrics", _Tap(metrics, events))


class ChainlitUser(SupervisedUser):
    """A Chainlit chat user: ``--host http(s)://HOST:PORT`` of the Chainlit app."""

    abstract = True
    protocol = "chainlit"


class SocketIOUser(SupervisedUser):
    """A Socket.IO chat user: ``--host`` is the server's URL with its Engine.IO path."""

    abstract = True
    protocol = "socketio"


class WebSocketUser(SupervisedUser):
    """A plain WebSocket chat user: ``--host ws(s)://HOST:PORT/PATH``."""

    abstract = True
    protocol = "websocket"
