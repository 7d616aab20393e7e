"""Metrics, the Prometheus collector and health: counted from lifecycle reports and snapshots.

Pure parts (health verdicts, histograms, saturation) are tested with tables and
an injected clock; the rest against the embedded target in a subprocess, whose
handshake log is the independent count. Marked ``concurrency`` where sessions run.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from chainlit_app.harness import free_port
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import fast_policy, wait_until
from target_process import TargetProcess

from supervisor import Lifecycle, LifecycleKind, SessionSpec, SessionStatus, Supervisor
from supervisor._metrics import (
    METRICS,
    Histogram,
    MetricsSample,
    SupervisorTap,
    reason_label,
)
from supervisor._supervisor_actor import Adopt
from supervisor.errors import SessionClosed
from supervisor.health import HealthThresholds, assess
from supervisor.policy import BUDGET_EXHAUSTED
from supervisor.prometheus import SupervisorCollector

TIMEOUT = 15.0


def sample(**overrides: Any) -> MetricsSample:
    """A sample of an idle supervisor, with ``overrides``."""
    empty = Histogram().sample()
    base = MetricsSample(
        sessions=dict.fromkeys(SessionStatus, 0), handshakes=0, resumes=0, restarts={},
        stale_frames_dropped=0, malformed_frames=0, outbox_frames=0, budgets_exhausted=0,
        admission_in_flight=0, admission_waiting=0, admission_saturated_s=0.0,
        events_dropped=0, connect=empty, resume=empty)
    return replace(base, **overrides)


def statuses(connected: int = 0, backoff: int = 0, failed: int = 0) -> dict[SessionStatus, int]:
    counts = dict.fromkeys(SessionStatus, 0)
    counts.update({SessionStatus.CONNECTED: connected, SessionStatus.BACKOFF: backoff,
                   SessionStatus.FAILED: failed})
    return counts


class TestHealth:
    @pytest.mark.parametrize(("overrides", "healthy", "problem"), [
        ({}, True, None),
        ({"sessions": statuses(connected=9, backoff=1)}, True, None),
        ({"sessions": statuses(connected=8, backoff=2)}, False, "8 of 10 sessions connected"),
        ({"sessions": statuses(connected=10, failed=5)}, True, None),
        ({"budgets_exhausted": 1}, False, "1 sessions exhausted their restart budget"),
        ({"admission_saturated_s": 30.0}, True, None),
        ({"admission_saturated_s": 30.5}, False, "queued for admission for 30.5s"),
    ])
    def test_verdict_table(self, overrides: dict[str, Any], healthy: bool,
                           problem: str | None) -> None:
        """Each threshold, on either side of its default."""
        verdict = assess(sample(**overrides))
        assert verdict.healthy is healthy
        assert (problem is None) == (not verdict.problems)
        if problem is not None:
            assert problem in verdict.problems[0]

    def test_thresholds_are_configurable_and_checked(self) -> None:
        """A service can tolerate more; nonsense thresholds are refused."""
        lenient = HealthThresholds(max_budgets_exhausted=2, min_connected_share=0.5)
        assert assess(sample(budgets_exhausted=2,
                             sessions=statuses(connected=1, backoff=1)), lenient).healthy
        with pytest.raises(ValueError, match="min_connected_share"):
            HealthThresholds(min_connected_share=1.5)


class TestPureParts:
    def test_histogram_is_cumulative_with_inf(self) -> None:
        """Buckets count observations at or below each bound, +Inf all of them."""
        histogram = Histogram((0.1, 1.0))
        for value in (0.05, 0.1, 0.5, 3.0):
            histogram.observe(value)
        result = histogram.sample()
        assert result.buckets == ((0.1, 2), (1.0, 3), (float("inf"), 4))
        assert (result.count, result.sum) == (4, pytest.approx(3.65))

    def test_reason_labels_are_snake_case_error_types(self) -> None:
        """Restart reasons come from the loss's error type: a small, fixed label set."""
        assert reason_label("ConnectionLost") == "connection_lost"
        assert reason_label("HandshakeRefused") == "handshake_refused"
        assert reason_label(None) == "server_closed"

    def test_admission_saturation_is_timed_without_a_break(self) -> None:
        """Saturated time counts from the first sample with waiters; a free moment resets it."""

        class Queue:
            in_flight, waiting = 100, 0

        now = [0.0]
        admission = Queue()
        tap = SupervisorTap(admission, clock=lambda: now[0])  # type: ignore[arg-type]
        admission.waiting = 3
        tap.sample()
        now[0] = 12.5
        assert tap.sample().admission_saturated_s == 12.5
        admission.waiting = 0
        assert tap.sample().admission_saturated_s == 0.0

    def test_metric_names_follow_prometheus_conventions(self) -> None:
        """supervisor_ prefix, base units, _total only on counters, one list of names."""
        names = [spec.name for spec in METRICS]
        assert len(names) == len(set(names))
        for spec in METRICS:
            assert spec.name.startswith("supervisor_")
            assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
            if spec.kind == "histogram":
                assert spec.name.endswith("_seconds")
        required = {"supervisor_sessions", "supervisor_handshakes_total",
                    "supervisor_resumes_total", "supervisor_restarts_total",
                    "supervisor_stale_frames_dropped_total", "supervisor_outbox_frames",
                    "supervisor_connect_seconds", "supervisor_resume_seconds"}
        assert required <= set(names)


    def test_services_doc_lists_every_metric(self) -> None:
        """docs/services.md's table names exactly the metrics METRICS exports."""
        doc = (Path(__file__).parent.parent / "docs" / "services.md").read_text()
        listed = set(re.findall(r"^\| `(supervisor_[a-z_]+)", doc, flags=re.MULTILINE))
        assert listed == {spec.name for spec in METRICS}


