"""Supervised ``chainlit`` sessions against real Chainlit 1.3.2 and 2.0.1 apps on loopback.

Each version runs the same test app (``tests/chainlit_app``) from its own
virtualenv, built by ``bash tests/interop/setup.sh`` (``.ci/run`` does). Both
answer an unknown thread with silence and ``on_chat_start`` instead of
``resume_thread_error``; 1.3.2 reads the identity from headers and the token
only from ``Authorization``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from chainlit_app.harness import ChainlitApp
from chainlit_app.versions import EXTRA_VERSIONS, ChainlitVersion
from support import EventLog, switch_and_chat

from supervisor import (
    HandshakeRefused,
    ProtocolRefused,
    SessionSpec,
    SessionStatus,
    Supervisor,
)
from supervisor.chainlit_auth import detect_version, login
from supervisor.protocols.chainlit import NEW_CHAT

pytestmark = [pytest.mark.chainlit]

TIMEOUT = 15.0
SWITCHES = 10
NOT_FOUND_WITHIN_S = 2.0


@pytest.fixture(scope="module", params=EXTRA_VERSIONS, ids=lambda v: f"chainlit-{v.version}")
def version(request: pytest.FixtureRequest) -> ChainlitVersion:
    chosen: ChainlitVersion = request.param
    return chosen


@pytest.fixture(scope="module")
def app(version: ChainlitVersion) -> Iterator[ChainlitApp]:
    """One real Chainlit server of that version for the module."""
    with ChainlitApp(python=version.require(), config=version.config) as running:
        yield running


def spec(app: ChainlitApp, cookies: dict[str, str], thread_id: str | None = None,
         **extra: object) -> SessionSpec:
    return SessionSpec(url=app.url, protocol="chainlit", thread_id=thread_id, cookies=cookies,
                       connect_timeout=TIMEOUT, **extra)  # type: ignore[arg-type]


class TestLogin:
    """``login()`` gives what works for the detected version."""

    def test_version_is_detected(self, app: ChainlitApp, version: ChainlitVersion) -> None:
        """GET /user: HTML on 1.x, JSON on 2.x."""
        assert detect_version(app.url) == version.identity

    def test_login_connects(self, app: ChainlitApp, supervisor: Supervisor) -> None:
        """The token from login() authenticates a session (1.x: sent as Authorization)."""
        cookies = login(app.url, "alice", "alice-pw")
        session = supervisor.open(spec(app, cookies))
        turn = session.chat("hello there").get(timeout=TIMEOUT)
        assert turn.text == "echo: hello there"

    def test_wrong_password(self, app: ChainlitApp) -> None:
        """A refused login keeps its 401."""
        with pytest.raises(HandshakeRefused) as refused:
            login(app.url, "alice", "nope")
        assert refused.value.status_code == 401

    def test_no_token_is_refused(self, app: ChainlitApp, supervisor: Supervisor) -> None:
        """Without a token the connect is refused, typed, within the timeout."""
        session = supervisor.open(spec(app, {}))
        with pytest.raises(ProtocolRefused):
            session.resume(str(uuid.uuid4())).get(timeout=TIMEOUT)


class TestThreads:
    """Thread switches, turns in the right thread, and unknown threads."""

    def test_unknown_thread_is_not_found_at_once(self, app: ChainlitApp,
                                                 supervisor: Supervisor) -> None:
        """Silence + on_chat_start resolves found=False quickly: no timeout, no restart."""
        cookies = login(app.url, "alice", "alice-pw")
        session = supervisor.open(spec(app, cookies))
        session.chat("warm up").get(timeout=TIMEOUT)
        before = session.state().handshakes
        started = time.monotonic()
        result = session.resume(str(uuid.uuid4())).get(timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        assert (result.found, result.thread) == (False, NEW_CHAT)
        assert elapsed < NOT_FOUND_WITHIN_S, elapsed
        state = session.state()
        assert state.status is SessionStatus.CONNECTED
        assert (state.handshakes, state.restarts) == (before + 1, 0)

    def test_switching_threads(self, app: ChainlitApp, supervisor: Supervisor) -> None:
        """Ten switches between two threads: each resume finds its thread, each turn lands there."""
        cookies = login(app.url, "alice", "alice-pw")
        threads = [str(uuid.uuid4()) for _ in range(2)]
        creator = supervisor.open(spec(app, cookies))
        for number, thread_id in enumerate(threads):
            assert creator.resume(thread_id).get(timeout=TIMEOUT).found is False
            creator.chat(f"first {number}").get(timeout=TIMEOUT)
            app.wait_persisted(thread_id, lambda steps, n=number: ("user_message",
                                                                   f"first {n}") in steps,
                               owner="alice")
        creator.close().get(timeout=TIMEOUT)
        log = EventLog()
        session = supervisor.open(spec(app, cookies, on_event=log))
        switch_and_chat(session, threads, SWITCHES, TIMEOUT)
        for switch in range(SWITCHES):
            mine, other = threads[switch % 2], threads[(switch + 1) % 2]
            app.wait_persisted(mine, lambda steps, n=switch: ("user_message",
                                                              f"switch {n}") in steps)
            assert ("user_message", f"switch {switch}") not in app.steps(other)
        resumed = [e for e in log.events if e.name == "resume_thread"]
        assert [e.data["id"] for e in resumed] == [threads[i % 2] for i in range(SWITCHES)]
        assert session.state().restarts == 0
