"""A heartbeat on an asyncio loop that records its gaps and where the time went.


Each tick sleeps ``interval`` and notes how long it really took. For every
gap it also notes what else happened meanwhile, so a long gap can be told
apart: the loop thread running code of its own (``loop_cpu``), other threads of
this process holding the GIL (``process_cpu`` minus ``loop_cpu``), the OS
keeping the loop thread off the CPU (``run_queue``, from Linux schedstat), or
a garbage collection pausing every thread (``gc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def _run_queue_s() -> float:
    """Seconds this thread has waited for a CPU so far (0 where schedstat is missing)."""
    try:
        return int(_SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass(frozen=True, slots=True)
class Gap:
    seconds: float
    at: float
    loop_cpu: float
    process_cpu: float
    run_queue: float
    gc: float

    @property
    def in_process(self) -> float:
        """The part of the gap this process can have caused.

        On 2 cores shared with other processes the OS can hold the loop
        thread back (its run-queue wait), or preempt the thread that holds
        the GIL, so the loop waits while the process computes nothing. Only
        time the process spent computing (its CPU time: sessions' work, the
        loop's own, garbage collection) can have kept its loop from running,
        so the gap counts here up to that, less the loop's run-queue wait.
        """
        return max(0.0, min(self.seconds - self.run_queue, self.process_cpu))

    def __str__(self) -> str:
        return (f"{self.seconds * 1e3:.1f} ms at +{self.at:.3f}s, {self.in_process * 1e3:.1f} ms "
                f"of it in process (loop thread cpu "
                f"{self.loop_cpu * 1e3:.1f} ms, process cpu {self.process_cpu * 1e3:.1f} ms, "
                f"loop thread waiting for a cpu {self.run_queue * 1e3:.1f} ms, "
                f"gc pauses {self.gc * 1e3:.1f} ms)")


@dataclass
class Heartbeat:
    """Ticks every ``interval`` seconds on the running loop until stopped."""

    interval: float = 0.010
    gaps: list[Gap] = field(default_factory=list)
    _gc_paused: float = 0.0
    _gc_started: dict[int, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _started: float = 0.0
    _ticked: asyncio.Event = field(default_factory=asyncio.Event)

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self._gc_started[ident] = time.monotonic()
        elif ident in self._gc_started:
            self._gc_paused += time.monotonic() - self._gc_started.pop(ident)

    async def _run(self) -> None:
        last, cpu, process, queued, paused = (time.monotonic(), time.thread_time(),
                                              time.process_time(), _run_queue_s(), 0.0)
        while True:
            await asyncio.sleep(self.interval)
            now, cpu_now, process_now, queued_now = (time.monotonic(), time.thread_time(),
                                                     time.process_time(), _run_queue_s())
            paused_now = self._gc_paused
            self.gaps.append(Gap(now - last, now - self._started, cpu_now - cpu,
                                 process_now - process, queued_now - queued, paused_now - paused))
            self._ticked.set()
            last, cpu, process, queued, paused = now, cpu_now, process_now, queued_now, paused_now

    def start(self) -> None:
        self._started = time.monotonic()
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def tick_after(self, at: float) -> None:
        """Return once a tick has landed ``at`` seconds after :meth:`start` or later.

        Work that ends within one interval of the beat's last tick leaves no tick
        after it unless the caller waits for one; bound the wait with a deadline.
        """
        while not self.gaps or self.gaps[-1].at < at:
            self._ticked.clear()
            await self._ticked.wait()

    async def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def worst(self, n: int = 5) -> list[Gap]:
        """The ``n`` longest gaps, wall clock."""
        return sorted(self.gaps, key=lambda gap: gap.seconds, reverse=True)[:n]

    def worst_in_process(self) -> Gap:
        """The gap with the most time this process kept its loop from running."""
        return max(self.gaps, key=lambda gap: gap.in_process)
