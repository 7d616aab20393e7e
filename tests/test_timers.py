"""The scheduler's timers: cancelled ones do not run and leave the heap; a session keeps
one handshake deadline pending, not one per handshake of the last ``connect_timeout``."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from recording_server import RecordingServer
from support import fast_policy

from supervisor import SessionSpec, Supervisor
from supervisor._timer import COMPACT_AT, Scheduler

FAR = 3600.0
"""A delay no test waits out."""


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    running = Scheduler()
    yield running
    running.stop()


class TestScheduler:
    def test_a_timer_runs_with_its_arguments(self, scheduler: Scheduler) -> None:
        ran = threading.Event()
        got: list[tuple[int, str]] = []

        def call(number: int, text: str) -> None:
            got.append((number, text))
            ran.set()

        scheduler.call_later(0.0, call, 7, "seven")
        assert ran.wait(5)
        assert got == [(7, "seven")]

    def test_a_cancelled_timer_does_not_run(self, scheduler: Scheduler) -> None:
        ran: list[str] = []
        done = threading.Event()
        cancelled = scheduler.call_later(0.05, ran.append, "cancelled")
        scheduler.cancel(cancelled)
        scheduler.call_later(0.1, done.set)  # due after the cancelled one
        assert done.wait(5)
        assert ran == []
        scheduler.cancel(cancelled)  # twice: nothing

    def test_cancelled_timers_leave_the_heap(self, scheduler: Scheduler) -> None:
        kept = [scheduler.call_later(FAR, print) for _ in range(COMPACT_AT)]
        dropped = [scheduler.call_later(FAR, print) for _ in range(2 * COMPACT_AT)]
        assert scheduler.pending == 3 * COMPACT_AT
        for timer in dropped:
            scheduler.cancel(timer)
        assert scheduler.pending < 2 * COMPACT_AT  # rebuilt without the cancelled ones
        assert all(timer.callback is print for timer in kept)


@pytest.mark.concurrency
def test_a_session_keeps_one_handshake_deadline(ws_server: RecordingServer) -> None:
    """Each handshake arms a ``connect_timeout`` deadline; one whose handshake is over
    is cancelled, so resumes do not pile them up for ``connect_timeout``."""
    resumes = 3 * COMPACT_AT
    with Supervisor.start(fast_policy()) as sup:
        session = sup.open(SessionSpec(url=ws_server.url, thread_id="t-0", connect_timeout=60))
        for index in range(resumes):
            thread = f"t-{index + 1}"
            assert session.resume(thread, timeout=10).get(timeout=10).thread_id == thread
        pending = sup._scheduler.pending  # the scheduler all its sessions share
    assert pending < 2 * COMPACT_AT, f"{pending} timers pending after {resumes} resumes"
