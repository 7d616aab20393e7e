"""Load-test internals: option layers and validation, metrics, the report's shape."""

from __future__ import annotations

import io
import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from supervisor.cli import build_parser, requested_runtime
from supervisor.loadtest.config import LoadTestConfig, resolve
from supervisor.loadtest.driver import CONNECTS_KEPT, Driver, RunContext
from supervisor.loadtest.metrics import (
    LATENCIES,
    Metrics,
    mean_value,
    new_histogram,
    percentile_values,
    summarize,
    to_micros,
)
from supervisor.loadtest.progress import plain_line, summary
from supervisor.loadtest.report import RunFacts, build_report, csv_rows, error_rate, write_csv
from supervisor.loadtest.target import embedded_arguments, session_url
from supervisor.loadtest.values import ConfigError
from supervisor.messages import Lifecycle, LifecycleKind


def config_of(*args: str, environ: dict[str, str] | None = None) -> LoadTestConfig:
    """Resolve ``supervisor loadtest ARGS`` with only the given environment."""
    namespace = build_parser().parse_args(["loadtest", *args])
    return resolve(namespace, environ or {})


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestDefaults:
    """What ``supervisor loadtest`` with no arguments runs."""

    def test_defaults_are_a_short_chainlit_test_of_the_embedded_target(self) -> None:
        """No arguments: embedded target, chainlit, 100 sessions at 20/s for 20 s."""
        config = config_of()
        assert config.embedded
        assert (config.protocol, config.sessions, config.spawn_rate, config.duration) == (
            "chainlit", 100, 20.0, 20.0)
        assert (config.threads_per_session, config.resume_every, config.turns) == (2, 5.0, 0)
        assert (config.think_time, config.message, config.runtime) == (1.0, "hello", "threads")

    def test_settings_record_every_option_with_secrets_redacted(self) -> None:
        """The report's settings hold every option, never a password or secret."""
        settings = config_of("--login", "alice:pw", "--jwt-secret", "x" * 40).settings()
        assert settings["login"] == "alice:[redacted]"
        assert settings["jwt_secret"] == "[redacted]"
        assert "pw" not in json.dumps(settings).replace("[redacted]", "")
        assert {"sessions", "spawn_rate", "duration", "fail_on_error_rate"} <= set(settings)


class TestPrecedence:
    """Defaults < config file < environment < flags."""

    @pytest.fixture
    def config_file(self, tmp_path: Path) -> str:
        path = tmp_path / "load.toml"
        path.write_text('[loadtest]\nsessions = 7\nspawn_rate = 3.5\n"think-time" = 0.25\n'
                        'target-option = ["token_delay=0.01"]\n')
        return str(path)

    def test_file_overrides_defaults_with_dashes_or_underscores(self, config_file: str) -> None:
        """Keys may be spelled spawn_rate or think-time."""
        config = config_of("--config", config_file)
        assert (config.sessions, config.spawn_rate, config.think_time) == (7, 3.5, 0.25)
        assert config.target_option == ("token_delay=0.01",)

    def test_environment_overrides_the_file(self, config_file: str) -> None:
        """SUPERVISOR_SESSIONS beats the file; the file still fills the rest."""
        config = config_of("--config", config_file, environ={"SUPERVISOR_SESSIONS": "8"})
        assert (config.sessions, config.spawn_rate) == (8, 3.5)

    def test_flags_override_the_environment(self, config_file: str) -> None:
        """A flag beats both the environment and the file."""
        config = config_of("--config", config_file, "--sessions", "9",
                           environ={"SUPERVISOR_SESSIONS": "8"})
        assert config.sessions == 9

    def test_config_path_may_come_from_the_environment(self, config_file: str) -> None:
        """SUPERVISOR_CONFIG names the file when --config is absent."""
        assert config_of(environ={"SUPERVISOR_CONFIG": config_file}).sessions == 7

    def test_runtime_is_found_before_parsing_in_the_same_order(self, config_file: str,
                                                               tmp_path: Path) -> None:
        """The early gevent check honours flag > environment > file, loadtest only."""
        gevent_file = tmp_path / "g.toml"
        gevent_file.write_text('[loadtest]\nruntime = "gevent"\n')
        assert requested_runtime(["loadtest", "--config", str(gevent_file)], {}) == "gevent"
        assert requested_runtime(["loadtest", "--config", str(gevent_file)],
                                 {"SUPERVISOR_RUNTIME": "threads"}) == "threads"
        assert requested_runtime(["loadtest", "--runtime=gevent"],
                                 {"SUPERVISOR_RUNTIME": "threads"}) == "gevent"
        assert requested_runtime(["target", "--runtime", "gevent"], {}) == "threads"


