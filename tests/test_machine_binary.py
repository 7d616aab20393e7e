"""Binary Socket.IO sends and acks through the pure session machine (interop, issue 9)."""

from __future__ import annotations

from machine_harness import Harness

from supervisor import _machine_io as io
from supervisor.messages import Send

OPEN = '0{"sid":"x","pingInterval":25000,"pingTimeout":5000}'


def socketio_connected() -> Harness:
    """A socketio machine whose first connection has its namespace accepted."""
    harness = Harness(thread_id="t-0", session_id="m", protocol="socketio")
    harness(io.Start("open"))
    harness.connect(1)
    harness(io.FrameIn(1, OPEN))
    harness(io.FrameIn(1, '40{"sid":"y"}'))
    return harness


class TestBinarySends:
    """A send whose data holds bytes is several frames; only the last one settles it."""

    def test_binary_emit_writes_every_frame_in_order(self) -> None:
        """Header first, then each attachment; the write token rides on the last frame."""
        harness = socketio_connected()
        effects = harness(Send({"a": b"\x00", "b": [b"\x01"]}, "s0", event="up"))
        writes = [effect for effect in effects if effect[0] == "write"]
        assert writes == [
            ("write", 1, '452-["up",{"a":{"_placeholder":true,"num":0},'
                         '"b":[{"_placeholder":true,"num":1}]}]', None),
            ("write", 1, b"\x00", None),
            ("write", 1, b"\x01", 0),
        ]
        assert harness(io.FrameWritten(1, 0)) == [("resolve", "s0", None)]


class TestBinaryAcks:
    """A call's ack arriving as a binary packet, whole or broken."""

    def test_binary_ack_resolves_the_call_with_bytes(self) -> None:
        """Header plus attachment: the call resolves with the reassembled bytes."""
        harness = socketio_connected()
        harness(Send("q", "k0", event="get", want_ack=True))
        harness(io.FrameWritten(1, 0))
        assert harness(io.FrameIn(1, '461-0[{"_placeholder":true,"num":0}]')) == []
        assert harness(io.FrameIn(1, b"\xff")) == [("resolve", "k0", b"\xff")]

    def test_broken_binary_ack_rejects_the_call(self) -> None:
        """A text packet before the attachment: the call fails MalformedAck, it never waits."""
        harness = socketio_connected()
        harness(Send("q", "k0", event="get", want_ack=True))
        harness(io.FrameWritten(1, 0))
        harness(io.FrameIn(1, '461-0[{"_placeholder":true,"num":0}]'))
        effects = harness(io.FrameIn(1, '42["other"]'))
        assert ("reject", "k0", "MalformedAck") in effects
        assert harness.state().malformed_frames == 1
