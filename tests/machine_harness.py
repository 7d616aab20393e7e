"""Driving the pure session machine by hand: a harness and a compact view of its effects."""

from __future__ import annotations

import itertools
from typing import Any

from supervisor import _machine_io as io
from supervisor import _supervision as sup
from supervisor._machine import SessionMachine
from supervisor.messages import SessionState
from supervisor.protocols import make_codec
from supervisor.spec import SessionSpec

URL = "ws://127.0.0.1:9/ws"


def thread_of(codec: Any) -> str | None:
    """The thread id a codec's handshake carries (from its headers)."""
    headers = dict(codec.handshake(lambda _: "2").headers)
    return headers.get("X-Chainlit-Thread-Id")


def view(effect: io.Effect) -> tuple[Any, ...] | None:  # noqa: PLR0911, PLR0912 - one line per kind
    """A compact, comparable view of one effect (None for publish and log)."""
    match effect:
        case io.OpenConnection(generation, codec):
            return ("open", generation, thread_of(codec))
        case io.Write(generation, frame, token):
            return ("write", generation, frame, token)
        case io.CloseConnection(generation):
            return ("close", generation)
        case io.AbortConnection(generation):
            return ("abort", generation)
        case io.StartTimer(delay, fire):
            return ("timer", round(delay, 6), fire)
        case io.Resolve(future, value):
            return ("resolve", future, value)
        case io.Reject(future, error):
            return ("reject", future, type(error).__name__)
        case io.Deliver(event, ack_id):
            return ("deliver", event.thread_id, event.generation, event.data, ack_id)
        case io.Notify(lifecycle):
            return ("notify", lifecycle.kind.value, lifecycle.thread_id, lifecycle.generation,
                    lifecycle.cause)
        case io.Report(message):
            return ("report", message)
        case io.Retired(error, reason):
            return ("retired", type(error).__name__, reason)
        case io.Forget():
            return ("forget",)
        case io.HandOver(commands):
            return ("handover", tuple(command.reply for command in commands))
    return None


def _ignore(_event: object) -> None:
    return None


class Harness:
    """One machine, a clock moved by hand, ids numbered; futures are plain tokens."""

    def __init__(self, previous: SessionState | None = None, **spec: Any) -> None:
        spec.setdefault("url", URL)
        # A listener, so inbound events become Deliver effects (the machine makes
        # none for a spec without one): I4 is checked on them.
        spec.setdefault("on_event", _ignore)
        self.spec = SessionSpec(**spec)
        numbers = itertools.count(1)
        self.machine = SessionMachine(
            self.spec,
            lambda identity, confirm: make_codec(self.spec.protocol_config, identity,
                                                 confirm_resume=confirm),
            lambda: f"id-{next(numbers)}", previous)
        self.now = 0.0
        self.effects: list[io.Effect] = []

    def __call__(self, event: io.Input, *, at: float | None = None) -> list[tuple[Any, ...]]:
        """Feed one input; return the views of its effects (publish and log left out)."""
        if at is not None:
            self.now = at
        self.effects = self.machine.handle(event, self.now)
        return [v for v in map(view, self.effects) if v is not None]

    def state(self) -> SessionState:
        return self.machine.snapshot()

    def connect(self, generation: int = 1) -> list[tuple[Any, ...]]:
        """Admit and open ``generation`` (a plain WebSocket is ready on open)."""
        self(io.ConnAdmitted(generation))
        return self(io.ConnOpened(generation, self.now, self.now))


def lost(loss: int, error: Exception | None = None, *, clean: bool = False,
         uptime: float | None = None, session: str = "m") -> tuple[str, sup.ConnectionDown]:
    return ("report", sup.ConnectionDown(session, loss, error, clean, uptime))
