"""Supervised ``chainlit`` sessions against a real Chainlit 2.x app from PyPI, on loopback.

The app (``tests/chainlit_app``) has password login, a SQLite SQLAlchemy data
layer and ``on_chat_resume``. Chainlit is never imported here: importing it
writes files into the current directory.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Iterator

import pytest

if importlib.util.find_spec("chainlit") is None:
    pytest.skip("chainlit is not installed (pip install -e '.[test]')", allow_module_level=True)

from chainlit_app.harness import ChainlitApp
from support import EventLog, switch_and_chat

from supervisor import (
    ProtocolRefused,
    SessionFailed,
    SessionSpec,
    SessionStatus,
    Supervisor,
)
from supervisor.chainlit_auth import detect_version, login

pytestmark = [pytest.mark.chainlit]

TIMEOUT = 15.0
SWITCHES = 20


@pytest.fixture(scope="module")
def app() -> Iterator[ChainlitApp]:
    """One real Chainlit server for this module."""
    with ChainlitApp() as running:
        yield running


def chainlit_spec(app: ChainlitApp, cookies: dict[str, str], thread_id: str | None,
                  **extra: object) -> SessionSpec:
    return SessionSpec(url=app.url, protocol="chainlit", thread_id=thread_id, cookies=cookies,
                       connect_timeout=TIMEOUT, **extra)  # type: ignore[arg-type]


def new_thread(app: ChainlitApp, sup: Supervisor, cookies: dict[str, str], text: str,
               owner: str = "alice") -> str:
    """Create a thread under an id we choose: the first message persists it."""
    thread_id = str(uuid.uuid4())
    session = sup.open(chainlit_spec(app, cookies, thread_id))
    created = session.resume(thread_id).get(timeout=TIMEOUT)
    assert created.found is False  # not yet in the data layer
    turn = session.chat(text).get(timeout=TIMEOUT)
    assert turn.text == f"echo: {text}"
    app.wait_persisted(thread_id, lambda steps: ("user_message", text) in steps, owner=owner)
    session.close().get(timeout=TIMEOUT)
    return thread_id


class TestLoginAndVersion:
    """The HTTP helpers against the real app."""

    def test_login_returns_an_access_token_cookie(self, app: ChainlitApp) -> None:
        """POST /login gives the session its own access_token cookie."""
        cookies = login(app.url, "alice", "alice-pw")
        assert set(cookies) == {"access_token"}

    def test_wrong_password_is_a_typed_refusal(self, app: ChainlitApp) -> None:
        """A refused login raises HandshakeRefused carrying 401."""
        from supervisor import HandshakeRefused  # noqa: PLC0415

        with pytest.raises(HandshakeRefused) as refused:
            login(app.url, "alice", "wrong")
        assert refused.value.status_code == 401

    def test_version_is_detected_as_2(self, app: ChainlitApp) -> None:
        """GET /user answers JSON on 2.x."""
        assert detect_version(app.url) == "2"


class TestChainlitSessions:
    """Resume, chat and refusals through the supervisor."""

    def test_switching_threads_twenty_times(self, app: ChainlitApp,
                                            supervisor: Supervisor) -> None:
        """Each switch delivers resume_thread for the requested thread; a turn lands in it."""
        cookies = login(app.url, "alice", "alice-pw")
        threads = [new_thread(app, supervisor, cookies, f"first message {i}") for i in range(2)]
        log = EventLog()
        session = supervisor.open(chainlit_spec(app, cookies, None, on_event=log))
        _, turns = switch_and_chat(session, threads, SWITCHES, TIMEOUT)
        for switch, turn in enumerate(turns):
            thread_id = threads[switch % 2]
            assert all(step.get("threadId") in (None, thread_id) for step in turn.steps)
        for switch in range(SWITCHES):
            app.wait_persisted(threads[switch % 2],
                               lambda steps, n=switch: ("user_message", f"switch {n}") in steps)
        resumed = [e for e in log.events if e.name == "resume_thread"]
        assert [e.data["id"] for e in resumed] == [threads[i % 2] for i in range(SWITCHES)]
        assert all(e.thread_id == e.data["id"] for e in resumed)  # labelled by its connection

    def test_unknown_thread_gives_not_found(self, app: ChainlitApp,
                                            supervisor: Supervisor) -> None:
        """resume_thread_error resolves the resume with found=False, not an error."""
        cookies = login(app.url, "alice", "alice-pw")
        session = supervisor.open(chainlit_spec(app, cookies, None))
        result = session.resume(str(uuid.uuid4())).get(timeout=TIMEOUT)
        assert result.found is False
        assert result.thread == "Thread not found."
        assert session.state().status is SessionStatus.CONNECTED

    def test_no_cookie_is_a_typed_refusal(self, app: ChainlitApp,
                                          supervisor: Supervisor) -> None:
        """Without a login cookie the resume fails with ProtocolRefused within the timeout."""
        session = supervisor.open(chainlit_spec(app, {}, None))
        started = time.monotonic()
        with pytest.raises(ProtocolRefused, match="refused"):
            session.resume(str(uuid.uuid4())).get(timeout=TIMEOUT)
        assert time.monotonic() - started < TIMEOUT

    def test_another_users_thread_is_refused(self, app: ChainlitApp,
                                             supervisor: Supervisor) -> None:
        """Bob cannot resume Alice's thread: a typed refusal, and the session fails."""
        alice = login(app.url, "alice", "alice-pw")
        thread_id = new_thread(app, supervisor, alice, "alice's secret")
        bob = login(app.url, "bob", "bob-pw")
        session = supervisor.open(chainlit_spec(app, bob, None))
        session.chat("hello").get(timeout=TIMEOUT)
        with pytest.raises(ProtocolRefused):
            session.resume(thread_id).get(timeout=TIMEOUT)
        with pytest.raises(SessionFailed):
            session.chat("after refusal").get(timeout=TIMEOUT)

    def test_ask_is_answered_by_on_ask(self, app: ChainlitApp, supervisor: Supervisor) -> None:
        """An AskUserMessage reaches on_ask; its return value is the ack."""
        cookies = login(app.url, "alice", "alice-pw")

        def answer(event: object) -> dict[str, object]:
            return {"id": str(uuid.uuid4()), "output": "Ada", "type": "user_message",
                    "name": "alice", "threadId": "", "createdAt": "2026-01-01T00:00:00.000Z"}

        session = supervisor.open(chainlit_spec(app, cookies, None, on_ask=answer))
        turn = session.chat("/ask who").get(timeout=TIMEOUT)
        assert "(name: Ada)" in turn.text
