"""Wire protocols: pure framing and identity, no I/O, no logging, no clock.

Each protocol turns a session's identity into a handshake, and frames into
actions for the session actor (``base.Action``). The session actor makes one
codec per connection, so per-connection protocol state dies with it.
"""

from __future__ import annotations

from supervisor.protocols.base import Codec, Handshake, Identity
from supervisor.protocols.websocket import WebSocketCodec
from supervisor.spec import SessionSpec


def make_codec(spec: SessionSpec, identity: Identity) -> Codec:
    """The codec for one connection of ``spec`` carrying ``identity``."""
    if spec.protocol == "websocket":
        return WebSocketCodec(spec, identity)
    msg = f"protocol {spec.protocol!r} is not implemented yet"
    raise NotImplementedError(msg)


__all__ = ["Codec", "Handshake", "Identity", "make_codec"]
