"""Server-side chat sessions, keyed by the client's ``sessionId`` as in Chainlit.

A Socket.IO ``sid`` lives as long as one connection; a session outlives it,
so a client that reconnects with the same ``sessionId`` gets the same session
back (and with it the same thread, whatever ``threadId`` it sends now).
Everything here runs on the event loop thread, so there is no locking.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from supervisor.target.faults import LinkCutter
from supervisor.target.options import IdentityStyle


@dataclass(slots=True, eq=False)
class ChatSession:
    """One Chainlit ``WebsocketSession``, reduced to what the target needs."""

    session_id: str
    sid: str  # the connection currently bound; emits always go here
    style: IdentityStyle
    user: str | None  # None when auth is off
    client_type: str | None
    chat_profile: str | None
    thread_id: str  # the conversation this session writes to
    resume_from: str | None  # threadId asked for at creation (Chainlit's thread_id_to_resume)
    link: LinkCutter | None = None  # None: this connection cannot be cut below Engine.IO
    restored: bool = False
    has_first_interaction: bool = False
    to_clear: bool = False  # set by clear_session: drop at disconnect, not after a timeout
    connected: bool = True
    expiry: asyncio.TimerHandle | None = None
    turn_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SessionRegistry:
    """Sessions by ``sessionId`` and by the ``sid`` of their live connection."""

    def __init__(self) -> None:
        self._by_id: dict[str, ChatSession] = {}
        self._by_sid: dict[str, ChatSession] = {}

    def by_id(self, session_id: str) -> ChatSession | None:
        """The session a client named, connected or not."""
        return self._by_id.get(session_id)

    def by_sid(self, sid: str) -> ChatSession | None:
        """The session bound to connection ``sid``, if it still is."""
        return self._by_sid.get(sid)

    def add(self, session: ChatSession) -> None:
        """Register a new session on its connection."""
        self._by_id[session.session_id] = session
        self._by_sid[session.sid] = session

    def rebind(self, session: ChatSession, sid: str, link: LinkCutter | None) -> None:
        """Move a session onto a new connection (Chainlit's ``restore``)."""
        if self._by_sid.get(session.sid) is session:
            del self._by_sid[session.sid]
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        session.sid = sid
        session.link = link
        session.restored = True
        session.connected = True
        self._by_sid[sid] = session

    def detach(self, sid: str) -> ChatSession | None:
        """Forget connection ``sid``; returns its session if ``sid`` was still its live one."""
        session = self._by_sid.pop(sid, None)
        if session is not None:
            session.connected = False
            session.link = None
        return session

    def remove(self, session: ChatSession) -> None:
        """Drop a session for good (cleared, or expired while disconnected)."""
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        if self._by_id.get(session.session_id) is session:
            del self._by_id[session.session_id]
        if self._by_sid.get(session.sid) is session:
            del self._by_sid[session.sid]

    def __len__(self) -> int:
        return len(self._by_id)
