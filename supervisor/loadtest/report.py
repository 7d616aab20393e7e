"""The load-test report: one dict (the JSON), and its CSV and HTML renderings.

The dict's shape is a contract: the HTML report and users' scripts read these
names (``docs/load-testing.md`` describes every field). Add keys freely; do not
rename or remove any.
"""

from __future__ import annotations

import csv
import importlib
import json
import platform
import resource
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from supervisor.loadtest.config import LoadTestConfig
from supervisor.loadtest.metrics import INTERVAL_COUNTS, INTERVAL_LATENCIES, Metrics
from supervisor.loadtest.thresholds import judge

REPORT_VERSION = 1
EXIT_OK, EXIT_THRESHOLD, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
"""Ctrl-C before the run could finish (128 + SIGINT, as shells report it)."""


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the runner knows beyond the metrics."""

    target_url: str
    started_at: str
    """ISO-8601, UTC."""
    duration_s: float
    connected_end: int
    stale_frames_dropped: int
    interrupted: bool
    target_rss_peak_mib: float | None
    stopped_because: str
    """``"duration"``, ``"interrupted"`` or ``"no_session_connected"``."""
    wanted_end: int | None = None
    """Sessions the load shape wanted at the end (None: ``--sessions``)."""
    hint: str | None = None
    """Why no session connected, from the evidence (see ``verdict.no_connect_hint``)."""


def operations(counts: Mapping[str, Any], sessions: Mapping[str, Any]) -> int:
    """Operations attempted: sessions started, turns, resumes and reconnects.

    A turn or resume counts when it completed or failed; those cut short by the
    end of the run (or Ctrl-C) are neither. A reconnect is a restart the
    supervisor made after a connection was lost.
    """
    return int(sessions.get("started", 0) + counts.get("turns", 0)
               + counts.get("turns_failed", 0) + counts.get("resumes", 0)
               + counts.get("resumes_failed", 0) + counts.get("restarts", 0))


def error_rate(failures: int, attempted: int) -> float:
    """Failed operations over attempted ones (0 when nothing was attempted).

    Each failure is counted once, as one error of one kind (``docs/load-testing.md``
    lists them): a failed session, turn or resume, or a connection lost or
    handshake failed outside any of those.
    """
    return round(min(1.0, failures / attempted), 6) if attempted else 0.0


def _ratio(part: float, whole: float, empty: float) -> float:
    return round(part / whole, 6) if whole else empty


def _resources(config: LoadTestConfig, target_rss: float | None) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    monkey = sys.modules.get("gevent.monkey")
    return {"rss_peak_mib": round(usage.ru_maxrss / divisor, 1), "runtime": config.runtime,
            "python": platform.python_version(), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "target_rss_peak_mib": target_rss,
            "gevent_patched": monkey is not None and bool(monkey.is_module_patched("socket"))}


def build_report(config: LoadTestConfig, metrics: Metrics, facts: RunFacts) -> dict[str, Any]:
    """The report dict (see the module docstring)."""
    figures = metrics.session_figures()
    counts = metrics.counts()
    sessions: dict[str, Any] = {"requested": config.sessions, "started": figures["started"],
                "connected_peak": figures["connected_peak"],
                "connected_end": facts.connected_end, "failed": figures["failed"],
                "connecting_end": figures["connecting_end"]}
    names = ("handshakes", "connects", "resumes", "resumes_failed", "threads_not_found",
             "messages_sent", "replies", "turns", "turns_failed", "turns_cancelled", "tokens",
             "restarts", "connections_lost")
    report_counts: dict[str, Any] = {name: counts.get(name, 0) for name in names}
    report_counts["reconnects_by_reason"] = metrics.reasons()
    report_counts["stale_frames_dropped"] = facts.stale_frames_dropped
    report_counts["errors"] = metrics.errors()
    duration = max(facts.duration_s, 1e-9)
    rates = {f"{rate}_per_s": round(counts.get(name, 0) / duration, 3)
             for rate, name in (("turns", "turns"), ("messages", "messages_sent"),
                                ("resumes", "resumes"), ("handshakes", "handshakes"))}
    details = metrics.error_details()
    failures = sum(detail["count"] for detail in details.values())
    attempted = operations(report_counts, sessions)
    rate = error_rate(failures, attempted)
    wanted_end = facts.wanted_end if facts.wanted_end is not None else config.sessions
    sessions["failed_ratio"] = _ratio(sessions["failed"], sessions["started"], 0.0)
    sessions["connected_ratio"] = _ratio(facts.connected_end, wanted_end, 1.0)
    sessions["peak_ratio"] = _ratio(figures["connected_peak"], config.sessions, 1.0)
    sessions["wanted_end"] = wanted_end
    latencies = metrics.latencies()
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "settings": config.settings(),
        "target": {"url": facts.target_url, "protocol": config.protocol,
                   "embedded": config.embedded},
        "started_at": facts.started_at,
        "duration_s": round(facts.duration_s, 3),
        "sessions": sessions,
        "counts": report_counts,
        "rates": rates,
        "latency_ms": latencies,
        "saturation": saturation(config, latencies, figures["connecting_end"]),
        "errors": {"ratio": rate, "count": failures, "operations": attempted,
                   "by_kind": details},
        "intervals": list(metrics.intervals),
        "resources": _resources(config, facts.target_rss_peak_mib),
    }
    report["thresholds"] = judge(config.thresholds, report)
    connected = facts.stopped_because != "no_session_connected"
    report["exit"] = {"error_rate": rate, "fail_on_error_rate": config.fail_on_error_rate,
                      "passed": connected and all(item["ok"] for item in report["thresholds"]),
                      "status": exit_status(facts.stopped_because, report["thresholds"]),
                      "stopped_because": facts.stopped_because,
                      "interrupted": facts.interrupted, "hint": facts.hint}
    return report


SATURATION_FIGURES = ("p50", "p90", "p99", "max")


def saturation(config: LoadTestConfig, latencies: Mapping[str, Mapping[str, Any]],
               connecting_end: int) -> dict[str, Any]:
    """How saturated the server was: its handshake and first-token latency, and how long
    handshakes queued for admission (our limits) before the server saw them.

    A slow server makes sessions slower, not failed: ``connecting_end`` counts the
    sessions still queued or connecting at the end with no handshake failed.
    """
    def pick(name: str) -> dict[str, Any]:
        figures = latencies.get(name, {})
        return {key: figures.get(key) for key in ("count", *SATURATION_FIGURES)}

    in_flight, per_second = config.admission_limits
    return {"handshake_ms": pick("handshake"), "first_token_ms": pick("first_token"),
            "admission_wait_ms": pick("admission_wait"),
            "max_handshakes_in_flight": in_flight, "max_handshakes_per_second": per_second,
            "connecting_end": connecting_end}


def exit_status(stopped_because: str, thresholds: list[dict[str, Any]]) -> int:
    """3 when no session ever connected, 1 when a threshold failed, else 0."""
    if stopped_because == "no_session_connected":
        return EXIT_UNREACHABLE
    return EXIT_OK if all(item["ok"] for item in thresholds) else EXIT_THRESHOLD


def csv_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The interval series flattened: a header and one row per interval.

    After the counts and latencies, one ``errors.KIND`` column per error kind
    of the run, so errors by kind can be plotted over time.
    """
    header = ["t", "length_s", "active_sessions", *INTERVAL_COUNTS]
    for name in INTERVAL_LATENCIES:
        header.extend((f"{name}_p50_ms", f"{name}_p99_ms"))
    kinds = sorted(report.get("errors", {}).get("by_kind", {}))
    header.extend(f"errors.{kind}" for kind in kinds)
    rows = []
    for interval in report["intervals"]:
        row = [interval.get(column) for column in header[:3 + len(INTERVAL_COUNTS)]]
        for name in INTERVAL_LATENCIES:
            figures = interval["latency_ms"].get(name, {})
            row.extend((figures.get("p50"), figures.get("p99")))
        by_kind = interval.get("errors_by_kind", {})
        row.extend(by_kind.get(kind, 0) for kind in kinds)
        rows.append(row)
    return header, rows


def write_json(report: Mapping[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def write_csv(report: Mapping[str, Any], path: str) -> None:
    header, rows = csv_rows(report)
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(["" if value is None else value for value in row] for row in rows)


def html_renderer() -> Callable[[dict[str, Any]], str]:
    """``supervisor.loadtest.html.render_html``, imported only when --html asks for it.

    Imported by name, at run time: the HTML report is a separate module (it
    builds a self-contained page from exactly this module's report dict), and
    a run without ``--html`` should not pay for importing it.
    """
    module = importlib.import_module("supervisor.loadtest.html")
    return cast("Callable[[dict[str, Any]], str]", module.render_html)


def write_html(report: dict[str, Any], path: str) -> None:
    Path(path).write_text(html_renderer()(report), encoding="utf-8")


def write_reports(config: LoadTestConfig, report: dict[str, Any]) -> list[str]:
    """Write every report asked for; return one message per failure (never raises OSError)."""
    problems = []
    for path, writer in ((config.json, write_json), (config.csv, write_csv),
                         (config.html, write_html)):
        if path is None:
            continue
        try:
            writer(report, path)
        except (OSError, ImportError, AttributeError) as exc:
            problems.append(f"could not write {path}: {exc}")
    return problems
