"""A python-socketio ``AsyncServer`` on uvicorn in a background thread, for the interop tests.

Configurable where real deployments differ: the Engine.IO path, the namespace
and ``always_connect``. A connect whose auth has ``{"token": "good"}`` is
accepted; any other is refused with ``ConnectionRefusedError("bad token",
{"code": 4001})``. ``"echo"`` acks with its data. ``connections`` logs what
each connect carried.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import socketio
import uvicorn

HOST = "127.0.0.1"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started_event = started

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        self._started_event.set()


class PySocketIOServer:
    """One python-socketio server; a context manager. ``url`` once started."""

    def __init__(self, *, path: str = "socket.io", namespace: str = "/",
                 always_connect: bool = False) -> None:
        self.path = path
        self.namespace = namespace
        self.connections: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.sio = socketio.AsyncServer(async_mode="asgi", always_connect=always_connect)
        self.sio.on("connect", self._connect, namespace=namespace)
        self.sio.on("echo", self._echo, namespace=namespace)
        app = socketio.ASGIApp(self.sio, socketio_path=path)
        config = uvicorn.Config(app, host=HOST, port=0, lifespan="off", log_config=None,
                                access_log=False, timeout_graceful_shutdown=2)
        self._started = threading.Event()
        self._server = _Server(config, self._started)
        self._thread = threading.Thread(target=self._server.run, name="pysio", daemon=True)
        self.url = ""

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        record = {"sid": sid, "auth": auth, "path": environ.get("PATH_INFO"),
                  "thread": environ.get("HTTP_X_CHAINLIT_THREAD_ID")}
        if not (isinstance(auth, dict) and auth.get("token") == "good"):
            with self._lock:
                self.refusals.append(record)
            raise socketio.exceptions.ConnectionRefusedError("bad token", {"code": 4001})
        with self._lock:
            self.connections.append(record)

    async def _echo(self, sid: str, data: Any) -> Any:
        return data

    def start(self, timeout: float = 10.0) -> PySocketIOServer:
        self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            msg = f"python-socketio server did not start within {timeout}s"
            raise RuntimeError(msg)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{HOST}:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(10)

    def __enter__(self) -> PySocketIOServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
