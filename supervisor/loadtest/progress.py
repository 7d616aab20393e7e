"""What the load test prints: live progress while it runs, a summary table at the end.

Rendering never blocks the run: the live view is redrawn by rich's own refresh
thread (about 4 times a second) from a :class:`~supervisor.loadtest.metrics.Snapshot`,
a copy taken under the metrics lock in microseconds; percentiles come from the
last finished interval, computed once per interval, never per redraw.

On a terminal the view updates in place; when stdout is not a terminal (CI
logs, pipes) one plain line is printed every few seconds instead, and
``--quiet`` prints neither.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from supervisor.loadtest.config import LoadTestConfig
from supervisor.loadtest.metrics import LATENCIES, Metrics, Snapshot

PLAIN_EVERY_S = 5.0
LIVE_REFRESH_PER_S = 4


def fmt_ms(value: float | None) -> str:
    """Milliseconds with about three significant digits; ``-`` for no samples."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _rate(interval: Mapping[str, Any] | None, name: str) -> str:
    if not interval:
        return "-"
    return f"{interval.get(name, 0) / max(interval.get('length_s', 1.0), 1e-9):.1f}/s"


def _pair(interval: Mapping[str, Any] | None, name: str) -> str:
    figures = (interval or {}).get("latency_ms", {}).get(name, {})
    return f"p50 {fmt_ms(figures.get('p50'))} ms  p99 {fmt_ms(figures.get('p99'))} ms"


def plain_line(snap: Snapshot, duration: float) -> str:
    """One progress line for logs."""
    last = snap.last_interval
    return (f"[{snap.elapsed_s:6.1f}s/{duration:g}s] sessions {snap.connected}/{snap.requested}"
            f" connected ({snap.started} started, {snap.failed} failed) | handshakes "
            f"{_rate(last, 'handshakes')} turns {_rate(last, 'turns')} resumes "
            f"{_rate(last, 'resumes')} | errors {snap.errors} | turn {_pair(last, 'turn')} | "
            f"first token {_pair(last, 'first_token')}")


