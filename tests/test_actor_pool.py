"""Pooled actors: pykka's one-message-at-a-time promise on shared workers that grow when blocked."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from supervisor._actor_pool import ActorPool, PooledActor, shared_pool

pytestmark = pytest.mark.concurrency

WAIT = 30.0
"""Seconds any test waits for an event before failing (never reached when all is well)."""


class Block:
    """A message whose handler blocks until ``release``; ``entered`` says it is inside."""

    def __init__(self, release: threading.Event) -> None:
        self.entered = threading.Event()
        self.release = release


class Recorder(PooledActor):
    """Records what it handled, and notices if two workers ever run it at once."""

    def __init__(self, pool: ActorPool) -> None:
        self.pool = pool
        super().__init__()
        self.seen: list[Any] = []
        self.inside = 0
        self.overlaps = 0
        self.started_on: int | None = None

    def on_start(self) -> None:
        self.started_on = threading.get_ident()

    def on_receive(self, message: Any) -> Any:
        self.inside += 1
        if self.inside != 1:
            self.overlaps += 1
        try:
            if isinstance(message, Block):
                message.entered.set()
                message.release.wait(WAIT)  # blocks, as a slow user callback does
            self.seen.append(message)
            return message
        finally:
            self.inside -= 1


def actor_of(ref: pykka.ActorRef[Any]) -> Any:
    """The actor behind ``ref`` (the test looks inside)."""
    return ref._actor_weakref()


@pytest.fixture
def pool() -> Iterator[ActorPool]:
    yield ActorPool(core_workers=2, stall_after=0.05, idle_exit=0.2)
    pykka.ActorRegistry.stop_all(block=True, timeout=WAIT)


class TestOrderAndExclusion:
    def test_each_actor_sees_its_messages_in_order_one_at_a_time(self, pool: ActorPool) -> None:
        """Many senders, many actors, two workers: per actor every message once, in order."""
        refs = [Recorder.start(pool) for _ in range(20)]
        per_sender = 300

        def send(sender: int) -> None:
            for index in range(per_sender):
                for ref in refs:
                    ref.tell((sender, index))

        senders = [threading.Thread(target=send, args=(s,)) for s in range(4)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(WAIT)
        for ref in refs:
            assert ref.ask("end", timeout=WAIT) == "end"
            actor = actor_of(ref)
            assert isinstance(actor, Recorder)
            assert actor.overlaps == 0
            for sender in range(4):
                got = [index for who, index in actor.seen[:-1] if who == sender]
                assert got == list(range(per_sender))
        assert pool.workers <= 2

    def test_on_start_runs_before_the_first_message(self, pool: ActorPool) -> None:
        """on_start has run (on a worker) by the time the first message is answered."""
        ref = Recorder.start(pool)
        assert ref.ask(1, timeout=WAIT) == 1
        actor = actor_of(ref)
        assert isinstance(actor, Recorder)
        assert actor.started_on is not None
        assert actor.started_on != threading.get_ident()


class TestBlockedWorkers:
    def test_a_blocked_handler_does_not_stall_other_actors(self, pool: ActorPool) -> None:
        """Both core workers blocked in handlers: the pool grows and a third actor answers."""
        release = threading.Event()
        blockers = [Recorder.start(pool) for _ in range(2)]
        try:
            blocks = [Block(release) for _ in blockers]
            for ref, block in zip(blockers, blocks, strict=True):
                ref.tell(block)
            for block in blocks:
                assert block.entered.wait(WAIT)
            other = Recorder.start(pool)
            # Both core workers are inside Block handlers: only a new worker can answer.
            assert other.ask("hello", timeout=WAIT) == "hello"
        finally:
            release.set()
        for ref in blockers:
            assert ref.ask("after", timeout=WAIT) == "after"

    def test_never_more_workers_than_live_actors(self, pool: ActorPool) -> None:
        """However long handlers block, workers stay within max(core, live actors)."""
        release = threading.Event()
        refs = [Recorder.start(pool) for _ in range(3)]
        try:
            blocks = [Block(release) for _ in range(6)]
            for index, block in enumerate(blocks):
                refs[index % 3].tell(block)
            for block in blocks[:3]:
                assert block.entered.wait(WAIT)
            probe = Recorder.start(pool)
            assert probe.ask("x", timeout=WAIT) == "x"
            assert pool.workers <= 4
        finally:
            release.set()
        for ref in refs:
            assert ref.ask("done", timeout=WAIT) == "done"
        assert pool.workers <= 4

    def test_a_busy_backlog_does_not_grow_the_pool(self) -> None:
        """Many short messages queue up, nobody blocks: the workers stay at the core count."""
        pool = ActorPool(core_workers=2, stall_after=5.0, idle_exit=0.2)
        try:
            refs = [Recorder.start(pool) for _ in range(50)]
            for index in range(100):
                for ref in refs:
                    ref.tell(index)
            for ref in refs:
                assert ref.ask("end", timeout=WAIT) == "end"
            assert pool.workers <= 2
        finally:
            pykka.ActorRegistry.stop_all(block=True, timeout=WAIT)


class Failing(PooledActor):
    def __init__(self, pool: ActorPool, fail_on_start: bool) -> None:
        self.pool = pool
        super().__init__()
        self.fail_on_start = fail_on_start
        self.failures: list[BaseException | None] = []

    def on_start(self) -> None:
        if self.fail_on_start:
            raise RuntimeError("on_start broke")

    def on_receive(self, message: Any) -> Any:
        if message == "raise":
            raise ValueError("handler broke")
        return message

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.failures.append(exception_value)


class TestEndings:
    def test_an_ask_that_raises_answers_the_caller_and_the_actor_lives(
            self, pool: ActorPool) -> None:
        """As pykka: an ask's exception goes to its future; the actor goes on."""
        ref = Failing.start(pool, False)
        with pytest.raises(ValueError, match="handler broke"):
            ref.ask("raise", timeout=WAIT)
        assert ref.ask("still here", timeout=WAIT) == "still here"

    def test_a_tell_that_raises_stops_the_actor_and_calls_on_failure(
            self, pool: ActorPool) -> None:
        """As pykka: a tell's exception stops the actor, on_failure sees it, asks then fail."""
        ref = Failing.start(pool, False)
        actor = actor_of(ref)
        assert isinstance(actor, Failing)
        ref.tell("raise")
        assert actor.actor_stopped.wait(WAIT)
        assert [type(error) for error in actor.failures] == [ValueError]
        with pytest.raises(pykka.ActorDeadError):
            ref.ask("late", timeout=WAIT)

    def test_on_start_failure_stops_the_actor(self, pool: ActorPool) -> None:
        """As pykka: on_start raising stops the actor; what was asked meanwhile is answered."""
        ref = Failing.start(pool, True)
        actor = actor_of(ref)
        assert actor.actor_stopped.wait(WAIT)
        with pytest.raises(pykka.ActorDeadError):
            ref.ask("late", timeout=WAIT)

    def test_stop_answers_the_asks_left_in_the_inbox(self, pool: ActorPool) -> None:
        """Asks queued behind a stop are answered with ActorDeadError, never left pending."""
        release = threading.Event()
        ref = Recorder.start(pool)
        block = Block(release)
        ref.tell(block)  # hold the actor inside a handler while the rest queues
        assert block.entered.wait(WAIT)
        stopped = ref.stop(block=False)
        behind = ref.ask("behind", block=False)
        release.set()
        stopped.get(timeout=WAIT)
        with pytest.raises(pykka.ActorDeadError):
            behind.get(timeout=WAIT)


@pytest.mark.skipif(os.environ.get("SUPERVISOR_TEST_RUNTIME") == "gevent",
                    reason="os.fork under gevent is gevent's own business")
def test_a_forked_child_runs_actors_on_its_own_workers() -> None:
    """After fork the shared pool starts empty in the child, so its actors get workers."""
    parent = Recorder.start(shared_pool)
    assert parent.ask("warm", timeout=WAIT) == "warm"  # the parent's workers exist now
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns that the parent has threads: we know
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        try:
            answered = Recorder.start(shared_pool).ask("child", timeout=WAIT) == "child"
        except BaseException:
            answered = False
        os.write(write_end, b"1" if answered else b"0")
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"1"
