"""Supervised ``socketio`` sessions against python-socketio servers configured unlike ours:
a custom Engine.IO path, a custom namespace and ``always_connect=True``."""

from __future__ import annotations

import threading
import time

from interop.pysio_server import PySocketIOServer

from supervisor import (
    Lifecycle,
    LifecycleKind,
    SessionSpec,
    SessionStatus,
    Supervisor,
)

TIMEOUT = 10.0
GOOD = {"token": "good"}


class TestPathAndNamespace:
    """Where the server lives is the session's to say."""

    def test_custom_path_and_namespace(self, supervisor: Supervisor) -> None:
        """socketio_path and namespace reach the server's endpoint and namespace handler."""
        with PySocketIOServer(path="realtime/io", namespace="/chat") as server:
            session = supervisor.open(SessionSpec(
                url=server.url, protocol="socketio", socketio_path="/realtime/io/",
                namespace="chat", auth=GOOD, thread_id="t-7", connect_timeout=TIMEOUT))
            assert session.call("echo", {"x": 1}).get(timeout=TIMEOUT) == {"x": 1}
            [connection] = server.connections
            assert connection["path"].startswith("/realtime/io")
            assert (connection["auth"], connection["thread"]) == (GOOD, "t-7")


class TestAlwaysConnect:
    """``always_connect=True``: CONNECT accepted at once, the handler's refusal follows."""

    def test_refusal_after_connect_fails_once_without_restarts(
            self, supervisor: Supervisor) -> None:
        """40 then 41 {"message": "bad token"}: one handshake, ProtocolRefused, no restart loop."""
        failed = threading.Event()
        kinds: list[LifecycleKind] = []

        def on_lifecycle(change: Lifecycle) -> None:
            kinds.append(change.kind)
            if change.kind is LifecycleKind.FAILED:
                failed.set()

        with PySocketIOServer(always_connect=True) as server:
            started = time.monotonic()
            session = supervisor.open(SessionSpec(
                url=server.url, protocol="socketio", auth={"token": "bad"},
                on_lifecycle=on_lifecycle, connect_timeout=TIMEOUT))
            assert failed.wait(TIMEOUT)
            elapsed = time.monotonic() - started
            state = session.state()
            assert state.status is SessionStatus.FAILED
            assert state.reason is not None
            assert "bad token" in state.reason
            assert (state.handshakes, state.restarts) == (1, 0)
            assert len(server.refusals) == 1
            assert elapsed < 2.0, elapsed
            assert LifecycleKind.FAILED in kinds

    def test_accepted_connect_works(self, supervisor: Supervisor) -> None:
        """With a good token the same server serves events as usual."""
        with PySocketIOServer(always_connect=True) as server:
            session = supervisor.open(SessionSpec(url=server.url, protocol="socketio",
                                                  auth=GOOD, connect_timeout=TIMEOUT))
            assert session.call("echo", "ok").get(timeout=TIMEOUT) == "ok"
            assert session.state().status is SessionStatus.CONNECTED
