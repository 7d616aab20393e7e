"""A recording, fault-injecting WebSocket echo server for the tests, and its client.

The server runs in a subprocess because the tests also run under gevent's monkey-patching,
where an asyncio server thread would misbehave; a subprocess is a real peer in both.
Data connections (any path but ``/_control``) are recorded and echoed; the parent drives
faults over a JSON control WebSocket at ``/_control`` via :class:`RecordingServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self, TypedDict

import websocket
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

HOST = "127.0.0.1"
CONTROL_PATH = "/_control"
DEFAULT_THREAD_HEADER = "X-Chainlit-Thread-Id"


class Handshake(TypedDict):
    """One recorded opening handshake (the JSON shape returned by ``handshakes``)."""

    index: int  # position in the log since the last reset
    conn: int  # connection number; never reused, even across resets
    path: str
    headers: list[list[str]]  # [name, value] pairs in arrival order, duplicates kept
    thread: str  # value of the thread header, "" if absent
    time: float  # time.time() at arrival
    monotonic: float  # time.monotonic() at arrival (system-wide clock on Linux)
    outcome: str  # "pending" | "held" | "accepted" | "refused"
    status: int | None  # HTTP status sent, once decided


class LiveConnection(TypedDict):
    conn: int
    thread: str


class OpenConnections(TypedDict):
    count: int
    threads: list[str]
    conns: list[int]


# ---------------------------------------------------------------- server (subprocess) side


class _ServerState:
    """All server state; only touched from the event loop thread, so no locking."""

    def __init__(self) -> None:
        self.next_conn = 1
        self.generation = 0  # bumped by reset so stale held handshakes can be refused
        self.log: list[Handshake] = []
        self.live: dict[int, tuple[ServerConnection, str]] = {}
        # Accepted-so-far handshakes, until their handler takes over (or they fail).
        self.pending: dict[ServerConnection, Handshake] = {}
        self.gate = asyncio.Event()
        self.held = 0  # handshakes waiting at the gate
        self.background: set[asyncio.Task[None]] = set()  # strong refs for close tasks
        self._clear_faults()

    def _clear_faults(self) -> None:
        self.thread_header = DEFAULT_THREAD_HEADER
        self.refuse_status: int | None = None
        self.refuse_remaining: int | None = None  # None = refuse until reset
        self.refuse_body = ""
        self.cookie_name: str | None = None
        self.handshake_delay = 0.0
        self.held = 0
        self.gate.set()

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if request.path == CONTROL_PATH:
            return None
        entry: Handshake = {
            "index": len(self.log),
            "conn": self.next_conn,
            "path": request.path,
            "headers": [[name, value] for name, value in request.headers.raw_items()],
            "thread": request.headers.get(self.thread_header, ""),
            "time": time.time(),
            "monotonic": time.monotonic(),
            "outcome": "pending",
            "status": None,
        }
        self.next_conn += 1
        # Logged before any hold/delay so a test can see the handshake "in flight".
        self.log.append(entry)
        generation = self.generation
        if not self.gate.is_set():
            entry["outcome"] = "held"
            self.held += 1
            await self.gate.wait()
        if self.handshake_delay > 0:
            await asyncio.sleep(self.handshake_delay)
        refusal: tuple[int, str] | None = None
        if generation != self.generation:
            # A reset happened meanwhile: don't let a previous test's handshake leak in.
            refusal = (503, "server was reset\n")
        elif self.refuse_status is not None and self.refuse_remaining != 0:
            # Decided after hold/delay so a test can inject a refusal while in flight.
            if self.refuse_remaining is not None:
                self.refuse_remaining -= 1
            refusal = (self.refuse_status, self.refuse_body)
        if refusal is None:
            self.pending[connection] = entry
            return None
        entry["outcome"], entry["status"] = "refused", refusal[0]
        return connection.respond(*refusal)

    def process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        entry = self.pending.get(connection)
        if entry is None:  # control channel or refused by process_request
            return
        entry["status"] = response.status_code
        if response.status_code != 101:  # e.g. websockets rejected a malformed request
            entry["outcome"] = "refused"
            del self.pending[connection]
            return
        entry["outcome"] = "accepted"
        if self.cookie_name is not None:
            # Domain matters: websocket-client's global jar drops cookies without one.
            response.headers["Set-Cookie"] = (
                f"{self.cookie_name}=v{entry['conn']}; Domain={HOST}; Path=/"
            )
        # Registered here, not in the handler, so a kill right after the client sees
        # the 101 can never miss this connection.
        self.live[entry["conn"]] = (connection, entry["thread"])

    async def handler(self, connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path == CONTROL_PATH:
            await self._control(connection)
            return
        entry = self.pending.pop(connection)
        conn, thread = entry["conn"], entry["thread"]
        try:
            async for message in connection:
                if isinstance(message, str):
                    await connection.send(
                        json.dumps({"thread": thread, "conn": conn, "text": message})
                    )
                else:
                    await connection.send(message)
        except ConnectionClosed:
            pass  # aborted or closed by either side: expected in fault tests
        finally:
            self.live.pop(conn, None)

    async def _control(self, connection: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in connection:
                try:
                    request = json.loads(message)
                    command = request.pop("cmd")
                    method = getattr(self, f"cmd_{command}", None)
                    if method is None:
                        raise ValueError(f"unknown command {command!r}")
                    reply = {"ok": True, "result": method(**request)}
                except Exception as exc:  # reported to the caller, who raises ControlError
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                await connection.send(json.dumps(reply))

    # ---- control commands (keyword arguments come straight from the JSON request)

    def _live_items(self) -> list[tuple[int, ServerConnection, str]]:
        # Drop entries whose handshake failed after process_response (no handler ran).
        for conn in [c for c, (ws, _) in self.live.items() if ws.state is State.CLOSED]:
            del self.live[conn]
        for ws in [ws for ws in self.pending if ws.state is State.CLOSED]:
            del self.pending[ws]
        return [(conn, ws, thread) for conn, (ws, thread) in sorted(self.live.items())]

    def _abort(self, victims: list[tuple[int, ServerConnection, str]]) -> list[LiveConnection]:
        for conn, ws, _ in victims:
            self.live.pop(conn, None)
            ws.transport.abort()  # RST/FIN without a close frame: an abrupt network drop
        return [{"conn": conn, "thread": thread} for conn, _, thread in victims]

    def cmd_handshakes(self, since: int = 0) -> list[Handshake]:
        return self.log[since:]

    def cmd_reset(self, drop_connections: bool = True) -> int:
        self.generation += 1
        self.log.clear()
        self._clear_faults()  # also opens the gate; stale held handshakes get a 503
        return len(self._abort(self._live_items())) if drop_connections else 0

    def cmd_refuse(self, status: int, count: int | None = None, body: str = "") -> None:
        self.refuse_status = status
        self.refuse_remaining = count
        self.refuse_body = body or f"refused by recording server ({status})\n"

    def cmd_set_cookie(self, name: str | None) -> None:
        self.cookie_name = name

    def cmd_set_handshake_delay(self, seconds: float) -> None:
        self.handshake_delay = seconds

    def cmd_set_thread_header(self, name: str) -> None:
        self.thread_header = name

    def cmd_hold_handshakes(self) -> None:
        self.gate.clear()

    def cmd_release_handshakes(self) -> int:
        released, self.held = self.held, 0
        self.gate.set()
        return released

    def cmd_kill_all(self) -> list[LiveConnection]:
        return self._abort(self._live_items())

    def cmd_kill_thread(self, thread: str) -> list[LiveConnection]:
        return self._abort([item for item in self._live_items() if item[2] == thread])

    def cmd_kill_random(
        self, fraction: float | None = None, count: int | None = None, seed: int | None = None
    ) -> list[LiveConnection]:
        items = self._live_items()
        rng = random.Random(seed)
        if count is not None:
            victims = rng.sample(items, min(count, len(items)))
        elif fraction is not None:
            victims = [item for item in items if rng.random() < fraction]
        else:
            raise ValueError("kill_random needs fraction or count")
        return self._abort(sorted(victims, key=lambda item: item[0]))

    def cmd_close_all(self, code: int = 1000, reason: str = "") -> list[LiveConnection]:
        items = self._live_items()
        for _, ws, _ in items:
            # Not awaited: a client that never reads would stall the control reply for
            # close_timeout; the close frame itself is written immediately.
            task = asyncio.get_running_loop().create_task(ws.close(code, reason))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        return [{"conn": conn, "thread": thread} for conn, _, thread in items]

    def cmd_open_connections(self) -> OpenConnections:
        items = self._live_items()
        return {
            "count": len(items),
            "threads": [thread for _, _, thread in items],
            "conns": [conn for conn, _, _ in items],
        }


def _stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # Raw os.read, not sys.stdin: a daemon thread holding the buffered reader's lock can
    # abort interpreter shutdown. EOF means the parent died or closed the pipe.
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    with contextlib.suppress(RuntimeError):  # loop already closed
        loop.call_soon_threadsafe(stop.set)


async def _serve() -> None:
    state = _ServerState()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    threading.Thread(target=_stop_on_stdin_eof, args=(loop, stop), daemon=True).start()
    async with serve(
        state.handler,
        HOST,
        0,
        process_request=state.process_request,
        process_response=state.process_response,
        open_timeout=None,  # held handshakes must wait as long as the test wants
        ping_interval=None,  # stay passive: keepalive policy belongs to the code under test
        close_timeout=2,
        max_size=None,
    ) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()
        state.gate.set()  # let held handshakes finish (they get a 503 during shutdown)


# ---------------------------------------------------------------- parent (test) side


class ControlError(RuntimeError):
    """The server rejected a control command."""


class RecordingServer:
    """Starts the server subprocess and drives it over the control channel.

    Safe to share between test threads (calls are serialised by a lock) and usable in
    gevent-patched processes, since it relies only on blocking sockets and subprocess.
    """

    def __init__(self, start_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: websocket.WebSocket | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("recording server already started")
        script = str(Path(__file__).resolve())
        self._proc = subprocess.Popen(
            [sys.executable, "-u", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        stdout = self._proc.stdout
        assert stdout is not None
        # select bounds the wait (gevent patches it cooperatively); the server writes
        # the whole line in one flush, so readline cannot block once it is readable.
        readable, _, _ = select.select([stdout], [], [], self.start_timeout)
        line = stdout.readline() if readable else b""
        if not line.startswith(b"PORT "):
            code = self._proc.poll()
            self.stop()
            raise RuntimeError(f"recording server failed to start (exit={code}, line={line!r})")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        self._close_control()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Popen's context exit closes the pipes and reaps the child (no ResourceWarning).
        with proc:
            proc.terminate()  # closing stdin would stop it too; SIGTERM is prompter
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _close_control(self) -> None:
        with self._lock:
            ws, self._control = self._control, None
        if ws is not None:
            with contextlib.suppress(websocket.WebSocketException, OSError):
                ws.close(timeout=1)
            ws.shutdown()

    def _call(self, cmd: str, **args: Any) -> Any:
        with self._lock:
            if self._proc is None:
                raise RuntimeError("recording server is not running")
            try:
                if self._control is None:
                    # The process-wide cookie jar may add a Cookie header here; the
                    # control path is never recorded, so that is harmless.
                    self._control = websocket.create_connection(
                        f"ws://{HOST}:{self.port}{CONTROL_PATH}", timeout=10
                    )
                self._control.send(json.dumps({"cmd": cmd, **args}))
                reply = json.loads(self._control.recv())
            except (websocket.WebSocketException, OSError):
                # Drop the broken connection; the next call reconnects.
                if self._control is not None:
                    self._control.shutdown()
                    self._control = None
                raise
        if not reply["ok"]:
            raise ControlError(f"{cmd}: {reply['error']}")
        return reply["result"]

    def handshakes(self, since: int = 0) -> list[Handshake]:
        return list(self._call("handshakes", since=since))

    def reset(self, drop_connections: bool = True) -> int:
        """Clear log and faults; abort leftover connections. Returns how many were dropped."""
        return int(self._call("reset", drop_connections=drop_connections))

    def refuse(self, status: int, count: int | None = None, body: str = "") -> None:
        """Refuse the next ``count`` handshakes (all until reset if None; 0 stops)."""
        self._call("refuse", status=status, count=count, body=body)

    def set_cookie(self, name: str | None) -> None:
        """Accepted handshakes answer ``Set-Cookie: name=v<conn>``; None turns it off."""
        self._call("set_cookie", name=name)

    def kill_all(self) -> list[LiveConnection]:
        return list(self._call("kill_all"))

    def kill_random(
        self, fraction: float | None = None, seed: int | None = None, count: int | None = None
    ) -> list[LiveConnection]:
        return list(self._call("kill_random", fraction=fraction, seed=seed, count=count))

    def kill_thread(self, thread: str) -> list[LiveConnection]:
        return list(self._call("kill_thread", thread=thread))

    def close_all(self, code: int = 1000, reason: str = "") -> list[LiveConnection]:
        return list(self._call("close_all", code=code, reason=reason))

    def set_handshake_delay(self, seconds: float) -> None:
        self._call("set_handshake_delay", seconds=seconds)

    def hold_handshakes(self) -> None:
        self._call("hold_handshakes")

    def release_handshakes(self) -> int:
        return int(self._call("release_handshakes"))

    def open_connections(self) -> OpenConnections:
        result: OpenConnections = self._call("open_connections")
        return result

    def set_thread_header(self, name: str) -> None:
        self._call("set_thread_header", name=name)

    def wait_for_handshakes(self, n: int, timeout: float = 5.0, since: int = 0) -> list[Handshake]:
        """Poll until at least ``n`` handshakes (from ``since``) have arrived (held ones too)."""
        deadline = time.monotonic() + timeout
        while len(log := self.handshakes(since=since)) < n:
            if time.monotonic() >= deadline:
                summary = [(h["conn"], h["thread"], h["outcome"]) for h in log]
                raise TimeoutError(f"wanted {n} handshakes in {timeout}s, got {summary}")
            time.sleep(0.01)  # the state is in another process: polling, kept short
        return log

    def wait_for_open_connections(self, n: int, timeout: float = 5.0) -> OpenConnections:
        """Poll until exactly ``n`` data connections are open on the server."""
        deadline = time.monotonic() + timeout
        while (state := self.open_connections())["count"] != n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"wanted {n} open connections in {timeout}s, got {state}")
            time.sleep(0.01)  # the state is in another process: polling, kept short
        return state


def header_values(handshake: Handshake, name: str) -> list[str]:
    """All values of header ``name`` (case-insensitive) in a recorded handshake."""
    return [value for key, value in handshake["headers"] if key.lower() == name.lower()]


if __name__ == "__main__":
    asyncio.run(_serve())
