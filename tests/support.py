"""Test helpers shared by the invariant and stress tests."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recording_server import Handshake, RecordingServer, header_values

from supervisor import Event, RestartPolicy

SESSION_HEADER = "X-Test-Session"


def fast_policy(**overrides: Any) -> RestartPolicy:
    """A policy whose backoffs are milliseconds, so restart tests finish quickly."""
    settings: dict[str, Any] = {"backoff_base": 0.01, "backoff_cap": 0.05, "max_restarts": 1000}
    settings.update(overrides)
    return RestartPolicy(**settings)


class EventLog:
    """Collects ``on_event`` records from any thread; tests wait on it, never sleep."""

    def __init__(self, on_each: Callable[[Event], None] | None = None) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._on_each = on_each

    def __call__(self, event: Event) -> None:
        if self._on_each is not None:
            self._on_each(event)
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 10.0,
                 what: str = "events") -> list[Event]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.events), timeout):
                msg = f"timed out after {timeout}s waiting for {what}; got {self.events!r}"
                raise TimeoutError(msg)
            return list(self.events)

    def wait_for_count(self, n: int, timeout: float = 10.0) -> list[Event]:
        return self.wait_for(lambda events: len(events) >= n, timeout, f"{n} events")


def echo(event: Event) -> dict[str, Any]:
    """The recording server's echo payload: the thread of its connection and the text."""
    payload: dict[str, Any] = json.loads(event.data)
    return payload


def handshakes_of(server: RecordingServer, session_id: str) -> list[Handshake]:
    """The handshakes one session made, in arrival order."""
    return [h for h in server.handshakes() if header_values(h, SESSION_HEADER) == [session_id]]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "it") -> None:
    """Poll a condition that has no event to wait on (state in another process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            raise TimeoutError(msg)
        time.sleep(0.01)


def python_prints(script: str, timeout: float = 60.0, cwd: Path | None = None) -> str:
    """What a fresh interpreter prints running ``script``; fails with its stderr if it fails.

    For what only a new process shows: its imports, its patching, its collector.
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def switch_and_chat(session: Any, threads: list[str], switches: int,
                    timeout: float) -> tuple[list[float], list[Any]]:
    """Alternate a Chainlit session between ``threads``: resume, check the server found
    that thread, chat one turn, check the echo. Returns the resume latencies and turns."""
    latencies: list[float] = []
    turns: list[Any] = []
    for switch in range(switches):
        thread_id = threads[switch % 2]
        started = time.monotonic()
        result = session.resume(thread_id).get(timeout=timeout)
        latencies.append(time.monotonic() - started)
        assert result.found is True, result
        assert result.thread["id"] == thread_id
        turn = session.chat(f"switch {switch}").get(timeout=timeout)
        assert turn.text == f"echo: switch {switch}"
        turns.append(turn)
    print(f"\nresume latency p50={statistics.median(latencies) * 1000:.1f}ms "
          f"max={max(latencies) * 1000:.1f}ms over {switches} switches")
    return latencies, turns
