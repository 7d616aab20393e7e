"""Who is connecting: Chainlit's two identity styles, and the handshake log.

Chainlit 2.x reads the identity from the Socket.IO connect ``auth`` payload
and the token from the ``access_token`` cookie; 1.x read both from HTTP
headers of the handshake. Where real Chainlit crashes on a malformed identity
(a missing ``sessionId``, an empty ``userEnv``), the connect is never answered,
so :class:`MalformedIdentity` lets the target reproduce that silence.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from supervisor.target.auth import token_from_authorization, token_from_cookie_header
from supervisor.target.options import IdentityStyle

HANDSHAKE_MEMORY = 10_000
"""Handshake records kept in memory (the file, if any, keeps them all)."""


class MalformedIdentity(Exception):
    """The handshake lacks what Chainlit needs; ``partial`` holds what could be read."""

    def __init__(self, reason: str, partial: Mapping[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = dict(partial)


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What one Socket.IO connect says about its session, in either style."""

    style: IdentityStyle
    client_type: str | None
    session_id: str
    thread_id: str | None  # None: no thread asked for (Chainlit sends "")
    user_env: Mapping[str, Any]
    chat_profile: str | None
    token: str | None

    def log_fields(self) -> dict[str, Any]:
        """The fields the handshake log records (never the token)."""
        return {"style": self.style, "client_type": self.client_type,
                "session_id": self.session_id, "thread_id": self.thread_id,
                "chat_profile": self.chat_profile}


def read_identity(style: IdentityStyle, environ: Mapping[str, Any], auth: Any) -> ClientIdentity:
    """The identity of one connect, read the way Chainlit ``style`` reads it."""
    if style == "2":
        return _from_auth(environ, auth)
    return _from_headers(environ)


def _blank_to_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _from_auth(environ: Mapping[str, Any], auth: Any) -> ClientIdentity:
    if not isinstance(auth, Mapping):
        # A 1.x client sends no auth payload: Chainlit 2.x fails on auth.get().
        raise MalformedIdentity("no Socket.IO auth payload", {"style": "2"})
    partial = {"style": "2", "client_type": auth.get("clientType"),
               "session_id": auth.get("sessionId"), "thread_id": auth.get("threadId")}
    session_id = auth.get("sessionId")
    if not isinstance(session_id, str) or not session_id:
        raise MalformedIdentity("auth has no sessionId", partial)
    if not isinstance(auth.get("clientType"), str):
        raise MalformedIdentity("auth has no clientType", partial)
    # Chainlit 2.7+ leaves its user_env variable unbound for an empty userEnv,
    # and crashes on invalid JSON: clients must send "{}".
    raw_env = auth.get("userEnv")
    try:
        user_env = json.loads(raw_env) if isinstance(raw_env, str) and raw_env else None
    except ValueError:
        user_env = None
    if not isinstance(user_env, dict):
        raise MalformedIdentity("userEnv is not a JSON object string", partial)
    profile = _blank_to_none(auth.get("chatProfile"))
    return ClientIdentity(
        style="2", client_type=auth["clientType"], session_id=session_id,
        thread_id=_blank_to_none(auth.get("threadId")), user_env=user_env,
        chat_profile=unquote(profile) if profile else None,
        token=token_from_cookie_header(environ.get("HTTP_COOKIE")))


def _from_headers(environ: Mapping[str, Any]) -> ClientIdentity:
    session_id = _blank_to_none(environ.get("HTTP_X_CHAINLIT_SESSION_ID"))
    thread_id = _blank_to_none(environ.get("HTTP_X_CHAINLIT_THREAD_ID"))
    client_type = _blank_to_none(environ.get("HTTP_X_CHAINLIT_CLIENT_TYPE"))
    if session_id is None:
        # Chainlit 1.x would key the session by None and hand it to the next
        # header-less client; refusing to answer is the safer imitation.
        raise MalformedIdentity("no X-Chainlit-Session-Id header",
                                {"style": "1", "client_type": client_type,
                                 "thread_id": thread_id})
    try:
        user_env = json.loads(environ.get("HTTP_USER_ENV") or "{}")
    except ValueError:
        user_env = {}  # 1.x only parsed user-env when the app declared variables
    profile = _blank_to_none(environ.get("HTTP_X_CHAINLIT_CHAT_PROFILE"))
    return ClientIdentity(
        style="1", client_type=client_type, session_id=session_id, thread_id=thread_id,
        user_env=user_env if isinstance(user_env, dict) else {},
        chat_profile=unquote(profile) if profile else None,
        token=token_from_authorization(environ.get("HTTP_AUTHORIZATION")))


class HandshakeLog:
    """One record per connect attempt: in memory (bounded) and optionally JSON lines.

    Records have ``time``, ``sid``, ``style``, ``client_type``, ``session_id``,
    ``thread_id`` (as asked), ``chat_profile``, ``user``, ``outcome``
    (``accepted`` | ``restored`` | ``refused`` | ``ignored``), ``reason``
    (refused and ignored only) and ``bound_thread_id`` (the thread the session
    is on after the connect; for ``restored`` it can differ from ``thread_id``).
    """

    def __init__(self, path: str | Path | None) -> None:
        self._records: deque[dict[str, Any]] = deque(maxlen=HANDSHAKE_MEMORY)
        self._lock = threading.Lock()
        # Line-buffered, so a test (or tail -f) sees each record as it happens.
        self._file: IO[str] | None = (
            Path(path).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by close()
            if path is not None else None)

    def record(self, sid: str, outcome: str, **fields: Any) -> dict[str, Any]:
        """Append one record; returns it."""
        entry: dict[str, Any] = {"time": time.time(), "sid": sid, "style": None,
                                 "client_type": None, "session_id": None, "thread_id": None,
                                 "chat_profile": None, "user": None}
        entry.update(fields)
        entry["outcome"] = outcome
        line = json.dumps(entry, default=str)
        with self._lock:
            self._records.append(entry)
            if self._file is not None:
                self._file.write(line + "\n")
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """A copy of the records kept in memory, oldest first."""
        with self._lock:
            return [dict(entry) for entry in self._records]

    def close(self) -> None:
        """Close the file; later records are kept in memory only."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
