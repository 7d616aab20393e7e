"""Prometheus metrics for a supervisor (needs the ``prometheus`` extra: ``prometheus_client``).

::

    from prometheus_client import REGISTRY
    from supervisor.prometheus import SupervisorCollector

    REGISTRY.register(SupervisorCollector(sup))   # a Supervisor or an AsyncSupervisor

A scrape reads counters kept as sessions report and the sessions' published
snapshots: it never asks an actor, so it costs the supervisor's mailbox
nothing (measured: ``benchmarks/metrics_collection.py``). The metric names,
kinds and help texts are ``supervisor._metrics.METRICS``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from supervisor._metrics import METRICS, HistogramSample, MetricSpec, MetricsSample, MetricValue


class HasMetrics(Protocol):
    """What the collector needs: ``Supervisor`` and ``AsyncSupervisor`` both have it."""

    def metrics(self) -> MetricsSample: ...


class SupervisorCollector(Collector):
    """A ``prometheus_client`` collector of one supervisor's :data:`METRICS`."""

    def __init__(self, supervisor: HasMetrics) -> None:
        self._supervisor = supervisor

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples (registering never takes a sample)."""
        for spec in METRICS:
            yield _family(spec, None)

    def collect(self) -> Iterator[Metric]:
        sample = self._supervisor.metrics()
        for spec in METRICS:
            yield _family(spec, spec.read(sample))


def _family(spec: MetricSpec, value: MetricValue | None) -> Metric:
    labels = [] if spec.label is None else [spec.label]
    family: Metric
    if spec.kind == "histogram":
        histogram = HistogramMetricFamily(spec.name, spec.help, labels=labels)
        if isinstance(value, HistogramSample):
            buckets = [("+Inf" if bound == float("inf") else repr(bound), count)
                       for bound, count in value.buckets]
            histogram.add_metric([], buckets, value.sum)
        return histogram
    if spec.kind == "counter":
        family = CounterMetricFamily(spec.name, spec.help, labels=labels)
    else:
        family = GaugeMetricFamily(spec.name, spec.help, labels=labels)
    if isinstance(value, Mapping):
        for label_value, number in sorted(value.items()):
            family.add_metric([label_value], number)
    elif isinstance(value, int | float):
        family.add_metric([], value)
    return family


__all__ = ["SupervisorCollector"]
