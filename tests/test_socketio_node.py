"""Supervised ``socketio`` sessions against the official Node.js Socket.IO server (socket.io 4.8).

The server is ``tests/interop/node/server.js``; ``bash tests/interop/setup.sh``
installs it (``.ci/run`` does). Its stdout is the handshake log the tests read.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from interop.node_server import NodeSocketIOServer, require_node_server
from support import EventLog

from supervisor import (
    Event,
    Lifecycle,
    LifecycleKind,
    ProtocolRefused,
    SessionSpec,
    SessionStatus,
    Supervisor,
)
from supervisor.protocols import Identity

TIMEOUT = 10.0
GOOD = {"token": "good"}


@pytest.fixture(scope="module")
def node() -> Iterator[NodeSocketIOServer]:
    """One official Socket.IO server for the module (default ping settings)."""
    require_node_server()
    with NodeSocketIOServer() as server:
        yield server


def sio_spec(server: NodeSocketIOServer, **extra: Any) -> SessionSpec:
    settings: dict[str, Any] = {"url": server.url, "protocol": "socketio", "auth": GOOD,
                                "connect_timeout": TIMEOUT}
    settings.update(extra)
    return SessionSpec(**settings)


def connection_of(server: NodeSocketIOServer, session: str) -> dict[str, Any]:
    return server.wait_for(lambda r: r.get("ev") == "connection" and r.get("session") == session)


class TestConnect:
    """The namespace connect, with the auth payload the middleware checks."""

    def test_auth_payload_reaches_the_server(self, node: NodeSocketIOServer,
                                             supervisor: Supervisor) -> None:
        """A good token connects; the server logs exactly the auth payload sent."""
        tag = uuid.uuid4().hex
        session = supervisor.open(sio_spec(node, headers={"X-Test-Session": tag}))
        assert session.call("echo", "hi").get(timeout=TIMEOUT) == "hi"
        assert connection_of(node, tag)["auth"] == GOOD

    def test_refusal_is_typed_with_the_servers_message(self, node: NodeSocketIOServer,
                                                        supervisor: Supervisor) -> None:
        """The middleware's Error('bad token') fails the resume with ProtocolRefused."""
        session = supervisor.open(sio_spec(node, auth={"token": "wrong"}))
        with pytest.raises(ProtocolRefused, match="bad token"):
            session.resume("t-1").get(timeout=TIMEOUT)
        node.wait_for(lambda r: r.get("ev") == "refused" and r.get("auth") == {"token": "wrong"})


class TestEventsAndAcks:
    """Events and acknowledgements in both directions."""

    def test_server_echoes_an_event(self, node: NodeSocketIOServer,
                                    supervisor: Supervisor) -> None:
        """An emitted event comes back as an event with the same data."""
        log = EventLog()
        session = supervisor.open(sio_spec(node, on_event=log))
        session.emit("echo", {"n": 1, "text": "é"}).get(timeout=TIMEOUT)
        echoed = log.wait_for(lambda evs: any(e.name == "echo" for e in evs), TIMEOUT)
        assert [e.data for e in echoed if e.name == "echo"] == [{"n": 1, "text": "é"}]

    def test_call_resolves_with_the_servers_ack(self, node: NodeSocketIOServer,
                                                supervisor: Supervisor) -> None:
        """call() resolves with the ack arguments, in order for many calls in flight."""
        session = supervisor.open(sio_spec(node))
        futures = [session.call("echo", {"i": i}) for i in range(50)]
        assert [f.get(timeout=TIMEOUT) for f in futures] == [{"i": i} for i in range(50)]

    def test_server_asks_and_on_ask_answers(self, node: NodeSocketIOServer,
                                            supervisor: Supervisor) -> None:
        """A server emit with an ack callback is answered by on_ask's return value."""
        log = EventLog()

        def answer(event: Event) -> Any:
            return {"answer": event.data["q"] * 2}

        session = supervisor.open(sio_spec(node, on_event=log, on_ask=answer))
        session.emit("ask", {"q": 21}).get(timeout=TIMEOUT)
        answered = log.wait_for(lambda evs: any(e.name == "answered" for e in evs), TIMEOUT)
        assert [e.data for e in answered if e.name == "answered"] == [
            {"type": "object", "value": {"answer": 42}}]


