"""The transport: one websocket-client connection and its reader thread (internal).

It owns websocket-client and nothing else. It never touches session state: it
reports to the session actor through ``report`` (the actor's ``tell``), every
report stamped with the generation the connection was opened for.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import websocket
import websocket._handshake as _ws_handshake

from supervisor._admission import Admission, AdmissionCancelled
from supervisor._http import detect_chainlit_version
from supervisor.errors import ConnectionLost, HandshakeError, HandshakeRefused
from supervisor.protocols.base import Codec


class _NoCookieJar(websocket._cookiejar.SimpleCookieJar):
    """A jar that keeps nothing: cookies travel only in each session's own handshake.

    websocket-client stores every ``Set-Cookie`` with a domain in one
    process-wide jar and adds it to every later handshake to that host, so a
    cookie set for one session would be sent by all the others (I8).
    """

    def add(self, set_cookie: str | None) -> None:
        return None

    def set(self, set_cookie: str) -> None:
        return None

    def get(self, host: str) -> str:
        return ""


def isolate_cookies() -> None:
    """Replace websocket-client's process-wide cookie jar with one that keeps nothing."""
    if not isinstance(_ws_handshake.CookieJar, _NoCookieJar):
        _ws_handshake.CookieJar = _NoCookieJar()


isolate_cookies()

_CLEAN_CLOSE_CODES = frozenset({1000, 1001})


# --- reports to the session actor (internal messages) ----------------------------


@dataclass(frozen=True, slots=True)
class Admitted:
    """Internal: admission control let the handshake of ``generation`` start."""

    generation: int


@dataclass(frozen=True, slots=True)
class Opened:
    """Internal: the WebSocket upgrade of ``generation`` succeeded."""

    generation: int
    connection: Connection
    response_headers: Mapping[str, str]
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
    """Internal: one text (str) or binary (bytes) frame on ``generation``."""

    generation: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class Ended:
    """Internal: the connection of ``generation`` ended; ``clean``: closed normally by the peer."""

    generation: int
    error: Exception | None
    clean: bool


@dataclass(frozen=True, slots=True)
class Written:
    """Internal: the frame sent with ``token`` on ``generation`` is fully written."""

    generation: int
    token: object


Report = Admitted | Opened | OpenFailed | Received | Ended | Written


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Internal: what a connection needs of its session's spec."""

    connect_timeout: float
    verify_tls: bool = True

    @classmethod
    def from_spec(cls, spec: Any) -> TransportOptions:
        """The options of ``spec`` (a ``SessionSpec``; only read)."""
        return cls(connect_timeout=spec.connect_timeout, verify_tls=spec.verify_tls)


