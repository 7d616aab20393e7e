"""The session actor: a thin driver around the session machine (internal).

It feeds ``SessionMachine`` one mailbox message at a time, with the time, and
carries out the effects it returns: connections, timers, futures, user
callbacks, reports to the supervisor. Every decision is the machine's; this
module owns only the I/O handles (the connections by generation) and the
crash hand-over, which must drain the mailbox under the record's lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any

import pykka

from supervisor import _machine_io as io
from supervisor import _supervision as sup
from supervisor._actor_pool import PooledActor
from supervisor._admission import Admission
from supervisor._callbacks import UserCallbacks
from supervisor._futures import is_settled, reject, resolve
from supervisor._logging import enabled, get_logger
from supervisor._machine import SessionMachine
from supervisor._record import SessionRecord, fail_command
from supervisor._timer import Scheduler, Timer
from supervisor._transport import (
    Admitted,
    Connection,
    Ended,
    Opened,
    OpenFailed,
    Received,
    Report,
    TransportOptions,
    Written,
)
from supervisor.errors import MessageTooBig, SupervisorStopped
from supervisor.messages import Chat, Close, LifecycleKind, Resume, Send, SessionStatus
from supervisor.protocols import Codec, Identity, make_codec

_log = get_logger("supervisor.session")


def _new_id() -> str:
    """Fresh UUID v4 strings: server-side session ids, Chainlit message ids."""
    return str(uuid.uuid4())


class SessionActor(PooledActor):
    """Internal: owns one session's connections; its machine owns the state."""

    def __init__(self, record: SessionRecord, supervisor: pykka.ActorRef[Any],
                 admission: Admission, scheduler: Scheduler, cause: str = "open") -> None:
        super().__init__()
        self._record = record
        self._supervisor = supervisor
        self._admission = admission
        self._scheduler = scheduler
        self._cause = cause
        spec = record.spec
        self._options = TransportOptions.from_spec(spec)
        self._log = _log.bind(session_id=spec.session_id)
        self._callbacks = UserCallbacks(spec)
        self._machine = SessionMachine(spec, self._new_codec, _new_id, record.snapshot)
        self._connections: dict[int, Connection] = {}
        """Every connection not yet reported ended, by generation: the current one, and
        any still closing (each close is bounded by ``write_timeout``)."""
        # Lists, not deques: both are empty between messages, and an empty deque holds
        # a 64-slot block (760 bytes per session each; its clear() allocates a new one).
        self._written_now: list[Written] = []
        """``Written`` reports made inside our own ``conn.send()``, settled after the feed."""
        self._unhandled: list[io.Command] = []
        """Commands taken but not handled yet; the first is the one being handled."""
        self._handshake_deadline: tuple[int, Timer] | None = None
        """The generation whose handshake deadline is pending, and its timer."""

    def _new_codec(self, identity: Identity, confirm_resume: bool) -> Codec:
        return make_codec(self._record.spec.protocol_config, identity,
                          confirm_resume=confirm_resume)

    # --- pykka hooks --------------------------------------------------------------

    def on_start(self) -> None:
        # pykka does not call on_failure when on_start raises: do it here.
        try:
            self._unhandled.extend(self._record.take_parked(self.actor_ref))
            terminal = self._record.terminal
            if terminal is not None:  # ended (Supervisor.stop) before this actor ran
                while self._unhandled:
                    fail_command(self._unhandled.pop(0), terminal)
                self.stop()
                return
            self._feed(io.Start(self._cause))
            while self._unhandled:
                self._feed(self._unhandled[0])
                del self._unhandled[0]
        except Exception as exc:
            self._crashed(exc)
            raise

    def on_receive(self, message: Any) -> None:
        match message:
            case Received(generation, data):
                self._feed(io.FrameIn(generation, data))
                if (conn := self._connections.get(generation)) is not None:
                    conn.consumed(len(data))  # the reader's measure: characters or bytes
            case Written(generation, token):
                self._feed(io.FrameWritten(generation, token))  # type: ignore[arg-type]
            case Resume() | Send() | Chat() | Close():
                self._unhandled.append(message)
                self._feed(message)
                self._unhandled.clear()
            case Admitted(generation):
                self._feed(io.ConnAdmitted(generation))
            case Opened(generation, connection, admitted_at, opened_at):
                if self._connections.get(generation) is not connection:
                    connection.abort()  # not ours (any more)
                    return
                self._feed(io.ConnOpened(generation, admitted_at, opened_at))
            case OpenFailed(generation, error):
                self._end_handshake_deadline(generation)
                self._forget(generation)
                self._feed(io.ConnFailed(generation, error))
            case Ended(generation, error, clean):
                self._forget(generation)
                if isinstance(error, MessageTooBig):
                    self._record.oversized_messages += 1
                self._feed(io.ConnEnded(generation, error, clean))
            case (io.HandshakeDeadline() | io.DeadlineCheck() | sup.Reconnect() | sup.RestartIn()
                  | sup.GiveUp()):
                self._feed(message)
            case _:
                self._log.warning("unknown_message", message_type=type(message).__name__)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._crashed(exception_value)

    def on_stop(self) -> None:
        """Stopped from outside (``Supervisor.stop`` past its deadline, ``stop_all``): end
        the session first, then answer what is still in the mailbox (pykka drops tells)."""
        if self._record.terminal is None:
            with contextlib.suppress(Exception):
                self._feed(Close(pykka.ThreadingFuture(), stopping=True))
        for message in self._drain_mailbox():
            if isinstance(message, Resume | Send | Chat | Close):
                self._record.deliver(message)  # ended: answers it (a Close releases)

    # --- feeding the machine --------------------------------------------------------

    def _feed(self, event: io.Input) -> None:
        effects = self._machine.handle(event, time.monotonic())
        for index, effect in enumerate(effects):
            try:
                self._carry_out(effect)
            except Exception:
                # The machine already moved on: the futures this batch settles and the
                # state it publishes must not be lost with the crash that follows.
                for rest in effects[index + 1:]:
                    if isinstance(rest, io.Resolve | io.Reject | io.Publish):
                        with contextlib.suppress(Exception):
                            self._carry_out(rest)
                raise
        while self._written_now:  # written at once inside our own conn.send()
            # Taken off before its feed, which may feed the next ones itself. (A list's
            # pop(0) moves the rest: one send per entry, a few in a feed as a rule.)
            written = self._written_now.pop(0)
            self._feed(io.FrameWritten(written.generation, written.token))  # type: ignore[arg-type]

    def _carry_out(self, effect: io.Effect) -> None:  # noqa: PLR0912 - one flat dispatch
        match effect:
            case io.Write(generation, frame, token):
                if (conn := self._connections.get(generation)) is not None:
                    conn.send(frame, token)
            case io.Resolve(future, value):
                resolve(future, value)
            case io.Reject(future, error):
                reject(future, error)
            case io.Deliver(event, ack_id):
                self._callbacks.event(self._log, event)
                if ack_id is not None:
                    answer = self._callbacks.answer(self._log, event)
                    self._feed(io.Answer(event.generation, ack_id, answer))
            case io.Publish(state):
                self._record.snapshot = state
            case io.OpenConnection(generation, codec, first):
                conn = Connection(codec, generation, self._report, self._admission,
                                  self._options, first=first)
                self._connections[generation] = conn
                self._record.connection = conn  # Session.state() reads its inbound backlog
                if enabled(self._log, "debug"):  # a dropped call still builds its event
                    spec = self._record.spec
                    self._log.debug("connect", generation=generation, url=spec.url,
                                    headers=spec.headers, cookies=spec.cookies)
                conn.start()
            case io.CloseConnection(generation, last_frames):
                if (conn := self._connections.get(generation)) is not None:
                    conn.close(last_frames)
            case io.AbortConnection(generation):
                if (conn := self._connections.get(generation)) is not None:
                    conn.abort()
            case io.StartTimer():
                self._start_timer(effect)
            case io.Notify(lifecycle):
                if lifecycle.kind is LifecycleKind.CONNECTED:  # its handshake is over
                    self._end_handshake_deadline(lifecycle.generation)
                self._callbacks.lifecycle(self._log, lifecycle)
            case io.Report(message):
                _tell_if_alive(self._supervisor, message)
            case io.Log(level, event, fields):
                if enabled(self._log, level):  # the machine logs each connect and resume
                    getattr(self._log, level)(event, **dict(fields))
            case io.Retired(error, reason):
                self._record.retire(error, reason)
                # Inside on_stop pykka is stopping the actor already: the effects after
                # this one (the Close's answer, the CLOSED state) must still run.
                with contextlib.suppress(pykka.ActorDeadError):
                    self.stop()
            case io.Forget():
                self._record.release(None)
            case io.HandOver():
                pass  # only produced by Crashed, handled in _crashed

    def _start_timer(self, start: io.StartTimer) -> None:
        fire = start.fire
        timer = self._scheduler.call_later(start.delay, _tell_if_alive, self.actor_ref, fire)
        if isinstance(fire, io.HandshakeDeadline):
            # One handshake at a time, so one deadline that matters: the previous
            # one, stale once a new handshake began, leaves the heap.
            self._end_handshake_deadline()
            self._handshake_deadline = (fire.generation, timer)

    def _end_handshake_deadline(self, generation: int | None = None) -> None:
        """Cancel the pending handshake deadline (only if it is ``generation``'s, if given):
        its handshake failed, or the session connected (ready: the protocol's own
        handshake done, not only the upgrade).

        For memory only: the machine ignores a deadline whose handshake is over,
        but the timer would wait out ``connect_timeout`` in the heap after every
        handshake, holding its message.
        """
        pending = self._handshake_deadline
        if pending is not None and generation in (None, pending[0]):
            self._handshake_deadline = None
            self._scheduler.cancel(pending[1])

    def _forget(self, generation: int) -> None:
        if self._record.connection is self._connections.pop(generation, None):
            self._record.connection = None

    def _report(self, report: Report) -> None:
        """Transport callback (its threads): hand the report to the mailbox."""
        # A Written reported from the worker running this actor now was made inside our
        # own conn.send(): settled at the end of the current feed, not via the mailbox.
        if isinstance(report, Written) and threading.get_ident() == self.running_in:
            self._written_now.append(report)
            return
        try:
            self.actor_ref.tell(report)
        except pykka.ActorDeadError:
            if isinstance(report, Opened):
                report.connection.abort()  # nobody will ever close it

    # --- crash hand-over --------------------------------------------------------------

    def _crashed(self, error: BaseException) -> None:
        """A handler raised: answer what can be, hand every other command to a successor."""
        self._log.error("actor_crashed", error=repr(error))
        record = self._record
        with record.lock:
            # From here on handles park their commands in the record; what the
            # mailbox holds is taken now, so nothing is left behind in it.
            record.ref = None
            mailbox = self._drain_mailbox()
        for message in [*self._written_now, *mailbox]:
            if isinstance(message, Written):
                # Written before the crash: settle it, or the successor sends it twice.
                self._settle_only(io.FrameWritten(message.generation, message.token))  # type: ignore[arg-type]
        held: list[io.Command] = []
        crash_report: io.Effect | None = None
        for effect in self._settle_only(io.Crashed(error)):
            if isinstance(effect, io.HandOver):
                held.extend(effect.commands)
            elif isinstance(effect, io.Report):
                crash_report = effect
        for conn in self._connections.values():
            conn.abort()
        seen = {id(command) for command in held}
        held.extend(command for command in self._unhandled
                    if id(command) not in seen and not is_settled(command.reply))
        self._unhandled.clear()
        held.extend(message for message in mailbox if isinstance(message, Resume | Send | Chat
                                                                  | Close))
        with record.lock:
            terminal = record.terminal
            if terminal is None:  # ahead of anything parked since: they are older
                record.parked[:0] = held
        if terminal is not None:  # it had ended already: no successor will take them
            for command in held:
                fail_command(command, terminal)
            return
        report = crash_report.message if isinstance(crash_report, io.Report) else \
            sup.ActorCrashed(record.spec.session_id, error)
        try:
            self._supervisor.tell(report)
        except pykka.ActorDeadError:
            # No supervisor will start a successor: end the session here, or what is
            # parked (and every later command) would wait for an actor that never comes.
            record.retire(SupervisorStopped("the supervisor stopped"), "supervisor stopped",
                          SessionStatus.CLOSED)

    def _settle_only(self, event: io.Input) -> list[io.Effect]:
        """Feed a machine that crashed: carry out only what settles futures or publishes."""
        try:
            effects = self._machine.handle(event, time.monotonic())
        except Exception:  # noqa: BLE001 - a machine too broken even for this
            self._log.exception("hand_over_failed")
            return []
        for effect in effects:
            if isinstance(effect, io.Resolve | io.Reject | io.Publish):
                self._carry_out(effect)
        return effects

    def _drain_mailbox(self) -> list[Any]:
        """Take every message left in the mailbox; aborts connections nobody will own."""
        messages: list[Any] = []
        while not self.actor_inbox.empty():
            envelope = self.actor_inbox.get()
            if envelope.reply_to is not None:  # an ask (a stop): as pykka's own teardown does
                envelope.reply_to.set(None)
                continue
            if isinstance(envelope.message, Opened):
                envelope.message.connection.abort()
            messages.append(envelope.message)
        return messages


def _tell_if_alive(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):  # the receiver ended meanwhile
        ref.tell(message)
