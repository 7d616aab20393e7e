"""Load shapes: how many sessions the run wants at each moment, and when each resumes.

Pure code. A :class:`Shape` is a list of stages ``(seconds, sessions)``, as
``--stages 30s:100,2m:100,30s:0`` writes them: each stage moves the wanted
number of sessions linearly from where the previous one left it (0 at the
start) to its own target over its duration. Without ``--stages`` the shape is
the classic ramp: ``--spawn-rate`` sessions a second up to ``--sessions``, held
until ``--duration``. The runner starts sessions while fewer run than
:meth:`Shape.wanted_at` says, and retires the newest ones while more do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from supervisor.loadtest.values import ConfigError, parse_duration

MAX_STAGES = 100
MAX_SESSIONS = 1_000_000
GOLDEN = (math.sqrt(5) - 1) / 2
STAGES_EXAMPLE = "e.g. --stages 30s:100,2m:100,30s:0 (ramp to 100 over 30 s, hold 2 min, ramp down)"


@dataclass(frozen=True, slots=True)
class Stage:
    """Move to ``sessions`` wanted sessions over ``seconds``."""

    seconds: float
    sessions: int


def parse_stages(value: Any, source: str) -> tuple[Stage, ...]:
    """``DURATION:SESSIONS,...`` (or a TOML list of such strings); ConfigError when bad."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    stages = []
    for raw in items:
        item = str(raw).strip()
        when, sep, count = item.rpartition(":")
        if not sep or not when.strip():
            raise ConfigError(f"{source}: {item!r} is not DURATION:SESSIONS", STAGES_EXAMPLE)
        try:
            seconds = parse_duration(when, f"{source} stage {item!r}")
        except ConfigError as exc:
            raise ConfigError(exc.what, f"durations like 30s or 2m, {STAGES_EXAMPLE}") from None
        try:
            sessions = int(count.strip())
        except ValueError:
            raise ConfigError(f"{source}: stage {item!r} needs a whole number of sessions",
                              STAGES_EXAMPLE) from None
        if seconds <= 0 or not 0 <= sessions <= MAX_SESSIONS:
            raise ConfigError(f"{source}: stage {item!r} needs a duration above 0 and 0 to "
                              f"{MAX_SESSIONS} sessions", STAGES_EXAMPLE)
        stages.append(Stage(seconds, sessions))
    if not stages or len(stages) > MAX_STAGES:
        raise ConfigError(f"{source} must have 1 to {MAX_STAGES} stages", STAGES_EXAMPLE)
    if max(stage.sessions for stage in stages) == 0:
        raise ConfigError(f"{source} never asks for a session", STAGES_EXAMPLE)
    return tuple(stages)


def stages_text(stages: tuple[Stage, ...]) -> str:
    """The stages as ``--stages`` writes them (for the report's settings)."""
    return ",".join(f"{stage.seconds:g}s:{stage.sessions}" for stage in stages)


@dataclass(frozen=True, slots=True)
class Shape:
    """Wanted sessions over time."""

    stages: tuple[Stage, ...]
    spawn_rate: float = 0.0
    """Without stages: sessions started per second up to :attr:`peak`."""
    hold: float = 0.0
    """Without stages: the run's duration."""

    @classmethod
    def ramp(cls, sessions: int, spawn_rate: float, duration: float) -> Shape:
        """The classic shape: ``spawn_rate`` a second up to ``sessions``, for ``duration``."""
        return cls((Stage(duration, sessions),), spawn_rate, duration)

    @property
    def duration(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def peak(self) -> int:
        return max(stage.sessions for stage in self.stages)

    @property
    def peak_start_rate(self) -> float:
        """Sessions started per second at most: the spawn rate, or the steepest rising stage."""
        if self.spawn_rate:
            return self.spawn_rate
        rate, level = 0.0, 0
        for stage in self.stages:
            rate = max(rate, (stage.sessions - level) / stage.seconds)
            level = stage.sessions
        return rate

    def wanted_at(self, elapsed: float) -> int:
        """Sessions wanted ``elapsed`` seconds into the run."""
        if self.spawn_rate:
            # One session at once, then one every 1/rate seconds (never fewer than asked).
            return min(self.peak, math.floor(elapsed * self.spawn_rate + 1e-9) + 1)
        start, level = 0.0, 0.0
        for stage in self.stages:
            if elapsed < start + stage.seconds:
                progress = (elapsed - start) / stage.seconds
                return max(0, round(level + (stage.sessions - level) * progress))
            start, level = start + stage.seconds, float(stage.sessions)
        return round(level)


def resume_phase(number: int, every: float) -> float:
    """Session ``number``'s resume offset within each ``every`` seconds of the run.

    Offsets follow the golden-ratio sequence, so however many sessions run, their
    resumes fall evenly over each period, on a fixed grid from the start of the
    run (a slow resume does not push the later ones, so they never bunch up).
    """
    return ((number * GOLDEN) % 1.0) * every


def next_resume(number: int, every: float, elapsed: float) -> float:
    """The first point of session ``number``'s resume grid after ``elapsed`` (seconds)."""
    phase = resume_phase(number, every)
    periods = math.floor((elapsed - phase) / every) + 1
    return phase + max(periods, 0) * every
