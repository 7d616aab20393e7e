"""The transport: one WebSocket connection, its handshake and its life once open (internal).

It never touches session state: it reports to the session actor through
``report`` (the actor's ``tell``), every report stamped with the generation the
connection was opened for. It bounds everything a peer can make it hold (I9):

* the handshake (admission aside) runs inside ``connect_timeout``, Chainlit
  version detection included; ``abort()`` interrupts it once a socket exists
  (version lookup, TLS, upgrade) but not a TCP connect in progress, which
  websocket-client does not expose: that ends within ``connect_timeout``;
* once open, no thread of its own: the handshake thread hands the socket to
  the process-wide reactor (``_reactor``) and ends, so a session costs one OS
  thread (its actor) on the threads runtime;
* ``send()`` never blocks: plain TCP is written at once, non-blocking, and what
  does not fit waits in a bounded write buffer that the reactor drains; a frame
  not written within ``write_timeout`` ends the connection as broken;
* the reactor stops reading while ``inbound_max_frames`` or
  ``inbound_max_bytes`` of reported frames are not yet ``consumed()``, so TCP
  pushes back on a flooding server;
* a message over ``max_message_bytes`` ends the connection, refused on the
  frame header before its payload is kept;
* redirects are refused unless ``follow_redirects``, and even then followed
  only within the same origin (scheme, host, port), so no credential ever
  leaves its origin (I10).

websocket-client makes the socket, runs the upgrade and encodes our frames;
``_wsclient`` holds what is added on top of it (cookie isolation, the bounded
upgrade response, the shared deadline thread) and ``_http`` the bounded
Chainlit version detection. This module opens the connection and owns its
lifecycle; ``_streams`` reads, writes and ends it once open (in the reactor),
``_frames`` decodes the server's frames, and ``_reports`` is what it tells the
session actor. Threads become greenlets under gevent's monkey-patching,
unchanged; the reactor is then one greenlet.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import websocket

from supervisor import _wsclient as wsc
from supervisor._admission import Admission, Ticket
from supervisor._frames import OP_CLOSE
from supervisor._http import (
    MAX_REFUSAL_BODY,
    REDIRECT_STATUSES,
    Origin,
    lookup_chainlit_version,
)
from supervisor._reactor import reactor
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
from supervisor._runtime import new_lock
from supervisor._streams import SHUTDOWN, Streams, data_frame, shutdown
from supervisor.errors import HandshakeError, HandshakeRedirected, HandshakeRefused
from supervisor.protocols.base import Codec, VersionLookup

__all__ = ["MAX_REDIRECTS", "Admitted", "Connection", "Ended", "OpenFailed", "Opened",
           "Received", "Report", "TransportOptions", "Written", "same_origin_target"]

MAX_REDIRECTS = 3
"""Same-origin redirects followed per handshake (with ``follow_redirects``)."""


class Connection(Streams):
    """Internal: one connection attempt (its handshake thread) and, once open, a reactor handler."""

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
        self._lock = new_lock()
        """Guards the write buffer and the ending flags (``_streams``); inbound credit
        takes no lock (each of its counters has one writer)."""
        self._sock: socket.socket | None = None
        """The socket an abort must shut down (version lookup, then the WebSocket)."""
        self._ws: websocket.WebSocket | None = None
        """websocket-client's object for the current upgrade attempt."""
        self._handshaking = False
        self._timed_out = False
        """The handshake ran past ``connect_timeout`` (its socket was shut down)."""
        self._early = b""
        """Bytes of the WebSocket stream read along with the upgrade response."""
        self._init_streams()
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
        """Write ``last_frames`` and a close frame, then stop; ended after ``write_timeout``.

        Frames queued and not yet on the wire are dropped: the session has
        re-queued (or failed) their sends already, so writing them here as well
        would deliver them twice. A frame partly written finishes first;
        whether it reached the server is then in doubt (docs/supervision.md).
        """
        with self._lock:
            opened = self._live is not None
            if opened and not (self._writes and self._writes[-1][0] is SHUTDOWN):
                self._drop_unstarted()  # (a queue ending in SHUTDOWN is closing already)
        if not opened:
            self.abort()
            return
        # One write for the last frames and the close frame: one segment for the
        # server to read, not one per frame. Bounded like any write: the loop ends
        # the connection past write_timeout.
        close = wsc.frame_bytes(wsc.close_payload(wsc.CLOSE_NORMAL), OP_CLOSE)
        self._enqueue(b"".join([*map(data_frame, last_frames), close]), None, closing=True)
        with self._lock:
            self._by_us = True
            if self._writes:
                self._writes.append((SHUTDOWN, None))
            elif not self._shut:
                self._shut = True  # everything went out at once
                shutdown(self._live)
        reactor().poke(self)  # the loop finishes it, reading or not

    def abort(self) -> None:
        """Stop at once, mid-handshake included: no close frame."""
        self._cancelled.set()
        self._leave_queue()
        with self._lock:
            self._by_us = True
            live = self._live is not None
        self._shutdown_current()
        if live:
            reactor().poke(self)  # the loop ends it, even if it is not reading now

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
        self._go_live(sock, secure, self._early)
        self._early = b""
        with self._lock:
            self._ws = None  # websocket-client's object is not needed past the upgrade
        self._report(Opened(self.generation, self, self._admitted_at, time.monotonic()))
        reactor().poke(self)  # the loop takes over; this handshake thread ends here

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
        return sock, Origin.of(url).secure

    def _upgrade(self, url: str, headers: tuple[tuple[str, str], ...], cookie: str | None,
                 deadline: float) -> websocket.WebSocket | None:
        """One websocket-client upgrade; None (and ``_redirect`` set) on a redirect."""
        ws = wsc.Upgrader(sslopt=wsc.sslopt(self._options.tls), skip_utf8_validation=True,
                          enable_multithread=True)
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
            with wsc.bounded_upgrade() as early:
                ws.connect(url, **options)  # type: ignore[no-untyped-call]
            self._early = b"".join(early)  # frames read along with the response head
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
