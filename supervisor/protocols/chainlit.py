"""Chainlit: Socket.IO at ``/ws/socket.io`` with Chainlit's identity and resume handshake (pure).

Facts checked against Chainlit's source (``backend/chainlit/socket.py``,
``backend/chainlit/emitter.py``, ``libs/react-client/src/useChatSession.ts``):

* 2.x reads the identity from the Socket.IO CONNECT ``auth`` payload, exactly
  as the React client sends it: ``clientType``, ``sessionId``, ``threadId``
  (``""`` when none), ``userEnv`` (a JSON *string*; ``"{}"`` when empty, as
  ``load_user_env`` in 2.8+ raises ``UnboundLocalError`` on a missing or empty
  one), ``chatProfile`` (URL-encoded with ``encodeURIComponent``, ``""`` when
  none). Credentials are the ``access_token`` cookie (or its
  ``access_token_0``, ``_1``... chunks).
* 1.x reads the same identity from handshake headers (``X-Chainlit-*``,
  ``user-env``) and the token only from ``Authorization: Bearer <token>``
  (``socket.py`` ``connect``); the CONNECT has no auth. Its ``POST /login``
  answers the token in the body, not as a cookie. So for 1.x the codec sends
  the session's ``access_token`` cookie as that header, unless the user set
  ``Authorization`` themselves: one login works for both styles.
* After the CONNECT reply the client emits ``connection_successful``. The
  server answers ``task_end``, ``clear_ask``, ``clear_call_fn`` and then, only
  if the session was created with a thread id *and* the app defines
  ``@cl.on_chat_resume``: ``first_interaction`` ``{"interaction": "resume",
  "thread_id"}`` and ``resume_thread`` (the thread dict) when the thread exists
  and belongs to the logged-in user, else ``resume_thread_error`` with
  ``"Thread not found."`` (2.0.2 and later; 1.x and 2.0.0-2.0.1 send nothing
  for it and run ``on_chat_start`` instead, checked live on 1.3.2 and 2.0.1).
  ``on_chat_resume`` runs between the two, in its own ``task_start``/``task_end``.
* So, while a resume answer is awaited, a ``task_start`` or a step
  (``new_message``, ``stream_start``) before ``first_interaction`` is
  ``on_chat_start`` running: the server started a new chat, the thread was not
  found. That resolves the resume with ``found=False`` on every version.
* Refusals at CONNECT (no or bad ``access_token``, a thread owned by another
  user) arrive as ``44{"message": "Connection refused by server"}``: Chainlit
  raises Python's builtin ``ConnectionRefusedError("authorization failed")``,
  whose text python-socketio does not forward (checked live on 2.12).

So the codec waits for ``resume_thread``/``resume_thread_error`` (or the
new-chat sign) before ``Ready`` only when it can expect one. Cases that never
answer, where only the session's connect timeout ends the wait:

* an app without ``on_chat_resume``;
* an app without ``on_chat_start`` on 1.x and 2.0.0-2.0.1, for a missing thread;
* a reconnect that *restores* a session the server still holds (same
  ``sessionId``, no ``clear_session`` before): 2.0-2.8 never resume a restored
  session; 2.9+ (checked live on 2.12) resume it again, ignoring the new
  ``threadId``, only if that session was *created* with a thread id and has
  had an interaction (a resumed one has), and stay silent otherwise.

Pass ``confirm_resume=False`` for those cases: ``Ready()`` then follows
``connection_successful`` at once.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from supervisor.protocols.base import (
    Action,
    Handshake,
    Identity,
    Inbound,
    Outbound,
    Ready,
    VersionLookup,
)
from supervisor.protocols.config import DEFAULT_THREAD_HEADER, ProtocolConfig
from supervisor.protocols.socketio import SocketIOCodec, http_base_url

DEFAULT_PATH = "ws/socket.io"
CONFIRM_RESUME = True
"""Default: wait for ``resume_thread``/``resume_thread_error`` before ``Ready``."""

RESUME_THREAD = "resume_thread"
RESUME_THREAD_ERROR = "resume_thread_error"
CONNECTION_SUCCESSFUL = "connection_successful"
CLEAR_SESSION = "clear_session"
FIRST_INTERACTION = "first_interaction"
NEW_CHAT_SIGNS = frozenset({"task_start", "new_message", "stream_start"})
"""Events that, before ``first_interaction``, show ``on_chat_start`` running (no resume)."""
NEW_CHAT = "the server started a new chat: no such thread"
"""``Ready.thread_data`` when the thread was not found without ``resume_thread_error``."""

ACCESS_TOKEN_COOKIE = "access_token"  # noqa: S105 - a cookie name, not a secret
HEADER_AUTHORIZATION = "Authorization"

HEADER_CLIENT_TYPE = "X-Chainlit-Client-Type"
HEADER_SESSION_ID = "X-Chainlit-Session-Id"
HEADER_THREAD_ID = DEFAULT_THREAD_HEADER
HEADER_USER_ENV = "user-env"
HEADER_CHAT_PROFILE = "X-Chainlit-Chat-Profile"
_IDENTITY_HEADERS = frozenset({HEADER_CLIENT_TYPE, HEADER_SESSION_ID, HEADER_THREAD_ID,
                               HEADER_USER_ENV, HEADER_CHAT_PROFILE})


def encode_uri_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent`` (Chainlit ``unquote``s the chat profile)."""
    return quote(text, safe="!~*'()")


