"""Pure protocol codecs: Socket.IO framing, Chainlit identity and resume, chat turns."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest

from supervisor.protocols import make_codec
from supervisor.protocols.base import (
    Acked,
    Disconnected,
    Identity,
    Inbound,
    Malformed,
    Outbound,
    Phase,
    Ready,
    Refused,
)
from supervisor.protocols.chainlit import ChainlitCodec
from supervisor.protocols.chat import TurnResult, TurnTracker, user_message
from supervisor.protocols.config import ProtocolConfig
from supervisor.protocols.socketio import (
    ACK,
    CONNECT,
    CONNECT_ERROR,
    DISCONNECT,
    EVENT,
    SocketIOCodec,
    autoreply,
    decode_packet,
    encode_packet,
    websocket_url,
)
from supervisor.protocols.websocket import WebSocketCodec
from supervisor.spec import SessionSpec

OPEN = ('0{"sid":"eio-1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,'
        '"maxPayload":1000000}')
SESSION = "0b7c3f4e-2a8d-4c1e-9f6a-5d3b2c1a0e9f"
MESSAGE_ID = "6f1c2b9e-8d4a-4f3b-a2c1-0e9d8c7b6a54"


def socketio_spec(**kwargs: Any) -> ProtocolConfig:
    """The protocol config of a validated Socket.IO ``SessionSpec``."""
    kwargs.setdefault("url", "http://chat.example:8000")
    return SessionSpec(protocol="socketio", **kwargs).protocol_config


def chainlit_spec(**kwargs: Any) -> ProtocolConfig:
    """The protocol config of a validated Chainlit ``SessionSpec``."""
    kwargs.setdefault("url", "http://chat.example:8000")
    kwargs.setdefault("chainlit_version", "2")
    return SessionSpec(protocol="chainlit", **kwargs).protocol_config


def connected(codec: SocketIOCodec, reply: str = '40{"sid":"sio-1"}') -> list[Any]:
    """Run the open -> CONNECT -> reply sequence; the actions of the reply after its Phase."""
    codec.handshake()
    assert codec.opened() == []
    assert codec.received(OPEN)[0] == Phase("open")
    actions = codec.received(reply)
    assert actions[0] == Phase("namespace")
    return actions[1:]


class FakeDetector:
    """Chainlit version detection that records its calls."""

    def __init__(self, answer: str = "2") -> None:
        self.answer = answer
        self.calls: list[str] = []

    def __call__(self, base_url: str) -> str:
        self.calls.append(base_url)
        return self.answer


class TestPacketGrammar:
    """This module's Socket.IO packet grammar against python-socketio's own."""

    CASES: tuple[tuple[int, str, Any, int | None], ...] = (
        (CONNECT, "/", None, None),
        (CONNECT, "/", {"token": "abc"}, None),
        (CONNECT, "/chat", {"sid": "x"}, None),
        (DISCONNECT, "/", None, None),
        (DISCONNECT, "/admin", None, None),
        (EVENT, "/", ["hello"], None),
        (EVENT, "/", ["hello", {"a": [1, 2.5, None, True]}], 7),
        (EVENT, "/chat", ["hello", "wörld", 3], 12345),
        (ACK, "/", [], 0),
        (ACK, "/chat", ["ok", {"n": 1}], 42),
        (CONNECT_ERROR, "/", {"message": "authentication failed"}, None),
    )

    @pytest.fixture
    def packet_module(self) -> ModuleType:
        module: ModuleType = pytest.importorskip("socketio.packet")
        return module

    @pytest.mark.parametrize(("packet_type", "namespace", "data", "ack_id"), CASES)
    def test_our_frames_parse_in_python_socketio(self, packet_module: ModuleType,
                                                 packet_type: int, namespace: str,
                                                 data: Any, ack_id: int | None) -> None:
        """python-socketio decodes what encode_packet writes to the same packet."""
        frame = encode_packet(packet_type, namespace, data, ack_id)
        assert frame[0] == "4"
        theirs = packet_module.Packet(encoded_packet=frame[1:])
        assert theirs.packet_type == packet_type
        assert (theirs.namespace or "/") == namespace
        assert theirs.id == ack_id
        assert theirs.data == data

    @pytest.mark.parametrize(("packet_type", "namespace", "data", "ack_id"), CASES)
    def test_python_socketio_frames_parse_here(self, packet_module: ModuleType,
                                               packet_type: int, namespace: str,
                                               data: Any, ack_id: int | None) -> None:
        """decode_packet reads what python-socketio's encoder writes, byte for byte the same."""
        encoded = packet_module.Packet(packet_type, data=data, namespace=namespace,
                                       id=ack_id).encode()
        ours = decode_packet(encoded)
        assert (ours.type, ours.namespace, ours.ack_id, ours.data) == (
            packet_type, namespace, ack_id, data)
        assert encode_packet(packet_type, namespace, data, ack_id) == "4" + encoded

    def test_namespace_query_is_dropped(self) -> None:
        """A namespace with a query string names the namespace without it."""
        assert decode_packet('0/chat?x=1,{"sid":"a"}').namespace == "/chat"

    @pytest.mark.parametrize("body", [
        '["e",{"n":9223372036854775807,"m":-9223372036854775808}]',
        '["e",123456789012345678901234567890]',  # past 64 bits: an int, not a float
        '["e",-9223372036854775809]',
        '["e",NaN,Infinity,-Infinity]',  # json reads them; orjson does not
        '["e",1E400]',
        '["e","\\ud800"]',  # a lone surrogate, escaped
        '["e","\ud800"]',  # a lone surrogate itself
        '["e",{"a":1,"a":2}]',
        '["e","w\\u00f6rld","ü",0.1,-0,1e-400,null,true]',
    ])
    def test_bodies_read_as_json_reads_them(self, body: str) -> None:
        """Packet data is what ``json.loads`` makes of the body, whatever reads it first."""
        ours = decode_packet("2" + body).data
        expected = json.loads(body)
        assert json.dumps(ours) == json.dumps(expected)
        assert [type(value) for value in ours] == [type(value) for value in expected]

    @pytest.mark.parametrize("body", ['["e",', '["e"]x', "[" * 100_000 + "]" * 100_000, "{'a':1}"])
    def test_bodies_that_are_not_json_are_refused(self, body: str) -> None:
        """Bad or too deep JSON is a ValueError (a malformed frame), nothing else."""
        with pytest.raises(ValueError, match=r"JSON|Expecting|Extra data|recursion"):
            decode_packet("2" + body)

    def test_bad_ack_ids_are_refused_when_encoding(self) -> None:
        """Negative, bool and non-int ack ids never reach the wire."""
        for bad in (-1, True, "3", 1.5):
            with pytest.raises(ValueError, match="ack id"):
                encode_packet(EVENT, "/", ["x"], bad)  # type: ignore[arg-type]


