"""Running one load test: target, sessions at the spawn rate, the clock, the end.

The main thread only keeps time: it closes metric intervals, watches for a run
where nothing connects, and ends the run at the deadline or on Ctrl-C. Sessions
are started and retired by one shaper thread, following the load shape
(:mod:`~supervisor.loadtest.shape`); each is played by a
:class:`~supervisor.loadtest.driver.Driver`.

Exit statuses: 0 passed, 1 a threshold failed (``--threshold``,
``--fail-on-error-rate``), 2 bad input, 3 target unreachable or no session ever
connected, whatever the run's length.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import IO, Any, Protocol

from supervisor._actor_pool import favour_throughput
from supervisor.chainlit_auth import login, mint_jwt, token_cookies
from supervisor.errors import DeadlineExceeded, HandshakeError, HandshakeRefused
from supervisor.loadtest.config import LoadTestConfig
from supervisor.loadtest.driver import Driver, RunContext
from supervisor.loadtest.metrics import Metrics
from supervisor.loadtest.progress import Progress, fmt_threshold, summary
from supervisor.loadtest.report import (
    EXIT_OK,
    EXIT_THRESHOLD,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    RunFacts,
    build_report,
    write_reports,
)
from supervisor.loadtest.shape import Shape
from supervisor.loadtest.target import (
    EmbeddedTarget,
    TargetError,
    check_reachable,
    embedded_arguments,
    session_url,
)
from supervisor.loadtest.verdict import no_connect_hint
from supervisor.policy import RestartPolicy
from supervisor.supervisor import Supervisor

__all__ = ["EXIT_OK", "EXIT_THRESHOLD", "EXIT_UNREACHABLE", "EXIT_USAGE", "run"]

PROG = "supervisor loadtest"
NO_CONNECT_MARGIN_S = 3.0
"""Beyond the connect timeout, how long a run may go without any session connected."""
GIVE_UPS_BEFORE_VERDICT = 3
"""Sessions the policy must give up on (none connected) before the run stops early."""
TICK_S = 0.05


class Joinable(Protocol):
    """A started driver: a thread, or a greenlet under gevent."""

    def join(self, timeout: float | None = None) -> object: ...


def launch(target: Callable[[], None], name: str) -> Joinable:
    """Start ``target`` in a thread of its own, without waiting for it to begin.

    ``Thread.start()`` waits until the new thread runs; under gevent that is one
    turn of a busy event loop per driver, which capped a 5,000-session ramp at
    about 2,500 sessions started in 30 s. A greenlet is spawned without waiting.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent  # type: ignore[import-untyped]  # noqa: PLC0415 - gevent runtime only

        greenlet: Joinable = gevent.spawn(target)
        return greenlet
    thread = threading.Thread(target=target, daemon=True, name=name)
    thread.start()
    return thread


def fail(message: str, err: IO[str]) -> None:
    print(f"{PROG}: error: {message}", file=err, flush=True)


