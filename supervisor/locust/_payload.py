"""What a Locust worker tells the master about its chat metrics, and how the master adds it up.

Pure code (no Locust, no gevent): the worker side builds a :func:`worker_payload`
from its :class:`LocalMetrics`; the master side folds each payload into a
:class:`Ledger`. A payload carries

- ``counts``, ``errors``, ``reasons`` and ``sessions``: the worker's running
  totals (cumulative, so a repeated or final report changes nothing);
- ``error_messages``: a sample message per error kind, for the report
  (optional: a payload without it gives the kind as the message);
- ``histograms``: only the latency samples recorded since the worker's previous
  report, as HDR histograms in their standard compressed encoding
  (``HdrHistogram.encode``), so the master adds them to its own histograms and
  every percentile it reports comes from the merged histograms, exactly;
- ``seq``: the report's number, so a lost report shows as a gap.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from supervisor.loadtest.metrics import (
    LATENCIES,
    MAX_ERROR_KINDS,
    MAX_MESSAGE_CHARS,
    Metrics,
    new_histogram,
    to_micros,
)

PAYLOAD_KEY = "supervisor"
"""The key of our data in Locust's worker report dict."""

PAYLOAD_VERSION = 1
SESSION_FIGURES = ("started", "connected_peak", "connected", "failed", "gave_up",
                   "connecting_end")
MAX_ENCODED_CHARS = 2_000_000
"""A histogram's encoding larger than this is refused (a sane one is a few KiB)."""


class LocalMetrics(Metrics):
    """A worker's metrics: also keeps the samples recorded since the last report."""

    def __init__(self, requested: int, interval_s: float = 1.0) -> None:
        super().__init__(requested, interval_s)
        self._pending_lock = threading.Lock()
        self._pending = {name: new_histogram() for name in LATENCIES}
        self._reported = {name: new_histogram() for name in LATENCIES}
        self.stale_frames_dropped = 0

    def record(self, name: str, seconds: float) -> None:
        super().record(name, seconds)
        with self._pending_lock:
            self._pending[name].record_value(to_micros(seconds))

    def record_many(self, name: str, samples: Iterable[float]) -> None:
        values = list(samples)
        super().record_many(name, values)
        with self._pending_lock:
            histogram = self._pending[name]
            for seconds in values:
                histogram.record_value(to_micros(seconds))

    def take_pending(self) -> dict[str, str]:
        """The samples since the previous call, encoded; empty histograms left out.

        One caller at a time (the worker's report greenlet). The taken set is
        replaced by new histograms, not reset: hdrh's ``reset()`` zeroes each of
        23,552 buckets with a Python call, a new histogram is zeroed in C.
        """
        fresh = {name: new_histogram() for name in LATENCIES}
        with self._pending_lock:
            taken, self._pending = self._pending, fresh
        encoded = {name: histogram.encode().decode("ascii")
                   for name, histogram in taken.items() if histogram.get_total_count()}
        for name, histogram in taken.items():
            self._reported[name].add(histogram)
        return encoded


    def reported_histograms(self) -> dict[str, str]:
        """Every sample handed out by :meth:`take_pending` so far, encoded (non-empty only)."""
        return {name: histogram.encode().decode("ascii")
                for name, histogram in self._reported.items() if histogram.get_total_count()}


def process_usage() -> dict[str, float]:
    """This process's CPU seconds and peak resident memory (MiB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "rss_peak_mib": round(usage.ru_maxrss / divisor, 1)}


def worker_payload(metrics: LocalMetrics, seq: int, *, final: bool,
                   worker_index: int) -> dict[str, Any]:
    """One report's worth of a worker's chat metrics (JSON- and msgpack-safe)."""
    return {"v": PAYLOAD_VERSION, "seq": seq, "final": final, "pid": os.getpid(),
            "worker_index": worker_index, "counts": metrics.counts(),
            "errors": metrics.errors(), "reasons": metrics.reasons(),
            "error_messages": {kind: detail["message"]
                               for kind, detail in metrics.error_details().items()},
            "sessions": metrics.session_figures(),
            "stale_frames_dropped": metrics.stale_frames_dropped,
            "histograms": metrics.take_pending(), "usage": process_usage()}


def decode_histogram(encoded: Any) -> HdrHistogram | None:
    """A histogram from its encoding; None for anything malformed (never raises)."""
    if isinstance(encoded, bytes):
        encoded = encoded.decode("ascii", "replace")
    if not isinstance(encoded, str) or not encoded or len(encoded) > MAX_ENCODED_CHARS:
        return None
    try:
        return HdrHistogram.decode(encoded)
    except Exception:  # noqa: BLE001 - hdrh raises many types on bad input
        return None


def _int_map(value: Any, limit: int = 1000) -> dict[str, int]:
    """A ``{str: int >= 0}`` map from untrusted input, bounded in size."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, number in list(value.items())[:limit]:
        if isinstance(key, str) and isinstance(number, int) and number >= 0:
            out[key[:200]] = number
    return out


