"""The master's chat metrics: every worker's samples and totals, merged exactly.

:class:`MergedMetrics` is a :class:`~supervisor.loadtest.metrics.Metrics`, so the
report writers and the progress display read it as they read a single
process's. Counters and errors arrive through the ordinary recording methods
(from the :class:`~supervisor.locust._payload.Ledger`'s deltas); latencies
arrive as whole histograms, added to the run's and the current interval's
histograms, so every percentile is computed from the merged histogram.
Session figures are the workers' figures added up; ``connected_peak`` is the
largest sum seen at any report (or the largest single worker's peak, if more).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from supervisor.loadtest.metrics import (
    INTERVAL_LATENCIES,
    LATENCIES,
    Metrics,
    Snapshot,
    new_histogram,
    p50_p99,
    summarize,
)
from supervisor.locust._payload import Ledger


class MergedMetrics(Metrics):
    """Metrics fed by worker reports instead of by sessions of this process."""

    def __init__(self, requested: int, interval_s: float = 1.0) -> None:
        super().__init__(requested, interval_s)
        self._merge_lock = threading.Lock()
        self._run = {name: new_histogram() for name in LATENCIES}
        self._interval = {name: new_histogram() for name in INTERVAL_LATENCIES}
        self._peak = 0
        self._first_connected: float | None = None
        self.ledger = Ledger(self._add_histogram, self._add_delta)

    # --- feeding ----------------------------------------------------------------

    def absorb(self, client_id: str, payload: Any) -> bool:
        """One worker report; False when it was malformed (counted in ``ledger.rejected``)."""
        accepted = self.ledger.absorb(client_id, payload)
        sums = self.ledger.session_sums()
        peak = max([sums["connected"]] + [book.sessions.get("connected_peak", 0)
                                          for book in self.ledger.workers.values()])
        with self._merge_lock:
            self._peak = max(self._peak, peak)
            if self._first_connected is None and self._peak > 0:
                self._first_connected = self.elapsed()
        return accepted

    def _add_histogram(self, name: str, histogram: HdrHistogram) -> None:
        with self._merge_lock:
            self._run[name].add(histogram)
            if name in self._interval:
                self._interval[name].add(histogram)

    def _add_delta(self, kind: str, key: str, n: int, message: str) -> None:
        """One growth of a worker's totals, added in one step, however large."""
        if kind == "count":
            if key != "errors":  # error() below counts those
                self.count(key, n)
        elif kind == "error":
            self.error(key, message, n)
        else:
            self.reconnect(key, n)

    # --- reading ----------------------------------------------------------------

    def latencies(self) -> dict[str, dict[str, Any]]:
        return {name: summarize(histogram)
                for name, histogram in self.merged_histograms().items()}

    def merged_histograms(self) -> dict[str, HdrHistogram]:
        """Copies of the run's merged histograms (for checks and tools)."""
        with self._merge_lock:
            copies = {name: new_histogram() for name in LATENCIES}
            for name, histogram in self._run.items():
                copies[name].add(histogram)
        return copies

    def roll(self) -> dict[str, Any]:
        with self._merge_lock:
            finished = self._interval
            self._interval = {name: new_histogram() for name in INTERVAL_LATENCIES}
        record = super().roll()
        record["active_sessions"] = self.connected_now()
        record["latency_ms"] = {name: p50_p99(histogram) for name, histogram in finished.items()}
        return record

    def session_figures(self) -> dict[str, int]:
        sums = self.ledger.session_sums()
        with self._merge_lock:
            peak = self._peak
        return {"started": sums["started"], "connected_peak": peak,
                "connected": sums["connected"], "failed": sums["failed"],
                "gave_up": sums["gave_up"], "connecting_end": sums["connecting_end"]}

    def connected_now(self) -> int:
        return self.ledger.session_sums()["connected"]

    @property
    def first_connected_at(self) -> float | None:
        with self._merge_lock:
            return self._first_connected

    def snapshot(self) -> Snapshot:
        figures = self.session_figures()
        return dataclasses.replace(super().snapshot(), started=figures["started"],
                                   connected=figures["connected"], failed=figures["gave_up"])

    def stale_frames_dropped(self) -> int:
        return sum(book.stale_frames_dropped for book in self.ledger.workers.values())

    def workers(self) -> dict[str, dict[str, Any]]:
        """The report's ``workers`` section: one entry per worker, by Locust client id."""
        return {client_id: book.describe() for client_id, book in self.ledger.workers.items()}

    def histogram_totals(self) -> Mapping[str, int]:
        with self._merge_lock:
            return {name: histogram.get_total_count() for name, histogram in self._run.items()}
