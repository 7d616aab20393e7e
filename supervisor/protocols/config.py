"""What a codec needs to know of a session: a small frozen record (pure).

Codecs read this, never ``SessionSpec``: the protocol layer sits below the
session layer and imports nothing above it. ``SessionSpec.protocol_config``
builds one, already validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_THREAD_HEADER = "X-Chainlit-Thread-Id"
"""The handshake header that carries the thread id unless a session renames it."""


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
    auth: Mapping[str, Any] | None = None
    """Socket.IO CONNECT ``auth`` payload (Chainlit builds its own)."""
    chainlit_version: str = "auto"
    """Chainlit identity style: ``"2"``, ``"1"`` or ``"auto"`` (looked up at handshake)."""
    client_type: str = "webapp"
    """Chainlit ``clientType``."""
    user_env: tuple[tuple[str, str], ...] = ()
    """Chainlit ``userEnv`` entries."""
    chat_profile: str | None = None
    """Chainlit chat profile."""