class TestWebSocketUrl:
    """http(s)/ws(s) base URLs map to the Engine.IO WebSocket endpoint."""

    @pytest.mark.parametrize(("base", "path", "expected"), [
        ("http://h:8000", "socket.io", "ws://h:8000/socket.io/?EIO=4&transport=websocket"),
        ("https://h", "socket.io", "wss://h/socket.io/?EIO=4&transport=websocket"),
        ("http://h:8000/", "ws/socket.io", "ws://h:8000/ws/socket.io/?EIO=4&transport=websocket"),
        ("https://h/app/", "ws/socket.io", "wss://h/app/ws/socket.io/?EIO=4&transport=websocket"),
        ("ws://h:1/pre", "/custom/", "ws://h:1/pre/custom/?EIO=4&transport=websocket"),
        ("wss://h/ws/socket.io/", "ws/socket.io",
         "wss://h/ws/socket.io/?EIO=4&transport=websocket"),
        ("http://h/x?tenant=7#frag", "socket.io",
         "ws://h/x/socket.io/?tenant=7&EIO=4&transport=websocket"),
    ])
    def test_mapping(self, base: str, path: str, expected: str) -> None:
        """Scheme mapped, prefix kept, endpoint appended once, query kept ahead of EIO's."""
        assert websocket_url(base, path) == expected

    def test_other_schemes_are_refused(self) -> None:
        """Only http, https, ws and wss name a Socket.IO server."""
        with pytest.raises(ValueError, match="http"):
            websocket_url("ftp://h", "socket.io")


class TestSocketIOHandshake:
    """The upgrade request of a plain Socket.IO session."""

    def test_default_path_and_cookies(self) -> None:
        """Default path /socket.io/, the spec's cookies, no thread header without a thread."""
        spec = socketio_spec(cookies={"sid": "c1"}, headers={"X-App": "1"})
        shake = SocketIOCodec(spec, Identity(None)).handshake()
        assert shake.url == "ws://chat.example:8000/socket.io/?EIO=4&transport=websocket"
        assert shake.headers == (("X-App", "1"),)
        assert shake.cookies == (("sid", "c1"),)

    def test_custom_path(self) -> None:
        """socketio_path replaces the default Engine.IO path."""
        spec = socketio_spec(url="https://h/base", socketio_path="rt/io")
        shake = SocketIOCodec(spec, Identity(None)).handshake()
        assert shake.url == "wss://h/base/rt/io/?EIO=4&transport=websocket"

    def test_thread_header_comes_from_the_identity_only(self) -> None:
        """A stale thread header in spec.headers is replaced by the identity's thread id."""
        spec = socketio_spec(headers={"x-chainlit-thread-id": "stale", "A": "b"})
        shake = SocketIOCodec(spec, Identity("t-42")).handshake()
        assert shake.headers == (("A", "b"), ("X-Chainlit-Thread-Id", "t-42"))

    def test_renamed_thread_header(self) -> None:
        """thread_header renames the header that carries the thread id."""
        spec = socketio_spec(thread_header="X-Conversation")
        shake = SocketIOCodec(spec, Identity("t-1")).handshake()
        assert shake.headers == (("X-Conversation", "t-1"),)