class TestValidation:
    """Bad values fail once, before anything runs, naming their source and the fix."""

    @pytest.mark.parametrize(("args", "fragment"), [
        (["--sessions", "0"], "--sessions must be a whole number of 1 or more"),
        (["--sessions", "-3"], "--sessions must be a whole number of 1 or more"),
        (["--sessions", "many"], "--sessions must be a whole number"),
        (["--duration", "0"], "--duration must be a duration above 0s"),
        (["--spawn-rate", "nan"], "--spawn-rate must be a finite number"),
        (["--think-time", "-1"], "--think-time must be a duration of 0s or more"),
        (["--protocol", "http"], "--protocol must be one of chainlit, socketio, websocket"),
        (["--target", "not-a-url"], "--target must be an http, https, ws or wss URL"),
        (["--target", "http://host:99999"], "--target has an invalid port"),
        (["--fail-on-error-rate", "5"], "--fail-on-error-rate must be within 0 and 1"),
        (["--login", ":pw"], "--login must be USER:PASSWORD"),
        (["--login", "alice"], "has no password"),
        (["--target", "http://h:1", "--target-option", "token_delay=1"], "embedded target"),
        (["--json", "/no/such/dir/r.json"], "does not exist"),
    ])
    def test_bad_values_raise_config_error(self, args: list[str], fragment: str) -> None:
        """Each bad value gives one ConfigError whose message says what and how to fix it."""
        with pytest.raises(ConfigError) as caught:
            config_of(*args)
        assert fragment in str(caught.value)
        assert caught.value.fix

    def test_environment_errors_name_the_variable(self) -> None:
        """A bad environment value is reported under its variable's name."""
        with pytest.raises(ConfigError, match="SUPERVISOR_SESSIONS must be a whole number"):
            config_of(environ={"SUPERVISOR_SESSIONS": "lots"})

    @pytest.mark.parametrize(("content", "fragment"), [
        ("[loadtest]\nsesions = 3\n", "unknown option 'sesions'"),
        ("sessions = 3\n", "has no [loadtest] table"),
        ("[loadtest\n", "is not valid TOML"),
        ("[loadtest]\nsessions = 0\n", "sessions in"),
    ])
    def test_config_file_errors(self, tmp_path: Path, content: str, fragment: str) -> None:
        """Typos, a missing table, bad TOML and bad values in the file are all reported."""
        path = tmp_path / "bad.toml"
        path.write_text(content)
        with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
            config_of("--config", str(path))

    def test_login_placeholder_gives_each_session_its_user(self) -> None:
        """{n} becomes the session's 1-based number in the user and the password."""
        login = config_of("--login", "user{n}:pw-{n}").login
        assert login is not None
        assert login.for_session(3) == ("user3", "pw-3")

    def test_socketio_defaults_follow_the_target(self) -> None:
        """socketio turns send Chainlit messages to the embedded target, 'message' elsewhere."""
        embedded = config_of("--protocol", "socketio")
        assert (embedded.emit_event, embedded.reply_event) == ("client_message", "task_end")
        remote = config_of("--protocol", "socketio", "--target", "http://127.0.0.1:9")
        assert (remote.emit_event, remote.reply_event) == ("message", None)