class ChainlitCodec(SocketIOCodec):
    """Codec for protocol ``"chainlit"`` (Chainlit 2.x auth payload or 1.x headers).

    ``handshake(lookup_version)`` asks the transport's lookup at most once, and
    only when ``config.chainlit_version`` is ``"auto"``. ``config.auth`` is not
    used: Chainlit's auth payload is built from the identity. Thread and
    session ids were validated where they entered (``SessionSpec``,
    ``Session.resume``); the codec trusts its identity.

    When ``Ready`` waits for a resume answer, the answer is delivered first as
    an ``Inbound`` event, then ``Ready(thread_found=..., thread_data=...)``.
    """

    default_path = DEFAULT_PATH

    def __init__(self, config: ProtocolConfig, identity: Identity, *,
                 confirm_resume: bool = CONFIRM_RESUME) -> None:
        super().__init__(config, identity)
        if identity.protocol_session_id is None:
            msg = "Chainlit needs a session id: Identity(protocol_session_id=...)"
            raise ValueError(msg)
        self._version: str | None = (None if config.chainlit_version == "auto"
                                     else config.chainlit_version)
        self._confirm_resume = confirm_resume
        self._awaiting_resume = False
        self._resume_started = False

    @property
    def version(self) -> str:
        """``"2"`` or ``"1"``; known once ``handshake()`` ran (at once unless ``"auto"``)."""
        if self._version is None:
            msg = "Chainlit version is detected in handshake(), which has not run"
            raise RuntimeError(msg)
        return self._version

    def handshake(self, lookup_version: VersionLookup | None = None) -> Handshake:
        if self._version is None:
            if lookup_version is None:
                msg = "chainlit_version='auto' needs a lookup_version callable"
                raise ValueError(msg)
            path = self._config.socketio_path or self.default_path
            detected = lookup_version(http_base_url(self._config.url, path))
            if detected not in ("1", "2"):
                msg = f"Chainlit version detection returned {detected!r}, not '1' or '2'"
                raise ValueError(msg)
            self._version = detected
        return super().handshake(lookup_version)

    def _handshake_headers(self) -> list[tuple[str, str]]:
        reserved = {self._config.thread_header, HEADER_THREAD_ID}
        if self.version == "2":
            return self._user_headers(reserved)
        headers = self._user_headers(reserved | _IDENTITY_HEADERS)
        session_id = self._identity.protocol_session_id
        assert session_id is not None  # checked in __init__
        headers += [(HEADER_CLIENT_TYPE, self._config.client_type),
                    (HEADER_SESSION_ID, session_id)]
        if self._identity.thread_id is not None:
            headers.append((HEADER_THREAD_ID, self._identity.thread_id))
        headers.append((HEADER_USER_ENV, self._user_env()))
        if self._config.chat_profile:
            headers.append((HEADER_CHAT_PROFILE, encode_uri_component(self._config.chat_profile)))
        token = dict(self._config.cookies).get(ACCESS_TOKEN_COOKIE)
        has_authorization = any(name.lower() == HEADER_AUTHORIZATION.lower()
                                for name, _ in headers)
        if token is not None and not has_authorization:
            headers.append((HEADER_AUTHORIZATION, f"Bearer {token}"))
        return headers

    def _user_env(self) -> str:
        return json.dumps(dict(self._config.user_env), separators=(",", ":"))

    def _connect_auth(self) -> Any:
        if self.version == "1":
            return None
        return auth_payload(self._identity, client_type=self._config.client_type,
                            user_env=self._user_env(), chat_profile=self._config.chat_profile)

    def _on_connected(self) -> list[Action]:
        actions: list[Action] = [Outbound(frame)
                                 for frame in self.encode_event(CONNECTION_SUCCESSFUL)]
        if self._identity.thread_id is None or not self._confirm_resume:
            actions.append(Ready())
        else:
            self._awaiting_resume = True
        return actions

    def _on_event(self, name: str, data: Any, ack_id: int | None) -> list[Action]:
        actions: list[Action] = [Inbound(name, data, ack_id)]
        if not self._awaiting_resume:
            return actions
        if name in (RESUME_THREAD, RESUME_THREAD_ERROR):
            self._awaiting_resume = False
            actions.append(Ready(thread_found=name == RESUME_THREAD, thread_data=data))
        elif name == FIRST_INTERACTION:
            self._resume_started = True  # the thread was found; resume_thread follows
        elif name in NEW_CHAT_SIGNS and not self._resume_started:
            self._awaiting_resume = False
            actions.append(Ready(thread_found=False, thread_data=NEW_CHAT))
        return actions

    def closing(self) -> list[str | bytes]:
        return [*self.encode_event(CLEAR_SESSION), *super().closing()]


def auth_payload(identity: Identity, *, client_type: str = "webapp", user_env: str = "{}",
                 chat_profile: str | None = None) -> dict[str, Any]:
    """The Socket.IO CONNECT ``auth`` payload Chainlit 2.x reads, for ``identity``.

    ``user_env`` is the JSON *string* Chainlit expects (``"{}"`` when empty).
    Usable as ``SessionSpec(auth=...)`` of a plain ``socketio`` session through
    ``functools.partial``, so each handshake carries that connection's thread.
    """
    return {
        "clientType": client_type,
        "sessionId": identity.protocol_session_id,
        "threadId": identity.thread_id or "",
        "userEnv": user_env,
        "chatProfile": encode_uri_component(chat_profile) if chat_profile else "",
    }
