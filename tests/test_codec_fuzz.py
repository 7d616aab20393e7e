"""Codecs never raise: hypothesis feeds every codec's decoding hostile frame sequences.

Any input gives frames, events or a counted ``Malformed`` (DESIGN I10). Inputs are
near-misses of the real grammar (Engine.IO and Socket.IO type digits, attachment
counts, namespaces, ack ids, JSON with placeholders, binary frames) as well as
arbitrary text and bytes. Runs derandomized, so CI sees the same inputs each time.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from supervisor.protocols.chat import TurnTracker
from supervisor.protocols.config import ProtocolConfig

ACTIONS = (Ready, Outbound, Inbound, Acked, Phase, Refused, Disconnected, Malformed)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["_placeholder", "num", "id", "parentId", "type",
                                       "output", "name", "message", "sid", "end",
                                       "token", "pingInterval"]) | st.text(max_size=5),
                      children, max_size=4),
    max_leaves=20)
placeholders = st.builds(lambda num, flag: {"_placeholder": flag, "num": num},
                         st.integers(-2, 4) | st.text(max_size=2), st.booleans())
payloads = st.recursive(json_values | placeholders,
                        lambda children: st.lists(children, max_size=4), max_leaves=10)
event_names = st.sampled_from(["task_start", "task_end", "first_interaction", "resume_thread",
                               "resume_thread_error", "new_message", "update_message",
                               "stream_start", "stream_token", "ask", "x"])

ids = st.sampled_from(["m-1", "r-1", "s-1", ""]) | json_values
steps = st.fixed_dictionaries(
    {"id": st.sampled_from(["r-1", "s-1", "s-2"]) | json_values},
    optional={"parentId": ids, "type": st.sampled_from(["run", "assistant_message",
                                                         "user_message", "tool"]) | json_values,
              "output": json_values, "end": json_values, "token": json_values,
              "isSequence": json_values, "isInput": json_values, "name": json_values})


@st.composite
def socketio_frames(draw: st.DrawFn) -> str | bytes:
    """A frame shaped like Engine.IO/Socket.IO, with every field possibly wrong."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=16))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=30))
    engineio = draw(st.sampled_from("01234456789"))
    if engineio == "0":
        info = draw(st.dictionaries(st.sampled_from(["sid", "pingInterval", "pingTimeout",
                                                     "maxPayload"]),
                                    json_values | st.integers(min_value=10**300,
                                                              max_value=10**400),
                                    max_size=4))
        return "0" + json.dumps(info)
    if engineio != "4":
        return engineio + draw(st.text(max_size=5))
    packet_type = draw(st.sampled_from("01234566789"))
    count = ""
    if packet_type in "56":
        count = draw(st.sampled_from(["0", "1", "2", "3", "", "x", "99999"])) + draw(
            st.sampled_from(["-", "", "--"]))
    namespace = draw(st.sampled_from(["", "/chat,", "/other,", "/", "/chat"]))
    ack_id = draw(st.sampled_from(["", "0", "7", "9" * 25]))
    body = draw(st.one_of(
        st.builds(lambda name, args: json.dumps([name, *args]), event_names,
                  st.lists(payloads, max_size=3)),
        payloads.map(json.dumps), st.text(max_size=10)))
    return f"4{packet_type}{count}{namespace}{ack_id}{body}"


CONFIGS = [
    ("websocket", ProtocolConfig(url="ws://h/ws")),
    ("socketio", ProtocolConfig(url="http://h", protocol="socketio", auth={"a": 1})),
    ("socketio /chat", ProtocolConfig(url="http://h", protocol="socketio", namespace="/chat")),
    ("chainlit 2", ProtocolConfig(url="http://h", protocol="chainlit", chainlit_version="2")),
    ("chainlit 1", ProtocolConfig(url="http://h", protocol="chainlit", chainlit_version="1",
                                  cookies=(("access_token", "t"),))),
]


def check(actions: Any) -> None:
    assert isinstance(actions, list)
    assert all(isinstance(action, ACTIONS) for action in actions), actions


class TestCodecsNeverRaise:
    """Every codec, at every stage, from fresh through connected."""

    @FUZZ
    @given(config=st.sampled_from(CONFIGS), thread_id=st.sampled_from([None, "t1"]),
           confirm=st.booleans(), connect_first=st.booleans(),
           frames=st.lists(socketio_frames(), max_size=12))
    def test_any_frame_sequence(self, config: tuple[str, ProtocolConfig],
                                thread_id: str | None, confirm: bool, connect_first: bool,
                                frames: list[str | bytes]) -> None:
        """Frames in any order, at any stage: only actions come out, never an exception."""
        codec = make_codec(config[1], Identity(thread_id, "s-1"), confirm_resume=confirm)
        codec.handshake()
        check(codec.opened())
        if connect_first and config[1].protocol != "websocket":
            namespace = "" if config[1].namespace == "/" else config[1].namespace + ","
            check(codec.received('0{"sid":"e","pingInterval":25000,"pingTimeout":20000}'))
            check(codec.received(f'40{namespace}{{"sid":"s"}}'))
        for frame in frames:
            check(codec.received(frame))
            reply = codec.autoreply(frame)
            assert reply is None or isinstance(reply, str | bytes)

    @FUZZ
    @given(text=st.text(max_size=200) | st.binary(max_size=200).map(
        lambda raw: raw.decode("latin-1")))
    def test_arbitrary_text(self, text: str) -> None:
        """Unstructured text after a full handshake is never fatal."""
        for _, config in CONFIGS:
            codec = make_codec(config, Identity("t1", "s-1"))
            codec.handshake()
            check(codec.received(text))


class TestTurnTrackerNeverRaises:
    """The chat turn tracker reads server steps: hostile step records are ignored, not fatal."""

    @settings(FUZZ, max_examples=120)
    @given(message_id=st.sampled_from([None, "m-1"]),
           events=st.lists(st.tuples(event_names, steps | json_values), max_size=15))
    def test_any_event_sequence(self, message_id: str | None,
                                events: list[tuple[str, Any]]) -> None:
        """feed() and result() survive any sequence of named events with any data."""
        tracker = TurnTracker(0.0, message_id)
        for step, (name, data) in enumerate(events):
            assert tracker.feed(name, data, float(step)) in (True, False)
        result = tracker.result()
        assert isinstance(result.text, str)
