"""One test (at least) per DESIGN.md invariant I1-I8, against a real server on loopback.

Marked ``concurrency``: the suite runs them again in a gevent-patched subprocess.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from recording_server import RecordingServer, header_values
from support import SESSION_HEADER, EventLog, echo, fast_policy, handshakes_of, wait_until

from supervisor import (
    Event,
    OutboxFull,
    Session,
    SessionClosed,
    SessionFailed,
    SessionSpec,
    SessionStatus,
    Supervisor,
)
from supervisor import _session_actor as session_actor_module
from supervisor.protocols import websocket as websocket_protocol

pytestmark = pytest.mark.concurrency

OpenSession = Callable[..., Session]


@pytest.fixture
def open_session(supervisor: Supervisor, ws_server: RecordingServer) -> OpenSession:
    """Open a session on the recording server, tagged so its handshakes can be found."""
    counter = iter(range(1_000_000))

    def _open(thread_id: str | None = None, **spec: Any) -> Session:
        session_id = spec.pop("session_id", f"s{next(counter)}")
        headers = {SESSION_HEADER: session_id, **spec.pop("headers", {})}
        return supervisor.open(SessionSpec(url=ws_server.url, thread_id=thread_id,
                                           session_id=session_id, headers=headers, **spec))

    return _open


class TestIdentity:
    """I1: every handshake carries the thread id the state held when it began."""

    def test_each_handshake_carries_the_thread_accepted_before_it(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """Sequential resumes produce handshakes carrying exactly those ids, in order."""
        session = open_session("t-0")
        # Wait for the first connect: a Resume during it would (rightly) coalesce it away.
        session.resume("t-0").get(timeout=10)
        for thread in ["t-1", "t-2", "t-3"]:
            result = session.resume(thread).get(timeout=10)
            assert result.thread_id == thread
            assert not result.superseded
        threads = [h["thread"] for h in handshakes_of(ws_server, session.id)]
        assert threads == ["t-0", "t-1", "t-2", "t-3"]

    def test_no_thread_means_no_thread_header(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """A session opened without a thread sends no thread header (a new conversation)."""
        session = open_session(None)
        session.resume(None).get(timeout=10)
        (handshake,) = handshakes_of(ws_server, session.id)
        assert header_values(handshake, "X-Chainlit-Thread-Id") == []

    def test_a_user_header_cannot_smuggle_another_thread_id(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """The thread header comes from state alone, even if headers= names it too."""
        session = open_session("t-state", headers={"x-chainlit-thread-id": "t-smuggled"})
        session.resume("t-state").get(timeout=10)
        (handshake,) = handshakes_of(ws_server, session.id)
        assert header_values(handshake, "X-Chainlit-Thread-Id") == ["t-state"]

    def test_thread_header_can_be_renamed(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """SessionSpec(thread_header=...) moves the thread id to another header."""
        ws_server.set_thread_header("X-Conversation")
        session = open_session("t-9", thread_header="X-Conversation")
        session.resume("t-9").get(timeout=10)
        (handshake,) = handshakes_of(ws_server, session.id)
        assert header_values(handshake, "X-Conversation") == ["t-9"]
        assert header_values(handshake, "X-Chainlit-Thread-Id") == []


class TestResumeCompletes:
    """I2: after resume(t) resolves, the live connection's handshake carried t."""

    def test_frames_after_resume_travel_on_the_new_thread(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """The seed bug: after a switch the live connection must carry the new thread."""
        log = EventLog()
        session = open_session("t-a", on_event=log)
        session.resume("t-a").get(timeout=10)
        session.resume("t-b").get(timeout=10)
        session.send("hello").get(timeout=10)
        (event,) = log.wait_for_count(1)
        assert echo(event) == {"thread": "t-b", "conn": echo(event)["conn"], "text": "hello"}
        assert event.thread_id == "t-b"
        state = ws_server.wait_for_open_connections(1)
        assert state["threads"] == ["t-b"]
        assert session.state().connected_thread_id == "t-b"

    def test_resuming_the_live_thread_is_a_no_op(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """Resume of the thread already live resolves at once without a handshake."""
        session = open_session("t-a")
        first = session.resume("t-a").get(timeout=10)
        again = session.resume("t-a").get(timeout=10)
        assert again.generation == first.generation
        assert len(handshakes_of(ws_server, session.id)) == 1


class TestResumesCoalesce:
    """I3: k Resumes during one connect cause at most one further handshake, the last id."""

    def test_resumes_during_a_held_handshake_coalesce(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """Four Resumes while the first handshake is held: one more handshake, for the last."""
        ws_server.hold_handshakes()
        session = open_session("t-0")
        ws_server.wait_for_handshakes(1)
        futures = [session.resume(f"t-{i}") for i in range(1, 5)]
        for future in futures[:-1]:
            result = future.get(timeout=10)
            assert result.superseded, result
        ws_server.release_handshakes()
        final = futures[-1].get(timeout=10)
        assert final.thread_id == "t-4"
        assert not final.superseded
        threads = [h["thread"] for h in handshakes_of(ws_server, session.id)]
        assert len(threads) <= 2
        assert threads[0] == "t-0"
        assert threads[-1] == "t-4"


class TestNoCrossTalk:
    """I4: frames from a superseded connection are dropped and counted, never relabelled."""

    def test_frames_queued_behind_a_resume_are_dropped(
            self, open_session: OpenSession) -> None:
        """Echoes of the old connection that reach the mailbox after a Resume are stale."""
        first_seen = threading.Event()
        unblock = threading.Event()

        def block_on_first(event: Event) -> None:
            if not first_seen.is_set():
                first_seen.set()
                assert unblock.wait(10)

        log = EventLog(on_each=block_on_first)
        session = open_session("t-old", on_event=log)
        session.resume("t-old").get(timeout=10)
        # Not waited on here: its Written report may queue behind the echo that
        # blocks the actor below, and send futures settle in the actor.
        first = session.send("first")
        assert first_seen.wait(10)  # the actor is now busy inside on_event
        resumed = session.resume("t-new")  # queued behind nothing yet
        for i in range(3):  # written by the actor only after the Resume: on t-new
            session.send(f"late-{i}")
        # Make the old connection produce frames that queue up behind the Resume.
        inbox = _inbox_of(session)
        session_actor = _actor_of(session)
        old_connection = session_actor._connections[session.state().generation]
        for i in range(3):
            old_connection.send(f"stale-{i}")
        wait_until(lambda: inbox.qsize() >= 1 + 3 + 3, what="stale echoes in the mailbox")
        unblock.set()
        first.get(timeout=10)
        resumed.get(timeout=10)
        events = log.wait_for(lambda evs: sum("late" in e.data for e in evs) == 3)
        for event in events:
            assert echo(event)["thread"] == event.thread_id
        assert not any("stale" in e.data for e in events if e.thread_id == "t-new")
        assert session.state().stale_frames_dropped >= 3


class TestRestartsResumeLatest:
    """I5: a restarted session reconnects with its latest accepted thread id."""

    def test_socket_loss_reconnects_with_latest_thread(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """After the server kills the connection, the reconnect carries the last Resume."""
        session = open_session("t-1")
        session.resume("t-2").get(timeout=10)
        session.resume("t-3").get(timeout=10)
        before = len(handshakes_of(ws_server, session.id))
        ws_server.kill_all()
        wait_until(lambda: len(handshakes_of(ws_server, session.id)) > before
                   and session.state().status is SessionStatus.CONNECTED,
                   what="the reconnect")
        assert handshakes_of(ws_server, session.id)[-1]["thread"] == "t-3"
        assert session.state().restarts >= 1

    def test_actor_crash_restarts_with_latest_thread(
            self, open_session: OpenSession, ws_server: RecordingServer,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """A handler crash replaces the actor; the successor resumes the latest thread."""
        original = websocket_protocol.WebSocketCodec.received

        def received(self: Any, frame: str | bytes) -> Any:
            if isinstance(frame, str) and "boom" in frame:
                raise RuntimeError("codec bug on a weird frame")
            return original(self, frame)

        monkeypatch.setattr(websocket_protocol.WebSocketCodec, "received", received)
        log = EventLog()
        session = open_session("t-1", on_event=log)
        session.resume("t-2").get(timeout=10)
        first_actor = _actor_of(session)
        session.send("boom").get(timeout=10)
        wait_until(lambda: not first_actor.actor_ref.is_alive(), what="the crash")
        # Commands sent across the crash are handed to the successor, not lost.
        sent = session.send("after-crash")
        sent.get(timeout=10)
        log.wait_for(lambda evs: any("after-crash" in e.data for e in evs))
        assert handshakes_of(ws_server, session.id)[-1]["thread"] == "t-2"
        assert _actor_of(session) is not first_actor
        assert session.state().restarts == 1

    def test_on_start_crash_is_supervised(
            self, open_session: OpenSession, ws_server: RecordingServer,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """pykka skips on_failure when on_start raises; the session is restarted anyway."""
        original = session_actor_module.make_codec
        calls = {"n": 0}

        def flaky_make_codec(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("first start fails")
            return original(*args, **kwargs)

        monkeypatch.setattr(session_actor_module, "make_codec", flaky_make_codec)
        session = open_session("t-1")
        result = session.resume("t-1").get(timeout=10)
        assert result.thread_id == "t-1"
        assert session.state().restarts == 1
        assert [h["thread"] for h in handshakes_of(ws_server, session.id)] == ["t-1"]


class TestNothingDroppedSilently:
    """I6: every future resolves or fails typed; reconnect buffers are bounded and ordered."""

    def test_sends_while_connecting_flush_in_order(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """Sends buffered during a held handshake are written in order once connected."""
        ws_server.hold_handshakes()
        log = EventLog()
        session = open_session("t-1", on_event=log)
        ws_server.wait_for_handshakes(1)
        futures = [session.send(f"m{i}") for i in range(5)]
        assert session.state().status is SessionStatus.CONNECTING
        ws_server.release_handshakes()
        for future in futures:
            future.get(timeout=10)
        events = log.wait_for_count(5)
        assert [echo(e)["text"] for e in events] == [f"m{i}" for i in range(5)]

    def test_full_outbox_fails_with_a_typed_error(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """Past outbox_limit, a send fails with OutboxFull; the earlier ones still go."""
        ws_server.hold_handshakes()
        session = open_session("t-1", outbox_limit=2)
        ws_server.wait_for_handshakes(1)
        kept = [session.send("a"), session.send("b")]
        overflow = session.send("c")
        with pytest.raises(OutboxFull):
            overflow.get(timeout=10)
        ws_server.release_handshakes()
        for future in kept:
            future.get(timeout=10)

    def test_close_fails_pending_commands(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """Commands waiting for a connection fail with SessionClosed when the session closes."""
        ws_server.hold_handshakes()
        session = open_session("t-1")
        ws_server.wait_for_handshakes(1)
        pending_resume = session.resume("t-2")
        pending_send = session.send("never")
        session.close().get(timeout=10)
        with pytest.raises(SessionClosed):
            pending_resume.get(timeout=10)
        with pytest.raises(SessionClosed):
            pending_send.get(timeout=10)
        with pytest.raises(SessionClosed):
            session.send("after close").get(timeout=10)
        assert session.state().status is SessionStatus.CLOSED
        assert session.status is SessionStatus.CLOSED  # the same snapshot, not copied
        ws_server.release_handshakes()


class TestNoStorms:
    """I7: budgets and admission limits hold; one session failing leaves the rest alone."""

    def test_exhausted_budget_fails_one_session_only(
            self, ws_server: RecordingServer) -> None:
        """A session that cannot connect fails with its reason; a healthy one keeps working."""
        failures: list[tuple[str, str]] = []
        failed = threading.Event()

        def on_failed(session_id: str, reason: str) -> None:
            failures.append((session_id, reason))
            failed.set()

        policy = fast_policy(max_restarts=3, restart_window=60.0)
        with Supervisor.start(policy, on_session_failed=on_failed) as sup:
            log = EventLog()
            healthy = sup.open(SessionSpec(url=ws_server.url, thread_id="t-ok", on_event=log))
            doomed = sup.open(SessionSpec(url="ws://127.0.0.1:1/nowhere", thread_id="t-x",
                                          connect_timeout=2))
            pending = doomed.resume("t-x")
            assert failed.wait(20)
            with pytest.raises(SessionFailed, match="restart budget exhausted"):
                pending.get(timeout=10)
            state = doomed.state()
            assert state.status is SessionStatus.FAILED
            assert state.restarts == 3
            assert failures == [(doomed.id, state.reason)]
            healthy.send("still here").get(timeout=10)
            (event,) = log.wait_for_count(1)
            assert echo(event)["text"] == "still here"
            assert healthy.state().status is SessionStatus.CONNECTED

    @pytest.mark.parametrize("status", [401, 403])
    def test_credential_refusal_is_not_retried(
            self, open_session: OpenSession, ws_server: RecordingServer, status: int) -> None:
        """A handshake refused with 401/403 fails the session at once, status in the reason."""
        ws_server.refuse(status)
        session = open_session("t-1")
        with pytest.raises(SessionFailed, match=str(status)):
            session.resume("t-1").get(timeout=10)
        assert session.state().restarts == 0
        assert len(handshakes_of(ws_server, session.id)) == 1

    def test_server_errors_are_retried(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """A 503 refusal is retried with backoff until the server accepts."""
        ws_server.refuse(503, count=2)
        session = open_session("t-1")
        session.resume("t-1").get(timeout=10)
        outcomes = [h["status"] for h in handshakes_of(ws_server, session.id)]
        assert outcomes == [503, 503, 101]
        assert session.state().restarts == 2

    def test_a_server_that_never_answers_the_protocol_handshake_times_out(
            self, ws_server: RecordingServer) -> None:
        """A Socket.IO session to a plain WebSocket server fails within connect_timeout."""
        with Supervisor.start(fast_policy(max_restarts=0)) as sup:
            session = sup.open(SessionSpec(url=ws_server.url, protocol="socketio",
                                           connect_timeout=0.5))
            with pytest.raises(SessionFailed, match=r"no Engine.IO open packet in 0\.5s.*protocol"):
                session.resume(None).get(timeout=10)

    def test_resume_during_backoff_connects_at_once(self, ws_server: RecordingServer) -> None:
        """A Resume during a long backoff connects now and is not counted as a restart."""
        class Longest:
            def uniform(self, a: float, b: float) -> float:
                return b

        policy = fast_policy(backoff_base=300.0, backoff_cap=300.0, rng=Longest())
        ws_server.refuse(503, count=1)
        with Supervisor.start(policy) as sup:
            session = sup.open(SessionSpec(url=ws_server.url, thread_id="t-1"))
            wait_until(lambda: session.state().last_backoff == 300.0, what="the backoff")
            assert session.state().status is SessionStatus.BACKOFF
            result = session.resume("t-2").get(timeout=10)  # far less than 300 s
            assert result.thread_id == "t-2"
            assert session.state().restarts == 0
            assert [h["thread"] for h in ws_server.handshakes()] == ["t-1", "t-2"]

    def test_admission_limits_handshakes_in_flight(self, ws_server: RecordingServer) -> None:
        """With max 2 handshakes in flight, 5 sessions never have a third at the server."""
        ws_server.hold_handshakes()
        with Supervisor.start(fast_policy(max_handshakes_in_flight=2)) as sup:
            sessions = [sup.open(SessionSpec(url=ws_server.url, thread_id=f"t-{i}"))
                        for i in range(5)]
            ws_server.wait_for_handshakes(2)
            admission = sup._ref._actor_weakref()._admission
            wait_until(lambda: admission.waiting == 3, what="three sessions queued")
            assert len(ws_server.handshakes()) == 2
            ws_server.release_handshakes()
            for session in sessions:
                session.resume(session.spec.thread_id).get(timeout=10)


class TestIsolation:
    """I8: nothing set for one session is sent by another; control characters are refused."""

    def test_server_cookies_do_not_leak_between_sessions(
            self, open_session: OpenSession, ws_server: RecordingServer) -> None:
        """A Set-Cookie answered to session A is never sent by session B (nor by A again)."""
        ws_server.set_cookie("srv")
        first = open_session("t-a", cookies={"mine": "a"})
        first.resume("t-a").get(timeout=10)
        second = open_session("t-b")
        second.resume("t-b").get(timeout=10)
        first.resume("t-a2").get(timeout=10)
        (b_handshake,) = handshakes_of(ws_server, second.id)
        assert header_values(b_handshake, "Cookie") == []
        for handshake in handshakes_of(ws_server, first.id):
            assert header_values(handshake, "Cookie") == ["mine=a"]

    @pytest.mark.parametrize("bad", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb"])
    def test_control_characters_are_refused_before_io(
            self, supervisor: Supervisor, ws_server: RecordingServer, bad: str) -> None:
        """CR, LF and other control characters fail with ValueError and send nothing."""
        with pytest.raises(ValueError, match="control character"):
            SessionSpec(url=ws_server.url, headers={"X-Custom": bad})
        with pytest.raises(ValueError, match="control character"):
            SessionSpec(url=ws_server.url, thread_id=bad)
        session = supervisor.open(SessionSpec(url=ws_server.url, thread_id="t-ok"))
        session.resume("t-ok").get(timeout=10)
        with pytest.raises(ValueError, match="control character"):
            session.resume(bad)
        assert [h["thread"] for h in ws_server.handshakes()] == ["t-ok"]

    def test_tab_is_allowed_in_header_values(self, ws_server: RecordingServer) -> None:
        """Tab is legal inside an HTTP header value and is kept."""
        spec = SessionSpec(url=ws_server.url, headers={"X-Custom": "a\tb"})
        assert spec.headers["X-Custom"] == "a\tb"


def _actor_of(session: Session) -> Any:
    ref = session._record.ref
    assert ref is not None
    return ref._actor_weakref()


def _inbox_of(session: Session) -> Any:
    return _actor_of(session).actor_inbox

