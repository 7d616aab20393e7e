"""``Session``: the handle users hold for one supervised session."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pykka

from supervisor._futures import new_future
from supervisor._record import SessionRecord
from supervisor.messages import (
    Chat,
    Close,
    Resume,
    ResumeResult,
    Send,
    SessionState,
    SessionStatus,
)
from supervisor.protocols.chat import TurnResult
from supervisor.spec import SessionSpec, check_thread_id, check_timeout


class Session:
    """A handle to one supervised session; usable at once, safe from any thread.

    Every method returns at once with a future; the session's actor does the work.
    """

    __slots__ = ("_record",)

    def __init__(self, record: SessionRecord) -> None:
        self._record = record

    @property
    def id(self) -> str:
        return self._record.spec.session_id

    @property
    def spec(self) -> SessionSpec:
        return self._record.spec

    @property
    def status(self) -> SessionStatus:
        """The latest published status: :meth:`state`'s, without copying the snapshot."""
        return self._record.snapshot.status

    def resume(self, thread_id: str | None, *,
               timeout: float | None = None) -> pykka.Future[ResumeResult]:
        """Switch to ``thread_id``; the future resolves once connected for it.

        Raises ``ValueError`` at once, before any I/O, for a thread id with a
        control character. A newer Resume resolves this one as superseded.
        Fails with ``ResumeTimeout`` after ``timeout`` seconds (default
        ``SessionSpec.resume_timeout``); the session keeps trying.
        """
        check_thread_id(thread_id)
        check_timeout(timeout, "timeout")
        reply: pykka.Future[ResumeResult] = new_future()
        self._record.deliver(Resume(thread_id, reply, timeout, time.monotonic()))
        return reply

    def send(self, data: str | bytes, *, timeout: float | None = None) -> pykka.Future[None]:
        """Send one frame; buffered (bounded) while reconnecting.

        The future resolves once the frame is written to the socket. A frame
        written to a socket the peer has just dropped can still be lost. Fails
        with ``SendTimeout`` if not written within ``timeout`` seconds (default
        ``SessionSpec.send_timeout``).
        """
        if self._record.spec.protocol == "websocket" and not isinstance(data, str | bytes):
            msg = f"send() takes str or bytes, not {type(data).__name__}"
            raise TypeError(msg)
        check_timeout(timeout, "timeout")
        reply: pykka.Future[None] = new_future()
        self._record.deliver(Send(data, reply, timeout=timeout, issued_at=time.monotonic()))
        return reply

    def emit(self, event: str, data: Any = None, *,
             timeout: float | None = None) -> pykka.Future[None]:
        """Emit a Socket.IO event (protocols ``socketio`` and ``chainlit``); as ``send()``."""
        if self._record.spec.protocol == "websocket":
            msg = "emit() needs a Socket.IO session; use send() on a plain WebSocket"
            raise TypeError(msg)
        check_timeout(timeout, "timeout")
        reply: pykka.Future[None] = new_future()
        self._record.deliver(Send(data, reply, event=event, timeout=timeout,
                                  issued_at=time.monotonic()))
        return reply

    def call(self, event: str, data: Any = None, *,
             timeout: float | None = None) -> pykka.Future[Any]:
        """Emit a Socket.IO event and resolve with the server's acknowledgement.

        If the connection is lost before the ack arrives, the future fails with
        ``ConnectionLost``: the server may or may not have handled the event, so
        it is not re-sent. Fails with ``ReplyTimeout`` if no ack came within
        ``timeout`` seconds (default ``SessionSpec.reply_timeout``).
        """
        if self._record.spec.protocol == "websocket":
            msg = "call() needs a Socket.IO session"
            raise TypeError(msg)
        check_timeout(timeout, "timeout")
        reply: pykka.Future[Any] = new_future()
        self._record.deliver(Send(data, reply, event=event, want_ack=True, timeout=timeout,
                                  issued_at=time.monotonic()))
        return reply

    def chat(self, text: str, *, timeout: float | None = None) -> pykka.Future[TurnResult]:
        """Chainlit: send ``text`` as a user message; resolve with the reply turn.

        The ``TurnResult`` holds the reply text and the time to the first
        token, between tokens and to the end of the turn (``task_end``). Fails
        with ``ReplyTimeout`` if the turn has not ended within ``timeout``
        seconds (default ``SessionSpec.reply_timeout``).
        """
        if self._record.spec.protocol != "chainlit":
            msg = "chat() needs a Chainlit session (protocol='chainlit')"
            raise TypeError(msg)
        if not isinstance(text, str):
            msg = f"chat() takes str, not {type(text).__name__}"
            raise TypeError(msg)
        check_timeout(timeout, "timeout")
        reply: pykka.Future[TurnResult] = new_future()
        self._record.deliver(Chat(text, reply, time.time(), timeout, time.monotonic()))
        return reply

    def close(self) -> pykka.Future[None]:
        """Close the session for good; pending commands fail with ``SessionClosed``."""
        reply: pykka.Future[None] = new_future()
        self._record.deliver(Close(reply))
        return reply

    def state(self) -> SessionState:
        """The latest published snapshot (never waits on the actor), with the live
        inbound backlog and the oversized-message count."""
        record = self._record
        conn = record.connection
        return dataclasses.replace(
            record.snapshot, oversized_messages=record.oversized_messages,
            inbound_backlog=0 if conn is None else conn.inbound_backlog,
            inbound_backlog_bytes=0 if conn is None else conn.inbound_backlog_bytes)

    def __repr__(self) -> str:
        snapshot = self._record.snapshot
        return (f"<Session {self.id} {snapshot.status.value} thread={snapshot.thread_id!r} "
                f"gen={snapshot.generation}>")
