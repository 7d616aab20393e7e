"""python-socketio's ``AsyncClient`` playing the chat scenario: a peer for ``bench_chat.py``.

    python benchmarks/sio_async_chat.py --url http://127.0.0.1:PORT --sessions 100 \
        --spawn-rate 10 --duration 30 --out result.json

The same turns as ``locust_sio_user.py`` (Chainlit's connect ``auth``
payload, a ``client_message`` per turn, the turn ends at ``task_end``, a
thread switch by ``clear_session`` and reconnecting with the other thread's id every
``--resume-every`` seconds), but N clients on one asyncio loop. Sessions start
at ``--spawn-rate``; the run lasts ``--duration`` seconds from the first one;
turns still running then are cut and not counted. Every wait has a deadline.

Turns and switches are timed as ``supervisor loadtest`` times them, so every
candidate makes the server the same number of handshakes: a turn
``--think-time`` after the previous one ended, a switch at each point of the
session's grid (``shape.next_resume``: every ``--resume-every`` seconds from
the run's start, at the session's own offset), taken between turns and
followed by the next turn as soon as its think time is over.

Writes JSON: turns, turns_failed, failed_sessions (the first connect failed),
resumes_failed, handshakes (connects tried, the first included),
connected_peak (its own count) and first_token_ms, a histogram
``{milliseconds: count}`` for ``bench_chat.py`` to take percentiles from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio  # type: ignore[import-untyped]

from supervisor.loadtest.shape import next_resume
from supervisor.protocols.chainlit import CLEAR_SESSION, CONNECTION_SUCCESSFUL
from supervisor.protocols.chat import user_message

SOCKETIO_PATH = "/ws/socket.io"
"""Chainlit's Engine.IO path (the embedded target's too)."""
STOP_GRACE_S = 10.0
"""How long the sessions get to disconnect once the run is over."""


@dataclass
class Tally:
    """What the sessions did, shared by all of them (one event loop: no lock)."""

    turns: int = 0
    turns_failed: int = 0
    failed_sessions: int = 0
    resumes_failed: int = 0
    handshakes: int = 0
    connected: int = 0
    connected_peak: int = 0
    first_token_ms: Counter[int] = field(default_factory=Counter)

    def up(self) -> None:
        self.connected += 1
        self.connected_peak = max(self.connected_peak, self.connected)


class ChatSession:
    """One ``AsyncClient``: connect, turns ``think`` seconds apart, a thread switch now and then."""

    def __init__(self, args: argparse.Namespace, tally: Tally, number: int, start: float,
                 deadline: float) -> None:
        self.args = args
        self.tally = tally
        self.number = number
        self.start = start
        """When the run began: the origin of every session's switch grid."""
        self.deadline = deadline
        self.threads = [str(uuid.uuid4()), str(uuid.uuid4())]
        self.thread_index = 0
        self.client = socketio.AsyncClient(reconnection=False)
        self.turn_done = asyncio.Event()
        self.first_at: float | None = None
        self.client.on("stream_start", self._on_token)
        self.client.on("stream_token", self._on_token)
        self.client.on("task_end", self._on_task_end)

    async def _on_token(self, *_args: Any) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()

    async def _on_task_end(self, *_args: Any) -> None:
        # The target also sends task_end in answer to connection_successful: only one
        # after this turn's first token ends the turn.
        if self.first_at is not None:
            self.turn_done.set()

    async def _connect(self) -> bool:
        auth = {"clientType": "webapp", "sessionId": str(uuid.uuid4()),
                "threadId": self.threads[self.thread_index], "userEnv": "{}",
                "chatProfile": None}
        timeout = self.args.connect_timeout
        self.tally.handshakes += 1
        try:
            await asyncio.wait_for(
                self.client.connect(self.args.url, auth=auth, socketio_path=SOCKETIO_PATH,
                                    transports=["websocket"], wait_timeout=timeout),
                timeout + 1.0)
            # What Chainlit's own client sends once connected: the app then starts
            # (on_chat_start) or resumes (on_chat_resume) the session's thread.
            await asyncio.wait_for(self.client.emit(CONNECTION_SUCCESSFUL), timeout)
        except (socketio.exceptions.SocketIOError, TimeoutError, OSError):
            return False
        self.tally.up()
        return True

    async def _disconnect(self) -> None:
        with contextlib.suppress(Exception):
            # What Chainlit's own client sends before it lets a session go (ours too).
            await asyncio.wait_for(self.client.emit(CLEAR_SESSION), STOP_GRACE_S)
        with contextlib.suppress(Exception):  # even if the emit failed
            await asyncio.wait_for(self.client.disconnect(), STOP_GRACE_S)
        self.tally.connected -= 1

    async def run(self) -> None:
        if not await self._connect():
            self.tally.failed_sessions += 1
            return
        every, think = self.args.resume_every, self.args.think_time
        resume_at = self._next_switch() if every > 0 else float("inf")
        think_until = time.monotonic()
        # Bounded: every pass runs one turn or one switch, or sleeps until the next is due.
        while (now := time.monotonic()) < self.deadline:
            if now >= resume_at:
                await self._disconnect()
                self.thread_index = 1 - self.thread_index
                if not await self._connect():
                    self.tally.resumes_failed += 1
                    return
                resume_at = self._next_switch()
            elif now >= think_until:
                await self._turn()
                think_until = time.monotonic() + think
            else:
                await asyncio.sleep(min(resume_at, think_until, self.deadline) - now)
        await self._disconnect()

    def _next_switch(self) -> float:
        every = self.args.resume_every
        return self.start + next_resume(self.number, every, time.monotonic() - self.start)

    async def _turn(self) -> None:
        self.turn_done.clear()
        self.first_at = None
        started = time.perf_counter()
        thread = self.threads[self.thread_index]
        try:
            await self.client.emit("client_message", user_message(
                self.args.message, thread, str(uuid.uuid4()), time.time()))
        except socketio.exceptions.SocketIOError:
            self.tally.turns_failed += 1
            return
        left = self.deadline - time.monotonic()
        try:
            await asyncio.wait_for(self.turn_done.wait(), min(self.args.turn_timeout, left))
        except TimeoutError:
            if left >= self.args.turn_timeout:
                self.tally.turns_failed += 1  # otherwise the end of the run cut it
            return
        self.tally.turns += 1
        if self.first_at is not None:
            self.tally.first_token_ms[round((self.first_at - started) * 1000)] += 1


