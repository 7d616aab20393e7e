"""The sans-IO frame decoder (``supervisor._frames``): tables of bytes in, events or errors out."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor._frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    FrameError,
    FrameTooBig,
    ProtocolViolation,
    encode_frame,
)

LIMIT = 1024


def frame(payload: bytes, opcode: int = OP_TEXT, *, fin: bool = True, rsv: int = 0,
          mask: bytes | None = None, announce: int | None = None) -> bytes:
    """One server frame as it goes on the wire; ``announce`` lies about the length."""
    length = len(payload) if announce is None else announce
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    masked = 0x80 if mask is not None else 0
    if length < 126:
        head += bytes([masked | length])
    elif length < 1 << 16:
        head += bytes([masked | 126]) + struct.pack("!H", length)
    else:
        head += bytes([masked | 127]) + struct.pack("!Q", length)
    return head + (mask or b"") + payload


def decode(data: bytes, limit: int = LIMIT, splits: list[int] | None = None
           ) -> tuple[list[tuple[int, bytes]], FrameError | None]:
    """Every event, and the error that stopped the decoder (None: none), feeding in pieces."""
    decoder = FrameDecoder(limit)
    events: list[tuple[int, bytes]] = []
    cuts = sorted({0, len(data), *(splits or [])})
    for start, end in itertools.pairwise(cuts):
        decoder.feed(data[start:end])
        try:
            while (event := decoder.next()) is not None:
                events.append(event)
        except FrameError as exc:
            return events, exc
    return events, None


class TestMessages:
    """Whole messages and control frames come out in wire order."""

    @pytest.mark.parametrize(("wire", "expected"), [
        (frame(b"hi"), [(OP_TEXT, b"hi")]),
        (frame(b""), [(OP_TEXT, b"")]),
        (frame(b"\x00\xff", OP_BINARY), [(OP_BINARY, b"\x00\xff")]),
        (frame(b"x" * 126), [(OP_TEXT, b"x" * 126)]),
        (frame(b"y" * 70000, OP_BINARY), [(OP_BINARY, b"y" * 70000)]),
        (frame(b"a", fin=False) + frame(b"b", 0x0, fin=False) + frame(b"c", 0x0),
         [(OP_TEXT, b"abc")]),
        (frame(b"a", OP_BINARY, fin=False) + frame(b"p", OP_PING) + frame(b"b", 0x0),
         [(OP_PING, b"p"), (OP_BINARY, b"ab")]),
        (frame(b"", OP_PONG) + frame(struct.pack("!H", 1000), OP_CLOSE),
         [(OP_PONG, b""), (OP_CLOSE, b"\x03\xe8")]),
        (frame(b"1") + frame(b"2") + frame(b"3"), [(OP_TEXT, b"1"), (OP_TEXT, b"2"),
                                                    (OP_TEXT, b"3")]),
    ], ids=["text", "empty", "binary", "16-bit-length", "64-bit-length", "fragments",
            "ping-between-fragments", "pong-close", "three"])
    def test_decodes(self, wire: bytes, expected: list[tuple[int, bytes]]) -> None:
        """Fed at once or a byte at a time, the same events come out."""
        assert decode(wire, limit=1 << 20) == (expected, None)
        assert decode(wire, limit=1 << 20, splits=list(range(len(wire)))) == (expected, None)

    def test_events_are_taken_one_at_a_time(self) -> None:
        """next() hands out one event per call; the rest stay until asked for."""
        decoder = FrameDecoder(LIMIT)
        decoder.feed(frame(b"one") + frame(b"two"))
        assert decoder.next() == (OP_TEXT, b"one")
        assert decoder.buffered == len(frame(b"two"))
        assert decoder.next() == (OP_TEXT, b"two")
        assert decoder.next() is None
        assert decoder.buffered == 0

    def test_partial_header_waits(self) -> None:
        """A frame cut inside its 64-bit length gives nothing until the rest comes."""
        wire = frame(b"z" * 70000, OP_BINARY)
        decoder = FrameDecoder(1 << 20)
        decoder.feed(wire[:5])
        assert decoder.next() is None
        decoder.feed(wire[5:])
        assert decoder.next() == (OP_BINARY, b"z" * 70000)


class TestBounds:
    """Sizes are refused on the header, before the payload is kept."""

    def test_message_over_the_limit_is_refused_on_its_header(self) -> None:
        """A frame announcing 50 MB fails with FrameTooBig after only its header."""
        decoder = FrameDecoder(LIMIT)
        decoder.feed(frame(b"only-the-start", OP_BINARY, announce=50 * 1024 * 1024))
        with pytest.raises(FrameTooBig) as caught:
            decoder.next()
        assert (caught.value.announced, caught.value.limit) == (50 * 1024 * 1024, LIMIT)
        assert decoder.buffered == 0

    def test_fragments_count_towards_the_limit(self) -> None:
        """A continuation that takes the message past the limit is refused on its header."""
        events, error = decode(frame(b"a" * 600, fin=False) + frame(b"", 0x0, announce=600))
        assert events == []
        assert isinstance(error, FrameTooBig)
        assert error.announced == 1200

    def test_exactly_the_limit_is_accepted(self) -> None:
        """A message of exactly max_message_bytes passes."""
        assert decode(frame(b"a" * 1000, fin=False) + frame(b"b" * 24, 0x0)) == (
            [(OP_TEXT, b"a" * 1000 + b"b" * 24)], None)

    @pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE, 0x3, 0xB])
    def test_huge_control_frame_is_refused_on_its_header(self, opcode: int) -> None:
        """A non-data frame announcing 2**40 bytes is a violation, whatever its opcode."""
        events, error = decode(frame(b"x" * 64, opcode, announce=1 << 40))
        assert isinstance(error, ProtocolViolation)
        assert "control frame carries at most 125" in str(error)
        assert events == []


class TestViolations:
    """What RFC 6455 forbids a server is a typed ProtocolViolation, and it sticks."""

    @pytest.mark.parametrize(("wire", "words"), [
        (frame(b"x", rsv=1), "reserved bits"),
        (frame(b"x", rsv=4), "reserved bits"),
        (frame(b"x", mask=b"abcd"), "masked"),
        (frame(b"x", 0x3), "reserved opcode"),
        (frame(b"x", 0xF), "reserved opcode"),
        (frame(b"x", OP_PING, fin=False), "fragmented control"),
        (frame(b"x", 0x0), "continuation frame without a message"),
        (frame(b"a", fin=False) + frame(b"b"), "new message inside one"),
        (bytes([0x82, 127]) + (1 << 63).to_bytes(8, "big"), "most significant bit"),
    ], ids=["rsv1", "rsv3", "masked", "opcode-3", "opcode-f", "fragmented-ping",
            "orphan-continuation", "interleaved", "length-msb"])
    def test_violation(self, wire: bytes, words: str) -> None:
        """The decoder raises ProtocolViolation naming the fault."""
        events, error = decode(wire)
        assert isinstance(error, ProtocolViolation)
        assert words in str(error)
        assert events == []

    def test_the_error_sticks(self) -> None:
        """After a violation every call raises it again and later bytes are ignored."""
        decoder = FrameDecoder(LIMIT)
        decoder.feed(frame(b"x", 0x3))
        with pytest.raises(ProtocolViolation) as first:
            decoder.next()
        decoder.feed(frame(b"fine"))
        with pytest.raises(ProtocolViolation) as second:
            decoder.next()
        assert second.value is first.value

    def test_messages_before_a_violation_still_come_out(self) -> None:
        """Events decoded before the bad frame are handed out first."""
        assert decode(frame(b"ok") + frame(b"x", 0x3))[0] == [(OP_TEXT, b"ok")]


@st.composite
def wires(draw: st.DrawFn) -> bytes:
    """Mostly valid server frames with hostile ones mixed in, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        payload = draw(st.binary(max_size=200))
        opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY, 0x0, OP_PING, OP_PONG, OP_CLOSE,
                                       0x3, 0xB]))
        parts.append(frame(payload[:125] if opcode >= 0x8 else payload, opcode,
                           fin=draw(st.booleans()), rsv=draw(st.sampled_from([0, 0, 0, 2]))))
    return b"".join(parts)


