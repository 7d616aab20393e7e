"""What goes into the session machine and what comes out of it (internal, pure).

Inputs are the user's commands (``messages.Resume``/``Send``/``Chat``/``Close``,
their futures carried as opaque tokens), the transport's reports, timer
expiries and the supervisor's answers. Effects are what the driver must do:
open, write, close or abort a connection, start a timer, settle a future,
call the user, report to the supervisor, publish a snapshot. Every record is
frozen data; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supervisor import _supervision as sup
from supervisor.messages import Chat, Close, Event, Lifecycle, Resume, Send, SessionState

if TYPE_CHECKING:
    from supervisor.errors import SupervisorError
    from supervisor.protocols import Codec

Command = Resume | Send | Chat | Close

# --- inputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Internal: the session's actor started; connect (``cause``: ``"open"`` or ``"restart"``)."""

    cause: str


@dataclass(frozen=True, slots=True)
class ConnAdmitted:
    """Internal: admission control let the handshake of ``generation`` start."""

    generation: int


@dataclass(frozen=True, slots=True)
class ConnOpened:
    """Internal: the WebSocket upgrade of ``generation`` succeeded."""

    generation: int
    admitted_at: float
    opened_at: float


@dataclass(frozen=True, slots=True)
class ConnFailed:
    """Internal: the handshake of ``generation`` failed with ``error``."""

    generation: int
    error: Exception


@dataclass(frozen=True, slots=True)
class FrameIn:
    """Internal: one frame read on ``generation``."""

    generation: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class ConnEnded:
    """Internal: the connection of ``generation`` ended (``clean``: closed normally by the peer)."""

    generation: int
    error: Exception | None
    clean: bool


@dataclass(frozen=True, slots=True)
class FrameWritten:
    """Internal: the frame written with ``token`` on ``generation`` is fully on the socket."""

    generation: int
    token: int


@dataclass(frozen=True, slots=True)
class HandshakeDeadline:
    """Internal (timer): the connect timeout of ``generation`` is over."""

    generation: int


@dataclass(frozen=True, slots=True)
class DeadlineCheck:
    """Internal (timer): the earliest command deadline, armed for ``at``, is due."""

    at: float


@dataclass(frozen=True, slots=True)
class Answer:
    """Internal: the user's ``on_ask`` answer to the server's event ``ack_id`` on ``generation``."""

    generation: int
    ack_id: int
    data: Any


@dataclass(frozen=True, slots=True)
class Crashed:
    """Internal: the driver raised; hand every held command over to a successor."""

    error: BaseException


Input = (Start | Resume | Send | Chat | Close | ConnAdmitted | ConnOpened | ConnFailed | FrameIn
         | ConnEnded | FrameWritten | HandshakeDeadline | DeadlineCheck | Answer | Crashed
         | sup.RestartIn | sup.GiveUp | sup.Reconnect)

# --- effects -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenConnection:
    """Start connecting ``codec``'s handshake as connection ``generation``."""

    generation: int
    codec: Codec
    first: bool = False
    """The session has never been connected: admission serves such handshakes apart
    from resumes and reconnects, so neither kind starves the other."""


@dataclass(frozen=True, slots=True)
class Write:
    """Queue ``frame`` on connection ``generation``; report ``FrameWritten`` for ``token``."""

    generation: int
    frame: str | bytes
    token: int | None = None


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Write ``last_frames`` and a close frame on ``generation``, then let it go."""

    generation: int
    last_frames: Sequence[str | bytes] = ()


@dataclass(frozen=True, slots=True)
class AbortConnection:
    """Stop connection ``generation`` at once (mid-handshake included); it still reports."""

    generation: int


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Feed ``fire`` back after ``delay`` seconds (stale expiries are ignored: the actor
    cancels a handshake deadline whose handshake is over for memory only)."""

    delay: float
    fire: HandshakeDeadline | DeadlineCheck | sup.Reconnect


@dataclass(frozen=True, slots=True)
class Resolve:
    """Settle ``future`` with ``value``."""

    future: Any
    value: Any


@dataclass(frozen=True, slots=True)
class Reject:
    """Fail ``future`` with ``error``."""

    future: Any
    error: Exception


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``event`` to ``on_event``; if ``ack_id`` is set, feed back ``on_ask``'s ``Answer``."""

    event: Event
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """Hand ``lifecycle`` to ``on_lifecycle``."""

    lifecycle: Lifecycle


@dataclass(frozen=True, slots=True)
class Report:
    """Tell the supervisor ``message``."""

    message: sup.ConnectionDown | sup.RestartPreempted | sup.ActorCrashed


@dataclass(frozen=True, slots=True)
class Publish:
    """Make ``state`` the snapshot ``Session.state()`` returns."""

    state: SessionState


@dataclass(frozen=True, slots=True)
class Log:
    """Log ``event`` with ``fields`` at ``level`` (the machine itself never logs)."""

    level: str
    event: str
    fields: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Retired:
    """The session ended for good with ``error``: end the record, release it, stop."""

    error: SupervisorError
    reason: str | None
    """None for a close by us; why, for a failure."""


@dataclass(frozen=True, slots=True)
class Forget:
    """A failed session was closed: the supervisor may forget it now."""


@dataclass(frozen=True, slots=True)
class HandOver:
    """The machine crashed: park ``commands`` (unanswered, in order) for its successor."""

    commands: tuple[Command, ...]


Effect = (OpenConnection | Write | CloseConnection | AbortConnection | StartTimer | Resolve
          | Reject | Deliver | Notify | Report | Publish | Log | Retired | Forget | HandOver)
