"""Load-test metrics: HDR latency histograms, counters and per-interval series.

Every latency is recorded in microseconds into an ``HdrHistogram(1, 3_600_000_000, 3)``
(1 µs to one hour, three significant digits), so percentiles keep their precision
however many samples a run takes, in bounded memory (about 190 KiB per histogram).

Thread safety: one lock guards everything here. Recording happens in session
actors (lifecycle callbacks) and in session drivers; each record is a few
microseconds under the lock, far below what contention would show at the rates
one process can drive. The lock is never held while percentiles are computed:
:meth:`Metrics.roll` swaps the interval histograms out under the lock and reads
them afterwards, so the progress display never slows a session down.
"""

from __future__ import annotations

import functools
import itertools
import operator
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from supervisor._runtime import new_lock

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3

LATENCIES = ("connect", "admission_wait", "handshake", "connect_upgrade", "connect_open",
             "connect_namespace", "resume", "resume_confirmed", "first_token", "token_gap",
             "turn")
"""Every latency the report gives (``latency_ms`` keys). ``connect`` is the whole of a
successful connect; it splits into ``admission_wait`` (queued for a handshake slot: our
limit, ``--max-handshakes-in-flight`` and ``--max-handshakes-per-second``) and
``handshake`` (from admission to ready: the server's time)."""

INTERVAL_LATENCIES = ("turn", "first_token", "connect", "resume")
"""Latencies also tracked per interval (p50 and p99 over time)."""

INTERVAL_COUNTS = ("handshakes", "resumes", "messages_sent", "replies", "turns", "errors")
"""Counters reported per interval."""

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}

MAX_REASONS = 20
"""Distinct reconnect reasons kept; further ones are counted under ``"other"``."""

MAX_ERROR_KINDS = 30
"""Distinct error kinds kept with details; further ones are counted under ``"other"``."""

MAX_MESSAGE_CHARS = 300
"""A sample error message is cut to this length."""


@dataclass(slots=True)
class ErrorDetail:
    """One error kind: how often, a sample message, when first and last seen."""

    count: int
    message: str
    first_seen_s: float
    last_seen_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "message": self.message,
                "first_seen_s": round(self.first_seen_s, 3),
                "last_seen_s": round(self.last_seen_s, 3)}


def new_histogram() -> HdrHistogram:
    """An empty histogram of microseconds, 1 µs to one hour, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def to_micros(seconds: float) -> int:
    """Seconds as whole microseconds within the histogram's range (clamped, not dropped)."""
    return min(HIGHEST_US, max(LOWEST_US, round(seconds * 1_000_000)))


def _ms(micros: float) -> float:
    return round(micros / 1000.0, 3)


# hdrh reads a histogram with a Python call per bucket (23,552 of them here): its mean
# walked every bucket in 0.16 s per histogram, and a report's means cost 2.6 s of a
# 30 s run's CPU at N=1,000 (py-spy). The readers below copy the counts at C speed
# and give the same figures as hdrh's own (tests/test_loadtest.py checks them).


