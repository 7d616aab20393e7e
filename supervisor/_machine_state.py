"""The session machine's state as data (internal, pure).

One tagged state (``Connecting``, ``Connected``, ``Backoff``, ``Ended``), each
carrying only what it needs, and one ``Attempt`` per handshake holding
everything that belongs to it, so nothing about a connection can go half-stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supervisor.errors import HandshakeError, SupervisorError
from supervisor.messages import Resume, SessionStatus
from supervisor.protocols import Codec, Identity


@dataclass(slots=True)
class Attempt:
    """One handshake and, once it is ready, the connection it opened."""

    generation: int
    identity: Identity
    codec: Codec
    started_at: float
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per handshake phase so far (``Lifecycle.timings``)."""
    phase_mark: float = 0.0


@dataclass(slots=True)
class Connecting:
    """A handshake is in flight (never more than one)."""

    attempt: Attempt
    next_cause: str | None = None
    """A newer identity waits for this handshake to end; the cause of that next connect."""
    expired: HandshakeError | None = None
    """The handshake ran out of time and is being aborted."""


@dataclass(slots=True)
class Connected:
    """The attempt's connection is ready and carries the session's identity."""

    attempt: Attempt
    since: float


@dataclass(slots=True)
class Backoff:
    """The connection was lost; the supervisor decides when (or whether) to reconnect."""

    loss: int


@dataclass(slots=True)
class Ended:
    """Closed or failed for good (terminal)."""

    status: SessionStatus
    error: SupervisorError


State = Connecting | Connected | Backoff | Ended


@dataclass(slots=True)
class PendingResume:
    """A Resume waiting for the connection that carries its thread."""

    command: Resume
    deadline: float


@dataclass(slots=True)
class Tally:
    """The counters a session publishes (they outlive an actor crash)."""

    generation: int = 0
    handshakes: int = 0
    restarts: int = 0
    stale_frames_dropped: int = 0
    malformed_frames: int = 0

