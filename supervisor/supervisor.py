"""``Supervisor``: opens, restarts, lists and stops supervised sessions."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from types import TracebackType

import pykka

from supervisor import _supervision as sup
from supervisor._admission import Admission
from supervisor._futures import new_future
from supervisor._metrics import MetricsSample, SupervisorTap
from supervisor._record import SessionRecord, fail_command
from supervisor._supervisor_actor import BeginStop, FailureCallback, ListRecords, SupervisorActor
from supervisor._timer import Scheduler
from supervisor.errors import SessionClosed
from supervisor.health import Health, HealthThresholds, assess
from supervisor.messages import Close, SessionState, SessionStatus
from supervisor.policy import RestartPolicy
from supervisor.session import Session
from supervisor.spec import SessionSpec


class Supervisor:
    """Supervises many sessions: restarts with backoff, budgets, admission control.

    Use ``Supervisor.start()``; it is also a context manager that stops on exit.
    """

    def __init__(self, policy: RestartPolicy,
                 on_session_failed: FailureCallback | None = None) -> None:
        self.policy = policy
        self._scheduler = Scheduler(policy.clock)
        admission = Admission(policy.max_handshakes_in_flight,
                              policy.max_handshakes_per_second)
        self._ref = SupervisorActor.start(policy, admission, self._scheduler, on_session_failed)
        self._tap = SupervisorTap(admission)  # metrics and health, read without the mailbox

    @classmethod
    def start(cls, policy: RestartPolicy | None = None, *,
              on_session_failed: FailureCallback | None = None) -> Supervisor:
        """Start a supervisor. ``on_session_failed(session_id, reason)`` hears of give-ups."""
        return cls(policy or RestartPolicy(), on_session_failed)

    def open(self, spec: SessionSpec) -> Session:
        """Open a session; it connects at once. Returns without waiting on any actor."""
        if not isinstance(spec, SessionSpec):
            msg = f"open() takes a SessionSpec, not {type(spec).__name__}"
            raise TypeError(msg)
        record = SessionRecord(self._tap.wrap(spec))  # the tap hears its lifecycle first
        self._ref.tell(sup.Adopt(record))
        session = Session(record)
        self._tap.track(session)
        return session

    def metrics(self) -> MetricsSample:
        """Counters and session totals, read without waiting on any actor (see docs/services.md)."""
        return self._tap.sample()

    def health(self, thresholds: HealthThresholds | None = None) -> Health:
        """Healthy or not, and why, for a readiness probe (``supervisor.health``)."""
        return assess(self._tap.sample(), thresholds)

    def sessions(self, timeout: float = 10.0) -> list[SessionState]:
        """Snapshots of every supervised session (closed ones are forgotten)."""
        records: list[SessionRecord] = self._ref.ask(ListRecords(), timeout=timeout)  # type: ignore[assignment]
        return [record.snapshot for record in records]

    def count_by_status(self, timeout: float = 10.0) -> dict[SessionStatus, int]:
        """How many sessions are in each status."""
        return dict(Counter(state.status for state in self.sessions(timeout)))

    def stop(self, timeout: float = 10.0) -> None:
        """Close every session concurrently, then stop; bounded by ``timeout`` seconds."""
        if not self._ref.is_alive():
            return
        deadline = time.monotonic() + timeout
        records: list[SessionRecord] = self._ref.ask(BeginStop(), timeout=timeout)  # type: ignore[assignment]
        closing = []
        for record in records:
            reply: pykka.Future[None] = new_future()
            with record.lock:
                orphaned = record.ref is None and record.terminal is None
            if orphaned:
                # Crashed and waiting for a successor that will not come now.
                for command in record.end(SessionClosed("the supervisor stopped")):
                    fail_command(command, SessionClosed("the supervisor stopped"))
                record.snapshot = replace(record.snapshot, status=SessionStatus.CLOSED)
                continue
            record.deliver(Close(reply))
            closing.append(reply)
        for reply in closing:
            try:
                reply.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                break
        stops = [record.ref.stop(block=False) for record in records
                 if record.ref is not None and record.ref.is_alive()]
        for stopped in stops:
            try:
                stopped.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                break
        try:
            self._ref.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
        finally:
            self._scheduler.stop()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        alive = "running" if self._ref.is_alive() else "stopped"
        return f"<Supervisor {alive}>"


__all__ = ["Supervisor"]


