"""A plain Locust user on python-socketio's client, playing the load test's scenario.

The peer for ``locust_cpu.py``: the same Chainlit scenario as ``supervisor
loadtest`` (connect with Chainlit's auth payload, chat turns until
``task_end``, a thread switch by ``clear_session`` and reconnecting with a
new session id every ``RESUME_EVERY`` seconds), reported as the same Locust
requests, but with python-socketio's synchronous client instead of a
supervised session.
Settings come from environment variables so the runner can match them.

Turns and switches are timed as ``supervisor loadtest`` times them (see
``sio_async_chat.py``): a turn ``THINK_S`` after the previous one ended, a
switch at each point of the user's grid (``shape.next_resume``, from the
first user's start), between turns, the next turn following as soon as its
think time is over.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
import socketio  # type: ignore[import-untyped]
from locust import User, events, task
from locust.env import Environment

from supervisor.loadtest.shape import next_resume
from supervisor.protocols.chainlit import CLEAR_SESSION, CONNECTION_SUCCESSFUL
from supervisor.protocols.chat import user_message

THINK_S = float(os.environ.get("BENCH_THINK_TIME", "1.0"))
RESUME_EVERY = float(os.environ.get("BENCH_RESUME_EVERY", "5.0"))
TURN_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
RESULTS = os.environ.get("BENCH_LOCUST_OUT")
"""Where to write the statistics when the run stops (``bench_chat.py`` sets it)."""
_numbers = itertools.count()
"""Each user's number: its offset on the switch grid."""
_run_start: list[float] = []
"""When the first user started: the origin of every user's switch grid."""


@events.test_stopping.add_listener
def _write_results(environment: Environment, **_kwargs: Any) -> None:
    """The statistics and this process's CPU seconds as the run ends, before Locust
    stops the users: a run whose users never finish stopping still has its figures."""
    if not RESULTS or environment.stats is None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(RESULTS).write_text(json.dumps({"stats": environment.stats.serialize_stats(),
                                         "cpu_s": usage.ru_utime + usage.ru_stime}))


class SocketIOChat(User):
    """One python-socketio connection per user; threads switched by reconnecting."""

    def wait_time(self) -> float:
        return max(0.0, min(self.resume_at, self.think_until) - time.monotonic())

    def on_start(self) -> None:
        self.number = next(_numbers)
        if not _run_start:
            _run_start.append(time.monotonic())
        self.threads = [str(uuid.uuid4()), str(uuid.uuid4())]
        self.thread_index = 0
        self.client = socketio.Client(reconnection=False)
        self.turn_done = threading.Event()
        self.first_at: float | None = None
        self.client.on("stream_start", self._on_token)
        self.client.on("stream_token", self._on_token)
        self.client.on("task_end", self._on_task_end)
        self._connect("connect")
        self.resume_at = self._next_switch() if RESUME_EVERY > 0 else float("inf")
        self.think_until = time.monotonic()

    def _next_switch(self) -> float:
        start = _run_start[0]
        return start + next_resume(self.number, RESUME_EVERY, time.monotonic() - start)

    def _on_token(self, *_args: Any) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()

    def _on_task_end(self, *_args: Any) -> None:
        # The target also sends task_end in answer to connection_successful: only one
        # after this turn's first token ends the turn.
        if self.first_at is not None:
            self.turn_done.set()

    def _fire(self, name: str, started: float, error: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="socketio", name=name, response_time=(time.perf_counter() - started)
            * 1000, response_length=0, exception=error, context={})

    def _connect(self, name: str) -> None:
        started = time.perf_counter()
        auth = {"clientType": "webapp", "sessionId": str(uuid.uuid4()),
                "threadId": self.threads[self.thread_index], "userEnv": "{}",
                "chatProfile": None}
        try:
            self.client.connect(self.host, auth=auth, socketio_path="/ws/socket.io",
                                transports=["websocket"], wait_timeout=10)
            # What Chainlit's own client sends once connected: the app then starts
            # (on_chat_start) or resumes (on_chat_resume) the session's thread.
            self.client.emit(CONNECTION_SUCCESSFUL)
        except Exception as exc:  # reported to Locust as the failure
            self._fire(name, started, exc)
            return
        self._fire(name, started)

    @task
    def step(self) -> None:
        now = time.monotonic()
        if now >= self.resume_at:
            self.thread_index = (self.thread_index + 1) % len(self.threads)
            self._let_go()
            self._connect("resume")
            self.resume_at = self._next_switch()
            return
        if now < self.think_until:
            return  # woken early: wait_time() says how long is left
        self._turn()
        self.think_until = time.monotonic() + THINK_S

    def _turn(self) -> None:
        self.turn_done.clear()
        self.first_at = None
        started = time.perf_counter()
        thread = self.threads[self.thread_index]
        self.client.emit("client_message",
                         user_message("hello", thread, str(uuid.uuid4()), time.time()))
        if not self.turn_done.wait(TURN_TIMEOUT):
            self._fire("turn", started, TimeoutError(f"no task_end in {TURN_TIMEOUT:g}s"))
            return
        if self.first_at is not None:
            self.environment.events.request.fire(
                request_type="socketio", name="first_token",
                response_time=(self.first_at - started) * 1000, response_length=0,
                exception=None, context={})
        self._fire("turn", started)

    def on_stop(self) -> None:
        # Bounded: python-socketio's disconnect joins its read loop without a
        # timeout, and Locust kills users (and waits for them) at the end of the
        # run; at N=100-3,000 on a busy machine the process then never exited.
        with gevent.Timeout(STOP_TIMEOUT, False):
            self._let_go()

    def _let_go(self) -> None:
        # What Chainlit's own client sends before it lets a session go (ours too).
        if self.client.connected:
            self.client.emit(CLEAR_SESSION)
        self.client.disconnect()
