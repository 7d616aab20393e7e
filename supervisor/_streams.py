"""The open connection's streams, served by the shared reactor (internal).

``Connection`` (``_transport``) opens the socket and owns the lifecycle; this
base class holds what runs once it is open, with no thread of its own:

* reading: the process-wide loop (``_reactor``) reads the non-blocking socket,
  one large ``recv`` per readiness, into a sans-IO decoder (``_frames``); each
  message becomes a ``Received`` report. While the session has
  ``inbound_max_frames``/``inbound_max_bytes`` unconsumed the socket is not
  watched for reading (TCP pushes back) until ``consumed()`` gives credit back;
  a message over ``max_message_bytes`` is refused on its header.
* writing: ``send()`` writes plain TCP at once, non-blocking, in the caller's
  thread; what does not fit (and everything on TLS, whose state must not be
  touched by two threads) waits in a bounded buffer that the loop writes as the
  socket becomes writable; a frame not written within ``write_timeout`` ends
  the connection as broken (a timer in the loop).
* ending: the loop alone ends the connection and closes the socket, once, and
  reports ``Ended`` after every ``Written`` of the connection.

The attributes after ``_lock`` are guarded by it; those marked "loop" are
touched by the loop thread only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable

from supervisor import _wsclient as wsc
from supervisor._frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    FrameTooBig,
    ProtocolViolation,
)
from supervisor._pollers import READ, WRITE
from supervisor._reactor import reactor
from supervisor._reports import Ended, Received, Report, TransportOptions, Written
from supervisor.errors import ConnectionLost, MessageTooBig
from supervisor.protocols.base import Codec

CLEAN_CLOSE_CODES = frozenset({1000, 1001})
READ_CHUNK = 64 * 1024
"""Bytes asked of the socket per readiness: many frames per system call."""
_read_buffers = threading.local()
"""Each reading thread's ``READ_CHUNK`` buffer (in practice the loop's only). Reading
into it and copying out what came, instead of ``os.read(fd, READ_CHUNK)``, spares the
allocator a 64 KiB block per read shrunk to the bytes read, whose leftovers kept the
heap from shrinking. At 500 chat sessions for 60 s, with the decoder letting go of a
consumed read too: RSS at the end 83.8 and 94.8 MiB against 106.4 and 98.1 before."""


def _read_into_buffer(read_into: Callable[[memoryview], int]) -> bytes:
    """One read through this thread's buffer; the bytes read (empty at EOF)."""
    view: memoryview | None = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(READ_CHUNK))
    count = read_into(view)
    return bytes(view[:count])


_TLS_WRITE_CHUNK = 16 * 1024
"""Bytes handed to one TLS write (one record): a retry after WANT_WRITE repeats it."""
SHUTDOWN = object()
"""Write-queue marker: everything before it is written; shut the socket down."""
_EOF = "the server closed the TCP connection without a close frame"

Pending = bytes | memoryview | object
"""A write-queue entry: the bytes still to write of one frame, or ``SHUTDOWN``."""


