"""The Socket.IO side of the target: Chainlit's connect, resume and session rules.

Rules mirrored from Chainlit's ``socket.py`` (2.x; 1.x differs only where noted):

- A connect names a ``sessionId``. A known one restores that session onto the
  new connection and ignores the ``threadId`` sent now, so a client must
  rotate ``sessionId`` to switch threads.
- A new session with a ``threadId`` is bound to that thread. After the client
  emits ``connection_successful`` it gets ``resume_thread`` with the thread's
  history, or ``resume_thread_error`` ("Thread not found.") when the thread
  does not exist yet or is not the user's; its messages then start that thread.
- ``clear_session`` marks the session to be dropped when its connection
  closes; otherwise a disconnected session can be restored for
  ``session_timeout`` seconds.

Unlike real Chainlit, resume works with auth off (threads then belong to
nobody), so load tests can switch threads without logging in.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import socketio  # type: ignore[import-untyped]

from supervisor._logging import get_logger
from supervisor.target.auth import verify_token
from supervisor.target.faults import LINK_SCOPE_KEY, FaultInjector, LinkCutter
from supervisor.target.identity import (
    ClientIdentity,
    HandshakeLog,
    MalformedIdentity,
    read_identity,
)
from supervisor.target.message_log import MessageLog
from supervisor.target.options import OPAQUE_REFUSAL, TargetOptions
from supervisor.target.sessions import ChatSession, SessionRegistry
from supervisor.target.threads import ThreadStore
from supervisor.target.turns import TurnRunner

logger = get_logger(__name__)

_OPAQUE_1X_REFUSAL = "Connection rejected by server"  # Chainlit 1.x returned False


class ChainlitChat:
    """Registers Chainlit's Socket.IO events on ``sio`` and keeps their state."""

    def __init__(self, sio: Any, options: TargetOptions, threads: ThreadStore,
                 handshakes: HandshakeLog, faults: FaultInjector,
                 messages: MessageLog | None = None) -> None:
        self._sio = sio
        self._options = options
        self._threads = threads
        self._handshakes = handshakes
        self._faults = faults
        self.sessions = SessionRegistry()
        self._turns = TurnRunner(sio, options, threads, faults, messages)
        sio.on("connect", self._on_connect)
        sio.on("connection_successful", self._on_connection_successful)
        sio.on("client_message", self._on_client_message)
        sio.on("clear_session", self._on_clear_session)
        sio.on("disconnect", self._on_disconnect)
        # Not Chainlit's: lets clients test acknowledgements they ask for.
        sio.on("echo_ack", self._on_echo_ack)

    # ------------------------------------------------------------ connect

    async def _on_connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> bool:
        scope = environ.get("asgi.scope") or {}
        link: LinkCutter | None = scope.get(LINK_SCOPE_KEY)
        try:
            identity = read_identity(self._options.identity_style, environ, auth)
        except MalformedIdentity as exc:
            self._handshakes.record(sid, "ignored", reason=exc.reason, **exc.partial)
            logger.warning("target_malformed_identity", sid=sid, reason=exc.reason)
            # Re-raised, as Chainlit's handler crashes here: python-socketio
            # then logs the error and never answers the connect, so the client
            # hangs until its own timeout, exactly as against real Chainlit.
            raise
        await self._faults.delay_handshake()
        if self._faults.should_refuse():
            raise self._refuse(sid, identity, None, "injected refusal")
        user = self._authenticate(sid, identity)
        session = self.sessions.by_id(identity.session_id)
        if session is not None:
            if session.user != user:
                raise self._refuse(sid, identity, user, "authorization failed")
            self.sessions.rebind(session, sid, link)
            self._handshakes.record(sid, "restored", user=user,
                                    bound_thread_id=session.thread_id, **identity.log_fields())
            return True
        thread_id = identity.thread_id or str(uuid.uuid4())
        if identity.thread_id is not None and self._is_foreign(identity.thread_id, user):
            # foreign_thread == "error": answer resume_thread_error, write elsewhere.
            thread_id = str(uuid.uuid4())
        self.sessions.add(ChatSession(
            session_id=identity.session_id, sid=sid, style=identity.style, user=user,
            client_type=identity.client_type, chat_profile=identity.chat_profile,
            thread_id=thread_id, resume_from=identity.thread_id, link=link))
        self._handshakes.record(sid, "accepted", user=user, bound_thread_id=thread_id,
                                **identity.log_fields())
        return True

    def _authenticate(self, sid: str, identity: ClientIdentity) -> str | None:
        """The connecting user, or None with auth off; raises the refusal otherwise."""
        if not self._options.require_login:
            return None
        user = None
        if identity.token is not None:
            user = verify_token(self._options.secret, identity.token, now=time.time())
        if user is None:
            raise self._refuse(sid, identity, None, "authentication failed")
        if (identity.thread_id is not None and self._options.foreign_thread == "refuse"
                and self._is_foreign(identity.thread_id, user)):
            raise self._refuse(sid, identity, user, "authorization failed")
        return user

    def _is_foreign(self, thread_id: str, user: str | None) -> bool:
        """Whether an existing thread belongs to someone else (never, with auth off)."""
        return (self._options.require_login and self._threads.exists(thread_id)
                and self._threads.owner(thread_id) != user)

    def _refuse(self, sid: str, identity: ClientIdentity, user: str | None,
                reason: str) -> Exception:
        """Log a refusal; the exception that makes python-socketio answer ``44{"message":...}``."""
        self._handshakes.record(sid, "refused", user=user, reason=reason,
                                **identity.log_fields())
        logger.debug("target_connect_refused", sid=sid, reason=reason)
        if self._options.opaque_refusals:
            reason = OPAQUE_REFUSAL if self._options.identity_style == "2" else _OPAQUE_1X_REFUSAL
        refusal: Exception = socketio.exceptions.ConnectionRefusedError(reason)
        return refusal

    # ------------------------------------------------------------ session events

    async def _on_connection_successful(self, sid: str) -> None:
        session = self.sessions.by_sid(sid)
        if session is None:
            return
        if session.style == "1" and session.restored:
            return  # Chainlit 1.x did nothing more for a restored session
        # Chainlit resets the client's task and prompt state on every connect.
        for event in ("task_end", "clear_ask", "clear_call_fn"):
            await self._turns.emit(session, event, {})
        if session.restored and not session.has_first_interaction:
            return
        if session.resume_from is None:
            return
        thread = self._threads.get(session.resume_from)
        if thread is None or self._is_foreign(session.resume_from, session.user):
            await self._turns.emit(session, "resume_thread_error", "Thread not found.")
            return
        session.has_first_interaction = True
        await self._turns.emit(session, "first_interaction",
                               {"interaction": "resume", "thread_id": thread["id"]})
        await self._turns.emit(session, "resume_thread", thread)

    async def _on_client_message(self, sid: str, payload: Any = None) -> None:
        session = self.sessions.by_sid(sid)
        if session is None:
            logger.debug("target_message_without_session", sid=sid)
            return
        await self._turns.run(session, payload)

    async def _on_echo_ack(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Acknowledge with the payload and the thread of the sender's session."""
        session = self.sessions.by_sid(sid)
        return {"data": data, "thread": None if session is None else session.thread_id}

    async def _on_clear_session(self, sid: str, *_args: Any) -> None:
        session = self.sessions.by_sid(sid)
        if session is not None:
            session.to_clear = True

    async def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        session = self.sessions.detach(sid)
        if session is None:
            return
        if session.to_clear:
            self.sessions.remove(session)
            return
        loop = asyncio.get_running_loop()
        session.expiry = loop.call_later(self._options.session_timeout, self._expire, session)

    def _expire(self, session: ChatSession) -> None:
        if not session.connected:
            self.sessions.remove(session)