class TestTargetWiring:
    """--target-option items become 'supervisor target' arguments, checked by its parser."""

    def test_options_translate_to_target_flags(self) -> None:
        """Boolean options become flags, others NAME VALUE; the seed and secret follow along."""
        config = config_of("--target-option", "require_login", "--target-option",
                           "token_delay=0.01", "--seed", "7")
        argv = embedded_arguments(config)
        assert "--require-login" in argv
        assert argv[argv.index("--token-delay") + 1] == "0.01"
        assert argv[argv.index("--seed") + 1] == "7"

    @pytest.mark.parametrize("item", ["no_such=1", "token_delay=fast", "port=80",
                                      "drop_probability=2"])
    def test_bad_target_options_fail_before_starting(self, item: str) -> None:
        """Unknown names, bad values and options the load test owns are refused."""
        with pytest.raises(ConfigError, match="--target-option"):
            embedded_arguments(config_of("--target-option", item))

    def test_session_urls_per_protocol(self) -> None:
        """websocket: ws:// and the echo path; socketio: the Engine.IO path; chainlit: the base."""
        base = "http://127.0.0.1:8000"
        assert session_url(config_of(), base) == base
        assert session_url(config_of("--protocol", "websocket"), base) == (
            "ws://127.0.0.1:8000/ws/echo")
        assert session_url(config_of("--protocol", "socketio"), base) == base + "/ws/socket.io"
        remote = config_of("--protocol", "websocket", "--target", "https://h/chat")
        assert session_url(remote, "https://h/chat") == "wss://h/chat"


class TestHistograms:
    """HDR histograms summarised in milliseconds."""

    def test_percentiles_of_a_known_set(self) -> None:
        """1..1000 ms: p50 500, p90 900, p99 990, p99.9 999, max 1000, within HDR precision."""
        histogram = new_histogram()
        for millis in range(1, 1001):
            histogram.record_value(to_micros(millis / 1000))
        figures = summarize(histogram)
        assert figures["count"] == 1000
        for key, expected in (("p50", 500), ("p90", 900), ("p99", 990), ("p99.9", 999),
                              ("max", 1000), ("mean", 500.5)):
            assert figures[key] == pytest.approx(expected, rel=2e-3), key

    @pytest.mark.parametrize("shape", ["one", "two", "spread", "edges", "clustered"])
    def test_fast_readers_agree_with_hdrh(self, shape: str) -> None:
        """Percentiles and the mean, read at C speed, are exactly hdrh's own readings."""
        rng = random.Random(shape)
        draws = {
            "one": lambda: 1,
            "two": lambda: rng.choice((7, 3_000_000)),
            "spread": lambda: rng.randint(1, 3_600_000_000),
            "edges": lambda: rng.choice((1, 2047, 2048, 2049, 3_600_000_000)),
            "clustered": lambda: int(rng.lognormvariate(11, 1.5)) + 1,
        }[shape]
        histogram = new_histogram()
        for _ in range(rng.choice((1, 3, 5_000))):
            histogram.record_value(min(to_micros(3600), draws()))
        wanted = [0.1, 50.0, 90.0, 99.0, 99.9, 100.0]
        assert percentile_values(histogram, wanted) == \
            histogram.get_percentile_to_value_dict(wanted)
        assert mean_value(histogram) == pytest.approx(histogram.get_mean_value(), rel=1e-12)

    def test_no_samples_give_nulls_not_zeros(self) -> None:
        """A metric that never happened reports count 0 and null figures."""
        assert summarize(new_histogram()) == {"count": 0, "p50": None, "p90": None, "p99": None,
                                              "p99.9": None, "max": None, "mean": None}

    def test_values_are_clamped_into_range(self) -> None:
        """Zero and absurdly long latencies are kept (clamped), never dropped."""
        assert to_micros(0.0) == 1
        assert to_micros(1e9) == 3_600_000_000


