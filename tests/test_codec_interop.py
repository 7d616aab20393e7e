"""Codec behaviour met on third-party servers: binary packets, auth from the identity,
Chainlit 1.x tokens and new-chat signs (pure unit tests; the live ones are elsewhere)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from supervisor.protocols.base import (
    Acked,
    Identity,
    Inbound,
    Malformed,
    Outbound,
    Phase,
    Ready,
    Refused,
)
from supervisor.protocols.binary import deconstruct, has_binary, reconstruct
from supervisor.protocols.chainlit import NEW_CHAT, ChainlitCodec, auth_payload
from supervisor.protocols.config import ProtocolConfig
from supervisor.protocols.socketio import SocketIOCodec, decode_packet

OPEN = '0{"sid":"eio-1","upgrades":[],"pingInterval":25000,"pingTimeout":20000}'
SESSION = "sess-1"


def socketio(**fields: Any) -> SocketIOCodec:
    codec = SocketIOCodec(ProtocolConfig(url="http://h", protocol="socketio", **fields),
                          Identity(None))
    codec.received(OPEN)
    namespace = fields.get("namespace", "/")
    prefix = "" if namespace == "/" else namespace + ","
    assert codec.received(f'40{prefix}{{"sid":"s"}}')[-1] == Ready()
    return codec


class TestPlaceholders:
    """binary.py: socket.io-parser's deconstruct/reconstruct."""

    def test_depth_first_numbering_and_round_trip(self) -> None:
        """Bytes anywhere become numbered placeholders and come back in place."""
        data = {"a": b"\x00", "b": [b"one", {"c": bytearray(b"two")}, "text"], "d": 1}
        placeheld, attachments = deconstruct(data)
        assert placeheld == {"a": {"_placeholder": True, "num": 0},
                             "b": [{"_placeholder": True, "num": 1},
                                   {"c": {"_placeholder": True, "num": 2}}, "text"], "d": 1}
        assert attachments == [b"\x00", b"one", b"two"]
        assert reconstruct(placeheld, attachments) == {
            "a": b"\x00", "b": [b"one", {"c": b"two"}, "text"], "d": 1}

    def test_has_binary(self) -> None:
        """Only bytes-like values count, at any depth."""
        assert has_binary([1, {"x": (memoryview(b"m"),)}])
        assert not has_binary([1, {"x": ("text", None)}])

    @pytest.mark.parametrize("num", [1, -1, "0", True, None, 0.0])
    def test_bad_placeholders_are_refused(self, num: object) -> None:
        """A num that is not an index of a received attachment is a ValueError."""
        with pytest.raises(ValueError, match="illegal attachment"):
            reconstruct([{"_placeholder": True, "num": num}], [b"only"])


