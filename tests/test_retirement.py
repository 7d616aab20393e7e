"""One retirement path: every ending settles every future and releases the session.

Covers ``Supervisor.stop()`` racing ``open()``, ``resume()`` and ``send()`` from
other threads (pykka drops a ``tell`` that lands after an actor's stop, so an
Adopt queued late used to orphan its session), and failed sessions that are
closed afterwards. Marked ``concurrency``: it runs under gevent too.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pykka
import pytest
from recording_server import RecordingServer
from support import fast_policy, wait_until

from supervisor import (
    Session,
    SessionCrashed,
    SessionFailed,
    SessionSpec,
    SessionStatus,
    Supervisor,
    SupervisorError,
)
from supervisor._session_actor import SessionActor
from supervisor.errors import DeadlineExceeded, SupervisorStopped
from supervisor.protocols import websocket as websocket_protocol

pytestmark = pytest.mark.concurrency

ROUNDS = 30
OPS = 40
"""Commands per racing thread per round (the loops are bounded in count)."""
ENDED = (SessionStatus.CLOSED, SessionStatus.FAILED)


@dataclass
class RaceOutcome:
    """What one stop-versus-open round left behind."""

    opened: int = 0
    futures: int = 0
    orphans: int = 0
    """Sessions not ended after stop(), plus session actors still alive."""
    unsettled: int = 0
    untyped: list[BaseException] = field(default_factory=list)
    """Exceptions from open(), a command or a future that are not SupervisorError."""


def let_others_run() -> None:
    """Yield the processor (not a wait): greenlets switch only when one yields, so
    without this, under gevent, each racing loop would run to its end in one go."""
    time.sleep(0)


def race_round(url: str, seed: int) -> RaceOutcome:
    """Open, resume and send from three threads while the main thread stops the supervisor."""
    outcome = RaceOutcome()
    sup = Supervisor.start(fast_policy())
    lock = threading.Lock()
    sessions: list[Session] = []
    futures: list[pykka.Future[Any]] = []
    some_open = threading.Event()

    def opener() -> None:
        for number in range(OPS):
            try:
                session = sup.open(SessionSpec(url=url, thread_id=f"t-{number}"))
            except SupervisorError:
                return  # stopped: the typed refusal this test expects
            except BaseException as exc:
                outcome.untyped.append(exc)
                return
            with lock:
                sessions.append(session)
                if len(sessions) >= 3:
                    some_open.set()
            let_others_run()

    def commander(kind: str) -> None:
        rng = random.Random(f"{seed}-{kind}")
        for number in range(OPS):
            if not some_open.wait(10):
                return
            with lock:
                session = rng.choice(sessions)
            try:
                future = (session.resume(f"r-{number}") if kind == "resume"
                          else session.send(f"m-{number}"))
            except BaseException as exc:
                outcome.untyped.append(exc)
                continue
            with lock:
                futures.append(future)
            let_others_run()

    threads = [threading.Thread(target=opener),
               threading.Thread(target=commander, args=("resume",)),
               threading.Thread(target=commander, args=("send",))]
    for thread in threads:
        thread.start()
    assert some_open.wait(10)
    sup.stop(timeout=10)
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    for future in futures:
        try:
            future.get(timeout=10)
        except pykka.Timeout:
            outcome.unsettled += 1
        except SupervisorError:
            pass
        except BaseException as exc:
            outcome.untyped.append(exc)
    outcome.opened, outcome.futures = len(sessions), len(futures)
    outcome.orphans = sum(session.state().status not in ENDED for session in sessions)
    outcome.orphans += len(pykka.ActorRegistry.get_by_class(SessionActor))
    return outcome


class TestStopRacesOpen:
    """stop() against open/resume/send from other threads: nothing orphaned or left pending."""

    def test_stop_versus_open_race(self, ws_server: RecordingServer) -> None:
        """30 rounds: 0 orphans, 0 unsettled futures, 0 exceptions outside SupervisorError."""
        outcomes = [race_round(ws_server.url, seed) for seed in range(ROUNDS)]
        totals = (sum(o.orphans for o in outcomes), sum(o.unsettled for o in outcomes),
                  [exc for o in outcomes for exc in o.untyped])
        assert totals == (0, 0, []), totals
        assert sum(o.futures for o in outcomes) > ROUNDS  # the race really issued commands

    def test_after_stop_everything_fails_typed(self, ws_server: RecordingServer) -> None:
        """open() raises SupervisorStopped; a handle's commands fail with it; close resolves."""
        sup = Supervisor.start(fast_policy())
        session = sup.open(SessionSpec(url=ws_server.url, thread_id="t-1"))
        session.resume("t-1").get(timeout=10)
        sup.stop()
        with pytest.raises(SupervisorStopped):
            sup.open(SessionSpec(url=ws_server.url))
        with pytest.raises(SupervisorStopped):
            session.send("late").get(timeout=10)
        with pytest.raises(SupervisorStopped):
            sup.sessions()
        session.close().get(timeout=10)
        assert session.state().status is SessionStatus.CLOSED


    def test_a_stop_out_of_time_raises_typed_and_can_be_retried(
            self, ws_server: RecordingServer) -> None:
        """stop(0) never raises a pykka error: it ends, or says so typed; stop() again ends."""
        sup = Supervisor.start(fast_policy())
        session = sup.open(SessionSpec(url=ws_server.url, thread_id="t-1"))
        session.resume("t-1").get(timeout=10)
        with contextlib.suppress(DeadlineExceeded):
            sup.stop(timeout=0)
        sup.stop(timeout=10)
        with pytest.raises(SupervisorStopped):
            sup.open(SessionSpec(url=ws_server.url))
        session.close().get(timeout=10)
        assert session.state().status is SessionStatus.CLOSED