class TestSocketIOSession:
    """Open, namespace connect and traffic of a plain Socket.IO session."""

    def test_open_connect_ready(self) -> None:
        """Engine.IO open -> CONNECT written -> CONNECT reply -> Ready."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        assert codec.opened() == []
        assert codec.received(OPEN) == [Phase("open"), Outbound("40")]
        assert codec.received('40{"sid":"sio-1"}') == [Phase("namespace"), Ready()]
        assert (codec.engineio_sid, codec.socketio_sid) == ("eio-1", "sio-1")
        assert (codec.ping_interval_s, codec.ping_timeout_s, codec.max_payload) == (
            25.0, 20.0, 1_000_000)

    def test_connect_with_auth_and_namespace(self) -> None:
        """The CONNECT carries the namespace and the spec's auth payload as compact JSON."""
        codec = SocketIOCodec(socketio_spec(namespace="chat", auth={"token": "t"}), Identity(None))
        assert codec.namespace == "/chat"
        assert codec.received(OPEN) == [Phase("open"), Outbound('40/chat,{"token":"t"}')]
        assert codec.received('40/chat,{"sid":"s"}') == [Phase("namespace"), Ready()]

    def test_unencodable_auth_is_refused_without_raising(self) -> None:
        """An auth payload that is not JSON gives Refused, not an exception."""
        codec = SocketIOCodec(socketio_spec(auth={"when": datetime.now(UTC)}), Identity(None))
        [action] = codec.received(OPEN)
        assert isinstance(action, Refused)
        assert "auth" in action.message

    def test_bad_namespace_is_refused(self) -> None:
        """A namespace with framing characters cannot be encoded."""
        with pytest.raises(ValueError, match="namespace"):
            SocketIOCodec(socketio_spec(namespace="/a,b"), Identity(None))

    @pytest.mark.parametrize(("frame", "expected"), [
        ('42["tick"]', Inbound("tick", None)),
        ('42["tick",{"n":1}]', Inbound("tick", {"n": 1})),
        ('42["tick",1,"two",null]', Inbound("tick", [1, "two", None])),
        ('42["tick",[1,2]]', Inbound("tick", [1, 2])),
        ('4217["ask",{"q":"?"}]', Inbound("ask", {"q": "?"}, 17)),
    ])
    def test_events(self, frame: str, expected: Inbound) -> None:
        """EVENT args: None for none, the value for one, a list for several; ack ids kept."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        connected(codec)
        assert codec.received(frame) == [expected]

    @pytest.mark.parametrize(("frame", "expected"), [
        ("433[]", Acked(3, None)),
        ('430["ok"]', Acked(0, "ok")),
        ('439[1,2]', Acked(9, [1, 2])),
        ("435", Acked(5, None)),
    ])
    def test_acks_from_the_server(self, frame: str, expected: Acked) -> None:
        """ACK packets answer our emits with the same args convention."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        connected(codec)
        assert codec.received(frame) == [expected]

    def test_encode_events(self) -> None:
        """emit(event, data) frames: no arg for None, one arg otherwise, ack id before the JSON."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        assert codec.encode("ping", None) == ['42["ping"]']
        assert codec.encode("say", {"text": "hé"}) == ['42["say",{"text":"h\\u00e9"}]']
        assert codec.encode("say", [1, 2], ack_id=4) == ['424["say",[1,2]]']

    def test_encode_in_a_namespace(self) -> None:
        """Frames of a non-default namespace carry it before the ack id."""
        codec = SocketIOCodec(socketio_spec(namespace="/chat"), Identity(None))
        assert codec.encode("say", "hi", ack_id=1) == ['42/chat,1["say","hi"]']
        assert codec.encode_ack(2, "ok") == ['43/chat,2["ok"]']
        assert codec.closing() == ["41/chat,"]

    def test_plain_sends_are_refused(self) -> None:
        """send(text) has no event name on Socket.IO: TypeError pointing at emit()."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        with pytest.raises(TypeError, match=r"emit\(event, data\)"):
            codec.encode(None, "text")

    def test_unencodable_data_is_a_type_error(self) -> None:
        """Non-JSON data is refused before anything is written."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        with pytest.raises(TypeError, match="JSON"):
            codec.encode("file", {1, 2})
        with pytest.raises(ValueError, match="JSON"):
            codec.encode("n", float("nan"))

    def test_encode_ack(self) -> None:
        """Our answers to the server's asks: [] for None, [data], or several for a tuple."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        assert codec.encode_ack(3, None) == ["433[]"]
        assert codec.encode_ack(3, {"a": 1}) == ['433[{"a":1}]']
        assert codec.encode_ack(3, [1, 2]) == ["433[[1,2]]"]
        assert codec.encode_ack(3, ("x", 2)) == ['433["x",2]']

    def test_ack_round_trip(self) -> None:
        """An ask received with an ack id is answered with a frame that parses back to it."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        connected(codec)
        [ask] = codec.received('428["ask",{"q":1}]')
        assert isinstance(ask, Inbound)
        assert ask.ack_id is not None
        [frame] = codec.encode_ack(ask.ack_id, {"answer": 2})
        packet = decode_packet(str(frame)[1:])
        assert (packet.type, packet.ack_id, packet.data) == (ACK, 8, [{"answer": 2}])

    @pytest.mark.parametrize(("frame", "message"), [
        ('44{"message":"authentication failed"}', "authentication failed"),
        ('44"plain text"', "plain text"),
        ('44{"code":7}', '{"code": 7}'),
        ("44", "connection refused"),
    ])
    def test_refusal(self, frame: str, message: str) -> None:
        """CONNECT_ERROR gives Refused with the server's message (or the JSON text)."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        codec.received(OPEN)
        assert codec.received(frame) == [Refused(message)]

    def test_disconnects(self) -> None:
        """Namespace DISCONNECT and Engine.IO close both end the session."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        connected(codec)
        [namespace_gone] = codec.received("41")
        [engine_gone] = codec.received("1")
        assert isinstance(namespace_gone, Disconnected)
        assert isinstance(engine_gone, Disconnected)

    def test_disconnect_at_once_with_a_message_is_a_refusal(self) -> None:
        """always_connect refusals (CONNECT accepted, then DISCONNECT with a message): Refused."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        connected(codec)
        assert codec.received('41{"message":"bad token","data":{"code":4001}}') == [
            Refused("bad token")]

    def test_disconnect_before_the_connect_reply_is_a_refusal(self) -> None:
        """A DISCONNECT with a message in place of the CONNECT reply is a refusal too."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        codec.received(OPEN)
        assert codec.received('41"nope"') == [Refused("nope")]

    def test_later_disconnect_with_a_reason_is_a_loss(self) -> None:
        """After traffic, a DISCONNECT carrying a message is a loss that keeps the reason."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        connected(codec)
        codec.received('42["hello"]')
        [gone] = codec.received('41{"message":"go away"}')
        assert isinstance(gone, Disconnected)
        assert gone.reason.endswith(": go away")

    def test_other_namespaces_are_ignored(self) -> None:
        """Packets for a namespace we did not connect produce nothing."""
        codec = SocketIOCodec(socketio_spec(namespace="/chat"), Identity(None))
        connected(codec, '40/chat,{"sid":"s"}')
        for frame in ('42["x",1]', '42/admin,["x"]', "41", '44{"message":"no"}', "433[]"):
            assert codec.received(frame) == []
        assert codec.received('42/chat,["x",1]') == [Inbound("x", 1)]

    def test_ping_and_housekeeping(self) -> None:
        """A ping reaching received() is still answered; pong, upgrade and noop are ignored."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        connected(codec)
        assert codec.received("2") == [Outbound("3")]
        assert codec.received("3") == codec.received("5") == codec.received("6") == []

    def test_autoreply(self) -> None:
        """Pings get a pong with the same payload; nothing else is answered."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        assert codec.autoreply("2") == "3"
        assert codec.autoreply("2probe") == "3probe"
        for frame in ("3", "42[\"2\"]", "", b"2"):
            assert codec.autoreply(frame) is None
        assert autoreply("2") == "3"

    def test_closing(self) -> None:
        """A deliberate close disconnects the namespace."""
        assert SocketIOCodec(socketio_spec(), Identity(None)).closing() == ["41"]

    @pytest.mark.parametrize("frame", [
        "", "x", "9", "garbage", "4", "4x", "47[]", "49", '42{"not":"a list"}', "42[]",
        "42[1,2]", '42["unterminated', "42[\"a\"]trailing", "43[]", '43{"a":1}',
        "0not json", "0[1]", "4" + "2" + "[" * 100_000 + "]" * 100_000, "421" + "9" * 30 + "[]",
        '42["n",' + "1" * 5000 + "]", '45-1["file",{"_placeholder":true,"num":0}]', "46x-3[]",
        "4599999-[]", b"\x00\x01", b"",
    ])
    def test_malformed_frames_never_raise(self, frame: str | bytes) -> None:
        """Garbage, stray binary frames, bad JSON, bad types and attachment counts: Malformed."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        connected(codec)
        actions = codec.received(frame)
        assert len(actions) == 1
        assert isinstance(actions[0], Malformed)

    def test_out_of_order_handshake_packets(self) -> None:
        """A second open, or a CONNECT reply before the open, is malformed."""
        codec = SocketIOCodec(socketio_spec(), Identity(None))
        [early] = codec.received('40{"sid":"s"}')
        assert isinstance(early, Malformed)
        codec.received(OPEN)
        [again] = codec.received(OPEN)
        assert isinstance(again, Malformed)


class TestChainlitHandshake:
    """Chainlit's identity on the handshake: 2.x auth payload, 1.x headers."""

    def test_v2_auth_payload_exact(self) -> None:
        """2.x CONNECT auth is exactly what Chainlit's React client sends."""
        spec = chainlit_spec(user_env={"OPENAI_KEY": "k"}, chat_profile="GPT 4 / fast",
                             client_type="copilot")
        codec = ChainlitCodec(spec, Identity("t-1", SESSION))
        codec.handshake()
        [phase, connect] = codec.received(OPEN)
        assert phase == Phase("open")
        assert isinstance(connect, Outbound)
        assert str(connect.frame).startswith("40{")
        assert json.loads(str(connect.frame)[2:]) == {
            "clientType": "copilot",
            "sessionId": SESSION,
            "threadId": "t-1",
            "userEnv": '{"OPENAI_KEY":"k"}',
            "chatProfile": "GPT%204%20%2F%20fast",
        }

    def test_v2_defaults_are_empty_strings(self) -> None:
        """No thread and no profile are sent as "" and the empty userEnv as "{}"."""
        codec = ChainlitCodec(chainlit_spec(), Identity(None, SESSION))
        codec.handshake()
        assert codec.received(OPEN) == [Phase("open"), Outbound(
            '40{"clientType":"webapp","sessionId":"' + SESSION
            + '","threadId":"","userEnv":"{}","chatProfile":""}')]

    def test_v2_handshake_has_no_identity_headers(self) -> None:
        """2.x: path /ws/socket.io/, cookies for auth, no thread header even if given."""
        spec = chainlit_spec(url="https://bot.example/app",
                             cookies={"access_token": "jwt"},
                             headers={"X-Chainlit-Thread-Id": "stale", "X-Trace": "1"})
        shake = ChainlitCodec(spec, Identity("t-1", SESSION)).handshake()
        assert shake.url == "wss://bot.example/app/ws/socket.io/?EIO=4&transport=websocket"
        assert shake.headers == (("X-Trace", "1"),)
        assert shake.cookies == (("access_token", "jwt"),)
        assert shake.cookie_header() == "access_token=jwt"

    def test_v1_headers_exact(self) -> None:
        """1.x: identity in X-Chainlit-* and user-env headers, Authorization from the spec."""
        spec = chainlit_spec(chainlit_version="1", user_env={"K": "v"}, chat_profile="Pro",
                             headers={"Authorization": "Bearer tok",
                                      "x-chainlit-session-id": "smuggled"})
        codec = ChainlitCodec(spec, Identity("t-9", SESSION))
        shake = codec.handshake()
        assert shake.url == "ws://chat.example:8000/ws/socket.io/?EIO=4&transport=websocket"
        assert shake.headers == (
            ("Authorization", "Bearer tok"),
            ("X-Chainlit-Client-Type", "webapp"),
            ("X-Chainlit-Session-Id", SESSION),
            ("X-Chainlit-Thread-Id", "t-9"),
            ("user-env", '{"K":"v"}'),
            ("X-Chainlit-Chat-Profile", "Pro"),
        )
        assert codec.received(OPEN) == [Phase("open"), Outbound("40")]

    def test_v1_without_thread_or_profile(self) -> None:
        """1.x: no thread header for a new conversation, no profile header when unset."""
        spec = chainlit_spec(chainlit_version="1")
        shake = ChainlitCodec(spec, Identity(None, SESSION)).handshake()
        assert shake.headers == (("X-Chainlit-Client-Type", "webapp"),
                                 ("X-Chainlit-Session-Id", SESSION), ("user-env", "{}"))

    def test_auto_detection_runs_once_in_handshake(self) -> None:
        """"auto" asks the detector once, with the HTTP base URL, and uses its answer."""
        detector = FakeDetector("1")
        spec = chainlit_spec(url="wss://bot.example/app/", chainlit_version="auto")
        codec = ChainlitCodec(spec, Identity("t", SESSION))
        assert detector.calls == []
        shake = codec.handshake(detector)
        assert detector.calls == ["https://bot.example/app"]
        assert codec.version == "1"
        assert ("X-Chainlit-Thread-Id", "t") in shake.headers
        assert codec.received(OPEN) == [Phase("open"), Outbound("40")]
        codec.handshake(detector)
        assert len(detector.calls) == 1

    def test_detection_strips_an_endpoint_url(self) -> None:
        """A URL naming the endpoint itself is detected against the base in front of it."""
        detector = FakeDetector("2")
        spec = chainlit_spec(url="ws://h:8000/ws/socket.io", chainlit_version="auto")
        ChainlitCodec(spec, Identity(None, SESSION)).handshake(detector)
        assert detector.calls == ["http://h:8000"]

    @pytest.mark.parametrize("version", ["1", "2"])
    def test_fixed_versions_never_detect(self, version: str) -> None:
        """An explicit chainlit_version never calls the detector."""
        detector = FakeDetector()
        spec = chainlit_spec(chainlit_version=version)
        codec = ChainlitCodec(spec, Identity(None, SESSION))
        codec.handshake(detector)
        assert detector.calls == []
        assert codec.version == version

    def test_bad_detection_result(self) -> None:
        """A detector answer other than "1" or "2" fails the handshake."""
        spec = chainlit_spec(chainlit_version="auto")
        codec = ChainlitCodec(spec, Identity(None, SESSION))
        with pytest.raises(ValueError, match="detection"):
            codec.handshake(FakeDetector("3"))

    def test_version_unknown_before_handshake(self) -> None:
        """With "auto" the version is unknown until handshake() has run."""
        codec = ChainlitCodec(chainlit_spec(chainlit_version="auto"), Identity(None, SESSION))
        with pytest.raises(RuntimeError, match="handshake"):
            _ = codec.version

    def test_construction_errors(self) -> None:
        """A session id is required, and "auto" requires a version lookup at handshake."""
        with pytest.raises(ValueError, match="session id"):
            ChainlitCodec(chainlit_spec(), Identity(None))
        codec = ChainlitCodec(chainlit_spec(chainlit_version="auto"), Identity(None, SESSION))
        with pytest.raises(ValueError, match="lookup_version"):
            codec.handshake()


