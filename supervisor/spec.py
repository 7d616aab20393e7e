"""``SessionSpec``: what a session is, validated before any I/O (I8)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from supervisor.messages import Event, Lifecycle
from supervisor.protocols.config import DEFAULT_THREAD_HEADER, AuthPayload, ProtocolConfig

ProtocolName = Literal["websocket", "socketio", "chainlit"]
ChainlitVersion = Literal["auto", "2", "1"]
PROTOCOLS: tuple[ProtocolName, ...] = ("websocket", "socketio", "chainlit")

_HEADER_NAME_FORBIDDEN = set('()<>@,;:\\"/[]?={} \t')

# --- bounds on what a session sends (hostile-peer work, issue 8) --------------------
MAX_THREAD_ID_LENGTH = 1024
"""Longer thread ids are refused before any I/O (servers answer 431, forever)."""
MAX_HEADER_VALUE_LENGTH = 8192
"""Longer header or cookie values are refused before any I/O."""
MAX_URL_LENGTH = 8192
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
"""RFC 3986 path characters: a path field can change the path, nothing else."""


def check_value(value: str, what: str, max_length: int | None = None) -> str:
    """Refuse CR, LF, every other control character but tab, DEL and C1 controls (I8).

    A header value with CR or LF would let one session inject headers (or a
    second request) into its handshake; C1 controls (U+0085 is a newline to
    some parsers) and DEL are refused with them. Refusing before any I/O keeps
    the handshake exactly what the state says.
    """
    if not isinstance(value, str):
        msg = f"{what} must be a str, not {type(value).__name__}"
        raise TypeError(msg)
    if max_length is not None and len(value) > max_length:
        msg = f"{what} is {len(value)} characters long, over the limit of {max_length}"
        raise ValueError(msg)
    for char in value:
        code = ord(char)
        if (code < 32 and char != "\t") or 127 <= code <= 159:
            msg = f"{what} contains control character {char!r}: {value[:100]!r}"
            raise ValueError(msg)
    return value


def _check_url(url: str) -> SplitResult:
    """A URL field: no controls, no whitespace, a bounded length, a valid port."""
    parts = urlsplit(check_value(url, "url", MAX_URL_LENGTH))
    if any(char.isspace() for char in url):
        msg = f"url must not contain whitespace: {url!r}"
        raise ValueError(msg)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        msg = f"url has an invalid port: {url!r}"
        raise ValueError(msg) from exc
    return parts


def check_path(path: str, what: str) -> str:
    """A URL path field: path characters only (no query, fragment, space or ``..``)."""
    check_value(path, what, MAX_URL_LENGTH)
    if not _PATH_CHARS.fullmatch(path) or ".." in path.split("/"):
        msg = f"{what} must be a plain URL path, got {path!r}"
        raise ValueError(msg)
    return path


def check_thread_id(thread_id: str | None) -> str | None:
    """Validate a thread id for a handshake; None means a new conversation."""
    if thread_id is None:
        return None
    check_value(thread_id, "thread id", MAX_THREAD_ID_LENGTH)
    if not thread_id:
        msg = "thread id must not be empty (use None for a new conversation)"
        raise ValueError(msg)
    return thread_id


def _check_header_name(name: str) -> str:
    check_value(name, "header name")
    if not name or any(char in _HEADER_NAME_FORBIDDEN for char in name):
        msg = f"invalid header name: {name!r}"
        raise ValueError(msg)
    return name


def check_timeout(value: float | None, what: str) -> float | None:
    """A deadline must be a positive number of seconds (None: the default applies)."""
    if value is not None and not value > 0:
        msg = f"{what} must be positive, got {value}"
        raise ValueError(msg)
    return value


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """Everything needed to open (and re-open) one supervised session."""

    url: str
    """``ws://`` or ``wss://`` address of the server's WebSocket endpoint."""
    protocol: ProtocolName = "websocket"
    """Wire protocol: plain ``websocket`` frames, ``socketio`` or ``chainlit``."""
    thread_id: str | None = None
    """Thread to connect with at once; None: no thread header, a new conversation."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra handshake headers, sent by this session alone."""
    cookies: Mapping[str, str] = field(default_factory=dict)
    """Cookies sent by this session alone (never via websocket-client's global jar)."""
    on_event: Callable[[Event], Any] | None = None
    """Called in the session's actor with one ``Event`` per inbound frame or event."""
    on_lifecycle: Callable[[Lifecycle], Any] | None = None
    """Called in the session's actor on each connect, loss, restart, failure and close."""
    thread_header: str = DEFAULT_THREAD_HEADER
    """Handshake header that carries the thread id."""
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    """The supervisor's name for this session (logs, ``Event.session_id``)."""
    connect_timeout: float = 10.0
    """Seconds a handshake may take; a silent server never hangs a session."""
    outbox_limit: int = 1000
    """Sends buffered while reconnecting; one more fails with ``OutboxFull``."""
    verify_tls: bool = True
    """Verify ``wss://`` certificates (turn off only for self-signed test servers)."""
    # --- Socket.IO and Chainlit -----------------------------------------------------
    socketio_path: str | None = None
    """Engine.IO endpoint path; default ``socket.io`` (``ws/socket.io`` for Chainlit)."""
    namespace: str = "/"
    """Socket.IO namespace to connect."""
    auth: AuthPayload = None
    """Socket.IO connect ``auth`` payload (Chainlit builds its own).

    Either a mapping sent on every connect, or a callable taking the handshake's
    ``supervisor.protocols.Identity`` (``thread_id``, ``protocol_session_id``)
    and returning the mapping (or None): it is called for each handshake, so a
    Resume changes what the server reads from the auth, the usual Socket.IO way
    to name a thread. ``protocol_session_id`` is rotated on every Resume and kept
    across reconnects after a drop."""
    on_ask: Callable[[Event], Any] | None = None
    """Answers server events that ask for an acknowledgement (Chainlit ``ask``)."""
    chainlit_version: ChainlitVersion = "auto"
    """Chainlit identity style: ``"2"`` (auth payload), ``"1"`` (headers), ``"auto"``."""
    client_type: str = "webapp"
    """Chainlit ``clientType``."""
    user_env: Mapping[str, str] = field(default_factory=dict)
    """Chainlit ``userEnv`` (sent as a JSON string)."""
    chat_profile: str | None = None
    """Chainlit chat profile."""
    confirm_resume: bool = True
    """Chainlit: a resume resolves on ``resume_thread``/``resume_thread_error``.

    Turn off for apps without ``@cl.on_chat_resume`` (they never answer; the
    resume would end in the connect timeout)."""
    # --- bounds against hostile or unhealthy peers, and TLS (issue 8) ------------------
    write_timeout: float = 10.0
    """Seconds one frame may take to write; a peer that stops reading breaks the connection."""
    write_buffer_bytes: int = 64 * 1024 * 1024
    """Bytes queued for writing at most; past it the connection is ended as broken."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest inbound message (fragments joined); a bigger one ends the connection."""
    inbound_max_frames: int = 1000
    """Inbound frames not yet handled at most; then the transport stops reading."""
    inbound_max_bytes: int = 16 * 1024 * 1024
    """Inbound data not yet handled at most (``len`` of each frame: characters of a text
    frame, bytes of a binary one); then the transport stops reading."""
    ca_file: str | None = None
    """A PEM file of CA certificates to verify ``wss://`` servers with (instead of the system's)."""
    follow_redirects: bool = False
    """Follow a redirected upgrade, within the same origin only (scheme, host, port)."""
    # --- deadlines (core): every future settles by one; override per call -------------
    resume_timeout: float = 30.0
    """Seconds a ``resume()`` future may wait to connect; then ``ResumeTimeout`` (the
    session keeps trying per its restart policy)."""
    reply_timeout: float = 60.0
    """Seconds ``call()`` waits for the server's ack and ``chat()`` for the end of
    its turn; then ``ReplyTimeout``."""
    send_timeout: float = 30.0
    """Seconds ``send()``/``emit()`` may wait, buffered or being written; then
    ``SendTimeout``."""
    protocol_config: ProtocolConfig = field(init=False, repr=False, compare=False)
    """What the codecs read of this spec (computed; the protocol layer never sees the spec)."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            msg = f"protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}"
            raise ValueError(msg)
        parts = _check_url(self.url)
        # Socket.IO servers are usually named by their HTTP base URL.
        schemes = ("ws", "wss") if self.protocol == "websocket" else ("ws", "wss", "http", "https")
        if parts.scheme not in schemes or not parts.hostname:
            msg = (f"url must be {' or '.join(s + '://HOST[:PORT]/...' for s in schemes)} "
                   f"for protocol {self.protocol!r}, got {self.url!r}")
            raise ValueError(msg)
        if self.chainlit_version not in ("auto", "2", "1"):
            msg = f"chainlit_version must be 'auto', '2' or '1', got {self.chainlit_version!r}"
            raise ValueError(msg)
        for name, value in self.user_env.items():
            check_value(name, "user_env key")
            check_value(value, f"user_env {name}")
        if self.chat_profile is not None:
            check_value(self.chat_profile, "chat_profile")
        check_value(self.client_type, "client_type")
        check_thread_id(self.thread_id)
        _check_header_name(self.thread_header)
        for name, value in self.headers.items():
            _check_header_name(name)
            check_value(value, f"header {name}", MAX_HEADER_VALUE_LENGTH)
        for name, value in self.cookies.items():
            check_value(name, "cookie name", MAX_HEADER_VALUE_LENGTH)
            check_value(value, f"cookie {name}", MAX_HEADER_VALUE_LENGTH)
            if any(char in name for char in "=; ") or any(char in value for char in ";"):
                msg = f"invalid cookie {name!r}={value!r}"
                raise ValueError(msg)
        check_value(self.session_id, "session id")
        if self.connect_timeout <= 0:
            msg = f"connect_timeout must be positive, got {self.connect_timeout}"
            raise ValueError(msg)
        for name in ("resume_timeout", "reply_timeout", "send_timeout"):
            check_timeout(getattr(self, name), name)
        if self.outbox_limit < 0:
            msg = f"outbox_limit must be zero or more, got {self.outbox_limit}"
            raise ValueError(msg)
        self._check_bounds()
        # Freeze the mappings so a caller mutating their dict cannot change
        # identity behind the actor's back (I1).
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "cookies", MappingProxyType(dict(self.cookies)))
        object.__setattr__(self, "user_env", MappingProxyType(dict(self.user_env)))
        object.__setattr__(self, "protocol_config", ProtocolConfig(
            url=self.url, protocol=self.protocol, thread_header=self.thread_header,
            headers=tuple(self.headers.items()), cookies=tuple(self.cookies.items()),
            socketio_path=self.socketio_path, namespace=self.namespace, auth=self.auth,
            chainlit_version=self.chainlit_version, client_type=self.client_type,
            user_env=tuple(self.user_env.items()), chat_profile=self.chat_profile))

    def _check_bounds(self) -> None:
        """The path fields and the transport bounds (issue 8)."""
        if self.socketio_path is not None:
            check_path(self.socketio_path, "socketio_path")
        check_path(self.namespace, "namespace")
        check_value(self.session_id, "session id", MAX_THREAD_ID_LENGTH)
        for name in ("write_timeout", "write_buffer_bytes", "max_message_bytes",
                     "inbound_max_frames", "inbound_max_bytes"):
            if getattr(self, name) <= 0:
                msg = f"{name} must be positive, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.ca_file is not None:
            check_value(self.ca_file, "ca_file")
