"""What a supervisor has done and holds, for metrics and health (internal).

One :class:`SupervisorTap` per ``Supervisor``. It hears every session's
lifecycle reports (``Supervisor.open`` wraps ``SessionSpec.on_lifecycle``) and
keeps the session handles, so a :meth:`SupervisorTap.sample` reads counters
and the sessions' published snapshots without ever asking an actor: a scrape
costs no mailbox time, however many sessions there are.

:data:`METRICS` is the one list of metric names, kinds and help texts;
``supervisor.prometheus`` exports it and nothing else.
"""

from __future__ import annotations

import bisect
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from supervisor._runtime import new_lock
from supervisor.messages import Lifecycle, LifecycleKind, SessionStatus
from supervisor.policy import BUDGET_EXHAUSTED

if TYPE_CHECKING:
    from supervisor._admission import Admission
    from supervisor.session import Session
    from supervisor.spec import SessionSpec

MetricKind = Literal["gauge", "counter", "histogram"]


LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram bounds in seconds: from a loopback handshake to a connect timeout."""

CRASH = "crash"
"""The restart reason of a session whose actor crashed (no connection loss came first)."""


@dataclass(frozen=True, slots=True)
class HistogramSample:
    """Cumulative bucket counts (``le`` bound, count), their sum and total count."""

    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """Everything :data:`METRICS` exports, read at one moment."""

    sessions: Mapping[SessionStatus, int]
    handshakes: int
    resumes: int
    restarts: Mapping[str, int]
    stale_frames_dropped: int
    malformed_frames: int
    outbox_frames: int
    budgets_exhausted: int
    admission_in_flight: int
    admission_waiting: int
    admission_saturated_s: float
    events_dropped: int
    connect: HistogramSample
    resume: HistogramSample

    @property
    def live_sessions(self) -> int:
        """Sessions the supervisor keeps alive (connecting, connected or in backoff)."""
        return sum(n for status, n in self.sessions.items()
                   if status not in (SessionStatus.CLOSED, SessionStatus.FAILED))


MetricValue = float | Mapping[str, float] | HistogramSample
"""A plain number, numbers by label value, or a histogram."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric: its name (Prometheus conventions), kind, help, label, reader."""

    name: str
    kind: MetricKind
    help: str
    read: Callable[[MetricsSample], MetricValue]
    label: str | None = None
    """The one label of a metric that ``read`` returns as a mapping."""


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("supervisor_sessions", "gauge",
               "Supervised sessions by status (closed sessions are forgotten).",
               lambda s: {status.value: n for status, n in s.sessions.items()}, "status"),
    MetricSpec("supervisor_handshakes_total", "counter", "Handshakes started.",
               lambda s: s.handshakes),
    MetricSpec("supervisor_resumes_total", "counter",
               "Handshakes started to switch a session's thread (Resume).",
               lambda s: s.resumes),
    MetricSpec("supervisor_restarts_total", "counter",
               "Restarts by the supervisor after a lost connection or a crashed actor.",
               lambda s: s.restarts, "reason"),
    MetricSpec("supervisor_stale_frames_dropped_total", "counter",
               "Frames dropped because they arrived on a superseded connection.",
               lambda s: s.stale_frames_dropped),
    MetricSpec("supervisor_malformed_frames_total", "counter",
               "Inbound frames the protocol could not parse.", lambda s: s.malformed_frames),
    MetricSpec("supervisor_outbox_frames", "gauge",
               "Sends buffered while their sessions reconnect.", lambda s: s.outbox_frames),
    MetricSpec("supervisor_budgets_exhausted", "gauge",
               "Sessions failed because their restart budget was exhausted.",
               lambda s: s.budgets_exhausted),
    MetricSpec("supervisor_admission_handshakes_in_flight", "gauge",
               "Handshakes admitted and not finished.", lambda s: s.admission_in_flight),
    MetricSpec("supervisor_admission_handshakes_waiting", "gauge",
               "Handshakes queued for admission.", lambda s: s.admission_waiting),
    MetricSpec("supervisor_admission_saturated_seconds", "gauge",
               "How long handshakes have queued for admission without a break; 0 if none.",
               lambda s: s.admission_saturated_s),
    MetricSpec("supervisor_events_dropped_total", "counter",
               "Events supervisor.aio iterators dropped because their buffer was full.",
               lambda s: s.events_dropped),
    MetricSpec("supervisor_connect_seconds", "histogram",
               "Handshake time, from its start (admission included) to ready.",
               lambda s: s.connect),
    MetricSpec("supervisor_resume_seconds", "histogram",
               "Resume time, from the first handshake for the new thread to connected.",
               lambda s: s.resume),
)


