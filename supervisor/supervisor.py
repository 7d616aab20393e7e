"""``Supervisor``: opens, restarts, lists and stops supervised sessions."""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import TracebackType

import pykka

from supervisor._admission import Admission
from supervisor._futures import new_future
from supervisor._logging import get_logger
from supervisor._metrics import MetricsSample, SupervisorTap
from supervisor._record import SessionRecord
from supervisor._supervisor_actor import (
    Adopt,
    BeginStop,
    FailureCallback,
    ListRecords,
    SupervisorActor,
)
from supervisor._timer import Scheduler
from supervisor.errors import DeadlineExceeded, SupervisorStopped
from supervisor.health import Health, HealthThresholds, assess
from supervisor.messages import Close, SessionState, SessionStatus
from supervisor.policy import RestartPolicy
from supervisor.session import Session
from supervisor.spec import SessionSpec

_log = get_logger("supervisor.supervisor")


class Supervisor:
    """Supervises many sessions: restarts with backoff, budgets, admission control.

    Use ``Supervisor.start()``; it is also a context manager that stops on exit.
    """

    def __init__(self, policy: RestartPolicy,
                 on_session_failed: FailureCallback | None = None) -> None:
        self.policy = policy
        self._scheduler = Scheduler(policy.clock)
        # Spaced starts run on this supervisor's timer thread, not a process-wide extra one.
        admission = Admission(policy.max_handshakes_in_flight,
                              policy.max_handshakes_per_second, policy.clock,
                              self._scheduler.call_later)
        self._ref = SupervisorActor.start(policy, admission, self._scheduler, on_session_failed)
        self._tap = SupervisorTap(admission)  # metrics and health, read without the mailbox
        self._lock = threading.Lock()
        """Orders open() against stop(): every Adopt is queued before BeginStop, or refused."""
        self._stopping = False

    @classmethod
    def start(cls, policy: RestartPolicy | None = None, *,
              on_session_failed: FailureCallback | None = None) -> Supervisor:
        """Start a supervisor. ``on_session_failed(session_id, reason)`` hears of give-ups."""
        return cls(policy or RestartPolicy(), on_session_failed)

    def open(self, spec: SessionSpec) -> Session:
        """Open a session; it connects at once. Returns without waiting on any actor.

        Raises ``SupervisorStopped`` once ``stop()`` has begun.
        """
        if not isinstance(spec, SessionSpec):
            msg = f"open() takes a SessionSpec, not {type(spec).__name__}"
            raise TypeError(msg)
        record = SessionRecord(self._tap.wrap(spec))  # the tap hears its lifecycle first
        session_id = spec.session_id
        # Closing a failed session sends no lifecycle report: the release tells the tap.
        record.on_forget = lambda: self._tap.forget(session_id)
        session = Session(record)
        # pykka drops a tell that lands after the actor's stop: a record adopted
        # by nobody would wait forever. Under the lock, an Adopt is queued
        # before stop()'s BeginStop or not at all.
        with self._lock:
            if self._stopping:
                raise SupervisorStopped("the supervisor is stopped")
            # Tracked before its actor exists: a report that comes at once (even
            # CLOSED) finds the track, and nothing re-adds one after the end.
            self._tap.track(session)
            try:
                self._ref.tell(Adopt(record))
            except pykka.ActorDeadError as exc:
                self._tap.forget(session_id)
                raise SupervisorStopped("the supervisor is stopped") from exc
        return session

    def metrics(self) -> MetricsSample:
        """Counters and session totals, read without waiting on any actor (see docs/services.md)."""
        return self._tap.sample()

    def health(self, thresholds: HealthThresholds | None = None) -> Health:
        """Healthy or not, and why, for a readiness probe (``supervisor.health``)."""
        return assess(self._tap.sample(), thresholds)

    def sessions(self, timeout: float = 10.0) -> list[SessionState]:
        """Snapshots of every supervised session (closed ones are forgotten)."""
        try:
            records: list[SessionRecord] = self._ref.ask(ListRecords(), timeout=timeout)  # type: ignore[assignment]
        except pykka.ActorDeadError as exc:
            raise SupervisorStopped("the supervisor is stopped") from exc
        return [record.snapshot for record in records]

    def count_by_status(self, timeout: float = 10.0) -> dict[SessionStatus, int]:
        """How many sessions are in each status."""
        return dict(Counter(state.status for state in self.sessions(timeout)))

    def stop(self, timeout: float = 10.0) -> None:
        """Close every session concurrently, then stop; bounded by ``timeout`` seconds.

        From its start, ``open()`` raises ``SupervisorStopped`` and every pending
        or later command of every session fails with it. Raises
        ``DeadlineExceeded`` (nothing stopped, call again) only if the supervisor's
        actor does not even begin within ``timeout``; never a pykka error.
        """
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        deadline = time.monotonic() + timeout
        try:
            records: list[SessionRecord] = self._ref.ask(BeginStop(), timeout=timeout)  # type: ignore[assignment]
        except pykka.ActorDeadError:
            records = []
        except pykka.Timeout:
            with self._lock:
                self._stopping = False  # nothing was stopped: a later stop() tries again
            msg = (f"the supervisor did not begin stopping within {timeout:g}s "
                   "(its actor is busy); call stop() again")
            raise DeadlineExceeded(msg, timeout) from None
        stopped = SupervisorStopped("the supervisor stopped")
        closing = []
        for record in records:
            with record.lock:
                orphaned = record.ref is None and record.terminal is None
            if orphaned:
                # Crashed and waiting for a successor that will not come now.
                record.retire(stopped, None, SessionStatus.CLOSED)
                continue
            reply: pykka.Future[None] = new_future()
            record.deliver(Close(reply, stopping=True))
            closing.append(reply)
        for reply in closing:
            try:
                reply.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                break
        # Past the deadline, stopping an actor still ends its session (on_stop).
        stops = [ref.stop(block=False) for ref in (record.ref for record in records)
                 if ref is not None and ref.is_alive()]
        for done in stops:
            try:
                done.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                break
        try:
            self._ref.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
        except pykka.Timeout:
            # Every session has been told to close; the supervisor's actor stops once
            # it has worked through what it was told before (10,000 sessions ending).
            _log.warning("supervisor_stop_overdue", timeout=timeout)
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