@pytest.fixture(scope="module")
def fast_pings() -> Iterator[NodeSocketIOServer]:
    """A server that pings every 100 ms; it logs each pong, which is what the tests count.

    The pong timeout is 1 s so a loaded machine's scheduling delay is not a loss; a
    client that stopped answering would show no new pongs (and be dropped within 1.1 s).
    """
    require_node_server()
    with NodeSocketIOServer(ping_interval_ms=100, ping_timeout_ms=1000) as server:
        yield server


class TestBinary:
    """Binary events and acks, both ways (socket.io-parser's attachments)."""

    def test_binary_ack_resolves_call(self, node: NodeSocketIOServer,
                                      supervisor: Supervisor) -> None:
        """An ack carrying a Buffer resolves call() with bytes (it used to never settle)."""
        session = supervisor.open(sio_spec(node))
        assert session.call("bin_ack", 300).get(timeout=TIMEOUT) == [
            bytes(i % 256 for i in range(300)), "done"]

    def test_binary_event_from_the_server(self, node: NodeSocketIOServer,
                                          supervisor: Supervisor) -> None:
        """Buffers nested in objects and arrays arrive as bytes where they were."""
        log = EventLog()
        session = supervisor.open(sio_spec(node, on_event=log))
        session.emit("blob").get(timeout=TIMEOUT)
        events = log.wait_for(lambda evs: any(e.name == "blob" for e in evs), TIMEOUT)
        [blob] = [e.data for e in events if e.name == "blob"]
        assert blob == {"name": "two buffers", "first": b"\x00\x01\x02\xff",
                        "nested": [b"hello", {"deeper": b""}, "text"]}
        assert session.state().malformed_frames == 0

    def test_binary_emit_and_call(self, node: NodeSocketIOServer,
                                  supervisor: Supervisor) -> None:
        """emit/call with bytes: the server gets Buffers (it echoes them back as binary)."""
        log = EventLog()
        session = supervisor.open(sio_spec(node, on_event=log))
        payload = {"raw": bytes(range(256)), "parts": [b"a", b"", "t"]}
        assert session.call("echo", payload).get(timeout=TIMEOUT) == payload
        session.emit("echo", b"\xde\xad").get(timeout=TIMEOUT)
        events = log.wait_for(lambda evs: any(e.name == "echo" for e in evs), TIMEOUT)
        assert [e.data for e in events if e.name == "echo"] == [b"\xde\xad"]

    def test_binary_answer_to_a_server_ask(self, node: NodeSocketIOServer,
                                           supervisor: Supervisor) -> None:
        """on_ask returning bytes answers with a binary ack; the server sees a Buffer."""
        log = EventLog()
        session = supervisor.open(sio_spec(node, on_event=log, on_ask=lambda e: b"\x01\x02"))
        session.emit("ask", "bytes please").get(timeout=TIMEOUT)
        answered = log.wait_for(lambda evs: any(e.name == "answered" for e in evs), TIMEOUT)
        assert [e.data for e in answered if e.name == "answered"] == [
            {"type": "bytes", "hex": "0102"}]


class TestAuthFromIdentity:
    """SessionSpec.auth as a callable: each handshake's auth carries that connection's thread."""

    def test_resume_changes_the_auth_the_server_reads(self, node: NodeSocketIOServer,
                                                     supervisor: Supervisor) -> None:
        """Three resumes: the server logs each thread in the connect auth, in order."""
        tag = uuid.uuid4().hex

        def auth(identity: Identity) -> dict[str, Any]:
            return {**GOOD, "thread": identity.thread_id, "sid": identity.protocol_session_id}

        session = supervisor.open(sio_spec(node, auth=auth, thread_id="a",
                                           headers={"X-Test-Session": tag}))
        assert session.call("echo", 0).get(timeout=TIMEOUT) == 0
        for thread_id in ("b", "c", "a"):
            session.resume(thread_id).get(timeout=TIMEOUT)
        assert session.call("echo", 1).get(timeout=TIMEOUT) == 1
        connections = node.wait_count("connection", 4, TIMEOUT, session=tag)
        assert [c["auth"]["thread"] for c in connections] == ["a", "b", "c", "a"]
        assert len({c["auth"]["sid"] for c in connections}) == 4  # rotated per Resume


