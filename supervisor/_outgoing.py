"""What a session sends: the reconnect outbox, emits awaiting acks, chat turns (internal).

Owned by one session actor and touched only from its handler. Kept apart from
the state machine so each stays readable.
"""

from __future__ import annotations

import time
import uuid
from collections import deque

from supervisor._futures import reject, resolve
from supervisor._transport import Connection
from supervisor.errors import OutboxFull
from supervisor.messages import Chat, Send
from supervisor.protocols import Codec
from supervisor.protocols.chat import TurnTracker, user_message

Outgoing = Send | Chat

CHAT_EVENT = "client_message"


class Outbox:
    """Internal: ordered, bounded sends plus the replies still owed for written ones.

    The bound counts every command accepted and not yet written: those queued
    for a connection and those handed to the transport whose ``Written`` has
    not come back, so a peer that stops reading yields ``OutboxFull``.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.queued: deque[Outgoing] = deque()
        """Waiting for a connection, in the order given."""
        self._unwritten: dict[int, tuple[Outgoing, bool]] = {}
        """Handed to the transport, by token; True: resolve once written (a plain send)."""
        self._next_token = 0
        self._awaiting_ack: dict[int, Send] = {}
        self._turns: deque[tuple[TurnTracker, Chat]] = deque()
        self._next_ack_id = 0

    def __len__(self) -> int:
        return len(self.queued) + len(self._unwritten)

    def can_write_now(self) -> bool:
        """Nothing queued ahead and room under the bound."""
        return not self.queued and len(self._unwritten) < self._limit

    def enqueue(self, command: Outgoing) -> None:
        """Keep ``command`` for the next connection, or fail it past the bound."""
        if len(self) >= self._limit:
            reject(command.reply, OutboxFull(self._limit))
        else:
            self.queued.append(command)

    def written(self, token: object) -> None:
        """The transport wrote the frame of ``token``: a plain send is delivered."""
        entry = self._unwritten.pop(token, None) if isinstance(token, int) else None
        if entry is not None and entry[1]:
            resolve(entry[0].reply, None)

    def write(self, command: Outgoing, conn: Connection, codec: Codec,
              thread_id: str | None) -> bool:
        """Hand one command to the transport (it never blocks); settled once written."""
        ack_id = None
        message_id = str(uuid.uuid4())
        try:
            if isinstance(command, Chat):
                message = user_message(command.text, thread_id, message_id, time.time())
                frame = codec.encode(CHAT_EVENT, message)
            else:
                if command.want_ack:
                    ack_id = self._next_ack_id
                    self._next_ack_id += 1
                frame = codec.encode(command.event, command.data, ack_id)
        except (TypeError, ValueError) as exc:
            reject(command.reply, exc)
            return True
        sent_at = time.monotonic()
        token = self._next_token
        self._next_token += 1
        self._unwritten[token] = (command, isinstance(command, Send) and ack_id is None)
        if isinstance(command, Chat):
            self._turns.append((TurnTracker(sent_at, message_id), command))
        elif ack_id is not None:
            self._awaiting_ack[ack_id] = command
        conn.send(frame, token)
        return True

    def flush(self, conn: Connection, codec: Codec, thread_id: str | None) -> None:
        """Hand queued commands to the transport, in order."""
        while self.queued:
            self.write(self.queued.popleft(), conn, codec, thread_id)

    def _requeue_unwritten(self) -> None:
        """Commands never fully written go back in front of the queue, in order."""
        if not self._unwritten:
            return
        commands = [command for command, _ in self._unwritten.values()]
        self._unwritten.clear()
        ids = {id(command) for command in commands}
        self._awaiting_ack = {ack: c for ack, c in self._awaiting_ack.items() if id(c) not in ids}
        self._turns = deque(turn for turn in self._turns if id(turn[1]) not in ids)
        self.queued.extendleft(reversed(commands))

    def acked(self, ack_id: int, data: object) -> None:
        if (command := self._awaiting_ack.pop(ack_id, None)) is not None:
            resolve(command.reply, data)

    def observe(self, name: str, data: object) -> None:
        """Feed an inbound event to every open chat turn (each keeps only its own steps)."""
        if not self._turns:
            return
        now = time.monotonic()
        open_turns: deque[tuple[TurnTracker, Chat]] = deque()
        for tracker, command in self._turns:
            if tracker.feed(name, data, now):
                resolve(command.reply, tracker.result())
            else:
                open_turns.append((tracker, command))
        self._turns = open_turns

    def connection_gone(self, error: Exception) -> None:
        """Fail what was written but not answered: it is not re-sent (it may have been handled).

        What was never fully written waits for the next connection instead.
        """
        self._requeue_unwritten()
        for command in self._awaiting_ack.values():
            reject(command.reply, error)
        for _, turn in self._turns:
            reject(turn.reply, error)
        self._awaiting_ack.clear()
        self._turns.clear()

    def take_queued(self) -> list[Outgoing]:
        """Remove and return every queued command (to hand over or to fail)."""
        self._requeue_unwritten()
        queued = list(self.queued)
        self.queued.clear()
        return queued
