"""The session actor: one socket, one state machine, identity changed only here (internal).

Everything that changes a session's identity or status happens in
``on_receive``, one message at a time (I1). The transport connects and reads in
its own thread and reports back by ``tell``, every report stamped with the
generation it belongs to; reports from older generations are dropped, and
frames among them counted (I4).

A session has at most one handshake in flight. A Resume that arrives while one
is in flight aborts it and waits for its report; only then does the next
handshake start, with the latest thread id, so k Resumes cost at most one
further handshake (I3) and the server sees thread ids in the order accepted.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import pykka

from supervisor import _supervision as sup
from supervisor._admission import Admission
from supervisor._callbacks import UserCallbacks
from supervisor._futures import is_settled, reject, resolve
from supervisor._logging import get_logger
from supervisor._outgoing import Outbox
from supervisor._record import Command, SessionRecord, fail_command
from supervisor._timer import Scheduler
from supervisor._transport import (
    Admitted,
    Connection,
    Ended,
    Opened,
    OpenFailed,
    Received,
    Report,
)
from supervisor.errors import (
    ConnectionLost,
    HandshakeError,
    ProtocolRefused,
    SessionClosed,
    SessionFailed,
    SupervisorError,
)
from supervisor.messages import (
    Chat,
    Close,
    Event,
    LifecycleKind,
    Resume,
    ResumeResult,
    Send,
    SessionState,
    SessionStatus,
)
from supervisor.protocols import Codec, Identity, make_codec
from supervisor.protocols.base import (
    Acked,
    Action,
    Disconnected,
    Inbound,
    Malformed,
    Outbound,
    Phase,
    Ready,
    Refused,
)

_log = get_logger("supervisor.session")


@dataclass(frozen=True, slots=True)
class HandshakeDeadline:
    """Internal: the connect timeout of ``generation`` is over."""

    generation: int


class SessionActor(pykka.ThreadingActor):
    """Internal: owns one session's socket and state."""

    def __init__(self, record: SessionRecord, supervisor: pykka.ActorRef[Any],
                 admission: Admission, scheduler: Scheduler) -> None:
        super().__init__()
        self._record = record
        self._spec = record.spec
        self._supervisor = supervisor
        self._admission = admission
        self._scheduler = scheduler
        self._log = _log.bind(session_id=self._spec.session_id, thread_id=record.thread_id)
        self._callbacks = UserCallbacks(self._spec)

        self._status = SessionStatus.CONNECTING
        self._protocol_session_id = str(uuid.uuid4())
        self._protocol_session_used = False
        """A handshake has carried ``_protocol_session_id``: the server may hold it."""
        self._conn: Connection | None = None
        self._codec: Codec | None = None
        self._conn_thread: str | None = None
        """The thread id the current connection's handshake carried."""
        self._in_flight = False
        """The current connection has not reached Ready (or failed) yet."""
        self._deadline_error: HandshakeError | None = None
        """Set when the in-flight handshake ran out of time (it is being aborted)."""
        self._reconnect_wanted = False
        """A newer identity waits for the in-flight handshake to end."""
        self._connected_at: float | None = None
        self._pending: list[Resume] = []
        self._outbox = Outbox(self._spec.outbox_limit)
        self._losses = 0
        self._reason: str | None = None
        self._last_backoff: float | None = None
        self._connect_started = 0.0
        self._phases: dict[str, float] = {}
        """Seconds per handshake phase of the current connection (Lifecycle timings)."""
        self._phase_mark = 0.0
        self._unprocessed: deque[Command] = deque()
        """Commands parked for this actor, not yet handled (kept if on_start crashes)."""
        self._current: Command | None = None
        """The command being handled, so a crash in its handler does not lose it."""

    # --- lifecycle ----------------------------------------------------------------

    def on_start(self) -> None:
        # pykka does not call on_failure when on_start raises: do it here.
        try:
            self._unprocessed.extend(self._record.take_parked(self.actor_ref))
            if self._record.terminal is not None:
                # Ended (Supervisor.stop) before this actor ran: answer and leave.
                for command in self._unprocessed:
                    fail_command(command, self._record.terminal)
                self._unprocessed.clear()
                self.stop()
                return
            self._connect()
            while self._unprocessed:
                self._handle(self._unprocessed[0])
                self._unprocessed.popleft()
        except Exception as exc:
            self._crashed(exc)
            raise

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._crashed(exception_value)

    def on_receive(self, message: Any) -> None:
        self._handle(message)

    # --- dispatch -----------------------------------------------------------------

    def _handle(self, message: Any) -> None:  # noqa: PLR0912 - one flat dispatch reads best
        if isinstance(message, Resume | Send | Chat | Close):
            if self._record.terminal is not None:
                # Delivered before the session ended, handled after: answer, do not act.
                fail_command(message, self._record.terminal)
                return
            self._current = message
        match message:
            case Received(generation, data):
                self._on_frame(generation, data)
            case Resume():
                self._on_resume(message)
            case Send() | Chat():
                self._on_send(message)
            case Opened():
                self._on_opened(message)
            case Admitted(generation):
                self._start_deadline(generation)
            case OpenFailed(generation, error):
                self._on_ended(generation, error, clean=False)
            case Ended(generation, error, clean):
                self._on_ended(generation, error, clean=clean)
            case Close():
                self._on_close(message)
            case HandshakeDeadline(generation):
                self._on_handshake_deadline(generation)
            case sup.RestartIn(loss, delay):
                self._on_restart_in(loss, delay)
            case sup.Reconnect(loss):
                if loss == self._losses and self._status is SessionStatus.BACKOFF:
                    self._record.restarts += 1
                    self._log.info("restart", restarts=self._record.restarts)
                    self._notify(LifecycleKind.RESTART)
                    self._connect()
            case sup.GiveUp(loss, reason):
                if loss == self._losses and self._status is SessionStatus.BACKOFF:
                    self._fail(reason)
            case _:
                self._log.warning("unknown_message", message_type=type(message).__name__)
        self._current = None

    # --- commands -----------------------------------------------------------------

    def _on_resume(self, command: Resume) -> None:
        if command.thread_id == self._record.thread_id:
            if self._status is SessionStatus.CONNECTED:
                resolve(command.reply, ResumeResult(command.thread_id, self._record.generation))
                return
            self._pending.append(command)
            if self._status is SessionStatus.BACKOFF:
                self._preempt_backoff()
            return
        for older in self._pending:
            resolve(older.reply, ResumeResult(older.thread_id, -1, superseded=True))
        self._pending = [command]
        self._record.thread_id = command.thread_id
        # Chainlit restores a known server session and ignores a new thread id:
        # a thread switch needs a fresh server-side session id.
        self._protocol_session_id = str(uuid.uuid4())
        self._protocol_session_used = False
        self._log = self._log.bind(thread_id=command.thread_id)
        self._log.info("resume")
        if self._status is SessionStatus.BACKOFF:
            self._preempt_backoff()
        else:
            self._connect()
        self._publish()

    def _preempt_backoff(self) -> None:
        """A Resume during backoff connects at once; it is the user's intent, not a restart."""
        self._supervisor.tell(sup.RestartPreempted(self._spec.session_id, self._losses))
        self._losses += 1  # the scheduled Reconnect now carries a stale loss number
        self._connect()

    def _on_send(self, command: Send | Chat) -> None:
        conn, codec = self._conn, self._codec
        # Behind queued commands a new one waits its turn, so order holds.
        if (self._status is SessionStatus.CONNECTED and conn is not None and codec is not None
                and not self._outbox
                and self._outbox.write(command, conn, codec, self._conn_thread)):
            return
        self._outbox.enqueue(command)

    def _on_close(self, command: Close) -> None:
        if self._status is SessionStatus.CLOSED:
            resolve(command.reply, None)
            return
        self._log.info("close")
        self._drop_connection(graceful=True)
        self._end(SessionStatus.CLOSED, SessionClosed("session closed"), reason=None)
        resolve(command.reply, None)

    # --- connection lifecycle -------------------------------------------------------

    def _connect(self) -> None:
        """Start a handshake for the latest accepted thread id, or queue it behind one."""
        if self._in_flight:
            # Never two handshakes in flight: abort this one, start after its report.
            self._reconnect_wanted = True
            if self._conn is not None:
                self._conn.abort()
            return
        self._drop_connection(graceful=True)
        record = self._record
        record.generation += 1
        record.handshakes += 1
        identity = Identity(record.thread_id, self._protocol_session_id)
        # A server that still holds this session id restores it and confirms no
        # thread (Chainlit): only the first handshake with an id waits for one.
        confirm_resume = self._spec.confirm_resume and not self._protocol_session_used
        self._protocol_session_used = True
        codec = make_codec(self._spec.protocol_config, identity, confirm_resume=confirm_resume)
        conn = Connection(codec, record.generation, self._report, self._admission,
                          self._spec.connect_timeout, self._spec.verify_tls)
        self._conn, self._codec, self._conn_thread = conn, codec, record.thread_id
        self._in_flight, self._reconnect_wanted, self._deadline_error = True, False, None
        self._status = SessionStatus.CONNECTING
        self._connect_started = time.monotonic()
        self._notify(LifecycleKind.CONNECTING)
        self._log.debug("connect", generation=record.generation, url=self._spec.url,
                        headers=dict(self._spec.headers), cookies=dict(self._spec.cookies))
        self._publish()
        conn.start()

    def _start_deadline(self, generation: int) -> None:
        """Admitted: from now the whole handshake has ``connect_timeout``.

        The upgrade has websocket-client's own timeout; this one also covers
        Engine.IO open, namespace connect and thread confirmation, since a
        server that dislikes the identity style may never answer. Time spent
        queued for admission does not count: a big start is not a failure.
        """
        if generation != self._record.generation:
            return
        ref = self.actor_ref
        self._scheduler.call_later(self._spec.connect_timeout,
                                   lambda: _tell_if_alive(ref, HandshakeDeadline(generation)))

    def _report(self, report: Report) -> None:
        """Transport callback (reader thread): hand the report to the mailbox."""
        try:
            self.actor_ref.tell(report)
        except pykka.ActorDeadError:
            if isinstance(report, Opened):
                report.connection.abort()  # nobody will ever close it

    def _on_opened(self, opened: Opened) -> None:
        if opened.generation != self._record.generation or opened.connection is not self._conn:
            opened.connection.abort()
            return
        if self._deadline_error is not None:  # opened after its deadline: too late
            self._on_ended(opened.generation, None, clean=False)
            return
        assert self._codec is not None
        self._phases = {"admission": opened.admitted_at - self._connect_started,
                        "upgrade": opened.opened_at - opened.admitted_at}
        self._phase_mark = opened.opened_at
        self._apply(self._codec.opened())

    def _on_ready(self, ready: Ready) -> None:
        if self._deadline_error is not None:
            return  # too late: the aborted connection's report finishes it
        self._in_flight = False
        if self._reconnect_wanted:
            self._connect()
            return
        self._status = SessionStatus.CONNECTED
        self._connected_at = now = time.monotonic()
        self._reason = None
        if ready.thread_found is not None:
            self._phases["thread"] = now - self._phase_mark
        self._phases["total"] = now - self._connect_started
        self._notify(LifecycleKind.CONNECTED, timings=self._phases)
        self._log.info("connected", generation=self._record.generation)
        result = ResumeResult(self._conn_thread, self._record.generation,
                              found=ready.thread_found, thread=ready.thread_data)
        for command in self._pending:
            resolve(command.reply, result)
        self._pending = []
        assert self._conn is not None
        assert self._codec is not None
        self._outbox.flush(self._conn, self._codec, self._conn_thread)
        self._publish()

    def _on_ended(self, generation: int, error: Exception | None, *, clean: bool) -> None:
        if generation != self._record.generation or self._conn is None:
            return  # a connection we already let go of
        self._handshake_over(error, clean=clean)

    def _handshake_over(self, error: Exception | None, *, clean: bool) -> None:
        """The current connection ended or failed: go on to a newer identity, or lose it."""
        self._in_flight = False
        if self._deadline_error is not None:
            error, clean = self._deadline_error, False
        if self._reconnect_wanted:
            self._connect()
            return
        self._lose(error, clean=clean)

    def _on_handshake_deadline(self, generation: int) -> None:
        if generation != self._record.generation or not self._in_flight:
            return  # that handshake finished in time
        timeout = self._spec.connect_timeout
        self._deadline_error = HandshakeError(
            f"handshake not completed within {timeout:g}s (is the protocol right for this "
            "server?)")
        # Wait for the connection's own report before the next handshake, so
        # the server never sees two of this session's handshakes at once.
        assert self._conn is not None
        self._conn.abort()

    def _lose(self, error: Exception | None, *, clean: bool) -> None:
        """The live connection is gone: ask the supervisor whether and when to restart."""
        uptime = None if self._connected_at is None else time.monotonic() - self._connected_at
        self._drop_connection(graceful=False)
        self._losses += 1
        self._status = SessionStatus.BACKOFF
        self._reason = "closed normally by the server" if error is None else str(error)
        self._log.info("connection_lost", reason=self._reason, uptime=uptime)
        self._notify(LifecycleKind.LOST, reason=self._reason,
                     error=None if error is None else type(error).__name__)
        self._publish()
        self._supervisor.tell(sup.ConnectionDown(self._spec.session_id, self._losses, error,
                                                 clean, uptime))

    def _on_restart_in(self, loss: int, delay: float) -> None:
        if loss != self._losses or self._status is not SessionStatus.BACKOFF:
            return
        self._last_backoff = delay
        self._publish()
        ref = self.actor_ref
        self._scheduler.call_later(delay, lambda: _tell_if_alive(ref, sup.Reconnect(loss)))

    def _drop_connection(self, *, graceful: bool) -> None:
        conn, codec = self._conn, self._codec
        self._conn = self._codec = None
        self._connected_at = None
        # The server may or may not have handled what it did not answer: never re-send.
        self._outbox.connection_gone(ConnectionLost("connection closed before the server answered"))
        if conn is None:
            return
        if graceful and codec is not None and not self._in_flight:
            conn.close(codec.closing())
        else:
            conn.abort()

    # --- inbound ------------------------------------------------------------------

    def _on_frame(self, generation: int, data: str | bytes) -> None:
        if generation != self._record.generation or self._codec is None:
            self._record.stale_frames_dropped += 1
            self._publish()  # rare: only around a Resume or a reconnect
            return
        self._apply(self._codec.received(data))

    def _apply(self, actions: list[Action]) -> None:  # noqa: PLR0912 - one flat dispatch
        for action in actions:
            match action:
                case Inbound(name, data, ack_id):
                    event = self._callbacks.event(self._log, self._conn_thread,
                                                  self._record.generation, name, data)
                    self._outbox.observe(name, data)
                    if ack_id is not None:
                        self._answer(event, ack_id)
                case Acked(ack_id, data, ack_error):
                    self._outbox.acked(ack_id, data, ack_error)
                case Outbound(frame) if self._conn is not None:
                    try:
                        self._conn.send(frame)
                    except ConnectionLost:
                        return  # the reader reports the loss
                case Ready():
                    self._on_ready(action)
                case Refused(message):
                    refusal = ProtocolRefused(message)
                    if not self._reconnect_wanted:
                        # This identity itself was refused: the Resumes waiting for it fail.
                        for command in self._pending:
                            reject(command.reply, refusal)
                        self._pending = []
                    self._handshake_over(refusal, clean=False)
                    return
                case Disconnected(reason):
                    error = ConnectionLost(f"server disconnected: {reason}")
                    self._handshake_over(error, clean=True)
                    return
                case Phase(name):
                    now = time.monotonic()
                    self._phases[name] = now - self._phase_mark
                    self._phase_mark = now
                case Malformed(reason):
                    self._record.malformed_frames += 1
                    self._log.warning("malformed_frame", reason=reason)
                    self._publish()

    def _notify(self, kind: LifecycleKind, **details: Any) -> None:
        self._callbacks.lifecycle(self._log, kind, self._record.thread_id,
                                  self._record.generation, **details)

    def _answer(self, event: Event, ack_id: int) -> None:
        """Acknowledge a server event that asked for it, with the user's answer."""
        answer = self._callbacks.answer(self._log, event)
        assert self._codec is not None
        assert self._conn is not None
        try:
            for frame in self._codec.encode_ack(ack_id, answer):
                self._conn.send(frame)
        except ConnectionLost:
            return  # the reader reports the loss

    # --- endings ------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        self._log.warning("session_failed", reason=reason)
        self._drop_connection(graceful=False)
        self._end(SessionStatus.FAILED, SessionFailed(reason), reason=reason)

    def _end(self, status: SessionStatus, error: SupervisorError, reason: str | None) -> None:
        self._status = status
        self._reason = reason
        kind = LifecycleKind.CLOSED if status is SessionStatus.CLOSED else LifecycleKind.FAILED
        self._notify(kind, reason=reason, error=None if reason is None else type(error).__name__)
        for held in (*self._pending, *self._outbox.take_queued(), *self._record.end(error)):
            fail_command(held, error)
        self._pending = []
        self._publish()
        self._supervisor.tell(sup.SessionEnded(self._spec.session_id, reason))
        self.stop()

    def _crashed(self, error: BaseException) -> None:
        """The handler raised: hand every held command back to the record, then report."""
        self._log.error("actor_crashed", error=repr(error))
        if self._conn is not None:
            self._conn.abort()
        held: list[Command] = [*self._pending, *self._outbox.take_queued()]
        if self._current is not None and not is_settled(self._current.reply):
            held.append(self._current)
        held.extend(command for command in self._unprocessed if command is not self._current)
        self._outbox.connection_gone(
            ConnectionLost("session actor crashed before the server answered"))
        record = self._record
        with record.lock:
            # Under the lock no handle can slip a command into the inbox after
            # the drain: from here on they park in the record.
            record.ref = None
            while not self.actor_inbox.empty():
                message = self.actor_inbox.get().message
                if isinstance(message, Resume | Send | Chat | Close):
                    held.append(message)
                elif isinstance(message, Opened):
                    message.connection.abort()
            record.parked.extendleft(reversed(held))
        self._status = SessionStatus.BACKOFF
        self._reason = f"actor crashed: {error!r}"
        self._publish()
        self._supervisor.tell(sup.ActorCrashed(self._spec.session_id, error))

    def _publish(self) -> None:
        record = self._record
        record.snapshot = SessionState(
            session_id=self._spec.session_id,
            thread_id=record.thread_id,
            connected_thread_id=self._conn_thread if self._status is SessionStatus.CONNECTED
            else None,
            generation=record.generation,
            status=self._status,
            restarts=record.restarts,
            reason=self._reason,
            outbox=len(self._outbox),
            stale_frames_dropped=record.stale_frames_dropped,
            malformed_frames=record.malformed_frames,
            handshakes=record.handshakes,
            last_backoff=self._last_backoff,
        )


def _tell_if_alive(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):  # the session ended meanwhile
        ref.tell(message)