class TestHostileBytes:
    """Any bytes, split anywhere: the same events, and only the decoder's own errors."""

    @settings(max_examples=400, deadline=None)
    @given(wire=wires(), splits=st.lists(st.integers(0, 2000), max_size=12),
           limit=st.sampled_from([0, 10, 300, 1 << 20]))
    def test_split_points_do_not_matter(self, wire: bytes, splits: list[int],
                                        limit: int) -> None:
        """Fed in random pieces, the decoder gives exactly what it gives fed at once."""
        whole = decode(wire, limit)  # any exception but FrameError fails the test here
        pieces = decode(wire, limit, [s for s in splits if s < len(wire)])
        assert pieces[0] == whole[0]
        assert type(pieces[1]) is type(whole[1])
        assert str(pieces[1]) == str(whole[1])
        assert all(len(payload) <= max(limit, 125) for _, payload in whole[0])


class TestEncoder:
    """Our client frames: RFC 6455's own example, byte for byte websocket-client's, and
    read back by the ``websockets`` server's parser."""

    def test_rfc_6455_example(self) -> None:
        """Section 5.7: a single-frame masked text message "Hello"."""
        assert encode_frame("Hello", OP_TEXT, bytes.fromhex("37fa213d")) == bytes.fromhex(
            "818537fa213d7f9f4d5158")

    @pytest.mark.parametrize(("length", "opcode"), [
        *((length, opcode) for opcode in (OP_TEXT, OP_BINARY)
          for length in (0, 1, 3, 125, 126, 127, 65535, 65536, 70001)),
        *((length, opcode) for opcode in (OP_CLOSE, OP_PONG) for length in (0, 2, 125)),
    ])
    def test_same_bytes_as_websocket_client(self, length: int, opcode: int) -> None:
        """Every length form (7-bit, 16-bit, 64-bit) and opcode, with the same key."""
        websocket = pytest.importorskip("websocket")
        payload = bytes(itertools.islice(itertools.cycle(range(256)), length))
        mask = b"\x01\x80\xfe\x7f"
        theirs = websocket.ABNF.create_frame(payload, opcode)
        theirs.get_mask_key = lambda _size: mask
        assert encode_frame(payload, opcode, mask) == theirs.format()

    @pytest.mark.parametrize("payload", ["", "wörld ✓", "x" * 200_000])
    def test_a_server_reads_it_back(self, payload: str) -> None:
        """The ``websockets`` library's server-side parser unmasks it to the same text."""
        frames = pytest.importorskip("websockets.frames")
        streams = pytest.importorskip("websockets.streams")
        reader = streams.StreamReader()
        reader.feed_data(encode_frame(payload, OP_TEXT, b"\x9a\x01\x00\xff"))
        parser = frames.Frame.parse(reader.read_exact, mask=True)
        with pytest.raises(StopIteration) as done:
            next(parser)
        parsed = done.value.value
        assert (parsed.opcode, parsed.fin, parsed.data.decode()) == (frames.Opcode.TEXT, True,
                                                                     payload)