class TestBinaryInbound:
    """BINARY_EVENT (5) and BINARY_ACK (6) reassembled from their frames."""

    def test_binary_ack_settles_the_call(self) -> None:
        """The Node server's ack with a Buffer: header, then the attachment frame."""
        codec = socketio()
        assert codec.received('461-22[{"_placeholder":true,"num":0},"done"]') == []
        assert codec.received(b"\x00\x01\x02") == [Acked(22, [b"\x00\x01\x02", "done"])]

    def test_binary_event_with_nested_attachments(self) -> None:
        """Two attachments at different depths land where their placeholders were."""
        codec = socketio()
        header = ('452-["blob",{"first":{"_placeholder":true,"num":1},'
                  '"nested":[{"_placeholder":true,"num":0},"x"]}]')
        assert codec.received(header) == []
        assert codec.received(b"zero") == []
        assert codec.received(b"one") == [
            Inbound("blob", {"first": b"one", "nested": [b"zero", "x"]})]

    def test_binary_event_in_our_namespace_with_ack_request(self) -> None:
        """Namespace and ack id of a binary event are kept."""
        codec = socketio(namespace="/chat")
        assert codec.received('451-/chat,9["up",{"_placeholder":true,"num":0}]') == []
        assert codec.received(b"!") == [Inbound("up", b"!", 9)]

    def test_zero_attachments_is_dispatched_at_once(self) -> None:
        """A binary packet announcing 0 attachments is complete as it stands."""
        assert socketio().received('450-["e",1]') == [Inbound("e", 1)]

    def test_interrupted_ack_fails_its_call(self) -> None:
        """A text packet before the attachments: counted, and the ack settles with an error."""
        codec = socketio()
        codec.received('462-5[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        codec.received(b"a")
        malformed, failed, event = codec.received('42["next"]')
        assert isinstance(malformed, Malformed)
        assert isinstance(failed, Acked)
        assert (failed.ack_id, failed.data) == (5, None)
        assert failed.error is not None
        assert event == Inbound("next", None)

    def test_bad_placeholder_fails_the_ack(self) -> None:
        """A placeholder pointing past the attachments is malformed; the call does not wait."""
        codec = socketio()
        codec.received('461-7[{"_placeholder":true,"num":3}]')
        malformed, failed = codec.received(b"x")
        assert isinstance(malformed, Malformed)
        assert isinstance(failed, Acked)
        assert failed.error is not None
        assert "illegal attachment" in failed.error

    def test_stray_binary_frame_is_malformed(self) -> None:
        """A binary frame with no binary packet waiting is counted."""
        [stray] = socketio().received(b"\x89PNG")
        assert isinstance(stray, Malformed)

    def test_other_namespaces_attachments_are_consumed(self) -> None:
        """Another namespace's binary event eats its attachments and delivers nothing."""
        codec = socketio()
        assert codec.received('451-/other,["e",{"_placeholder":true,"num":0}]') == []
        assert codec.received(b"theirs") == []
        assert codec.received('42["mine"]') == [Inbound("mine", None)]


class TestBinaryOutbound:
    """emit/call/ack with bytes: a binary packet and its attachments."""

    def test_emit_with_bytes(self) -> None:
        """A bytes argument is a BINARY_EVENT header plus one frame per attachment."""
        frames = socketio().encode("upload", {"name": "f", "body": b"\x00\xff"}, ack_id=3)
        assert frames == ['451-3["upload",{"name":"f","body":{"_placeholder":true,"num":0}}]',
                          b"\x00\xff"]
        packet = decode_packet(str(frames[0])[1:])
        assert (packet.type, packet.attachments, packet.ack_id) == (5, 1, 3)

    def test_ack_with_bytes(self) -> None:
        """An on_ask answer holding bytes is a BINARY_ACK."""
        frames = socketio(namespace="/chat").encode_ack(4, (b"a", "t"))
        assert frames == ['461-/chat,4[{"_placeholder":true,"num":0},"t"]', b"a"]

    def test_round_trip_through_our_own_decoder(self) -> None:
        """What we encode, we decode back to the same data."""
        data = [b"1", {"k": [b"2", None, 3.5]}]
        frames = socketio().encode("e", data)
        receiver = socketio()
        actions = [action for frame in frames for action in receiver.received(frame)]
        assert actions == [Inbound("e", data)]


class TestAuthFromIdentity:
    """SessionSpec.auth as a callable of the handshake's identity."""

    def test_callable_auth_gets_this_connections_identity(self) -> None:
        """Each codec calls auth with its own identity; the CONNECT carries the result."""
        seen: list[Identity] = []

        def auth(identity: Identity) -> dict[str, Any]:
            seen.append(identity)
            return {"thread": identity.thread_id}

        config = ProtocolConfig(url="http://h", protocol="socketio", auth=auth)
        for thread_id in ("t1", "t2"):
            codec = SocketIOCodec(config, Identity(thread_id, "p"))
            assert codec.received(OPEN)[-1] == Outbound(f'40{{"thread":"{thread_id}"}}')
        assert seen == [Identity("t1", "p"), Identity("t2", "p")]

    def test_failing_auth_callable_is_a_refusal(self) -> None:
        """A raising or non-mapping auth callable refuses the session; received() never raises."""
        def broken(identity: Identity) -> dict[str, Any]:
            raise KeyError("oops")

        for auth in (broken, lambda identity: ["not", "a", "mapping"]):
            codec = SocketIOCodec(ProtocolConfig(url="http://h", protocol="socketio",
                                                 auth=auth), Identity(None))  # type: ignore[arg-type]
            [refused] = codec.received(OPEN)
            assert isinstance(refused, Refused)

    def test_chainlit_payload_helper_for_plain_socketio(self) -> None:
        """auth_payload builds Chainlit's 2.x auth from the identity (the load tester's use)."""
        auth = functools.partial(auth_payload, client_type="webapp")
        codec = SocketIOCodec(ProtocolConfig(url="http://h", protocol="socketio", auth=auth),
                              Identity("t9", "sess-9"))
        assert codec.received(OPEN)[-1] == Outbound(
            '40{"clientType":"webapp","sessionId":"sess-9","threadId":"t9",'
            '"userEnv":"{}","chatProfile":""}')


class TestHostileOpenPacket:
    """Timer values from the server are bounded (they used to raise OverflowError)."""

    @pytest.mark.parametrize("value", ["1" + "0" * 400, "-5", "1e309", "true", '"x"'])
    def test_out_of_range_ping_settings_are_counted(self, value: str) -> None:
        """A huge, negative or non-numeric pingInterval is Malformed; the handshake goes on."""
        codec = SocketIOCodec(ProtocolConfig(url="http://h", protocol="socketio"), Identity(None))
        actions = codec.received(f'0{{"sid":"s","pingInterval":{value},"pingTimeout":5000}}')
        assert codec.ping_interval_s is None
        assert codec.ping_timeout_s == 5.0
        kinds = [type(action) for action in actions]
        assert Outbound in kinds
        assert Phase in kinds
        if value not in ('"x"', "true"):  # strings and booleans are simply not numbers
            assert Malformed in kinds


class TestChainlitInterop:
    """Chainlit 1.x tokens and the new-chat sign of servers without resume_thread_error."""

    def codec(self, version: str, thread_id: str | None = "t1", **fields: Any) -> ChainlitCodec:
        config = ProtocolConfig(url="http://h", protocol="chainlit", chainlit_version=version,
                                **fields)
        return ChainlitCodec(config, Identity(thread_id, SESSION))

    def test_v1_sends_the_login_token_as_authorization(self) -> None:
        """1.x reads only Authorization: the access_token cookie is sent there as a Bearer."""
        codec = self.codec("1", cookies=(("access_token", "tok"),))
        assert ("Authorization", "Bearer tok") in codec.handshake().headers

    def test_v1_keeps_a_users_own_authorization(self) -> None:
        """An Authorization header the user set wins over the cookie."""
        codec = self.codec("1", cookies=(("access_token", "tok"),),
                           headers=(("authorization", "Bearer mine"),))
        auth = [h for h in codec.handshake().headers if h[0].lower() == "authorization"]
        assert auth == [("authorization", "Bearer mine")]

    def test_v2_never_sends_authorization(self) -> None:
        """2.x reads the cookie: no Authorization header is added."""
        codec = self.codec("2", cookies=(("access_token", "tok"),))
        assert all(name.lower() != "authorization" for name, _ in codec.handshake().headers)

    def connected(self, codec: ChainlitCodec) -> None:
        codec.handshake()
        codec.received(OPEN)
        codec.received('40{"sid":"s"}')
        for name in ("task_end", "clear_ask", "clear_call_fn"):
            assert codec.received(f'42["{name}"]') == [Inbound(name, None)]

    @pytest.mark.parametrize("version", ["1", "2"])
    def test_on_chat_start_means_not_found(self, version: str) -> None:
        """task_start before first_interaction: on_chat_start runs, found=False at once."""
        codec = self.codec(version)
        self.connected(codec)
        assert codec.received('42["task_start"]') == [
            Inbound("task_start", None), Ready(thread_found=False, thread_data=NEW_CHAT)]
        assert codec.received('42["task_end"]') == [Inbound("task_end", None)]

    def test_resume_path_is_not_mistaken_for_a_new_chat(self) -> None:
        """first_interaction, then on_chat_resume's task_start: still waits for resume_thread."""
        codec = self.codec("1")
        self.connected(codec)
        codec.received('42["first_interaction",{"interaction":"resume","thread_id":"t1"}]')
        assert codec.received('42["task_start"]') == [Inbound("task_start", None)]
        assert codec.received('42["task_end"]') == [Inbound("task_end", None)]
        assert codec.received('42["resume_thread",{"id":"t1"}]') == [
            Inbound("resume_thread", {"id": "t1"}), Ready(thread_found=True,
                                                          thread_data={"id": "t1"})]

    def test_new_conversation_is_unaffected(self) -> None:
        """Without a thread, Ready comes at once and task_start is just an event."""
        codec = self.codec("2", thread_id=None)
        codec.handshake()
        codec.received(OPEN)
        assert codec.received('40{"sid":"s"}')[-1] == Ready()
        assert codec.received('42["task_start"]') == [Inbound("task_start", None)]
