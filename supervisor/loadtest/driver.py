"""One session's load: connect, chat turns, resumes, until the run ends.

A driver is one thread per session (a greenlet under gevent): the session's
actor does the I/O, the driver only waits on its futures, so it costs little
and reads as the scenario it plays. Every loop is bounded by a step count and
by the run's deadline, and every wait by a timeout and by that deadline.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pykka

from supervisor.errors import SessionClosed, SessionFailed, SupervisorError
from supervisor.loadtest.config import LoadTestConfig
from supervisor.loadtest.metrics import Metrics
from supervisor.messages import Event, Lifecycle, LifecycleKind, SessionStatus
from supervisor.protocols.chainlit import auth_payload
from supervisor.protocols.chat import TurnResult, user_message
from supervisor.session import Session
from supervisor.spec import ProtocolName, SessionSpec
from supervisor.supervisor import Supervisor

T = TypeVar("T")

STEPS_PER_SECOND = 1000
"""Safety bound on a driver's loop: at most this many steps per second of the run."""

FAILED_TURN_PAUSE_S = 0.5
"""Least pause after a failed turn."""

INBOX_LIMIT = 1000
"""Inbound events a driver keeps while waiting for a reply (the rest are dropped)."""


class Cancelled(Exception):
    """The run ended (deadline or Ctrl-C) while the driver waited: not an error."""


@dataclass(slots=True)
class RunContext:
    """What every driver shares: settings, metrics, the supervisor, the clock."""

    config: LoadTestConfig
    metrics: Metrics
    supervisor: Supervisor
    session_url: str
    stop: threading.Event
    """Set when the run ends (deadline or Ctrl-C)."""
    deadline: float
    credentials: Callable[[int], dict[str, str]]
    """Cookies for session ``n`` (1-based); raises SupervisorError when login fails."""
    clock: Callable[[], float] = time.monotonic

    def remaining(self) -> float:
        return self.deadline - self.clock()

    @property
    def ending(self) -> bool:
        return self.stop.is_set() or self.clock() >= self.deadline


