"""Public records: what the user sends to a session and what comes back.

Every record is a frozen dataclass with slots. Commands carry the future that
answers them, so a command is never separated from its answer, even when a
crashed session's commands are handed over to its successor.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pykka

    from supervisor.protocols.chat import TurnResult


class SessionStatus(enum.Enum):
    """Where a session's state machine stands."""

    CONNECTING = "connecting"
    """A handshake is in flight (or waits for admission)."""
    CONNECTED = "connected"
    """The live connection carries the session's thread id."""
    BACKOFF = "backoff"
    """The connection was lost; the supervisor has scheduled a reconnect."""
    CLOSED = "closed"
    """Closed by us; terminal."""
    FAILED = "failed"
    """The supervisor gave up (budget exhausted, refused credentials); terminal."""


@dataclass(frozen=True, slots=True)
class Event:
    """One inbound event, as handed to ``SessionSpec.on_event``."""

    session_id: str
    """The supervisor's id of the session."""
    thread_id: str | None
    """The thread of the connection the frame arrived on (not the latest Resume)."""
    generation: int
    """The connection generation the frame arrived on."""
    name: str
    """``"message"`` for plain WebSocket frames; the event name for Socket.IO."""
    data: Any
    """Frame text (``bytes`` for binary frames) or the event's payload."""
    received_at: float = 0.0
    """``time.monotonic()`` when the session handled the frame."""


@dataclass(frozen=True, slots=True)
class ResumeResult:
    """What a ``resume()`` future resolves with."""

    thread_id: str | None
    """The thread this Resume asked for."""
    generation: int
    """Generation of the connection that carries it; -1 when superseded."""
    superseded: bool = False
    """True when a newer Resume replaced this one before it connected."""
    found: bool | None = None
    """Chainlit: True after ``resume_thread``, False after ``resume_thread_error``;
    None for protocols that do not confirm threads."""
    thread: Any = None
    """Chainlit: the ``resume_thread`` payload, or the ``resume_thread_error`` message."""


@dataclass(frozen=True, slots=True)
class SessionState:
    """A snapshot of one session, from ``Session.state()``."""

    session_id: str
    thread_id: str | None
    """The latest accepted thread id (what the next handshake will carry)."""
    connected_thread_id: str | None
    """The thread id the live connection's handshake carried; None if not connected."""
    generation: int
    status: SessionStatus
    restarts: int
    """Restarts the supervisor made (socket losses and crashes), not Resumes."""
    reason: str | None = None
    """Why the session failed or last lost its connection."""
    outbox: int = 0
    """Sends accepted and not yet written: buffered while reconnecting, or queued behind a
    slow socket (``outbox_limit`` bounds it)."""
    stale_frames_dropped: int = 0
    """Frames that arrived on a superseded connection and were dropped (I4)."""
    malformed_frames: int = 0
    """Frames the protocol could not parse (logged and skipped, not fatal)."""
    handshakes: int = 0
    """Handshakes this session started."""
    last_backoff: float | None = None
    """The delay before the latest scheduled restart, in seconds."""
    inbound_backlog: int = 0
    """Inbound frames received and not yet handled (the reader pauses at the bound)."""
    inbound_backlog_bytes: int = 0
    """Bytes of those frames."""
    oversized_messages: int = 0
    """Connections ended because the server sent a message over ``max_message_bytes``."""


class LifecycleKind(enum.Enum):
    """What happened to a session's connection, as reported to ``on_lifecycle``."""

    CONNECTING = "connecting"
    """A handshake began (``Lifecycle.thread_id`` is what it carries)."""
    CONNECTED = "connected"
    """The connection is ready; ``timings`` splits how long each phase took."""
    LOST = "lost"
    """An open connection, or a handshake, ended abnormally; ``reason`` says why."""
    RESTART = "restart"
    """The supervisor restarted the session after a backoff."""
    FAILED = "failed"
    """The supervisor gave up on the session."""
    CLOSED = "closed"
    """The session was closed by us."""


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """One connection lifecycle event, as handed to ``SessionSpec.on_lifecycle``."""

    session_id: str
    kind: LifecycleKind
    thread_id: str | None
    generation: int
    at: float
    """``time.monotonic()`` when the session handled it."""
    reason: str | None = None
    error: str | None = None
    """The error type name for LOST and FAILED (for counting errors by kind)."""
    timings: Mapping[str, float] = field(default_factory=dict)
    """For CONNECTED, seconds per phase: ``admission`` (waiting for admission
    control), ``upgrade`` (TCP + WebSocket upgrade), ``open`` (Engine.IO open),
    ``namespace`` (Socket.IO connect), ``thread`` (Chainlit thread confirmation),
    ``total`` (from the start of the handshake to ready)."""
    cause: str | None = None
    """For CONNECTING, why: ``"open"`` (first connect), ``"resume"`` (a Resume),
    ``"restart"`` (the supervisor restarted after a loss or crash); None for the
    other kinds."""


# --- commands -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resume:
    """Switch the session to ``thread_id`` (rebuilding the connection)."""

    thread_id: str | None
    """The thread to resume; None starts a new conversation."""
    reply: pykka.Future[ResumeResult] = field(compare=False)
    """Resolves once connected for this thread, or as superseded."""
    timeout: float | None = None
    """Seconds this command may take; None: the spec's default (``SessionSpec.resume_timeout``)."""
    issued_at: float | None = None
    """``time.monotonic()`` when the user issued it (its deadline counts from here)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Write one frame (plain WebSocket) or one event (Socket.IO) to the socket."""

    data: Any
    """Text or bytes for ``"websocket"``; the payload for ``emit``."""
    reply: pykka.Future[Any] = field(compare=False)
    """Resolves (None) once written to the socket, or with the ack; fails typed."""
    event: str | None = None
    """The Socket.IO event name; None for plain WebSocket frames."""
    want_ack: bool = False
    """Resolve ``reply`` with the server's acknowledgement instead of on write."""
    timeout: float | None = None
    """Seconds this command may take; None: the spec's default (``send_timeout``;
    ``reply_timeout`` with an ack)."""
    issued_at: float | None = None
    """``time.monotonic()`` when the user issued it (its deadline counts from here)."""


@dataclass(frozen=True, slots=True)
class Chat:
    """Send one chat message (Chainlit ``client_message``) and follow its reply turn."""

    text: str
    """The user's message."""
    reply: pykka.Future[TurnResult] = field(compare=False)
    """Resolves with the turn's reply text and timings once the turn ends."""
    created_at: float = 0.0
    """``time.time()`` when the user wrote it (the message's ``createdAt``)."""
    timeout: float | None = None
    """Seconds this command may take; None: the spec's default (``SessionSpec.reply_timeout``)."""
    issued_at: float | None = None
    """``time.monotonic()`` when the user issued it (its deadline counts from here)."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the session for good (``clear_session`` first on Chainlit)."""

    reply: pykka.Future[None] = field(compare=False)
    """Resolves once the session has ended (its socket closing)."""
    stopping: bool = False
    """Sent by ``Supervisor.stop()``: what is pending fails with ``SupervisorStopped``."""
