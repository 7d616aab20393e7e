"""The session machine's bookkeeping: sends, deadlines, effects out (internal, pure).

``MachineBase`` holds the session's fields and everything that is not a state
transition: writing sends and settling them, the one deadline timer, building
lifecycle records and snapshots. ``SessionMachine`` (``_machine.py``) adds the
transitions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from supervisor import _machine_io as io
from supervisor._machine_state import (
    Attempt,
    Backoff,
    Connected,
    Connecting,
    Ended,
    PendingResume,
    State,
    Tally,
)
from supervisor._outgoing import CHAT_EVENT, Outbox, Outgoing, Pending
from supervisor.errors import (
    ConnectionLost,
    OutboxFull,
    ReplyTimeout,
    ResumeTimeout,
    SendTimeout,
)
from supervisor.messages import (
    Chat,
    Lifecycle,
    LifecycleKind,
    Resume,
    SessionState,
    SessionStatus,
)
from supervisor.protocols import Codec, Identity
from supervisor.protocols.chat import TurnTracker, user_message
from supervisor.spec import SessionSpec

CodecFactory = Callable[[Identity, bool], Codec]
"""``(identity, confirm_resume) -> codec`` for one connection."""


NO_INPUT: list[io.Effect] = []
"""What ``_effects`` is between inputs: effects are only emitted while one is handled,
so it stays empty (``SessionMachine.handle`` checks)."""


class MachineBase:
    """Internal: a session's fields, its sends and deadlines, and the effects helpers."""

    def __init__(self, spec: SessionSpec, make_codec: CodecFactory, new_id: Callable[[], str],
                 previous: SessionState | None = None) -> None:
        self._spec = spec
        self._make_codec = make_codec
        self._new_id = new_id
        self._thread_id = spec.thread_id if previous is None else previous.thread_id
        self._tally = Tally() if previous is None else Tally(
            previous.generation, previous.handshakes, previous.restarts,
            previous.stale_frames_dropped, previous.malformed_frames)
        self._fresh_session_id: str | None = new_id()
        """The server-side session id the next handshake carries for the first time (or None)."""
        self._session_id = self._fresh_session_id
        self._state: State = Backoff(0)
        self._losses = 0
        self._connected_once = previous is not None and previous.generation > 0
        """A connection of this session has been ready (an actor's successor that had
        begun connecting: assumed). A new record's snapshot is at generation 0."""
        self._reason: str | None = None
        self._last_backoff: float | None = None
        self._resumes: list[PendingResume] = []
        self._outbox = Outbox(spec.outbox_limit)
        self._next_seq = 0
        self._next_ack_id = 0
        self._armed: float | None = None
        """When the deadline timer fires, if one is armed."""
        self._now = 0.0
        self._effects: list[io.Effect] = NO_INPUT
        """The effects of the input being handled (``NO_INPUT`` between inputs)."""
        self._dirty = False
        self._interrupted: Sequence[io.Effect] = ()
        """Effects of an input whose handling raised (settled futures among them)."""

    @property
    def state(self) -> State:
        return self._state

    # --- sends ---------------------------------------------------------------------------

    def _on_send(self, command: Outgoing) -> None:
        is_reply = isinstance(command, Chat) or command.want_ack
        timeout = self._spec.reply_timeout if is_reply else self._spec.send_timeout
        pending = Pending(self._next_seq, command, self._deadline(command, timeout))
        self._next_seq += 1
        state = self._state
        # Behind queued sends a new one waits its turn, so order holds.
        if not self._outbox.has_room():
            self._emit(io.Reject(command.reply, OutboxFull(self._outbox.limit)))
            return
        if isinstance(state, Connected) and not self._outbox.queued:
            self._send(state.attempt, pending)
        else:
            self._outbox.queued.append(pending)
            self._dirty = True
        self._arm(pending.deadline)

    def _send(self, attempt: Attempt, pending: Pending) -> None:
        """Encode and write one send on ``attempt``'s connection (answered when written)."""
        command = pending.command
        try:
            if isinstance(command, Chat):
                message_id = self._new_id()
                message = user_message(command.text, attempt.identity.thread_id, message_id,
                                       command.created_at)
                frames = attempt.codec.encode(CHAT_EVENT, message)
                pending.turn = TurnTracker(self._now, message_id)
            else:
                if command.want_ack:
                    pending.ack_id = self._next_ack_id
                    self._next_ack_id += 1
                frames = attempt.codec.encode(command.event, command.data, pending.ack_id)
        except (TypeError, ValueError) as exc:
            self._emit(io.Reject(command.reply, exc))
            return
        self._outbox.sent(pending, attempt.generation)
        if self._outbox.unwritten() > 1:  # the peer is not keeping up: show it (hostile)
            self._dirty = True
        for frame in frames[:-1]:  # a binary emit is several frames; the last one settles it
            self._emit(io.Write(attempt.generation, frame))
        self._emit(io.Write(attempt.generation, frames[-1], pending.seq))

    def _settle_written(self, pending: Pending) -> None:
        if pending.answered_on_write:
            self._emit(io.Resolve(pending.command.reply, None))
        else:  # written on a connection that is gone: its reply cannot come
            self._emit(io.Reject(pending.command.reply,
                                 ConnectionLost("connection closed before the server answered")))
    def _release_sends(self) -> None:
        # The server may or may not have handled what it did not answer: never re-send.
        for pending in self._outbox.connection_gone():
            self._emit(io.Reject(pending.command.reply,
                                 ConnectionLost("connection closed before the server answered")))
        if self._outbox.queued:
            self._dirty = True

    def _observe_turns(self, name: str, data: Any) -> None:
        """Feed an inbound event to every open chat turn (each keeps only its own steps)."""
        turns = self._outbox.turns()
        if not turns:
            return
        for pending in list(turns):
            assert pending.turn is not None
            if pending.turn.feed(name, data, self._now):
                self._outbox.turn_over(pending)
                self._emit(io.Resolve(pending.command.reply, pending.turn.result()))

    def _write(self, attempt: Attempt, frame: str | bytes) -> None:
        self._emit(io.Write(attempt.generation, frame))

    # --- deadlines -------------------------------------------------------------------

    def _deadline(self, command: Resume | Outgoing, default: float) -> float:
        timeout = _timeout_of(command, default)
        start = self._now if command.issued_at is None else min(command.issued_at, self._now)
        return start + timeout

    def _arm(self, deadline: float) -> None:
        """Keep one timer, for the earliest deadline (stale expiries are ignored)."""
        if self._armed is None or deadline < self._armed:
            self._armed = deadline
            self._emit(io.StartTimer(max(0.0, deadline - self._now), io.DeadlineCheck(deadline)))

    def _expire_due(self) -> None:
        now, spec = self._now, self._spec
        for pending in [p for p in self._resumes if p.deadline <= now]:
            self._resumes.remove(pending)
            command = pending.command
            self._emit(io.Reject(command.reply, ResumeTimeout(
                command.thread_id, _timeout_of(command, spec.resume_timeout))))
        for item in [p for p in self._outbox if p.deadline <= now]:
            self._outbox.remove(item)
            sent = item.command
            error: Exception
            if isinstance(sent, Chat) or sent.want_ack:
                error = ReplyTimeout(_timeout_of(sent, spec.reply_timeout))
            else:
                error = SendTimeout(_timeout_of(sent, spec.send_timeout))
            self._emit(io.Reject(sent.reply, error))
            self._dirty = True
        later = [p.deadline for p in self._resumes] + [p.deadline for p in self._outbox]
        if later:
            self._arm(min(later))

    # --- output helpers --------------------------------------------------------------

    def _emit(self, effect: io.Effect) -> None:
        self._effects.append(effect)

    def _notify(self, kind: LifecycleKind, *, cause: str | None = None,
                reason: str | None = None, error: str | None = None,
                timings: dict[str, float] | None = None) -> None:
        self._emit(io.Notify(Lifecycle(self._spec.session_id, kind, self._thread_id,
                                       self._tally.generation, self._now, reason, error,
                                       dict(timings or {}), cause)))

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self._emit(io.Log(level, event, (("thread_id", self._thread_id), *fields.items())))

    def snapshot(self) -> SessionState:
        state, tally = self._state, self._tally
        match state:
            case Connected(attempt):
                status, connected = SessionStatus.CONNECTED, attempt.identity.thread_id
            case Connecting():
                status, connected = SessionStatus.CONNECTING, None
            case Backoff():
                status, connected = SessionStatus.BACKOFF, None
            case Ended(ended_status):
                status, connected = ended_status, None
        return SessionState(
            session_id=self._spec.session_id, thread_id=self._thread_id,
            connected_thread_id=connected, generation=tally.generation, status=status,
            restarts=tally.restarts, reason=self._reason, outbox=len(self._outbox),
            stale_frames_dropped=tally.stale_frames_dropped,
            malformed_frames=tally.malformed_frames, handshakes=tally.handshakes,
            last_backoff=self._last_backoff)


def _timeout_of(command: Resume | Outgoing, default: float) -> float:
    """The timeout that applied to ``command``: its own, or the spec's default."""
    return default if command.timeout is None else command.timeout
