"""Socket.IO v5 over Engine.IO v4, websocket transport only (pure).

Wire format, one Engine.IO packet per WebSocket frame::

    0{"sid":..,"pingInterval":..,"pingTimeout":..}   Engine.IO open (server first)
    1                                                 Engine.IO close
    2 / 3                                             ping (server) / pong (client)
    4<socket.io packet>                               message
    6                                                 noop
    <binary frame>                                    a binary attachment

and a Socket.IO packet is ``<type>[/namespace,][ack id][JSON]`` with types
``0`` CONNECT, ``1`` DISCONNECT, ``2`` EVENT, ``3`` ACK, ``4`` CONNECT_ERROR,
``5``/``6`` binary EVENT/ACK, which carry ``<attachments>-`` after the type and
are followed by that many binary frames (``packet.py`` has the packet grammar,
``binary.py`` the placeholders).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from supervisor.protocols import binary
from supervisor.protocols.base import (
    Acked,
    Action,
    Disconnected,
    Frames,
    Handshake,
    Identity,
    Inbound,
    Malformed,
    Outbound,
    Phase,
    Ready,
    Refused,
    VersionLookup,
)
from supervisor.protocols.config import ProtocolConfig
from supervisor.protocols.packet import (
    ACK,
    BINARY_ACK,
    BINARY_EVENT,
    CONNECT,
    CONNECT_ERROR,
    DISCONNECT,
    EIO_CLOSE,
    EIO_MESSAGE,
    EIO_NOOP,
    EIO_OPEN,
    EIO_PING,
    EIO_PONG,
    EIO_UPGRADE,
    EVENT,
    Packet,
    decode_packet,
    encode_frames,
    encode_packet,
    loads,
    normalize_namespace,
    pack_args,
    unpack_args,
)

DEFAULT_PATH = "socket.io"
ENGINEIO_QUERY = "EIO=4&transport=websocket"

MAX_TIMER_MS = 2**31 - 1
"""Largest ping interval or timeout taken from a server (JavaScript's timer limit, ~24.8 days)."""

_HTTP_TO_WS = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def websocket_url(base_url: str, socketio_path: str) -> str:
    """The Engine.IO WebSocket URL for a server named by its http(s) or ws(s) base URL.

    ``http://host:8000/prefix`` with path ``ws/socket.io`` gives
    ``ws://host:8000/prefix/ws/socket.io/?EIO=4&transport=websocket``. A URL that
    already ends with the Engine.IO path is not extended twice; a query the URL
    carries is kept ahead of the Engine.IO parameters.
    """
    parts = urlsplit(base_url)
    scheme = _HTTP_TO_WS.get(parts.scheme.lower())
    if scheme is None:
        msg = f"Socket.IO url must be http(s):// or ws(s)://, got {base_url!r}"
        raise ValueError(msg)
    endpoint = socketio_path.strip("/")
    prefix = parts.path.rstrip("/")
    if endpoint and not (prefix == "/" + endpoint or prefix.endswith("/" + endpoint)):
        prefix = f"{prefix}/{endpoint}"
    query = f"{parts.query}&{ENGINEIO_QUERY}" if parts.query else ENGINEIO_QUERY
    return urlunsplit((scheme, parts.netloc, prefix + "/", query, ""))


def http_base_url(base_url: str, socketio_path: str | None = None) -> str:
    """The server's HTTP base: scheme mapped back from ws(s), query and fragment dropped.

    A URL that names the Engine.IO endpoint itself (ends with ``socketio_path``)
    gives the base in front of it, as ``websocket_url`` accepts such URLs too.
    """
    parts = urlsplit(base_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    path = parts.path.rstrip("/")
    endpoint = (socketio_path or "").strip("/")
    if endpoint and (path == "/" + endpoint or path.endswith("/" + endpoint)):
        path = path[:-len(endpoint) - 1]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


# The handler of each packet type, by method name: a subclass's override is the one
# called, and a codec holds no bound methods of itself (a reference cycle per connection).
_ENGINEIO_HANDLERS = {
    EIO_OPEN: "_on_open", EIO_CLOSE: "_on_close", EIO_PING: "_on_ping", EIO_PONG: "_ignore",
    EIO_MESSAGE: "_on_message", EIO_UPGRADE: "_ignore", EIO_NOOP: "_ignore",
}
_SOCKETIO_HANDLERS = {
    CONNECT: "_on_connect_reply", DISCONNECT: "_on_disconnect", EVENT: "_on_event_packet",
    ACK: "_on_ack", CONNECT_ERROR: "_on_connect_error", BINARY_EVENT: "_on_event_packet",
    BINARY_ACK: "_on_ack",
}


class SocketIOCodec:
    """Codec for protocol ``"socketio"``: one namespace of one Socket.IO connection.

    States: waiting for the Engine.IO open, then for the namespace CONNECT
    reply, then connected. Subclasses (Chainlit) adjust the handshake, the
    connect ``auth`` payload and what happens once connected.

    A binary packet is held until its attachments have arrived; an Engine.IO
    message in between abandons it (counted as ``Malformed``; an abandoned ack
    settles its emit with an error), as does a bad placeholder.
    """

    default_path = DEFAULT_PATH

    def __init__(self, config: ProtocolConfig, identity: Identity) -> None:
        self._config = config
        self._identity = identity
        self._namespace = normalize_namespace(config.namespace)
        self._stage = "open"  # "open" -> "connect" -> "connected"
        self._packets_since_connect = 0
        self._partial: Packet | None = None  # a binary packet awaiting attachments
        self._attachments: list[bytes] = []
        self._attachment_bytes = 0
        self.engineio_sid: str | None = None
        """Engine.IO session id from the open packet."""
        self.socketio_sid: str | None = None
        """Socket.IO session id from the namespace CONNECT reply."""
        self.ping_interval_s: float | None = None
        """Seconds between server pings, from the open packet."""
        self.ping_timeout_s: float | None = None
        """Seconds the server waits for a pong, from the open packet."""
        self.max_payload: int | None = None
        """Largest frame the server accepts, from the open packet."""

    @property
    def namespace(self) -> str:
        return self._namespace

    # --- handshake -------------------------------------------------------------------

    def handshake(self, lookup_version: VersionLookup | None = None) -> Handshake:
        path = self._config.socketio_path or self.default_path
        return Handshake(url=websocket_url(self._config.url, path),
                         headers=tuple(self._handshake_headers()),
                         cookies=self._config.cookies)

    def _handshake_headers(self) -> list[tuple[str, str]]:
        """The user's headers without any stale thread header, plus the identity's thread header."""
        headers = self._user_headers({self._config.thread_header})
        if self._identity.thread_id is not None:
            headers.append((self._config.thread_header, self._identity.thread_id))
        return headers

    def _user_headers(self, reserved: set[str]) -> list[tuple[str, str]]:
        """The user's headers minus the names the identity owns (compared case-insensitively)."""
        lowered = {name.lower() for name in reserved}
        return [(name, value) for name, value in self._config.headers
                if name.lower() not in lowered]

    def _connect_auth(self) -> Any:
        """The namespace CONNECT ``auth`` payload, or None for none.

        A callable ``auth`` is called with this connection's identity, so each
        handshake carries the thread (and session id) its state held (I1). It
        runs in the session's actor, like the other user callbacks.
        """
        auth = self._config.auth
        if callable(auth):
            auth = auth(self._identity)
        if auth is None:
            return None
        if not isinstance(auth, Mapping):
            msg = f"the Socket.IO auth payload must be a mapping or None, not {type(auth).__name__}"
            raise TypeError(msg)
        return dict(auth)

    # --- inbound ----------------------------------------------------------------------

    def opened(self) -> list[Action]:
        return []  # the server speaks first (Engine.IO open)

    def received(self, frame: str | bytes) -> list[Action]:
        if not isinstance(frame, str):
            return self._on_attachment(frame)
        if not frame:
            return [Malformed("empty frame")]
        handler = _ENGINEIO_HANDLERS.get(frame[0])
        if handler is None:
            return [Malformed(f"unknown Engine.IO packet type {frame[0]!r}")]
        result: list[Action] = getattr(self, handler)(frame[1:])
        return result

    def _on_message(self, payload: str) -> list[Action]:
        actions = self._abandon("a Socket.IO packet came before all its attachments")
        try:
            packet = decode_packet(payload)
        except ValueError as exc:
            return [*actions, Malformed(f"bad Socket.IO packet: {exc}")]
        if packet.type in (BINARY_EVENT, BINARY_ACK) and packet.attachments:
            self._partial = packet  # other namespaces' too: their attachments follow
            return actions
        return [*actions, *self._dispatch(packet)]

    def _dispatch(self, packet: Packet) -> list[Action]:
        if packet.namespace != self._namespace:
            return []  # another namespace multiplexed on this connection: not ours
        if self._stage == "connected":
            self._packets_since_connect += 1
        result: list[Action] = getattr(self, _SOCKETIO_HANDLERS[packet.type])(packet)
        return result

    def _on_attachment(self, frame: bytes) -> list[Action]:
        packet = self._partial
        if packet is None:
            return [Malformed("a binary frame with no binary packet waiting for it")]
        self._attachments.append(bytes(frame))
        self._attachment_bytes += len(frame)
        if self._attachment_bytes > binary.MAX_ATTACHMENT_BYTES:
            return self._abandon(f"attachments past {binary.MAX_ATTACHMENT_BYTES} bytes")
        if len(self._attachments) < packet.attachments:
            return []
        attachments = self._attachments
        self._partial, self._attachments, self._attachment_bytes = None, [], 0
        try:
            data = binary.reconstruct(packet.data, attachments)
        except ValueError as exc:
            return self._malformed_packet(packet, str(exc))
        return self._dispatch(Packet(packet.type, packet.namespace, packet.ack_id, data))

    def _abandon(self, reason: str) -> list[Action]:
        """Drop a binary packet whose attachments will not all come (nothing if none waits)."""
        packet = self._partial
        if packet is None:
            return []
        self._partial, self._attachments, self._attachment_bytes = None, [], 0
        return self._malformed_packet(packet, reason)

    def _malformed_packet(self, packet: Packet, reason: str) -> list[Action]:
        """Count a broken binary packet; an ack of ours settles its emit with the error."""
        actions: list[Action] = [Malformed(f"bad binary packet: {reason}")]
        if (packet.type == BINARY_ACK and packet.ack_id is not None
                and packet.namespace == self._namespace):
            actions.append(Acked(packet.ack_id, None, error=f"malformed binary ack: {reason}"))
        return actions

    def _on_open(self, payload: str) -> list[Action]:
        if self._stage != "open":
            return [Malformed("unexpected second Engine.IO open packet")]
        try:
            info = loads(payload)
        except ValueError:
            return [Malformed("Engine.IO open packet is not JSON")]
        if not isinstance(info, dict):
            return [Malformed("Engine.IO open packet is not a JSON object")]
        actions: list[Action] = [Phase("open")]
        sid = info.get("sid")
        self.engineio_sid = sid if isinstance(sid, str) else None
        self.ping_interval_s = _milliseconds(info.get("pingInterval"), "pingInterval", actions)
        self.ping_timeout_s = _milliseconds(info.get("pingTimeout"), "pingTimeout", actions)
        max_payload = info.get("maxPayload")
        if isinstance(max_payload, int) and not isinstance(max_payload, bool):
            self.max_payload = max_payload
        try:
            connect = encode_packet(CONNECT, self._namespace, self._connect_auth())
        except Exception as exc:  # noqa: BLE001 - the user's auth callable included
            return [Refused(f"cannot make the Socket.IO auth payload: {exc!r}")]
        self._stage = "connect"
        return [*actions, Outbound(connect)]

    @staticmethod
    def _on_ping(payload: str) -> list[Action]:
        return [Outbound(EIO_PONG + payload)]  # normally answered by autoreply() first

    @staticmethod
    def _on_close(payload: str) -> list[Action]:
        return [Disconnected("server closed the Engine.IO session")]

    @staticmethod
    def _ignore(payload: str) -> list[Action]:
        return []

    def _on_event_packet(self, packet: Packet) -> list[Action]:
        args = packet.data
        if not isinstance(args, list) or not args or not isinstance(args[0], str):
            return [Malformed("EVENT data must be a JSON array starting with a name")]
        return self._on_event(args[0], unpack_args(args[1:]), packet.ack_id)

    @staticmethod
    def _on_ack(packet: Packet) -> list[Action]:
        if packet.ack_id is None:
            return [Malformed("ACK without an ack id")]
        args = [] if packet.data is None else packet.data
        if not isinstance(args, list):
            return [Malformed("ACK data must be a JSON array"),
                    Acked(packet.ack_id, None, error="malformed ack: data is not an array")]
        return [Acked(packet.ack_id, unpack_args(args))]

    def _on_connect_reply(self, packet: Packet) -> list[Action]:
        if self._stage != "connect":
            return [Malformed("unexpected namespace CONNECT reply")]
        sid = packet.data.get("sid") if isinstance(packet.data, dict) else None
        self.socketio_sid = sid if isinstance(sid, str) else None
        self._stage = "connected"
        return [Phase("namespace"), *self._on_connected()]

    @staticmethod
    def _on_connect_error(packet: Packet) -> list[Action]:
        return [Refused(_refusal_message(packet.data))]

    def _on_disconnect(self, packet: Packet) -> list[Action]:
        if packet.data is None:
            return [Disconnected("server disconnected the namespace")]
        message = _refusal_message(packet.data)
        if self._stage == "connect" or self._packets_since_connect <= 1:
            # python-socketio with always_connect=True accepts the CONNECT, then at
            # once sends DISCONNECT with the handler's refusal: a refusal, not a loss.
            return [Refused(message)]
        return [Disconnected(f"server disconnected the namespace: {message}")]

    def _on_connected(self) -> list[Action]:
        """Actions once the server accepted the namespace."""
        return [Ready()]

    def _on_event(self, name: str, data: Any, ack_id: int | None) -> list[Action]:
        """Actions for one event of our namespace."""
        return [Inbound(name, data, ack_id)]

    # --- outbound ---------------------------------------------------------------------

    def encode(self, event: str | None, data: Any, ack_id: int | None = None) -> Frames:
        if not isinstance(event, str):
            msg = "Socket.IO sends are events: use emit(event, data), not send()"
            raise TypeError(msg)
        return self.encode_event(event, data, ack_id)

    def encode_event(self, event: str, data: Any = None, ack_id: int | None = None) -> Frames:
        """The frames for ``event``: no argument when ``data`` is None, else one.

        Data holding ``bytes`` (at any depth) goes as a binary event with attachments.
        """
        args: list[Any] = [event] if data is None else [event, data]
        try:
            return encode_frames(EVENT, self._namespace, args, ack_id)
        except TypeError as exc:
            msg = f"event data must be JSON-serializable or bytes: {exc}"
            raise TypeError(msg) from exc

    def encode_ack(self, ack_id: int, data: Any) -> Frames:
        try:
            return encode_frames(ACK, self._namespace, pack_args(data), ack_id)
        except TypeError as exc:
            msg = f"ack data must be JSON-serializable or bytes: {exc}"
            raise TypeError(msg) from exc

    def autoreply(self, frame: str | bytes) -> str | bytes | None:
        return autoreply(frame)

    def closing(self) -> list[str | bytes]:
        return [encode_packet(DISCONNECT, self._namespace)]


def autoreply(frame: str | bytes) -> str | None:
    """Engine.IO pong for a ping (``2`` -> ``3``, payload echoed), else None. Pure."""
    if isinstance(frame, str) and frame[:1] == EIO_PING:
        return EIO_PONG + frame[1:]
    return None


def _milliseconds(value: Any, name: str, actions: list[Action]) -> float | None:
    """Seconds from a server's millisecond setting; out of range is counted and ignored."""
    if value is None:
        return None
    if (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 <= value <= MAX_TIMER_MS):
        return value / 1000
    # The value itself is not shown: str() of a huge int raises (Python's digit limit).
    actions.append(Malformed(f"Engine.IO open packet: {name} is not a number of ms in range"))
    return None


def _refusal_message(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    if isinstance(data, str):
        return data
    if data is None:
        return "connection refused"
    try:
        return json.dumps(data)[:1000]  # not dumps(): a peer's NaN must not make this raise
    except (ValueError, RecursionError):
        return "connection refused (unreadable reason)"
