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
import threading
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import pykka

from supervisor._logging import get_logger

T = TypeVar("T")

_log = get_logger("supervisor.futures")

DoneCallback = Callable[["CallbackFuture[Any]"], object]


class CallbackFuture(pykka.ThreadingFuture[T]):
    """A ``pykka.ThreadingFuture`` that calls back once settled (internal).

    ``add_done_callback(fn)`` runs ``fn(future)`` in the thread that settles
    the future, or at once in the caller's thread if it is already settled.
    A callback that raises is logged and never reaches the settling thread
    (that is a session actor, which must not crash for a user's bug).
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks_lock = threading.Lock()
        self._callbacks: list[DoneCallback] | None = []
        """None once settled: callbacks added from then on run at once."""

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._run_callbacks()

    def set_exception(self, exc_info: Any = None) -> None:
        super().set_exception(exc_info)
        self._run_callbacks()

    def add_done_callback(self, fn: DoneCallback) -> None:
        """Call ``fn(self)`` once settled (at once if it already is)."""
        with self._callbacks_lock:
            if self._callbacks is not None:
                self._callbacks.append(fn)
                return
        _call(fn, self)

    def _run_callbacks(self) -> None:
        with self._callbacks_lock:
            callbacks, self._callbacks = self._callbacks or [], None
        for fn in callbacks:
            _call(fn, self)

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
