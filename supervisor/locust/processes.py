"""``supervisor loadtest --processes N``: the same load test as N Locust workers on this machine.

This process stays free of Locust and gevent: it starts the embedded target
(unless ``--target``), one Locust master and N workers as child processes on
127.0.0.1, each in its own session so a terminal's Ctrl-C reaches only us.
The master shows our live progress, merges the workers' metrics and writes the
reports; we print the summary and decide the exit status.

- Ctrl-C (or SIGTERM) once: the master is told (SIGINT); it collects the
  workers' final reports and writes the report. Twice: everything is killed.
- A worker that exits early is reported here and in the report's
  ``distributed.lost_workers``; the master carries on with the others.
- Every wait is bounded; children still alive at the end are killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from supervisor.loadtest.config import LoadTestConfig
from supervisor.loadtest.report import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_THRESHOLD,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from supervisor.loadtest.runner import PROG, fail, start_target
from supervisor.locust._options import RUN_FILE_ENV, write_run_file

LOCUSTFILE = Path(__file__).with_name("_locustfile.py")
START_LIMIT_S = 60.0
"""How long the workers may take to connect to the master."""
END_MARGIN_S = 60.0
"""Beyond the duration and the stop timeout, how long the master may take to finish."""
POLL_S = 0.1


def worker_count(requested: int) -> int:
    """``--processes``: -1 is one worker per core."""
    return max(1, os.cpu_count() or 1) if requested == -1 else requested


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_processes(config: LoadTestConfig, out: IO[str] | None = None,
                  err: IO[str] | None = None) -> int:
    """Run ``config`` on Locust's engine with ``config.processes`` workers; the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    if importlib.util.find_spec("locust") is None:
        fail("--processes needs Locust (pip install 'session-supervisor[locust]')", err)
        return EXIT_USAGE
    started = start_target(config, err)
    if started is None:
        return EXIT_UNREACHABLE
    target, base = started
    try:
        with tempfile.TemporaryDirectory(prefix="supervisor-locust-") as folder:
            return _Run(config, base, Path(folder), out, err).run()
    finally:
        if target is not None:
            target.stop()