class EndsAtOnce:
    """Stands in for the supervisor actor: the adopted session ends before open() returns."""

    def tell(self, message: Adopt) -> None:
        message.record.retire(SessionClosed("closed at once"), None, SessionStatus.CLOSED)


class TestTapBookkeeping:
    def test_a_session_ended_before_open_returns_leaves_no_track(self) -> None:
        """A CLOSED report that beats open()'s return is not followed by a lasting track."""
        with Supervisor.start() as sup:
            actor, sup._ref = sup._ref, EndsAtOnce()  # type: ignore[assignment]
            try:
                session = sup.open(SessionSpec(url="ws://127.0.0.1:9/"))
            finally:
                sup._ref = actor
            assert session.state().status is SessionStatus.CLOSED
            assert sup._tap._tracks == {}
            assert sum(sup.metrics().sessions.values()) == 0

    def test_a_report_of_a_forgotten_session_leaves_no_track(self) -> None:
        """A late report of a forgotten session is counted but re-creates no track."""
        tap = SupervisorTap()
        tap.observe(Lifecycle("gone", LifecycleKind.CONNECTING, None, 1, 0.0, cause="open"))
        assert tap._tracks == {}
        assert tap.sample().handshakes == 1


def scrape(sup: Supervisor) -> dict[str, Any]:
    """The exposition text of a collector, parsed back: family name -> family."""
    registry = CollectorRegistry()
    registry.register(SupervisorCollector(sup))
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    for family in families.values():
        for metric in family.samples:
            if metric.name == name and all(metric.labels.get(k) == v for k, v in labels.items()):
                return float(metric.value)
    msg = f"no sample {name} {labels}"
    raise KeyError(msg)


@pytest.fixture(scope="module")
def target() -> Iterator[TargetProcess]:
    """The embedded target in a subprocess; every turn ends with a dropped connection."""
    with TargetProcess("--drop-probability", "1", "--drop-when", "after_reply") as running:
        yield running


def chainlit(url: str, thread_id: str | None = None, **extra: Any) -> SessionSpec:
    return SessionSpec(url=url, protocol="chainlit", chainlit_version="2", thread_id=thread_id,
                       connect_timeout=TIMEOUT, **extra)