class TestChainlitSession:
    """connection_successful, resume confirmation and closing on Chainlit."""

    def test_new_conversation_is_ready_at_once(self) -> None:
        """Without a thread: connection_successful is written, then Ready."""
        codec = ChainlitCodec(chainlit_spec(), Identity(None, SESSION))
        assert connected(codec) == [Outbound('42["connection_successful"]'), Ready()]

    def test_resume_waits_for_resume_thread(self) -> None:
        """With a thread, Ready waits for resume_thread and carries the thread record."""
        codec = ChainlitCodec(chainlit_spec(), Identity("t-1", SESSION))
        assert connected(codec) == [Outbound('42["connection_successful"]')]
        assert codec.received('42["task_end",{}]') == [Inbound("task_end", {})]
        assert codec.received('42["first_interaction",{"interaction":"resume",'
                              '"thread_id":"t-1"}]') == [
            Inbound("first_interaction", {"interaction": "resume", "thread_id": "t-1"})]
        thread = {"id": "t-1", "name": "Old chat", "steps": [], "userIdentifier": "ann"}
        assert codec.received('42["resume_thread",' + json.dumps(thread) + "]") == [
            Inbound("resume_thread", thread), Ready(thread_found=True, thread_data=thread)]
        assert codec.received('42["resume_thread",{}]') == [Inbound("resume_thread", {})]

    def test_resume_thread_error(self) -> None:
        """resume_thread_error is delivered and gives Ready(thread_found=False)."""
        codec = ChainlitCodec(chainlit_spec(), Identity("gone", SESSION))
        connected(codec)
        assert codec.received('42["resume_thread_error","Thread not found."]') == [
            Inbound("resume_thread_error", "Thread not found."),
            Ready(thread_found=False, thread_data="Thread not found.")]

    def test_resume_without_confirmation(self) -> None:
        """confirm_resume=False: Ready right after connection_successful, even with a thread."""
        codec = ChainlitCodec(chainlit_spec(), Identity("t-1", SESSION), confirm_resume=False)
        assert connected(codec) == [Outbound('42["connection_successful"]'), Ready()]

    def test_v1_session(self) -> None:
        """1.x connects without auth and confirms resumes the same way."""
        codec = ChainlitCodec(chainlit_spec(chainlit_version="1"), Identity("t-1", SESSION))
        codec.handshake()
        assert codec.received(OPEN) == [Phase("open"), Outbound("40")]
        assert codec.received('40{"sid":"s"}') == [
            Phase("namespace"), Outbound('42["connection_successful"]')]
        [_, ready] = codec.received('42["resume_thread",{"id":"t-1"}]')
        assert ready == Ready(thread_found=True, thread_data={"id": "t-1"})

    def test_refusal(self) -> None:
        """Chainlit refuses with 44{"message": ...}."""
        codec = ChainlitCodec(chainlit_spec(), Identity("t-1", SESSION))
        codec.handshake()
        codec.received(OPEN)
        assert codec.received('44{"message":"authorization failed"}') == [
            Refused("authorization failed")]

    def test_ask_and_answer(self) -> None:
        """An ask arrives with an ack id and is answered on the same id."""
        codec = ChainlitCodec(chainlit_spec(), Identity(None, SESSION))
        connected(codec)
        [ask] = codec.received('422["ask",{"msg":{"id":"m"},"spec":{"type":"text"}}]')
        assert ask == Inbound("ask", {"msg": {"id": "m"}, "spec": {"type": "text"}}, 2)
        assert codec.encode_ack(2, {"output": "yes"}) == ['432[{"output":"yes"}]']

    def test_closing_clears_the_session(self) -> None:
        """A deliberate close sends clear_session, then the namespace DISCONNECT."""
        codec = ChainlitCodec(chainlit_spec(), Identity(None, SESSION))
        assert codec.closing() == ['42["clear_session"]', "41"]

    def test_malformed_frames_never_raise(self) -> None:
        """Chainlit inherits Socket.IO's tolerance of garbage while waiting for a resume."""
        codec = ChainlitCodec(chainlit_spec(), Identity("t-1", SESSION))
        connected(codec)
        for frame in ("", "zz", b"\x00", "42[", '42["resume_thread"'):
            [action] = codec.received(frame)
            assert isinstance(action, Malformed)
        [_, ready] = codec.received('42["resume_thread",{"id":"t-1"}]')
        assert isinstance(ready, Ready)