class TestFailedThenClosed:
    """A session that failed stays listed until closed; closing it releases it."""

    def test_closing_a_failed_session_releases_it(
            self, supervisor: Supervisor, ws_server: RecordingServer) -> None:
        """401 fails the session; close() removes it from the supervisor's children."""
        ws_server.refuse(401)
        session = supervisor.open(SessionSpec(url=ws_server.url))
        with pytest.raises(SessionFailed, match="401"):
            session.resume(None).get(timeout=10)
        assert session.id in [state.session_id for state in supervisor.sessions()]
        # The Resume is answered before the FAILED snapshot is published.
        wait_until(lambda: supervisor.metrics().sessions[SessionStatus.FAILED] == 1,
                   what="the failed session counted")
        session.close().get(timeout=10)
        assert supervisor.metrics().sessions[SessionStatus.FAILED] == 0  # the tap forgot it
        wait_until(lambda: session.id not in [s.session_id for s in supervisor.sessions()],
                   what="the failed session released")
        with pytest.raises(SessionFailed):
            session.send("after").get(timeout=10)

    def test_crashed_and_given_up_settles_and_releases(
            self, ws_server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """An actor that crashes past the budget fails typed, and close() releases it."""
        def received(self: Any, frame: str | bytes) -> Any:
            raise RuntimeError("codec bug")

        monkeypatch.setattr(websocket_protocol.WebSocketCodec, "received", received)
        with Supervisor.start(fast_policy(max_restarts=0)) as sup:
            session = sup.open(SessionSpec(url=ws_server.url, thread_id="t-1"))
            session.resume("t-1").get(timeout=10)
            session.send("boom").get(timeout=10)  # its echo crashes the actor
            wait_until(lambda: session.state().status is SessionStatus.FAILED,
                       what="the give-up after the crash")
            with pytest.raises(SessionCrashed):
                session.resume("t-2").get(timeout=10)
            assert sup.metrics().budgets_exhausted == 1
            session.close().get(timeout=10)
            assert sup.metrics().budgets_exhausted == 0  # the tap forgot it
            assert sup.health().healthy
            wait_until(lambda: sup.sessions() == [], what="the crashed session released")
