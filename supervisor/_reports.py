"""What the transport reports to the session actor, and its options (internal messages).

Every report is stamped with the generation its connection was opened for, so
the actor can drop the reports of a connection it has let go of.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from supervisor._http import TlsOptions

if TYPE_CHECKING:
    from supervisor._transport import Connection
    from supervisor.spec import SessionSpec


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """The bounds and TLS settings of one connection (see ``SessionSpec`` for each)."""

    connect_timeout: float = 10.0
    verify_tls: bool = True
    ca_file: str | None = None
    follow_redirects: bool = False
    write_timeout: float = 10.0
    write_buffer_bytes: int = 64 * 1024 * 1024
    max_message_bytes: int = 16 * 1024 * 1024
    inbound_max_frames: int = 1000
    inbound_max_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_spec(cls, spec: SessionSpec) -> TransportOptions:
        return cls(connect_timeout=spec.connect_timeout, verify_tls=spec.verify_tls,
                   ca_file=spec.ca_file, follow_redirects=spec.follow_redirects,
                   write_timeout=spec.write_timeout,
                   write_buffer_bytes=spec.write_buffer_bytes,
                   max_message_bytes=spec.max_message_bytes,
                   inbound_max_frames=spec.inbound_max_frames,
                   inbound_max_bytes=spec.inbound_max_bytes)

    @property
    def tls(self) -> TlsOptions:
        return TlsOptions(self.verify_tls, self.ca_file)


@dataclass(frozen=True, slots=True)
class Admitted:
    """Internal: admission control let the handshake of ``generation`` start."""

    generation: int


@dataclass(frozen=True, slots=True)
class Opened:
    """Internal: the WebSocket upgrade of ``generation`` succeeded."""

    generation: int
    connection: Connection
    admitted_at: float
    """``time.monotonic()`` when admission control let the handshake start."""
    opened_at: float
    """``time.monotonic()`` when the WebSocket upgrade (TCP, TLS, HTTP 101) completed."""


@dataclass(frozen=True, slots=True)
class OpenFailed:
    """Internal: the handshake of ``generation`` failed with ``error``."""

    generation: int
    error: Exception


@dataclass(frozen=True, slots=True)
class Received:
    """Internal: one text (str) or binary (bytes) frame on ``generation``.

    The driver answers each with ``Connection.consumed(len(data))``.
    """

    generation: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class Written:
    """Internal: the frame sent with ``token`` was fully written to the socket."""

    generation: int
    token: object


@dataclass(frozen=True, slots=True)
class Ended:
    """Internal: the connection of ``generation`` ended; ``clean``: closed normally by the peer.

    Reported after every ``Written`` of that connection.
    """

    generation: int
    error: Exception | None
    clean: bool


Report = Admitted | Opened | OpenFailed | Received | Written | Ended
