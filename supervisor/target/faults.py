"""Fault injection: refused and delayed connects, and connections cut mid-session.

A cut must look like a network fault, not like a polite server: no Socket.IO
disconnect (``41``) and no Engine.IO close (``1``) may precede it, or a client
would take it for a deliberate goodbye (socket.io-client does not reconnect
after one). So :class:`LinkCutter` sits between uvicorn and the protocol on
the ASGI level, closes the WebSocket itself and tells the protocol above that
the peer went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from supervisor.target.options import TargetOptions

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LINK_SCOPE_KEY = "supervisor.target.link"
"""Where a WebSocket scope carries its :class:`LinkCutter` (python-socketio
hands the scope on to the connect handler as ``environ["asgi.scope"]``)."""

CUT_CLOSE_CODE = 1011  # "internal error": what a crashing server would send

CUT_EVENT = "supervisor.target.cut"
"""Emitting this event to a sid cuts its link once everything emitted before
it is on the wire: the frame queues behind them in Engine.IO's send queue,
and :meth:`LinkCutter.send` turns it into the cut instead of sending it."""
_CUT_FRAME = f'42["{CUT_EVENT}"]'  # Engine.IO message + Socket.IO event, default namespace


class FaultInjector:
    """Seeded dice for the fault options; used from the event loop thread only."""

    def __init__(self, options: TargetOptions) -> None:
        self._options = options
        self._rng = random.Random(options.seed)

    @property
    def cuts_links(self) -> bool:
        """Whether connections may be cut, so WebSockets need a :class:`LinkCutter`."""
        return self._options.drop_probability > 0

    def should_refuse(self) -> bool:
        """Roll for ``refuse_probability``."""
        return self._roll(self._options.refuse_probability)

    def should_drop(self) -> bool:
        """Roll for ``drop_probability``."""
        return self._roll(self._options.drop_probability)

    async def delay_handshake(self) -> None:
        """Wait ``handshake_delay`` seconds, if any."""
        if self._options.handshake_delay > 0:
            await asyncio.sleep(self._options.handshake_delay)

    def _roll(self, probability: float) -> bool:
        # Draw only when the option is on, so turning one fault on does not
        # shift the sequence another fault sees for the same seed.
        return probability > 0 and self._rng.random() < probability


class LinkCutter:
    """Wraps one WebSocket's ASGI ``receive``/``send`` so it can be cut at any time."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._cut = asyncio.Event()
        self._pending: asyncio.Future[Message] | None = None

    @property
    def is_cut(self) -> bool:
        """Whether :meth:`cut` has run."""
        return self._cut.is_set()

    async def receive(self) -> Message:
        """The next ASGI event, or a disconnect as soon as the link is cut."""
        if self._cut.is_set():
            return {"type": "websocket.disconnect", "code": 1006}
        # Keep one pending read across calls: a read that loses the race to
        # the cut must not swallow a frame that a later call should return.
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._receive())
        cut_wait: asyncio.Future[Any] = asyncio.ensure_future(self._cut.wait())
        waiters: set[asyncio.Future[Any]] = {self._pending, cut_wait}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut_wait.cancel()
        if self._pending.done():
            pending, self._pending = self._pending, None
            return pending.result()
        self._pending.cancel()
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(self, message: Message) -> None:
        """Forward ``message`` unless the link is cut (then the peer is gone)."""
        if message.get("type") == "websocket.send" and message.get("text") == _CUT_FRAME:
            await self.cut()
        elif not self._cut.is_set():
            await self._send(message)

    async def cut(self) -> None:
        """Close the WebSocket with no protocol goodbye, and end reads above."""
        if self._cut.is_set():
            return
        self._cut.set()
        # Already closed by the peer (OSError, or uvicorn's RuntimeError): cut anyway.
        with contextlib.suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": CUT_CLOSE_CODE})