class Streams:
    """Internal: the write buffer, reading and ending of one open connection (a reactor handler).

    The attributes are set by ``Connection.__init__``. They live in slots: a
    connection per session, and a dict of some forty attributes costs about 1.5 KiB.
    """

    __slots__ = (
        "__weakref__",
        "_attached",
        "_by_us",
        "_cancelled",
        "_clean",
        "_codec",
        "_consumed_bytes",
        "_consumed_frames",
        "_decoder",
        "_delivered_bytes",
        "_delivered_frames",
        "_end_error",
        "_ended",
        "_error",
        "_fd",
        "_head_started",
        "_live",
        "_lock",
        "_options",
        "_over",
        "_paused",
        "_raw_fd",
        "_reading",
        "_report",
        "_shut",
        "_sock",
        "_timer_at",
        "_tls",
        "_tls_read_wants_write",
        "_tls_write_wants_read",
        "_write_bytes",
        "_write_deadline",
        "_writes",
        "generation",
    )

    generation: int
    _codec: Codec
    _report: Callable[[Report], None]
    _options: TransportOptions
    _lock: threading.Lock
    _writes: deque[tuple[Pending, object | None]] | None
    """Frames not yet written, in order; None while empty (most connections, most of the
    time: an empty deque costs 760 bytes)."""
    _write_bytes: int
    _write_deadline: float | None
    """When the frame at the head of ``_writes`` must be written by."""
    _head_started: bool
    """Part of the head frame is on the wire: a close must not cut it."""
    # Inbound credit, without a lock: each counter has one writer, and the backlog
    # is their difference. The loop counts what it reports, the session actor what
    # it consumed; the pause handshake (``_deliver``, ``consumed``) sets the flag,
    # then reads the other side's counter, so one of the two sees the other. That
    # takes both threads' steps in one order, as the GIL runs them (free-threaded
    # builds would need a lock here, or atomics).
    _delivered_frames: int
    _delivered_bytes: int
    """Frames reported, and the ``len`` of their data (written by the loop only)."""
    _consumed_frames: int
    _consumed_bytes: int
    """Frames consumed, and the ``len`` of their data (written by the session actor only)."""
    _paused: bool
    """Not read for want of credit; ``consumed()`` wakes the loop."""
    _sock: socket.socket | None
    _live: socket.socket | None
    _raw_fd: int
    """The plain-TCP descriptor the caller may write at once; -1 on TLS or once ended."""
    _shut: bool
    """Our close is written and the socket shut down: nothing more to do but end."""
    _by_us: bool
    _over: bool
    _error: Exception | None
    """A failure that ends the connection at once (a write, the write bound)."""
    _cancelled: threading.Event
    # --- loop only
    _decoder: FrameDecoder | None
    _fd: int
    _tls: bool
    _attached: bool
    _reading: bool
    _end_error: Exception | None
    """Why reading stopped (set before the close frame that says so is written)."""
    _clean: bool
    _timer_at: float | None
    _tls_read_wants_write: bool
    _tls_write_wants_read: bool
    _ended: bool

    def _init_streams(self) -> None:
        """The streams' part of ``__init__`` (lock and options set already)."""
        self._writes = None
        self._write_bytes = 0
        self._write_deadline = None
        self._head_started = False
        self._delivered_frames = self._delivered_bytes = 0
        self._consumed_frames = self._consumed_bytes = 0
        self._paused = False
        self._live = None
        self._raw_fd = -1
        self._shut = False
        self._by_us = False
        self._over = False
        self._error = None
        self._decoder = None
        self._fd = -1
        self._tls = False
        self._attached = False
        self._reading = True
        self._end_error = None
        self._clean = False
        self._timer_at = None
        self._tls_read_wants_write = False
        self._tls_write_wants_read = False
        self._ended = False

    # --- the driver's side (any thread; never blocks, never raises) ------------------

    def send(self, frame: str | bytes, token: object | None = None) -> None:
        """Queue one frame; ``Written(generation, token)`` follows once it is written."""
        self._enqueue(data_frame(frame), token)

    def consumed(self, nbytes: int) -> None:
        """The driver handled one ``Received`` of ``nbytes`` (``len(data)``): credit back.

        Called by the session actor only (one writer of the consumed counters).
        """
        self._consumed_frames += 1
        self._consumed_bytes += nbytes
        if self._paused and self._has_credit():
            self._paused = False
            reactor().poke(self)  # only a paused connection costs a wake-up

    @property
    def inbound_backlog(self) -> int:
        """Frames reported and not yet consumed (read from any thread: the consumed
        count first, so a count that moves meanwhile never makes it negative)."""
        consumed = self._consumed_frames
        return self._delivered_frames - consumed

    @property
    def inbound_backlog_bytes(self) -> int:
        """Bytes (``len`` of each frame's data) reported and not yet consumed."""
        consumed = self._consumed_bytes
        return self._delivered_bytes - consumed

    def _has_credit(self) -> bool:
        options = self._options
        return (self._delivered_frames - self._consumed_frames < options.inbound_max_frames
                and self._delivered_bytes - self._consumed_bytes < options.inbound_max_bytes)

    def _enqueue(self, data: bytes, token: object | None, *, closing: bool = False) -> None:
        """Write ``data`` now or queue it; ``closing``: it is our close frame, the last."""
        written = overflow = wake = False
        with self._lock:
            writes = self._writes
            if self._by_us or self._over or self._error is not None \
                    or (writes and writes[-1][0] is SHUTDOWN):
                return  # the connection is ending; the driver hears it from Ended
            if closing:
                # In the same critical section as the close frame: a send from another
                # thread can no longer follow it onto the wire, and an end the loop
                # reports from now on (the server answering the close at once) is ours.
                self._by_us = True
            if writes and self._write_bytes + len(data) > self._options.write_buffer_bytes:
                overflow = True
            else:
                done = 0
                if self._raw_fd >= 0 and not writes:
                    # Fast path: a non-blocking write of what the socket takes now,
                    # under the lock, so no other write and no close interleaves.
                    done = _write_now(self._raw_fd, data)
                    written = done == len(data)
                if not written:
                    if not writes:  # a new head: the loop must start watching for room
                        self._write_deadline = time.monotonic() + self._options.write_timeout
                        self._head_started = done > 0
                        wake = self._live is not None
                    self._queue().append((memoryview(data)[done:] if done else data, token))
                    self._write_bytes += len(data) - done
        if overflow:
            self._fail(ConnectionLost(
                f"write buffer over {self._options.write_buffer_bytes} bytes: "
                "the server is not reading"))
        elif written and token is not None:
            self._report(Written(self.generation, token))
        elif wake:
            reactor().poke(self)

    def _fail(self, error: Exception) -> None:
        """End the connection with ``error`` (the loop does it, soon)."""
        with self._lock:
            if self._error is None:
                self._error = error
            live = self._live is not None
        if live:
            reactor().poke(self)
        else:
            self._shutdown_current()

    def _shutdown_current(self) -> bool:
        """Shut down whichever socket is live now; False if there is none yet."""
        with self._lock:
            sock = self._sock
            ws = getattr(self, "_ws", None)
        if sock is None and ws is not None:
            sock = ws.sock  # set by websocket-client once TCP (and TLS) are up
        shutdown(sock)
        return sock is not None

    def _queue(self) -> deque[tuple[Pending, object | None]]:
        """The write queue, made on first need (lock held)."""
        if self._writes is None:
            self._writes = deque()
        return self._writes

    def _drop_unstarted(self) -> None:
        """Drop queued frames not yet on the wire (lock held); a started one finishes."""
        writes = self._writes
        if writes and self._head_started:
            head = writes[0]
            writes.clear()
            writes.append(head)
            self._write_bytes = len(head[0]) if isinstance(head[0], bytes | memoryview) else 0
        else:
            self._writes = None
            self._write_bytes = 0
            self._write_deadline = None

    # --- the loop's side (Handler) --------------------------------------------------------

    def _go_live(self, sock: socket.socket, secure: bool, early: bytes) -> None:
        """The upgrade succeeded: from the next poke on, the loop reads, writes and ends it.

        ``early``: the server's first bytes, read along with the upgrade response.
        """
        sock.setblocking(False)  # gevent: the descriptor is non-blocking underneath already
        with self._lock:
            self._live = self._sock = sock
            self._fd = sock.fileno()
            self._tls = secure
            if not secure:
                self._raw_fd = self._fd
            self._decoder = FrameDecoder(self._options.max_message_bytes)
            self._decoder.feed(early)

    def poked(self) -> None:
        if self._ended:
            return
        if not self._attached:
            self._attached = True
            with self._lock:
                if self._writes:  # queued before the socket was handed over
                    self._write_deadline = time.monotonic() + self._options.write_timeout
        # Credit came back, a write was queued, or we are closing: look at everything.
        self.ready(READ | WRITE)

    def ready(self, events: int) -> None:
        if self._ended:
            return
        if events & WRITE or self._tls_write_wants_read:
            self._tls_write_wants_read = False
            self._flush()
        if events & READ or self._tls_read_wants_write:
            self._tls_read_wants_write = False
            self._read()
        self._settle()

    def timer(self, now: float) -> None:
        self._timer_at = None
        if self._ended:
            return
        with self._lock:
            deadline = self._write_deadline
            left = self._write_bytes
            if deadline is not None and deadline <= now and self._error is None:
                timeout = self._options.write_timeout
                self._error = ConnectionLost(
                    f"write stalled: {left} bytes not written within {timeout:g}s "
                    "(write_timeout); the server is not reading")
        self._settle()

    def crashed(self, error: BaseException) -> None:
        if self._end_error is None:
            self._end_error = ConnectionLost(f"transport failed: {error!r}")
        self._end()

    def _settle(self) -> None:
        """End the connection if it is over; else watch what it waits for."""
        with self._lock:
            end = (self._error is not None or self._shut or self._cancelled.is_set()
                   or (not self._reading and not self._writes))
            deadline = self._write_deadline if self._writes else None
            events = WRITE if self._writes else 0
            if self._reading and (not self._paused or self._by_us):
                events |= READ
        if end:
            self._end()
            return
        if self._tls_read_wants_write:
            events |= WRITE
        if self._tls_write_wants_read:
            events |= READ
        loop = reactor()
        loop.watch(self._fd, self, events)
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._timer_at = deadline
            loop.call_at(deadline, self)

    def _read(self) -> None:
        """Deliver what the decoder holds, then one large read (more on TLS while buffered)."""
        decoder = self._decoder
        assert decoder is not None
        sock = self._live
        assert sock is not None
        while self._reading and self._deliver(decoder):
            try:
                data = _read_into_buffer(self._readv if not self._tls else sock.recv_into)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                self._tls_read_wants_write = True  # a renegotiation: retried when writable
                return
            except OSError as exc:  # reset, or TLS failing (ssl.SSLError is an OSError)
                self._stop_reading(ConnectionLost(f"connection lost: {exc}"), close=None)
                return
            if not data:
                self._stop_reading(ConnectionLost(_EOF), close=None)
                return
            decoder.feed(data)
            if not self._tls or not _tls_pending(sock):
                self._deliver(decoder)
                return  # level-triggered: the loop comes back while the socket has more

    def _readv(self, view: memoryview) -> int:
        return os.readv(self._fd, [view])

    def _deliver(self, decoder: FrameDecoder) -> bool:
        """Hand out decoded messages while there is credit; False: stop reading for now."""
        while True:
            if not self._by_us and not self._has_credit():
                self._paused = True
                # Read again once the flag is set: a consumed() after this sees the
                # flag and wakes us; one before it shows here as credit.
                if not self._has_credit() and not self._by_us:
                    return False
                self._paused = False
            try:
                event = decoder.next()
            except FrameTooBig as exc:
                self._stop_reading(MessageTooBig(exc.announced, exc.limit),
                                   close=wsc.CLOSE_TOO_BIG)
                return False
            except ProtocolViolation as exc:
                self._stop_reading(ConnectionLost(f"protocol violation by the server: {exc}"),
                                   close=wsc.CLOSE_PROTOCOL_ERROR)
                return False
            if event is None:
                return True
            opcode, payload = event
            if opcode == OP_CLOSE:
                code = wsc.close_code(payload)
                clean = code in CLEAN_CLOSE_CODES
                error = None if clean else \
                    ConnectionLost(f"server closed the connection with code {code}")
                self._stop_reading(error, close=code if clean else wsc.CLOSE_NORMAL,
                                   clean=clean)
                return False
            if opcode == OP_PING:
                self._enqueue(wsc.frame_bytes(payload, OP_PONG), None)
            elif opcode != OP_PONG:
                self._dispatch(opcode, payload)

    def _dispatch(self, opcode: int, payload: bytes) -> None:
        data: str | bytes
        if opcode == OP_TEXT:
            data = payload.decode("utf-8", "replace")
            if (reply := self._codec.autoreply(data)) is not None:
                # Heartbeats are answered here, not in the mailbox, so a busy
                # actor never misses the server's ping timeout.
                self.send(reply)
                return
        else:
            data = payload
        if self._by_us:
            return  # closing: nobody wants it
        self._delivered_frames += 1
        self._delivered_bytes += len(data)
        self._report(Received(self.generation, data))

    def _stop_reading(self, error: Exception | None, close: int | None, *,
                      clean: bool = False) -> None:
        """Reading is over: say why (a close frame with ``close``), then end once written."""
        self._reading = False
        self._end_error = error
        self._clean = clean
        with self._lock:
            if self._by_us or self._error is not None:
                return  # our own close is under way (or a failure ends it now)
            if close is None:  # the peer is gone: unwritten frames stay unwritten
                self._writes = None
                self._write_bytes = 0
                self._write_deadline = None
                return
            self._drop_unstarted()
            if not self._writes:
                self._write_deadline = time.monotonic() + self._options.write_timeout
            frame = wsc.frame_bytes(wsc.close_payload(close), OP_CLOSE)
            self._queue().extend(((frame, None), (SHUTDOWN, None)))
            self._write_bytes += len(frame)
        self._flush()

    def _flush(self) -> None:
        """Write what the socket takes now, in order; report each frame written."""
        tokens: list[object] = []
        sock = self._live
        assert sock is not None
        with self._lock:
            writes = self._writes
            while writes and self._error is None:
                data, token = writes[0]
                if not isinstance(data, bytes | memoryview):  # SHUTDOWN: all is out
                    writes.popleft()
                    self._shut = True
                    shutdown(sock)
                    break
                try:
                    if self._tls:
                        done = sock.send(data[:_TLS_WRITE_CHUNK])
                    else:
                        done = os.write(self._fd, data)
                except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                    break
                except ssl.SSLWantReadError:
                    self._tls_write_wants_read = True
                    break
                except OSError as exc:
                    self._error = ConnectionLost(f"write failed: {exc}")
                    break
                self._write_bytes -= done
                if done < len(data):
                    writes[0] = (memoryview(data)[done:], token)
                    self._head_started = True
                    continue  # TLS wrote one record; plain TCP meets a full socket next
                writes.popleft()
                self._head_started = False
                if token is not None:
                    tokens.append(token)
                self._write_deadline = (time.monotonic() + self._options.write_timeout
                                        if writes else None)
            if not writes:
                self._writes = None
        for token in tokens:
            self._report(Written(self.generation, token))

    def _end(self) -> None:
        """Release the socket (the loop is its last user) and report ``Ended``, once."""
        if self._ended:
            return
        self._ended = True
        with self._lock:
            self._over = True
            self._raw_fd = -1  # the fast path never writes a descriptor about to be closed
            by_us = self._by_us
            error = self._end_error or self._error
            clean = self._clean and error is None
            self._writes = None
            self._write_bytes = 0
            self._write_deadline = None
            sock = self._live
        if self._fd >= 0:
            reactor().watch(self._fd, self, 0)
        if sock is not None:
            shutdown(sock)
            sock.close()
        self._report(Ended(self.generation, None if by_us else error, clean))


def data_frame(frame: str | bytes) -> bytes:
    """``frame`` as a masked client frame: text for ``str``, binary for ``bytes``."""
    return wsc.frame_bytes(frame, OP_TEXT if isinstance(frame, str) else OP_BINARY)


def _tls_pending(sock: socket.socket) -> int:
    """Decrypted bytes the TLS layer holds: no readiness event will announce them."""
    pending: Callable[[], int] | None = getattr(sock, "pending", None)
    return pending() if pending is not None else 0


def _write_now(fd: int, data: bytes) -> int:
    """Bytes of ``data`` written to a non-blocking descriptor without waiting."""
    try:
        return os.write(fd, data)
    except OSError:
        return 0  # full (BlockingIOError), or broken: the loop meets it and reports it


def shutdown(sock: socket.socket | None) -> None:
    """Shut the TCP connection down: the peer sees the end, our reads see EOF.

    The base class's method, on purpose: ``ssl.SSLSocket.shutdown`` drops its TLS
    object before the TCP shutdown, and a write in that window would fall
    through to plain ``socket.send``, putting a frame on the wire unencrypted.
    """
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
