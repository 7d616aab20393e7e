"""Calling the user's callbacks from a session actor (internal).

They run on the worker running the session's actor (``_actor_pool``), one at a
time per session; the report of an ending with no actor left
(``SessionRecord.retire``) runs in the thread that ended it: the supervisor's,
or the one calling ``stop()``. A bug in one is logged and contained: it must
never cost the session its socket or its state. The records they receive are
built by the session machine (or, for such an ending, by the record).
"""

from __future__ import annotations

from typing import Any

from supervisor.messages import Event, Lifecycle
from supervisor.spec import SessionSpec


class UserCallbacks:
    """Internal: ``on_event``, ``on_ask`` and ``on_lifecycle`` of one session."""

    def __init__(self, spec: SessionSpec) -> None:
        self._spec = spec

    def event(self, log: Any, event: Event) -> None:
        """Hand one inbound event to ``on_event``."""
        if self._spec.on_event is not None:
            try:
                self._spec.on_event(event)
            except Exception:
                log.exception("on_event_failed", event_name=event.name)

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

    def lifecycle(self, log: Any, report: Lifecycle) -> None:
        """Report one connection lifecycle step to ``on_lifecycle``."""
        if self._spec.on_lifecycle is None:
            return
        try:
            self._spec.on_lifecycle(report)
        except Exception:
            log.exception("on_lifecycle_failed", kind=report.kind.value)
