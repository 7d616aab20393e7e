"""``TargetOptions``: how the embedded target behaves, validated once at construction."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

IdentityStyle = Literal["2", "1"]
ForeignThread = Literal["refuse", "error"]
DropWhen = Literal["after_reply", "on_message"]

OPAQUE_REFUSAL = "Connection refused by server"
"""What real Chainlit refusals carry: Chainlit raises the *builtin*
``ConnectionRefusedError``, which python-socketio (5.14.3 and later) answers
with this fixed text instead of Chainlit's own message."""


@dataclass(frozen=True, slots=True)
class TargetOptions:
    """Everything the target can be told; defaults mirror Chainlit 2.x with auth off."""

    identity_style: IdentityStyle = "2"
    """``"2"``: identity in the Socket.IO ``auth`` payload, token in the
    ``access_token`` cookie. ``"1"``: identity in ``X-Chainlit-*`` handshake
    headers, token in ``Authorization``; ``GET /user`` then answers HTML."""

    require_login: bool = False
    """Refuse Socket.IO connects without a valid token; own threads only."""

    password: str | None = field(default=None, repr=False)
    """Shared password for ``POST /login``; None: the password must equal the
    username. Without ``require_login`` any password is accepted."""

    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    """HS256 key for access tokens; set it to mint tokens elsewhere
    (``supervisor.chainlit_auth.mint_jwt``) that this target accepts."""

    token_ttl: float = 86_400.0
    """Lifetime of the tokens ``POST /login`` issues, seconds."""

    foreign_thread: ForeignThread = "refuse"
    """A ``threadId`` owned by another user (``require_login`` only):
    ``"refuse"`` the connect with "authorization failed", as Chainlit 2.9+
    does, or answer ``resume_thread_error`` on a fresh thread (older 2.x)."""

    opaque_refusals: bool = False
    """Send every refusal as "Connection refused by server", the text real
    Chainlit produces, instead of the target's descriptive messages."""

    session_timeout: float = 3600.0
    """How long a disconnected, uncleared session can still be restored by its
    ``sessionId`` (Chainlit's ``session_timeout``)."""

    token_delay: float = 0.0
    """Seconds before each streamed reply token."""

    reply_tokens: int | None = None
    """Tokens per reply; None: one per word of the user's text. A number
    cycles over the words, so load tests can ask for long streams."""

    ask_timeout: float = 60.0
    """Seconds a ``/ask`` prompt waits for the client's ack."""

    handshake_log: str | Path | None = None
    """JSON-lines file with one record per Socket.IO connect attempt."""

    message_log: str | Path | None = None
    """JSON-lines file with one record per chat message a client sent."""

    drop_probability: float = 0.0
    """Chance to cut a connection at ``drop_when`` (Socket.IO turns) or after
    each echoed frame (``/ws/echo``)."""

    drop_when: DropWhen = "after_reply"
    """``"after_reply"``: after ``task_end``; ``"on_message"``: as soon as
    the user message is stored, so its reply is lost."""

    refuse_probability: float = 0.0
    """Chance to refuse a connect (Socket.IO connect error, or HTTP 403 on
    ``/ws/echo``)."""

    handshake_delay: float = 0.0
    """Seconds to wait before deciding each connect."""

    seed: int | None = None
    """Seed of the fault injector's RNG, so fault tests are repeatable."""

    ping_interval: int = 25
    """Engine.IO heartbeat interval, whole seconds (python-socketio's and Chainlit's
    default); python-engineio advertises ``int(interval) * 1000`` ms, so a
    fraction would be announced as 0."""

    ping_timeout: float = 20.0
    """Engine.IO heartbeat timeout, seconds."""

    def __post_init__(self) -> None:
        if self.identity_style not in ("1", "2"):
            msg = f"identity_style must be '1' or '2', not {self.identity_style!r}"
            raise ValueError(msg)
        if self.foreign_thread not in ("refuse", "error"):
            msg = f"foreign_thread must be 'refuse' or 'error', not {self.foreign_thread!r}"
            raise ValueError(msg)
        if self.drop_when not in ("after_reply", "on_message"):
            msg = f"drop_when must be 'after_reply' or 'on_message', not {self.drop_when!r}"
            raise ValueError(msg)
        for name in ("drop_probability", "refuse_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                msg = f"{name} must be within [0, 1], not {value!r}"
                raise ValueError(msg)
        for name in ("token_delay", "handshake_delay", "session_timeout", "ask_timeout",
                     "token_ttl", "ping_timeout"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:  # also refuses NaN
                msg = f"{name} must be a finite number of seconds, 0 or more, not {value!r}"
                raise ValueError(msg)
        for name in ("handshake_log", "message_log"):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().parent.is_dir():
                msg = f"{name}: directory {Path(path).expanduser().parent} does not exist"
                raise ValueError(msg)
        if not isinstance(self.ping_interval, int) or self.ping_interval < 1:
            msg = f"ping_interval must be whole seconds >= 1, not {self.ping_interval!r}"
            raise ValueError(msg)
        if self.reply_tokens is not None and self.reply_tokens < 1:
            msg = f"reply_tokens must be at least 1, not {self.reply_tokens!r}"
            raise ValueError(msg)
        if not self.secret:
            msg = "secret must not be empty"
            raise ValueError(msg)
