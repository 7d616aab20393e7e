"""Thresholds: ``METRIC.STAT OP VALUE`` expressions, parsed once and judged on the report.

Pure code: :func:`parse_threshold` turns ``turn.p99<2s`` into a
:class:`Threshold`; :func:`judge` reads each one's figure from the report dict
(the JSON report) and says whether it holds. The metric names are the report's
own keys, so ``turn.p99`` is ``report["latency_ms"]["turn"]["p99"]`` and
``sessions.failed_ratio`` is ``report["sessions"]["failed_ratio"]``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from supervisor.loadtest.metrics import LATENCIES, PERCENTILES
from supervisor.loadtest.values import ConfigError

LATENCY_STATS = (*PERCENTILES, "max", "mean")
"""What a latency threshold may judge: ``turn.p50`` ... ``turn.mean`` (milliseconds)."""

RATIOS = {
    "sessions.failed_ratio": ("sessions", "failed_ratio"),
    "sessions.connected_ratio": ("sessions", "connected_ratio"),
    "sessions.peak_ratio": ("sessions", "peak_ratio"),
    "errors.ratio": ("errors", "ratio"),
}
"""Fractions a threshold may judge, and where the report keeps them."""

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}

_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0}
_EXPRESSION = re.compile(r"^\s*([a-z_]+)\.([a-z_0-9.]+?)\s*(<=|>=|==|<|>)\s*([0-9.]+)\s*"
                         r"(ms|s|m|%)?\s*$")
EXAMPLE = "e.g. turn.p99<2s, first_token.p50<=500ms or sessions.failed_ratio<0.01"


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed threshold; ``limit`` is in milliseconds for latencies, a fraction for ratios."""

    expression: str
    metric: str
    """``turn``, ``sessions``, ``errors``..."""
    stat: str
    """``p99``, ``failed_ratio``, ``ratio``..."""
    op: str
    limit: float

    @property
    def is_latency(self) -> bool:
        return self.metric in LATENCIES

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` meets the threshold; no value (no samples) never does."""
        return value is not None and OPERATORS[self.op](value, self.limit)

    def value_of(self, report: Mapping[str, Any]) -> float | None:
        """The figure this threshold judges, read from the report dict."""
        if self.is_latency:
            section, key = "latency_ms", self.metric
            figures = report.get(section, {}).get(key, {})
            value = figures.get(self.stat) if isinstance(figures, Mapping) else None
        else:
            section, key = RATIOS[f"{self.metric}.{self.stat}"]
            value = report.get(section, {}).get(key)
        return float(value) if isinstance(value, int | float) else None


def _bad(text: str, source: str, why: str) -> ConfigError:
    return ConfigError(f"{source} {text!r}: {why}",
                       f"write METRIC.STAT OP VALUE, {EXAMPLE}")


def parse_threshold(text: str, source: str = "--threshold") -> Threshold:
    """``METRIC.STAT OP VALUE[unit]``; ConfigError naming a valid form when it is not one."""
    match = _EXPRESSION.match(text.lower())
    if match is None:
        raise _bad(text, source, "not a threshold")
    metric, stat, op, number, unit = match.groups()
    try:
        limit = float(number)
    except ValueError:
        raise _bad(text, source, f"{number!r} is not a number") from None
    if metric in LATENCIES:
        if stat not in LATENCY_STATS:
            raise _bad(text, source, f"{metric} has no statistic {stat!r} (one of "
                                     f"{', '.join(LATENCY_STATS)})")
        if unit == "%":
            raise _bad(text, source, "a latency takes ms, s or m, not %")
        limit *= _UNIT_MS[unit or "ms"]
    elif f"{metric}.{stat}" in RATIOS:
        if unit not in (None, "%"):
            raise _bad(text, source, "a ratio takes a fraction (0.01) or a percentage (1%)")
        limit = limit / 100.0 if unit == "%" else limit
    else:
        raise _bad(text, source, f"unknown metric {metric}.{stat} (latencies: "
                                 f"{', '.join(LATENCIES)} with .{'/.'.join(LATENCY_STATS)}; "
                                 f"ratios: {', '.join(RATIOS)})")
    return Threshold(text.strip(), metric, stat, op, limit)


def error_rate_threshold(limit: float) -> Threshold:
    """``--fail-on-error-rate X`` as the threshold it is: ``errors.ratio<=X``."""
    return Threshold(f"errors.ratio<={limit:g}", "errors", "ratio", "<=", limit)


def judge(thresholds: tuple[Threshold, ...], report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each threshold's ``expression``, measured ``value`` (ms or fraction) and ``ok``."""
    results = []
    for threshold in thresholds:
        value = threshold.value_of(report)
        results.append({"expression": threshold.expression, "value": value,
                        "unit": "ms" if threshold.is_latency else "ratio",
                        "ok": threshold.holds(value)})
    return results