class Credentials:
    """Cookies per session: a minted token, or one login per distinct user (cached)."""

    def __init__(self, config: LoadTestConfig, base_url: str) -> None:
        self._config = config
        self._base = base_url
        self._cache: dict[str, dict[str, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def __call__(self, number: int) -> dict[str, str]:
        config = self._config
        if config.jwt_secret is not None:
            user = config.login.for_session(number)[0] if config.login else f"loadtest-{number}"
            return token_cookies(mint_jwt(config.jwt_secret, user))
        if config.login is None:
            return {}
        user, password = config.login.for_session(number)
        with self._lock:
            lock = self._locks.setdefault(user, threading.Lock())
        with lock:  # sessions of one user share one login, made by the first of them
            if user not in self._cache:
                self._cache[user] = login(self._base, user, password or "",
                                          timeout=config.connect_timeout)
            return dict(self._cache[user])


def start_target(config: LoadTestConfig,
                 err: IO[str]) -> tuple[EmbeddedTarget | None, str] | None:
    """Start the embedded target, or check that ``--target`` answers: the target process
    (to stop afterwards) and the base URL; None, with the reason printed, when it cannot."""
    target = EmbeddedTarget(embedded_arguments(config)) if config.embedded else None
    try:
        if target is not None:
            return target, target.start()
        assert config.target is not None
        check_reachable(config.target, timeout=min(5.0, config.connect_timeout))
    except TargetError as exc:
        fail(str(exc), err)
        return None
    return None, config.target


def run(config: LoadTestConfig, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run the load test ``config`` describes; return the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    favour_throughput()  # this process runs only sessions: no asyncio loop to be fair to
    started = start_target(config, err)
    if started is None:
        return EXIT_UNREACHABLE
    target, base = started
    try:
        return LoadTest(config, base, target, out, err).run()
    finally:
        if target is not None:
            target.stop()


class LoadTest:
    """One run, from the first session to the report."""

    def __init__(self, config: LoadTestConfig, base_url: str, target: EmbeddedTarget | None,
                 out: IO[str], err: IO[str]) -> None:
        self.config = config
        self.base_url = base_url
        self.target = target
        self.out, self.err = out, err
        self.rng = random.Random(config.seed)
        self.metrics = Metrics(config.sessions, config.interval)
        self.shape: Shape = config.shape
        self.stop = threading.Event()
        self.interrupted = False
        self.drivers: list[tuple[Driver, Joinable]] = []
        self._drivers_lock = threading.Lock()
        self.credentials = Credentials(config, base_url)

    def _preflight(self) -> int | None:
        """Log in once before any session starts, so bad credentials fail at once."""
        if self.config.login is None and self.config.jwt_secret is None:
            return None
        try:
            self.credentials(1)
        except HandshakeRefused as exc:
            user = self.config.login.for_session(1)[0] if self.config.login else "?"
            fail(f"login as {user!r} refused with HTTP {exc.status_code} "
                 "(check --login USER:PASSWORD)", self.err)
            return EXIT_USAGE
        except HandshakeError as exc:
            fail(f"{exc} (check --target and that the server has password login)", self.err)
            return EXIT_UNREACHABLE
        return None

    def run(self) -> int:
        refused = self._preflight()
        if refused is not None:
            return refused
        config = self.config
        in_flight, per_second = config.admission_limits
        policy = RestartPolicy(backoff_base=0.25, backoff_cap=5.0,
                               max_handshakes_in_flight=in_flight,
                               max_handshakes_per_second=per_second,
                               rng=random.Random(self.rng.getrandbits(64)))
        supervisor = Supervisor.start(policy)
        progress = Progress(self.metrics, config, self.out)
        where = f"{self.base_url} ({'embedded target' if config.embedded else 'target'})"
        load = (f"stages {','.join(f'{st.seconds:g}s:{st.sessions}' for st in config.stages)}"
                if config.stages else f"{config.sessions} sessions at {config.spawn_rate:g}/s")
        progress.note(f"{PROG}: {config.protocol} load test of {where}: {load} for "
                      f"{config.duration:g}s; Ctrl-C stops it")
        previous = self._install_signals()
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.metrics.restart_clock()
        start = time.monotonic()
        ctx = RunContext(config, self.metrics, supervisor, session_url(config, self.base_url),
                         self.stop, start + config.duration, self.credentials, start=start,
                         conversations=config.messages,
                         scenario=config.scenario.function if config.scenario else None)
        spawner = threading.Thread(target=self._shape_load, args=(ctx, start), daemon=True,
                                   name="loadtest-shaper")
        progress.start()
        try:
            spawner.start()
            because = self._keep_time(ctx, start, progress)
        finally:
            self.stop.set()
            ended = time.monotonic()
            spawner.join(timeout=2.0)
            self._wake_drivers()
            self.metrics.freeze_sessions()
            connected_end = self.metrics.connected_now()
            wanted_end = self.shape.wanted_at(ended - start)
            self.metrics.roll()  # the last, partial interval
            progress.stop()
            try:
                supervisor.stop(timeout=config.stop_timeout)
            except DeadlineExceeded:  # a swamped supervisor must not cost the report
                progress.note(f"{PROG}: the sessions did not all close within "
                              f"{config.stop_timeout:g}s (--stop-timeout); reporting anyway")
            stale = self._finish_drivers()
            self._restore_signals(previous)
        if self.target is not None:
            self.target.stop()
        if because == "duration" and self.metrics.first_connected_at is None and (
                self.metrics.session_figures()["started"]):
            because = "no_session_connected"  # however short the run was
        hint = None
        if because == "no_session_connected":
            hint = no_connect_hint(self.metrics.evidence(), config.protocol,
                                   config.connect_timeout)
        # Nothing ever connected: every session failed, however young.
        self.metrics.settle_never_connected(everyone=hint is not None)
        facts = RunFacts(self.base_url, started_at, ended - start, connected_end, stale,
                         self.interrupted, self.target.rss_peak_mib if self.target else None,
                         because, wanted_end, hint)
        return self._conclude(build_report(config, self.metrics, facts), progress)

    def _shape_load(self, ctx: RunContext, start: float) -> None:
        """Start and retire sessions to follow the load shape, until the run ends.

        Bounded: one pass per tick for the run's duration, and each pass starts
        at most the sessions the shape wants (never more than its peak in all
        for the plain ramp, one per wanted session for stages).
        """
        active: list[Driver] = []  # started and not retired, oldest first
        number = 0
        for _ in range(int(self.config.duration / TICK_S) + 2):
            if ctx.ending:
                return
            wanted = self.shape.wanted_at(time.monotonic() - start)
            if self.shape.spawn_rate and number >= self.shape.peak:
                return  # the plain ramp starts each session once, never replaces one
            while len(active) < wanted and not ctx.ending:
                number += 1
                driver = Driver(ctx, number, random.Random(self.rng.getrandbits(64)))
                active.append(driver)
                started = launch(driver.run, f"driver-{number}")
                with self._drivers_lock:
                    self.drivers.append((driver, started))
            while len(active) > wanted:
                retired = active.pop()  # the newest goes first
                self.metrics.session_retired(retired.session_id)
                retired.retire()
            if self.stop.wait(TICK_S):
                return

    def _keep_time(self, ctx: RunContext, start: float, progress: Progress) -> str:
        """Roll intervals until the deadline, Ctrl-C, or a run where nothing connects."""
        config, metrics = self.config, self.metrics
        next_roll = start + config.interval
        announced = False
        # Bounded: each pass waits a tick, or less once per interval (to roll it).
        passes = int(config.duration / TICK_S) + 2 * int(config.duration / config.interval) + 200
        for _ in range(passes):
            now = time.monotonic()
            if self.interrupted:
                progress.note(f"{PROG}: interrupted: stopping the sessions and writing the "
                              "report (Ctrl-C again quits at once)")
                return "interrupted"
            if now >= ctx.deadline:
                return "duration"
            if not announced and metrics.first_connected_at is not None:
                announced = True
                progress.note(f"{PROG}: first session connected after "
                              f"{metrics.first_connected_at:.2f}s")
            if not announced and self._nothing_connects(now - start):
                return "no_session_connected"
            if now >= next_roll:
                metrics.roll()
                next_roll = max(next_roll + config.interval, now)
            self.stop.wait(max(0.0, min(TICK_S, next_roll - now, ctx.deadline - now)))
        return "duration"

    def _nothing_connects(self, elapsed: float) -> bool:
        """Whether to stop early: sessions given up on, or none connected in time."""
        first = self.metrics.first_started_at
        if first is None:
            return False  # a shape may start its first session late
        gave_up = self.metrics.session_figures()["gave_up"]
        return (gave_up >= min(GIVE_UPS_BEFORE_VERDICT, self.config.sessions)
                or elapsed - first > self.config.connect_timeout + NO_CONNECT_MARGIN_S)

    def _wake_drivers(self) -> None:
        """The run ended: every driver stops waiting for its next turn or resume."""
        with self._drivers_lock:
            drivers = list(self.drivers)
        for driver, _ in drivers:
            driver.wake()

    def _finish_drivers(self) -> int:
        """Wait (bounded) for the drivers; the stale frames their sessions dropped."""
        with self._drivers_lock:
            drivers = list(self.drivers)
        end = time.monotonic() + 2.0
        for _, thread in drivers:
            thread.join(timeout=max(0.0, end - time.monotonic()))
        return sum(driver.session.state().stale_frames_dropped
                   for driver, _ in drivers if driver.session is not None)

    def _conclude(self, report: dict[str, Any], progress: Progress) -> int:
        for problem in write_reports(self.config, report):
            fail(problem, self.err)
        progress.console.print(summary(report))
        verdict = report["exit"]
        status: int = verdict["status"]
        if status == EXIT_UNREACHABLE:
            gave_up = self.metrics.session_figures()["gave_up"]
            why = self.metrics.first_failure or "no handshake completed"
            when = (f"{gave_up} sessions failed" if gave_up >= GIVE_UPS_BEFORE_VERDICT else
                    f"in {report['duration_s']:g}s")
            fail(f"no session connected, {when} ({why}): {verdict['hint']}", self.err)
        elif status == EXIT_THRESHOLD:
            failed = [item for item in report["thresholds"] if not item["ok"]]
            fail("failed " + ", ".join(fmt_threshold(item) for item in failed)
                 + " (see the errors in the summary)", self.err)
        return status

    # --- signals ------------------------------------------------------------------

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        if self.interrupted:
            # The second one: the user wants out now. os.write is safe in a handler.
            os.write(2, f"\n{PROG}: interrupted twice: exiting at once\n".encode())
            os._exit(130)
        self.interrupted = True
        self.stop.set()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may set handlers (tests run us in others)
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
