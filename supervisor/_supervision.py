"""Internal messages between the supervisor actor and its session actors.

Sessions report what happened; the supervisor decides (restart after a delay,
or give up) and answers with a message. Neither ever waits for the other.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- session -> supervisor ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ConnectionDown:
    """Internal: a session's connection ended or could not open."""

    session_id: str
    loss: int
    """The session's count of losses, echoed back so a stale answer is ignored."""
    error: Exception | None
    clean: bool
    """The server closed the connection normally."""
    uptime: float | None
    """How long the lost connection was up; None if it never opened."""


@dataclass(frozen=True, slots=True)
class ActorCrashed:
    """Internal: a session's actor raised and stopped; its record waits for a successor."""

    session_id: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class RestartPreempted:
    """Internal: a Resume reconnected during the backoff of loss ``loss``; refund it."""

    session_id: str
    loss: int


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """Internal: the session closed or failed for good; forget it."""

    session_id: str
    reason: str | None
    """None for a close by the user; why, for a failure."""


# --- supervisor -> session ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestartIn:
    """Internal: reconnect after ``delay`` seconds (the answer to ``ConnectionDown``)."""

    loss: int
    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Internal: the restart policy refuses; fail the session with ``reason``."""

    loss: int
    reason: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Internal: the backoff of loss ``loss`` is over."""

    loss: int