class TestMakeCodec:
    """make_codec dispatches on the spec's protocol."""

    def test_dispatch(self) -> None:
        """Each protocol gets its codec."""
        plain = SessionSpec(url="ws://h").protocol_config
        assert isinstance(make_codec(plain, Identity(None)), WebSocketCodec)
        assert type(make_codec(socketio_spec(), Identity(None))) is SocketIOCodec
        assert isinstance(make_codec(chainlit_spec(), Identity(None, SESSION)), ChainlitCodec)
        auto = chainlit_spec(chainlit_version="auto")
        assert isinstance(make_codec(auto, Identity(None, SESSION)), ChainlitCodec)

    def test_auto_without_detector(self) -> None:
        """"auto" without a version lookup at handshake is a clear error, not a hang."""
        codec = make_codec(chainlit_spec(chainlit_version="auto"), Identity(None, SESSION))
        with pytest.raises(ValueError, match="lookup_version"):
            codec.handshake()

    def test_confirm_resume_is_passed_on(self) -> None:
        """confirm_resume=False reaches the Chainlit codec."""
        codec = make_codec(chainlit_spec(), Identity("t", SESSION), confirm_resume=False)
        assert isinstance(codec, ChainlitCodec)
        assert connected(codec)[-1] == Ready()


class TestUserMessage:
    """The client_message payload of one user turn."""

    def test_shape(self) -> None:
        """Matches the React client's sendMessage payload."""
        assert user_message("Hi there", "t-1", MESSAGE_ID, "2025-01-02T03:04:05.678Z") == {
            "message": {
                "threadId": "t-1",
                "id": MESSAGE_ID,
                "name": "User",
                "type": "user_message",
                "output": "Hi there",
                "createdAt": "2025-01-02T03:04:05.678Z",
                "metadata": {},
            },
            "fileReferences": [],
        }

    def test_no_thread_author_and_files(self) -> None:
        """A new conversation sends threadId "", like the composer; files are referenced by id."""
        payload = user_message("x", None, MESSAGE_ID, "2025-01-01T00:00:00.000Z",
                               author="ann", file_ids=("f1",))
        assert payload["message"]["threadId"] == ""
        assert payload["message"]["name"] == "ann"
        assert payload["fileReferences"] == [{"id": "f1"}]

    def test_timestamps(self) -> None:
        """Epoch seconds and aware datetimes become toISOString() strings in UTC."""
        plus2 = timezone(timedelta(hours=2))
        when = datetime(2025, 1, 2, 5, 4, 5, 678_900, tzinfo=plus2)
        assert user_message("x", None, MESSAGE_ID, when)["message"]["createdAt"] == (
            "2025-01-02T03:04:05.678Z")
        assert user_message("x", None, MESSAGE_ID, 0.5)["message"]["createdAt"] == (
            "1970-01-01T00:00:00.500Z")
        with pytest.raises(ValueError, match="timezone"):
            user_message("x", None, MESSAGE_ID, datetime(2025, 1, 1))

    @pytest.mark.parametrize("bad", ["m-1", "", "6f1c2b9e-8d4a-1f3b-a2c1-0e9d8c7b6a54"])
    def test_ids_must_be_uuid4(self, bad: str) -> None:
        """Chainlit asserts the message id is a UUID v4, so others are refused here."""
        with pytest.raises(ValueError, match="UUID v4"):
            user_message("x", None, bad, "2025-01-01T00:00:00.000Z")

    def test_encodes_as_client_message(self) -> None:
        """The payload travels as a client_message event through the Chainlit codec."""
        codec = ChainlitCodec(chainlit_spec(), Identity(None, SESSION))
        payload = user_message("hi", None, MESSAGE_ID, "2025-01-01T00:00:00.000Z")
        [frame] = codec.encode("client_message", payload)
        packet = decode_packet(str(frame)[1:])
        assert packet.data == ["client_message", payload]


