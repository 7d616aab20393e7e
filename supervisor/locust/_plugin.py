"""Wiring into Locust's events: options, worker reports, the master's merge, the report.

- Every process: ``init_command_line_parser`` adds our options.
- A worker: ``report_to_master`` adds our payload to each of Locust's worker
  reports (every ``--interval`` seconds, at most 3, at least 0.5); a
  ``supervisor_stop`` message from the master stops its users and sends a
  final report at once.
- The master: ``worker_report`` folds each payload into the merged metrics.
  When the test stops (``--run-time``, the web UI, Ctrl-C or SIGTERM) it asks
  every worker that has not yet sent its final report for it, waits a bounded
  time (a worker that died is given up on once Locust marks it missing), and
  then writes the report: ``--chat-json``, ``--chat-csv``, ``--chat-html``.
- A single-process run (no ``--master``): the same report from its own metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
import locust.runners
from locust import events
from locust.runners import STATE_MISSING, STATE_STOPPED, MasterRunner, WorkerRunner

from supervisor.loadtest.metrics import Metrics
from supervisor.loadtest.progress import Progress
from supervisor.loadtest.report import (
    EXIT_USAGE,
    RunFacts,
    build_report,
    write_json,
    write_reports,
)
from supervisor.loadtest.values import ConfigError
from supervisor.locust._engine import drop_engine, engine_for
from supervisor.locust._merged import MergedMetrics
from supervisor.locust._options import (
    RUN_FILE_ENV,
    RunSettings,
    add_options,
    read_run_file,
    settings_for,
)
from supervisor.locust._payload import PAYLOAD_KEY, worker_payload

log = logging.getLogger("supervisor.locust")

STOP_MESSAGE = "supervisor_stop"
WORKER_JSON_ENV = "SUPERVISOR_LOCUST_WORKER_JSON"
"""A worker writes its own (unmerged) report here at exit; ``{worker}`` becomes its index."""
FINAL_REPORT_GRACE_S = 10.0
"""Beyond Locust's --stop-timeout, how long the master waits for final worker reports."""


def _on_parser(parser: Any, **_kwargs: Any) -> None:
    add_options(parser)


def _on_init(environment: Any, runner: Any = None, **_kwargs: Any) -> None:
    # gevent's loop caches "now" and has not run since Locust patched the process;
    # the seconds spent importing (our library included) would otherwise cut
    # --run-time short, because Locust arms it with spawn_later right after this.
    gevent.get_hub().loop.update_now()
    # Locust logs INFO to the console; one line per session connect or resume
    # would drown its own output, so our library logs warnings and up unless
    # Locust runs at DEBUG.
    level = str(getattr(environment.parsed_options, "loglevel", "INFO") or "INFO").upper()
    if level != "DEBUG":
        logging.getLogger("supervisor").setLevel(logging.WARNING)
    headless = bool(getattr(environment.parsed_options, "headless", False))
    if headless and not isinstance(runner, WorkerRunner):
        _check_settings(environment)
    if isinstance(runner, MasterRunner):
        _Master(environment).install()
    elif isinstance(runner, WorkerRunner):
        _Worker(environment).install()
    elif runner is not None:
        _Local(environment).install()


_EVENTS: Any = events  # Locust's EventHook.add_listener is untyped
_EVENTS.init_command_line_parser.add_listener(_on_parser)
_EVENTS.init.add_listener(_on_init)


def _check_settings(environment: Any) -> None:
    """A headless run fails at once on a bad option, naming it (not per user, later)."""
    try:
        report_settings(environment)
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_USAGE) from None


def report_settings(environment: Any) -> RunSettings | None:
    """The settings the report records: the run file's, or the first supervised user class's."""
    from supervisor.locust._users import SupervisedUser  # noqa: PLC0415 - avoids a cycle

    for user_class in environment.user_classes:
        if issubclass(user_class, SupervisedUser):
            host = environment.host or getattr(user_class, "host", None)
            return settings_for(user_class.protocol, dict(user_class.options),
                                environment.parsed_options, host)
    return None


def _report_interval(environment: Any) -> float:
    run_file = os.environ.get(RUN_FILE_ENV)
    interval = None
    if run_file:
        with contextlib.suppress(OSError, ValueError, KeyError):
            interval = read_run_file(run_file).config.interval
    if interval is None:
        raw = getattr(environment.parsed_options, "interval", None)
        with contextlib.suppress(TypeError, ValueError):
            interval = float(raw) if raw is not None else None
    return min(3.0, max(0.5, interval or 1.0))


