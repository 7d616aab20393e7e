"""Plain WebSocket: the thread id travels in a handshake header; frames are messages."""

from __future__ import annotations

from typing import Any

from supervisor.protocols.base import (
    Action,
    Frames,
    Handshake,
    Identity,
    Inbound,
    Ready,
    VersionLookup,
)
from supervisor.protocols.config import ProtocolConfig


class WebSocketCodec:
    """Codec for protocol ``"websocket"``: every frame is one ``message`` event."""

    def __init__(self, config: ProtocolConfig, identity: Identity) -> None:
        self._config = config
        self._identity = identity

    def handshake(self, lookup_version: VersionLookup | None = None) -> Handshake:
        thread_header = self._config.thread_header.lower()
        # A user header of the same name must not smuggle in another thread id.
        headers = [(name, value) for name, value in self._config.headers
                   if name.lower() != thread_header]
        if self._identity.thread_id is not None:
            headers.append((self._config.thread_header, self._identity.thread_id))
        return Handshake(url=self._config.url, headers=tuple(headers),
                         cookies=self._config.cookies)

    def opened(self) -> list[Action]:
        return [Ready()]

    def received(self, frame: str | bytes) -> list[Action]:
        return [Inbound("message", frame)]

    def encode(self, event: str | None, data: Any, ack_id: int | None = None) -> Frames:
        if event is not None or ack_id is not None:
            msg = "plain WebSocket sessions have no events: use send(text), not emit()"
            raise TypeError(msg)
        if not isinstance(data, str | bytes):
            msg = f"send() takes str or bytes on a plain WebSocket, not {type(data).__name__}"
            raise TypeError(msg)
        if isinstance(data, str):
            try:
                # Checked here, where a refusal is a rejected future: the transport
                # encodes the frame later, where a lone surrogate would crash the actor.
                data.encode("utf-8")
            except UnicodeEncodeError as exc:
                msg = f"send() text is not valid UTF-8 (a lone surrogate?): {exc.reason}"
                raise ValueError(msg) from exc
        return [data]

    def encode_ack(self, ack_id: int, data: Any) -> Frames:
        msg = "plain WebSocket has no acknowledgements"
        raise TypeError(msg)

    def autoreply(self, frame: str | bytes) -> str | bytes | None:
        return None  # websocket-client answers WebSocket-level pings itself

    def closing(self) -> list[str | bytes]:
        return []