def step(step_id: str, output: str, step_type: str = "assistant_message",
         **extra: Any) -> dict[str, Any]:
    """A step dict shaped like Chainlit's Message.to_dict()."""
    return {"id": step_id, "threadId": "t-1", "parentId": None, "createdAt": "2025-01-01",
            "output": output, "name": "Assistant", "type": step_type, "streaming": False,
            "isError": False, "metadata": {}, **extra}


class TestTurnTracker:
    """One chat turn followed from Chainlit's events, on an injected clock."""

    def test_streamed_reply(self) -> None:
        """stream_start carries the first token; tokens follow; new_message's output wins."""
        tracker = TurnTracker(100.0)
        events: list[tuple[str, Any, float]] = [
            ("task_start", {}, 100.01),
            ("new_message", step("tool-1", "42", "tool"), 100.2),
            ("stream_start", step("a-1", "The", streaming=True), 100.5),
            ("stream_token", {"id": "a-1", "token": " answer", "isSequence": False,
                              "isInput": False}, 100.7),
            ("stream_token", {"id": "a-1", "token": " is", "isSequence": False,
                              "isInput": False}, 101.0),
            ("new_message", step("a-1", "The answer is 42."), 101.1),
        ]
        for name, data, now in events:
            assert tracker.feed(name, data, now) is False
        assert tracker.text == "The answer is 42."
        assert tracker.feed("task_end", {}, 101.5) is True
        result = tracker.result()
        assert isinstance(result, TurnResult)
        assert result.text == "The answer is 42."
        assert result.first_token_s == pytest.approx(0.5)
        assert result.token_gaps_s == pytest.approx((0.2, 0.3))
        assert result.turn_s == pytest.approx(1.5)
        assert result.tokens == 3
        assert [s["id"] for s in result.steps] == ["tool-1", "a-1"]
        assert result.steps[1]["streaming"] is False
        assert tracker.token_times == [100.5, 100.7, 101.0]

    def test_streamed_without_final_message(self) -> None:
        """Without a final new_message the streamed tokens are the reply."""
        tracker = TurnTracker(0.0)
        tracker.feed("task_start", {}, 0.0)
        tracker.feed("stream_start", step("a", "Hel", streaming=True), 1.0)
        tracker.feed("stream_token", {"id": "a", "token": "lo", "isSequence": False,
                                      "isInput": False}, 2.0)
        tracker.feed("task_end", {}, 3.0)
        assert tracker.result().text == "Hello"

    def test_non_streamed_reply(self) -> None:
        """A reply sent whole: text from new_message, first token at its arrival, no tokens."""
        tracker = TurnTracker(10.0)
        tracker.feed("task_start", {}, 10.1)
        tracker.feed("new_message", step("a", "Hello!"), 11.0)
        assert tracker.feed("task_end", {}, 11.2)
        result = tracker.result()
        assert (result.text, result.tokens, result.token_gaps_s) == ("Hello!", 0, ())
        assert result.first_token_s == pytest.approx(1.0)
        assert result.turn_s == pytest.approx(1.2)

    def test_sent_empty_then_streamed_then_updated(self) -> None:
        """msg.send() empty, tokens streamed, msg.update(): the update's output wins."""
        tracker = TurnTracker(0.0)
        tracker.feed("task_start", {}, 0.0)
        tracker.feed("new_message", step("a", ""), 0.1)
        tracker.feed("stream_start", step("a", "Par", streaming=True), 0.2)
        tracker.feed("stream_token", {"id": "a", "token": "is", "isSequence": False,
                                      "isInput": False}, 0.3)
        tracker.feed("update_message", step("a", "Paris."), 0.4)
        tracker.feed("task_end", {}, 0.5)
        result = tracker.result()
        assert (result.text, result.tokens) == ("Paris.", 2)
        assert result.first_token_s == pytest.approx(0.2)

    def test_sequence_and_input_tokens(self) -> None:
        """isSequence replaces the text; isInput tokens are not part of the reply."""
        tracker = TurnTracker(0.0)
        tracker.feed("stream_start", step("a", "draft", streaming=True), 1.0)
        tracker.feed("stream_token", {"id": "a", "token": "final", "isSequence": True,
                                      "isInput": False}, 2.0)
        tracker.feed("stream_token", {"id": "a", "token": "query", "isSequence": False,
                                      "isInput": True}, 3.0)
        assert tracker.text == "final"
        assert tracker.token_times == [1.0, 2.0]

    def test_stale_task_end_and_echo_are_ignored(self) -> None:
        """connection_successful's task_end and the user's own message do not end the turn."""
        tracker = TurnTracker(0.0)
        assert tracker.feed("task_end", {}, 0.01) is False
        assert tracker.feed("new_message", step("u", "my question", "user_message"), 0.02) is False
        assert tracker.feed("task_start", {}, 0.03) is False
        assert tracker.feed("new_message", step("a", "reply"), 0.5) is False
        assert tracker.feed("task_end", {}, 0.6) is True
        result = tracker.result()
        assert result.text == "reply"
        assert [s["id"] for s in result.steps] == ["a"]
        assert result.turn_s == pytest.approx(0.6)

    def test_tool_steps_are_not_the_reply(self) -> None:
        """Streamed tool steps are kept in steps but not in the reply or its tokens."""
        tracker = TurnTracker(0.0)
        tracker.feed("task_start", {}, 0.0)
        tracker.feed("stream_start", step("tool", "{", "tool", streaming=True), 0.1)
        tracker.feed("stream_token", {"id": "tool", "token": "}", "isSequence": False,
                                      "isInput": False}, 0.2)
        tracker.feed("new_message", step("a", "One."), 0.3)
        tracker.feed("new_message", step("b", "Two."), 0.4)
        tracker.feed("task_end", {}, 0.5)
        result = tracker.result()
        assert result.text == "One.\nTwo."
        assert result.tokens == 0
        assert result.first_token_s == pytest.approx(0.3)
        assert result.steps[0]["output"] == "{}"

    def test_after_the_end_and_before_it(self) -> None:
        """Events after task_end change nothing; result() before the end has turn_s None."""
        tracker = TurnTracker(0.0)
        tracker.feed("task_start", {}, 0.0)
        assert tracker.result().turn_s is None
        assert tracker.result().first_token_s is None
        tracker.feed("new_message", step("a", "x"), 0.1)
        tracker.feed("task_end", {}, 0.2)
        assert tracker.feed("new_message", step("c", "late"), 0.3) is True
        assert tracker.ended
        assert tracker.result().text == "x"

    def test_odd_payloads_are_ignored(self) -> None:
        """Payloads of the wrong shape are skipped, never raised on."""
        tracker = TurnTracker(0.0)
        for name, data in (("stream_start", None), ("stream_token", "x"),
                           ("stream_token", {"id": 1, "token": "x"}),
                           ("stream_token", {"id": "a", "token": None}),
                           ("new_message", ["x"]), ("new_message", {"output": "no id"}),
                           ("update_message", {"id": "a"}), ("something_else", {})):
            assert tracker.feed(name, data, 1.0) is False
        assert tracker.text == ""


