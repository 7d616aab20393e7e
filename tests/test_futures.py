"""Command futures without a lock of their own: settled once, waited on, raced.

``CallbackFuture`` relies on ``list.append``/``pop``/``remove`` being atomic
instead of a lock per future; these tests race settlers, callbacks and waiters
from real threads (greenlets under gevent) and check that every outcome is
kept once and every callback runs once.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from typing import Any

import pykka
import pytest
from support import wait_until

from supervisor._futures import CallbackFuture, is_settled, new_future, reject, resolve
from supervisor.errors import SessionClosed

pytestmark = pytest.mark.concurrency

RACE_ROUNDS = 300
"""Futures raced per test: bounded, and enough that the interleavings vary."""


def start(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


class TestSettling:
    def test_first_outcome_wins_and_a_second_raises_full(self) -> None:
        future: CallbackFuture[int] = new_future()
        future.set(1)
        with pytest.raises(queue.Full):
            future.set(2)
        with pytest.raises(queue.Full):
            future.set_exception(exc_info=(ValueError, ValueError("late"), None))
        assert future.get(timeout=0) == 1

    def test_an_error_is_raised_by_every_get_with_its_traceback(self) -> None:
        future: CallbackFuture[Any] = new_future()
        try:
            raise SessionClosed("closed by the user")
        except SessionClosed:
            future.set_exception()  # sys.exc_info(), as pykka's own futures
        for _ in range(2):
            with pytest.raises(SessionClosed, match="closed by the user") as info:
                future.get(timeout=0)
            assert info.value.__traceback__ is not None

    def test_an_exception_type_without_value_is_raised_as_an_instance(self) -> None:
        future: CallbackFuture[Any] = new_future()
        future.set_exception(exc_info=(KeyError, None, None))
        with pytest.raises(KeyError):
            future.get(timeout=0)

    def test_is_settled_sees_values_and_errors(self) -> None:
        pending: CallbackFuture[int] = new_future()
        failed: CallbackFuture[int] = new_future()
        done: CallbackFuture[int] = new_future()
        reject(failed, SessionClosed("x"))
        resolve(done, 0)
        assert (is_settled(pending), is_settled(failed), is_settled(done)) == (False, True, True)


class TestWaiting:
    def test_get_on_a_pending_future_times_out(self) -> None:
        future: CallbackFuture[int] = new_future()
        # No lower bound on the time waited: gevent's timers run on the loop's cached
        # clock and may fire a little before time.monotonic() says the timeout is over.
        with pytest.raises(pykka.Timeout, match=r"0\.05 seconds"):
            future.get(timeout=0.05)
        with pytest.raises(pykka.Timeout):
            future.get(timeout=0)

    def test_timed_out_waits_leave_no_callback_behind(self) -> None:
        """Polling get(timeout) on a pending future does not pile callbacks up."""
        future: CallbackFuture[int] = new_future()
        for _ in range(20):
            with pytest.raises(pykka.Timeout):
                future.get(timeout=0.001)
        assert not future._callbacks
        future.set(5)
        assert future.get(timeout=0) == 5

    def test_a_future_is_two_objects_for_the_cycle_collector(self) -> None:
        """Itself and its outcomes list: every command makes one, and a burst of sends
        keeps thousands alive through young collections (docs/benchmarks.md)."""
        before = len(gc.get_objects())
        futures = [new_future() for _ in range(1000)]
        made = len(gc.get_objects()) - before - 1  # the list holding them
        assert made <= 2 * len(futures), made

    def test_a_waiter_wakes_when_another_thread_settles(self) -> None:
        future: CallbackFuture[str] = new_future()
        got: list[str] = []
        waiter = start(lambda: got.append(future.get(timeout=10)))
        future.set("answer")
        waiter.join(10)
        assert got == ["answer"]

    def test_a_get_without_timeout_waits_until_settled(self) -> None:
        """No timeout is no deadline: the wait lasts until another thread settles it."""
        future: CallbackFuture[str] = new_future()
        got: list[object] = []

        def wait() -> None:
            try:
                got.append(future.get())
            except pykka.Timeout as exc:  # what a wait read as "now" would raise
                got.append(exc)

        waiter = start(wait)
        wait_until(lambda: bool(future._callbacks) or not waiter.is_alive(),
                   what="the waiter to park on its gate (its callback)")
        # Not a wait for an event: time for a wait that wrongly ends at once to end
        # (gevent's took 23 ms here); a right one passes however long this takes.
        waiter.join(0.2)
        future.set("answer")
        waiter.join(10)
        assert got == ["answer"]

    def test_pykka_combinators_still_work(self) -> None:
        """map() builds a future of the same class with a get hook."""
        future: CallbackFuture[int] = new_future()
        doubled = future.map(lambda value: value * 2)
        future.set(21)
        assert doubled.get(timeout=1) == 42
        with pytest.raises(queue.Full):
            doubled.set(1)  # a hooked future takes no outcome, as pykka's own


class TestRaces:
    """Settlers, callbacks and waiters from several threads at once, RACE_ROUNDS times."""

    def test_two_settlers_one_outcome_each_callback_once(self) -> None:
        for round_ in range(RACE_ROUNDS):
            future: CallbackFuture[int] = new_future()
            calls: list[int] = []
            future.add_done_callback(lambda f, seen=calls: seen.append(f.get(timeout=0)))
            go = threading.Barrier(3, timeout=10)
            lost: list[int] = []

            def settle(value: int, fut: CallbackFuture[int] = future,
                       barrier: threading.Barrier = go, losers: list[int] = lost) -> None:
                barrier.wait()
                try:
                    fut.set(value)
                except queue.Full:
                    losers.append(value)

            settlers = [start(settle, 1), start(settle, 2)]
            go.wait()
            for settler in settlers:
                settler.join(10)
            winner = future.get(timeout=0)
            assert lost == [3 - winner], f"round {round_}"
            assert calls == [winner], f"round {round_}"

    def test_callbacks_added_while_settling_each_run_exactly_once(self) -> None:
        for round_ in range(RACE_ROUNDS):
            future: CallbackFuture[int] = new_future()
            calls: list[str] = []
            go = threading.Barrier(3, timeout=10)

            def add(name: str, fut: CallbackFuture[int] = future,
                    barrier: threading.Barrier = go, seen: list[str] = calls) -> None:
                barrier.wait()
                for index in range(5):
                    fut.add_done_callback(lambda _f, tag=f"{name}{index}": seen.append(tag))
                    time.sleep(0)  # let the settler in between adds

            adders = [start(add, "a"), start(add, "b")]
            go.wait()
            future.set(0)
            for adder in adders:
                adder.join(10)
            assert sorted(calls) == sorted(f"{n}{i}" for n in "ab" for i in range(5)), \
                f"round {round_}: {calls}"

    def test_waiters_racing_the_settler_all_wake(self) -> None:
        for round_ in range(RACE_ROUNDS // 10):
            future: CallbackFuture[int] = new_future()
            got: list[int] = []
            waiters = [start(lambda f=future, into=got: into.append(f.get(timeout=10)))
                       for _ in range(5)]
            time.sleep(0)
            future.set(round_)
            for waiter in waiters:
                waiter.join(10)
            assert got == [round_] * 5
