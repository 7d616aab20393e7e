"""The session machine: every decision about one session, as a pure state machine (internal).

In the manner of h11 and wsproto: ``handle(input, now)`` takes one input (a
user command, a transport report, a timer expiry, a supervisor answer) and
returns the effects the driver must carry out, in order. No threads, sockets,
clock reads or logging here; the time comes in with each input, ids come from
an injected source. The transition table is in ``docs/supervision.md``.

State is one tagged value (``Connecting``, ``Connected``, ``Backoff``,
``Ended``); everything that belongs to one handshake lives in its ``Attempt``,
so it cannot go half-stale. Reports and timer expiries name the generation
(or loss, or deadline) they belong to; stale ones are ignored, so timers are
never cancelled. Whatever ends a session goes through ``_retire``.
"""

from __future__ import annotations

from typing import Any

from supervisor import _machine_io as io
from supervisor import _supervision as sup
from supervisor._machine_base import NO_INPUT, CodecFactory, MachineBase
from supervisor._machine_state import (
    Attempt,
    Backoff,
    Connected,
    Connecting,
    Ended,
    PendingResume,
)
from supervisor.errors import (
    ConnectionLost,
    HandshakeError,
    MalformedAck,
    ProtocolRefused,
    SessionClosed,
    SessionFailed,
    SupervisorError,
    SupervisorStopped,
)
from supervisor.messages import (
    Chat,
    Close,
    Event,
    LifecycleKind,
    Resume,
    ResumeResult,
    Send,
    SessionStatus,
)
from supervisor.protocols import Identity
from supervisor.protocols.base import (
    Acked,
    Action,
    Disconnected,
    Frames,
    Inbound,
    Malformed,
    Outbound,
    Phase,
    Ready,
    Refused,
)

__all__ = ["CodecFactory", "SessionMachine"]


