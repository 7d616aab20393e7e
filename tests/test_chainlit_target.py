"""The DESIGN.md invariants again for ``chainlit`` sessions, against the embedded target.

Identity here is the Socket.IO auth payload and its ``sessionId``, read back from
the target's handshake log. Marked ``concurrency``: it runs under gevent too.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support import EventLog, wait_until
from target_process import TargetProcess

from supervisor import (
    ConnectionLost,
    Event,
    Lifecycle,
    LifecycleKind,
    OutboxFull,
    ProtocolRefused,
    SessionSpec,
    SessionStatus,
    Supervisor,
)
from supervisor._transport import Received
from supervisor.chainlit_auth import login
from supervisor.protocols import socketio as socketio_protocol

pytestmark = pytest.mark.concurrency

TIMEOUT = 15.0


@pytest.fixture(scope="module")
def target() -> Iterator[TargetProcess]:
    """The default target: Chainlit 2.x identity, no login."""
    with TargetProcess() as running:
        yield running


def spec(url: str, thread_id: str | None = None, **extra: Any) -> SessionSpec:
    settings: dict[str, Any] = {"protocol": "chainlit", "chainlit_version": "2",
                                "connect_timeout": TIMEOUT}
    settings.update(extra)
    return SessionSpec(url=url, thread_id=thread_id, **settings)


def thread() -> str:
    return str(uuid.uuid4())


def connects_of(target: TargetProcess, threads: set[str]) -> list[dict[str, Any]]:
    return [h for h in target.handshakes() if h["thread_id"] in threads]


class TestChainlitIdentity:
    """I1/I2: each connect carries the accepted thread in its auth payload, a fresh sessionId."""

    def test_each_resume_connects_with_its_thread_and_a_new_session_id(
            self, target: TargetProcess, supervisor: Supervisor) -> None:
        """Thread ids arrive in order; every Resume rotates sessionId; turns land there."""
        ids = [thread() for _ in range(4)]
        session = supervisor.open(spec(target.url, ids[0]))
        session.resume(ids[0]).get(timeout=TIMEOUT)
        for thread_id in ids[1:]:
            result = session.resume(thread_id).get(timeout=TIMEOUT)
            assert result.found is False  # new threads: the target does not know them yet
            turn = session.chat(f"in {thread_id}").get(timeout=TIMEOUT)
            assert {step["threadId"] for step in turn.steps} == {thread_id}
        connects = connects_of(target, set(ids))
        assert [c["thread_id"] for c in connects] == ids
        assert len({c["session_id"] for c in connects}) == len(ids)
        assert {c["client_type"] for c in connects} == {"webapp"}

    def test_resume_replays_the_thread_history(
            self, target: TargetProcess, supervisor: Supervisor) -> None:
        """Back in a thread, resume_thread brings its steps, labelled with that thread."""
        first, second = thread(), thread()
        log = EventLog()
        session = supervisor.open(spec(target.url, first, on_event=log))
        session.chat("remember me").get(timeout=TIMEOUT)
        session.resume(second).get(timeout=TIMEOUT)
        result = session.resume(first).get(timeout=TIMEOUT)
        assert result.found is True
        assert result.thread["id"] == first
        assert "remember me" in [step["output"] for step in result.thread["steps"]]
        (resumed,) = [e for e in log.events if e.name == "resume_thread"]
        assert resumed.thread_id == first

    def test_identity_style_1_uses_headers(self, supervisor: Supervisor) -> None:
        """Against a 1.x-style server the identity travels in X-Chainlit-* headers."""
        with TargetProcess("--identity-style", "1") as old:
            thread_id = thread()
            session = supervisor.open(spec(old.url, thread_id, chainlit_version="auto"))
            session.resume(thread_id).get(timeout=TIMEOUT)
            assert session.chat("hi").get(timeout=TIMEOUT).text == "hi"
            (connect,) = connects_of(old, {thread_id})
            assert connect["style"] == "1"
            assert connect["outcome"] == "accepted"


class TestChainlitConcurrency:
    """I3/I4: coalescing and no cross-talk with streamed replies in flight."""

    def test_resumes_during_a_slow_handshake_coalesce(self, supervisor: Supervisor) -> None:
        """Resumes issued while the first connect is slow cause one more connect, the last."""
        # The delay only has to outlast four resume() calls made right after open().
        with TargetProcess("--handshake-delay", "2") as slow:
            ids = [thread() for _ in range(5)]
            session = supervisor.open(spec(slow.url, ids[0]))
            futures = [session.resume(t) for t in ids[1:]]
            results = [f.get(timeout=TIMEOUT) for f in futures]
            assert [r.superseded for r in results] == [True, True, True, False]
            threads = [c["thread_id"] for c in connects_of(slow, set(ids))]
            assert len(threads) <= 2
            assert threads[-1] == ids[-1]

    def test_no_frame_is_labelled_with_another_thread(
            self, target: TargetProcess, supervisor: Supervisor) -> None:
        """Turns interrupted by Resumes never deliver a step under the wrong thread."""
        log = EventLog()
        sessions = [supervisor.open(spec(target.url, thread(), on_event=log))
                    for _ in range(10)]
        pending = []
        for _round in range(5):
            for session in sessions:
                pending.append(session.chat("one two three four five"))
                pending.append(session.resume(thread()))
        for future in pending:
            # A turn cut by its Resume fails with ConnectionLost; anything else propagates.
            with contextlib.suppress(ConnectionLost):
                future.get(timeout=TIMEOUT)
        stepped = [e for e in log.events
                   if isinstance(e.data, dict) and isinstance(e.data.get("threadId"), str)]
        assert stepped
        for event in stepped:
            assert event.data["threadId"] == event.thread_id, event


class TestChainlitRestarts:
    """I5/I6/I7: restarts keep the thread and session, buffers flush, refusals are typed."""

    def test_dropped_connection_restores_the_same_thread(self, supervisor: Supervisor) -> None:
        """After the server cuts the socket, the reconnect carries the latest thread."""
        reports: list[Lifecycle] = []
        connected = threading.Semaphore(0)

        def on_lifecycle(report: Lifecycle) -> None:
            reports.append(report)
            if report.kind is LifecycleKind.CONNECTED:
                connected.release()

        with TargetProcess("--drop-probability", "1", "--seed", "1") as dropping:
            first, latest = thread(), thread()
            session = supervisor.open(spec(dropping.url, first, on_lifecycle=on_lifecycle))
            session.resume(first).get(timeout=TIMEOUT)
            session.resume(latest).get(timeout=TIMEOUT)
            session.chat("then drop").get(timeout=TIMEOUT)  # the target cuts after the reply
            for _ in range(3):  # open, resume, and the reconnect after the cut
                assert connected.acquire(timeout=TIMEOUT)
            connects = connects_of(dropping, {first, latest})
            assert connects[-1]["thread_id"] == latest
            assert connects[-1]["session_id"] == connects[-2]["session_id"]  # kept on a drop
            assert session.state().restarts >= 1
            assert LifecycleKind.LOST in [r.kind for r in reports]

    def test_chats_wait_for_the_connection_in_order(self, supervisor: Supervisor) -> None:
        """Chats issued while connecting are sent once connected; one past the bound fails."""
        with TargetProcess("--handshake-delay", "2") as slow:
            session = supervisor.open(spec(slow.url, thread(), outbox_limit=2))
            turns = [session.chat("first"), session.chat("second")]
            with pytest.raises(OutboxFull):
                session.chat("third").get(timeout=TIMEOUT)
            assert [t.get(timeout=TIMEOUT).text for t in turns] == ["first", "second"]

    def test_refused_connect_is_a_typed_error(self, supervisor: Supervisor) -> None:
        """A 44 refusal fails the resume with ProtocolRefused and the session, not retried."""
        with TargetProcess("--refuse-probability", "1") as refusing:
            session = supervisor.open(spec(refusing.url))
            with pytest.raises(ProtocolRefused):
                session.resume(thread()).get(timeout=TIMEOUT)
            wait_until(lambda: session.state().status is SessionStatus.FAILED)
            assert session.state().restarts == 0


class TestChainlitIsolationAndAcks:
    """I8, acknowledgements both ways, and heartbeats."""

    def test_login_cookie_is_per_session(self, supervisor: Supervisor) -> None:
        """A logged-in session works; one opened without the cookie is refused."""
        with TargetProcess("--require-login") as guarded:
            cookies = login(guarded.url, "alice", "alice")
            mine = supervisor.open(spec(guarded.url, cookies=cookies))
            assert mine.chat("hello").get(timeout=TIMEOUT).text == "hello"
            other = supervisor.open(spec(guarded.url))
            with pytest.raises(ProtocolRefused):
                other.resume(thread()).get(timeout=TIMEOUT)
            users = {h["user"] for h in guarded.handshakes() if h["outcome"] == "accepted"}
            assert users == {"alice"}

    def test_acks_both_ways(self, target: TargetProcess, supervisor: Supervisor) -> None:
        """call() resolves with the server's ack; on_ask's answer becomes the client's ack."""
        asked: list[Event] = []

        def on_ask(event: Event) -> dict[str, Any]:
            asked.append(event)
            return {"id": str(uuid.uuid4()), "output": "Ada", "type": "user_message"}

        thread_id = thread()
        session = supervisor.open(spec(target.url, thread_id, on_ask=on_ask))
        assert session.call("echo_ack", {"n": 1}).get(timeout=TIMEOUT) == {
            "data": {"n": 1}, "thread": thread_id}
        turn = session.chat("/ask name").get(timeout=TIMEOUT)
        assert [e.name for e in asked] == ["ask"]
        assert "Ada" in turn.text

    def test_idle_session_outlives_the_ping_timeout(
            self, supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
        """Pongs from the reader thread keep an idle session on its first connection."""
        pongs = threading.Semaphore(0)
        original = socketio_protocol.SocketIOCodec.autoreply

        def counting_autoreply(self: Any, frame: str | bytes) -> str | bytes | None:
            reply = original(self, frame)
            if reply is not None:
                pongs.release()
            return reply

        monkeypatch.setattr(socketio_protocol.SocketIOCodec, "autoreply", counting_autoreply)
        with TargetProcess("--ping-interval", "1", "--ping-timeout", "2") as pinging:
            session = supervisor.open(spec(pinging.url))
            session.resume(None).get(timeout=TIMEOUT)
            for _ in range(5):  # five pings answered: past interval + timeout, twice over
                assert pongs.acquire(timeout=TIMEOUT)
            assert session.chat("still here").get(timeout=TIMEOUT).text == "still here"
            state = session.state()
            assert state.handshakes == 1
            assert state.restarts == 0


def test_malformed_frames_are_counted_not_fatal(supervisor: Supervisor,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame the codec cannot parse is counted; the session stays on its connection."""
    with TargetProcess() as target:
        session = supervisor.open(spec(target.url))
        session.resume(None).get(timeout=TIMEOUT)
        # No server sends garbage on purpose: hand the actor one as its reader would.
        actor = session._record.ref
        assert actor is not None
        actor.tell(Received(session.state().generation, "4this is not a packet"))
        wait_until(lambda: session.state().malformed_frames == 1)
        assert session.state().status is SessionStatus.CONNECTED
        assert session.state().handshakes == 1


def test_refusal_of_a_superseded_identity_spares_the_newer_resume(
        supervisor: Supervisor) -> None:
    """Resume(other user's thread) then Resume(own thread): the refusal does not sink the second."""
    with TargetProcess("--require-login") as guarded:
        bob = supervisor.open(spec(guarded.url, cookies=login(guarded.url, "bob", "bob")))
        bobs_thread = thread()
        bob.resume(bobs_thread).get(timeout=TIMEOUT)
        bob.chat("bob's secret").get(timeout=TIMEOUT)
        alice = supervisor.open(spec(guarded.url, cookies=login(guarded.url, "alice", "alice")))
        alice.resume(None).get(timeout=TIMEOUT)
        refused = alice.resume(bobs_thread)
        own = thread()
        accepted = alice.resume(own).get(timeout=TIMEOUT)
        assert accepted.thread_id == own
        assert refused.get(timeout=TIMEOUT).superseded
        assert alice.chat("mine").get(timeout=TIMEOUT).text == "mine"
        assert alice.state().status is SessionStatus.CONNECTED