# --- Event sequences recorded from a live Chainlit 2.12 server (tests/chainlit_app) ---------
# One user message "hi you" (id MESSAGE_ID) to the echo app, which streams "echo: hi you".

RUN = "a1a1a1a1-0000-4000-8000-000000000001"  # on_message run step
CHAT_START_RUN = "c5c5c5c5-0000-4000-8000-000000000002"  # on_chat_start run step
ECHO = "e0e0e0e0-0000-4000-8000-000000000003"  # the assistant message


def run_step(step_id: str, name: str, parent: str | None, *, ended: bool) -> dict[str, Any]:
    """A run step as Step.to_dict() sends it (open: end None; closed: end set)."""
    return {"name": name, "type": "run", "id": step_id, "threadId": "t-1", "parentId": parent,
            "streaming": False, "metadata": {}, "input": "", "output": "", "isError": False,
            "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:00:01Z" if ended else None}


def token(step_id: str, text: str) -> dict[str, Any]:
    return {"id": step_id, "token": text, "isSequence": False, "isInput": False}


def on_chat_start_task(start: float) -> list[tuple[str, Any, float]]:
    """on_chat_start, wrapped in its own task_start/task_end (wrap_user_function(with_task))."""
    return [("task_start", {}, start),
            ("new_message", run_step(CHAT_START_RUN, "on_chat_start", None, ended=False), start),
            ("update_message", run_step(CHAT_START_RUN, "on_chat_start", None, ended=True), start),
            ("task_end", {}, start + 0.001)]


def echo_turn(start: float) -> list[tuple[str, Any, float]]:
    """process_message: task_start, the on_message run, the streamed echo, the run closes."""
    return [("task_start", {}, start),
            ("new_message", run_step(RUN, "on_message", MESSAGE_ID, ended=False), start + 0.01),
            ("stream_start", step(ECHO, "echo:", parentId=RUN, streaming=True), start + 0.02),
            ("stream_token", token(ECHO, " hi"), start + 0.03),
            ("stream_token", token(ECHO, " you"), start + 0.04),
            ("new_message", step(ECHO, "echo: hi you", parentId=RUN), start + 0.05),
            ("update_message", run_step(RUN, "on_message", MESSAGE_ID, ended=True), start + 0.06),
            ("task_end", {}, start + 0.07)]


