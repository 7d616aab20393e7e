"""Is a supervisor healthy? One pure verdict for a service's readiness probe.

``Supervisor.health()`` (and ``AsyncSupervisor.health()``) feed :func:`assess`
with a metrics sample; call it yourself with your own numbers to test a probe.
A supervisor is healthy when all three hold:

- no more than ``max_budgets_exhausted`` sessions failed because their restart
  budget ran out (the server kept failing them: a refused login is a
  per-user matter and is not counted);
- handshakes have not queued for admission without a break for longer than
  ``max_admission_saturated_s`` (a reconnect storm that admission is holding
  back, or limits too small for the load);
- at least ``min_connected_share`` of the sessions it keeps alive
  (connecting, connected or in backoff) are connected. With no such sessions
  the share is 1.0: an idle service is ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor._metrics import MetricsSample
from supervisor.messages import SessionStatus


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """Where healthy ends; the defaults suit a readiness probe."""

    max_budgets_exhausted: int = 0
    """Sessions failed by an exhausted restart budget that are still tolerated."""
    max_admission_saturated_s: float = 30.0
    """Seconds handshakes may stay queued for admission without a break."""
    min_connected_share: float = 0.9
    """Share of live sessions that must be connected."""

    def __post_init__(self) -> None:
        if self.max_budgets_exhausted < 0 or self.max_admission_saturated_s < 0:
            msg = "HealthThresholds limits must not be negative"
            raise ValueError(msg)
        if not 0.0 <= self.min_connected_share <= 1.0:
            msg = f"min_connected_share must be within [0, 1], got {self.min_connected_share}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict, with the numbers it was drawn from."""

    healthy: bool
    problems: tuple[str, ...]
    """One sentence per threshold crossed; empty when healthy."""
    live_sessions: int
    connected: int
    connected_share: float
    budgets_exhausted: int
    admission_saturated_s: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, for a probe endpoint."""
        return {"healthy": self.healthy, "problems": list(self.problems),
                "live_sessions": self.live_sessions, "connected": self.connected,
                "connected_share": self.connected_share,
                "budgets_exhausted": self.budgets_exhausted,
                "admission_saturated_s": self.admission_saturated_s}


def assess(sample: MetricsSample, thresholds: HealthThresholds | None = None) -> Health:
    """The health verdict for one metrics sample (pure)."""
    limits = thresholds or HealthThresholds()
    live = sample.live_sessions
    connected = sample.sessions.get(SessionStatus.CONNECTED, 0)
    share = 1.0 if live == 0 else connected / live
    problems = []
    if sample.budgets_exhausted > limits.max_budgets_exhausted:
        problems.append(f"{sample.budgets_exhausted} sessions exhausted their restart budget "
                        f"(at most {limits.max_budgets_exhausted} tolerated)")
    if sample.admission_saturated_s > limits.max_admission_saturated_s:
        problems.append(f"handshakes queued for admission for {sample.admission_saturated_s:.1f}s "
                        f"(at most {limits.max_admission_saturated_s:g}s tolerated)")
    if share < limits.min_connected_share:
        problems.append(f"{connected} of {live} sessions connected ({share:.0%}; at least "
                        f"{limits.min_connected_share:.0%} needed)")
    return Health(healthy=not problems, problems=tuple(problems), live_sessions=live,
                  connected=connected, connected_share=share,
                  budgets_exhausted=sample.budgets_exhausted,
                  admission_saturated_s=sample.admission_saturated_s)