class TestMetrics:
    """Counters, sessions and the interval series."""

    def test_intervals_hold_deltas_and_their_own_percentiles(self) -> None:
        """Each interval counts only its own events and has its own p50/p99."""
        clock = FakeClock()
        metrics = Metrics(requested=2, clock=clock)
        metrics.count("turns", 3)
        for millis in (10, 20, 30):
            metrics.record("turn", millis / 1000)
        clock.now += 1.0
        first = metrics.roll()
        metrics.count("turns", 1)
        clock.now += 1.0
        second = metrics.roll()
        assert (first["t"], first["turns"], second["t"], second["turns"]) == (1.0, 3, 2.0, 1)
        assert first["latency_ms"]["turn"]["p50"] == pytest.approx(20, rel=2e-3)
        assert second["latency_ms"]["turn"] == {"p50": None, "p99": None}
        assert metrics.latencies()["turn"]["count"] == 3

    def test_session_book(self) -> None:
        """Peak, current, and failed = given up on + never connected."""
        metrics = Metrics(requested=3, clock=FakeClock())
        for _ in range(3):
            metrics.session_started()
        metrics.session_connected("a")
        metrics.session_connected("b")
        metrics.session_disconnected("b")
        metrics.session_failed("c", "refused")
        figures = metrics.session_figures()
        assert figures == {"started": 3, "connected_peak": 2, "connected": 1, "failed": 1,
                           "gave_up": 1, "connecting_end": 0}
        assert metrics.first_failure == "refused"

    def test_sessions_still_connecting_at_the_end_are_not_failures(self) -> None:
        """Never connected: failed after a failed handshake, else still connecting (cut)."""
        clock = FakeClock()
        metrics = Metrics(requested=3, clock=clock)
        metrics.session_started("tried")
        metrics.session_handshake_failed("tried")
        metrics.session_started("queued")
        metrics.session_started("retired")
        metrics.session_retired("retired")
        clock.now += 30.0
        assert metrics.settle_never_connected() == 1
        assert metrics.session_figures()["failed"] == 1
        assert metrics.session_figures()["connecting_end"] == 1
        assert metrics.error_details()["session_never_connected"]["count"] == 1

    def test_reconnect_reasons_are_bounded(self) -> None:
        """Past 20 distinct reasons, the rest count as 'other'."""
        metrics = Metrics(requested=1)
        for index in range(25):
            metrics.reconnect(f"reason {index}")
        reasons = metrics.reasons()
        assert len(reasons) == 21
        assert reasons["other"] == 5


def sample_report(**overrides: Any) -> dict[str, Any]:
    """A report built from a small hand-fed run."""
    clock = FakeClock()
    metrics = Metrics(requested=2, clock=clock)
    metrics.session_started("a")
    metrics.session_started("b")
    metrics.session_connected("a")
    metrics.count("turns", 9)
    metrics.count("turns_failed", 1)
    clock.now += 0.5
    metrics.error("turn_timeout", "no reply within 30s")
    metrics.record("first_token", 0.005)
    clock.now += 0.5
    metrics.roll()
    metrics.session_handshake_failed("b")
    metrics.settle_never_connected()  # "b": one failed session
    config = config_of(*overrides.get("args", ()))
    facts = RunFacts("http://127.0.0.1:1", "2026-01-01T00:00:00+00:00", 1.0, 1, 0, False,
                     None, "duration")
    return build_report(config, metrics, facts)


