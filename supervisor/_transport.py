"""The transport: one WebSocket connection, its reader and its writer (internal).

It never touches session state: it reports to the session actor through
``report`` (the actor's ``tell``), every report stamped with the generation the
connection was opened for. It bounds everything a peer can make it hold (I9):

* the handshake (admission aside) runs inside ``connect_timeout``, Chainlit
  version detection included; ``abort()`` interrupts it once a socket exists
  (version lookup, TLS, upgrade) but not a TCP connect in progress, which
  websocket-client does not expose: that ends within ``connect_timeout``;
* ``send()`` never blocks: frames go to a bounded write buffer that a writer
  thread drains; a write that does not finish within ``write_timeout`` ends
  the connection as broken;
* the reader stops reading while ``inbound_max_frames`` or
  ``inbound_max_bytes`` of reported frames are not yet ``consumed()``, so TCP
  pushes back on a flooding server;
* a message over ``max_message_bytes`` ends the connection, refused on the
  frame header before its payload is kept;
* redirects are refused unless ``follow_redirects``, and even then followed
  only within the same origin (scheme, host, port), so no credential ever
  leaves its origin (I10).

websocket-client owns the socket, the upgrade and the framing; ``_wsclient``
holds what is added on top of it (cookie isolation, the bounded frame reader,
the shared deadline thread) and ``_http`` the bounded Chainlit version
detection. This module opens the connection and owns its lifecycle; ``_streams`` its
writer and reader once open, and ``_reports`` what it tells the session actor.
Threads become greenlets under gevent's monkey-patching, unchanged.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import websocket

from supervisor import _wsclient as wsc
from supervisor._admission import Admission, Ticket
from supervisor._http import REDIRECT_STATUSES, Origin, lookup_chainlit_version
from supervisor._reports import (
    Admitted,
    Ended,
    Opened,
    OpenFailed,
    Received,
    Report,
    TransportOptions,
    Written,
)
from supervisor._streams import OP, SHUTDOWN, Streams, shutdown
from supervisor.errors import HandshakeError, HandshakeRedirected, HandshakeRefused
from supervisor.protocols.base import Codec, VersionLookup

__all__ = ["MAX_REDIRECTS", "Admitted", "Connection", "Ended", "OpenFailed", "Opened",
           "Received", "Report", "TransportOptions", "Written", "same_origin_target"]

MAX_REDIRECTS = 3
"""Same-origin redirects followed per handshake (with ``follow_redirects``)."""
_PLAIN_WRITES = os.name == "posix" and hasattr(socket, "MSG_DONTWAIT")
"""Non-blocking writes without a socket timeout (Linux, macOS); elsewhere timeout mode."""


class Connection(Streams):
    """Internal: one connection attempt and, once open, its reader and writer threads."""

    def __init__(self, codec: Codec, generation: int, report: Callable[[Report], None],
                 admission: Admission, options: TransportOptions, *, first: bool = False) -> None:
        self.generation = generation
        self._first = first
        """The session's first connect: admitted in its own class, never starved by resumes."""
        self._ticket: Ticket | None = None
        """The request for an admission slot; the handshake thread starts once admitted."""
        self._codec = codec
        self._report = report
        self._admission = admission
        self._options = options
        # An RLock: Condition.notify() asks the lock whether it is held, which a
        # plain Lock answers with a non-blocking acquire (a greenlet switch under
        # gevent, on every frame); an RLock knows its owner.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        """One condition for the reader (credit) and the writer (work): fewer objects per
        session; every notify is a notify_all, and each waiter re-checks its own test."""
        # Everything below is guarded by _lock.
        self._writes: deque[tuple[bytes | object, object | None]] = deque()
        self._write_bytes = 0
        self._backlog_frames = 0
        self._backlog_bytes = 0
        self._sock: socket.socket | None = None
        """The socket an abort must shut down (version lookup, then the WebSocket)."""
        self._ws: websocket.WebSocket | None = None
        """websocket-client's object for the current upgrade attempt."""
        self._handshaking = False
        self._timed_out = False
        """The handshake ran past ``connect_timeout`` (its socket was shut down)."""
        self._live: socket.socket | None = None
        """The open WebSocket's socket, once the upgrade succeeded."""
        self._raw_fd = -1
        self._fd_nonblocking = False
        """Its file descriptor when plain TCP (not TLS): the fast path may write it directly."""
        self._writer: threading.Thread | None = None
        """Started on the first write that cannot complete at once (most never need one)."""
        self._sock_users = 0
        self._close_watch: int | None = None
        """close()'s deadline (one write_timeout), cancelled once the connection ended."""
        """Reader and writer threads still using the open socket: the last one closes it."""
        self._writing = False
        """The writer thread holds a frame it is writing: no one else writes meanwhile."""
        self._by_us = False
        """close() or abort() was called: the end is ours, reported without an error."""
        self._over = False
        """The reader finished (or is finishing): nothing more will be written."""
        self._error: Exception | None = None
        """The first failure seen by the writer, reported by the reader in ``Ended``."""
        self._cancelled = threading.Event()
        self._admitted_at = 0.0
        self._redirect: HandshakeRedirected | None = None

    # --- the driver's side (never blocks, never raises) ----------------------------

    def start(self) -> None:
        """Ask for an admission slot; no thread exists until the handshake is admitted."""
        ticket = self._admission.request(self._admitted, first=self._first)
        if ticket is None:
            self._report(OpenFailed(self.generation, HandshakeError(
                "too many handshakes queued for admission")))
            return
        self._ticket = ticket
        if self._cancelled.is_set():  # aborted before it asked
            self._leave_queue()

    def close(self, last_frames: Sequence[str | bytes] = ()) -> None:
        """Write ``last_frames`` and a close frame, then stop; aborted after ``write_timeout``.

        Frames queued and not yet being written are dropped: the session has
        re-queued (or failed) their sends already, so writing them here as well
        would deliver them twice. The frame being written, if any, may finish;
        whether it reached the server is then in doubt (docs/supervision.md).
        """
        with self._lock:
            opened = self._live is not None
            if opened and not (self._writes and self._writes[-1][0] is SHUTDOWN):
                self._writes.clear()  # (a queue ending in SHUTDOWN is closing already)
                self._write_bytes = 0
        if not opened:
            self.abort()
            return
        self._close_watch = wsc.deadlines.watch(
            time.monotonic() + self._options.write_timeout, self._close_overdue)
        for frame in last_frames:
            self.send(frame)
        self._enqueue(wsc.frame_bytes(wsc.close_payload(wsc.CLOSE_NORMAL), OP.OPCODE_CLOSE),
                      None)
        with self._lock:
            self._by_us = True
            self._changed.notify_all()  # a reader waiting for credit goes on to drain and end
            if self._writes or self._writing:
                self._writes.append((SHUTDOWN, None))
                self._kick()
                return
            sock = self._live
        shutdown(sock)  # everything went out at once: no writer needed

    def abort(self) -> None:
        """Stop at once, mid-handshake included: no close frame."""
        self._cancelled.set()
        self._leave_queue()
        with self._lock:
            self._by_us = True
            self._changed.notify_all()
        self._shutdown_current()

    # --- internals -----------------------------------------------------------------

    def _admitted(self) -> None:
        """The admission's call: the slot is ours, the handshake starts in its own thread."""
        thread = threading.Thread(target=self._run, daemon=True, name=f"ws-gen{self.generation}")
        try:
            thread.start()
        except RuntimeError as exc:  # out of threads: this handshake fails, the slot frees
            self._admission.release()
            self._report(OpenFailed(self.generation, HandshakeError(
                f"could not start the handshake: {exc}")))

    def _leave_queue(self) -> None:
        """Withdraw a request still waiting for admission; it reports its end itself."""
        ticket = self._ticket
        if ticket is not None and self._admission.cancel(ticket):
            self._report(OpenFailed(self.generation, HandshakeError(
                "aborted while waiting for admission")))

    def _close_overdue(self) -> bool:
        """The deadline thread: a close still writing after ``write_timeout`` is aborted."""
        with self._lock:
            over = self._over
        if not over:
            self.abort()
        return False

    def _deadline_passed(self) -> bool:
        """The handshake's deadline thread: shut it down; True: call again (no socket yet)."""
        with self._lock:
            if self._live is not None or not self._handshaking:
                return False
            self._timed_out = True
        return not self._shutdown_current()

    def _register(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
        if sock is not None and self._cancelled.is_set():
            shutdown(sock)  # aborted while the socket was being made

    def _run(self) -> None:
        try:
            sock, secure = self._open()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, typed
            with self._lock:
                leftover, self._sock = self._sock, None
                ws, self._ws = self._ws, None
            if leftover is not None:
                leftover.close()
            if ws is not None:
                ws.shutdown()  # type: ignore[no-untyped-call] # upgraded, then aborted: close it
            error: Exception
            if self._timed_out:
                error = HandshakeError(
                    f"handshake did not complete within {self._options.connect_timeout:g}s "
                    "(connect_timeout)")
                error.__cause__ = exc
            elif self._cancelled.is_set():
                error = HandshakeError("handshake aborted")
            else:
                error = _handshake_error(exc)
            self._report(OpenFailed(self.generation, error))
            return
        with self._lock:
            self._live = sock
            self._sock_users = 1  # the reader, below
            if _PLAIN_WRITES and not secure:
                # Reads block without a timer per read (a gevent Timeout object each);
                # writes never block: they pass MSG_DONTWAIT, or the descriptor is
                # non-blocking underneath already (gevent).
                sock.settimeout(None)
                self._raw_fd = sock.fileno()
                self._fd_nonblocking = not os.get_blocking(self._raw_fd)
            if self._writes:
                self._kick()
        self._report(Opened(self.generation, self, self._admitted_at, time.monotonic()))
        self._read_loop(sock)

    def _open(self) -> tuple[socket.socket, bool]:
        # Admitted already (this thread starts only then); the slot is released below.
        self._admitted_at = time.monotonic()
        self._report(Admitted(self.generation))
        # One deadline for everything from here: detection, TCP, TLS, upgrade.
        # Reads inside the upgrade have per-read timeouts only, so the shared
        # deadline thread shuts the socket down when the whole runs out.
        deadline = self._admitted_at + self._options.connect_timeout
        with self._lock:
            self._handshaking = True
        watch = wsc.deadlines.watch(deadline, self._deadline_passed)
        try:
            self._check_cancelled()  # aborted between admission and this thread's start
            handshake = self._codec.handshake(self._version_lookup(deadline))
            self._check_cancelled()
            url = handshake.url
            for hop in range(MAX_REDIRECTS + 1):
                ws = self._upgrade(url, handshake.headers, handshake.cookie_header(), deadline)
                if ws is not None:
                    break
                location = self._redirect.location if self._redirect else ""
                target = same_origin_target(url, location)
                if not self._options.follow_redirects or target is None \
                        or hop == MAX_REDIRECTS:
                    assert self._redirect is not None
                    raise self._redirect
                url = target
            self._check_cancelled()
        finally:
            wsc.deadlines.cancel(watch)
            with self._lock:
                self._handshaking = False
            self._admission.release()
        assert ws is not None
        sock = ws.sock
        assert sock is not None
        # TLS stays in timeout mode (non-blocking underneath) so the writer's
        # partial writes never block; the reader resumes after each tick.
        sock.settimeout(self._options.write_timeout)
        return sock, Origin.of(url).secure

    def _upgrade(self, url: str, headers: tuple[tuple[str, str], ...], cookie: str | None,
                 deadline: float) -> websocket.WebSocket | None:
        """One websocket-client upgrade; None (and ``_redirect`` set) on a redirect."""
        ws = websocket.WebSocket(sslopt=wsc.sslopt(self._options.tls),
                                 skip_utf8_validation=True, enable_multithread=True)
        with self._lock:
            self._ws = ws
        options: dict[str, Any] = {
            "header": [f"{name}: {value}" for name, value in headers],
            "timeout": max(0.01, deadline - time.monotonic()),
            "redirect_limit": 0,  # never followed by websocket-client: we decide, by origin
        }
        if cookie is not None:
            options["cookie"] = cookie
        try:
            with wsc.bounded_upgrade():
                ws.connect(url, **options)  # type: ignore[no-untyped-call]
        except websocket.WebSocketException as exc:
            response = ws.handshake_response
            if response is None or response.status not in REDIRECT_STATUSES:
                raise
            self._redirect = HandshakeRedirected(response.status, response.headers,
                                                 response.headers.get("location", ""))
            self._redirect.__cause__ = exc
            return None
        self._check_cancelled()
        return ws

    def _version_lookup(self, deadline: float) -> VersionLookup:
        tls = self._options.tls

        def lookup(base: str) -> str:
            return lookup_chainlit_version(base, deadline, tls, self._register)

        return lookup

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            msg = "handshake aborted"
            raise HandshakeError(msg)


def same_origin_target(current: str, location: str) -> str | None:
    """The absolute WebSocket URL a redirect points to, if it keeps the origin; else None.

    Same origin means same scheme family (so never down from TLS), host and
    port: the session's headers and cookies may go there, and nowhere else.
    """
    if not location or any(ord(char) < 33 or 127 <= ord(char) < 160 for char in location):
        return None
    try:  # the Location is the server's: a malformed one is not same-origin, never a crash
        parts = urlsplit(urljoin(current, location))
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
        target = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
        if Origin.of(target) != Origin.of(current):
            return None
    except ValueError:
        return None
    return target


MAX_REFUSAL_BODY = 1024
"""Bytes of a refusal's body kept on ``HandshakeRefused`` (as ``_http.refusal`` keeps)."""


def _handshake_error(exc: Exception) -> Exception:
    if isinstance(exc, HandshakeError):
        return exc
    if isinstance(exc, websocket.WebSocketBadStatusException):
        body = exc.resp_body or b""
        refused = HandshakeRefused(exc.status_code, exc.resp_headers, body[:MAX_REFUSAL_BODY])
        refused.__cause__ = exc
        return refused
    error = HandshakeError(f"handshake failed: {exc or type(exc).__name__}")
    error.__cause__ = exc
    return error
