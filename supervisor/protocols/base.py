"""What every protocol codec produces: handshakes and actions (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

VersionLookup = Callable[[str], str]
"""Given a server's HTTP base URL, the identity style it speaks (Chainlit: ``"1"`` or ``"2"``).

The transport supplies it to ``Codec.handshake``: it owns the I/O, its deadline
and its cache; the codec stays pure.
"""


Frames = list[str | bytes]
"""The WebSocket frames of one send, to be written in order, nothing between them."""


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
    """The connection is usable: resolve Resumes, flush the outbox.

    Protocols that confirm the thread (Chainlit's ``resume_thread``) say so:
    ``thread_found`` is None when the protocol does not confirm threads, True
    when the server resumed it, False when it answered "not found".
    """

    thread_found: bool | None = None
    thread_data: Any = None
    """The server's thread record (``resume_thread`` payload) or error message."""


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
class Phase:
    """A handshake phase completed (``"open"``: Engine.IO open; ``"namespace"``:
    Socket.IO connect); the actor stamps the time, since codecs have no clock."""

    name: str


@dataclass(frozen=True, slots=True)
class Acked:
    """The server acknowledged our emit number ``ack_id`` with ``data``.

    ``error`` is set instead when the ack arrived malformed (a broken binary
    attachment sequence): the emit's future fails with it rather than waiting.
    """

    ack_id: int
    data: Any
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the session at the protocol level."""

    message: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The server ended the session at the protocol level (Socket.IO ``41``, Engine.IO close)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that could not be parsed; counted and logged, not fatal."""

    reason: str


Action = Ready | Outbound | Inbound | Acked | Phase | Refused | Disconnected | Malformed


class Codec(Protocol):
    """Per-connection protocol state: pure functions of frames and identity."""

    def handshake(self, lookup_version: VersionLookup | None = None) -> Handshake:
        """The upgrade request for this connection.

        Called once, in the connection's own thread before it connects, so the
        transport's ``lookup_version`` (Chainlit version detection, I/O) never
        blocks the actor. Codecs that need no version ignore it.
        """
        ...

    def opened(self) -> list[Action]:
        """Actions once the WebSocket upgrade succeeded."""
        ...

    def received(self, frame: str | bytes) -> list[Action]:
        """Actions for one inbound frame. Never raises: bad input is a ``Malformed``."""
        ...

    def encode(self, event: str | None, data: Any, ack_id: int | None = None) -> Frames:
        """The frames of one user send, in order; ``ack_id`` asks the server to acknowledge it.

        One frame, except a Socket.IO event whose data holds bytes: its text
        packet, then one binary frame per attachment. Raises ``TypeError`` or
        ``ValueError`` for data the protocol cannot carry (the user's error).
        """
        ...

    def encode_ack(self, ack_id: int, data: Any) -> Frames:
        """The frames answering the server's event number ``ack_id`` with ``data``."""
        ...

    def autoreply(self, frame: str | bytes) -> str | bytes | None:
        """A reply the reader thread writes at once (Engine.IO pong), or None.

        Called from the transport's reader thread, so it must not touch codec
        state: heartbeats are answered even while the actor's mailbox is busy.
        A frame that gets an autoreply is not passed to ``received``.
        """
        ...

    def closing(self) -> list[str | bytes]:
        """Frames to write before a deliberate close."""
        ...