class TestReport:
    """The report dict, its error rate, CSV and summary."""

    def test_report_has_the_documented_keys(self) -> None:
        """Top-level and nested keys that the HTML report and users rely on."""
        report = sample_report()
        assert {"version", "settings", "target", "started_at", "duration_s", "sessions",
                "counts", "rates", "latency_ms", "intervals", "resources", "exit"} <= set(report)
        assert {"requested", "connected_peak", "connected_end", "failed"} <= set(
            report["sessions"])
        assert {"handshakes", "resumes", "messages_sent", "replies", "turns", "restarts",
                "reconnects_by_reason", "stale_frames_dropped", "errors"} <= set(report["counts"])
        assert set(report["latency_ms"]) == set(LATENCIES)
        assert {"turns_per_s", "messages_per_s", "resumes_per_s", "handshakes_per_s"} == set(
            report["rates"])
        assert {"rss_peak_mib", "runtime", "python"} <= set(report["resources"])
        json.dumps(report)  # serialisable as is

    def test_error_rate_is_failed_over_attempted(self) -> None:
        """(1 failed turn + 1 failed session) / (10 attempted turns + 2 sessions)."""
        report = sample_report()
        assert report["exit"]["error_rate"] == pytest.approx(2 / 12, abs=1e-6)
        assert report["errors"]["ratio"] == report["exit"]["error_rate"]
        assert (report["errors"]["count"], report["errors"]["operations"]) == (2, 12)
        assert error_rate(0, 0) == 0.0

    def test_threshold_decides_passed(self) -> None:
        """--fail-on-error-rate below the rate fails the run (status 1); above it passes."""
        failed = sample_report(args=("--fail-on-error-rate", "0.1"))
        assert (failed["exit"]["passed"], failed["exit"]["status"]) == (False, 1)
        assert failed["thresholds"] == [{"expression": "errors.ratio<=0.1",
                                         "value": pytest.approx(2 / 12, abs=1e-6),
                                         "unit": "ratio", "ok": False}]
        passed = sample_report(args=("--fail-on-error-rate", "0.5"))
        assert (passed["exit"]["passed"], passed["exit"]["status"]) == (True, 0)

    def test_error_details_per_kind(self) -> None:
        """Each kind has its count, a sample message, and when it was first and last seen."""
        by_kind = sample_report()["errors"]["by_kind"]
        assert by_kind["turn_timeout"] == {"count": 1, "message": "no reply within 30s",
                                           "first_seen_s": 0.5, "last_seen_s": 0.5}
        assert by_kind["session_never_connected"]["count"] == 1

    def test_csv_has_one_row_per_interval(self, tmp_path: Path) -> None:
        """Flattened columns: counts, then p50/p99 per latency."""
        report = sample_report()
        header, rows = csv_rows(report)
        assert len(rows) == len(report["intervals"]) == 1
        assert "first_token_p50_ms" in header
        # errors by kind over time: one column per kind, this interval's count
        assert rows[0][header.index("errors.turn_timeout")] == 1
        path = tmp_path / "r.csv"
        write_csv(report, str(path))
        assert path.read_text().splitlines()[0] == ",".join(header)

    def test_summary_and_progress_lines_render(self) -> None:
        """The summary table and the plain progress line show the key figures."""
        from rich.console import Console  # noqa: PLC0415

        buffer = io.StringIO()
        Console(file=buffer, width=120).print(summary(sample_report()))
        text = buffer.getvalue()
        assert "latency (ms)" in text
        assert "first_token" in text
        assert "turn_timeout: 1" in text
        assert "no reply within 30s" in text  # the error details table
        assert "✓ │ errors.ratio<=0.01" not in text
        assert "✗ │ errors.ratio<=0.01 │   16.67%" in text
        line = plain_line(Metrics(requested=5).snapshot(), 20.0)
        assert "sessions 0/5 connected" in line


@pytest.mark.concurrency
class TestDriverWaits:
    """A driver sleeps until its next turn or resume, with no polling: the run's end
    (the runner wakes every driver) and retirement cut the sleep short."""

    @staticmethod
    def driver() -> Driver:
        supervisor: Any = None  # pausing never reaches it
        ctx = RunContext(config_of(), Metrics(1, clock=FakeClock()), supervisor,
                         "ws://127.0.0.1:1/ws", threading.Event(), float("inf"), lambda _n: {})
        return Driver(ctx, 1, random.Random(1))

    @pytest.mark.parametrize("how", ["wake", "retire"])
    def test_an_hour_long_pause_ends_when_woken(self, how: str) -> None:
        driver = self.driver()
        returned = threading.Event()

        def sleep_an_hour() -> None:
            driver.pause(3600.0)
            returned.set()

        threading.Thread(target=sleep_an_hour, daemon=True).start()
        assert not returned.wait(0.05)  # it does sleep
        getattr(driver, how)()
        assert returned.wait(10.0)
        assert driver.ending == (how == "retire")  # wake() follows the run's own end

    def test_a_pause_after_the_wake_returns_at_once(self) -> None:
        """A wake that came before the pause is not lost."""
        driver = self.driver()
        driver.wake()
        returned = threading.Event()
        threading.Thread(target=lambda: (driver.pause(3600.0), returned.set()),
                         daemon=True).start()
        assert returned.wait(10.0)


class TestDriverRecords:
    """What a driver keeps about its session stays bounded however long the run."""

    def test_the_record_of_connects_stays_bounded(self) -> None:
        """A thread switch every few seconds for hours: the driver keeps the latest
        connects only, and still knows the current one (a loss of it is a lost
        connection, not a failed handshake)."""
        driver = TestDriverWaits.driver()
        for generation in range(1, 10_001):
            driver.on_lifecycle(Lifecycle(driver.session_id, LifecycleKind.CONNECTED, "t",
                                          generation, float(generation)))
        assert len(driver._connected) == CONNECTS_KEPT
        assert 10_000 in driver._connected
        assert driver.ctx.metrics.counts()["connects"] == 10_000
