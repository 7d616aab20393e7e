"""One Locust process's shared machinery: the supervisor, the metrics, the settings.

Every user of a process (a Locust worker, or a single-process run) opens its
session on one :class:`~supervisor.Supervisor` and records into one
:class:`~supervisor.locust._payload.LocalMetrics`. The engine is made on first
use and keyed by the Locust ``Environment``, so tests that build several
environments in one process keep them apart.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from supervisor._actor_pool import favour_throughput
from supervisor.loadtest.runner import Credentials
from supervisor.locust._options import RunSettings, settings_for
from supervisor.locust._payload import LocalMetrics
from supervisor.policy import RestartPolicy
from supervisor.supervisor import Supervisor

STOP_TIMEOUT_S = 10.0
"""Seconds the process's sessions get to close when it quits."""


@dataclass(slots=True)
class Engine:
    """The shared state of one Locust process's users."""

    metrics: LocalMetrics
    worker_index: int = 0
    worker_count: int = 1
    _supervisor: Supervisor | None = None
    _settings: dict[tuple[str, str], RunSettings] = field(default_factory=dict)
    _credentials: dict[tuple[str, str], Credentials] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def supervisor(self) -> Supervisor:
        with self._lock:
            if self._supervisor is None:
                # A Locust process is a load test: throughput over fairness to other
                # greenlets, as in ``supervisor loadtest`` (before the first session).
                favour_throughput()
                self._supervisor = Supervisor.start(RestartPolicy(
                    backoff_base=0.25, backoff_cap=5.0))
            return self._supervisor

    def settings(self, user_class: type[Any], environment: Any) -> RunSettings:
        """The validated settings of ``user_class`` (computed once per class and host)."""
        host = environment.host or getattr(user_class, "host", None) or ""
        key = (user_class.__qualname__, host)
        with self._lock:
            found = self._settings.get(key)
        if found is None:
            found = settings_for(user_class.protocol, dict(user_class.options),
                                 environment.parsed_options, host or None)
            with self._lock:
                self._settings[key] = found
        return found

    def credentials(self, settings: RunSettings) -> Credentials:
        key = (repr(settings.config.login), settings.base_url)
        with self._lock:
            return self._credentials.setdefault(key, Credentials(settings.config,
                                                                 settings.base_url))

    def next_number(self) -> int:
        """A session number unique across the run's workers (1-based), for ``{n}`` logins."""
        local = next(self._numbers)
        return local * max(1, self.worker_count) + self.worker_index + 1

    def rng(self, settings: RunSettings, number: int) -> random.Random:
        seed = settings.config.seed
        return random.Random(f"{seed}:{number}") if seed is not None else random.Random()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        with self._lock:
            supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.stop(timeout=timeout)


_ENGINES: dict[int, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(environment: Any) -> Engine:
    """The engine of ``environment``'s process, made on first use."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(id(environment))
        if engine is None:
            engine = _ENGINES[id(environment)] = Engine(LocalMetrics(requested=1))
        return engine


def drop_engine(environment: Any) -> Engine | None:
    with _ENGINES_LOCK:
        return _ENGINES.pop(id(environment), None)
