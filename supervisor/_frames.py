"""WebSocket framing, client side (RFC 6455), without I/O (internal).

The transport feeds bytes read from the socket to a :class:`FrameDecoder` and
gets whole messages and control frames back; it asks :func:`encode_frame` for
the bytes of each frame it writes. Every byte from the network is hostile, so
the decoder checks a frame's announced length against the message bound
*before* it keeps any of its payload, fragments included: a peer announcing
50 MB costs the header it sent, not 50 MB.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA_OPCODES = frozenset({OP_TEXT, OP_BINARY})
_CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_MAX_CONTROL_PAYLOAD = 125

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009


class FrameError(Exception):
    """Internal: the peer broke the framing rules; close with ``code``."""

    def __init__(self, reason: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code


class FrameTooBig(FrameError):
    """Internal: a message would exceed the bound; ``announced`` is its size so far."""

    def __init__(self, announced: int, limit: int) -> None:
        super().__init__(f"message of {announced} bytes exceeds the {limit}-byte limit",
                         CLOSE_TOO_BIG)
        self.announced = announced
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Message:
    """Internal: one whole data message (fragments joined) or one control frame."""

    opcode: int
    payload: bytes


def encode_frame(opcode: int, payload: bytes, mask_key: bytes | None = None) -> bytes:
    """One final, masked client frame (clients must mask every frame, RFC 6455 5.3)."""
    key = os.urandom(4) if mask_key is None else mask_key
    length = len(payload)
    head = bytes([0x80 | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    return head + key + mask(payload, key)


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (one big-int XOR, not a byte loop)."""
    if not payload:
        return b""
    length = len(payload)
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big")


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the status code, then a short UTF-8 reason."""
    return struct.pack("!H", code) + reason.encode("utf-8")[:_MAX_CONTROL_PAYLOAD - 2]


def close_code(payload: bytes) -> int:
    """The status code of a received close frame (1005: none given)."""
    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005


class FrameDecoder:
    """Internal: bytes in, :class:`Message` out; bounded by ``max_message_bytes``.

    ``feed()`` bytes as they arrive, then call ``next_message()`` until it
    returns None. It raises :class:`FrameError` (or :class:`FrameTooBig`) on
    the first rule the peer breaks; the connection is then over.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self._limit = max_message_bytes
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_bytes = 0
        self._fragment_opcode: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed input plus the fragments of an unfinished message."""
        return len(self._buffer) + self._fragment_bytes

    def wants_more(self) -> bool:
        """True when the next frame is not complete in the buffer yet."""
        return self._frame_size() is None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> Message | None:
        """The next whole message or control frame, or None until more bytes are fed."""
        while (frame := self._next_frame()) is not None:
            fin, opcode, payload = frame
            if opcode in _CONTROL_OPCODES:
                return Message(opcode, payload)
            if opcode == OP_CONTINUATION:
                if self._fragment_opcode is None:
                    msg = "continuation frame without a message to continue"
                    raise FrameError(msg)
            elif self._fragment_opcode is not None:
                msg = "new data frame inside a fragmented message"
                raise FrameError(msg)
            else:
                self._fragment_opcode = opcode
            self._fragments.append(payload)
            self._fragment_bytes += len(payload)
            if fin:
                message = Message(self._fragment_opcode, b"".join(self._fragments))
                self._fragments, self._fragment_bytes, self._fragment_opcode = [], 0, None
                return message
        return None

    def _frame_size(self) -> int | None:
        """Header plus payload length of the next frame, once its header is in; checks it."""
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        if first & 0x70:
            msg = "reserved bits set (no extension was negotiated)"
            raise FrameError(msg)
        if second & 0x80:
            msg = "the server masked a frame"
            raise FrameError(msg)
        opcode = first & 0x0F
        length = second & 0x7F
        header = 2
        if length == 126:
            if len(buffer) < 4:
                return None
            length, header = struct.unpack_from("!H", buffer, 2)[0], 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            length, header = struct.unpack_from("!Q", buffer, 2)[0], 10
        if opcode in _CONTROL_OPCODES:
            if length > _MAX_CONTROL_PAYLOAD or not first & 0x80:
                msg = "control frame fragmented or over 125 bytes"
                raise FrameError(msg)
        elif opcode not in _DATA_OPCODES and opcode != OP_CONTINUATION:
            msg = f"unknown opcode {opcode:#x}"
            raise FrameError(msg)
        elif self._fragment_bytes + length > self._limit:
            # Refused on the header alone: nothing of the payload is kept.
            raise FrameTooBig(self._fragment_bytes + length, self._limit)
        return header + length

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        size = self._frame_size()
        if size is None or len(self._buffer) < size:
            return None
        first, second = self._buffer[0], self._buffer[1]
        header = {126: 4, 127: 10}.get(second & 0x7F, 2)
        payload = bytes(self._buffer[header:size])
        del self._buffer[:size]
        return bool(first & 0x80), first & 0x0F, payload
