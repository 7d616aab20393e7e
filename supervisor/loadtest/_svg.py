"""Hand-written SVG line charts for the HTML report: no JavaScript, no external files.

One chart is an ``<svg>`` with gridlines, axes with tick labels, one ``<path>``
per series (broken where a value is missing) and, per x position, a transparent
column whose ``<title>`` is the browser's native tooltip listing every value
there. The legend is HTML (:func:`legend`), so it wraps like text does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 1100
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 14, 34
MARKERS_UP_TO = 30
"""Dots on every point when a series has at most this many (a short run)."""
HOVER_UP_TO = 1500
"""Tooltip columns only up to this many x positions (keeps long runs' files small)."""
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800)


@dataclass(frozen=True, slots=True)
class Series:
    """One line: ``values[i]`` belongs to ``xs[i]``; None leaves a gap."""

    label: str
    values: Sequence[float | None]
    color: str
    dash: str = ""
    """An SVG ``stroke-dasharray`` ("6 4": dashed); empty: a solid line."""
    area: bool = False


def _nice_step(raw: float) -> float:
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0):
        if factor * magnitude >= raw * 0.999:
            return factor * magnitude
    return 10.0 * magnitude


def linear_ticks(high: float, count: int = 5) -> list[float]:
    """Ticks from 0 up to at least ``high``, on a 1/2/2.5/5 x 10^k step."""
    high = high if high > 0 else 1.0
    step = _nice_step(high / count)
    return [i * step for i in range(math.ceil(high / step - 1e-9) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1/2/5 x 10^k ticks from the last one at or below ``low`` to the first at or above
    ``high`` (powers of ten only when that spans more than three decades)."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    last = max(last, first + 1)
    factors = (1.0,) if last - first > 3 else (1.0, 2.0, 5.0)
    ticks = [f * 10.0**k for k in range(first, last + 1) for f in factors]
    start = max(i for i, tick in enumerate(ticks) if tick <= low * 1.000001)
    end = min(i for i, tick in enumerate(ticks) if tick >= high * 0.999999)
    return ticks[start:max(end, start + 1) + 1]


def time_ticks(high: float) -> list[float]:
    """Ticks on a whole-seconds/minutes/hours step, at most ten intervals."""
    high = high if high > 0 else 1.0
    step = next((s for s in _TIME_STEPS if high / s <= 10), None) or _nice_step(high / 10)
    return [float(i * step) for i in range(int(high // step) + 1)]


def format_time(seconds: float) -> str:
    """``0.5s``, ``45s``, ``2m``, ``2m30s``, ``1h5m``."""
    whole = round(seconds)
    if whole < 120:
        return f"{whole}s" if abs(seconds - whole) < 0.05 else f"{seconds:.1f}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m{secs}s" if secs else f"{minutes}m"


def format_number(value: float) -> str:
    """A compact label: ``0.05``, ``2.5``, ``120``, ``1,500``, ``25k``, ``1.2M``."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


class _Scale:
    """Maps data to pixels; the y axis is linear from 0, or logarithmic."""

    def __init__(self, x_high: float, y_ticks: list[float], log: bool) -> None:
        self.x_high = x_high if x_high > 0 else 1.0
        self.log = log
        self.y_low, self.y_high = (y_ticks[0], y_ticks[-1])
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM

    def x(self, value: float) -> float:
        return LEFT + self.plot_w * min(max(value / self.x_high, 0.0), 1.0)

    def y(self, value: float) -> float:
        if self.log:
            value = max(value, self.y_low)
            share = math.log10(value / self.y_low) / math.log10(self.y_high / self.y_low)
        else:
            share = (value - self.y_low) / ((self.y_high - self.y_low) or 1.0)
        return TOP + self.plot_h * (1.0 - min(max(share, 0.0), 1.0))


Points = list[tuple[float, float]]


def _segments(xs: Sequence[float], values: Sequence[float | None]) -> list[Points]:
    """Runs of consecutive points that have a value."""
    runs: list[Points] = []
    current: Points = []
    for x, value in zip(xs, values, strict=False):
        if value is None or not math.isfinite(value):
            if current:
                runs.append(current)
            current = []
        else:
            current.append((x, value))
    if current:
        runs.append(current)
    return runs


def _series_svg(xs: Sequence[float], series: Series, scale: _Scale) -> str:
    runs = _segments(xs, series.values)
    points = sum(len(run) for run in runs)
    parts: list[str] = []
    line = " ".join(
        "M" + " L".join(f"{scale.x(x):.1f},{scale.y(v):.1f}" for x, v in run) for run in runs)
    if series.area:
        base = scale.y(scale.y_low)
        fill = " ".join(
            f"M{scale.x(run[0][0]):.1f},{base:.1f} L"
            + " L".join(f"{scale.x(x):.1f},{scale.y(v):.1f}" for x, v in run)
            + f" L{scale.x(run[-1][0]):.1f},{base:.1f} Z" for run in runs)
        if fill:
            parts.append(f'<path class="area" d="{fill}" fill="{series.color}" '
                         'fill-opacity="0.14" stroke="none"/>')
    dash = f' stroke-dasharray="{series.dash}"' if series.dash else ""
    label = escape(series.label)
    parts.append(f'<path class="series" data-series="{label}" data-points="{points}" '
                 f'd="{line}" fill="none" stroke="{series.color}" stroke-width="2"{dash} '
                 'stroke-linejoin="round" stroke-linecap="round"/>')
    if points <= MARKERS_UP_TO or any(len(run) == 1 for run in runs):
        dots = "".join(f'<circle cx="{scale.x(x):.1f}" cy="{scale.y(v):.1f}" r="2.5"/>'
                       for run in runs for x, v in run
                       if points <= MARKERS_UP_TO or len(run) == 1)
        parts.append(f'<g fill="{series.color}">{dots}</g>')
    return "".join(parts)


def _hover_columns(xs: Sequence[float], series: Sequence[Series], scale: _Scale,
                   unit: str) -> str:
    """A transparent column per x position; its title lists every series' value there."""
    if not xs or len(xs) > HOVER_UP_TO:
        return ""
    edges = [scale.x(0.0)]
    edges += [(scale.x(a) + scale.x(b)) / 2 for a, b in itertools.pairwise(xs)]
    edges.append(scale.x(scale.x_high))
    columns = []
    for i, x in enumerate(xs):
        lines = [f"t = {format_time(x)}"]
        for item in series:
            value = item.values[i] if i < len(item.values) else None
            shown = "—" if value is None else f"{format_number(value)} {unit}".rstrip()
            lines.append(f"{item.label}: {shown}")
        tip = escape("\n".join(lines))
        width = max(0.0, edges[i + 1] - edges[i])
        columns.append(f'<rect x="{edges[i]:.1f}" y="{TOP}" width="{width:.1f}" '
                       f'height="{scale.plot_h}"><title>{tip}</title></rect>')
    return f'<g class="hover" fill="#1c3d6e" fill-opacity="0">{"".join(columns)}</g>'


def line_chart(name: str, xs: Sequence[float], series: Sequence[Series], *, unit: str = "",
               log: bool = False, label: str = "") -> str:
    """An SVG line chart over time (``xs`` in seconds since the start of the run).

    ``name`` becomes ``data-plot``; ``unit`` is added to tooltip values; with
    ``log`` the y axis is logarithmic (when every value is positive).
    """
    values = [v for item in series for v in item.values if v is not None and math.isfinite(v)]
    positive = [v for v in values if v > 0]
    log = log and bool(positive) and len(positive) == len(values)
    y_ticks = log_ticks(min(positive), max(positive)) if log else linear_ticks(max(values,
                                                                                   default=0.0))
    x_ticks = time_ticks(max(xs, default=0.0))
    scale = _Scale(max(max(xs, default=0.0), x_ticks[-1]), y_ticks, log)
    out = [f'<svg class="plot" data-plot="{escape(name)}" data-points="{len(xs)}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label or name)}">']
    grid, text = [], []
    for tick in y_ticks:
        y = scale.y(tick)
        grid.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        text.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">'
                    f"{escape(format_number(tick))}</text>")
    for tick in x_ticks:
        x = scale.x(tick)
        grid.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>')
        text.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">'
                    f"{escape(format_time(tick))}</text>")
    out.append(f'<g class="grid" stroke="#e3e6ea" stroke-width="1">{"".join(grid)}</g>')
    out.append(f'<path class="axis" d="M{LEFT},{TOP} V{HEIGHT - BOTTOM} H{WIDTH - RIGHT}" '
               'fill="none" stroke="#8a929c" stroke-width="1"/>')
    out.append(f'<g class="ticks" font-size="12" fill="#4a525c">{"".join(text)}</g>')
    if not xs:
        out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
                   'font-size="15" fill="#6b737d">No interval data</text>')
    # The first series is drawn last, on top: list the most important one first.
    out.extend(_series_svg(xs, item, scale) for item in reversed(series))
    out.append(_hover_columns(xs, series, scale, unit))
    out.append("</svg>")
    return "".join(out)


def legend(series: Sequence[Series]) -> str:
    """The chart's legend as HTML: a line swatch (dashed or solid) and the label."""
    items = []
    for item in series:
        dash = f' stroke-dasharray="{item.dash}"' if item.dash else ""
        items.append('<span class="key"><svg width="26" height="10" aria-hidden="true">'
                     f'<line x1="1" y1="5" x2="25" y2="5" stroke="{item.color}" stroke-width="2.5"'
                     f'{dash}/></svg>{escape(item.label)}</span>')
    return f'<div class="legend">{"".join(items)}</div>'
