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
from supervisor.errors import ConnectionLost, MalformedAck, OutboxFull
from supervisor.messages import Chat, Send
from supervisor.protocols import Codec
from supervisor.protocols.chat import TurnTracker, user_message

Outgoing = Send | Chat

CHAT_EVENT = "client_message"


class Outbox:
    """Internal: ordered, bounded sends plus the replies still owed for written ones."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.queued: deque[Outgoing] = deque()
        """Waiting for a connection, in the order given."""
        self._awaiting_ack: dict[int, Send] = {}
        self._turns: deque[tuple[TurnTracker, Chat]] = deque()
        self._next_ack_id = 0

    def __len__(self) -> int:
        return len(self.queued)

    def enqueue(self, command: Outgoing) -> None:
        """Keep ``command`` for the next connection, or fail it past the bound."""
        if len(self.queued) >= self._limit:
            reject(command.reply, OutboxFull(self._limit))
        else:
            self.queued.append(command)

    def write(self, command: Outgoing, conn: Connection, codec: Codec,
              thread_id: str | None) -> bool:
        """Write one command now; False if the socket failed (it is then still owed)."""
        ack_id = None
        message_id = str(uuid.uuid4())
        try:
            if isinstance(command, Chat):
                message = user_message(command.text, thread_id, message_id, time.time())
                frames = codec.encode(CHAT_EVENT, message)
            else:
                if command.want_ack:
                    ack_id = self._next_ack_id
                    self._next_ack_id += 1
                frames = codec.encode(command.event, command.data, ack_id)
        except (TypeError, ValueError) as exc:
            reject(command.reply, exc)
            return True
        sent_at = time.monotonic()
        try:
            for frame in frames:  # a binary emit is several frames
                conn.send(frame)
        except ConnectionLost:
            return False  # the reader reports the loss; the command waits for the next connection
        if isinstance(command, Chat):
            self._turns.append((TurnTracker(sent_at, message_id), command))
        elif ack_id is not None:
            self._awaiting_ack[ack_id] = command
        else:
            resolve(command.reply, None)
        return True

    def flush(self, conn: Connection, codec: Codec, thread_id: str | None) -> None:
        """Write queued commands in order, stopping at the first socket failure."""
        while self.queued and self.write(self.queued[0], conn, codec, thread_id):
            self.queued.popleft()

    def acked(self, ack_id: int, data: object, error: str | None = None) -> None:
        if (command := self._awaiting_ack.pop(ack_id, None)) is not None:
            if error is not None:
                reject(command.reply, MalformedAck(error))
            else:
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
        """Fail what was written but not answered: it is not re-sent (it may have been handled)."""
        for command in self._awaiting_ack.values():
            reject(command.reply, error)
        for _, turn in self._turns:
            reject(turn.reply, error)
        self._awaiting_ack.clear()
        self._turns.clear()

    def take_queued(self) -> list[Outgoing]:
        """Remove and return every queued command (to hand over or to fail)."""
        queued = list(self.queued)
        self.queued.clear()
        return queued
