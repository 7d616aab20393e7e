"""The open connection's streams: the bounded write buffer and writer, the reader (internal).

``Connection`` (``_transport``) opens the socket and owns the lifecycle; this
base class holds what runs once it is open. Writes go out at once when the
socket takes them, else through a writer thread started on first need and
bounded by ``write_timeout``; the reader stops reading while the session has
``inbound_max_frames``/``inbound_max_bytes`` unconsumed, and refuses a message
over ``max_message_bytes`` on its header. Threads become greenlets under gevent.
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
from collections.abc import Callable

import websocket
from websocket._socket import recv as websocket_recv

from supervisor import _wsclient as wsc
from supervisor._reports import Ended, Received, Report, TransportOptions, Written
from supervisor.errors import ConnectionLost, MessageTooBig
from supervisor.protocols.base import Codec

CLEAN_CLOSE_CODES = frozenset({1000, 1001})
_WRITE_CHUNK = 64 * 1024
OP = websocket.ABNF
SHUTDOWN = object()
"""Write-queue marker: everything before it is written; shut the socket down."""


class Streams:
    """Internal: the write buffer, the writer thread and the reader loop of one connection.

    The attributes are set by ``Connection.__init__``; those after ``_lock`` are
    guarded by it.
    """

    generation: int
    _codec: Codec
    _report: Callable[[Report], None]
    _options: TransportOptions
    _lock: threading.RLock
    _changed: threading.Condition
    _writes: deque[tuple[bytes | object, object | None]]
    _write_bytes: int
    _backlog_frames: int
    _backlog_bytes: int
    _sock: socket.socket | None
    _ws: websocket.WebSocket | None
    _live: socket.socket | None
    _raw_fd: int
    _fd_nonblocking: bool
    _writer: threading.Thread | None
    _sock_users: int
    _close_watch: int | None
    _writing: bool
    _by_us: bool
    _over: bool
    _error: Exception | None
    _cancelled: threading.Event

    def send(self, frame: str | bytes, token: object | None = None) -> None:
        """Queue one frame; ``Written(generation, token)`` follows once it is written."""
        opcode = OP.OPCODE_TEXT if isinstance(frame, str) else OP.OPCODE_BINARY
        self._enqueue(wsc.frame_bytes(frame, opcode), token)

    def consumed(self, nbytes: int) -> None:
        """The driver handled one ``Received`` of ``nbytes`` (``len(data)``): credit back."""
        opts = self._options
        with self._lock:
            # Only a reader stopped on a full backlog waits for credit: wake it then, not
            # on every frame (the writer waits on the same condition).
            full = (self._backlog_frames >= opts.inbound_max_frames
                    or self._backlog_bytes >= opts.inbound_max_bytes)
            self._backlog_frames = max(0, self._backlog_frames - 1)
            self._backlog_bytes = max(0, self._backlog_bytes - nbytes)
            if full:
                self._changed.notify_all()

    @property
    def inbound_backlog(self) -> int:
        """Frames reported and not yet consumed."""
        return self._backlog_frames

    @property
    def inbound_backlog_bytes(self) -> int:
        """Bytes (``len`` of each frame's data) reported and not yet consumed."""
        return self._backlog_bytes

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
            self._sock_users += 1
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
        shutdown(sock)
        return sock is not None

    def _write_loop(self, sock: socket.socket) -> None:
        try:
            self._write_frames(sock)
        finally:
            self._release(sock)

    def _write_frames(self, sock: socket.socket) -> None:
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
            if not isinstance(data, bytes):  # SHUTDOWN: the close frame is out
                shutdown(sock)
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
                if frame.opcode == OP.OPCODE_CLOSE:
                    code = wsc.close_code(frame.data)
                    clean = code in CLEAN_CLOSE_CODES
                    if not clean:
                        error = ConnectionLost(f"server closed the connection with code {code}")
                    self._close_with(code if clean else wsc.CLOSE_NORMAL)
                    break
                if frame.opcode == OP.OPCODE_PING:
                    self._enqueue(wsc.frame_bytes(frame.data, OP.OPCODE_PONG), None)
                elif frame.opcode != OP.OPCODE_PONG \
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
        if opcode == OP.OPCODE_TEXT:
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
        close = wsc.frame_bytes(wsc.close_payload(code), OP.OPCODE_CLOSE)
        with self._lock:
            if self._by_us or self._error is not None:
                return
            self._writes.clear()
            self._write_bytes = 0
            self._writes.extend(((close, None), (SHUTDOWN, None)))
            self._kick()

    def _finish(self, sock: socket.socket, error: Exception | None, *, clean: bool) -> None:
        with self._lock:
            self._over = True
            self._raw_fd = -1  # the fast path never writes a descriptor about to be closed
            writer = self._writer
            by_us = self._by_us
            if self._error is not None:
                error, clean = self._error, False
            if not by_us and self._writes and self._writes[-1][0] is not SHUTDOWN:
                self._writes.clear()  # the peer is gone: unwritten frames stay unwritten
                self._write_bytes = 0
            self._changed.notify_all()
        if writer is not None:
            # A close frame queued just now gets its chance, bounded; then Ended
            # follows every Written of this connection.
            writer.join(timeout=self._options.write_timeout * 1.5 + 0.1)
        if self._close_watch is not None:
            wsc.deadlines.cancel(self._close_watch)
        shutdown(sock)
        self._release(sock)
        self._report(Ended(self.generation, None if by_us else error, clean))

    def _release(self, sock: socket.socket) -> None:
        """A reader or writer is done with ``sock``; the last one closes it.

        Closing while the other may still write would let a recycled descriptor
        (another connection's) receive the rest of its frame.
        """
        with self._lock:
            self._sock_users -= 1
            last = self._sock_users <= 0
        if last:
            sock.close()


def shutdown(sock: socket.socket | None) -> None:
    """Shut the TCP connection down: wakes a thread blocked reading or writing it.

    The base class's method, on purpose: ``ssl.SSLSocket.shutdown`` drops its TLS
    object before the TCP shutdown, and a writer in ``send`` in that window would
    fall through to plain ``socket.send``, putting a frame on the wire unencrypted.
    """
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
