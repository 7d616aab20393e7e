"""The embedded Chainlit-compatible target server (``supervisor target``).

A chat server for tests and load tests, built on Chainlit's own stack
(python-socketio's ``AsyncServer`` on ASGI, served by uvicorn), that follows
Chainlit 2.x's wire protocol and session rules (1.x's header identity on
request), streams echo replies, remembers threads so resumes replay them, logs
every handshake, and injects faults on demand::

    from supervisor.target import TargetServer

    with TargetServer(port=0, token_delay=0.01) as target:
        print(target.url, target.socketio_url)

It shares nothing with the client side of the package but the logging setup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor._lazy import on_first_use
from supervisor.target.command import add_arguments, main, options_from_args
from supervisor.target.options import OPAQUE_REFUSAL, TargetOptions

if TYPE_CHECKING:
    from supervisor.target.app import SOCKETIO_PATH, TargetApp
    from supervisor.target.server import TargetServer, serve_forever

# The server's stack (python-socketio, uvicorn, aiohttp: 0.45 s of imports) only when
# used: ``supervisor loadtest`` reads the target's options against any server.
__getattr__ = on_first_use(globals(), {
    "SOCKETIO_PATH": "supervisor.target.app", "TargetApp": "supervisor.target.app",
    "TargetServer": "supervisor.target.server", "serve_forever": "supervisor.target.server"})

__all__ = [
    "OPAQUE_REFUSAL",
    "SOCKETIO_PATH",
    "TargetApp",
    "TargetOptions",
    "TargetServer",
    "add_arguments",
    "main",
    "options_from_args",
    "serve_forever",
]