class _Clock:
    """When the test started and stopped, and whether it ended by itself."""

    def __init__(self) -> None:
        self.started_at = ""
        self.start = 0.0
        self.stop: float | None = None
        self.connected_end = 0
        self.begin()

    def begin(self) -> None:
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.start = time.monotonic()
        self.stop = None
        self.connected_end = 0

    def facts(self, base_url: str, stale: int, interrupted: bool) -> RunFacts:
        end = self.stop if self.stop is not None else time.monotonic()
        return RunFacts(base_url, self.started_at, end - self.start, self.connected_end, stale,
                        interrupted, None, "interrupted" if interrupted else "duration")


class _Reporter:
    """What the master and a single process share: the interval roller and the report."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.clock = _Clock()
        self.stopped = False
        self.written = False
        self._roller: Any = None
        self.progress: Progress | None = None

    def metrics(self) -> Metrics:
        raise NotImplementedError

    def stale_frames(self) -> int:
        raise NotImplementedError

    def add_to(self, report: dict[str, Any]) -> None:
        """Add what only this kind of process knows to the report."""

    def install(self) -> None:
        ev = self.environment.events
        ev.test_start.add_listener(self.on_test_start)
        ev.test_stopping.add_listener(self.on_test_stopping)
        ev.test_stop.add_listener(self.on_test_stop)
        ev.quitting.add_listener(self.on_quitting)

    def on_test_start(self, **_kwargs: Any) -> None:
        self.clock.begin()
        self.stopped = False
        metrics = self.metrics()
        metrics.restart_clock()
        settings = self._settings()
        if settings is not None and settings.processes_run:
            self.progress = Progress(metrics, settings.config)
            self.progress.start()
        self._roller = gevent.spawn(self._roll, metrics, settings)

    def _roll(self, metrics: Metrics, settings: RunSettings | None) -> None:
        interval = settings.config.interval if settings is not None else 1.0
        while True:
            gevent.sleep(interval)
            metrics.roll()

    def on_test_stopping(self, **_kwargs: Any) -> None:
        # The run's duration ends here, before the wait for the workers' final reports.
        self.clock.stop = time.monotonic()
        self.clock.connected_end = self.metrics().connected_now()

    def on_test_stop(self, **_kwargs: Any) -> None:
        self.finish()
        self.stopped = True

    def finish(self) -> None:
        """Everything that must happen before the report: final figures, last interval."""
        if self._roller is not None:
            self._roller.kill(block=False)
            self._roller = None
            if self.clock.stop is None:
                self.clock.stop = time.monotonic()
            self.metrics().roll()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def on_quitting(self, **_kwargs: Any) -> None:
        interrupted = not self.stopped
        if interrupted and self._roller is not None:  # Ctrl-C or SIGTERM mid-run
            self.clock.stop = time.monotonic()
            self.clock.connected_end = self.metrics().connected_now()
        self.finish()
        self.write(interrupted)

    def _settings(self) -> RunSettings | None:
        try:
            return report_settings(self.environment)
        except Exception as exc:  # noqa: BLE001 - a bad option must not kill Locust's loop
            log.error("cannot build the chat report's settings: %s", exc)
            return None

    def write(self, interrupted: bool) -> None:
        if self.written:
            return
        self.written = True
        settings = self._settings()
        if settings is None:
            return
        facts = self.clock.facts(settings.base_url, self.stale_frames(), interrupted)
        report = build_report(settings.config, self.metrics(), facts)
        self.add_to(report)
        for problem in write_reports(settings.config, report):
            log.error("%s", problem)
        if settings.report_path:
            write_json(report, settings.report_path)


class _Master(_Reporter):
    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        users = getattr(environment.parsed_options, "num_users", None) or 1
        self._metrics = MergedMetrics(requested=users)
        self.collected = False

    def metrics(self) -> Metrics:
        return self._metrics

    def stale_frames(self) -> int:
        return self._metrics.stale_frames_dropped()

    def install(self) -> None:
        super().install()
        self.environment.events.worker_report.add_listener(self.on_worker_report)

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
        payload = data.get(PAYLOAD_KEY)
        if payload is not None:
            self._metrics.absorb(client_id, payload)

    def on_test_start(self, **kwargs: Any) -> None:
        for book in self._metrics.ledger.workers.values():
            book.final = False
        self.collected = False
        super().on_test_start(**kwargs)

    def finish(self) -> None:
        self.collect()
        super().finish()

    def collect(self) -> None:
        """Ask for and wait (bounded) for every worker's final report; mark the silent lost."""
        if self.collected:
            return
        self.collected = True
        runner, ledger = self.environment.runner, self._metrics.ledger
        for client_id, book in ledger.workers.items():
            if not book.final and not self._gone(client_id):
                with contextlib.suppress(Exception):
                    runner.send_message(STOP_MESSAGE, None, client_id)
        limit = (self.environment.stop_timeout or 0.0) + FINAL_REPORT_GRACE_S
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if all(book.final or self._gone(client_id)
                   for client_id, book in ledger.workers.items()):
                break
            gevent.sleep(0.05)
        for client_id, book in ledger.workers.items():
            if not book.final:
                ledger.mark_lost(client_id)
                self._metrics.error("worker_lost")
                log.warning("worker %s (index %s, pid %s) sent no final "
                            "report; its last report is in the totals", client_id, book.index,
                            book.pid)

    def _gone(self, client_id: str) -> bool:
        client = self.environment.runner.clients.get(client_id)
        return client is None or client.state == STATE_MISSING

    def add_to(self, report: dict[str, Any]) -> None:
        workers = self._metrics.workers()
        report["workers"] = workers
        # The master's own CPU is in resources.cpu_s; the sessions ran in the workers.
        report["resources"]["workers_cpu_s"] = round(
            sum(item.get("cpu_s", 0.0) for item in workers.values()), 3)
        report["resources"]["workers_rss_peak_mib"] = max(
            (item.get("rss_peak_mib", 0.0) for item in workers.values()), default=None)
        report["distributed"] = {
            "engine": "locust", "locust_version": locust.__version__,
            "workers": len(workers),
            "lost_workers": sorted(cid for cid, item in workers.items() if item["lost"]),
            "rejected_payloads": self._metrics.ledger.rejected}


