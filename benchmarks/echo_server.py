"""Loopback WebSocket echo server for the benchmarks (runs in its own process).

Every text frame is answered with ``{"thread": <X-Chainlit-Thread-Id of this
connection's handshake>, "text": <the frame>}``, so a client can check that an
echo came back on a connection opened for the thread it expects.

    python benchmarks/echo_server.py [--port 0] [--backlog 8192]

Prints ``PORT <n>`` on stdout once listening, then serves until SIGTERM/SIGINT
or until ``--max-seconds`` have passed (a forgotten server never runs forever).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys

from fd_limit import raise_fd_limit
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError

THREAD_HEADER = "X-Chainlit-Thread-Id"
abnormal_closes = 0
"""Connections the client dropped without a close frame (aborted handshakes, say)."""




async def echo(connection: ServerConnection) -> None:
    global abnormal_closes
    request = connection.request
    thread = request.headers.get(THREAD_HEADER) if request is not None else None
    try:
        async for message in connection:
            if isinstance(message, str):
                await connection.send(json.dumps({"thread": thread, "text": message}))
    except ConnectionClosedError:
        # Counted, not logged: a traceback per aborted connection would drown the log.
        abnormal_closes += 1


async def main(port: int, backlog: int, max_seconds: float) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    # No server pings: keepalive traffic would only add noise to the client's
    # measurements. Compression off: the clients do not negotiate it either,
    # and it keeps per-connection memory on the server small. A long opening
    # timeout: a client starved of CPU must not be cut off by the server, as
    # this server is only here to measure the client.
    async with serve(echo, "127.0.0.1", port, backlog=backlog, ping_interval=None,
                     compression=None, max_queue=16, open_timeout=120) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {bound}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop, timeout=max_seconds)
    print(f"abnormal closes: {abnormal_closes}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--backlog", type=int, default=8192, help="listen backlog")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="exit after this long even if nobody stops the server")
    args = parser.parse_args()
    limit = raise_fd_limit()
    # No cyclic GC in the server: a full collection over a few thousand
    # connections paused it for 30-90 ms in the middle of a 0.1 s message
    # phase, which the client's figure then carried (docs/benchmarks.md). The
    # process lives for one run only, so what the collector would free waits.
    gc.disable()
    print(f"FD_LIMIT {limit}", file=sys.stderr, flush=True)
    asyncio.run(main(args.port, args.backlog, args.max_seconds))