async def run_all(args: argparse.Namespace) -> Tally:
    """Start the sessions at the spawn rate; wait for them (bounded) to end."""
    tally = Tally()
    start = time.monotonic()
    deadline = start + args.duration
    tasks: list[asyncio.Task[None]] = []
    for number in range(args.sessions):
        due = start + number / args.spawn_rate
        if due >= deadline:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(
            ChatSession(args, tally, number, start, deadline).run()))
    # Each session ends by the deadline plus one connect or disconnect timeout.
    _, pending = await asyncio.wait(
        tasks, timeout=max(0.0, deadline - time.monotonic()) + args.connect_timeout
        + STOP_GRACE_S + 2.0)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=STOP_GRACE_S)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the target's base URL")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--spawn-rate", type=float, required=True, help="sessions per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--think-time", type=float, default=1.0)
    parser.add_argument("--resume-every", type=float, default=5.0)
    parser.add_argument("--turn-timeout", type=float, default=30.0)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--message", default="hello")
    parser.add_argument("--out", type=Path, required=True, help="write the JSON result here")
    args = parser.parse_args()
    tally = asyncio.run(run_all(args))
    args.out.write_text(json.dumps({
        "turns": tally.turns, "turns_failed": tally.turns_failed,
        "failed_sessions": tally.failed_sessions, "resumes_failed": tally.resumes_failed,
        "handshakes": tally.handshakes, "connected_peak": tally.connected_peak,
        "first_token_ms": {str(ms): count for ms, count in sorted(tally.first_token_ms.items())},
    }))


if __name__ == "__main__":
    main()