def new_thread_id(rng: random.Random) -> str:
    """A UUID v4 string drawn from ``rng`` (reproducible with ``--seed``).

    Chainlit creates a thread under the id the client connected with, on its
    first message, so the ids we make are the threads we later resume.
    """
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(slots=True)
class _Inbox:
    """Inbound events of the turn in flight (websocket and socketio)."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    events: list[Event] = field(default_factory=list)
    listening: bool = False


class Driver:
    """Plays one session's scenario; :meth:`run` is the thread's body."""

    def __init__(self, ctx: RunContext, number: int, rng: random.Random) -> None:
        self.ctx = ctx
        self.number = number
        self.rng = rng
        config = ctx.config
        self.threads = [new_thread_id(rng) for _ in range(config.threads_per_session)]
        self.session: Session | None = None
        self.session_id = f"lt{number:05d}"
        self._thread_index = 0
        self._inbox = _Inbox()
        # generation -> (when connected, seconds spent confirming the thread)
        self._connected: dict[int, tuple[float, float | None]] = {}
        self._turns_done = 0

    # --- callbacks (run in the session's actor: keep them short) ----------------

    def on_lifecycle(self, event: Lifecycle) -> None:
        metrics, kind = self.ctx.metrics, event.kind
        if kind is LifecycleKind.CONNECTING:
            metrics.count("handshakes")
            metrics.session_disconnected(self.session_id)  # the old connection is gone
        elif kind is LifecycleKind.CONNECTED:
            timings = event.timings
            metrics.count("connects")
            metrics.session_connected(self.session_id)
            if "total" in timings:
                metrics.record("connect", timings["total"])
            for phase in ("upgrade", "open", "namespace"):
                if phase in timings:
                    metrics.record(f"connect_{phase}", timings[phase])
            self._connected[event.generation] = (event.at, timings.get("thread"))
        elif kind is LifecycleKind.LOST:
            metrics.session_disconnected(self.session_id)
            reason = event.reason or event.error or "connection lost"
            metrics.reconnect(reason)
            metrics.note_failure_reason(reason)
        elif kind is LifecycleKind.RESTART:
            metrics.count("restarts")
        elif kind is LifecycleKind.FAILED:
            metrics.session_failed(self.session_id, event.reason)
            if not self.ctx.ending:
                metrics.error("session_failed")
        else:
            metrics.session_disconnected(self.session_id)

    def on_event(self, event: Event) -> None:
        inbox = self._inbox
        with inbox.cond:
            if inbox.listening and len(inbox.events) < INBOX_LIMIT:
                inbox.events.append(event)
                inbox.cond.notify()

    # --- the scenario -----------------------------------------------------------

    def run(self) -> None:
        """Open the session and play turns and resumes until the run ends."""
        try:
            self._run()
        except Cancelled:
            pass
        except Exception as exc:  # noqa: BLE001 - one driver's bug must not end the run
            self.ctx.metrics.error(f"driver_{type(exc).__name__}")

    def _spec(self, cookies: dict[str, str]) -> SessionSpec:
        config = self.ctx.config
        extra: dict[str, Any] = {}
        if config.protocol != "chainlit":
            extra["on_event"] = self.on_event
        if config.protocol == "socketio" and config.emit_event == "client_message":
            # A Chainlit server wants Chainlit's auth payload even from a raw client,
            # made per handshake so each Resume names its own thread and session.
            extra["auth"] = auth_payload
        if config.protocol == "chainlit":
            extra["confirm_resume"] = config.confirm_resume
        protocol = cast("ProtocolName", config.protocol)  # validated: one of PROTOCOLS
        return SessionSpec(url=self.ctx.session_url, protocol=protocol,
                           thread_id=self.threads[0], cookies=cookies,
                           on_lifecycle=self.on_lifecycle, session_id=self.session_id,
                           connect_timeout=config.connect_timeout, **extra)

    def _run(self) -> None:
        ctx, config, metrics = self.ctx, self.ctx.config, self.ctx.metrics
        metrics.session_started()
        try:
            cookies = ctx.credentials(self.number)
        except SupervisorError as exc:
            metrics.error(f"login_{type(exc).__name__}")
            metrics.session_failed(self.session_id, f"login failed: {exc}")
            return
        self.session = session = ctx.supervisor.open(self._spec(cookies))
        if not self._connect_first(session):
            return
        every = config.resume_every if config.threads_per_session > 1 else 0.0
        now = ctx.clock()
        # Each session's first resume falls at a random point of the first
        # period, so resumes are spread out instead of arriving in waves.
        next_resume = now + self.rng.uniform(0.0, every) if every else float("inf")
        think_until = now
        max_steps = int(config.duration * STEPS_PER_SECOND) + 100
        for _ in range(max_steps):
            if ctx.ending or session.state().status is SessionStatus.FAILED:
                return
            now = ctx.clock()
            turns_left = config.turns == 0 or self._turns_done < config.turns
            if now >= next_resume:
                self._resume(session)
                next_resume = ctx.clock() + every
            elif turns_left and now >= think_until:
                ok = self._turn(session)
                # After a failure, pause a little even without think time, so a
                # broken session does not spin through failing turns.
                pause = config.think_time if ok else max(config.think_time, FAILED_TURN_PAUSE_S)
                think_until = ctx.clock() + pause
            else:
                until = min(next_resume, think_until if turns_left else float("inf"),
                            ctx.deadline)
                ctx.stop.wait(max(0.0, until - now))

    def _connect_first(self, session: Session) -> bool:
        """Wait until the session first connects; False if it never does in time."""
        config = self.ctx.config
        future = session.resume(self.threads[0])
        try:
            self._wait(future, config.connect_timeout * 3)
        except Cancelled:
            return False
        except pykka.Timeout:
            return not self.ctx.ending  # still retrying: go on, turns wait for it
        except SupervisorError:
            return False  # failed: counted by on_lifecycle
        return True

    def _wait(self, future: pykka.Future[T], limit: float) -> T:
        """``future``'s value within ``limit`` seconds, cut short by the run's end.

        Raises :class:`Cancelled` when the run ended first (or closed the
        session), ``pykka.Timeout`` when ``limit`` passed, else the future's error.
        """
        remaining = self.ctx.remaining()
        wait = min(limit, max(0.0, remaining))
        try:
            return future.get(timeout=wait)
        except pykka.Timeout:
            if wait < limit or self.ctx.stop.is_set():
                raise Cancelled from None
            raise
        except SupervisorError as exc:
            if self.ctx.ending or isinstance(exc, SessionClosed):
                raise Cancelled from None
            raise

    def _failed(self, what: str, exc: BaseException) -> None:
        kind = "timeout" if isinstance(exc, pykka.Timeout) else type(exc).__name__
        self.ctx.metrics.error(f"{what}_{kind}")

    # --- resume -----------------------------------------------------------------

    def _resume(self, session: Session) -> None:
        metrics = self.ctx.metrics
        self._thread_index = (self._thread_index + 1) % len(self.threads)
        started = self.ctx.clock()
        future = session.resume(self.threads[self._thread_index])
        try:
            result = self._wait(future, self.ctx.config.connect_timeout + 5.0)
        except (pykka.Timeout, SupervisorError) as exc:
            if isinstance(exc, SessionFailed):
                return  # counted once, as session_failed
            self._failed("resume", exc)
            return
        if result.superseded:
            return
        connected_at, thread_phase = self._connected.get(result.generation,
                                                         (self.ctx.clock(), None))
        confirmed = connected_at - started
        metrics.count("resumes")
        metrics.record("resume", confirmed - (thread_phase or 0.0))
        if result.found is not None:
            metrics.record("resume_confirmed", confirmed)
            if not result.found:
                metrics.count("threads_not_found")

    # --- turns ------------------------------------------------------------------

    def _turn(self, session: Session) -> bool:
        """One turn; False when it failed."""
        metrics = self.ctx.metrics
        self._turns_done += 1
        metrics.count("messages_sent")
        try:
            if self.ctx.config.protocol == "chainlit":
                self._chainlit_turn(session)
            else:
                self._reply_turn(session)
        except Cancelled:
            metrics.count("turns_cancelled")
            raise
        except (pykka.Timeout, SupervisorError) as exc:
            if isinstance(exc, SessionFailed):
                metrics.count("turns_cancelled")
                return False
            metrics.count("turns_failed")
            self._failed("turn", exc)
            return False
        metrics.count("turns")
        return True

    def _chainlit_turn(self, session: Session) -> None:
        result: TurnResult = self._wait(session.chat(self.ctx.config.message),
                                        self.ctx.config.turn_timeout)
        metrics = self.ctx.metrics
        if result.first_token_s is not None:
            metrics.count("replies")
            metrics.record("first_token", result.first_token_s)
        if result.turn_s is not None:
            metrics.record("turn", result.turn_s)
        if result.token_gaps_s:
            metrics.record_many("token_gap", result.token_gaps_s)
        metrics.count("tokens", result.tokens)

    def _reply_turn(self, session: Session) -> None:
        """websocket / socketio: send, then wait for the reply event."""
        config, inbox = self.ctx.config, self._inbox
        with inbox.cond:
            inbox.events.clear()
            inbox.listening = True
        try:
            started = self.ctx.clock()
            if config.protocol == "websocket":
                written = session.send(config.message)
            else:
                written = session.emit(config.emit_event or "message", self._payload(session))
            first, reply = self._await_reply(config.reply_event, config.turn_timeout, started)
        finally:
            with inbox.cond:
                inbox.listening = False
        if reply is None:
            # No reply: report why the frame never went out, if it did not.
            self._wait(written, 0.0)
            raise pykka.Timeout(f"no reply within {config.turn_timeout:g}s")
        metrics = self.ctx.metrics
        metrics.count("replies")
        metrics.record("first_token", first.received_at - started if first else 0.0)
        metrics.record("turn", reply.received_at - started)
        if config.protocol == "websocket":
            self._check_echo(reply)

    def _payload(self, session: Session) -> Any:
        config = self.ctx.config
        if config.emit_event != "client_message":
            return config.message
        thread = session.state().thread_id
        return user_message(config.message, thread, str(uuid.uuid4()), time.time())

    def _await_reply(self, name: str | None, limit: float,
                     started: float) -> tuple[Event | None, Event | None]:
        """The first inbound event and the reply (``name``, or any); bounded."""
        inbox = self._inbox
        end = min(started + limit, self.ctx.deadline)
        first: Event | None = None
        with inbox.cond:
            # Each pass either finds the reply, or waited: for an event (at most
            # INBOX_LIMIT are kept) or for a quarter second.
            for _ in range(INBOX_LIMIT + int(limit * 4) + 2):
                if inbox.events:
                    first = first or inbox.events[0]
                    for event in inbox.events:
                        if name is None or event.name == name:
                            return first, event
                remaining = end - self.ctx.clock()
                if remaining <= 0 or self.ctx.stop.is_set():
                    break
                inbox.cond.wait(min(remaining, 0.25))
        if self.ctx.ending:
            raise Cancelled
        return first, None

    def _check_echo(self, reply: Event) -> None:
        """The embedded echo names the thread its connection carried: it must match (I4)."""
        if not isinstance(reply.data, str) or not reply.data.startswith("{"):
            return
        try:
            echoed = json.loads(reply.data)
        except ValueError:
            return
        if isinstance(echoed, dict) and "thread" in echoed and echoed["thread"] != (
                reply.thread_id or ""):
            self.ctx.metrics.error("cross_talk")
