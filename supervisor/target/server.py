"""Running the target: in a background thread (:class:`TargetServer`) or in the foreground.

uvicorn serves the app, as it serves Chainlit. In a background thread uvicorn
installs no signal handlers (it only does in the main thread), so tests and
in-process load tests stop it with :meth:`TargetServer.stop`.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Self

import uvicorn

from supervisor._logging import get_logger
from supervisor.target.app import SOCKETIO_PATH, TargetApp
from supervisor.target.options import TargetOptions

logger = get_logger(__name__)

GRACEFUL_SHUTDOWN_S = 3
"""uvicorn's bound on waiting for open connections at shutdown (it waits forever otherwise)."""


def _check_websocket_support() -> None:
    # Without either library uvicorn answers every WebSocket upgrade with 404,
    # which would look like a wrong URL rather than a missing dependency.
    if not any(importlib.util.find_spec(name) for name in ("websockets", "wsproto")):
        msg = "the embedded target needs the 'websockets' (or 'wsproto') package for WebSockets"
        raise RuntimeError(msg)


def _config(app: TargetApp, host: str, port: int, *, log_level: str | None) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, lifespan="off", access_log=False,
        # log_config=None leaves the embedding program's logging alone.
        log_config=uvicorn.config.LOGGING_CONFIG if log_level else None,
        log_level=log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


class _Server(uvicorn.Server):
    """A uvicorn server that reports when it has started (or failed to)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[_Server], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        self._on_started(self)

    def bound_port(self) -> int:
        """The port of the first listening socket (the real one when asked for port 0)."""
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port


class TargetServer:
    """The embedded target in a background thread; a context manager.

    ``TargetServer(host="127.0.0.1", port=0, **options)`` takes the fields of
    :class:`TargetOptions` as keyword arguments (or ``options=``). Port 0 picks
    a free port; read it from :attr:`port` after :meth:`start`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 options: TargetOptions | None = None, **overrides: Any) -> None:
        if options is not None and overrides:
            msg = "pass either options= or option keywords, not both"
            raise TypeError(msg)
        self.host = host
        self._requested_port = port
        self.options = options or TargetOptions(**overrides)
        self._app: TargetApp | None = None  # made by start(): it opens the handshake log
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._port: int | None = None
        self._failure: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound port; only after :meth:`start`."""
        if self._port is None:
            msg = "the target server is not started"
            raise RuntimeError(msg)
        return self._port

    @property
    def app(self) -> TargetApp:
        """The served app (threads, handshakes, sessions); only after :meth:`start`."""
        if self._app is None:
            msg = "the target server is not started"
            raise RuntimeError(msg)
        return self._app

    @property
    def url(self) -> str:
        """The HTTP base URL, e.g. ``http://127.0.0.1:8000``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket base URL, e.g. ``ws://127.0.0.1:8000``."""
        return "ws" + self.url.removeprefix("http")

    @property
    def socketio_url(self) -> str:
        """The Socket.IO WebSocket endpoint a raw client connects to."""
        return f"{self.ws_url}{SOCKETIO_PATH}/?EIO=4&transport=websocket"

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving; return once ``/health`` answers. Raises if it does not in time."""
        if self._thread is not None:
            msg = "the target server was already started"
            raise RuntimeError(msg)
        _check_websocket_support()
        self._app = TargetApp(self.options)
        config = _config(self._app, self.host, self._requested_port, log_level=None)
        self._server = _Server(config, self._note_started)
        self._thread = threading.Thread(target=self._run, name="supervisor-target", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        if not self._started.wait(timeout) or self._port is None:
            self.stop()
            msg = (f"the target server failed to start on {self.host}:{self._requested_port}"
                   if self._failure is not None
                   else f"the target server did not start within {timeout}s")
            raise RuntimeError(msg) from self._failure
        try:
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _note_started(self, server: _Server) -> None:
        if server.started:
            self._port = server.bound_port()
        self._started.set()

    def _run(self) -> None:
        assert self._server is not None
        try:
            self._server.run()
        except BaseException as exc:  # noqa: BLE001 - uvicorn exits with SystemExit on bind errors
            self._failure = exc
        finally:
            self._started.set()  # never leave start() waiting on a dead thread

    def _wait_healthy(self, deadline: float) -> None:
        remaining = max(0.1, deadline - time.monotonic())
        # self.url is http://<host>:<port>, so urlopen never reads a file: URL.
        with urllib.request.urlopen(f"{self.url}/health", timeout=remaining) as response:  # noqa: S310
            if json.load(response) != {"status": "ok"}:
                msg = "the target server answered /health unexpectedly"
                raise RuntimeError(msg)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the server thread (bounded); idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("target_stop_timeout", timeout=timeout)
        if self._app is not None:
            self._app.close()

    def handshakes(self) -> list[dict[str, Any]]:
        """The Socket.IO connect attempts so far (see :class:`HandshakeLog`)."""
        return self.app.handshakes.entries()

    def thread(self, thread_id: str) -> dict[str, Any] | None:
        """A stored thread as ``resume_thread`` would send it, or None."""
        return self.app.threads.get(thread_id)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve_forever(host: str = "127.0.0.1", port: int = 8000,
                  options: TargetOptions | None = None, *, log_level: str = "info",
                  on_started: Callable[[str], None] | None = None) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; returns the exit status (0).

    ``on_started`` gets the base URL once the port is bound (with port 0, the
    only way to learn it). Must run in the main thread, where signals arrive.
    """
    _check_websocket_support()
    received: list[int] = []

    def started(server: _Server) -> None:
        if server.started and on_started is not None:
            shown = f"[{host}]" if ":" in host else host
            on_started(f"http://{shown}:{server.bound_port()}")

    def note_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    # uvicorn re-raises the signal it stopped for once it has shut down, so
    # the default action (death by SIGTERM, KeyboardInterrupt) would turn a
    # clean stop into a failure status; these handlers absorb that re-raise.
    previous = {sig: signal.signal(sig, note_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    app = TargetApp(options)
    try:
        _Server(_config(app, host, port, log_level=log_level), started).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.close()
    logger.info("target_stopped", signals=received)
    return 0
