"""What outlives one session actor (internal).

A session's actor can crash and be replaced; its record cannot. It holds the
spec, the latest accepted thread id (so a restart resumes it, I5), counters,
the published state snapshot, and the commands parked while no actor is there
to take them (so a crash loses no command, I6).

Writers: the live actor writes the identity, counters and snapshot, only from
its message handler; ``lock`` guards the hand-over between actors.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

import pykka

from supervisor._futures import reject, resolve
from supervisor.messages import Chat, Close, Resume, Send, SessionState, SessionStatus
from supervisor.spec import SessionSpec

if TYPE_CHECKING:
    from supervisor._transport import Connection
    from supervisor.errors import SupervisorError

Command = Resume | Send | Chat | Close


class SessionRecord:
    """Internal: one supervised session's durable part."""

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.lock = threading.Lock()
        self.ref: pykka.ActorRef[Any] | None = None
        """The live actor, or None between a crash and its successor's start."""
        self.parked: deque[Command] = deque()
        self.terminal: SupervisorError | None = None
        """Set once the session is closed or failed: later commands fail with it."""
        self.thread_id = spec.thread_id
        self.generation = 0
        self.restarts = 0
        self.handshakes = 0
        self.stale_frames_dropped = 0
        self.malformed_frames = 0
        self.oversized_messages = 0
        self.connection: Connection | None = None
        """The live connection, read by ``Session.state()`` for its inbound backlog."""
        self.snapshot = SessionState(
            session_id=spec.session_id, thread_id=spec.thread_id, connected_thread_id=None,
            generation=0, status=SessionStatus.CONNECTING, restarts=0)

    def deliver(self, command: Command) -> None:
        """Hand ``command`` to the live actor, or park it for the next one."""
        with self.lock:
            if self.terminal is not None:
                fail_command(command, self.terminal)
                return
            if self.ref is not None:
                try:
                    self.ref.tell(command)
                except pykka.ActorDeadError:
                    pass  # crashed just now: its successor takes the parked command
                else:
                    return
            self.parked.append(command)

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

    def end(self, error: SupervisorError) -> list[Command]:
        """Mark the session terminal; return the parked commands for the caller to fail."""
        with self.lock:
            self.terminal = error
            self.ref = None
            commands = list(self.parked)
            self.parked.clear()
            return commands


def fail_command(command: Command, error: SupervisorError) -> None:
    """Answer a command that can no longer run: closes resolve, the rest fail with ``error``."""
    if isinstance(command, Close):
        resolve(command.reply, None)
    else:
        reject(command.reply, error)
