"""The error types of the library: one root, :class:`SupervisorError`.

"Closed by us" (:class:`SessionClosed`) and "broken by the peer or the network"
(:class:`ConnectionLost`, :class:`HandshakeError`) are different types, as a
caller reacts to them differently: the first is their own doing, the second may
pass with a restart.
"""

from __future__ import annotations

from collections.abc import Mapping


class SupervisorError(Exception):
    """Root of every error this library raises on purpose."""


class SessionClosed(SupervisorError):
    """The session was closed by us (``close()`` or ``Supervisor.stop()``)."""


class SessionFailed(SupervisorError):
    """The supervisor gave up on the session; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboxFull(SupervisorError):
    """A send was refused because the reconnect buffer is at its bound."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"outbox full: {limit} sends already wait for a connection")
        self.limit = limit


class ConnectionLost(SupervisorError):
    """The peer or the network broke an open connection."""


class HandshakeError(SupervisorError):
    """The connection could not be opened (network error or timeout)."""


class HandshakeRefused(HandshakeError):
    """The server answered the WebSocket upgrade with an HTTP error status.

    ``status_code`` and ``headers`` are kept so callers can tell 401/403
    (credentials: not retried by default) from 5xx (retried with backoff).
    """

    def __init__(self, status_code: int, headers: Mapping[str, str] | None = None,
                 body: bytes = b"") -> None:
        super().__init__(f"handshake refused with HTTP {status_code}")
        self.status_code = status_code
        self.headers = dict(headers or {})
        self.body = body


class ProtocolRefused(SupervisorError):
    """The server refused the session at the protocol level (e.g. Socket.IO ``44``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SessionCrashed(SessionFailed):
    """The supervisor gave up on a session whose actor kept crashing."""


class HandshakeRedirected(HandshakeRefused):
    """The server answered the upgrade with a redirect, which was not followed.

    Redirects are refused by default so no header, cookie or token ever reaches
    another origin (I10); ``location`` says where the server pointed.
    """

    def __init__(self, status_code: int, headers: Mapping[str, str] | None = None,
                 location: str = "") -> None:
        super().__init__(status_code, headers)
        self.location = location
        self.args = (f"handshake redirected with HTTP {status_code} to {location!r} "
                     "(redirects are not followed across origins, nor by default)",)


class MessageTooBig(ConnectionLost):
    """The peer announced a message over ``limit`` bytes; the connection was ended."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the server sent a message of {size} bytes or more, over the "
                         f"{limit}-byte limit (max_message_bytes)")
        self.size = size
        self.limit = limit


class EventsOverflowed(SupervisorError):
    """``supervisor.aio``: events arrived faster than the iterator was read; ``dropped`` were lost.

    Raised by the ``session.events()`` iterator exactly where the gap is, once
    every event from before it has been yielded; iterating again goes on with
    the events from after it.
    """

    def __init__(self, dropped: int) -> None:
        super().__init__(f"{dropped} events dropped: the event buffer was full")
        self.dropped = dropped


class SupervisorStopped(SessionClosed):
    """The supervisor is stopping or stopped: ``open()`` and every command fail with this."""


# --- deadlines (core): every future settles by its deadline ---------------------------


class DeadlineExceeded(SupervisorError):
    """A command did not complete within its timeout (``timeout`` seconds)."""

    def __init__(self, message: str, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout


class ResumeTimeout(DeadlineExceeded):
    """A Resume did not connect within its timeout; the session keeps trying per its policy."""

    def __init__(self, thread_id: str | None, timeout: float) -> None:
        super().__init__(f"resume of thread {thread_id!r} not connected within {timeout:g}s "
                         "(the session keeps trying)", timeout)
        self.thread_id = thread_id


class ReplyTimeout(DeadlineExceeded):
    """No reply (Socket.IO ack, or the end of a chat turn) came within the timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no reply within {timeout:g}s", timeout)


class SendTimeout(DeadlineExceeded):
    """A send was not written to the socket within its timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"send not written within {timeout:g}s", timeout)


class MalformedAck(SupervisorError):
    """The server's acknowledgement of a ``call()`` arrived malformed (e.g. a broken
    binary attachment sequence); ``reason`` says how. The frame was counted as malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
