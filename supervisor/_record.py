"""What outlives one session actor (internal).

A session's actor can crash and be replaced; its record cannot. It holds the
spec, the published state snapshot (from which a successor's machine resumes:
the latest accepted thread id, I5, and the counters), and the commands parked
while no actor is there to take them (so a crash loses no command, I6).

Writers: the live actor publishes the snapshot; ``lock`` guards the hand-over
between actors and the ending. ``retire`` is the one way a record ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pykka

from supervisor._callbacks import UserCallbacks
from supervisor._futures import reject, resolve
from supervisor._logging import get_logger
from supervisor._machine_io import Command
from supervisor._runtime import new_lock
from supervisor.messages import Close, Lifecycle, LifecycleKind, SessionState, SessionStatus
from supervisor.spec import SessionSpec

if TYPE_CHECKING:
    from supervisor._transport import Connection
    from supervisor.errors import SupervisorError

_log = get_logger("supervisor.session")


def _release_nobody(reason: str | None) -> None:
    """Until a supervisor adopts the record, nobody holds it."""


def _forget_nothing() -> None:
    """Until a supervisor tracks the record, nobody counts it."""


class SessionRecord:
    """Internal: one supervised session's durable part."""

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.lock = new_lock()
        self.ref: pykka.ActorRef[Any] | None = None
        """The live actor, or None between a crash and its successor's start."""
        self.parked: list[Command] = []  # (a deque holds a 760-byte block even empty)
        self.terminal: SupervisorError | None = None
        """Set once the session is closed or failed: later commands fail with it."""
        self.on_release: Callable[[str | None], None] = _release_nobody
        """The supervisor actor's hook: the session ended (None: closed by us; else why)."""
        self.on_forget: Callable[[], None] = _forget_nothing
        """The metrics tap's hook: the session is gone for good (closed, failed then closed)."""
        self.snapshot = SessionState(
            session_id=spec.session_id, thread_id=spec.thread_id, connected_thread_id=None,
            generation=0, status=SessionStatus.CONNECTING, restarts=0)
        # --- read live by Session.state() (hostile) ---
        self.connection: Connection | None = None
        """The newest connection, for its inbound backlog."""
        self.oversized_messages = 0
        """Connections ended by a message over ``max_message_bytes``."""

    def deliver(self, command: Command) -> None:
        """Hand ``command`` to the live actor, or park it for the next one."""
        with self.lock:
            if self.terminal is None:
                if self.ref is not None:
                    try:
                        self.ref.tell(command)
                    except pykka.ActorDeadError:
                        pass  # crashed just now: its successor takes the parked command
                    else:
                        return
                self.parked.append(command)
                return
            terminal = self.terminal
        if isinstance(command, Close):
            # Closing a session that failed: the supervisor forgets it (no leak).
            self.release(None)
        fail_command(command, terminal)

    def release(self, reason: str | None) -> None:
        """Tell the supervisor the session ended: None, closed by us (then it is
        forgotten, metrics included), else why it failed (it stays counted until closed)."""
        self.on_release(reason)
        if reason is None:
            self.on_forget()

    def adopt(self, ref: pykka.ActorRef[Any]) -> None:
        """``ref`` is this session's actor from now on (unless the session has ended)."""
        with self.lock:
            if self.terminal is None:
                self.ref = ref

    def take_parked(self, ref: pykka.ActorRef[Any]) -> list[Command]:
        """Become the live actor ``ref`` and take the commands parked for it."""
        with self.lock:
            commands = list(self.parked)
            self.parked.clear()
            if self.terminal is None:
                self.ref = ref
            return commands

    def retire(self, error: SupervisorError, reason: str | None,
               status: SessionStatus | None = None) -> bool:
        """End the session: fail what is parked, release it from the supervisor.

        Every ending comes here, once (False if it had ended already). ``status``
        is given when no machine ended the session (no actor): the record then
        publishes the ending and reports it to ``on_lifecycle`` (FAILED or
        CLOSED), as the machine would have, so the metrics tap and
        ``supervisor.aio`` iterators hear of it.
        """
        with self.lock:
            if self.terminal is not None:
                return False
            self.terminal = error
            self.ref = None
            commands = list(self.parked)
            self.parked.clear()
        if status is not None:
            self.snapshot = replace(self.snapshot, status=status, connected_thread_id=None,
                                    reason=reason)
            self._report_ending(status, reason, error)
        for command in commands:
            fail_command(command, error)
        self.release(reason)
        return True


    def _report_ending(self, status: SessionStatus, reason: str | None,
                       error: SupervisorError) -> None:
        kind = LifecycleKind.CLOSED if status is SessionStatus.CLOSED else LifecycleKind.FAILED
        snapshot = self.snapshot
        report = Lifecycle(self.spec.session_id, kind, snapshot.thread_id, snapshot.generation,
                           time.monotonic(), reason,
                           None if reason is None else type(error).__name__)
        UserCallbacks(self.spec).lifecycle(_log.bind(session_id=self.spec.session_id), report)


def fail_command(command: Command, error: SupervisorError) -> None:
    """Answer a command that can no longer run: closes resolve, the rest fail with ``error``."""
    if isinstance(command, Close):
        resolve(command.reply, None)
    else:
        reject(command.reply, error)
