"""Wire protocols: pure framing and identity, no I/O, no logging, no clock.

Each protocol turns a session's identity into a handshake, and frames into
actions for the session actor (``base.Action``). The session actor makes one
codec per connection, so per-connection protocol state dies with it.
"""

from __future__ import annotations

from supervisor.protocols.base import Codec, Handshake, Identity
from supervisor.protocols.chainlit import CONFIRM_RESUME, ChainlitCodec, DetectVersion
from supervisor.protocols.socketio import SocketIOCodec
from supervisor.protocols.websocket import WebSocketCodec
from supervisor.spec import SessionSpec


def make_codec(spec: SessionSpec, identity: Identity,
               detect_version: DetectVersion | None = None, *,
               confirm_resume: bool = CONFIRM_RESUME) -> Codec:
    """The codec for one connection of ``spec`` carrying ``identity``.

    ``detect_version`` (Chainlit only) is required when ``spec.chainlit_version``
    is ``"auto"``; ``confirm_resume`` (Chainlit only) makes ``Ready`` wait for the
    server's ``resume_thread``/``resume_thread_error`` when a thread is resumed.
    """
    if spec.protocol == "websocket":
        return WebSocketCodec(spec, identity)
    if spec.protocol == "socketio":
        return SocketIOCodec(spec, identity)
    if spec.protocol == "chainlit":
        if spec.chainlit_version == "auto" and detect_version is None:
            msg = ("protocol 'chainlit' with chainlit_version='auto' needs detect_version "
                   "(or set SessionSpec(chainlit_version='2' or '1'))")
            raise ValueError(msg)
        return ChainlitCodec(spec, identity, detect_version, confirm_resume=confirm_resume)
    msg = f"protocol {spec.protocol!r} is not implemented"
    raise NotImplementedError(msg)


__all__ = ["Codec", "DetectVersion", "Handshake", "Identity", "make_codec"]