@functools.cache
def _bucket_values(lowest: int, highest: int, digits: int) -> tuple[list[int], list[int]]:
    """Per bucket index: the highest and the median equivalent value (hdrh's rules)."""
    shape = HdrHistogram(lowest, highest, digits)
    tops, middles = [], []
    for index in range(shape.counts_len):
        value = shape.get_value_from_index(index)
        low = shape.get_lowest_equivalent_value(value)
        top = shape.get_highest_equivalent_value(value)
        tops.append(top)
        middles.append(low + (top - low + 1) // 2)
    return tops, middles


def _counts_and_values(histogram: HdrHistogram) -> tuple[list[int], list[int], list[int]]:
    """The bucket counts (copied in one step) and each bucket's highest and median value."""
    if histogram.word_size != 8:  # new_histogram()'s (hdrh's default)
        msg = f"a histogram of {histogram.word_size}-byte counts"
        raise ValueError(msg)
    counts: list[int] = memoryview(histogram.counts).cast("B").cast("Q").tolist()
    tops, middles = _bucket_values(histogram.lowest_trackable_value,
                                   histogram.highest_trackable_value,
                                   histogram.significant_figures)
    return counts, tops, middles


def percentile_values(histogram: HdrHistogram, percentiles: Iterable[float]) -> dict[float, int]:
    """hdrh's ``get_percentile_to_value_dict`` for percentiles above 0, at C speed."""
    counts, tops, _ = _counts_and_values(histogram)
    cumulative = list(itertools.accumulate(counts))
    last = len(cumulative) - 1
    return {pct: tops[min(last, bisect_left(cumulative,
                                            histogram.get_target_count_at_percentile(pct)))]
            for pct in percentiles}


def mean_value(histogram: HdrHistogram) -> float:
    """hdrh's ``get_mean_value`` (each sample at its bucket's median), at C speed."""
    if not histogram.total_count:
        return 0.0
    counts, _, middles = _counts_and_values(histogram)
    return float(sum(map(operator.mul, counts, middles)) / histogram.total_count)


def summarize(histogram: HdrHistogram) -> dict[str, Any]:
    """``count``, ``p50``, ``p90``, ``p99``, ``p99.9``, ``max`` and ``mean`` in milliseconds.

    A histogram without samples gives count 0 and None for every figure, so a
    report never shows a latency of 0 for something that never happened.
    """
    count = histogram.get_total_count()
    if not count:
        return {"count": 0, **dict.fromkeys(PERCENTILES), "max": None, "mean": None}
    values = percentile_values(histogram, PERCENTILES.values())
    summary: dict[str, Any] = {"count": count}
    summary.update({name: _ms(values[pct]) for name, pct in PERCENTILES.items()})
    summary["max"] = _ms(histogram.get_max_value())
    summary["mean"] = _ms(mean_value(histogram))
    return summary


def p50_p99(histogram: HdrHistogram) -> dict[str, float | None]:
    """The median and p99 in milliseconds (None without samples), for per-interval series."""
    if not histogram.get_total_count():
        return {"p50": None, "p99": None}
    values = percentile_values(histogram, (50.0, 99.0))
    return {"p50": _ms(values[50.0]), "p99": _ms(values[99.0])}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the progress display shows; a copy, safe to read in any thread."""

    elapsed_s: float
    requested: int
    started: int
    connected: int
    failed: int
    counts: Mapping[str, int]
    errors: int
    last_interval: Mapping[str, Any] | None
    """The latest finished interval (rates and p50/p99), None before the first."""


@dataclass(slots=True)
class _SessionBook:
    """Which sessions are connected now, which ever were, which failed."""

    connected: set[str] = field(default_factory=set)
    ever_connected: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)
    """Closed early by the load shape (never failures)."""
    started_at: dict[str, float] = field(default_factory=dict)
    """Each session's start, by id, in seconds into the run."""
    cut: set[str] = field(default_factory=set)
    """Still connecting when the run ended, no handshake of theirs failed: not failures
    (queued for admission, or within their connect timeout, behind a slow server)."""
    frozen: bool = False
    """The run ended: connects completing while the sessions close are not counted."""
    handshake_failed: set[str] = field(default_factory=set)
    """Sessions with at least one failed handshake (each had its whole connect timeout)."""
    peak: int = 0
    started: int = 0
    first_started_at: float | None = None
    """Seconds into the run when the first session started."""
    first_connected_at: float | None = None
    first_failure: str | None = None


class Metrics:
    """Counters, histograms and the interval series of one load test; thread-safe."""

    def __init__(self, requested: int, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.requested = requested
        self.interval_s = interval_s
        self._clock = clock
        self._lock = new_lock()
        self.started_at = clock()
        self._histograms = {name: new_histogram() for name in LATENCIES}
        self._current = {name: new_histogram() for name in INTERVAL_LATENCIES}
        self._counts: Counter[str] = Counter()
        self._errors: dict[str, ErrorDetail] = {}
        self._errors_rolled: Counter[str] = Counter()
        self._evidence: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._sessions = _SessionBook()
        self._rolled_counts: Counter[str] = Counter()
        self._rolled_at = self.started_at
        self.intervals: list[dict[str, Any]] = []
        self._last_interval: dict[str, Any] | None = None

    def restart_clock(self) -> None:
        """Start the run's clock now (after the target is up, before the first session)."""
        with self._lock:
            self.started_at = self._rolled_at = self._clock()

    def elapsed(self) -> float:
        return self._clock() - self.started_at

    # --- recording (any thread) -------------------------------------------------

    def record(self, name: str, seconds: float) -> None:
        """One latency sample of ``name`` (one of :data:`LATENCIES`), in seconds."""
        micros = to_micros(seconds)
        with self._lock:
            self._histograms[name].record_value(micros)
            current = self._current.get(name)
            if current is not None:
                current.record_value(micros)

    def record_many(self, name: str, samples: Iterable[float]) -> None:
        """Several samples of one latency under one lock acquisition (token gaps)."""
        micros = [to_micros(seconds) for seconds in samples]
        with self._lock:
            histogram = self._histograms[name]
            for value in micros:
                histogram.record_value(value)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def error(self, kind: str, message: str = "", n: int = 1) -> None:
        """``n`` errors of ``kind`` (a short label), with a sample ``message`` for the
        report, added in one step (a worker's report brings many at once)."""
        if n < 1:
            return
        at = self._clock() - self.started_at
        with self._lock:
            if kind not in self._errors and len(self._errors) >= MAX_ERROR_KINDS:
                kind = "other"
            detail = self._errors.get(kind)
            if detail is None:
                self._errors[kind] = ErrorDetail(n, message[:MAX_MESSAGE_CHARS] or kind, at, at)
            else:
                detail.count += n
                detail.last_seen_s = at
            self._counts["errors"] += n

    def reconnect(self, reason: str, n: int = 1) -> None:
        """``n`` connections were lost (each restarted, or its session fails)."""
        if n < 1:
            return
        key = reason[:80]
        with self._lock:
            if key not in self._reasons and len(self._reasons) >= MAX_REASONS:
                key = "other"
            self._reasons[key] += n

    # --- sessions ---------------------------------------------------------------

    def session_started(self, session_id: str | None = None) -> None:
        at = self._clock() - self.started_at
        with self._lock:
            self._sessions.started += 1
            if self._sessions.first_started_at is None:
                self._sessions.first_started_at = at
            if session_id is not None:
                self._sessions.started_at[session_id] = at

    def session_retired(self, session_id: str) -> None:
        """The load shape closed this session on purpose."""
        with self._lock:
            self._sessions.retired.add(session_id)

    def settle_never_connected(self, *, everyone: bool = False) -> int:
        """At the end: count sessions that never connected as failed, one error each.

        Failed: those with a failed handshake (each handshake has the whole
        connect timeout from its admission, so the server had its chance), or
        every one when ``everyone`` (no session ever connected). Left out: the
        sessions the load shape retired, and those still connecting with no
        handshake failed: queued for admission or inside their connect timeout
        behind a slow server, which makes sessions slower, not dead (``cut``).
        """
        with self._lock:
            book = self._sessions
            waiting = [sid for sid in book.started_at
                       if sid not in book.ever_connected and sid not in book.failed
                       and sid not in book.retired]
            never = [sid for sid in waiting if everyone or sid in book.handshake_failed]
            book.failed.update(never)
            book.cut.update(set(waiting) - set(never))
        for _ in never:
            self.error("session_never_connected", "the session never connected before the "
                       "run ended")
        return len(never)

    def session_handshake_failed(self, session_id: str) -> None:
        """A handshake of this session failed (refused, broken or past its timeout)."""
        with self._lock:
            self._sessions.handshake_failed.add(session_id)

    def freeze_sessions(self) -> None:
        """The run ended: from now on a connect (a handshake finishing while the sessions
        close) no longer counts, neither for the peak nor as a session that connected."""
        with self._lock:
            self._sessions.frozen = True

    def session_connected(self, session_id: str) -> None:
        with self._lock:
            book = self._sessions
            if book.frozen:
                return
            book.connected.add(session_id)
            book.ever_connected.add(session_id)
            book.peak = max(book.peak, len(book.connected))
            if book.first_connected_at is None:
                book.first_connected_at = self._clock() - self.started_at

    def session_disconnected(self, session_id: str) -> None:
        with self._lock:
            self._sessions.connected.discard(session_id)

    def session_failed(self, session_id: str, reason: str | None) -> None:
        with self._lock:
            book = self._sessions
            book.connected.discard(session_id)
            book.failed.add(session_id)
            if book.first_failure is None and reason:
                book.first_failure = reason

    def note_failure_reason(self, reason: str, error: str | None = None) -> None:
        """A handshake or connection failed: evidence for the 'nothing connected' hint."""
        key = f"{error or 'error'}: {reason}"[:MAX_MESSAGE_CHARS]
        with self._lock:
            if self._sessions.first_failure is None:
                self._sessions.first_failure = reason
            if key in self._evidence or len(self._evidence) < MAX_REASONS:
                self._evidence[key] += 1

    def evidence(self) -> dict[str, int]:
        """How often each ``"ErrorType: reason"`` of a failed handshake or connection was seen."""
        with self._lock:
            return dict(self._evidence)

    # --- reading ----------------------------------------------------------------

    @property
    def first_connected_at(self) -> float | None:
        return self._sessions.first_connected_at

    @property
    def first_started_at(self) -> float | None:
        return self._sessions.first_started_at

    @property
    def first_failure(self) -> str | None:
        return self._sessions.first_failure

    def connected_now(self) -> int:
        with self._lock:
            return len(self._sessions.connected)

    def session_figures(self) -> dict[str, int]:
        """``started``, ``connected_peak``, ``connected`` (now), ``failed``, ``gave_up``,
        ``connecting_end``.

        ``failed`` counts the sessions the restart policy gave up on plus the
        started sessions that never connected: read at the end of a run, it is
        every session that did not work. ``gave_up`` counts only the former.
        ``connecting_end`` counts those still connecting at the end with no
        handshake failed (after :meth:`settle_never_connected`).
        """
        with self._lock:
            book = self._sessions
            never = book.started - len(book.ever_connected | book.failed | book.retired
                                       | book.cut)
            return {"started": book.started, "connected_peak": book.peak,
                    "connected": len(book.connected), "failed": len(book.failed) + never,
                    "gave_up": len(book.failed), "connecting_end": len(book.cut)}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def errors(self) -> dict[str, int]:
        """Errors by kind: how many."""
        with self._lock:
            return {kind: detail.count for kind, detail in self._errors.items()}

    def error_details(self) -> dict[str, dict[str, Any]]:
        """Errors by kind: ``count``, sample ``message``, ``first_seen_s``, ``last_seen_s``."""
        with self._lock:
            return {kind: detail.as_dict() for kind, detail in self._errors.items()}

    def reasons(self) -> dict[str, int]:
        with self._lock:
            return dict(self._reasons)

    def latencies(self) -> dict[str, dict[str, Any]]:
        """The whole run's summary of every latency in :data:`LATENCIES`."""
        with self._lock:
            merged = {name: new_histogram() for name in LATENCIES}
            for name, histogram in self._histograms.items():
                merged[name].add(histogram)
        return {name: summarize(histogram) for name, histogram in merged.items()}

    def roll(self) -> dict[str, Any]:
        """Close the current interval; return (and keep) its record."""
        # New histograms, not reset ones: hdrh's reset() zeroes its 23,552 buckets one
        # Python call at a time, a new histogram is zeroed in C.
        fresh = {name: new_histogram() for name in INTERVAL_LATENCIES}
        with self._lock:
            now = self._clock()
            finished, self._current = self._current, fresh
            counts = Counter(self._counts)
            delta = {name: counts[name] - self._rolled_counts[name] for name in INTERVAL_COUNTS}
            self._rolled_counts = counts
            errors = Counter({kind: detail.count for kind, detail in self._errors.items()})
            by_kind = {kind: n - self._errors_rolled[kind] for kind, n in errors.items()
                       if n > self._errors_rolled[kind]}
            self._errors_rolled = errors
            length = max(1e-9, now - self._rolled_at)
            self._rolled_at = now
            active = len(self._sessions.connected)
        # Percentiles outside the lock: recording never waits on them.
        record: dict[str, Any] = {"t": round(now - self.started_at, 3),
                                  "length_s": round(length, 3), "active_sessions": active}
        record.update(delta)
        record["errors_by_kind"] = by_kind
        record["latency_ms"] = {name: p50_p99(histogram) for name, histogram in finished.items()}
        with self._lock:
            self.intervals.append(record)
            self._last_interval = record
        return record

    def snapshot(self) -> Snapshot:
        """The progress display's view; ``failed`` counts only the policy's give-ups here."""
        with self._lock:
            book = self._sessions
            return Snapshot(
                elapsed_s=self._clock() - self.started_at, requested=self.requested,
                started=book.started, connected=len(book.connected), failed=len(book.failed),
                counts=dict(self._counts), errors=self._counts["errors"],
                last_interval=self._last_interval)
