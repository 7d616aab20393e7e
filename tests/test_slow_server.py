"""A slow server makes sessions slower, not dead: load-test admission options, the report,
and a slow handshake reported as server latency, not as a protocol mismatch."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
from test_cli import read_report, supervisor
from test_loadtest import FakeClock, config_of

from supervisor import Lifecycle, LifecycleKind
from supervisor._machine import handshake_overdue
from supervisor.loadtest.driver import Driver, RunContext
from supervisor.loadtest.metrics import Metrics
from supervisor.loadtest.progress import saturation_line
from supervisor.loadtest.verdict import classify


class TestAdmissionOptions:
    """--max-handshakes-in-flight and --max-handshakes-per-second, in every layer."""

    @pytest.mark.parametrize(("args", "limits"), [
        ((), (100, 500.0)),  # 100 sessions at 20/s, a switch each 5 s: 40/s offered
        (("--sessions", "5000", "--spawn-rate", "500"), (5000, 3000.0)),  # 500 + 1,000/s
        (("--sessions", "5000", "--spawn-rate", "500", "--threads-per-session", "1"),
         (5000, 1000.0)),  # no thread switches
        (("--sessions", "5000", "--spawn-rate", "500", "--resume-every", "0"), (5000, 1000.0)),
        (("--stages", "10s:1000,20s:1000,5s:0"), (1000, 600.0)),  # 100/s + 200/s
        (("--sessions", "5000", "--max-handshakes-in-flight", "50"), (50, 2040.0)),
        (("--sessions", "5000", "--max-handshakes-per-second", "7"), (5000, 7.0)),
    ])
    def test_defaults_follow_the_load_shape(self, args: tuple[str, ...],
                                            limits: tuple[int, float]) -> None:
        """Without options admission holds no handshake of the shape back: as many in
        flight as sessions, twice what the shape starts a second (at least 500)."""
        config = config_of(*args)
        assert config.admission_limits == limits
        assert config.connect_timeout == 30.0

    def test_flags_environment_and_file(self, tmp_path: Path) -> None:
        """The file spells them as the flags do; the environment and flags override it."""
        path = tmp_path / "load.toml"
        path.write_text('[loadtest]\nmax-handshakes-in-flight = 7\n'
                        "max_handshakes_per_second = 3.5\n")
        config = config_of("--config", str(path))
        assert config.admission_limits == (7, 3.5)
        config = config_of("--config", str(path), "--max-handshakes-per-second", "9",
                           environ={"SUPERVISOR_MAX_HANDSHAKES_IN_FLIGHT": "8"})
        assert config.admission_limits == (8, 9.0)
        assert config.settings()["max_handshakes_in_flight"] == 8


class TestNeverConnected:
    """Who counts as failed at the end: a failed handshake, not time spent queued."""

    def test_queued_sessions_are_not_failures(self) -> None:
        """Never connected and no handshake failed: still connecting, not failed."""
        clock = FakeClock()
        metrics = Metrics(3, clock=clock)
        for sid in ("a", "b", "c"):
            metrics.session_started(sid)
        metrics.session_connected("a")
        metrics.session_handshake_failed("c")
        clock.now += 60.0  # far beyond any connect timeout
        assert metrics.settle_never_connected() == 1
        figures = metrics.session_figures()
        assert (figures["failed"], figures["connecting_end"]) == (1, 1)
        assert metrics.errors() == {"session_never_connected": 1}

    def test_connects_after_the_end_do_not_count(self) -> None:
        """Handshakes finishing while the sessions close add neither to the peak nor to
        the sessions that connected."""
        metrics = Metrics(2, clock=FakeClock())
        metrics.session_started("a")
        metrics.session_started("b")
        metrics.session_connected("a")
        metrics.freeze_sessions()
        metrics.session_connected("b")
        metrics.session_handshake_failed("b")
        assert metrics.settle_never_connected() == 1
        figures = metrics.session_figures()
        assert (figures["connected_peak"], figures["failed"]) == (1, 1)

    def test_everyone_fails_when_nothing_connected(self) -> None:
        """A run where no session connected counts every one of them as failed."""
        metrics = Metrics(2, clock=FakeClock())
        metrics.session_started("a")
        metrics.session_started("b")
        assert metrics.settle_never_connected(everyone=True) == 2
        assert metrics.session_figures()["failed"] == 2

    def test_the_summary_names_the_sessions_still_connecting(self) -> None:
        """The text report's server line gives the latencies and who still waited."""
        line = saturation_line({"handshake_ms": {"p50": 412.0, "p99": 2100.0},
                                "first_token_ms": {"p50": 900.0, "p99": None},
                                "admission_wait_ms": {"p50": 3.0, "p99": 12500.0},
                                "max_handshakes_in_flight": 200,
                                "max_handshakes_per_second": 500.0, "connecting_end": 4})
        assert line == ("handshake p50 412 / p99 2,100 ms, first token p50 900 / p99 - ms; "
                        "admission wait p50 3.00 / p99 12,500 ms (limits 200 in flight, "
                        "500/s); 4 sessions still connecting at the end (slowed, not failed)")


