"""Stress: 200 sessions, 8 callers issuing 50 Resumes each, while the server kills connections."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pykka
import pytest
from recording_server import RecordingServer, header_values
from support import SESSION_HEADER, EventLog, echo, fast_policy, wait_until

from supervisor import Event, ResumeResult, Session, SessionSpec, SessionStatus, Supervisor

pytestmark = pytest.mark.concurrency

SESSIONS = 200
CALLERS = 8
RESUMES_PER_CALLER = 50
KILL_ROUNDS = 10
"""Bounded fault loop: this many kills of a random 5% of connections, one per 20 Resumes."""


def test_resume_storm_under_connection_kills(ws_server: RecordingServer) -> None:
    """Handshake ids stay in issue order, the last id ends last, every future resolves."""
    log = EventLog()
    policy = fast_policy(max_restarts=10_000)
    rng = random.Random(1234)
    with Supervisor.start(policy) as sup:
        sessions = [
            sup.open(SessionSpec(url=ws_server.url, thread_id=f"s{i}-0", session_id=f"s{i}",
                                 headers={SESSION_HEADER: f"s{i}"}, on_event=log,
                                 outbox_limit=10_000))
            for i in range(SESSIONS)
        ]
        wait_until(lambda: all(s.state().status is SessionStatus.CONNECTED for s in sessions),
                   timeout=60, what="every session connected")
        # Ids are numbered per session under a per-session lock held across the
        # resume() call, so the mailbox order is the numbering order.
        locks = [threading.Lock() for _ in sessions]
        issued = [0] * SESSIONS
        futures: list[pykka.Future[ResumeResult]] = []
        sends: list[pykka.Future[None]] = []
        futures_lock = threading.Lock()
        resumes_done = threading.Semaphore(0)

        def caller(seed: int) -> None:
            caller_rng = random.Random(seed)
            for number in range(RESUMES_PER_CALLER):
                index = caller_rng.randrange(SESSIONS)
                with locks[index]:
                    issued[index] += 1
                    future = sessions[index].resume(f"s{index}-{issued[index]}")
                # A message on another session, so echoes flow through the churn.
                sent = sessions[caller_rng.randrange(SESSIONS)].send(f"during-{seed}")
                with futures_lock:
                    futures.append(future)
                    sends.append(sent)
                resumes_done.release()
                if number % 2:
                    # Waiting on half of them makes real handshakes race the kills;
                    # the other half pile up and coalesce.
                    future.get(timeout=60)

        with ThreadPoolExecutor(CALLERS) as pool:
            running = [pool.submit(caller, seed) for seed in range(CALLERS)]
            for _ in range(KILL_ROUNDS):
                for _ in range(CALLERS * RESUMES_PER_CALLER // KILL_ROUNDS):
                    assert resumes_done.acquire(timeout=60)
                ws_server.kill_random(fraction=0.05, seed=rng.randrange(1 << 30))
            for done in running:
                done.result(timeout=60)

        assert len(futures) == CALLERS * RESUMES_PER_CALLER
        for future in futures:
            future.get(timeout=60)  # resolves (maybe superseded); never hangs or raises
        for sent in sends:
            sent.get(timeout=60)

        wait_until(lambda: all(_settled(s, issued[i]) for i, s in enumerate(sessions)),
                   timeout=60, what="every session connected to its last thread")

        # One message per session after the storm: it must come back on the last thread.
        before = len(log.events)
        for session in sessions:
            session.send(f"final-{session.id}").get(timeout=30)
        log.wait_for(lambda events: len(events) >= before + SESSIONS, timeout=60)

    by_session: dict[str, list[int]] = defaultdict(list)
    for handshake in ws_server.handshakes():
        (session_id,) = header_values(handshake, SESSION_HEADER)
        thread = handshake["thread"]
        assert thread.startswith(f"{session_id}-"), handshake
        by_session[session_id].append(int(thread.rsplit("-", 1)[1]))
    for index, session in enumerate(sessions):
        numbers = by_session[session.id]
        assert numbers == sorted(numbers), f"{session.id} handshakes out of order: {numbers}"
        assert numbers[-1] == issued[index], f"{session.id} ended on {numbers[-1]}"
    _assert_no_cross_talk(log.events)
    # The faults really happened: otherwise this test would prove little.
    assert sum(session.state().restarts for session in sessions) >= KILL_ROUNDS
    finals = [e for e in log.events if "final-" in e.data]
    for event in finals:
        index = int(event.session_id[1:])
        assert event.thread_id == f"{event.session_id}-{issued[index]}"


def _settled(session: Session, last: int) -> bool:
    state = session.state()
    return (state.status is SessionStatus.CONNECTED
            and state.connected_thread_id == f"{session.id}-{last}")


def _assert_no_cross_talk(events: list[Event]) -> None:
    for event in events:
        assert echo(event)["thread"] == event.thread_id, event