@pytest.mark.concurrency
class TestHeartbeat:
    """Engine.IO pings are answered whether the session is idle or busy (both runtimes)."""

    def test_idle_session_survives_many_pings(self, fast_pings: NodeSocketIOServer,
                                              supervisor: Supervisor) -> None:
        """An idle session stays on one connection across a dozen ping intervals."""
        tag = uuid.uuid4().hex
        session = supervisor.open(sio_spec(fast_pings, headers={"X-Test-Session": tag}))
        assert session.call("echo", "up").get(timeout=TIMEOUT) == "up"
        sid = connection_of(fast_pings, tag)["sid"]
        fast_pings.wait_count("pong", 12, TIMEOUT, sid=sid)
        assert session.call("echo", "still up").get(timeout=TIMEOUT) == "still up"
        assert fast_pings.select("disconnect", sid=sid) == []
        assert session.state().handshakes == 1

    def test_busy_session_survives_pings(self, fast_pings: NodeSocketIOServer,
                                         supervisor: Supervisor) -> None:
        """Pings are answered while on_event blocks the actor for 10 ping intervals."""
        tag = uuid.uuid4().hex
        release = threading.Event()
        entered = threading.Event()

        def block(event: Event) -> None:
            if event.name == "echo" and event.data == "block":
                entered.set()
                release.wait(TIMEOUT)

        session = supervisor.open(sio_spec(fast_pings, on_event=block,
                                           headers={"X-Test-Session": tag}))
        session.emit("echo", "block").get(timeout=TIMEOUT)
        assert entered.wait(TIMEOUT)
        sid = connection_of(fast_pings, tag)["sid"]
        before = len(fast_pings.select("pong", sid=sid))
        try:  # the actor stays blocked while ten more heartbeats pass
            fast_pings.wait_count("pong", before + 10, TIMEOUT, sid=sid)
        finally:
            release.set()
        assert session.call("echo", "after").get(timeout=TIMEOUT) == "after"
        assert fast_pings.select("disconnect", sid=sid) == []
        assert session.state().handshakes == 1


class TestResumeAndNamespaces:
    """Resumes reconnect in order; a custom namespace; server-side disconnects."""

    def test_resumes_reach_the_server_in_order(self, node: NodeSocketIOServer,
                                               supervisor: Supervisor) -> None:
        """Twenty resumes: the server sees each thread header once, in the order resumed."""
        tag = uuid.uuid4().hex
        session = supervisor.open(sio_spec(node, headers={"X-Test-Session": tag}))
        assert session.call("echo", "first").get(timeout=TIMEOUT) == "first"
        threads = [f"thread-{i}" for i in range(20)]
        for thread_id in threads:
            result = session.resume(thread_id).get(timeout=TIMEOUT)
            assert result.thread_id == thread_id
            assert session.call("echo", thread_id).get(timeout=TIMEOUT) == thread_id
        connections = node.wait_count("connection", 21, TIMEOUT, session=tag)
        assert [c["thread"] for c in connections] == [None, *threads]

    def test_custom_namespace(self, node: NodeSocketIOServer, supervisor: Supervisor) -> None:
        """A session on /chat connects there and its events are served by /chat."""
        tag = uuid.uuid4().hex
        session = supervisor.open(sio_spec(node, namespace="/chat",
                                           headers={"X-Test-Session": tag}))
        assert session.call("echo", "in chat").get(timeout=TIMEOUT) == "in chat"
        assert connection_of(node, tag)["nsp"] == "/chat"

    def test_server_side_disconnect_restarts_the_session(self, node: NodeSocketIOServer,
                                                         supervisor: Supervisor) -> None:
        """socket.disconnect() on the server is a loss: the session reconnects and works."""
        tag = uuid.uuid4().hex
        kinds: list[LifecycleKind] = []
        reconnected = threading.Event()

        def on_lifecycle(change: Lifecycle) -> None:
            kinds.append(change.kind)
            if change.kind is LifecycleKind.CONNECTED and kinds.count(LifecycleKind.CONNECTED) > 1:
                reconnected.set()

        session = supervisor.open(sio_spec(node, on_lifecycle=on_lifecycle, thread_id="t-kick",
                                           headers={"X-Test-Session": tag}))
        assert session.call("echo", 1).get(timeout=TIMEOUT) == 1
        session.emit("kick").get(timeout=TIMEOUT)
        first = connection_of(node, tag)["sid"]
        node.wait_for(lambda r: r.get("ev") == "disconnect" and r.get("sid") == first)
        assert reconnected.wait(TIMEOUT)
        assert session.call("echo", 2).get(timeout=TIMEOUT) == 2
        connections = node.wait_count("connection", 2, TIMEOUT, session=tag)
        assert [c["thread"] for c in connections] == ["t-kick", "t-kick"]  # I5
        assert session.state().status is SessionStatus.CONNECTED
