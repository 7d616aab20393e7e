"""What a session owes for its sends: the reconnect outbox, writes, acks, chat turns (internal).

Pure bookkeeping for the session machine: every ``Send``/``Chat`` lives in one
``Pending`` record from the moment the machine accepts it until its future is
settled, whichever way (written, acknowledged, turn ended, failed, timed out).
It never settles a future itself; it hands back what to settle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from supervisor.messages import Chat, Send
from supervisor.protocols.chat import TurnTracker

Outgoing = Send | Chat

CHAT_EVENT = "client_message"


@dataclass(slots=True)
class Pending:
    """Internal: one send or chat the session still owes an answer for."""

    seq: int
    """The write token: unique per session, in the order accepted."""
    command: Outgoing
    deadline: float
    written: bool = False
    """The transport reported the frame fully written."""
    generation: int | None = None
    """The connection it was last handed to: only that connection's ``Written`` counts."""
    ack_id: int | None = None
    """Socket.IO ack number awaited (``call()``)."""
    turn: TurnTracker | None = field(default=None, repr=False)
    """The reply turn followed (``chat()``)."""

    @property
    def answered_on_write(self) -> bool:
        """A plain send: its future resolves once the frame is written."""
        command = self.command
        return isinstance(command, Send) and not command.want_ack


class Outbox:
    """Internal: queued sends (bounded, ordered) and the ones written on the live connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued: deque[Pending] = deque()
        """Waiting for a connection, in the order given."""
        self.inflight: dict[int, Pending] = {}
        """Handed to the live connection, by ``seq``: not yet written, or awaiting a reply."""
        self._by_ack: dict[int, int] = {}
        self._turns: list[Pending] = []

    def __len__(self) -> int:
        """Sends accepted and not yet written: queued, or handed over and not yet written."""
        return len(self.queued) + self.unwritten()

    def unwritten(self) -> int:
        """Handed to the connection, ``Written`` not reported yet (a slow or stalled peer)."""
        return sum(1 for pending in self.inflight.values() if not pending.written)

    def __iter__(self) -> Iterator[Pending]:
        """Every pending send, queued ones first."""
        yield from self.queued
        yield from self.inflight.values()

    def has_room(self) -> bool:
        """The bound counts everything not yet written, so a stalled peer fills it (hostile)."""
        return len(self) < self.limit

    def sent(self, pending: Pending, generation: int) -> None:
        """``pending`` was handed to the live connection, ``generation``."""
        pending.generation = generation
        self.inflight[pending.seq] = pending
        if pending.ack_id is not None:
            self._by_ack[pending.ack_id] = pending.seq
        if pending.turn is not None:
            self._turns.append(pending)

    def written(self, seq: int, generation: int) -> Pending | None:
        """Connection ``generation`` wrote the frame of ``seq``; returns it if nothing more
        is owed before answering.

        A frame re-queued when its connection went (before this report came)
        leaves the queue: it is written, not to be sent again. A report from a
        connection the frame is no longer with (it was re-sent on a newer one)
        is ignored: the newer connection's own report settles it.
        """
        pending = self.inflight.get(seq)
        if pending is None:
            for queued in self.queued:
                if queued.seq == seq and queued.generation == generation:
                    self.queued.remove(queued)
                    queued.written = True
                    return queued
            return None
        if pending.generation != generation:
            return None
        pending.written = True
        if pending.answered_on_write:
            del self.inflight[seq]
            return pending
        return None

    def acked(self, ack_id: int) -> Pending | None:
        seq = self._by_ack.pop(ack_id, None)
        return None if seq is None else self.inflight.pop(seq, None)

    def turns(self) -> list[Pending]:
        return self._turns

    def turn_over(self, pending: Pending) -> None:
        self._turns.remove(pending)
        self.inflight.pop(pending.seq, None)

    def connection_gone(self) -> list[Pending]:
        """The live connection is gone: re-queue what it never wrote (in order, first).

        Returns what it wrote but that still waits for a reply: the server may
        or may not have handled it, so the caller fails it; it is never re-sent.
        """
        unwritten = sorted((p for p in self.inflight.values() if not p.written),
                           key=lambda p: p.seq)
        answered_later = [p for p in self.inflight.values() if p.written]
        for pending in reversed(unwritten):
            pending.ack_id, pending.turn = None, None  # a new ack id, a new turn when re-sent
            self.queued.appendleft(pending)
        self.inflight.clear()
        self._by_ack.clear()
        self._turns.clear()
        return answered_later

    def remove(self, pending: Pending) -> None:
        """Forget ``pending`` wherever it is (its deadline passed)."""
        if self.inflight.pop(pending.seq, None) is None:
            self.queued.remove(pending)
            return
        if pending.ack_id is not None:
            self._by_ack.pop(pending.ack_id, None)
        if pending.turn is not None:
            self._turns.remove(pending)

    def take_all(self) -> list[Pending]:
        """Remove and return every pending send (to fail or to hand over)."""
        everything = list(self)
        self.queued.clear()
        self.inflight.clear()
        self._by_ack.clear()
        self._turns.clear()
        return everything