class Histogram:
    """Counts observations into fixed buckets (not thread-safe: the tap locks)."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def sample(self) -> HistogramSample:
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramSample(tuple(buckets), self._sum, cumulative)


@dataclass(slots=True)
class _Track:
    """What the tap remembers of one session between its lifecycle reports."""

    session: Session | None = None
    last_loss: str | None = None
    """Restart reason label of the latest lost connection, until a restart uses it."""
    resume_started: float | None = None
    """When the first handshake for the pending Resume began."""
    connecting_at: dict[int, float] = field(default_factory=dict)


def reason_label(error_type: str | None) -> str:
    """A restart reason label: the error type in snake case, ``server_closed`` for a clean end."""
    if error_type is None:
        return "server_closed"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", error_type).lower()


class SupervisorTap:
    """Internal: counts lifecycle reports and reads session snapshots for one supervisor.

    ``observe`` runs in session actors' threads; ``sample`` in any thread.
    Neither waits on an actor; both hold one lock for microseconds.
    """

    def __init__(self, admission: Admission | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._admission = admission
        self._clock = clock
        self._lock = new_lock()
        self._tracks: dict[str, _Track] = {}
        self._handshakes = 0
        self._resumes = 0
        self._restarts: Counter[str] = Counter()
        self._events_dropped = 0
        self._retired_stale = 0
        self._retired_malformed = 0
        """Counters of closed (forgotten) sessions, so the totals never go down."""
        self._connect = Histogram()
        self._resume = Histogram()
        self._saturated_since: float | None = None

    # --- feeding (Supervisor.open, session actors, supervisor.aio) ---------------

    def wrap(self, spec: SessionSpec) -> SessionSpec:
        """``spec`` with an ``on_lifecycle`` that reports to this tap, then to the user's."""
        user_callback = spec.on_lifecycle

        def on_lifecycle(report: Lifecycle) -> Any:
            self.observe(report)
            return None if user_callback is None else user_callback(report)

        return replace(spec, on_lifecycle=on_lifecycle)

    def track(self, session: Session) -> None:
        """Count ``session`` in samples until it is closed (``forget``)."""
        with self._lock:
            self._tracks.setdefault(session.id, _Track()).session = session

    def count_events_dropped(self, n: int = 1) -> None:
        with self._lock:
            self._events_dropped += n

    def observe(self, report: Lifecycle) -> None:
        """One lifecycle report from a session's actor.

        A report of a session not tracked (``Supervisor.open`` tracks before
        the actor starts, so: forgotten already) still counts, but leaves no
        track behind.
        """
        now = report.at
        with self._lock:
            track = self._tracks.get(report.session_id) or _Track()
            match report.kind:
                case LifecycleKind.CONNECTING:
                    self._handshakes += 1
                    track.connecting_at = {report.generation: now}
                    if report.cause == "resume":
                        self._resumes += 1
                        if track.resume_started is None:
                            track.resume_started = now
                    elif report.cause == "restart":
                        self._restarts[track.last_loss or CRASH] += 1
                    track.last_loss = None
                case LifecycleKind.CONNECTED:
                    started = track.connecting_at.pop(report.generation, None)
                    total = report.timings.get("total")
                    if total is None and started is not None:
                        total = now - started
                    if total is not None:
                        self._connect.observe(total)
                    if track.resume_started is not None:
                        self._resume.observe(now - track.resume_started)
                        track.resume_started = None
                case LifecycleKind.LOST:
                    track.last_loss = reason_label(report.error)
                case LifecycleKind.CLOSED:
                    self._retire(report.session_id)
                case LifecycleKind.FAILED:
                    track.resume_started = None
            self._note_admission(self._clock())

    def forget(self, session_id: str) -> None:
        """The session is gone for good (closed; or failed, then closed): stop counting it.

        Called on release, which no lifecycle report announces when a failed
        session is closed; a no-op for a session already forgotten.
        """
        with self._lock:
            self._retire(session_id)

    def _retire(self, session_id: str) -> None:
        """Forget a session (lock held); keep its counts in the totals."""
        track = self._tracks.pop(session_id, None)
        if track is not None and track.session is not None:
            state = track.session.state()
            self._retired_stale += state.stale_frames_dropped
            self._retired_malformed += state.malformed_frames

    def _note_admission(self, now: float) -> None:
        if self._admission is None:
            return
        if self._admission.waiting > 0:
            if self._saturated_since is None:
                self._saturated_since = now
        else:
            self._saturated_since = None

    # --- reading --------------------------------------------------------------------

    def sample(self) -> MetricsSample:
        """Counters and a sum over every tracked session's latest snapshot."""
        now = self._clock()
        with self._lock:
            sessions = [t.session for t in self._tracks.values() if t.session is not None]
            self._note_admission(now)
            saturated = 0.0 if self._saturated_since is None else now - self._saturated_since
            counters = (self._handshakes, self._resumes, dict(self._restarts),
                        self._events_dropped, self._retired_stale, self._retired_malformed,
                        self._connect.sample(), self._resume.sample())
        handshakes, resumes, restarts, dropped, stale, malformed, connect, resume = counters
        by_status: Counter[SessionStatus] = Counter(dict.fromkeys(SessionStatus, 0))
        outbox = exhausted = 0
        for session in sessions:  # lock-free reads of published snapshots
            state = session.state()
            by_status[state.status] += 1
            outbox += state.outbox
            stale += state.stale_frames_dropped
            malformed += state.malformed_frames
            if state.status is SessionStatus.FAILED and BUDGET_EXHAUSTED in (state.reason or ""):
                exhausted += 1
        admission = self._admission
        return MetricsSample(
            sessions=dict(by_status), handshakes=handshakes, resumes=resumes,
            restarts=restarts, stale_frames_dropped=stale, malformed_frames=malformed,
            outbox_frames=outbox, budgets_exhausted=exhausted,
            admission_in_flight=0 if admission is None else admission.in_flight,
            admission_waiting=0 if admission is None else admission.waiting,
            admission_saturated_s=saturated, events_dropped=dropped,
            connect=connect, resume=resume)