@pytest.mark.concurrency
class TestCollector:
    def test_scrape_agrees_with_state_and_the_target_log(self, target: TargetProcess) -> None:
        """Handshakes, resumes, restarts and sessions match state() and the server's log."""
        causes: list[str | None] = []
        connected = threading.Semaphore(0)

        def note(report: Lifecycle) -> None:
            if report.kind is LifecycleKind.CONNECTING:
                causes.append(report.cause)
            elif report.kind is LifecycleKind.CONNECTED:
                connected.release()

        threads = [str(uuid.uuid4()) for _ in range(3)]
        before = len(target.handshakes())
        with Supervisor.start(fast_policy()) as sup:
            sessions = [sup.open(chainlit(target.url, t, on_lifecycle=note)) for t in threads]
            for _ in sessions:
                assert connected.acquire(timeout=TIMEOUT)
            resumed = [str(uuid.uuid4()) for _ in sessions]
            for session, thread_id in zip(sessions, resumed, strict=True):
                session.resume(thread_id).get(timeout=TIMEOUT)
            # The target drops the connection after the reply: one restart each.
            sessions[0].chat("hello").get(timeout=TIMEOUT)
            wait_until(lambda: sessions[0].state().restarts == 1, TIMEOUT, "a restart")
            wait_until(lambda: sessions[0].state().status is SessionStatus.CONNECTED, TIMEOUT,
                       "the reconnect")
            families = scrape(sup)
            states = [s.state() for s in sessions]
            logged = target.handshakes()[before:]
        assert causes.count("open") == 3
        assert causes.count("resume") == 3
        assert causes.count("restart") == 1
        assert value(families, "supervisor_handshakes_total") == sum(s.handshakes for s in states)
        assert value(families, "supervisor_handshakes_total") == len(logged) == 7
        assert value(families, "supervisor_resumes_total") == 3
        assert value(families, "supervisor_restarts_total", reason="connection_lost") == 1
        assert value(families, "supervisor_sessions", status="connected") == 3
        assert value(families, "supervisor_sessions", status="backoff") == 0
        assert value(families, "supervisor_connect_seconds_count") == 7
        assert value(families, "supervisor_resume_seconds_count") == 3
        assert value(families, "supervisor_outbox_frames") == sum(s.outbox for s in states)
        assert families["supervisor_connect_seconds"].type == "histogram"
        assert families["supervisor_restarts"].type == "counter"

    def test_closed_sessions_leave_the_gauge_but_not_the_counters(
            self, target: TargetProcess) -> None:
        """A closed session is forgotten by supervisor_sessions; totals never go down."""
        with Supervisor.start(fast_policy()) as sup:
            session = sup.open(chainlit(target.url, str(uuid.uuid4())))
            session.resume(str(uuid.uuid4())).get(timeout=TIMEOUT)
            before = scrape(sup)
            session.close().get(timeout=TIMEOUT)
            after = scrape(sup)
        assert value(before, "supervisor_sessions", status="connected") == 1
        assert value(after, "supervisor_sessions", status="connected") == 0
        assert value(after, "supervisor_handshakes_total") == value(
            before, "supervisor_handshakes_total") == 2

    def test_exhausted_budget_is_counted_and_unhealthy(self) -> None:
        """A session whose server is gone fails by budget; metrics and health say so."""
        port = free_port()  # a port that refuses: nothing listens on it
        with Supervisor.start(fast_policy(max_restarts=1)) as sup:
            session = sup.open(SessionSpec(url=f"ws://127.0.0.1:{port}/", connect_timeout=5))
            wait_until(lambda: session.state().status is SessionStatus.FAILED, TIMEOUT, "failure")
            assert BUDGET_EXHAUSTED in (session.state().reason or "")
            health = sup.health()
            families = scrape(sup)
        assert value(families, "supervisor_budgets_exhausted") == 1
        assert value(families, "supervisor_restarts_total", reason="handshake_error") == 1
        assert not health.healthy
        assert "restart budget" in health.problems[0]

    def test_closing_a_failed_session_forgets_it(self) -> None:
        """Closing a session failed by its budget empties the failed gauge; health recovers."""
        port = free_port()  # a port that refuses: nothing listens on it
        with Supervisor.start(fast_policy(max_restarts=1)) as sup:
            session = sup.open(SessionSpec(url=f"ws://127.0.0.1:{port}/", connect_timeout=5))
            wait_until(lambda: session.state().status is SessionStatus.FAILED, TIMEOUT, "failure")
            assert not sup.health().healthy
            session.close().get(timeout=TIMEOUT)
            health = sup.health()
            families = scrape(sup)
            tracked = set(sup._tap._tracks)
        assert health.healthy, health.problems
        assert value(families, "supervisor_budgets_exhausted") == 0
        assert value(families, "supervisor_sessions", status="failed") == 0
        assert value(families, "supervisor_restarts_total", reason="handshake_error") == 1
        assert session.id not in tracked