class Progress:
    """Live progress (terminal), plain lines (not a terminal) or nothing (quiet)."""

    def __init__(self, metrics: Metrics, config: LoadTestConfig, stream: IO[str] | None = None,
                 *, live: bool | None = None) -> None:
        self._metrics = metrics
        self._config = config
        self._stream = stream or sys.stdout
        terminal = self._stream.isatty()
        self.mode = "off" if config.quiet else ("live" if (terminal if live is None else live)
                                                 else "plain")
        self.console = Console(file=self._stream, width=None if terminal else 110,
                               highlight=False)
        self._live: Live | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.mode == "live":
            self._live = Live(get_renderable=self._render, console=self.console,
                              refresh_per_second=LIVE_REFRESH_PER_S, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        elif self.mode == "plain":
            self._thread = threading.Thread(target=self._plain, daemon=True,
                                            name="loadtest-progress")
            self._thread.start()

    def note(self, message: str) -> None:
        """A one-off line (above the live view on a terminal)."""
        if self.mode == "off":
            return
        if self._live is not None:
            self._live.console.print(message)
        else:
            print(message, file=self._stream, flush=True)

    def stop(self) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _plain(self) -> None:
        duration = self._config.duration
        # Bounded: one line per period until stopped, and never past the run's
        # duration by more than a few periods (the runner stops it well before).
        for _ in range(int(duration / PLAIN_EVERY_S) + 10):
            if self._stop.wait(PLAIN_EVERY_S):
                return
            print(plain_line(self._metrics.snapshot(), duration), file=self._stream, flush=True)

    def _render(self) -> Table:
        snap = self._metrics.snapshot()
        last = snap.last_interval
        table = Table(title=f"supervisor loadtest  {snap.elapsed_s:.1f}s / "
                            f"{self._config.duration:g}s", show_header=False, box=None,
                      title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row("sessions", f"{snap.connected} / {snap.requested} connected  "
                                  f"({snap.started} started, {snap.failed} failed)")
        table.add_row("rates", f"handshakes {_rate(last, 'handshakes')}   turns "
                               f"{_rate(last, 'turns')}   resumes {_rate(last, 'resumes')}")
        table.add_row("errors", str(snap.errors))
        table.add_row("turn", _pair(last, "turn"))
        table.add_row("first token", _pair(last, "first_token"))
        return table


def fmt_value(value: float | None, unit: str) -> str:
    """A threshold's measured figure: milliseconds, or a ratio as a percentage."""
    if value is None:
        return "no samples"
    return f"{fmt_ms(value)} ms" if unit == "ms" else f"{value:.2%}"


def fmt_threshold(item: Mapping[str, Any]) -> str:
    """``turn.p99<2s (measured 2,345 ms)``."""
    return f"{item['expression']} (measured {fmt_value(item['value'], item.get('unit', ''))})"


def _thresholds(report: Mapping[str, Any]) -> Table:
    verdict = report["exit"]
    passed = verdict["passed"]
    title = ("thresholds: " + ("PASSED" if passed else "FAILED")) if verdict["status"] != 3 else (
        "no session connected: NO VERDICT")
    table = Table(title=title, title_justify="left", title_style="bold green" if passed
                  else "bold red")
    table.add_column("")
    table.add_column("threshold", style="bold")
    table.add_column("measured", justify="right")
    for item in report["thresholds"]:
        mark = Text("✓", style="green") if item["ok"] else Text("✗", style="bold red")
        table.add_row(mark, item["expression"], fmt_value(item["value"], item.get("unit", "")))
    return table


def _error_details(report: Mapping[str, Any]) -> Table | Text:
    errors = report["errors"]
    if not errors["by_kind"]:
        return Text(f"errors: none in {errors['operations']} operations")
    table = Table(title=f"errors: {errors['count']} in {errors['operations']} operations "
                        f"({errors['ratio']:.2%})", title_justify="left")
    for column, justify in (("kind", "left"), ("count", "right"), ("first", "right"),
                            ("last", "right"), ("sample message", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    ordered = sorted(errors["by_kind"].items(), key=lambda item: -item[1]["count"])
    for kind, detail in ordered:
        table.add_row(kind, str(detail["count"]), f"{detail['first_seen_s']:.1f}s",
                      f"{detail['last_seen_s']:.1f}s", detail["message"])
    return table


def _counted(values: Mapping[str, int]) -> str:
    if not values:
        return "none"
    ordered = sorted(values.items(), key=lambda item: -item[1])
    return ", ".join(f"{name}: {count}" for name, count in ordered)


def saturation_line(figures: Mapping[str, Any]) -> str:
    """The server's latency and our admission queue, in one line (see report.saturation)."""
    def pair(name: str) -> str:
        got = figures.get(name) or {}
        return f"p50 {fmt_ms(got.get('p50'))} / p99 {fmt_ms(got.get('p99'))} ms"

    line = (f"handshake {pair('handshake_ms')}, first token {pair('first_token_ms')}; "
            f"admission wait {pair('admission_wait_ms')} (limits "
            f"{figures.get('max_handshakes_in_flight')} in flight, "
            f"{figures.get('max_handshakes_per_second'):g}/s)")
    waiting = figures.get("connecting_end") or 0
    if waiting:
        line += f"; {waiting} sessions still connecting at the end (slowed, not failed)"
    return line


def summary(report: Mapping[str, Any]) -> Group:
    """The end-of-run tables: sessions and counts, then latency percentiles."""
    target, sessions, counts = report["target"], report["sessions"], report["counts"]
    rates, resources = report["rates"], report["resources"]
    where = f"{target['url']} ({'embedded target' if target['embedded'] else 'target'})"
    table = Table(title=f"{target['protocol']} load test of {where}: {report['duration_s']:.1f}s",
                  show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("sessions", f"{sessions['requested']} requested, {sessions['started']} "
                              f"started, peak {sessions['connected_peak']} connected, "
                              f"{sessions['connected_end']} at the end, "
                              f"{sessions['failed']} failed")
    if "saturation" in report:
        table.add_row("server", saturation_line(report["saturation"]))
    table.add_row("turns", f"{counts['turns']} ({rates['turns_per_s']:.1f}/s), "
                           f"{counts['turns_failed']} failed, {counts['turns_cancelled']} cut by "
                           f"the end")
    table.add_row("messages", f"{counts['messages_sent']} sent "
                              f"({rates['messages_per_s']:.1f}/s), {counts['replies']} replies")
    table.add_row("handshakes", f"{counts['handshakes']} ({rates['handshakes_per_s']:.1f}/s), "
                                f"{counts['restarts']} restarts")
    table.add_row("resumes", f"{counts['resumes']} ({rates['resumes_per_s']:.1f}/s), "
                             f"{counts['resumes_failed']} failed, "
                             f"{counts['threads_not_found']} to threads not found yet")
    table.add_row("reconnects", _counted(counts["reconnects_by_reason"]))
    table.add_row("stale frames", f"{counts['stale_frames_dropped']} dropped")
    table.add_row("errors", _counted(counts["errors"]))
    errors = report["errors"]
    table.add_row("error rate", f"{errors['ratio']:.2%} ({errors['count']} failed of "
                                f"{errors['operations']} operations)")
    target_rss = resources.get("target_rss_peak_mib")
    table.add_row("resources", f"RSS peak {resources['rss_peak_mib']} MiB"
                               + (f" (target {target_rss} MiB)" if target_rss else "")
                               + f", CPU {resources['cpu_s']} s, {resources['runtime']}, "
                                 f"Python {resources['python']}")
    latency = Table(title="latency (ms)", title_justify="left")
    latency.add_column("metric", style="bold")
    for column in ("count", "p50", "p90", "p99", "p99.9", "max", "mean"):
        latency.add_column(column, justify="right")
    for name in LATENCIES:
        figures = report["latency_ms"][name]
        latency.add_row(name, str(figures["count"]),
                        *(fmt_ms(figures[key]) for key in ("p50", "p90", "p99", "p99.9", "max",
                                                           "mean")))
    return Group(table, Text(""), latency, Text(""), _error_details(report), Text(""),
                 _thresholds(report))
