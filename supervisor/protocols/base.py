"""What every protocol codec produces: handshakes and actions (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Identity:
    """What one handshake carries, fixed from the actor's state when it begins (I1)."""

    thread_id: str | None
    """Thread id for the handshake; None starts a new conversation."""
    protocol_session_id: str | None = None
    """The server-side session id some protocols carry (Chainlit's ``sessionId``)."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """The HTTP upgrade request of one connection."""

    url: str
    headers: tuple[tuple[str, str], ...]
    cookies: tuple[tuple[str, str], ...]

    def cookie_header(self) -> str | None:
        """The ``Cookie`` header value, or None when the session has no cookies."""
        if not self.cookies:
            return None
        return "; ".join(f"{name}={value}" for name, value in self.cookies)


@dataclass(frozen=True, slots=True)
class Ready:
    """The connection is usable: resolve Resumes, flush the outbox."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """Write this frame to the socket now (handshake steps, pongs, acks)."""

    frame: str | bytes


@dataclass(frozen=True, slots=True)
class Inbound:
    """Deliver one event to the user."""

    name: str
    data: Any
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the session at the protocol level."""

    message: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that could not be parsed; counted and logged, not fatal."""

    reason: str


Action = Ready | Outbound | Inbound | Refused | Malformed


class Codec(Protocol):
    """Per-connection protocol state: pure functions of frames and identity."""

    def handshake(self) -> Handshake:
        """The upgrade request for this connection."""
        ...

    def opened(self) -> list[Action]:
        """Actions once the WebSocket upgrade succeeded."""
        ...

    def received(self, frame: str | bytes) -> list[Action]:
        """Actions for one inbound frame."""
        ...

    def encode(self, event: str | None, data: Any) -> str | bytes:
        """The frame for one user send."""
        ...

    def closing(self) -> list[str | bytes]:
        """Frames to write before a deliberate close."""
        ...
