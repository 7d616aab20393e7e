"""Plain HTTP around a handshake: Chainlit version detection, origins, TLS (internal).

Chainlit's identity style is found with one ``GET /user`` per origin (the
WebSocket upgrade itself is websocket-client's). It runs in a connection's own
thread, never in an actor, and against the handshake's deadline: each blocking
step gets only the time left, so a server that trickles one byte a second
cannot stretch a handshake past ``connect_timeout``. Sockets are handed to
``register`` as soon as they exist, so an abort can shut them down mid-read.
The response head is bounded; a redirect is refused, never followed.
"""

from __future__ import annotations

import functools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from supervisor.errors import HandshakeError, HandshakeRedirected, HandshakeRefused
from supervisor.protocols.socketio import http_base_url

MAX_RESPONSE_HEADER_BYTES = 16 * 1024
"""An HTTP response whose head is longer than this is refused (a hostile server)."""
MAX_REFUSAL_BODY = 1024
"""Bytes of a refusal's body kept on ``HandshakeRefused`` (the upgrade's refusals too)."""
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}
_TLS_SCHEMES = frozenset({"wss", "https"})

Register = Callable[[socket.socket | None], None]
"""Tells the connection which socket an abort must shut down (None: none any more)."""


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How ``wss://`` and ``https://`` peers are verified."""

    verify: bool = True
    ca_file: str | None = None
    """A PEM bundle of CAs to trust instead of the system's."""