class _Local(_Reporter):
    def metrics(self) -> Metrics:
        return engine_for(self.environment).metrics

    def stale_frames(self) -> int:
        return engine_for(self.environment).metrics.stale_frames_dropped

    def on_quitting(self, **kwargs: Any) -> None:
        super().on_quitting(**kwargs)
        engine = drop_engine(self.environment)
        if engine is not None:
            engine.stop()


class _Worker:
    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.seq = 0
        self.final: dict[str, Any] | None = None
        """The last final report sent, with every sample reported (for WORKER_JSON_ENV)."""

    def install(self) -> None:
        env = self.environment
        locust.runners.WORKER_REPORT_INTERVAL = _report_interval(env)
        env.events.report_to_master.add_listener(self.on_report)
        env.events.test_start.add_listener(self.on_test_start)
        env.events.quitting.add_listener(self.on_quitting)
        env.runner.register_message(STOP_MESSAGE, self.on_stop_message, concurrent=True)

    def on_test_start(self, **_kwargs: Any) -> None:
        engine, runner = engine_for(self.environment), self.environment.runner
        engine.worker_index = runner.worker_index
        expected = getattr(self.environment.parsed_options, "expect_workers", None)
        engine.worker_count = expected if isinstance(expected, int) and expected > 0 else 1
        engine.metrics.restart_clock()

    def on_report(self, client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
        runner = self.environment.runner
        final = runner.state == STATE_STOPPED
        metrics = engine_for(self.environment).metrics
        payload = worker_payload(metrics, self.seq, final=final, worker_index=runner.worker_index)
        data[PAYLOAD_KEY] = payload
        self.seq += 1
        if final:
            self.final = {**payload, "histograms": metrics.reported_histograms(),
                          "latency_ms": metrics.latencies()}

    def on_stop_message(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        runner = environment.runner
        runner.stop()
        runner._send_stats()  # Locust's own report channel, sent at once

    def on_quitting(self, **_kwargs: Any) -> None:
        engine = drop_engine(self.environment)
        if engine is None:
            return
        engine.stop()
        path = os.environ.get(WORKER_JSON_ENV)
        if path and self.final is not None:
            index = str(self.environment.runner.worker_index)
            Path(path.replace("{worker}", index)).write_text(json.dumps(self.final),
                                                             encoding="utf-8")
