"""The target's ASGI application: Chainlit's stack (python-socketio on ASGI), no framework.

Requests under ``/ws/socket.io`` go to python-socketio; everything else goes
to :class:`~supervisor.target.routes.Routes`. When connections may be cut, each
WebSocket gets a :class:`~supervisor.target.faults.LinkCutter` around its ASGI
channel first, so faults act below Engine.IO.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio  # type: ignore[import-untyped]

from supervisor.target.chat import ChainlitChat
from supervisor.target.faults import LINK_SCOPE_KEY, FaultInjector, LinkCutter
from supervisor.target.identity import HandshakeLog
from supervisor.target.message_log import MessageLog
from supervisor.target.options import TargetOptions
from supervisor.target.routes import Receive, Routes, Scope, Send
from supervisor.target.threads import ThreadStore


def _library_logger(name: str) -> logging.Logger:
    """A logger for python-socketio / python-engineio that drops their per-packet INFO.

    Given ``False`` they would attach their own stderr handlers; given a
    logger they use it as is and log every packet at INFO. Capping ours at
    WARNING keeps frames out of the logs whatever the application's level.
    """
    library_logger = logging.getLogger(f"supervisor.target.{name}")
    library_logger.setLevel(logging.WARNING)
    return library_logger


SOCKETIO_PATH = "/ws/socket.io"
"""Where Chainlit serves Socket.IO: ``ws://HOST:PORT/ws/socket.io/?EIO=4&transport=websocket``."""


class TargetApp:
    """The ASGI app, plus the state tests and load tests may inspect."""

    def __init__(self, options: TargetOptions | None = None) -> None:
        self.options = options or TargetOptions()
        self.threads = ThreadStore()
        self.handshakes = HandshakeLog(self.options.handshake_log)
        self.messages = MessageLog(self.options.message_log)
        self.faults = FaultInjector(self.options)
        # cors_allowed_origins=[] turns Origin checks off, as Chainlit configures it.
        self.sio: Any = socketio.AsyncServer(
            async_mode="asgi", cors_allowed_origins=[], logger=_library_logger("socketio"),
            engineio_logger=_library_logger("engineio"),
            ping_interval=self.options.ping_interval, ping_timeout=self.options.ping_timeout)
        self.chat = ChainlitChat(self.sio, self.options, self.threads, self.handshakes,
                                 self.faults, self.messages)
        self._inner: Any = socketio.ASGIApp(
            self.sio, other_asgi_app=Routes(self.options, self.faults),
            socketio_path=SOCKETIO_PATH.lstrip("/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "websocket" and self.faults.cuts_links:
            link = LinkCutter(receive, send)
            await self._inner({**scope, LINK_SCOPE_KEY: link}, link.receive, link.send)
        else:
            await self._inner(scope, receive, send)

    def close(self) -> None:
        """Release what outlives the event loop (the log files)."""
        self.handshakes.close()
        self.messages.close()
