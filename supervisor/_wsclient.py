"""What the transport adds on top of websocket-client (internal).

websocket-client makes the socket and runs the upgrade (``_frames`` encodes our
frames and decodes the server's). It keeps a process-wide cookie jar, reads an
upgrade response without a bound, and its timeouts are per read: the pieces
here close those gaps without replacing it.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import websocket
import websocket._handshake as _ws_handshake
import websocket._http as _ws_http
import websocket._socket as _ws_socket
import websocket._url as _ws_url

from supervisor._frames import encode_frame
from supervisor._http import TlsOptions
from supervisor._logging import get_logger
from supervisor.errors import HandshakeError

_log = get_logger("supervisor.transport")
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009


# --- cookies ---------------------------------------------------------------------------


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


# --- upgrade response bound ----------------------------------------------------------------

MAX_UPGRADE_RESPONSE_BYTES = 64 * 1024
"""Bytes of an upgrade response websocket-client may read: head, and a refusal's body."""

UPGRADE_READ = 4096
"""Bytes asked of the socket per read during the upgrade (websocket-client asks for one)."""
_original_recv = _ws_socket.recv
_original_recv_line = _ws_socket.recv_line
_budget = threading.local()  # greenlet-local under gevent


def _bounded_recv(sock: Any, bufsize: int) -> bytes:
    """websocket-client's ``recv``, buffered and counted against the thread's upgrade budget.

    websocket-client reads the response head a byte at a time (a system call,
    and on the threads runtime a GIL round trip, per byte) with no limit on
    lines or their length, and a refusal's whole ``Content-Length`` body. With a
    budget set (only inside :func:`bounded_upgrade`) the socket is read
    ``UPGRADE_READ`` bytes at a time into a buffer websocket-client takes its
    bytes from, and a peer gets no further than the bound. Bytes read past the
    head are the server's first frames: :func:`bounded_upgrade` hands them on.
    """
    if getattr(_budget, "left", None) is None:
        return bytes(_original_recv(sock, bufsize))
    if _budget.position >= len(_budget.held):
        _refill(sock, bufsize)
    held: bytes = _budget.held
    position: int = _budget.position
    data = held[position:position + bufsize]
    _budget.position = position + len(data)
    return data


def _bounded_recv_line(sock: Any) -> bytes:
    """websocket-client's ``recv_line``: inside :func:`bounded_upgrade`, a line at once.

    Its own asks ``recv`` for one byte per call: cheap system calls once
    buffered, but still a few Python calls per byte of every header line.
    """
    if getattr(_budget, "left", None) is None:
        return bytes(_original_recv_line(sock))
    parts: list[bytes] = []
    while True:
        if _budget.position >= len(_budget.held):
            _refill(sock, UPGRADE_READ)
        held: bytes = _budget.held
        position: int = _budget.position
        end = held.find(b"\n", position)
        stop = len(held) if end < 0 else end + 1
        parts.append(held[position:stop])
        _budget.position = stop
        if end >= 0:
            return b"".join(parts)


def _refill(sock: Any, wanted: int) -> None:
    """Read the next chunk of the upgrade response into the buffer, within the budget."""
    left: int = _budget.left
    if left <= 0:
        msg = f"upgrade response over {MAX_UPGRADE_RESPONSE_BYTES} bytes"
        raise HandshakeError(msg)
    # websocket-client's recv raises on EOF, so this never loops on an empty read.
    held = bytes(_original_recv(sock, min(max(wanted, UPGRADE_READ), left)))
    _budget.left = left - len(held)
    _budget.held, _budget.position = held, 0


_ws_socket.recv = _bounded_recv  # recv_line and the refusal body look it up at call time
# read_headers imported recv_line by name (and websocket._http does not re-export it)
_ws_http.recv_line = _bounded_recv_line  # type: ignore[attr-defined]


