"""The load test's HTML report: one self-contained page built from the JSON report dict.

:func:`render_html` takes the dict that ``supervisor/loadtest/report.py`` builds
(the JSON report) and returns a complete HTML document with inline CSS and
inline SVG plots: no script, font, stylesheet or image is loaded from anywhere,
so the file opens offline and can be mailed or attached to a CI run.

The renderer is defensive: any key may be missing or null (an older report, an
interrupted run, a metric without samples); such a figure shows as "—" and
nothing raises. Every string that came from the report (settings, error kinds,
reconnect reasons, the target URL) is HTML-escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any, TypeVar

from supervisor.loadtest._svg import Series, legend, line_chart

__all__ = ["render_html"]

T = TypeVar("T")

DASH = "—"
LATENCY_NAMES = ("connect", "connect_upgrade", "connect_open", "connect_namespace", "resume",
                 "resume_confirmed", "first_token", "token_gap", "turn")
LATENCY_COLUMNS = ("count", "p50", "p90", "p99", "p99.9", "max", "mean")
SESSION_ROWS = (("requested", "requested"), ("started", "started"),
                ("connected_peak", "connected at peak"), ("connected_end", "connected at end"),
                ("failed", "failed"))
COUNT_ROWS = (("handshakes", "handshakes"), ("connects", "connects"), ("resumes", "resumes"),
              ("threads_not_found", "threads not found"), ("messages_sent", "messages sent"),
              ("replies", "replies"), ("turns", "turns"), ("turns_failed", "turns failed"),
              ("turns_cancelled", "turns cancelled"), ("tokens", "tokens"),
              ("restarts", "restarts"), ("stale_frames_dropped", "stale frames dropped"))
ALWAYS_SHOWN = frozenset((  # the rows a table keeps (as "—") when the report lacks them
    "requested", "connected_peak", "connected_end", "failed", "handshakes", "resumes",
    "messages_sent", "replies", "turns", "restarts", "stale_frames_dropped"))
RATE_ROWS = (("turns_per_s", "turns / s"), ("messages_per_s", "messages / s"),
             ("resumes_per_s", "resumes / s"), ("handshakes_per_s", "handshakes / s"))
# Okabe-Ito-like colours: distinguishable with common colour-vision deficiencies.
BLUE, ORANGE, GREEN, PURPLE, RED, TEAL, GREY = (
    "#0b6bcb", "#e07b00", "#1a9850", "#8e44ad", "#d62728", "#0fa3b1", "#7f8790")
DASHED = "6 4"

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f3f5f8;color:#1d232b;font:15px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 40px}
header{display:flex;justify-content:space-between;align-items:flex-start;gap:24px;
margin-bottom:20px}
h1{font-size:26px;margin:0 0 6px;font-weight:650}h1 code{font-size:22px;font-weight:600}
h2{font-size:17px;margin:0 0 10px;font-weight:620}
h2 small{font-weight:400;color:#5d6670;font-size:13px;margin-left:6px}
.sub{margin:2px 0;color:#434b55}.sub code{font-size:14px;color:#1d232b}
code{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;
font-size:13px;overflow-wrap:anywhere}
.verdict{text-align:right;white-space:nowrap}
.badge{display:inline-block;padding:7px 18px;border-radius:999px;font-weight:700;
letter-spacing:.06em;font-size:16px;color:#fff;background:#7f8790}
.badge.pass{background:#1a8a47}.badge.fail{background:#c62828}
.verdict p{margin:6px 0 0;color:#434b55;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin-bottom:18px}
.card,.panel{background:#fff;border:1px solid #dde2e8;border-radius:10px}
.card{padding:12px 14px}
.card b{display:block;font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}
.card span{color:#5d6670;font-size:13px}
.panel{padding:16px 18px;margin-bottom:18px}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:0 0 6px;font-size:13px;color:#2f3740}
.key{display:inline-flex;align-items:center;gap:6px}
svg.plot{display:block;width:100%;height:auto;font-family:inherit}
.hover rect:hover{fill-opacity:.07}
.grid3{display:grid;grid-template-columns:repeat(3,1fr);gap:18px}
.grid3>div>.panel{margin-bottom:18px}
.split{display:grid;grid-template-columns:1fr 1fr;gap:0 40px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{padding:5px 8px;border-bottom:1px solid #edf0f3;text-align:left;vertical-align:top}
thead th{color:#5d6670;font-weight:600;font-size:12.5px;border-bottom:1px solid #cfd6de}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:last-child td{border-bottom:none}
.muted{color:#7a838d}
td.ok{color:#1a8a47;font-weight:700}td.bad{color:#c62828;font-weight:700}
td.msg{overflow-wrap:anywhere;color:#434b55;font-size:13px}
footer{color:#6b737d;font-size:12.5px;text-align:center;margin-top:8px}
@media (max-width:900px){.cards{grid-template-columns:repeat(3,1fr)}
.grid3,.split{grid-template-columns:1fr}header{flex-direction:column}}
"""


