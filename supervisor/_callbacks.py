"""Calling the user's callbacks from a session actor (internal).

They run in the actor's thread. A bug in one is logged and contained: it must
never cost the session its socket or its state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from supervisor.messages import Event, Lifecycle, LifecycleKind
from supervisor.spec import SessionSpec


class UserCallbacks:
    """Internal: ``on_event``, ``on_ask`` and ``on_lifecycle`` of one session."""

    def __init__(self, spec: SessionSpec) -> None:
        self._spec = spec

    def event(self, log: Any, thread_id: str | None, generation: int, name: str,
              data: Any) -> Event:
        """Build the inbound event record and hand it to ``on_event``."""
        event = Event(self._spec.session_id, thread_id, generation, name, data,
                      time.monotonic())
        if self._spec.on_event is not None:
            try:
                self._spec.on_event(event)
            except Exception:
                log.exception("on_event_failed", event_name=name)
        return event

    def answer(self, log: Any, event: Event) -> Any:
        """The ack for a server event that asked for one: ``on_ask``'s answer, or None."""
        if self._spec.on_ask is None:
            log.warning("unanswered_ack_request", event_name=event.name,
                        hint="set SessionSpec(on_ask=...) to answer")
            return None
        try:
            return self._spec.on_ask(event)
        except Exception:
            log.exception("on_ask_failed", event_name=event.name)
            return None

    def lifecycle(self, log: Any, kind: LifecycleKind, thread_id: str | None, generation: int,
                  *, reason: str | None = None, error: str | None = None,
                  timings: Mapping[str, float] | None = None,
                  cause: str | None = None) -> None:
        """Report one connection lifecycle step to ``on_lifecycle``."""
        if self._spec.on_lifecycle is None:
            return
        report = Lifecycle(self._spec.session_id, kind, thread_id, generation,
                           time.monotonic(), reason, error, dict(timings or {}), cause)
        try:
            self._spec.on_lifecycle(report)
        except Exception:
            log.exception("on_lifecycle_failed", kind=kind.value)
