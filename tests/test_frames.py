"""WebSocket framing (pure): bounds checked on the header, rules of RFC 6455 enforced."""

from __future__ import annotations

import struct

import pytest

from supervisor import _frames as frames


def server_frame(payload: bytes, opcode: int = frames.OP_TEXT, *, fin: bool = True,
                 announce: int | None = None, first: int | None = None,
                 masked: bool = False) -> bytes:
    length = len(payload) if announce is None else announce
    head = bytes([first if first is not None else (0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    return head + (b"\0\0\0\0" if masked else b"") + payload


def decode(data: bytes, limit: int = 1000) -> list[frames.Message]:
    decoder = frames.FrameDecoder(limit)
    decoder.feed(data)
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    return out


class TestDecoder:
    """Bytes in, whole messages out; each broken rule raises FrameError."""

    def test_fragments_join_and_control_frames_interleave(self) -> None:
        """A ping between fragments comes out first; the message comes out whole."""
        data = (server_frame(b"he", fin=False) + server_frame(b"", frames.OP_PING)
                + server_frame(b"llo", frames.OP_CONTINUATION))
        assert decode(data) == [frames.Message(frames.OP_PING, b""),
                                frames.Message(frames.OP_TEXT, b"hello")]

    def test_bytes_may_arrive_one_at_a_time(self) -> None:
        """A frame split anywhere decodes the same (16-bit length included)."""
        data = server_frame(b"x" * 300, frames.OP_BINARY)
        decoder = frames.FrameDecoder(1000)
        out = []
        for byte in data:
            decoder.feed(bytes([byte]))
            if (message := decoder.next_message()) is not None:
                out.append(message)
        assert out == [frames.Message(frames.OP_BINARY, b"x" * 300)]

    @pytest.mark.parametrize(("data", "announced"), [
        (server_frame(b"", announce=50_000_000), 50_000_000),
        (server_frame(b"a" * 600, fin=False)
         + server_frame(b"", frames.OP_CONTINUATION, announce=600), 1200),
    ], ids=["one-frame", "fragments"])
    def test_too_big_is_refused_on_the_header(self, data: bytes, announced: int) -> None:
        """The announced length alone is refused (code 1009); no payload is waited for."""
        with pytest.raises(frames.FrameTooBig) as caught:
            decode(data)
        assert (caught.value.announced, caught.value.code) == (announced, 1009)

    @pytest.mark.parametrize("data", [
        server_frame(b"x", masked=True),
        server_frame(b"x", first=0xC1),                                  # RSV1
        server_frame(b"x" * 126, frames.OP_PING),                       # control > 125
        server_frame(b"x", frames.OP_PING, fin=False),                  # fragmented control
        server_frame(b"x", frames.OP_CONTINUATION),                     # nothing to continue
        server_frame(b"a", fin=False) + server_frame(b"b"),             # new message mid-way
        server_frame(b"x", 0x3),                                        # reserved opcode
    ], ids=["masked", "rsv", "big-control", "fragmented-control", "orphan-continuation",
            "interleaved", "opcode"])
    def test_protocol_violations_raise(self, data: bytes) -> None:
        """Every rule the server breaks ends decoding with a 1002 FrameError."""
        with pytest.raises(frames.FrameError) as caught:
            decode(data)
        assert caught.value.code == 1002


class TestEncoder:
    """Client frames are final and masked."""

    @pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
    def test_round_trip_through_the_mask(self, size: int) -> None:
        """encode_frame's mask undone gives the payload back, at each length boundary."""
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        data = frames.encode_frame(frames.OP_BINARY, payload, b"\x01\x02\x03\x04")
        assert data[0] == 0x82
        assert data[1] & 0x80
        header = {126: 4, 127: 10}.get(data[1] & 0x7F, 2)
        key, body = data[header:header + 4], data[header + 4:]
        assert frames.mask(body, key) == payload
