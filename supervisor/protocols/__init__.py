"""Wire protocols: pure framing and identity, no I/O, no logging, no clock.

Each protocol turns a session's identity into a handshake, and frames into
actions for the session (``base.Action``). A codec is made per connection, so
per-connection protocol state dies with it. This package imports nothing from
``supervisor`` outside itself (a test pins that): it reads a
``ProtocolConfig``, never the session's spec.
"""

from __future__ import annotations

from supervisor.protocols.base import Codec, Handshake, Identity, VersionLookup
from supervisor.protocols.chainlit import CONFIRM_RESUME, ChainlitCodec
from supervisor.protocols.config import DEFAULT_THREAD_HEADER, ProtocolConfig
from supervisor.protocols.socketio import SocketIOCodec
from supervisor.protocols.websocket import WebSocketCodec


def make_codec(config: ProtocolConfig, identity: Identity, *,
               confirm_resume: bool = CONFIRM_RESUME) -> Codec:
    """The codec for one connection described by ``config`` carrying ``identity``.

    ``confirm_resume`` (Chainlit only) makes ``Ready`` wait for the server's
    ``resume_thread``/``resume_thread_error`` when a thread is resumed. With
    ``chainlit_version="auto"`` the codec asks the ``lookup_version`` handed to
    its ``handshake()``.
    """
    if config.protocol == "websocket":
        return WebSocketCodec(config, identity)
    if config.protocol == "socketio":
        return SocketIOCodec(config, identity)
    if config.protocol == "chainlit":
        return ChainlitCodec(config, identity, confirm_resume=confirm_resume)
    msg = f"protocol {config.protocol!r} is not implemented"
    raise NotImplementedError(msg)


__all__ = ["DEFAULT_THREAD_HEADER", "Codec", "Handshake", "Identity", "ProtocolConfig",
           "VersionLookup", "make_codec"]
