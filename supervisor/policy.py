"""Restart policy: which failures restart a session, how soon, and how often.

Pure code: the clock and the random source are injected, so tests assert exact
delays and budgets.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from supervisor.errors import HandshakeRefused, ProtocolRefused


class RestartType(enum.Enum):
    """When a session whose connection ended is restarted (as in Erlang/OTP)."""

    PERMANENT = "permanent"
    """Always restarted, unless the failure is fatal (refused credentials)."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal end (not after a clean close by the server)."""
    TEMPORARY = "temporary"
    """Never restarted: the first loss closes the session as failed."""


class Uniform(Protocol):
    """The part of ``random.Random`` the backoff needs."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Supervisor-wide restart, backoff and admission settings.

    The defaults suit load tests as well as services: a flaky network does not
    exhaust the budget in seconds, and admission lets 100 handshakes be in
    flight and 500 start per second.
    """

    restart: RestartType = RestartType.PERMANENT
    backoff_base: float = 0.5
    """First backoff ceiling in seconds; it doubles per consecutive restart."""
    backoff_cap: float = 30.0
    """Largest backoff ceiling; the jitter is drawn below it (full jitter after the cap)."""
    reset_after: float = 30.0
    """A connection that lived this long resets the backoff to its base."""
    max_restarts: int = 20
    """Restarts allowed within ``restart_window``; one more fails the session."""
    restart_window: float = 60.0
    fatal_statuses: frozenset[int] = frozenset({301, 302, 303, 307, 308, 401, 403, 431})
    """Handshake refusals that fail the session at once instead of retrying (a refused
    redirect or an oversized request would be refused again)."""
    max_handshakes_in_flight: int = 100
    max_handshakes_per_second: float = 500.0
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    rng: Uniform = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        positive = {
            "backoff_base": self.backoff_base,
            "backoff_cap": self.backoff_cap,
            "restart_window": self.restart_window,
            "max_handshakes_in_flight": self.max_handshakes_in_flight,
            "max_handshakes_per_second": self.max_handshakes_per_second,
        }
        for name, value in positive.items():
            if value <= 0:
                msg = f"RestartPolicy.{name} must be positive, got {value}"
                raise ValueError(msg)
        if self.max_restarts < 0 or self.reset_after < 0:
            msg = "RestartPolicy.max_restarts and reset_after must not be negative"
            raise ValueError(msg)

    def backoff(self, attempt: int) -> float:
        """Delay before restart number ``attempt`` (0-based): full jitter below the cap."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, 62))
        return self.rng.uniform(0.0, ceiling)

    def give_up_reason(self, error: BaseException | None, *, clean: bool) -> str | None:
        """Why this end of a connection must not be restarted, or None to restart.

        ``clean`` is true when the server closed the connection normally.
        """
        if self.restart is RestartType.TEMPORARY:
            return f"temporary session ended: {_describe(error, clean=clean)}"
        if self.restart is RestartType.TRANSIENT and clean:
            return "transient session closed normally by the server"
        if isinstance(error, HandshakeRefused) and error.status_code in self.fatal_statuses:
            return f"handshake refused with HTTP {error.status_code}"
        if isinstance(error, ProtocolRefused):
            return f"refused by the server: {error.message}"
        return None


def _describe(error: BaseException | None, *, clean: bool) -> str:
    if error is not None:
        return f"{type(error).__name__}: {error}"
    return "closed normally by the server" if clean else "connection lost"


BUDGET_EXHAUSTED = "restart budget exhausted"
"""How the reason of a session failed by its restart budget begins (metrics and health
recognise it by this)."""


class RestartBudget:
    """Counts one session's restarts within a sliding window (internal)."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._times: list[float] = []
        """Restart times within the window: at most ``max_restarts`` (a list: a deque
        holds a 760-byte block even empty, in every session)."""
        self.attempt = 0
        """Consecutive restarts since the last stable connection (backoff exponent)."""

    def spend(self, uptime: float | None) -> bool:
        """Record one restart; False when it would exceed the budget.

        ``uptime`` is how long the lost connection lived (None if it never
        opened); a long-lived one resets the backoff.
        """
        now = self._policy.clock()
        if uptime is not None and uptime >= self._policy.reset_after:
            self.attempt = 0
        while self._times and now - self._times[0] > self._policy.restart_window:
            del self._times[0]
        if len(self._times) >= self._policy.max_restarts:
            return False
        self._times.append(now)
        return True

    def refund(self) -> None:
        """Take back the latest restart: a Resume reconnected before it happened."""
        if self._times:
            self._times.pop()
        self.attempt = max(0, self.attempt - 1)

    def next_delay(self) -> float:
        """Draw the backoff for this restart and raise the exponent for the next."""
        delay = self._policy.backoff(self.attempt)
        self.attempt += 1
        return delay
