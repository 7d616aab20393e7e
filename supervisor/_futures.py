"""Settling futures exactly once (internal).

pykka futures raise ``queue.Full`` when set twice; a command can be answered
from two places in a race (a close and a crash hand-over), and the first answer
wins.
"""

from __future__ import annotations

import contextlib
import queue
from typing import Any, TypeVar

import pykka

T = TypeVar("T")


def new_future() -> pykka.Future[Any]:
    """A future that works in both runtimes (pykka's, on patched threading under gevent)."""
    return pykka.ThreadingFuture()


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
