"""What a codec needs to know of a session: a small frozen record (pure).

Codecs read this, never ``SessionSpec``: the protocol layer sits below the
session layer and imports nothing above it. ``SessionSpec.protocol_config``
builds one, already validated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from supervisor.protocols.base import Identity

DEFAULT_THREAD_HEADER = "X-Chainlit-Thread-Id"
"""The handshake header that carries the thread id unless a session renames it."""

AuthPayload = Mapping[str, Any] | Callable[[Identity], Mapping[str, Any] | None] | None
"""A Socket.IO CONNECT ``auth``: fixed, or made from each handshake's identity."""


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """The protocol-level part of a session: where to connect and what to carry."""

    url: str
    """The server's address (``ws(s)://`` or, for Socket.IO, ``http(s)://``)."""
    protocol: str = "websocket"
    """``"websocket"``, ``"socketio"`` or ``"chainlit"``."""
    thread_header: str = DEFAULT_THREAD_HEADER
    """Handshake header that carries the thread id."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra handshake headers, in order."""
    cookies: tuple[tuple[str, str], ...] = ()
    """Cookies for the handshake's ``Cookie`` header, in order."""
    socketio_path: str | None = None
    """Engine.IO endpoint path; None for the protocol's default."""
    namespace: str = "/"
    """Socket.IO namespace."""
    auth: AuthPayload = None
    """Socket.IO CONNECT ``auth`` payload, or a callable of the identity called per
    handshake (Chainlit builds its own)."""
    chainlit_version: str = "auto"
    """Chainlit identity style: ``"2"``, ``"1"`` or ``"auto"`` (looked up at handshake)."""
    client_type: str = "webapp"
    """Chainlit ``clientType``."""
    user_env: tuple[tuple[str, str], ...] = ()
    """Chainlit ``userEnv`` entries."""
    chat_profile: str | None = None
    """Chainlit chat profile."""
