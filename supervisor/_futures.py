"""Command futures: settled exactly once, observable by callback (internal).

pykka futures raise ``queue.Full`` when set twice; a command can be answered
from two places in a race (a close and a crash hand-over), and the first answer
wins.

pykka futures have no callbacks, and their ``__await__`` yields once and then
blocks in ``get()``, which would freeze an event loop. :class:`CallbackFuture`
adds ``add_done_callback`` and an ``__await__`` that settles through the
running loop's thread-safe callback instead, so ``supervisor.aio`` (and a
plain ``await session.resume(...)``) never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka
from pykka._future import _Unset

from supervisor._logging import get_logger
from supervisor._runtime import new_lock

if TYPE_CHECKING:
    from pykka._future import GetHookFunc
    from pykka._types import OptExcInfo

T = TypeVar("T")

_log = get_logger("supervisor.futures")

DoneCallback = Callable[["CallbackFuture[Any]"], object]

_UNSET = _Unset()
_FIRST_CALLBACK = threading.Lock()


class CallbackFuture(pykka.Future[T]):
    """A pykka future that calls back once settled, with no lock of its own (internal).

    ``add_done_callback(fn)`` runs ``fn(future)`` in the thread that settles
    the future, or at once in the caller's thread if it is already settled.
    A callback that raises is logged and never reaches the settling thread
    (that is a session actor, which must not crash for a user's bug).

    Every command makes one of these, so it is lean: ``pykka.ThreadingFuture``
    builds a ``Condition`` (an ``RLock`` and a waiter list) per future: making the
    future of ``send()`` was 14.7 % of the client's CPU in ``bench_sessions``'
    message phase under gevent, and almost no command future is ever waited on
    before it settles.
    The first outcome appended to ``_outcomes`` wins and the callbacks are
    drained one ``pop`` at a time: ``list.append``, ``pop`` and ``remove`` are
    atomic, so each outcome is settled once and each callback runs once
    without a lock. Only ``get()`` on an unsettled future makes one, to wait on.
    """

    def __init__(self) -> None:
        # Not pykka.Future.__init__: it makes a "no hook result yet" marker per future,
        # one more object for the cycle collector to track for every command.
        self._get_hook: GetHookFunc[T] | None = None
        self._get_hook_result: T | _Unset = _UNSET
        self._outcomes: list[tuple[Any, OptExcInfo | None]] = []
        """Every attempt to settle, in order; the first is the outcome."""
        self._callbacks: list[DoneCallback] | None = None
        """Made by the first ``add_done_callback``: most command futures never get one."""

    def __repr__(self) -> str:
        return f"<CallbackFuture {'settled' if self._outcomes else 'pending'}>"

    def get(self, *, timeout: float | None = None) -> T:
        if self._get_hook is not None:  # made by pykka's map/filter/join/reduce
            return super().get(timeout=timeout)
        if not self._outcomes:
            self._wait(timeout)
        value, exc_info = self._outcomes[0]
        if exc_info is None:
            return cast("T", value)
        exc_type, exc_value, exc_traceback = exc_info
        assert exc_type is not None
        if exc_value is None:
            exc_value = exc_type()
        if exc_value.__traceback__ is not exc_traceback:
            raise exc_value.with_traceback(exc_traceback)
        raise exc_value

    def _wait(self, timeout: float | None) -> None:
        """Block until settled; ``pykka.Timeout`` after ``timeout`` seconds."""
        if timeout is None or timeout > 0:
            gate = new_lock()
            gate.acquire()

            def open_gate(_: CallbackFuture[Any]) -> None:
                gate.release()

            self.add_done_callback(open_gate)
            # No timeout means acquire(): gevent's semaphore (new_lock) reads -1 as "now".
            if gate.acquire() if timeout is None else gate.acquire(timeout=timeout):
                return
            # Timed out: take the callback back, so polling get(timeout) piles none up.
            with contextlib.suppress(ValueError):
                self._callback_list().remove(open_gate)
        msg = f"{timeout} seconds"
        raise pykka.Timeout(msg)

    def set(self, value: Any | None = None) -> None:
        self._settle((value, None))

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        assert exc_info is None or len(exc_info) == 3
        self._settle((None, sys.exc_info() if exc_info is None else exc_info))

    def set_get_hook(self, func: GetHookFunc[T]) -> None:
        if self._outcomes:
            raise queue.Full
        super().set_get_hook(func)

    def _settle(self, outcome: tuple[Any, OptExcInfo | None]) -> None:
        """Keep ``outcome`` if it is the first (else ``queue.Full``, as pykka); run callbacks."""
        outcomes = self._outcomes
        if outcomes or self._get_hook is not None:
            raise queue.Full
        outcomes.append(outcome)
        if outcomes[0] is not outcome:  # another thread settled it in between
            raise queue.Full
        callbacks = self._callbacks  # None: no callback yet; one added now runs itself
        while callbacks:
            try:
                fn = callbacks.pop(0)
            except IndexError:  # add_done_callback took the last one back
                break
            _call(fn, self)

    def add_done_callback(self, fn: DoneCallback) -> None:
        """Call ``fn(self)`` once settled (at once if it already is)."""
        callbacks = self._callback_list()
        callbacks.append(fn)
        if not self._outcomes:
            return  # the settling thread pops it (it appends first, then drains)
        try:
            callbacks.remove(fn)  # settled meanwhile: whoever takes fn runs it
        except ValueError:
            return
        _call(fn, self)

    def _callback_list(self) -> list[DoneCallback]:
        """The callbacks' list, made once: two threads adding the first callbacks at
        once must append to the same list (a rare path, so a lock shared by all)."""
        callbacks = self._callbacks
        if callbacks is None:
            with _FIRST_CALLBACK:
                callbacks = self._callbacks
                if callbacks is None:
                    callbacks = self._callbacks = []
        return callbacks

    def __await__(self) -> Generator[Any, None, T]:
        """Await without blocking the running loop (pykka's own ``__await__`` blocks it)."""
        return on_loop(self, asyncio.get_running_loop()).__await__()

    __iter__ = __await__


def _call(fn: DoneCallback, future: CallbackFuture[Any]) -> None:
    try:
        fn(future)
    except Exception:  # noqa: BLE001 - a callback's bug must not reach the settling actor
        _log.exception("future_callback_failed")


def on_loop(future: CallbackFuture[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """An asyncio future on ``loop`` that settles like ``future``, via ``call_soon_threadsafe``.

    Cancelling the asyncio future only stops the wait: the command goes on and
    ``future`` still settles (its outcome is then dropped).
    """
    waiter: asyncio.Future[T] = loop.create_future()

    def settled(done: CallbackFuture[Any]) -> None:
        try:
            value = done.get(timeout=0)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task as is
            post_to_loop(loop, _reject_waiter, waiter, exc)
        else:
            post_to_loop(loop, _resolve_waiter, waiter, value)

    future.add_done_callback(settled)
    return waiter


def post_to_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` on ``loop`` soon, from any thread; nothing if the loop is closed."""
    # A closed loop has nobody left waiting: the outcome has nowhere to go.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _resolve_waiter(waiter: asyncio.Future[Any], value: Any) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _reject_waiter(waiter: asyncio.Future[Any], error: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(error)


def new_future() -> CallbackFuture[Any]:
    """A command future that works in both runtimes (pykka's, on patched threading under gevent)."""
    return CallbackFuture()


def resolve(future: pykka.Future[T], value: T) -> None:
    """Set ``value`` unless the future is already settled."""
    with contextlib.suppress(queue.Full):
        future.set(value)


def reject(future: pykka.Future[Any], error: BaseException) -> None:
    """Fail with ``error`` unless the future is already settled."""
    with contextlib.suppress(queue.Full):
        future.set_exception(exc_info=(type(error), error, error.__traceback__))


def is_settled(future: pykka.Future[Any]) -> bool:
    """True once the future has a value or an error."""
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except BaseException:  # noqa: BLE001 - a stored error means settled
        return True
    return True