class SessionMachine(MachineBase):
    """Internal: one session's state; feed it inputs, carry out the effects it returns."""

    # --- the one entry point -----------------------------------------------------------

    def handle(self, event: io.Input, now: float) -> list[io.Effect]:
        """Apply one input at time ``now``; return the effects, in the order to carry out."""
        self._now = now
        assert not NO_INPUT, "an effect was emitted outside handle()"
        effects: list[io.Effect] = []
        self._effects = effects
        try:
            self._dispatch(event)
        except BaseException:
            # A bug below (a codec raising on a weird frame): keep what was
            # settled so far; the crash hand-over answers it.
            self._interrupted = effects
            raise
        finally:
            # Not kept between inputs: the last effects (an event, its payload) would
            # stay alive in every idle session, for the cycle collector to walk.
            self._effects = NO_INPUT
        if self._dirty:
            self._dirty = False
            effects.append(io.Publish(self.snapshot()))
        return effects

    def _dispatch(self, event: io.Input) -> None:  # noqa: PLR0912 - one flat dispatch reads best
        if isinstance(self._state, Ended) and isinstance(event, Resume | Send | Chat | Close):
            self._answer_ended(event, self._state.error)
            return
        match event:
            case io.FrameIn(generation, data):
                self._on_frame(generation, data)
            case io.FrameWritten(generation, token):
                backlog = self._outbox.unwritten()
                if (pending := self._outbox.written(token, generation)) is not None:
                    self._settle_written(pending)
                if backlog > 1:  # a slow peer's writes drain: show it (hostile)
                    self._dirty = True
            case Send() | Chat():
                self._on_send(event)
            case Resume():
                self._on_resume(event)
            case io.Start(cause):
                if cause == "restart":  # a successor after a crash
                    self._tally.restarts += 1
                self._connect(cause)
            case io.ConnAdmitted(generation):
                self._on_admitted(generation)
            case io.ConnOpened():
                self._on_opened(event)
            case io.ConnFailed(generation, error):
                self._on_ended(generation, error, clean=False)
            case io.ConnEnded(generation, error, clean):
                self._on_ended(generation, error, clean=clean)
            case io.HandshakeDeadline(generation):
                self._on_handshake_deadline(generation)
            case io.DeadlineCheck(at):
                if at == self._armed:
                    self._armed = None
                    self._expire_due()
            case io.Answer(generation, ack_id, data):
                attempt = self._attempt_of(generation)
                if attempt is not None:
                    for frame in self._encode_answer(attempt, ack_id, data):
                        self._write(attempt, frame)
            case Close(_, stopping):
                error = (SupervisorStopped("the supervisor stopped") if stopping
                         else SessionClosed("session closed"))
                self._retire(error, SessionStatus.CLOSED, None)
                self._emit(io.Resolve(event.reply, None))
            case sup.RestartIn() | sup.Reconnect() | sup.GiveUp():
                self._on_supervisor(event)
            case io.Crashed(error):
                self._hand_over(error)

    def _encode_answer(self, attempt: Attempt, ack_id: int, data: Any) -> Frames:
        """The ack frames for ``on_ask``'s answer; None instead of one that cannot be encoded.

        The answer comes from user code: a set or a NaN must cost a warning, not the actor.
        """
        try:
            return attempt.codec.encode_ack(ack_id, data)
        except (TypeError, ValueError) as exc:
            self._log("warning", "ask_answer_unencodable", ack_id=ack_id, error=repr(exc))
        try:
            return attempt.codec.encode_ack(ack_id, None)
        except (TypeError, ValueError):
            return []  # a codec without acknowledgements: nothing to answer with

    def _on_supervisor(self, answer: sup.RestartIn | sup.Reconnect | sup.GiveUp) -> None:
        """The supervisor's answer to a loss (or the backoff timer it asked for)."""
        if not self._backing_off(answer.loss):
            return  # about an older loss: a Resume reconnected since
        match answer:
            case sup.RestartIn(loss, delay):
                self._last_backoff = delay
                self._dirty = True
                self._emit(io.StartTimer(delay, sup.Reconnect(loss)))
            case sup.Reconnect():
                self._tally.restarts += 1
                self._notify(LifecycleKind.RESTART)
                self._connect("restart")
            case sup.GiveUp(_, reason):
                self._retire(SessionFailed(reason), SessionStatus.FAILED, reason)

    # --- commands --------------------------------------------------------------------

    def _on_resume(self, command: Resume) -> None:
        pending = PendingResume(command, self._deadline(command, self._spec.resume_timeout))
        if command.thread_id == self._thread_id:
            state = self._state
            if isinstance(state, Connected):
                self._emit(io.Resolve(command.reply,
                                      ResumeResult(command.thread_id, state.attempt.generation)))
                return
            self._resumes.append(pending)
            self._arm(pending.deadline)
            if isinstance(state, Backoff):
                self._preempt_backoff()
            return
        for older in self._resumes:
            self._emit(io.Resolve(older.command.reply,
                                  ResumeResult(older.command.thread_id, -1, superseded=True)))
        self._resumes = [pending]
        self._arm(pending.deadline)
        self._thread_id = command.thread_id
        # Chainlit restores a known server session and ignores a new thread id:
        # a thread switch needs a fresh server-side session id.
        self._fresh_session_id = self._new_id()
        self._dirty = True
        self._log("info", "resume")
        if isinstance(self._state, Backoff):
            self._preempt_backoff()
        else:
            self._connect("resume")

    def _preempt_backoff(self) -> None:
        """A Resume during backoff connects at once; it is the user's intent, not a restart."""
        self._emit(io.Report(sup.RestartPreempted(self._spec.session_id, self._losses)))
        self._losses += 1  # the scheduled Reconnect now carries a stale loss number
        self._connect("resume")

    # --- connections -----------------------------------------------------------------

    def _connect(self, cause: str) -> None:
        """Start a handshake for the latest accepted identity, or queue it behind one."""
        state = self._state
        if isinstance(state, Connecting):
            # Never two handshakes in flight: abort this one, start after its report.
            if state.next_cause is None and state.expired is None:
                self._emit(io.AbortConnection(state.attempt.generation))
            if state.next_cause != "resume":
                state.next_cause = cause
            return
        if isinstance(state, Connected):
            self._let_go(state.attempt, graceful=True)
        self._begin(cause)

    def _begin(self, cause: str) -> None:
        tally = self._tally
        tally.generation += 1
        tally.handshakes += 1
        # A server that still holds this session id restores it and confirms no
        # thread (Chainlit): only the first handshake with an id waits for one.
        confirm = self._fresh_session_id is not None and self._spec.confirm_resume
        if self._fresh_session_id is not None:
            self._session_id, self._fresh_session_id = self._fresh_session_id, None
        identity = Identity(self._thread_id, self._session_id)
        codec = self._make_codec(identity, confirm)
        attempt = Attempt(tally.generation, identity, codec, self._now)
        self._state = Connecting(attempt)
        self._dirty = True
        self._notify(LifecycleKind.CONNECTING, cause=cause)
        self._emit(io.OpenConnection(tally.generation, codec, not self._connected_once))

    def _on_admitted(self, generation: int) -> None:
        """From admission on, the whole handshake has ``connect_timeout``.

        The upgrade has websocket-client's own timeout; this one also covers
        Engine.IO open, namespace connect and thread confirmation, since a
        server that dislikes the identity style may never answer. Time spent
        queued for admission does not count: a big start is not a failure.
        """
        if self._connecting(generation) is not None:
            self._emit(io.StartTimer(self._spec.connect_timeout, io.HandshakeDeadline(generation)))

    def _on_opened(self, opened: io.ConnOpened) -> None:
        state = self._connecting(opened.generation)
        if state is None:
            self._emit(io.AbortConnection(opened.generation))
            return
        if state.expired is not None:  # opened after its deadline: too late
            self._handshake_over(state, None, clean=False, ended=False)
            return
        attempt = state.attempt
        attempt.phases = {"admission": opened.admitted_at - attempt.started_at,
                          "upgrade": opened.opened_at - opened.admitted_at}
        attempt.phase_mark = opened.opened_at
        self._apply(attempt, attempt.codec.opened())

    def _on_handshake_deadline(self, generation: int) -> None:
        state = self._connecting(generation)
        if state is None or state.expired is not None:
            return  # that handshake finished in time
        state.expired = HandshakeError(handshake_overdue(
            self._spec.connect_timeout, state.attempt.phases, self._spec.protocol))
        # Wait for the connection's own report before the next handshake, so
        # the server never sees two of this session's handshakes at once.
        if state.next_cause is None:
            self._emit(io.AbortConnection(generation))

    def _on_ended(self, generation: int, error: Exception | None, *, clean: bool) -> None:
        state = self._state
        if (connecting := self._connecting(generation)) is not None:
            self._handshake_over(connecting, error, clean=clean, ended=True)
        elif isinstance(state, Connected) and state.attempt.generation == generation:
            self._lose(state.attempt, error, clean=clean, ended=True)
        # else: a connection we already let go of

    def _on_ready(self, state: Connecting, ready: Ready) -> None:
        if state.expired is not None:
            return  # too late: the aborted connection's report finishes it
        attempt = state.attempt
        if state.next_cause is not None:
            self._let_go(attempt, graceful=True)
            self._begin(state.next_cause)
            return
        now = self._now
        self._state = Connected(attempt, now)
        self._connected_once = True
        self._reason = None
        self._dirty = True
        if ready.thread_found is not None:
            attempt.phases["thread"] = now - attempt.phase_mark
        attempt.phases["total"] = now - attempt.started_at
        self._notify(LifecycleKind.CONNECTED, timings=attempt.phases)
        self._log("info", "connected", generation=attempt.generation)
        result = ResumeResult(attempt.identity.thread_id, attempt.generation,
                              found=ready.thread_found, thread=ready.thread_data)
        for pending in self._resumes:
            self._emit(io.Resolve(pending.command.reply, result))
        self._resumes = []
        queued = self._outbox.queued
        while queued:
            self._send(attempt, queued.popleft())

    def _handshake_over(self, state: Connecting, error: Exception | None, *, clean: bool,
                        ended: bool) -> None:
        """The in-flight handshake ended or failed: go on to a newer identity, or lose it."""
        if state.expired is not None:
            error, clean = state.expired, False
        if state.next_cause is not None:
            if not ended:
                self._let_go(state.attempt, graceful=True)
            self._begin(state.next_cause)
            return
        self._lose(state.attempt, error, clean=clean, ended=ended)

    def _lose(self, attempt: Attempt, error: Exception | None, *, clean: bool,
              ended: bool) -> None:
        """The connection is gone: ask the supervisor whether and when to restart."""
        state = self._state
        uptime = self._now - state.since if isinstance(state, Connected) else None
        if ended:
            self._release_sends()
        else:
            self._let_go(attempt, graceful=False)
        self._losses += 1
        self._state = Backoff(self._losses)
        self._reason = "closed normally by the server" if error is None else str(error)
        self._dirty = True
        self._log("info", "connection_lost", reason=self._reason, uptime=uptime)
        self._notify(LifecycleKind.LOST, reason=self._reason,
                     error=None if error is None else type(error).__name__)
        self._emit(io.Report(sup.ConnectionDown(self._spec.session_id, self._losses, error,
                                                clean, uptime)))

    def _let_go(self, attempt: Attempt, *, graceful: bool) -> None:
        """Stop using ``attempt``'s connection (closing it, or aborting a handshake)."""
        if graceful:
            self._emit(io.CloseConnection(attempt.generation, attempt.codec.closing()))
        else:
            self._emit(io.AbortConnection(attempt.generation))
        self._release_sends()

    def _connecting(self, generation: int) -> Connecting | None:
        """The current state if it is the handshake of ``generation``."""
        state = self._state
        if isinstance(state, Connecting) and state.attempt.generation == generation:
            return state
        return None

    def _attempt_of(self, generation: int) -> Attempt | None:
        """The attempt of ``generation`` if it is the current one."""
        state = self._state
        if isinstance(state, Connecting | Connected) and state.attempt.generation == generation:
            return state.attempt
        return None

    def _backing_off(self, loss: int) -> bool:
        return isinstance(self._state, Backoff) and loss == self._losses

    # --- inbound ---------------------------------------------------------------------

    def _on_frame(self, generation: int, data: str | bytes) -> None:
        attempt = self._attempt_of(generation)
        if attempt is None:
            self._tally.stale_frames_dropped += 1
            self._dirty = True  # rare: only around a Resume or a reconnect
            return
        self._apply(attempt, attempt.codec.received(data))

    def _on_acked(self, ack_id: int, data: object, error: str | None) -> None:
        if (pending := self._outbox.acked(ack_id)) is None:
            return
        if error is not None:  # a broken binary ack: the call fails, it never waits
            self._emit(io.Reject(pending.command.reply, MalformedAck(error)))
        else:
            self._emit(io.Resolve(pending.command.reply, data))

    def _apply(self, attempt: Attempt, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Inbound(name, data, ack_id):
                    # Nobody to hand it to and no answer asked for: no Event (a load
                    # test's Chainlit sessions read their turns from _observe_turns).
                    if self._spec.on_event is not None or ack_id is not None:
                        # Labelled with the attempt that read it, never the latest Resume (I4).
                        event = Event(self._spec.session_id, attempt.identity.thread_id,
                                      attempt.generation, name, data, self._now)
                        self._emit(io.Deliver(event, ack_id))
                    self._observe_turns(name, data)
                case Acked(ack_id, data, ack_error):
                    self._on_acked(ack_id, data, ack_error)
                case Outbound(frame):
                    self._write(attempt, frame)
                case Ready():
                    state = self._state
                    if isinstance(state, Connecting) and state.attempt is attempt:
                        self._on_ready(state, action)
                case Refused(message):
                    self._on_refused(attempt, ProtocolRefused(message))
                    return
                case Disconnected(reason):
                    error = ConnectionLost(f"server disconnected: {reason}")
                    self._connection_over(attempt, error, clean=True)
                    return
                case Phase(name):
                    attempt.phases[name] = self._now - attempt.phase_mark
                    attempt.phase_mark = self._now
                case Malformed(reason):
                    self._tally.malformed_frames += 1
                    self._dirty = True
                    self._log("warning", "malformed_frame", reason=reason)

    def _on_refused(self, attempt: Attempt, refusal: ProtocolRefused) -> None:
        state = self._state
        if isinstance(state, Connecting) and state.next_cause is None:
            # This identity itself was refused: the Resumes waiting for it fail.
            for pending in self._resumes:
                self._emit(io.Reject(pending.command.reply, refusal))
            self._resumes = []
        self._connection_over(attempt, refusal, clean=False)

    def _connection_over(self, attempt: Attempt, error: Exception, *, clean: bool) -> None:
        state = self._state
        if isinstance(state, Connecting):
            self._handshake_over(state, error, clean=clean, ended=False)
        elif isinstance(state, Connected):
            self._lose(attempt, error, clean=clean, ended=False)

    # --- endings ---------------------------------------------------------------------

    def _retire(self, error: SupervisorError, status: SessionStatus, reason: str | None) -> None:
        """The one exit: settle everything owed with ``error``, release the session, stop."""
        state = self._state
        if isinstance(state, Connected | Connecting):
            self._let_go(state.attempt, graceful=isinstance(state, Connected))
        for pending in self._resumes:
            self._emit(io.Reject(pending.command.reply, error))
        self._resumes = []
        for item in self._outbox.take_all():
            self._emit(io.Reject(item.command.reply, error))
        self._state = Ended(status, error)
        self._reason = reason
        self._dirty = True
        kind = LifecycleKind.CLOSED if status is SessionStatus.CLOSED else LifecycleKind.FAILED
        self._log("info" if reason is None else "warning", kind.value, reason=reason)
        self._notify(kind, reason=reason, error=None if reason is None else type(error).__name__)
        self._emit(io.Retired(error, reason))

    def _answer_ended(self, command: io.Command, error: SupervisorError) -> None:
        """Delivered before the session ended, handled after: answer, do not act."""
        if isinstance(command, Close):
            if not isinstance(error, SessionClosed):
                self._emit(io.Forget())  # closing a failed session releases it
            self._emit(io.Resolve(command.reply, None))
        else:
            self._emit(io.Reject(command.reply, error))

    def _hand_over(self, error: BaseException) -> None:
        """The driver crashed: give back every unanswered command, abort the connection."""
        self._effects.extend(effect for effect in self._interrupted
                             if isinstance(effect, io.Resolve | io.Reject))
        self._interrupted = ()
        state = self._state
        if isinstance(state, Connected | Connecting):
            self._emit(io.AbortConnection(state.attempt.generation))
        lost = ConnectionLost("session actor crashed before the server answered")
        held: list[io.Command] = [pending.command for pending in self._resumes]
        for item in self._outbox.take_all():
            if item.written:
                self._emit(io.Reject(item.command.reply, lost))
            else:
                held.append(item.command)
        self._resumes = []
        self._state = Backoff(-1)
        self._reason = f"actor crashed: {error!r}"
        self._dirty = False
        self._emit(io.Publish(self.snapshot()))
        self._emit(io.HandOver(tuple(held)))
        self._emit(io.Report(sup.ActorCrashed(self._spec.session_id, error)))


def handshake_overdue(timeout: float, phases: dict[str, float], protocol: str) -> str:
    """Why a handshake ran past ``connect_timeout``, from the phases it completed.

    Only an upgraded WebSocket on which no Engine.IO open packet came points to a
    wrong protocol; a handshake stuck before the upgrade, or after Engine.IO open
    (Socket.IO connect, thread confirmation), met a slow server.
    """
    within = f"within {timeout:g}s (connect_timeout)"
    if "upgrade" not in phases:
        return f"handshake timeout: no WebSocket upgrade {within}: the server is slow"
    if protocol != "websocket" and "open" not in phases:
        return (f"no Engine.IO open packet in {timeout:g}s after the WebSocket opened: is the "
                "protocol right for this server?")
    return (f"handshake timeout: the server answered the upgrade and Engine.IO open but did "
            f"not finish the connect {within}: the server is slow")
