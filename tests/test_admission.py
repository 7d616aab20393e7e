"""Admission control: the pure queue (tables), its timer edge, and no thread before admission."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest
from recording_server import RecordingServer
from support import fast_policy, wait_until

from supervisor import SessionSpec, Supervisor
from supervisor._admission import Admission, AdmissionQueue, Ticket
from supervisor._transport import Connection, OpenFailed, TransportOptions
from supervisor.errors import HandshakeError
from supervisor.protocols import Identity, make_codec


def ticket(name: str, *, first: bool = False, log: list[str] | None = None) -> Ticket:
    """A ticket whose start appends ``name`` to ``log``."""
    return Ticket((lambda: log.append(name)) if log is not None else (lambda: None),
                  first=first)


def names(tickets: list[Ticket], by: dict[int, str]) -> list[str]:
    return [by[id(t)] for t in tickets]


class TestAdmissionQueue:
    """The pure decisions: slots, spacing, the two classes, cancellation."""

    @pytest.mark.parametrize(("rate", "batches", "expected"), [
        # 4/s: four at once are admitted together and start 0.25 s apart
        (4.0, [(0.0, 4)], [0.0, 0.25, 0.5, 0.75]),
        # 100/s: 10 ms apart; a later request after an idle spell starts at once
        (100.0, [(10.0, 3), (20.0, 1)], [10.0, 10.01, 10.02, 20.0]),
        # one arriving before the previous one's spacing ran out waits for it
        (4.0, [(0.0, 1), (0.1, 1)], [0.0, 0.25]),
    ])
    def test_starts_follow_the_rate(self, rate: float, batches: list[tuple[float, int]],
                                    expected: list[float]) -> None:
        """Each admitted ticket's start time keeps starts 1/rate apart, never earlier."""
        q = AdmissionQueue(1000, rate)
        starts: list[float] = []
        for now, count in batches:
            for i in range(count):
                q.push(ticket(str(i)))
            starts.extend(start for _, start in q.admit(now))
        assert starts == pytest.approx(expected)

    def test_in_flight_slots_bound_the_starts(self) -> None:
        """With 2 slots, a third ticket is admitted only after a finish."""
        q = AdmissionQueue(2, 1e9)
        tickets = [ticket(str(i)) for i in range(3)]
        for t in tickets:
            q.push(t)
        admitted = q.admit(0.0)
        assert (len(admitted), q.in_flight, q.waiting) == (2, 2, 1)
        assert q.admit(1.0) == []
        q.finish()
        assert [t for t, _ in q.admit(1.0)] == [tickets[2]]

    @pytest.mark.parametrize(("queued", "expected"), [
        # (class, name) pushed in this order; expected start order with one slot
        ([("r", "r1"), ("r", "r2"), ("r", "r3"), ("f", "f1"), ("f", "f2"), ("f", "f3"),
          ("f", "f4"), ("f", "f5")],
         ["f1", "f2", "f3", "r1", "f4", "f5", "r2", "r3"]),
        ([("f", "f1"), ("f", "f2"), ("f", "f3"), ("f", "f4"), ("r", "r1")],
         ["f1", "f2", "f3", "r1", "f4"]),
        ([("r", "r1"), ("r", "r2")], ["r1", "r2"]),
        ([("f", "f1"), ("f", "f2")], ["f1", "f2"]),
    ])
    def test_first_connects_take_three_of_four_while_both_wait(
            self, queued: list[tuple[str, str]], expected: list[str]) -> None:
        """Three first connects per other handshake; one class alone takes every slot."""
        q = AdmissionQueue(1, 1e9)
        by: dict[int, str] = {}
        for kind, name in queued:
            t = ticket(name, first=kind == "f")
            by[id(t)] = name
            q.push(t)
        order: list[str] = []
        for step in range(len(queued)):
            order.extend(names([t for t, _ in q.admit(float(step))], by))
            q.finish()
        assert order == expected

    @pytest.mark.parametrize(("starved", "within"), [("first", 1), ("other", 3)])
    def test_no_class_starves_under_a_flood_of_the_other(self, starved: str,
                                                         within: int) -> None:
        """A ticket of one class starts within a few admissions while the other floods in:
        the first of the other class's admissions, or the fourth for a resume."""
        q = AdmissionQueue(1, 1e9)
        lone_first = starved == "first"
        for i in range(100):  # the flood, queued ahead of the lone ticket
            q.push(ticket(f"flood{i}", first=not lone_first))
        lone = ticket("lone", first=lone_first)
        q.push(lone)
        started: list[Ticket] = []
        for step in range(100):
            q.push(ticket(f"more{step}", first=not lone_first))  # the flood never stops
            started.extend(t for t, _ in q.admit(float(step)))
            q.finish()
            if lone in started:
                break
        assert lone in started
        assert started.index(lone) <= within

    def test_cancelled_tickets_never_start_and_free_their_place(self) -> None:
        """A withdrawn ticket is skipped; cancelling twice, or after admission, says False."""
        q = AdmissionQueue(1, 1e9)
        a, b, c = ticket("a"), ticket("b"), ticket("c")
        for t in (a, b, c):
            q.push(t)
        assert [t for t, _ in q.admit(0.0)] == [a]
        assert q.cancel(b)
        assert not q.cancel(b)
        assert not q.cancel(a)
        assert q.waiting == 1
        q.finish()
        assert [t for t, _ in q.admit(1.0)] == [c]

    def test_many_cancellations_keep_the_queue_small(self) -> None:
        """Cancelled tickets are dropped from memory, not kept until they reach the front."""
        q = AdmissionQueue(1, 1e9)
        q.push(ticket("held"))
        q.admit(0.0)
        tickets = [ticket(str(i)) for i in range(1000)]
        for t in tickets:
            q.push(t)
        for t in tickets[:-1]:
            q.cancel(t)
        assert q.waiting == 1
        assert sum(len(d) for d in q._queues.values()) <= 20

    def test_the_queue_is_bounded(self) -> None:
        """Past ``max_waiting`` a push is refused."""
        q = AdmissionQueue(1, 1e9, max_waiting=2)
        assert q.push(ticket("a"))
        assert q.push(ticket("b"))
        assert not q.push(ticket("c"))


