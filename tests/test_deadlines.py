"""Every kind of future settles by its deadline against a server that never answers.

Resume and send against a WebSocket server that holds the upgrade forever; call
and chat against the embedded target, which never acks an unknown event and
streams its replies far slower than the deadline. Marked ``concurrency``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from recording_server import RecordingServer
from target_process import TargetProcess

from supervisor import SessionSpec, SessionStatus, Supervisor
from supervisor.errors import DeadlineExceeded, ReplyTimeout, ResumeTimeout, SendTimeout

pytestmark = pytest.mark.concurrency

DEADLINE = 0.5
SLACK = 5.0
"""How late past its deadline a future may settle on a loaded machine (bounded, not exact)."""


@pytest.fixture(scope="module")
def slow_target() -> Iterator[TargetProcess]:
    """The embedded target, streaming one reply token a minute."""
    with TargetProcess("--token-delay", "60") as running:
        yield running


def settles_late(future: Any, error: type[DeadlineExceeded]) -> float:
    """Wait for ``future`` to fail with ``error``; return how long it took."""
    started = time.monotonic()
    with pytest.raises(error):
        future.get(timeout=DEADLINE + SLACK)
    return time.monotonic() - started


def chainlit(url: str, **extra: Any) -> SessionSpec:
    return SessionSpec(url=url, protocol="chainlit", chainlit_version="2", **extra)


class TestDeadlines:
    """resume, send, call and chat each fail typed at their deadline."""

    def test_resume_times_out_and_the_session_keeps_trying(
            self, supervisor: Supervisor, ws_server: RecordingServer) -> None:
        """ResumeTimeout at the deadline; the handshake goes on and a later Resume connects."""
        ws_server.hold_handshakes()
        session = supervisor.open(SessionSpec(url=ws_server.url, thread_id="t-1"))
        assert settles_late(session.resume("t-1", timeout=DEADLINE), ResumeTimeout) < SLACK
        assert session.state().status is SessionStatus.CONNECTING
        ws_server.release_handshakes()
        assert session.resume("t-1").get(timeout=10).thread_id == "t-1"

    def test_resume_times_out_against_a_server_that_keeps_refusing(
            self, supervisor: Supervisor, ws_server: RecordingServer) -> None:
        """A 500 on every upgrade is retried per policy; the Resume fails ResumeTimeout."""
        ws_server.refuse(500)
        session = supervisor.open(SessionSpec(url=ws_server.url, thread_id="t-1"))
        assert settles_late(session.resume("t-1", timeout=DEADLINE), ResumeTimeout) < SLACK
        assert session.state().status is not SessionStatus.FAILED
        assert session.state().handshakes >= 1

    def test_send_times_out_when_never_written(
            self, supervisor: Supervisor, ws_server: RecordingServer) -> None:
        """A send buffered behind a handshake that never completes fails SendTimeout."""
        ws_server.hold_handshakes()
        session = supervisor.open(SessionSpec(url=ws_server.url, send_timeout=DEADLINE))
        ws_server.wait_for_handshakes(1)
        assert settles_late(session.send("never written"), SendTimeout) < SLACK
        assert session.state().outbox == 0
        ws_server.release_handshakes()

    def test_call_times_out_without_an_ack(
            self, supervisor: Supervisor, slow_target: TargetProcess) -> None:
        """call() of an event the server never acknowledges fails ReplyTimeout."""
        session = supervisor.open(chainlit(slow_target.url, reply_timeout=DEADLINE))
        session.resume(None).get(timeout=15)
        assert settles_late(session.call("no_such_event", {"x": 1}), ReplyTimeout) < SLACK
        assert session.state().status is SessionStatus.CONNECTED

    def test_chat_times_out_on_a_turn_that_never_ends(
            self, supervisor: Supervisor, slow_target: TargetProcess) -> None:
        """chat() whose reply streams slower than the deadline fails ReplyTimeout."""
        session = supervisor.open(chainlit(slow_target.url))
        session.resume(None).get(timeout=15)
        assert settles_late(session.chat("hello there", timeout=DEADLINE), ReplyTimeout) < SLACK
        assert session.state().status is SessionStatus.CONNECTED

    def test_timeouts_must_be_positive(self, supervisor: Supervisor,
                                       ws_server: RecordingServer) -> None:
        """A zero or negative deadline is refused before any I/O, on the spec and per call."""
        with pytest.raises(ValueError, match="resume_timeout"):
            SessionSpec(url=ws_server.url, resume_timeout=0)
        session = supervisor.open(SessionSpec(url=ws_server.url))
        with pytest.raises(ValueError, match="timeout"):
            session.send("x", timeout=-1)