def _message_map(value: Any) -> dict[str, str]:
    """A ``{str: str}`` map of sample messages from untrusted input, bounded in size."""
    if not isinstance(value, Mapping):
        return {}
    return {key[:200]: message[:MAX_MESSAGE_CHARS]
            for key, message in list(value.items())[:2 * MAX_ERROR_KINDS]
            if isinstance(key, str) and isinstance(message, str)}


@dataclass(slots=True)
class WorkerBook:
    """What the master knows of one worker: its latest totals and its report trail."""

    index: int = -1
    pid: int | None = None
    seq: int = -1
    reports: int = 0
    gaps: int = 0
    final: bool = False
    lost: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    stale_frames_dropped: int = 0
    usage: dict[str, float] = field(default_factory=dict)
    histogram_counts: Counter[str] = field(default_factory=Counter)

    def describe(self) -> dict[str, Any]:
        """This worker in the report's ``workers`` section."""
        return {"index": self.index, "pid": self.pid, "reports": self.reports,
                "missing_reports": self.gaps, "final_report": self.final, "lost": self.lost,
                "sessions": dict(self.sessions), "counts": dict(self.counts),
                "errors": dict(self.errors), "samples": dict(self.histogram_counts),
                "stale_frames_dropped": self.stale_frames_dropped, **self.usage}


class Ledger:
    """The master's view of every worker; feeds a :class:`~supervisor.loadtest.metrics.Metrics`.

    ``on_histogram(name, histogram)`` receives each decoded delta histogram;
    ``on_delta(kind, key, n, message)`` each growth of a worker's running totals
    (kind is ``"count"``, ``"error"`` or ``"reason"``; ``message`` is the
    error's sample message if the report has one, else ``""``). Not
    thread-safe: Locust calls ``worker_report`` listeners from one greenlet.
    """

    def __init__(self, on_histogram: Callable[[str, HdrHistogram], None],
                 on_delta: Callable[[str, str, int, str], None]) -> None:
        self.workers: dict[str, WorkerBook] = {}
        self._on_histogram = on_histogram
        self._on_delta = on_delta
        self.rejected = 0

    def absorb(self, client_id: str, payload: Any) -> bool:
        """Fold one worker report in; False (and counted) when it is not ours or malformed."""
        if not isinstance(payload, Mapping) or payload.get("v") != PAYLOAD_VERSION:
            self.rejected += 1
            return False
        seq = payload.get("seq")
        if not isinstance(seq, int):
            self.rejected += 1
            return False
        book = self.workers.setdefault(client_id, WorkerBook())
        if seq <= book.seq:
            return True  # a repeat: its totals are not newer, its samples were taken
        book.gaps += max(0, seq - book.seq - 1)
        book.seq = seq
        book.reports += 1
        book.final = bool(payload.get("final"))
        index, pid = payload.get("worker_index"), payload.get("pid")
        book.index = index if isinstance(index, int) else book.index
        book.pid = pid if isinstance(pid, int) else book.pid
        messages = _message_map(payload.get("error_messages"))
        for kind, key, attr in (("count", "counts", "counts"), ("error", "errors", "errors"),
                                ("reason", "reasons", "reasons")):
            new = _int_map(payload.get(key))
            old: dict[str, int] = getattr(book, attr)
            for name, total in new.items():
                if total > old.get(name, 0):
                    message = messages.get(name, "") if kind == "error" else ""
                    self._on_delta(kind, name, total - old.get(name, 0), message)
            setattr(book, attr, {**old, **new})
        sessions = _int_map(payload.get("sessions"))
        book.sessions = {name: sessions.get(name, 0) for name in SESSION_FIGURES}
        stale = payload.get("stale_frames_dropped")
        book.stale_frames_dropped = stale if isinstance(stale, int) else book.stale_frames_dropped
        usage = payload.get("usage")
        if isinstance(usage, Mapping):
            book.usage = {key: float(value) for key, value in usage.items()
                          if key in ("cpu_s", "rss_peak_mib") and isinstance(value, int | float)}
        histograms = payload.get("histograms")
        for name, encoded in (histograms.items() if isinstance(histograms, Mapping) else ()):
            histogram = decode_histogram(encoded) if name in LATENCIES else None
            if histogram is None:
                self.rejected += 1
                continue
            book.histogram_counts[name] += histogram.get_total_count()
            self._on_histogram(name, histogram)
        return True

    def session_sums(self) -> dict[str, int]:
        """Every worker's session figures added up (lost workers hold none connected)."""
        sums = dict.fromkeys(SESSION_FIGURES, 0)
        for book in self.workers.values():
            for name in SESSION_FIGURES:
                if name == "connected" and book.lost:
                    continue
                sums[name] += book.sessions.get(name, 0)
        return sums

    def mark_lost(self, client_id: str) -> None:
        """The worker went away before its final report."""
        book = self.workers.get(client_id)
        if book is not None and not book.final:
            book.lost = True
