"""The supervisor actor: children, restart policy, budgets (internal).

It owns the children and the policies and never blocks on a child: sessions
report by ``tell`` and get their answer by ``tell``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from supervisor import _supervision as sup
from supervisor._admission import Admission
from supervisor._logging import get_logger
from supervisor._record import SessionRecord
from supervisor._session_actor import SessionActor
from supervisor._timer import Scheduler
from supervisor.errors import SessionCrashed, SupervisorStopped
from supervisor.messages import SessionStatus
from supervisor.policy import BUDGET_EXHAUSTED, RestartBudget, RestartPolicy

_log = get_logger("supervisor.supervisor")

FailureCallback = Callable[[str, str], Any]


@dataclass(frozen=True, slots=True)
class Adopt:
    """Internal: start supervising ``record`` (from ``Supervisor.open``)."""

    record: SessionRecord


@dataclass(frozen=True, slots=True)
class StartSuccessor:
    """Internal: the backoff after a crash is over; start a new actor for the session."""

    session_id: str


@dataclass(frozen=True, slots=True)
class ListRecords:
    """Internal (ask): the records of every supervised session."""


@dataclass(frozen=True, slots=True)
class BeginStop:
    """Internal (ask): stop restarting anything; answer with every record."""


@dataclass(slots=True)
class _Child:
    record: SessionRecord
    budget: RestartBudget
    spent_for_loss: int | None = None
    """The loss whose restart was charged to the budget (refunded if a Resume preempts)."""


class SupervisorActor(pykka.ThreadingActor):
    """Internal: supervises every session actor opened through one ``Supervisor``."""

    def __init__(self, policy: RestartPolicy, admission: Admission, scheduler: Scheduler,
                 on_session_failed: FailureCallback | None) -> None:
        super().__init__()
        self._policy = policy
        self._admission = admission
        self._scheduler = scheduler
        self._on_session_failed = on_session_failed
        self._children: dict[str, _Child] = {}
        self._stopping = False

    def on_receive(self, message: Any) -> Any:
        match message:
            case Adopt(record):
                self._adopt(record)
            case sup.ConnectionDown():
                self._on_connection_down(message)
            case sup.ActorCrashed(session_id, error):
                self._on_crash(session_id, error)
            case StartSuccessor(session_id):
                child = self._children.get(session_id)
                if child is not None and not self._stopping:
                    self._start_actor(child.record, "restart")
            case sup.RestartPreempted(session_id, loss):
                child = self._children.get(session_id)
                if child is not None and child.spent_for_loss == loss:
                    child.budget.refund()  # only a restart that was really charged
                    child.spent_for_loss = None
            case sup.SessionEnded(session_id, reason):
                self._on_ended(session_id, reason)
            case ListRecords():
                return [child.record for child in self._children.values()]
            case BeginStop():
                self._stopping = True
                return [child.record for child in self._children.values()]
        return None

    def _adopt(self, record: SessionRecord) -> None:
        if self._stopping:  # Supervisor.open() refuses first; this is the backstop
            record.retire(SupervisorStopped("the supervisor stopped"), None, SessionStatus.CLOSED)
            return
        session_id = record.spec.session_id
        self._children[session_id] = _Child(record, RestartBudget(self._policy))
        ref = self.actor_ref

        def release(reason: str | None) -> None:
            with contextlib.suppress(pykka.ActorDeadError):  # stopped: nothing to forget
                ref.tell(sup.SessionEnded(session_id, reason))

        record.on_release = release
        self._start_actor(record, "open")

    def _start_actor(self, record: SessionRecord, cause: str) -> None:
        ref = SessionActor.start(record, self.actor_ref, self._admission, self._scheduler, cause)
        # Known at once, not only from the actor's on_start: stop() must see it.
        record.adopt(ref)

    def _on_connection_down(self, down: sup.ConnectionDown) -> None:
        child = self._children.get(down.session_id)
        if child is None or self._stopping:
            return
        reason = self._policy.give_up_reason(down.error, clean=down.clean)
        if reason is None and not child.budget.spend(down.uptime):
            reason = self._budget_exhausted(down.error)
        session = child.record.ref
        if session is None:
            return
        if reason is None:
            child.spent_for_loss = down.loss
            answer: sup.GiveUp | sup.RestartIn = sup.RestartIn(down.loss,
                                                               child.budget.next_delay())
        else:
            answer = sup.GiveUp(down.loss, reason)
        # The session may have crashed since it reported: its successor reconnects.
        with contextlib.suppress(pykka.ActorDeadError):
            session.tell(answer)

    def _on_crash(self, session_id: str, error: BaseException) -> None:
        child = self._children.get(session_id)
        if child is None:
            return
        if self._stopping:
            # No successor will come: answer what the dead actor held (a Close too).
            child.record.retire(SupervisorStopped("the supervisor stopped"), None,
                                SessionStatus.CLOSED)
            return
        if child.budget.spend(None):
            delay = child.budget.next_delay()
            _log.warning("session_crashed", session_id=session_id, error=repr(error),
                         restart_in=delay)
            self._scheduler.call_later(delay, self.actor_ref.tell, StartSuccessor(session_id))
            return
        reason = f"{self._budget_exhausted(error)} (actor crashed)"
        child.record.retire(SessionCrashed(reason), reason, SessionStatus.FAILED)

    def _budget_exhausted(self, error: BaseException | None) -> str:
        last = "" if error is None else f"; last error: {type(error).__name__}: {error}"
        return (f"{BUDGET_EXHAUSTED}: {self._policy.max_restarts} restarts "
                f"within {self._policy.restart_window:g}s{last}")

    def _on_ended(self, session_id: str, reason: str | None) -> None:
        if reason is None:
            # Closed by us (a failed session too, once closed): forget it, a
            # long-running service must not leak.
            self._children.pop(session_id, None)
            return
        _log.warning("session_failed", session_id=session_id, reason=reason)
        if self._on_session_failed is not None:
            try:
                self._on_session_failed(session_id, reason)
            except Exception:  # noqa: BLE001 - a user callback may raise anything
                _log.exception("on_session_failed_callback_failed", session_id=session_id)