class TestSlowServer:
    """End to end: sessions queued for admission longer than --connect-timeout."""

    def test_sessions_queued_past_the_connect_timeout_are_slowed_not_failed(
            self, tmp_path: Path) -> None:
        """One upgrade at a time, each 0.5 s (/ws/echo): queued past 1 s, none failed."""
        report_path = tmp_path / "report.json"
        result = supervisor("loadtest", "--protocol", "websocket", "--sessions", "12",
                            "--spawn-rate", "100",
                            "--duration", "4", "--connect-timeout", "1",
                            "--max-handshakes-in-flight", "1", "--resume-every", "0",
                            "--target-option", "handshake_delay=0.5", "--quiet",
                            "--json", str(report_path))
        report = read_report(report_path)
        assert result.returncode == 0, result.stderr + result.stdout[-3000:]
        sessions, saturation = report["sessions"], report["saturation"]
        assert sessions["failed"] == 0
        assert sessions["connected_peak"] >= 2
        assert sessions["connecting_end"] >= 1  # 12 x 0.5 s do not fit in 4 s
        assert sessions["connected_peak"] + sessions["connecting_end"] == 12
        # Queued longer than the connect timeout, and still not a failure:
        assert saturation["admission_wait_ms"]["max"] > 1000
        assert saturation["handshake_ms"]["p50"] >= 500
        assert saturation["max_handshakes_in_flight"] == 1
        assert report["counts"]["errors"] == {}
        assert "still connecting at the end" in result.stdout


class TestSlowHandshakeHint:
    """'Is the protocol right?' only on evidence of a mismatch; slowness is server latency."""

    @pytest.mark.parametrize(("phases", "protocol", "says", "cause"), [
        ({}, "chainlit", "no WebSocket upgrade within 10s", "timeout"),
        ({}, "websocket", "no WebSocket upgrade within 10s", "timeout"),
        ({"upgrade": 0.1}, "socketio", "is the protocol right for this server?", "protocol"),
        ({"upgrade": 0.1}, "chainlit", "is the protocol right for this server?", "protocol"),
        ({"upgrade": 0.1, "open": 0.2}, "chainlit", "did not finish the connect", "timeout"),
        ({"upgrade": 0.1, "open": 0.2, "namespace": 3.0}, "chainlit",
         "did not finish the connect", "timeout"),
    ])
    def test_the_phases_reached_decide_the_message(self, phases: dict[str, float],
                                                   protocol: str, says: str,
                                                   cause: str) -> None:
        """The message follows the last phase reached, and the verdict reads it right."""
        message = handshake_overdue(10.0, phases, protocol)
        assert says in message
        assert ("protocol right" in message) == (cause == "protocol")
        assert classify(f"HandshakeError: {message}") == cause


class TestConnectedThroughAResume:
    """connected_peak: a session holds a connection through a thread switch, old or new."""

    @staticmethod
    def driver() -> tuple[Driver, Metrics]:
        metrics = Metrics(1, clock=FakeClock())
        supervisor: Any = None  # the callbacks under test never reach it
        ctx = RunContext(config_of(), metrics, supervisor, "ws://127.0.0.1:1/ws",
                         threading.Event(), float("inf"), lambda _n: {})
        return Driver(ctx, 1, random.Random(1)), metrics

    @staticmethod
    def event(kind: LifecycleKind, generation: int, cause: str | None = None,
              **timings: float) -> Lifecycle:
        return Lifecycle("lt00001", kind, "t", generation, 0.0, cause=cause,
                         error="HandshakeError" if kind is LifecycleKind.LOST else None,
                         reason="lost" if kind is LifecycleKind.LOST else None,
                         timings=timings)

    def test_any_resume_keeps_the_session_connected(self) -> None:
        """Through every resume, even one the driver did not ask for; a loss ends it."""
        driver, metrics = self.driver()
        steps = [
            (self.event(LifecycleKind.CONNECTING, 1, "open"), 0),
            (self.event(LifecycleKind.CONNECTED, 1, total=0.2, admission=0.05), 1),
            (self.event(LifecycleKind.CONNECTING, 2, "resume"), 1),
            (self.event(LifecycleKind.CONNECTED, 2, total=0.1), 1),
            (self.event(LifecycleKind.LOST, 2), 0),
            (self.event(LifecycleKind.CONNECTING, 3, "restart"), 0),
            (self.event(LifecycleKind.CONNECTED, 3, total=0.1), 1),
            (self.event(LifecycleKind.CONNECTING, 4, "resume"), 1),
            (self.event(LifecycleKind.LOST, 4), 0),  # the switch failed: nothing is open
        ]
        seen = []
        for event, _ in steps:
            driver.on_lifecycle(event)
            seen.append(metrics.connected_now())
        assert seen == [expected for _, expected in steps]
        assert metrics.session_figures()["connected_peak"] == 1
        latencies = metrics.latencies()
        assert (latencies["admission_wait"]["count"], latencies["handshake"]["count"]) == (1, 1)
        assert latencies["handshake"]["p50"] == pytest.approx(150.0, rel=1e-3)  # 3 digits