class _Run:
    """One ``--processes`` run: the children, the signals, the verdict."""

    def __init__(self, config: LoadTestConfig, base: str, folder: Path, out: IO[str],
                 err: IO[str]) -> None:
        self.config, self.base, self.out, self.err = config, base, out, err
        self.workers = worker_count(config.processes)
        self.run_file = folder / "run.json"
        self.report_path = folder / "report.json"
        self.master: subprocess.Popen[bytes] | None = None
        self.children: list[subprocess.Popen[bytes]] = []
        self.interrupts = 0
        self.lost: dict[int, int] = {}
        """Worker number -> exit status, for workers that ended before the master."""

    def _spawn(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--skip-log-setup",
                   *args]
        child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,  # noqa: S603
                                 start_new_session=True)
        self.children.append(child)
        return child

    def run(self) -> int:
        config = self.config
        # Locust's processes run on gevent, whatever --runtime says.
        write_run_file(str(self.run_file), dataclasses.replace(config, runtime="gevent"),
                       self.base, str(self.report_path))
        env = {**os.environ, RUN_FILE_ENV: str(self.run_file), "PYTHONUNBUFFERED": "1"}
        port = str(_free_port())
        run_time = f"{max(1, round(config.duration))}s"
        previous = self._install_signals()
        try:
            self.master = self._spawn([
                "--master", "--headless", "--master-bind-host", "127.0.0.1",
                "--master-bind-port", port, "--expect-workers", str(self.workers),
                "--expect-workers-max-wait", f"{START_LIMIT_S:g}",
                "--users", str(config.sessions), "--spawn-rate", f"{config.spawn_rate:g}",
                "--run-time", run_time, "--stop-timeout", "0", "--host", self.base,
                "--only-summary", "--exit-code-on-error", "0"], env)
            workers = [self._spawn(["--worker", "--master-host", "127.0.0.1",
                                    "--master-port", port], env)
                       for _ in range(self.workers)]
            pids = " ".join(str(worker.pid) for worker in workers)
            if not config.quiet:
                print(f"{PROG}: {self.workers} Locust worker processes (pids {pids}) under "
                      f"one master (pid {self.master.pid}) on 127.0.0.1:{port}",
                      file=self.out, flush=True)
            status = self._wait(workers)
        finally:
            self._stop_children()
            self._restore_signals(previous)
        return self._conclude(status)

    def _wait(self, workers: list[subprocess.Popen[bytes]]) -> int | None:
        """Wait for the master (bounded), noting workers that end before it; its status."""
        assert self.master is not None
        limit = (START_LIMIT_S + self.config.duration + self.config.stop_timeout
                 + END_MARGIN_S)
        deadline = time.monotonic() + limit
        for _ in range(int(limit / POLL_S) + 2):
            status = self.master.poll()
            for number, worker in enumerate(workers, 1):
                code = worker.poll()
                # 0: the worker quit when the master told it to (the run ended).
                if code not in (None, 0) and number not in self.lost and status is None:
                    self.lost[number] = code
                    print(f"{PROG}: worker {number} (pid {worker.pid}) exited with status "
                          f"{code} during the run; the others carry on", file=self.err,
                          flush=True)
            if status is not None or time.monotonic() > deadline:
                return status
            if len(self.lost) == len(workers) and not self.interrupts:
                # Every worker is gone: nothing can run; have the master report and end.
                self.interrupts = 1
                with contextlib.suppress(ProcessLookupError):
                    self.master.send_signal(signal.SIGINT)
            time.sleep(POLL_S)
        return None

    def _stop_children(self) -> None:
        """Give each child a few seconds to end by itself, then kill it."""
        end = time.monotonic() + 15.0
        for child in self.children:
            try:
                child.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                # Stuck even after SIGKILL (uninterruptible sleep): stop the others all the same.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5.0)

    def _conclude(self, status: int | None) -> int:
        from supervisor.loadtest.progress import summary  # noqa: PLC0415 - rich, only now

        if status is None:
            fail(f"the Locust master did not finish in time; stopped it (see {self.err.name})"
                  if hasattr(self.err, "name") else "the Locust master did not finish in time",
                  self.err)
        try:
            report: dict[str, Any] = json.loads(self.report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            fail(f"the Locust master wrote no report (exit status {status})", self.err)
            return EXIT_UNREACHABLE
        from rich.console import Console  # noqa: PLC0415

        Console(file=self.out, width=None if self.out.isatty() else 110,
                highlight=False).print(summary(report))
        lost = report.get("distributed", {}).get("lost_workers", [])
        if lost or self.lost:
            fail(f"{max(len(lost), len(self.lost))} of {self.workers} workers were lost "
                  "during the run (their last reports are in the totals)", self.err)
        if self.interrupts > 1:
            return EXIT_INTERRUPTED
        if not report["sessions"].get("connected_peak"):
            fail("no session connected (check --target and --protocol)", self.err)
            return EXIT_UNREACHABLE
        verdict = report["exit"]
        if not verdict.get("passed", True):
            limit = verdict.get("fail_on_error_rate")
            why = (f"error rate {verdict.get('error_rate', 0.0):.2%} is above "
                   f"--fail-on-error-rate {limit:.2%}" if isinstance(limit, float)
                   else "the run failed its thresholds")
            fail(f"{why} (see the errors in the report)", self.err)
        status = verdict.get("status")  # the report's own exit status, when it gives one
        if isinstance(status, int):
            return status
        return EXIT_OK if verdict.get("passed", True) else EXIT_THRESHOLD

    # --- signals ------------------------------------------------------------------

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            os.write(2, f"\n{PROG}: interrupted: stopping the workers and writing the report "
                        "(Ctrl-C again quits at once)\n".encode())
            if self.master is not None and self.master.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.master.send_signal(signal.SIGINT)
            return
        os.write(2, f"\n{PROG}: interrupted twice: killing the Locust processes\n".encode())
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