@functools.lru_cache(maxsize=32)
def tls_context(options: TlsOptions) -> ssl.SSLContext:
    """One context per set of options (loading a CA bundle costs milliseconds)."""
    context = ssl.create_default_context(cafile=options.ca_file)
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme family, host and port: what a credential is bound to."""

    secure: bool
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            msg = f"not a ws, wss, http or https URL with a host: {url!r}"
            raise ValueError(msg)
        return cls(scheme in _TLS_SCHEMES, parts.hostname.lower(),
                   parts.port or _DEFAULT_PORTS[scheme])


@dataclass(frozen=True, slots=True)
class Response:
    """Internal: an HTTP response head, plus the bytes read after it."""

    status: int
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    rest: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def remaining(deadline: float, what: str) -> float:
    """Seconds left before ``deadline``, or a ``HandshakeError`` naming ``what``."""
    left = deadline - time.monotonic()
    if left <= 0:
        msg = f"{what} did not complete within the connect timeout"
        raise HandshakeError(msg)
    return left


def open_socket(url: str, deadline: float, tls: TlsOptions, register: Register) -> socket.socket:
    """TCP (and TLS for wss/https) to the host of ``url``, inside ``deadline``."""
    parts = urlsplit(url)
    origin = Origin.of(url)
    try:
        addresses = socket.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        msg = f"cannot resolve {origin.host}: {exc}"
        raise HandshakeError(msg) from exc
    error: Exception | None = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        register(sock)
        try:
            sock.settimeout(remaining(deadline, "TCP connect"))
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            break
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    else:
        msg = f"cannot connect to {origin.host}:{origin.port}: {error}"
        raise HandshakeError(msg) from error
    if not origin.secure:
        return sock
    try:
        sock.settimeout(remaining(deadline, "TLS handshake"))
        secure = tls_context(tls).wrap_socket(sock, server_hostname=parts.hostname)
    except OSError as exc:  # ssl.SSLError included
        sock.close()
        msg = f"TLS handshake with {origin.host}:{origin.port} failed: {exc}"
        raise HandshakeError(msg) from exc
    except BaseException:
        sock.close()
        raise
    register(secure)
    return secure


def request_target(url: str) -> tuple[str, str]:
    """The ``Host`` header and the request target (path and query) of ``url``."""
    parts = urlsplit(url)
    origin = Origin.of(url)
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    if parts.port is not None and parts.port != _DEFAULT_PORTS[parts.scheme.lower()]:
        host = f"{host}:{parts.port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return host, target


def exchange(sock: socket.socket, request: bytes, deadline: float, what: str) -> Response:
    """Write ``request`` and read the response head, both inside ``deadline``."""
    try:
        sock.settimeout(remaining(deadline, what))
        sock.sendall(request)
        buffer = b""
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_RESPONSE_HEADER_BYTES:
                msg = f"{what}: response head over {MAX_RESPONSE_HEADER_BYTES} bytes"
                raise HandshakeError(msg)
            sock.settimeout(remaining(deadline, what))
            chunk = sock.recv(4096)
            if not chunk:
                msg = f"{what}: the server closed the connection before answering"
                raise HandshakeError(msg)
            buffer += chunk
    except TimeoutError as exc:
        msg = f"{what} did not complete within the connect timeout"
        raise HandshakeError(msg) from exc
    except OSError as exc:
        msg = f"{what} failed: {exc}"
        raise HandshakeError(msg) from exc
    return _parse_head(buffer[:end], buffer[end + 4:], what)


def _parse_head(head: bytes, rest: bytes, what: str) -> Response:
    lines = head.decode("latin-1").split("\r\n")
    fields = lines[0].split(" ", 2)
    # Exactly three ASCII digits: str.isdigit() also accepts "²", which int() refuses.
    if len(fields) < 2 or not fields[0].startswith("HTTP/") \
            or len(fields[1]) != 3 or not all("0" <= c <= "9" for c in fields[1]):
        msg = f"{what}: not an HTTP response: {lines[0][:80]!r}"
        raise HandshakeError(msg)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return Response(int(fields[1]), headers, rest)


def refusal(response: Response) -> HandshakeRefused:
    """The typed error for a non-101 answer (redirects carry their ``Location``)."""
    if response.status in REDIRECT_STATUSES:
        return HandshakeRedirected(response.status, response.headers,
                                   response.header("location"))
    return HandshakeRefused(response.status, response.headers,
                            response.rest[:MAX_REFUSAL_BODY])


# --- Chainlit version detection ---------------------------------------------------------

_versions: dict[tuple[str, TlsOptions], str] = {}
_versions_lock = threading.Lock()
_MAX_CACHED_VERSIONS = 1024
"""More servers than this in one process: the cache starts over (it is only a cache)."""


def server_base(url: str) -> str:
    """The HTTP base URL of a server named by a ws(s)/http(s) URL (Socket.IO path dropped)."""
    base = http_base_url(url, "ws/socket.io")
    base = http_base_url(base, "socket.io")
    if not base.startswith(("http://", "https://")):
        msg = f"not a server URL (http, https, ws or wss with a host): {url!r}"
        raise ValueError(msg)
    return base


def lookup_chainlit_version(base: str, deadline: float, tls: TlsOptions,
                            register: Register) -> str:
    """``"2"`` or ``"1"``: which identity style the Chainlit server at ``base`` speaks.

    Asks ``GET /user`` once per origin and TLS options (cached): Chainlit 2.x
    answers JSON (a user, or a JSON 401), 1.x serves its HTML page there. Only
    the response head is read, inside ``deadline``; a redirect is refused.
    """
    base = base.rstrip("/")
    key = (base, tls)
    with _versions_lock:
        if key in _versions:
            return _versions[key]
    url = f"{base}/user"
    sock = open_socket(url, deadline, tls, register)
    try:
        host, target = request_target(url)
        request = (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
                   "Connection: close\r\n\r\n").encode()
        response = exchange(sock, request, deadline, f"Chainlit version detection at {base}")
    finally:
        register(None)
        sock.close()
    if response.status in REDIRECT_STATUSES:
        raise refusal(response)
    version = "1" if "text/html" in response.header("content-type") else "2"
    with _versions_lock:
        if len(_versions) >= _MAX_CACHED_VERSIONS:
            _versions.clear()
        _versions[key] = version
    return version


def detect_chainlit_version(url: str, timeout: float = 10.0,
                            tls: TlsOptions = TlsOptions()) -> str:
    """``"2"`` or ``"1"`` for the Chainlit server named by ``url``, within ``timeout``."""
    return lookup_chainlit_version(server_base(url), time.monotonic() + timeout, tls,
                                   lambda _sock: None)