# --- safe access and formatting ---------------------------------------------------------


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> str:
    number = _number(value)
    if number is None:
        return DASH if value is None else escape(str(value))
    return f"{number:,.0f}" if number == int(number) else f"{number:,.2f}"


def _rate(value: Any) -> str:
    number = _number(value)
    if number is None:
        return DASH
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:,.1f}"


def _ms(value: Any) -> str:
    """Milliseconds to three significant figures (0.412, 4.12, 41.2, 412, 4,120)."""
    number = _number(value)
    if number is None:
        return DASH
    size = abs(number)
    if size >= 100:
        return f"{number:,.0f}"
    return f"{number:.1f}" if size >= 10 else f"{number:.2f}" if size >= 1 else f"{number:.3f}"


def _percent(value: Any) -> str:
    number = _number(value)
    return DASH if number is None else f"{number * 100:.2f} %"


def _value(value: Any) -> str:
    """A setting's value as escaped text: "—" for None, numbers as JSON writes them."""
    if value is None or value in ("", [], {}):
        return DASH
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(_value(v) for v in value)
    try:
        return escape(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return escape(repr(value))


def _either(flag: Any, yes: T, no: T, unknown: T) -> T:
    """``yes`` for True, ``no`` for False, ``unknown`` for anything else (1 is not True)."""
    return yes if flag is True else no if flag is False else unknown


def _when(value: Any) -> str:
    """An ISO-8601 time as ``2025-01-02 10:11:12 UTC``; anything else escaped as given."""
    if not isinstance(value, str) or not value:
        return DASH
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return escape(value)
    offset = moment.utcoffset()
    zone = "" if offset is None else " UTC" if not offset else moment.strftime(" UTC%z")
    return escape(moment.strftime("%Y-%m-%d %H:%M:%S") + zone)


def _unit(value: Any, unit: str, digits: int = 1) -> str:
    number = _number(value)
    return DASH if number is None else f"{number:,.{digits}f} {unit}"


def _seconds(value: Any) -> str:
    return _unit(value, "s")


# --- building blocks ---------------------------------------------------------------------


def _table(rows: Iterable[tuple[str, str]], header: tuple[str, str] | None = None) -> str:
    """A two-column table; labels are escaped here, values must already be escaped."""
    head = ""
    if header:
        head = f'<thead><tr><th>{escape(header[0])}</th><th class="n">{escape(header[1])}</th>'
        head += "</tr></thead>"
    body = "".join(f'<tr><td>{escape(label)}</td><td class="n">{value}</td></tr>'
                   for label, value in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _split(rows: Sequence[str]) -> str:
    """Table rows (``<tr>`` markup) as two tables side by side, the first half on the left."""
    half = (len(rows) + 1) // 2
    tables = (f"<table><tbody>{''.join(part)}</tbody></table>" for part in (rows[:half],
                                                                           rows[half:]))
    return f'<div class="split">{"".join(tables)}</div>'


def _panel(title: str, body: str, note: str = "") -> str:
    small = f"<small>{escape(note)}</small>" if note else ""
    anchor = escape(title.lower().replace(" ", "-"))
    return (f'<section class="panel" id="{anchor}"><h2>{escape(title)}{small}</h2>{body}'
            "</section>")


def _tally(counts: Any, what: str) -> str:
    """Kinds and how often, most frequent first; "none" when there were none."""
    items = [(str(kind), n) for kind, n in _dict(counts).items()]
    items.sort(key=lambda item: (-(_number(item[1]) or 0.0), item[0]))
    if not items:
        return f'<p class="muted">No {escape(what)}.</p>'
    return _table(((kind, _count(n)) for kind, n in items), (what, "count"))


def _thresholds(report: Mapping[str, Any]) -> str:
    """Each threshold with its measured figure and a check or a cross."""
    raw = report.get("thresholds")
    items = [item for item in raw if isinstance(item, Mapping)] if isinstance(raw, list) else []
    if not items:
        return ""
    rows = []
    for item in items:
        ok = item.get("ok")
        mark = _either(ok, ('<td class="ok">✓</td>'), ('<td class="bad">✗</td>'),
                       f"<td>{DASH}</td>")
        value = _number(item.get("value"))
        shown = ("no samples" if value is None else f"{_ms(value)} ms"
                 if item.get("unit") == "ms" else _percent(value))
        rows.append(f'<tr>{mark}<td><code>{escape(str(item.get("expression", "")))}</code></td>'
                    f'<td class="n">{shown}</td></tr>')
    table = ('<table class="thresholds"><thead><tr><th></th><th>threshold</th>'
             f'<th class="n">measured</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return _panel("Thresholds", table, "each must hold for the run to pass")


def _error_details(report: Mapping[str, Any], counts: Mapping[str, Any]) -> str:
    """Per error kind: count, first and last seen, a sample message (older reports: counts)."""
    errors = _dict(report.get("errors"))
    details = _dict(errors.get("by_kind"))
    if not details:
        return _tally(counts.get("errors"), "error kind")
    ordered = sorted(details.items(), key=lambda item: -(_number(_dict(item[1]).get("count"))
                                                          or 0.0))
    rows = "".join(
        f'<tr><td><code>{escape(str(kind))}</code></td>'
        f'<td class="n">{_count(_dict(detail).get("count"))}</td>'
        f'<td class="n">{_seconds(_dict(detail).get("first_seen_s"))}</td>'
        f'<td class="n">{_seconds(_dict(detail).get("last_seen_s"))}</td>'
        f'<td class="msg">{escape(str(_dict(detail).get("message", "")))}</td></tr>'
        for kind, detail in ordered)
    return ('<table><thead><tr><th>kind</th><th class="n">count</th><th class="n">first</th>'
            '<th class="n">last</th><th>sample message</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _latency_table(latency: Mapping[str, Any]) -> str:
    names = [*LATENCY_NAMES, *sorted(k for k in latency if k not in LATENCY_NAMES)]
    head = "".join(f'<th class="n">{escape(c)}</th>' for c in LATENCY_COLUMNS)
    rows = []
    for name in names:
        figures = _dict(latency.get(name))
        cells = [_count(figures.get("count"))]
        cells += [_ms(figures.get(column)) for column in LATENCY_COLUMNS[1:]]
        tds = "".join(f'<td class="n">{cell}</td>' for cell in cells)
        rows.append(f"<tr><td><code>{escape(name)}</code></td>{tds}</tr>")
    return (f"<table><thead><tr><th>metric</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


# --- the plots ----------------------------------------------------------------------------


def _interval_length(interval: Mapping[str, Any], previous_t: float) -> float:
    length = _number(interval.get("length_s"))
    if length is not None and length > 0:
        return length
    t = _number(interval.get("t"))
    return t - previous_t if t is not None and t > previous_t else 1.0


def _series_data(intervals: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """Each interval's time (its end, seconds since the start) and length in seconds."""
    xs: list[float] = []
    lengths: list[float] = []
    previous = 0.0
    for interval in intervals:
        length = _interval_length(interval, previous)
        t = _number(interval.get("t"))
        t = previous + length if t is None else t
        xs.append(t)
        lengths.append(length)
        previous = t
    return xs, lengths


def _plot(title: str, note: str, name: str, xs: list[float], series: list[Series],
          unit: str, log: bool = False) -> str:
    chart = line_chart(name, xs, series, unit=unit, log=log, label=title)
    return _panel(title, legend(series) + chart, note)


def _plots(report: Mapping[str, Any]) -> str:
    raw = report.get("intervals")
    intervals = [i for i in raw if isinstance(i, Mapping)] if isinstance(raw, list) else []
    xs, lengths = _series_data(intervals)

    def column(key: str, per_second: bool = False) -> list[float | None]:
        values = [_number(i.get(key)) for i in intervals]
        if not per_second:
            return values
        return [None if v is None else v / n for v, n in zip(values, lengths, strict=True)]

    def has(key: str) -> bool:
        return any(key in i for i in intervals) or not intervals

    sessions = [Series("active sessions", column("active_sessions"), BLUE, area=True)]
    requested = _number(_dict(report.get("sessions")).get("requested"))
    if requested is not None:
        sessions.append(Series("requested", [requested] * len(xs), GREY, DASHED))
    # Messages, turns and replies are nearly equal in a healthy run: dashes of
    # different lengths, drawn over one another, keep all three visible.
    throughput = [Series(label, column(key, per_second=True), colour, dash)
                  for key, label, colour, dash in (
                      ("turns", "turns / s", BLUE, "8 5"), ("replies", "replies / s", TEAL, "2 4"),
                      ("messages_sent", "messages / s", ORANGE, ""),
                      ("resumes", "resumes / s", PURPLE, ""),
                      ("handshakes", "handshakes / s", GREEN, ""),
                      ("errors", "errors / s", RED, "")) if has(key)]
    latency = []
    for metric, label, colour in (("turn", "turn", BLUE), ("first_token", "first token", ORANGE),
                                  ("connect", "connect", GREEN), ("resume", "resume", PURPLE)):
        for pct in ("p50", "p99"):
            values = [_number(_dict(_dict(i.get("latency_ms")).get(metric)).get(pct))
                      for i in intervals]
            latency.append(Series(f"{label} {pct}", values, colour, DASHED if pct == "p99" else ""))
    return "".join((
        _plot("Active sessions", "connected at the end of each interval", "sessions", xs,
              sessions, ""),
        _plot("Throughput", "per second, from each interval's counts", "throughput", xs,
              throughput, ""),
        _plot("Latency over time", "ms, p50 solid, p99 dashed, log scale", "latency", xs,
              latency, "ms", log=True),
    ))


# --- the page -----------------------------------------------------------------------------


def _header(report: Mapping[str, Any]) -> str:
    target, outcome = _dict(report.get("target")), _dict(report.get("exit"))
    url = target.get("url")
    url_text = escape(str(url)) if url else DASH
    embedded = target.get("embedded")
    where = _either(embedded, "embedded target", "external target", "")
    facts = [escape(str(target.get("protocol") or DASH)), *([where] if where else [])]
    requested = _dict(report.get("sessions")).get("requested")
    meta = (f"Started {_when(report.get('started_at'))} · ran {_seconds(report.get('duration_s'))}"
            f" · {_count(requested)} sessions requested")
    passed = outcome.get("passed")
    badge = _either(passed, ("pass", "PASSED"), ("fail", "FAILED"), ("", "NO VERDICT"))
    limit = outcome.get("fail_on_error_rate")
    limit_text = "no limit set" if limit is None else f"limit {_percent(limit)}"
    detail = f"error rate {_percent(outcome.get('error_rate'))} · {limit_text}"
    if outcome.get("interrupted"):
        detail += " · interrupted"
    if outcome.get("stopped_because") == "no_session_connected":
        badge = ("fail", "NO SESSION CONNECTED")
        detail = escape(str(outcome.get("hint") or "no session ever connected"))
    return (f'<header><div><h1>Load test: <code>{url_text}</code></h1>'
            f'<p class="sub">{" · ".join(facts)}</p><p class="sub">{meta}</p></div>'
            f'<div class="verdict"><span class="badge {badge[0]}">{badge[1]}</span>'
            f"<p>{detail}</p></div></header>")


def _cards(report: Mapping[str, Any]) -> str:
    sessions, rates = _dict(report.get("sessions")), _dict(report.get("rates"))
    latency = _dict(report.get("latency_ms"))
    turn, first = _dict(latency.get("turn")), _dict(latency.get("first_token"))
    cards = (
        (f"{_count(sessions.get('connected_peak'))} / {_count(sessions.get('requested'))}",
         "sessions peak / requested"),
        (_rate(rates.get("turns_per_s")), "turns per second"),
        (_rate(rates.get("messages_per_s")), "messages per second"),
        (f"{_ms(turn.get('p50'))} / {_ms(turn.get('p99'))}", "turn p50 / p99 ms"),
        (_ms(first.get("p50")), "first token p50 ms"),
        (_percent(_dict(report.get("exit")).get("error_rate")), "error rate"),
    )
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{value}</b><span>{escape(label)}</span></div>'
        for value, label in cards) + "</div>"


def _known_then_rest(values: Mapping[str, Any], known: Sequence[tuple[str, str]],
                     always: frozenset[str] = ALWAYS_SHOWN) -> list[tuple[str, Any]]:
    """Known keys in order (when present or always shown), then any other scalar keys."""
    names = {key for key, _ in known}
    rows = [(label, values.get(key)) for key, label in known
            if key in values or key in always]
    rows += [(key.replace("_", " "), value) for key, value in values.items()
             if key not in names and not isinstance(value, Mapping | list)]
    return rows


def _summary(report: Mapping[str, Any]) -> str:
    sessions, counts = _dict(report.get("sessions")), _dict(report.get("counts"))
    errors = _dict(counts.get("errors"))
    count_rows = [(label, _count(value)) for label, value
                  in _known_then_rest(counts, COUNT_ROWS)]
    total_errors = sum(_number(n) or 0.0 for n in errors.values())
    count_rows.append(("errors", _count(total_errors)))
    rate_rows = [(label, _rate(value)) for label, value
                 in _known_then_rest(_dict(report.get("rates")), RATE_ROWS,
                                    frozenset(key for key, _ in RATE_ROWS))]
    session_rows = ((label, _percent(value) if label.endswith(" ratio") else _count(value))
                    for label, value in _known_then_rest(sessions, SESSION_ROWS))
    return "".join((
        '<div class="grid3"><div>', _panel("Sessions", _table(session_rows)),
        _panel("Rates", _table(rate_rows), "whole run"), "</div><div>",
        _panel("Counts", _table(count_rows)), "</div><div>",
        _panel("Reconnects", _tally(counts.get("reconnects_by_reason"), "reason")),
        "</div></div>",
        _saturation(_dict(report.get("saturation"))),
        _panel("Errors", _error_details(report, counts), _error_note(report)),
        _panel("Latency", _latency_table(_dict(report.get("latency_ms"))),
               "ms over the whole run; — where there was no sample")))


def _saturation(figures: Mapping[str, Any]) -> str:
    """The server's saturation: its latencies, our admission queue, who still waited."""
    if not figures:
        return ""
    rows = []
    for key, label in (("handshake_ms", "handshake (server)"),
                       ("first_token_ms", "first token (server)"),
                       ("admission_wait_ms", "admission wait (our queue)")):
        got = _dict(figures.get(key))
        rows.append((label, f"{_ms(got.get('p50'))} / {_ms(got.get('p99'))}"))
    rows.append(("still connecting at the end", _count(figures.get("connecting_end"))))
    note = (f"p50 / p99 ms; admission limits {_count(figures.get('max_handshakes_in_flight'))}"
            f" in flight, {_rate(figures.get('max_handshakes_per_second'))}/s")
    return _panel("Server saturation", _table(rows), note)


def _error_note(report: Mapping[str, Any]) -> str:
    errors = _dict(report.get("errors"))
    if _number(errors.get("operations")) is None:
        return ""
    return (f"{_count(errors.get('count'))} failed of {_count(errors.get('operations'))} "
            f"operations: {_percent(errors.get('ratio'))}")


def _run_facts(report: Mapping[str, Any]) -> str:
    target, outcome = _dict(report.get("target")), _dict(report.get("exit"))
    resources = _dict(report.get("resources"))
    passed = _either(outcome.get("passed"), "passed", "failed", DASH)
    rows = [("target", _value(target.get("url"))), ("protocol", _value(target.get("protocol"))),
            ("embedded target", _value(target.get("embedded"))),
            ("started at", _when(report.get("started_at"))),
            ("duration", _seconds(report.get("duration_s"))),
            ("verdict", passed), ("error rate", _percent(outcome.get("error_rate"))),
            ("fail on error rate above", _percent(outcome.get("fail_on_error_rate"))),
            ("stopped because", _value(outcome.get("stopped_because"))),
            ("interrupted", _value(outcome.get("interrupted"))),
            ("peak RSS (load tester)", _unit(resources.get("rss_peak_mib"), "MiB")),
            ("peak RSS (target)", _unit(resources.get("target_rss_peak_mib"), "MiB")),
            ("CPU time", _seconds(resources.get("cpu_s"))),
            ("runtime", _value(resources.get("runtime"))),
            ("Python", _value(resources.get("python"))),
            ("report version", _value(report.get("version")))]
    return _panel("Run", _split([f'<tr><td>{escape(label)}</td><td class="n">{value}</td></tr>'
                                 for label, value in rows]))


def _settings(report: Mapping[str, Any]) -> str:
    settings = _dict(report.get("settings"))
    if not settings:
        return _panel("Settings", f'<p class="muted">{DASH}</p>')
    rows = [f'<tr><td><code>--{escape(str(key).replace("_", "-"))}</code></td>'
            f"<td><code>{_value(value)}</code></td></tr>" for key, value in settings.items()]
    return _panel("Settings", _split(rows), "every option of the run")


def render_html(report: dict[str, Any]) -> str:
    """The report dict as one self-contained HTML page (inline CSS and SVG, no scripts)."""
    report = report if isinstance(report, Mapping) else {}
    target = _dict(report.get("target"))
    title = f"Load test: {target.get('url') or DASH} ({report.get('started_at') or DASH})"
    body = "".join((
        _header(report), _cards(report), _thresholds(report), _plots(report), _summary(report),
        _run_facts(report), _settings(report),
        "<footer>supervisor loadtest · self-contained report: no network needed to view</footer>",
    ))
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")
