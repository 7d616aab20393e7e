"""One session's load: connect, chat turns, resumes, until the run ends.

A driver is one thread per session (a greenlet under gevent): the session's
actor does the I/O, the driver only waits on its futures, so it costs little
and reads as the scenario it plays. Every loop is bounded by a step count and
by the run's deadline, and every wait by a timeout and by that deadline.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pykka

from supervisor.errors import (
    HandshakeRefused,
    ProtocolRefused,
    SessionClosed,
    SessionFailed,
    SupervisorError,
)
from supervisor.loadtest.config import LoadTestConfig
from supervisor.loadtest.conversations import Conversation, Conversations, ScenarioFunction
from supervisor.loadtest.metrics import Metrics
from supervisor.loadtest.scenario import ScenarioSession
from supervisor.loadtest.shape import next_resume
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

CONNECTS_KEPT = 4
"""Connections a driver remembers (when each connected): a lost connection and a
Resume's result name one of the latest; a thread switch every few seconds for
hours must not grow the record."""


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
    start: float = 0.0
    """When the run began (``clock()``): the origin of every session's resume grid."""
    conversations: Conversations | None = None
    """What sessions say (``--messages``, else ``--message``)."""
    scenario: ScenarioFunction | None = None
    """The user's scenario hook (``--scenario``), called for each turn instead."""
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
        config = ctx.config
        self.threads = [new_thread_id(rng) for _ in range(config.threads_per_session)]
        # A Random is 2.5 KiB: only a seed is kept, for the draws a few runs make
        # (--messages, a scenario's rng), reproducible all the same.
        self._seed = rng.getrandbits(64)
        self._rng: random.Random | None = None
        self.session: Session | None = None
        self.session_id = f"lt{number:05d}"
        self._thread_index = 0
        # Chainlit turns read the session's chat(); only replies to a send or an emit
        # are awaited here (a Condition and its deque: 1.4 KiB per session otherwise).
        self._inbox = _Inbox() if config.protocol != "chainlit" else None
        # generation -> (when connected, seconds spent confirming the thread)
        self._connected: dict[int, tuple[float, float | None]] = {}
        self._turns_done = 0
        self.retired = threading.Event()
        """Set when the load shape wants one session fewer: this one closes and ends."""
        self._woken = threading.Event()
        """Set when the driver must stop waiting: retired, or the run ended (:meth:`wake`)."""
        self._conversation: Conversation = ()
        self._prompt_index = 0
        # A connection lost, not yet counted: counted once, as the failure of the
        # turn or resume in flight, as the session's failure, or as itself.
        self._books = threading.Lock()
        self._in_flight = False
        self._loss: tuple[str, str] | None = None

    # --- callbacks (run in the session's actor: keep them short) ----------------

    def on_lifecycle(self, event: Lifecycle) -> None:
        metrics, kind = self.ctx.metrics, event.kind
        if kind is LifecycleKind.CONNECTING:
            metrics.count("handshakes")
            if event.cause != "resume":
                # A connect or restart: nothing is open. A thread switch, whoever asked
                # for it, holds a connection throughout (the old one closing, the new one
                # opening, as the OS sees it): still connected, unless the switch fails.
                metrics.session_disconnected(self.session_id)
        elif kind is LifecycleKind.CONNECTED:
            if not self.ctx.ending:  # not a handshake finishing while the sessions close
                self._on_connected(event)
        elif kind is LifecycleKind.LOST:
            self._on_lost(event)
        elif kind is LifecycleKind.RESTART:
            metrics.count("restarts")
            with self._books:
                if not self._in_flight:
                    self._count_loss()
        elif kind is LifecycleKind.FAILED:
            metrics.session_failed(self.session_id, event.reason)
            with self._books:
                self._loss = None  # the session's failure is what counts
            if not self.ctx.ending:
                metrics.error("session_failed", event.reason or event.error or "gave up")
        else:
            metrics.session_disconnected(self.session_id)

    def _on_connected(self, event: Lifecycle) -> None:
        metrics, timings = self.ctx.metrics, event.timings
        metrics.count("connects")
        metrics.session_connected(self.session_id)
        if "total" in timings:
            metrics.record("connect", timings["total"])
            if "admission" in timings:  # our queue, then the server's time
                metrics.record("admission_wait", timings["admission"])
                metrics.record("handshake", timings["total"] - timings["admission"])
        for phase in ("upgrade", "open", "namespace"):
            if phase in timings:
                metrics.record(f"connect_{phase}", timings[phase])
        connected = self._connected
        connected[event.generation] = (event.at, timings.get("thread"))
        if len(connected) > CONNECTS_KEPT:  # generations only grow: the first is the oldest
            del connected[next(iter(connected))]

    def _on_lost(self, event: Lifecycle) -> None:
        metrics = self.ctx.metrics
        metrics.session_disconnected(self.session_id)
        if self.ctx.ending:
            return  # closing at the end (a target stopping says 1012): not the run's
        reason = event.reason or event.error or "connection lost"
        metrics.reconnect(reason)
        metrics.note_failure_reason(reason, event.error)
        if not self.retired.is_set():
            if event.generation not in self._connected:
                metrics.session_handshake_failed(self.session_id)
            self._lost(event, reason)

    def _lost(self, event: Lifecycle, reason: str) -> None:
        """Note a lost connection or failed handshake; counted later, once."""
        if event.generation in self._connected:
            kind = "connection_lost"
        elif "timeout" in f"{event.error} {reason}".lower().replace(" ", "").replace(
                "timedout", "timeout"):
            kind = "handshake_timeout"
        else:
            kind = "handshake_failed"
        with self._books:
            self._count_loss()  # an earlier one nobody settled
            self._loss = (kind, reason)

    def _count_loss(self) -> None:
        """Count the pending loss as an error of its own (call with ``_books`` held)."""
        if self._loss is not None:
            kind, reason = self._loss
            self._loss = None
            self.ctx.metrics.count("connections_lost")
            self.ctx.metrics.error(kind, reason)

    def _begin(self) -> None:
        with self._books:
            self._in_flight = True

    def _end(self, *, failed: bool) -> None:
        """A turn or resume ended: a loss during a failed one was that failure."""
        with self._books:
            self._in_flight = False
            if failed:
                self._loss = None
            else:
                self._count_loss()

    @property
    def rng(self) -> random.Random:
        """This session's random draws, seeded from the run's (``--seed``)."""
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    def on_event(self, event: Event) -> None:
        inbox = self._inbox
        if inbox is None or not inbox.listening:
            # Read without the lock, as most events (every token of a Chainlit turn)
            # come while no reply is awaited. A turn sets it before it sends, so no
            # reply can come before it is seen set.
            return
        with inbox.cond:
            if inbox.listening and len(inbox.events) < INBOX_LIMIT:
                inbox.events.append(event)
                inbox.cond.notify()

    # --- the scenario -----------------------------------------------------------

    @property
    def ending(self) -> bool:
        """The run ended, or this session was retired by the load shape."""
        return self.ctx.ending or self.retired.is_set()

    def retire(self) -> None:
        """End this session early (the load shape wants fewer); it closes itself."""
        self.retired.set()
        self.wake()

    def wake(self) -> None:
        """Cut every wait short: the run ended, or this session was retired."""
        self._woken.set()
        if self._inbox is not None:
            with self._inbox.cond:
                self._inbox.cond.notify_all()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until :meth:`wake` (at once if it came already)."""
        self._woken.wait(max(0.0, seconds))

    def run(self) -> None:
        """Open the session and play turns and resumes until the run ends."""
        try:
            self._run()
        except Cancelled:
            pass
        except Exception as exc:  # noqa: BLE001 - one driver's bug must not end the run
            self.ctx.metrics.error(f"driver_{type(exc).__name__}", str(exc))
        finally:
            if self.retired.is_set() and not self.ctx.ending and self.session is not None:
                self.session.close()

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
        metrics.session_started(self.session_id)
        try:
            cookies = ctx.credentials(self.number)
        except SupervisorError as exc:
            metrics.error(f"login_{type(exc).__name__}", str(exc))
            metrics.session_failed(self.session_id, f"login failed: {exc}")
            return
        self.session = session = ctx.supervisor.open(self._spec(cookies))
        if not self._connect_first(session):
            return
        every = config.resume_every if config.threads_per_session > 1 else 0.0
        now = ctx.clock()
        # Resumes fall on a fixed grid from the run's start, each session at its
        # own evenly spread offset (see shape.resume_phase): no waves, no drift.
        resume_at = (ctx.start + next_resume(self.number, every, now - ctx.start) if every
                     else float("inf"))
        think_until = now
        max_steps = int(config.duration * STEPS_PER_SECOND) + 100
        for _ in range(max_steps):
            if self.ending or session.status is SessionStatus.FAILED:
                return
            now = ctx.clock()
            turns_left = config.turns == 0 or self._turns_done < config.turns
            if now >= resume_at:
                self._resume(session)
                resume_at = ctx.start + next_resume(self.number, every, ctx.clock() - ctx.start)
            elif turns_left and now >= think_until:
                ok = self._turn(session)
                # After a failure, pause a little even without think time, so a
                # broken session does not spin through failing turns.
                pause = config.think_time if ok else max(config.think_time, FAILED_TURN_PAUSE_S)
                think_until = ctx.clock() + pause
            else:
                # Nothing is due before then: a turn, a resume, or the deadline. The
                # run's early end and retirement wake the driver (wake()).
                self.pause(min(resume_at, think_until if turns_left else float("inf"),
                               ctx.deadline) - now)

    def _patience(self, unbounded_run: float) -> float:
        """How long a connect (first, or a resume's) may wait: until the run ends.

        Time queued for admission is the server's saturation, not a failure:
        each handshake has its whole ``--connect-timeout`` from its admission
        (the session's own deadline, which restarts it), so a failing server
        shows as failed handshakes and a slow one as admission wait. A run
        without a deadline of its own (Locust paces it) waits ``unbounded_run``.
        """
        remaining = self.ctx.remaining()
        if not math.isfinite(remaining):
            return unbounded_run
        return max(0.0, remaining) + self.ctx.config.connect_timeout

    def _connect_first(self, session: Session) -> bool:
        """Wait until the session first connects; False if it failed or the run ended."""
        patience = self._patience(self.ctx.config.connect_timeout * 3)
        future = session.resume(self.threads[0], timeout=patience)
        try:
            self._wait(future, patience)
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
            if self.ending or isinstance(exc, SessionClosed):
                raise Cancelled from None
            raise

    def _failed(self, what: str, exc: BaseException) -> None:
        if isinstance(exc, pykka.Timeout) or "Timeout" in type(exc).__name__:
            kind = "timeout"
        elif isinstance(exc, HandshakeRefused | ProtocolRefused):
            kind = "refused"
        else:
            kind = type(exc).__name__
        self.ctx.metrics.count(f"{what}s_failed")
        self.ctx.metrics.error(f"{what}_{kind}", str(exc) or type(exc).__name__)

    # --- resume -----------------------------------------------------------------

    def _resume(self, session: Session) -> None:
        metrics = self.ctx.metrics
        self._thread_index = (self._thread_index + 1) % len(self.threads)
        started = self.ctx.clock()
        self._begin()
        failed = False
        patience = self._patience(self.ctx.config.connect_timeout + 5.0)
        try:
            result = self._wait(session.resume(self.threads[self._thread_index],
                                               timeout=patience), patience)
        except (pykka.Timeout, SupervisorError) as exc:
            failed = not isinstance(exc, SessionFailed)  # else counted once, as session_failed
            if failed:
                self._failed("resume", exc)
            return
        finally:
            self._end(failed=failed)
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
        self._turns_done += 1
        if self.ctx.scenario is not None:
            try:
                self.ctx.scenario(ScenarioSession(self, session))
            except Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's code: counted, the run goes on
                self.ctx.metrics.error(f"scenario_{type(exc).__name__}", str(exc))
                return False
            return True
        return self.turn(session, self._next_prompt())

    def _next_prompt(self) -> str:
        """The next prompt of this session's conversation (drawing a new one at its end)."""
        conversations = self.ctx.conversations
        if conversations is None:
            return self.ctx.config.message
        if self._prompt_index >= len(self._conversation):
            self._conversation, self._prompt_index = conversations.draw(self.rng), 0
        prompt = self._conversation[self._prompt_index]
        self._prompt_index += 1
        return prompt

    def turn(self, session: Session, text: str) -> bool:
        """Send ``text`` and wait for the reply, measured; False when the turn failed."""
        metrics = self.ctx.metrics
        metrics.count("messages_sent")
        self._begin()
        failed = False
        try:
            if self.ctx.config.protocol == "chainlit":
                self._chainlit_turn(session, text)
            else:
                self._reply_turn(session, text)
        except Cancelled:
            metrics.count("turns_cancelled")
            raise
        except (pykka.Timeout, SupervisorError) as exc:
            if isinstance(exc, SessionFailed):
                metrics.count("turns_cancelled")
                return False
            failed = True
            self._failed("turn", exc)
            return False
        finally:
            self._end(failed=failed)
        metrics.count("turns")
        return True

    def _chainlit_turn(self, session: Session, text: str) -> None:
        result: TurnResult = self._wait(session.chat(text), self.ctx.config.turn_timeout)
        metrics = self.ctx.metrics
        if result.first_token_s is not None:
            metrics.count("replies")
            metrics.record("first_token", result.first_token_s)
        if result.turn_s is not None:
            metrics.record("turn", result.turn_s)
        if result.token_gaps_s:
            metrics.record_many("token_gap", result.token_gaps_s)
        metrics.count("tokens", result.tokens)

    def _reply_turn(self, session: Session, text: str) -> None:
        """websocket / socketio: send, then wait for the reply event."""
        config, inbox = self.ctx.config, self._inbox
        assert inbox is not None, "made for every protocol but chainlit"
        with inbox.cond:
            inbox.events.clear()
            inbox.listening = True
        try:
            started = self.ctx.clock()
            if config.protocol == "websocket":
                written = session.send(text)
            else:
                written = session.emit(config.emit_event or "message",
                                       self._payload(session, text))
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

    def _payload(self, session: Session, text: str) -> Any:
        if self.ctx.config.emit_event != "client_message":
            return text
        thread = session.state().thread_id
        return user_message(text, thread, str(uuid.uuid4()), time.time())

    def _await_reply(self, name: str | None, limit: float,
                     started: float) -> tuple[Event | None, Event | None]:
        """The first inbound event and the reply (``name``, or any); bounded."""
        inbox = self._inbox
        assert inbox is not None
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
                if remaining <= 0 or self.ctx.stop.is_set() or self.retired.is_set():
                    break
                inbox.cond.wait(min(remaining, 0.25))
        if self.ending:
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
            self.ctx.metrics.error("cross_talk", f"reply for thread {echoed['thread']!r} "
                                   f"arrived on thread {reply.thread_id!r}")
