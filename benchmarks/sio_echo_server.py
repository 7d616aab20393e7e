"""Loopback Socket.IO echo server for the python-socketio peer (runs in its own process).

python-socketio's ``AsyncServer`` under uvicorn. The thread id comes from the
Socket.IO connect ``auth`` payload (``{"thread": ...}``), the way Chainlit 2.x
carries identity; every ``message`` event is answered with a ``message`` event
``{"thread": <that thread>, "text": <the data>}``.

    python benchmarks/sio_echo_server.py [--port 0] [--backlog 8192]

Prints ``PORT <n>`` on stdout once listening; serves until SIGTERM/SIGINT or
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import socket
import sys
from typing import Any

import socketio
import uvicorn
from fd_limit import raise_fd_limit


def make_app() -> Any:
    # Pings every 25 s (the default) would land in the middle of a phase at
    # N=5000; a long interval keeps keepalive traffic out of the measurement.
    sio = socketio.AsyncServer(async_mode="asgi", ping_interval=600, ping_timeout=600,
                               cors_allowed_origins=[])

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        thread = auth.get("thread") if isinstance(auth, dict) else None
        await sio.save_session(sid, {"thread": thread})

    async def message(sid: str, data: Any) -> None:
        session = await sio.get_session(sid)
        await sio.emit("message", {"thread": session["thread"], "text": data}, to=sid)

    # Registered by call, not decorator: the handlers stay typed.
    sio.on("connect", connect)
    sio.on("message", message)
    return socketio.ASGIApp(sio, socketio_path="socket.io")


async def main(port: int, backlog: int, max_seconds: float) -> None:
    # Bind first, so the port can be printed before uvicorn starts accepting.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(make_app(), log_level="warning", backlog=backlog,
                            ws_ping_interval=None, ws_ping_timeout=None, lifespan="off",
                            access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(serving), timeout=max_seconds)
    server.should_exit = True
    await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--backlog", type=int, default=8192, help="listen backlog")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="exit after this long even if nobody stops the server")
    args = parser.parse_args()
    print(f"FD_LIMIT {raise_fd_limit()}", file=sys.stderr, flush=True)
    # No cyclic GC in the server: a full collection over a few thousand
    # connections paused it for 30-90 ms in the middle of a 0.1 s message
    # phase, which the client's figure then carried (docs/benchmarks.md). The
    # process lives for one run only, so what the collector would free waits.
    gc.disable()
    asyncio.run(main(args.port, args.backlog, args.max_seconds))
