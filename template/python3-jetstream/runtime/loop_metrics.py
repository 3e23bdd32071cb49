"""Counters, gauges and histograms updated on the event loop without locks.

prometheus_client guards every update with a lock and checks it first, which costs about 0.7 µs
a call, and a message makes a dozen updates. Nothing here needs the lock: updates and scrapes
(the metrics endpoint is served by the same event loop) all run on one thread. These keep plain
numbers and give prometheus_client its own metric families when scraped, so the exposition
format is still prometheus_client's. The API is prometheus_client's: ``labels(...)`` returns a
child with ``inc``, ``dec`` or ``observe``.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

C = TypeVar("C", "CounterChild", "GaugeChild", "HistogramChild")


class CounterChild:
    """One label set's count."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeChild(CounterChild):
    """One label set's level."""

    __slots__ = ()

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class HistogramChild:
    """One label set's observations: a count per bucket (not yet cumulative) and their sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # Buckets are upper bounds, inclusive: bisect_left finds the first bound >= amount.
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1
        self.sum += amount


class _Family(Collector, Generic[C]):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *, namespace: str, registry: CollectorRegistry
    ) -> None:
        self.name = f"{namespace}_{name}" if namespace else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        registry.register(self)

    def labels(self, *values: str) -> C:
        """The child for these label values, made on first use."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            child = self._children[values] = self._child()
        return child

    def _child(self) -> C:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        """The family's name and type, for the registry's check against duplicates."""
        return self.collect()


class LoopCounter(_Family[CounterChild]):
    """A counter (exposed with ``_total``)."""

    def _child(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self._children.items():
            family.add_metric(labels, child.value)
        yield family


class LoopGauge(_Family[GaugeChild]):
    """A gauge."""

    def _child(self) -> GaugeChild:
        return GaugeChild()

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self._children.items():
            family.add_metric(labels, child.value)
        yield family


class LoopHistogram(_Family[HistogramChild]):
    """A histogram with fixed upper bounds (``+Inf`` is added)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        namespace: str,
        registry: CollectorRegistry,
    ) -> None:
        self._bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        self._les = (*(floatToGoString(b) for b in self._bounds), "+Inf")  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, namespace=namespace, registry=registry)

    def _child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self._children.items():
            cumulative = itertools.accumulate(child.counts)
            buckets = [(le, float(count)) for le, count in zip(self._les, cumulative, strict=True)]
            family.add_metric(labels, buckets, child.sum)
        yield family