CONNECTION_ANSWER: list[tuple[str, Any, float]] = [
    ("task_end", {}, 0.001), ("clear_ask", {}, 0.001), ("clear_call_fn", {}, 0.001)]


def feed_all(tracker: TurnTracker, events: list[tuple[str, Any, float]]) -> list[str]:
    """Feed events in order; the names of those after which feed() said the turn ended."""
    return [name for name, data, now in events if tracker.feed(name, data, now)]


class TestTurnTrackerOnChainlit:
    """The tracker on event orders a real Chainlit server produces."""

    def test_on_chat_start_before_the_turn(self) -> None:
        """on_chat_start's task_start/task_end pair, before ours, does not end the turn."""
        tracker = TurnTracker(0.0, MESSAGE_ID)
        ended = feed_all(tracker, [*CONNECTION_ANSWER, *on_chat_start_task(0.01),
                                   *echo_turn(0.1)])
        assert ended == ["update_message", "task_end"]
        result = tracker.result()
        assert result.text == "echo: hi you"
        assert [s["name"] for s in result.steps] == ["on_message", "Assistant"]
        assert result.turn_s == pytest.approx(0.16)
        assert result.first_token_s == pytest.approx(0.12)
        assert result.tokens == 3

    def test_on_chat_start_interleaved_with_the_turn(self) -> None:
        """A message sent at once races on_chat_start; its task_end mid-turn is not ours."""
        turn = echo_turn(0.1)
        chat_start = on_chat_start_task(0.1)
        events = [*CONNECTION_ANSWER, turn[0], chat_start[0], turn[1], chat_start[1],
                  turn[2], chat_start[2], turn[3], chat_start[3], *turn[4:]]
        tracker = TurnTracker(0.0, MESSAGE_ID)
        assert feed_all(tracker, events)[0] == "update_message"
        assert tracker.result().text == "echo: hi you"
        assert CHAT_START_RUN not in {s["id"] for s in tracker.result().steps}

    def test_welcome_message_is_not_the_reply(self) -> None:
        """A message on_chat_start sends (under its own run step) is not part of the turn."""
        welcome = step("w", "Welcome!", parentId=CHAT_START_RUN)
        chat_start = on_chat_start_task(0.01)
        events = [*chat_start[:2], ("new_message", welcome, 0.02), *chat_start[2:],
                  *echo_turn(0.1)]
        tracker = TurnTracker(0.0, MESSAGE_ID)
        feed_all(tracker, events)
        assert tracker.result().text == "echo: hi you"

    def test_ask_does_not_end_the_turn(self) -> None:
        """AskUserMessage's task_end after the answer, and its task_start, are skipped."""
        turn = echo_turn(0.1)
        ask = {"msg": step("q", "your name?", parentId=RUN), "spec": {"type": "text"}}
        events = [*turn[:2], ("ask", ask, 0.2), ("task_end", {}, 0.3), ("clear_ask", {}, 0.3),
                  ("task_start", {}, 0.3), *turn[2:]]
        for message_id in (MESSAGE_ID, None):
            tracker = TurnTracker(0.0, message_id)
            assert feed_all(tracker, events) == ["update_message", "task_end"]
            assert tracker.result().text == "echo: hi you"

    def test_without_run_steps_tasks_are_counted(self) -> None:
        """A server that sends no run steps ends the turn at its balancing task_end."""
        events: list[tuple[str, Any, float]] = [
            *CONNECTION_ANSWER, ("task_start", {}, 0.1), ("task_start", {}, 0.2),
            ("new_message", step("a", "hello"), 0.3), ("task_end", {}, 0.4),
            ("task_end", {}, 0.5)]
        tracker = TurnTracker(0.0, MESSAGE_ID)
        assert feed_all(tracker, events) == ["task_end"]
        assert tracker.result().turn_s == pytest.approx(0.5)

    def test_ask_timeout_without_run_steps(self) -> None:
        """After ask_timeout only a task_start follows; it is skipped, not counted."""
        events: list[tuple[str, Any, float]] = [
            ("task_start", {}, 0.1), ("ask", {"msg": step("q", "?")}, 0.2),
            ("ask_timeout", {}, 0.3), ("task_start", {}, 0.3),
            ("new_message", step("a", "no answer"), 0.4), ("task_end", {}, 0.5)]
        tracker = TurnTracker(0.0)
        assert feed_all(tracker, events) == ["task_end"]

    def test_two_turns_in_flight(self) -> None:
        """Two trackers fed every event each keep their own turn's steps and end."""
        other_id = "7a7a7a7a-0000-4000-8000-000000000009"
        other_run, other_echo = "b2b2b2b2-0000-4000-8000-00000000000a", "e1"
        first, second = TurnTracker(0.0, MESSAGE_ID), TurnTracker(0.01, other_id)
        events = [
            ("task_start", {}, 0.1), ("task_start", {}, 0.1),
            ("new_message", run_step(RUN, "on_message", MESSAGE_ID, ended=False), 0.11),
            ("new_message", run_step(other_run, "on_message", other_id, ended=False), 0.12),
            ("stream_start", step(other_echo, "echo: two", parentId=other_run), 0.13),
            ("stream_start", step(ECHO, "echo: one", parentId=RUN), 0.14),
            ("stream_token", token(other_echo, "!"), 0.15),
            ("update_message", run_step(RUN, "on_message", MESSAGE_ID, ended=True), 0.16),
            ("update_message", run_step(other_run, "on_message", other_id, ended=True), 0.17),
            ("task_end", {}, 0.18), ("task_end", {}, 0.19)]
        for name, data, now in events:
            first.feed(name, data, now)
            second.feed(name, data, now)
        assert (first.result().text, first.ended_at) == ("echo: one", 0.16)
        assert (second.result().text, second.ended_at) == ("echo: two!", 0.17)
        assert second.result().tokens == 2
