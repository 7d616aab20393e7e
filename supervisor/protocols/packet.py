"""Socket.IO v5 packets over Engine.IO v4 message frames: the grammar alone (pure).

A Socket.IO packet is ``<type>[<attachments>-][/namespace,][ack id][JSON]``,
carried in an Engine.IO message frame (``4...``).

The packet grammar is written here rather than borrowed from python-socketio's
``socketio.packet.Packet``, which implements the same grammar but (1) can only
be imported through the ``socketio`` package, which pulls in its clients,
servers and python-engineio (about 500 modules and 0.3 s on import, and a new
hard dependency of the core package); (2) decodes an empty payload as an EVENT
with no data and accepts packet types 7-9; (3) turns an event whose data holds
``bytes`` into a packet list the caller must frame itself. The tests check this
grammar against python-socketio's ``Packet`` in both directions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from supervisor.protocols import binary
from supervisor.protocols.base import Frames

# Engine.IO v4 packet types (the frame's first character).
EIO_OPEN, EIO_CLOSE, EIO_PING, EIO_PONG, EIO_MESSAGE, EIO_UPGRADE, EIO_NOOP = "0123456"
# Socket.IO v5 packet types (the first character after Engine.IO's ``4``).
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

_DIGITS = frozenset("0123456789")

_DIGIT_MARKS = bytes(0x23 if 0x30 <= byte <= 0x39 else 0x2E for byte in range(256))
"""Maps each digit byte to ``#`` and every other byte to ``.``, to find runs of digits."""
_LONG_NUMBER = b"#" * 19
"""A run of digits as long as an integer past 64 bits needs: orjson reads that as a float."""


def dumps(value: Any) -> str:
    """Compact JSON as Socket.IO clients write it; NaN and infinities are refused."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def loads(text: str) -> Any:
    """JSON from the wire, as ``json.loads`` reads it; ValueError if it is not JSON.

    orjson reads a packet about twice as fast as ``json``, its check below
    included. Where the two differ, ``json``'s reading stands: orjson refuses
    NaN, infinities and lone surrogates (``json`` is asked again) and reads an
    integer past 64 bits as a float (text with 19 digits in a row goes to
    ``json`` from the start; a regular expression finding them cost more than
    ``json`` itself).
    """
    raw = text.encode("utf-8", "surrogatepass")  # orjson refuses a surrogate: json decides
    if _LONG_NUMBER not in raw.translate(_DIGIT_MARKS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # not JSON, or JSON only ``json`` reads: it decides
    try:
        return json.loads(text)
    except RecursionError:
        msg = "JSON nested too deeply"
        raise ValueError(msg) from None


def normalize_namespace(namespace: str) -> str:
    """``"chat"`` and ``"/chat"`` name the same namespace; framing characters are refused."""
    if not namespace:
        return "/"
    if any(char in namespace for char in ",?") or any(ord(char) < 32 for char in namespace):
        msg = f"invalid Socket.IO namespace: {namespace!r}"
        raise ValueError(msg)
    return namespace if namespace.startswith("/") else "/" + namespace


def namespace_part(namespace: str) -> str:
    """The namespace field of a packet: empty for the default namespace ``/``."""
    return "" if namespace == "/" else namespace + ","


def unpack_args(args: list[Any]) -> Any:
    """Event or ack arguments as one value: None for none, the value for one, else the list."""
    if not args:
        return None
    if len(args) == 1:
        return args[0]
    return list(args)


def pack_args(data: Any) -> list[Any]:
    """Ack arguments for ``data``: none for None, several for a tuple, else one."""
    if data is None:
        return []
    if isinstance(data, tuple):
        return list(data)
    return [data]


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded Socket.IO packet."""

    type: int
    namespace: str
    ack_id: int | None
    data: Any
    attachments: int = 0
    """Binary frames that follow (BINARY_EVENT and BINARY_ACK only)."""


def encode_packet(packet_type: int, namespace: str, data: Any = None,
                  ack_id: int | None = None, attachments: int = 0) -> str:
    """The Engine.IO message frame (``4...``) carrying one Socket.IO packet."""
    count = f"{attachments}-" if packet_type in (BINARY_EVENT, BINARY_ACK) else ""
    frame = f"{EIO_MESSAGE}{packet_type}{count}{namespace_part(namespace)}"
    if ack_id is not None:
        if isinstance(ack_id, bool) or not isinstance(ack_id, int) or ack_id < 0:
            msg = f"ack id must be a non-negative int, got {ack_id!r}"
            raise ValueError(msg)
        frame += str(ack_id)
    if data is not None:
        frame += dumps(data)
    return frame


def encode_frames(packet_type: int, namespace: str, data: Any,
                  ack_id: int | None = None) -> Frames:
    """The frames of one EVENT or ACK: one text frame, or a binary packet and its attachments."""
    try:
        # Most data holds no bytes, and JSON refuses bytes: try it as text first.
        return [encode_packet(packet_type, namespace, data, ack_id)]
    except TypeError:
        if not binary.has_binary(data):
            raise
    placeheld, attachments = binary.deconstruct(data)
    binary_type = BINARY_EVENT if packet_type == EVENT else BINARY_ACK
    return [encode_packet(binary_type, namespace, placeheld, ack_id, len(attachments)),
            *attachments]


def decode_packet(payload: str) -> Packet:
    """Parse a Socket.IO packet (the frame after Engine.IO's ``4``); ValueError if malformed."""
    if not payload or payload[0] not in _DIGITS or int(payload[0]) > BINARY_ACK:
        msg = f"unknown Socket.IO packet type in {payload[:20]!r}"
        raise ValueError(msg)
    packet_type = int(payload[0])
    rest = payload[1:]
    attachments = 0
    if packet_type in (BINARY_EVENT, BINARY_ACK):
        dash = rest.find("-")
        count = rest[:dash]
        if dash < 1 or dash > 4 or any(char not in _DIGITS for char in count):
            msg = "binary packet without a valid attachment count"
            raise ValueError(msg)
        attachments, rest = int(count), rest[dash + 1:]
        if attachments > binary.MAX_ATTACHMENTS:
            msg = f"binary packet announces {attachments} attachments"
            raise ValueError(msg)
    namespace = "/"
    if rest.startswith("/"):
        comma = rest.find(",")
        namespace, rest = (rest, "") if comma < 0 else (rest[:comma], rest[comma + 1:])
        namespace = namespace.split("?", 1)[0] or "/"
    digits = 0
    while digits < len(rest) and rest[digits] in _DIGITS:
        digits += 1
    if digits > 20:
        msg = "ack id is too long"
        raise ValueError(msg)
    ack_id = int(rest[:digits]) if digits else None
    body = rest[digits:]
    data = loads(body) if body else None
    return Packet(packet_type, namespace, ack_id, data, attachments)
