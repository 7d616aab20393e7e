"""Pooled pykka actors: many actors served by a few worker threads (internal).

pykka's ``ThreadingActor`` keeps one thread (a greenlet under gevent) per
actor for its whole life, blocked on its inbox between messages. Measured on
gevent, such an idle actor costs 15.8 KiB and a session needs only 3.4 KiB of
actor objects besides: the blocked thread's stack is most of a session. A
``PooledActor`` has no thread of its own. Its inbox schedules it on a shared
``ActorPool`` when a message arrives, and a worker runs it until its inbox is
empty (or its turn is over), then takes the next actor with work.

pykka's promises hold: one message at a time per actor, in arrival order;
``on_start`` before the first message; ``on_stop``/``on_failure`` last; the
inbox's leftover asks answered with ``ActorDeadError`` (pykka's own teardown,
reused). What changes is the thread: successive messages of one actor may run
on different workers, so an actor must not keep thread-local state.

A handler that blocks (a slow user callback) holds one worker. The pool then
grows: a watcher adds a worker whenever actors wait while every worker has
been inside its current turn for over ``stall_after`` (blocked, not merely
busy: a CPU-bound backlog gains nothing from more threads), up to one worker
per live actor (so never more threads than ``ThreadingActor`` would use);
workers above the core count leave after ``idle_exit`` without work.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sys
import threading
import time
from collections import deque
from typing import Any

import pykka
from pykka._envelope import Envelope

from supervisor import _slice as time_slice
from supervisor._futures import new_future
from supervisor._logging import get_logger
from supervisor._runtime import gevent_patched, new_lock
from supervisor._slice import TimeSlice

_log = get_logger("supervisor.actor_pool")

TURN = 64
"""Messages one actor handles before the worker moves on to the next actor with work."""

CORE_WORKERS_THREADS = 4
CORE_WORKERS_GEVENT = 1
"""Under gevent every worker runs on the one OS thread, so a second busy worker adds no
CPU, only its time slice to every other greenlet's wait: with four, an asyncio loop on
the hub waited 30-77 ms at 50 busy sessions, with one 21-24 ms
(``tests/test_aio_heartbeat.py``). But a handler that waits (starting a handshake
thread waits for it to run) holds the one worker: at 10,000 sessions opening 500 a
second a load test completed 2,705 turns instead of 51,986. So a process that runs
only sessions keeps four (:func:`favour_throughput`)."""


class ActorPool:
    """Internal: a run queue of actors with work, and the workers that run them."""

    WATCH_IDLE = 60.0
    """The watcher's wait while no actor waits (it is woken when one does)."""

    def __init__(self, core_workers: int | None = None, stall_after: float = 0.5,
                 idle_exit: float = 2.0) -> None:
        self.core_workers = core_workers or (
            CORE_WORKERS_GEVENT if gevent_patched() else CORE_WORKERS_THREADS)
        self.stall_after = stall_after
        self.idle_exit = idle_exit
        self._reset()

    def _reset(self) -> None:
        """Start empty: at creation, and in a forked child (the parent's workers are not
        there; its actors neither)."""
        self._lock = new_lock()
        # Each idle worker waits on an Event of its own, not on a shared Condition:
        # under gevent an Event is compiled code and a Condition is Python on top of
        # Python locks (about 7 % of the client's CPU at 1,000 chat sessions).
        self._watch_wake = threading.Event()
        """Set when actors wait and no worker is free: the watcher looks for a stall."""
        self._watcher_dozing = True
        """Guarded by the lock: the watcher's wait is the long one (no actor waited when it
        looked), so only a wake brings it back; otherwise it looks again soon by itself
        and a wake per schedule would be a thread switch each (under gevent, each one
        of a burst)."""
        # Guarded by the lock:
        self._ready: deque[tuple[PooledActor, float]] = deque()
        """Actors with work and no worker, with when they were queued (FIFO: fair)."""
        self._workers = 0
        self._turns: dict[int, float] = {}
        """When each worker inside a turn started it, by thread id."""
        self._idle: list[threading.Event] = []
        """The wake-up of each worker waiting for work that no ``schedule`` has claimed
        yet (last in, first out: the worker idle for the shortest time goes first)."""
        self._live_actors = 0
        self._watcher: threading.Thread | None = None
        self._names = itertools.count(1)

    @property
    def workers(self) -> int:
        """Worker threads (greenlets under gevent) now running."""
        return self._workers

    def actor_started(self) -> None:
        with self._lock:
            self._live_actors += 1

    def actor_ended(self) -> None:
        with self._lock:
            self._live_actors -= 1

    def schedule(self, actor: PooledActor) -> None:
        """``actor`` has work: queue it, unless it is queued or running already.

        One critical section per message told: the inbox's flag is guarded by
        this same lock, so checking it and queueing the actor take it once.
        """
        with self._lock:
            inbox = actor.inbox
            if inbox._scheduled:
                return
            inbox._scheduled = True
            self._ready.append((actor, time.monotonic()))
            if self._idle:
                self._idle.pop().set()  # claimed: the next schedule does not count on it
            elif self._workers < self.core_workers:
                self._spawn()
            elif self._watcher_dozing:
                self._watcher_dozing = False
                self._watch_wake.set()

    def _spawn(self) -> None:
        """Start one worker (and the watcher with the first); lock held."""
        if self._watcher is None:
            self._watcher = self._thread(self._watch, "supervisor-actor-pool-watch")
        self._workers += 1
        self._thread(self._work, f"supervisor-actor-worker-{next(self._names)}")

    @staticmethod
    def _thread(target: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _work(self) -> None:
        me = threading.get_ident()
        lock = self._lock
        wake = threading.Event()
        idle_since = time.monotonic()
        # Let others run between turns: under gevent nothing else would (the hub, an
        # asyncio loop on it, the reader greenlets) while actors have work.
        time_slice = TimeSlice()
        while True:
            with lock:
                if self._ready:
                    actor, _ = self._ready.popleft()
                    self._turns[me] = time.monotonic()
                elif self._workers > self.core_workers \
                        and time.monotonic() - idle_since >= self.idle_exit:
                    self._workers -= 1
                    return
                else:
                    actor = None
                    wake.clear()
                    self._idle.append(wake)
                    # Only a worker above the core count may leave; the others wait
                    # without a timeout (under gevent each one is a Timeout object).
                    patience = self.idle_exit if self._workers > self.core_workers else None
            if actor is None:
                if not wake.wait(patience):
                    with lock, contextlib.suppress(ValueError):
                        # Timed out unclaimed. (Not there: a schedule claimed it just
                        # now, and its work is in the run queue for the next pass.)
                        self._idle.remove(wake)
                time_slice.restart()  # the wait let every other thread run
                continue
            try:
                more = actor._run_turn()
            except Exception:  # noqa: BLE001 - a runtime bug must not cost every actor a worker
                _log.exception("actor_turn_failed", actor=str(actor))
                more = False
            with lock:
                del self._turns[me]
                if more or actor.inbox.reschedule_or_rest():
                    self._ready.append((actor, time.monotonic()))
            idle_since = time.monotonic()
            time_slice.share()

    def _watch(self) -> None:
        """Add a worker whenever actors wait and every worker is stuck in its turn."""
        while True:
            with self._lock:
                if self._stuck(time.monotonic()) \
                        and self._workers < max(self.core_workers, self._live_actors):
                    self._spawn()
                    self._ready[0] = (self._ready[0][0], time.monotonic())  # one per stall
                wait = self.stall_after / 2 if self._ready else self.WATCH_IDLE
                self._watcher_dozing = not self._ready
            self._watch_wake.wait(wait)
            self._watch_wake.clear()  # the state is read under the lock just after

    def _stuck(self, now: float) -> bool:
        """Lock held: an actor has waited, and every worker's turn is over ``stall_after``."""
        if not self._ready or self._idle or now - self._ready[0][1] < self.stall_after:
            return False
        return len(self._turns) >= self._workers and all(
            now - started >= self.stall_after for started in self._turns.values())


class PoolInbox:
    """Internal: an actor's inbox that puts the actor on the pool when work arrives.

    The ``queue.Queue`` methods pykka's teardown and the session actor's
    hand-over use (``put``, ``get``, ``empty``, ``qsize``) behave as a queue's.
    """

    __slots__ = ("_actor", "_items", "_scheduled")

    def __init__(self, actor: PooledActor) -> None:
        self._actor = actor
        self._items: deque[Envelope[Any]] = deque()
        self._scheduled = False
        """Queued on the pool or running: one worker at a time. Read and written by the
        pool under its lock (``ActorPool.schedule``, the end of a turn)."""

    def put(self, envelope: Envelope[Any], block: bool = True,
            timeout: float | None = None) -> None:
        self._items.append(envelope)
        self._actor.pool.schedule(self._actor)

    def get(self, block: bool = True, timeout: float | None = None) -> Envelope[Any]:
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def reschedule_or_rest(self) -> bool:
        """The turn ended with the inbox empty: True if a message came meanwhile.

        The pool's lock is held, as in ``schedule``: a message put after the check
        finds ``_scheduled`` false and schedules the actor itself.
        """
        if self._items and not self._actor.actor_stopped.is_set():
            return True
        self._scheduled = False
        return False


shared_pool = ActorPool()
"""The process's pool: every ``PooledActor`` runs on it unless given another."""


def favour_throughput() -> None:
    """For a process that runs nothing but sessions (the load test), before its first:
    under gevent, four core workers and ``sleep(0)`` yields instead of fairness to
    other greenlets (an asyncio loop's latency). No change on threads."""
    time_slice.favour_throughput()
    with shared_pool._lock:
        shared_pool.core_workers = max(shared_pool.core_workers, CORE_WORKERS_THREADS)


os.register_at_fork(after_in_child=shared_pool._reset)


class PooledActor(pykka.Actor):
    """A pykka actor without a thread of its own, run by an ``ActorPool``."""

    pool: ActorPool = shared_pool
    inbox: PoolInbox
    """``actor_inbox``, typed as what it is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started = False
        self._done = False
        self.running_in: int | None = None
        """The worker thread running this actor now, or None between turns."""

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        self.inbox = PoolInbox(self)
        return self.inbox

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return new_future()  # lighter than pykka's ThreadingFuture; see _futures

    def _start_actor_loop(self) -> None:
        self.pool.actor_started()
        self.pool.schedule(self)  # the first turn runs on_start

    def _run_turn(self) -> bool:
        """Handle up to ``TURN`` messages; True if the actor has more right now."""
        if self._done:
            self._actor_loop_teardown()  # a message that raced the stop: answered, not left
            return False
        self.running_in = threading.get_ident()
        try:
            if not self._started:
                self._started = True
                self._actor_loop_setup()
            inbox = self.inbox
            handled = 0
            while handled < TURN and not self.actor_stopped.is_set() and not inbox.empty():
                self._handle(inbox.get())
                handled += 1
            if self.actor_stopped.is_set():
                self._done = True
                self._actor_loop_teardown()
                self.pool.actor_ended()
                return False
            return not inbox.empty()
        finally:
            self.running_in = None

    def _handle(self, envelope: Envelope[Any]) -> None:
        """One message, with pykka's failure handling (as its actor loop does)."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:  # noqa: BLE001 - as pykka: to the asker, or on_failure
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
                return
            self._handle_failure(*sys.exc_info())
            try:
                self.on_failure(*sys.exc_info())
            except Exception:  # noqa: BLE001 - as pykka: a failing on_failure is logged
                self._handle_failure(*sys.exc_info())
        except BaseException as exc:  # noqa: BLE001 - as pykka: an exit ends every actor
            _log.debug("actor_exit_request", actor=str(self), error=repr(exc))
            self._stop()
            pykka.ActorRegistry.stop_all(block=False)
