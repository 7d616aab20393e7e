"""The transport: one WebSocket connection, its reader and its writer (internal).

It never touches session state: it reports to the session actor through
``report`` (the actor's ``tell``), every report stamped with the generation the
connection was opened for. It bounds everything a peer can make it hold (I9):

* the handshake (admission aside) runs inside ``connect_timeout``, Chainlit
  version detection included, and ``abort()`` interrupts it;
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
detection. This module owns the threads. Threads become greenlets under
gevent's monkey-patching, unchanged.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import websocket
from websocket._socket import recv as websocket_recv

from supervisor import _wsclient as wsc
from supervisor._admission import Admission, AdmissionCancelled
from supervisor._http import REDIRECT_STATUSES, Origin, TlsOptions, lookup_chainlit_version
from supervisor.errors import (
    ConnectionLost,
    HandshakeError,
    HandshakeRedirected,
    HandshakeRefused,
    MessageTooBig,
)
from supervisor.protocols.base import Codec, VersionLookup

if TYPE_CHECKING:
    from supervisor.spec import SessionSpec

_CLEAN_CLOSE_CODES = frozenset({1000, 1001})
MAX_REDIRECTS = 3
"""Same-origin redirects followed per handshake (with ``follow_redirects``)."""
_WRITE_CHUNK = 64 * 1024
_PLAIN_WRITES = os.name == "posix" and hasattr(socket, "MSG_DONTWAIT")
"""Non-blocking writes without a socket timeout (Linux, macOS); elsewhere timeout mode."""
_OP = websocket.ABNF


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """The bounds and TLS settings of one connection (see ``SessionSpec`` for each)."""

    connect_timeout: float = 10.0
    verify_tls: bool = True
    ca_file: str | None = None
    follow_redirects: bool = False
    write_timeout: float = 10.0
    write_buffer_bytes: int = 64 * 1024 * 1024
    max_message_bytes: int = 16 * 1024 * 1024
    inbound_max_frames: int = 1000
    inbound_max_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_spec(cls, spec: SessionSpec) -> TransportOptions:
        return cls(connect_timeout=spec.connect_timeout, verify_tls=spec.verify_tls,
                   ca_file=spec.ca_file, follow_redirects=spec.follow_redirects,
                   write_timeout=spec.write_timeout,
                   write_buffer_bytes=spec.write_buffer_bytes,
                   max_message_bytes=spec.max_message_bytes,
                   inbound_max_frames=spec.inbound_max_frames,
                   inbound_max_bytes=spec.inbound_max_bytes)

    @property
    def tls(self) -> TlsOptions:
        return TlsOptions(self.verify_tls, self.ca_file)


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
    """Internal: one text (str) or binary (bytes) frame on ``generation``.

    The driver answers each with ``Connection.consumed(len(data))``.
    """

    generation: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class Written:
    """Internal: the frame sent with ``token`` was fully written to the socket."""

    generation: int
    token: object


@dataclass(frozen=True, slots=True)
class Ended:
    """Internal: the connection of ``generation`` ended; ``clean``: closed normally by the peer.

    Reported after every ``Written`` of that connection.
    """

    generation: int
    error: Exception | None
    clean: bool


Report = Admitted | Opened | OpenFailed | Received | Written | Ended

_SHUTDOWN = object()
"""Write-queue marker: everything before it is written; shut the socket down."""


class Connection:
    """Internal: one connection attempt and, once open, its reader and writer threads."""

    def __init__(self, codec: Codec, generation: int, report: Callable[[Report], None],
                 admission: Admission, options: TransportOptions) -> None:
        self.generation = generation
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
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"ws-gen{generation}")

    # --- the driver's side (never blocks, never raises) ----------------------------

    def start(self) -> None:
        self._thread.start()

    def send(self, frame: str | bytes, token: object | None = None) -> None:
        """Queue one frame; ``Written(generation, token)`` follows once it is written."""
        opcode = _OP.OPCODE_TEXT if isinstance(frame, str) else _OP.OPCODE_BINARY
        self._enqueue(wsc.frame_bytes(frame, opcode), token)

    def consumed(self, nbytes: int) -> None:
        """The driver handled one ``Received`` of ``nbytes`` (``len(data)``): credit back."""
        with self._lock:
            self._backlog_frames = max(0, self._backlog_frames - 1)
            self._backlog_bytes = max(0, self._backlog_bytes - nbytes)
            self._changed.notify_all()

    @property
    def inbound_backlog(self) -> int:
        """Frames reported and not yet consumed."""
        return self._backlog_frames

    @property
    def inbound_backlog_bytes(self) -> int:
        """Bytes (``len`` of each frame's data) reported and not yet consumed."""
        return self._backlog_bytes

    @property
    def write_backlog_bytes(self) -> int:
        """Bytes queued for the writer and not yet written."""
        return self._write_bytes

    def close(self, last_frames: Sequence[str | bytes] = ()) -> None:
        """Write ``last_frames`` and a close frame (bounded by ``write_timeout``), then stop."""
        with self._lock:
            opened = self._live is not None
        if not opened:
            self.abort()
            return
        for frame in last_frames:
            self.send(frame)
        self._enqueue(wsc.frame_bytes(wsc.close_payload(wsc.CLOSE_NORMAL), _OP.OPCODE_CLOSE),
                      None)
        with self._lock:
            self._by_us = True
            self._changed.notify_all()  # a reader waiting for credit goes on to drain and end
            if self._writes or self._writing:
                self._writes.append((_SHUTDOWN, None))
                self._kick()
                return
            sock = self._live
        _shutdown(sock)  # everything went out at once: no writer needed

    def abort(self) -> None:
        """Stop at once, mid-handshake included: no close frame."""
        self._cancelled.set()
        self._admission.wake_all()
        with self._lock:
            self._by_us = True
            self._changed.notify_all()
        self._shutdown_current()

    # --- internals -----------------------------------------------------------------

    def _enqueue(self, data: bytes, token: object | None) -> None:
        written = False
        with self._lock:
            if self._by_us or self._over or self._error is not None:
                return  # the connection is ending; the driver hears it from Ended
            if self._write_bytes + len(data) > self._options.write_buffer_bytes \
                    and self._writes:
                overflow = True
            else:
                overflow = False
                if self._raw_fd >= 0 and not self._writes and not self._writing:
                    # Fast path: a non-blocking write of what the socket takes now,
                    # under the lock, so no other write and no close interleaves.
                    done = self._write_now(data)
                    written = done == len(data)
                    data = data[done:]
                if not written:
                    self._writes.append((data, token))
                    self._write_bytes += len(data)
                    self._kick()
        if overflow:
            self._fail(ConnectionLost(
                f"write buffer over {self._options.write_buffer_bytes} bytes: "
                "the server is not reading"))
        if written and token is not None:
            self._report(Written(self.generation, token))

    def _write_now(self, data: bytes | memoryview) -> int:
        """Bytes of ``data`` written to the plain-TCP socket without blocking."""
        try:
            if self._fd_nonblocking:
                return os.write(self._raw_fd, data)
            assert self._live is not None
            return self._live.send(data, socket.MSG_DONTWAIT)
        except OSError:
            return 0  # full (BlockingIOError), or broken: the writer meets it and reports it

    def _kick(self) -> None:
        """Wake the writer, or start it; lock held.

        Started under the lock so ``_finish`` never sees a writer it cannot
        join; the new thread waits for the lock, so this cannot deadlock.
        """
        if self._live is None:
            return  # not open yet: started once the upgrade succeeded
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, args=(self._live,),
                                            daemon=True, name=f"ws-gen{self.generation}-writer")
            self._writer.start()
        else:
            self._changed.notify_all()

    def _fail(self, error: Exception) -> None:
        """A write failed: the reader ends the connection and reports ``error``."""
        with self._lock:
            if self._error is None:
                self._error = error
            self._changed.notify_all()
        self._shutdown_current()

    def _shutdown_current(self) -> bool:
        """Shut down whichever socket is live now; False if there is none yet."""
        with self._lock:
            sock = self._sock
            ws = self._ws
        if sock is None and ws is not None:
            sock = ws.sock  # set by websocket-client once TCP (and TLS) are up
        _shutdown(sock)
        return sock is not None

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
            _shutdown(sock)  # aborted while the socket was being made

    def _run(self) -> None:
        try:
            sock, headers, secure = self._open()
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
            if _PLAIN_WRITES and not secure:
                # Reads block without a timer per read (a gevent Timeout object each);
                # writes never block: they pass MSG_DONTWAIT, or the descriptor is
                # non-blocking underneath already (gevent).
                sock.settimeout(None)
                self._raw_fd = sock.fileno()
                self._fd_nonblocking = not os.get_blocking(self._raw_fd)
            if self._writes:
                self._kick()
        self._report(Opened(self.generation, self, headers, self._admitted_at,
                            time.monotonic()))
        self._read_loop(sock)

    def _open(self) -> tuple[socket.socket, dict[str, str], bool]:
        try:
            self._admission.acquire(self._cancelled)
        except AdmissionCancelled:
            msg = "aborted while waiting for admission"
            raise HandshakeError(msg) from None
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
        return sock, dict(ws.getheaders() or {}), Origin.of(url).secure

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

    # --- writer thread ---------------------------------------------------------------

    def _write_loop(self, sock: socket.socket) -> None:
        while True:
            with self._lock:
                self._writing = False
                while not self._writes and not self._writer_done():
                    self._changed.wait()
                if self._writer_done():
                    return
                data, token = self._writes.popleft()
                if isinstance(data, bytes):
                    self._write_bytes -= len(data)
                    self._writing = True
            if not isinstance(data, bytes):  # _SHUTDOWN: the close frame is out
                _shutdown(sock)
                return
            try:
                self._write(sock, data)
            except Exception as exc:  # noqa: BLE001 - any write failure breaks the connection
                error = exc if isinstance(exc, ConnectionLost) else \
                    ConnectionLost(f"write failed: {exc or type(exc).__name__}")
                if error is not exc:
                    error.__cause__ = exc
                self._fail(error)
                return
            if token is not None:
                self._report(Written(self.generation, token))

    def _writer_done(self) -> bool:
        # Once the reader is over, only a close frame it queued is still written.
        return (self._error is not None or self._cancelled.is_set()
                or (self._over and not self._writes))

    def _write(self, sock: socket.socket, data: bytes) -> None:
        """Write ``data`` within ``write_timeout``: wait for room, write what fits, repeat."""
        timeout = self._options.write_timeout
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        sent = 0
        with self._lock:
            plain, nonblocking = self._raw_fd >= 0, self._fd_nonblocking
        poller = select.poll()  # gevent patches it; select() would fail past fd 1024
        poller.register(sock.fileno(), select.POLLOUT)
        while sent < len(view):
            if self._cancelled.is_set():
                msg = "aborted while writing"
                raise ConnectionLost(msg)
            left = deadline - time.monotonic()
            if left <= 0:
                msg = (f"write stalled: {len(view) - sent} of {len(view)} bytes not written "
                       f"within {timeout:g}s (write_timeout); the server is not reading")
                raise ConnectionLost(msg)
            if not poller.poll(left * 1000):
                continue
            chunk = view[sent:sent + _WRITE_CHUNK]
            with contextlib.suppress(BlockingIOError, TimeoutError, ssl.SSLWantWriteError):
                if not plain:
                    sent += sock.send(chunk)  # TLS, in timeout mode
                elif nonblocking:
                    sent += os.write(sock.fileno(), chunk)
                else:
                    sent += sock.send(chunk, socket.MSG_DONTWAIT)

    # --- reader thread ---------------------------------------------------------------

    def _read_loop(self, sock: socket.socket) -> None:
        reader = wsc.BoundedFrameBuffer(lambda size: websocket_recv(sock, size),
                                        self._options.max_message_bytes)
        self._install(reader)
        assembler = wsc.Assembler()
        error: Exception | None = None
        clean = False
        try:
            while True:
                self._await_credit()
                if self._error is not None:
                    break  # the writer failed; it set the error Ended reports
                reader.held = assembler.held
                try:
                    frame = reader.recv_frame()
                except websocket.WebSocketTimeoutException:
                    if self._cancelled.is_set():
                        break
                    continue  # idle past one socket tick; the frame state is kept
                if frame.opcode == _OP.OPCODE_CLOSE:
                    code = wsc.close_code(frame.data)
                    clean = code in _CLEAN_CLOSE_CODES
                    if not clean:
                        error = ConnectionLost(f"server closed the connection with code {code}")
                    self._close_with(code if clean else wsc.CLOSE_NORMAL)
                    break
                if frame.opcode == _OP.OPCODE_PING:
                    self._enqueue(wsc.frame_bytes(frame.data, _OP.OPCODE_PONG), None)
                elif frame.opcode != _OP.OPCODE_PONG \
                        and (message := assembler.feed(frame)) is not None:
                    self._dispatch(*message)
        except wsc.FrameTooBig as exc:
            error = MessageTooBig(exc.announced, exc.limit)
            self._close_with(wsc.CLOSE_TOO_BIG)
        except websocket.WebSocketProtocolException as exc:
            error = ConnectionLost(f"protocol violation by the server: {exc}")
            self._close_with(wsc.CLOSE_PROTOCOL_ERROR)
        except websocket.WebSocketConnectionClosedException:
            error = ConnectionLost("the server closed the TCP connection without a close frame")
        except Exception as exc:  # noqa: BLE001 - every way a read ends is reported
            error = ConnectionLost(f"connection lost: {exc or type(exc).__name__}")
            error.__cause__ = exc
        self._finish(sock, error, clean=clean)

    def _install(self, reader: wsc.BoundedFrameBuffer) -> None:
        """Make ``reader`` websocket-client's frame reader too (one per connection, not two)."""
        if self._ws is not None:
            self._ws.frame_buffer = reader

    def _dispatch(self, opcode: int, payload: bytes) -> None:
        data: str | bytes
        if opcode == _OP.OPCODE_TEXT:
            data = payload.decode("utf-8", "replace")
            if (reply := self._codec.autoreply(data)) is not None:
                # Heartbeats are answered here, not in the mailbox, so a busy
                # actor never misses the server's ping timeout.
                self.send(reply)
                return
        else:
            data = payload
        with self._lock:
            if self._by_us:
                return  # closing: nobody wants it, and it must not hold the reader
            self._backlog_frames += 1
            self._backlog_bytes += len(data)
        self._report(Received(self.generation, data))

    def _await_credit(self) -> None:
        """Block while the driver has too many frames or bytes unconsumed (TCP pushes back)."""
        options = self._options
        if (self._backlog_frames < options.inbound_max_frames
                and self._backlog_bytes < options.inbound_max_bytes):
            return  # the common case, read without the lock (an int read is atomic)
        with self._lock:
            while ((self._backlog_frames >= options.inbound_max_frames
                    or self._backlog_bytes >= options.inbound_max_bytes)
                   and not self._by_us and self._error is None):
                self._changed.wait()

    def _close_with(self, code: int) -> None:
        """Say why before hanging up: drop unwritten frames, write a close frame, stop."""
        close = wsc.frame_bytes(wsc.close_payload(code), _OP.OPCODE_CLOSE)
        with self._lock:
            if self._by_us or self._error is not None:
                return
            self._writes.clear()
            self._write_bytes = 0
            self._writes.extend(((close, None), (_SHUTDOWN, None)))
            self._kick()

    def _finish(self, sock: socket.socket, error: Exception | None, *, clean: bool) -> None:
        with self._lock:
            self._over = True
            self._raw_fd = -1  # the fast path never writes a descriptor about to be closed
            writer = self._writer
            by_us = self._by_us
            if self._error is not None:
                error, clean = self._error, False
            if not by_us and self._writes and self._writes[-1][0] is not _SHUTDOWN:
                self._writes.clear()  # the peer is gone: unwritten frames stay unwritten
                self._write_bytes = 0
            self._changed.notify_all()
        if writer is not None:
            # A close frame queued just now gets its chance, bounded; then Ended
            # follows every Written of this connection.
            writer.join(timeout=self._options.write_timeout * 1.5 + 0.1)
        _shutdown(sock)
        sock.close()
        self._report(Ended(self.generation, None if by_us else error, clean))


def _shutdown(sock: socket.socket | None) -> None:
    # Shutting the socket down wakes a thread blocked reading or writing it.
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def same_origin_target(current: str, location: str) -> str | None:
    """The absolute WebSocket URL a redirect points to, if it keeps the origin; else None.

    Same origin means same scheme family (so never down from TLS), host and
    port: the session's headers and cookies may go there, and nowhere else.
    """
    if not location or any(ord(char) < 33 or 127 <= ord(char) < 160 for char in location):
        return None
    parts = urlsplit(urljoin(current, location))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    target = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    try:
        if Origin.of(target) != Origin.of(current):
            return None
    except ValueError:
        return None
    return target


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