class Connection:
    """Internal: one connection attempt and, if it opens, its reader loop.

    Connect and reads run in the connection's own thread, so the actor's
    mailbox never blocks on the network.
    """

    def __init__(self, codec: Codec, generation: int,
                 report: Callable[[Report], None], admission: Admission,
                 options: TransportOptions) -> None:
        self.generation = generation
        self._codec = codec
        self._report = report
        self._admission = admission
        self._connect_timeout = options.connect_timeout
        self._verify_tls = options.verify_tls
        self._cancelled = threading.Event()
        self._admitted_at = 0.0
        self._ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ws-gen{generation}")

    def start(self) -> None:
        self._thread.start()

    def send(self, frame: str | bytes, token: object | None = None) -> None:
        """Write one frame; report ``Written`` for ``token`` once done. Never raises.

        A failed write ends the connection: the reader then reports ``Ended``.
        """
        try:
            self._write(frame)
        except ConnectionLost:
            self._shutdown()
            return
        if token is not None:
            self._report(Written(self.generation, token))

    def consumed(self, nbytes: int) -> None:
        """The session handled a ``Received`` of ``nbytes``: give the reader its credit back."""

    def _write(self, frame: str | bytes) -> None:
        opcode = websocket.ABNF.OPCODE_TEXT if isinstance(frame, str) else \
            websocket.ABNF.OPCODE_BINARY
        try:
            self._ws.send(frame, opcode)
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionLost(f"send failed: {exc}") from exc

    def close(self, last_frames: Sequence[str | bytes] = ()) -> None:
        """Write ``last_frames`` and a close frame (best effort), then stop the reader."""
        self._cancelled.set()
        try:
            for frame in last_frames:
                self._write(frame)
            if self._ws.connected:
                self._ws.send_close()
        except (OSError, websocket.WebSocketException, ConnectionLost):
            pass  # the peer is gone already; shutting down below is all that is left
        self._shutdown()

    def abort(self) -> None:
        """Stop at once, mid-handshake included: no close frame."""
        self._cancelled.set()
        self._admission.wake_all()
        self._shutdown()

    def _shutdown(self) -> None:
        # websocket-client's abort() does nothing after send_close() or during
        # the handshake (it checks ``connected``); shutting the socket down
        # wakes a blocked reader in every case.
        sock = self._ws.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        try:
            self._open()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, typed
            self._ws.shutdown()  # type: ignore[no-untyped-call]
            self._report(OpenFailed(self.generation, _handshake_error(exc)))
            return
        self._report(Opened(self.generation, self, dict(self._ws.getheaders() or {}),
                            self._admitted_at, time.monotonic()))
        self._read()

    def _open(self) -> None:
        try:
            self._admission.acquire(self._cancelled)
        except AdmissionCancelled:
            msg = "aborted while waiting for admission"
            raise HandshakeError(msg) from None
        self._admitted_at = time.monotonic()
        self._report(Admitted(self.generation))
        try:
            # Version detection (Chainlit "auto") is I/O: it runs here, not in the codec.
            handshake = self._codec.handshake(detect_chainlit_version)
            # An abort during that, or during the TCP connect below (before
            # websocket-client exposes the socket), is seen here and after it.
            self._check_cancelled()
            options: dict[str, Any] = {
                "header": [f"{name}: {value}" for name, value in handshake.headers],
                "timeout": self._connect_timeout,
            }
            if (cookie := handshake.cookie_header()) is not None:
                options["cookie"] = cookie
            if not self._verify_tls:
                options["sslopt"] = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
            self._ws.connect(handshake.url, **options)  # type: ignore[no-untyped-call]
            self._check_cancelled()
        finally:
            self._admission.release()
        # The connect timeout bounds the handshake; reads wait for as long as
        # the connection lives (the actor or the peer ends it).
        self._ws.settimeout(None)

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            msg = "handshake aborted"
            raise HandshakeError(msg)

    def _read(self) -> None:
        error: Exception | None = None
        clean = False
        autoreply = self._codec.autoreply
        try:
            while True:
                opcode, data = self._ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    text = data.decode("utf-8", "replace")
                    if (reply := autoreply(text)) is not None:
                        # Heartbeats are answered here, not in the mailbox, so a
                        # busy actor never misses the server's ping timeout.
                        self._ws.send(reply)
                        continue
                    self._report(Received(self.generation, text))
                elif opcode == websocket.ABNF.OPCODE_BINARY:
                    self._report(Received(self.generation, bytes(data)))
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    clean = code in _CLEAN_CLOSE_CODES
                    if not clean:
                        error = ConnectionLost(f"server closed the connection with code {code}")
                    break
        except Exception as exc:  # noqa: BLE001 - every way a read ends is reported
            if not self._cancelled.is_set():
                error = ConnectionLost(f"connection lost: {exc or type(exc).__name__}")
                error.__cause__ = exc
        finally:
            self._ws.shutdown()  # type: ignore[no-untyped-call]
        self._report(Ended(self.generation, error, clean))


def _handshake_error(exc: Exception) -> Exception:
    if isinstance(exc, HandshakeError):
        return exc
    if isinstance(exc, websocket.WebSocketBadStatusException):
        refused = HandshakeRefused(exc.status_code, exc.resp_headers, exc.resp_body or b"")
        refused.__cause__ = exc
        return refused
    error = HandshakeError(f"handshake failed: {exc or type(exc).__name__}")
    error.__cause__ = exc
    return error