@contextlib.contextmanager
def bounded_upgrade() -> Iterator[list[bytes]]:
    """Within this block, this thread's websocket-client reads are buffered and bounded.

    Yields a list that holds, once the block has ended, the bytes read past the
    upgrade response (the start of the WebSocket stream), if any.
    """
    leftover: list[bytes] = []
    _budget.left = MAX_UPGRADE_RESPONSE_BYTES
    _budget.held, _budget.position = b"", 0
    try:
        yield leftover
    finally:
        held, position = _budget.held, _budget.position
        if position < len(held):
            leftover.append(held[position:])
        _budget.left = None
        _budget.held, _budget.position = b"", 0


# --- addresses -----------------------------------------------------------------------------

_original_addrinfo_list = _ws_http._get_addrinfo_list


def _addrinfo_list(hostname: str, port: int, is_secure: bool, proxy: Any) -> Any:
    """websocket-client's address lookup, without a resolver call for an IP literal.

    Under gevent every ``getaddrinfo`` goes through gevent's resolver thread
    pool, even for ``127.0.0.1``: measured at 2.9 % of a load test's main
    thread, once per connect and per Resume. With no proxy in play an IP
    literal is its own address; anything else is websocket-client's to resolve.
    """
    try:
        address = ipaddress.ip_address(hostname)
        proxy_host = _ws_url.get_proxy_info(hostname, is_secure, proxy.proxy_host,
                                             proxy.proxy_port, proxy.auth,
                                             proxy.no_proxy)[0]
    except (ValueError, TypeError):
        return _original_addrinfo_list(hostname, port, is_secure, proxy)
    if proxy_host:
        return _original_addrinfo_list(hostname, port, is_secure, proxy)
    if address.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                 (hostname, port, 0, 0))], False, None
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
             (hostname, port))], False, None


_ws_http._get_addrinfo_list = _addrinfo_list  # looked up at call time by connect()


class Upgrader(websocket.WebSocket):
    """websocket-client's ``WebSocket`` for its upgrade only: ``_frames`` reads the frames.

    Its frame reader holds a bound method of the ``WebSocket`` itself, a reference
    cycle; without the reader, a connection's objects are freed by reference
    counting as it ends instead of waiting for the cycle collector.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        del self.frame_buffer


# --- framing (encoding; ``_frames`` decodes) ----------------------------------------------


def frame_bytes(payload: bytes | str, opcode: int) -> bytes:
    """One final client frame, masked with a fresh key from the OS's randomness."""
    return encode_frame(payload, opcode, os.urandom(4))


def close_payload(code: int) -> bytes:
    return struct.pack("!H", code)


def close_code(payload: bytes | str) -> int:
    """The status code of a received close frame (1005: none given)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005


def sslopt(tls: TlsOptions) -> dict[str, Any]:
    """websocket-client's TLS options (read by the ``WebSocket`` constructor)."""
    if not tls.verify:
        return {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    if tls.ca_file is not None:
        return {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": tls.ca_file}
    return {}


# --- deadlines -----------------------------------------------------------------------------


class Deadlines:
    """One thread for every handshake deadline (a timer thread each would cost a thread).

    A callback returns True to be called again shortly: the socket it must
    shut down may not exist yet (websocket-client exposes it after TCP and TLS).
    ``cancel`` is O(1) and drops the callback at once, so a finished handshake
    holds nothing here.
    """

    RETRY = 0.05

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], bool]] = {}
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, callback: Callable[[], bool]) -> int:
        with self._cond:
            key = next(self._order)
            self._callbacks[key] = callback
            heapq.heappush(self._heap, (deadline, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="supervisor-deadlines")
                self._thread.start()
            if self._heap[0][1] == key:
                self._cond.notify()  # a new earliest deadline; otherwise no need to wake
            return key

    def cancel(self, key: int) -> None:
        with self._cond:
            self._callbacks.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][1] not in self._callbacks:
                        heapq.heappop(self._heap)  # cancelled
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, key = heapq.heappop(self._heap)
                callback = self._callbacks[key]
            try:
                again = callback()
            except Exception:  # noqa: BLE001 - one bad callback must not end every deadline
                _log.exception("deadline_callback_failed")
                again = False
            with self._cond:
                if key not in self._callbacks:
                    continue
                if again:
                    heapq.heappush(self._heap, (time.monotonic() + self.RETRY, key))
                else:
                    del self._callbacks[key]


deadlines = Deadlines()