class FakeTimer:
    """Collects ``call_later`` requests; the test fires them."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.calls.append((delay, callback))


class TestAdmissionEdge:
    """The lock-and-timer edge: starts run once admitted, the timer keeps the spacing."""

    def test_spacing_is_kept_by_the_timer(self) -> None:
        """At 4/s the second request is admitted at once and started by the timer 0.25 s
        later: no thread waits meanwhile."""
        now = [0.0]
        timer = FakeTimer()
        admission = Admission(10, 4.0, clock=lambda: now[0], call_later=timer)
        log: list[str] = []
        admission.request(lambda: log.append("a"))
        admission.request(lambda: log.append("b"))
        assert log == ["a"]
        assert [delay for delay, _ in timer.calls] == [0.25]
        now[0] = 0.25
        timer.calls[0][1]()
        assert log == ["a", "b"]
        assert admission.waiting == 0

    def test_release_starts_the_next(self) -> None:
        """A finished handshake lets the next waiting request start, without a timer."""
        timer = FakeTimer()
        admission = Admission(1, 1e9, call_later=timer)
        log: list[str] = []
        admission.request(lambda: log.append("a"))
        admission.request(lambda: log.append("b"))
        assert (log, admission.in_flight, admission.waiting) == (["a"], 1, 1)
        admission.release()
        assert (log, timer.calls) == (["a", "b"], [])

    def test_a_cancelled_request_never_starts(self) -> None:
        """cancel() withdraws a waiting request; its start is never called."""
        admission = Admission(1, 1e9, call_later=FakeTimer())
        log: list[str] = []
        admission.request(lambda: log.append("a"))
        waiting = admission.request(lambda: log.append("b"))
        assert waiting is not None
        assert admission.cancel(waiting)
        admission.release()
        assert (log, admission.waiting, admission.in_flight) == (["a"], 0, 0)

    def test_starts_that_give_their_slot_back_at_once_do_not_recurse(self) -> None:
        """5,000 waiting starts that each release at once (no thread to be had) all run."""
        admission = Admission(1, 1e9, call_later=FakeTimer())
        started: list[int] = []
        held = admission.request(lambda: None)
        assert held is not None
        for index in range(5_000):
            admission.request(lambda index=index: (started.append(index),
                                                   admission.release()))
        admission.release()  # the held slot: every waiting start now frees its own
        assert started == list(range(5_000))
        assert (admission.in_flight, admission.waiting) == (0, 0)

    def test_a_start_that_raises_gives_its_slot_back_and_the_next_starts(self) -> None:
        """A start that raises is logged; its slot is released and the next one starts."""
        admission = Admission(1, 1e9, call_later=FakeTimer())
        log: list[str] = []

        def broken() -> None:
            raise RuntimeError("start failed")

        admission.request(broken)
        admission.request(lambda: log.append("next"))
        assert (log, admission.in_flight, admission.waiting) == (["next"], 1, 0)


def handshake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ws-gen")]


@pytest.mark.concurrency
class TestNoThreadBeforeAdmission:
    """Real sockets: a connection waiting for admission has no thread."""

    def test_a_thousand_waiting_connections_hold_no_thread(
            self, ws_server: RecordingServer) -> None:
        """1,000 connections queued behind one held handshake: one handshake thread in all."""
        ws_server.hold_handshakes()
        reports: queue.Queue[Any] = queue.Queue()
        admission = Admission(1, 1e9)
        codec_config = SessionSpec(url=ws_server.url).protocol_config
        before = threading.active_count()
        connections = [
            Connection(make_codec(codec_config, Identity(f"t-{n}"), confirm_resume=False), n,
                       reports.put, admission, TransportOptions(connect_timeout=20),
                       first=n % 2 == 0)
            for n in range(1001)]
        try:
            for connection in connections:
                connection.start()
            ws_server.wait_for_handshakes(1, timeout=10)
            assert admission.waiting == 1000
            assert admission.in_flight == 1
            assert len(handshake_threads()) == 1
            assert threading.active_count() <= before + 3  # + the deadline and timer threads
        finally:
            for connection in reversed(connections):
                connection.abort()
            ws_server.release_handshakes()
        ended = [reports.get(timeout=10) for _ in range(1002)]  # the held one: Admitted too
        failures = [r for r in ended if isinstance(r, OpenFailed)]
        assert len(failures) == 1001
        queued = [r for r in failures if "waiting for admission" in str(r.error)]
        assert len(queued) == 1000
        assert all(isinstance(r.error, HandshakeError) for r in failures)
        assert admission.waiting == 0
        assert reports.empty()


@pytest.mark.concurrency
class TestFirstConnectsNotStarved:
    """Real sockets: a new session's connect overtakes a queue of resumes."""

    def test_a_first_connect_goes_within_two_admissions(
            self, ws_server: RecordingServer) -> None:
        """Six resumes queued one at a time; a session opened after them connects second
        or third, not seventh (as first-in first-out would have it)."""
        with Supervisor.start(fast_policy(max_handshakes_in_flight=1)) as sup:
            sessions = [sup.open(SessionSpec(url=ws_server.url, thread_id=f"t-{n}"))
                        for n in range(6)]
            for session in sessions:
                session.resume(session.spec.thread_id).get(timeout=10)
            admission = sup._ref._actor_weakref()._admission  # type: ignore[union-attr]
            mark = len(ws_server.handshakes())
            ws_server.set_handshake_delay(0.3)
            resumed = [session.resume(f"r-{n}") for n, session in enumerate(sessions)]
            wait_until(lambda: admission.waiting == 5, what="five resumes queued")
            newcomer = sup.open(SessionSpec(url=ws_server.url, thread_id="t-new"))
            wait_until(lambda: admission.waiting == 6, what="the first connect queued")
            newcomer.resume("t-new").get(timeout=20)
            for future in resumed:
                future.get(timeout=20)
        order = [h["thread"] for h in ws_server.handshakes(since=mark)]
        assert sorted(order) == sorted([*(f"r-{n}" for n in range(6)), "t-new"])
        assert order.index("t-new") <= 2, order
