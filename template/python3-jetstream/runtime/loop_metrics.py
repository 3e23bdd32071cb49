"""Counters, gauges and histograms updated on the event loop without locks.

prometheus_client guards every update with a lock and checks it first, which costs about 0.7 µs
a call, and a message makes a dozen updates. Nothing here needs the lock: updates and scrapes
(the metrics endpoint is served by the same event loop) all run on one thread. These keep plain
numbers and give prometheus_client its own metric families when scraped, so the exposition
format is still prometheus_client's. The API is prometheus_client's: ``labels(...)`` returns a
child with ``inc``, ``dec`` or ``observe``.

Each family also writes its own exposition (:meth:`LoopFamily.exposition`), byte for byte what
prometheus_client writes for it, from each child's label string, made once: the library
validates, escapes and sorts every sample's labels at every scrape (:mod:`.exposition` says
what that cost).
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

C = TypeVar("C", "CounterChild", "GaugeChild", "HistogramChild")
#: Legacy names, which the escapings the families write (``underscores``, ``allow-utf-8``) leave as they are.
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: How prometheus_client writes a sample's value (typed here: the library leaves it unannotated).
_value: Callable[[float], str] = floatToGoString


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _written_labels(pairs: Iterable[tuple[str, str]]) -> str:
    """Labels as prometheus_client writes them: sorted by name, values escaped."""
    written = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(pairs))
    return f"{{{written}}}" if written else ""


def _help(documentation: str, openmetrics: bool) -> str:
    escaped = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return escaped.replace('"', r"\"") if openmetrics else escaped


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


class LoopFamily(Collector, Generic[C]):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *, namespace: str, registry: CollectorRegistry
    ) -> None:
        self.name = f"{namespace}_{name}" if namespace else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        if not _METRIC_NAME.fullmatch(self.name) or not all(_LABEL_NAME.fullmatch(n) for n in self.labelnames):
            raise ValueError(f"{self.name} {self.labelnames}: not a legacy metric or label name")
        self._children: dict[tuple[str, ...], C] = {}
        #: Each child's labels as written, sorted by name (a histogram's: each bucket's, then the
        #: count's and sum's): made at the first scrape that has the child.
        self._written: dict[tuple[str, ...], tuple[str, ...]] = {}
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

    def exposition(self, openmetrics: bool) -> str:
        """The family as prometheus_client writes it: the Prometheus text format, or OpenMetrics
        (without its closing ``# EOF``), in the escapings :mod:`.exposition` leaves to it."""
        name, kind = self._exposed_name(openmetrics), self._kind
        lines = [f"# HELP {name} {_help(self.documentation, openmetrics)}\n# TYPE {name} {kind}\n"]
        written = self._written
        for values, child in self._children.items():
            labels = written.get(values)
            if labels is None:
                labels = written[values] = self._labels(values)
            self._lines(lines, labels, child)
        return "".join(lines)

    def _labels(self, values: tuple[str, ...]) -> tuple[str, ...]:
        return (_written_labels(zip(self.labelnames, values, strict=True)),)

    _kind = "untyped"

    def _exposed_name(self, openmetrics: bool) -> str:
        return self.name

    def _lines(self, lines: list[str], labels: tuple[str, ...], child: C) -> None:
        raise NotImplementedError


class LoopCounter(LoopFamily[CounterChild]):
    """A counter (exposed with ``_total``)."""

    _kind = "counter"

    def _child(self) -> CounterChild:
        return CounterChild()

    def _exposed_name(self, openmetrics: bool) -> str:
        return self.name if openmetrics else f"{self.name}_total"

    def _lines(self, lines: list[str], labels: tuple[str, ...], child: CounterChild) -> None:
        lines.append(f"{self.name}_total{labels[0]} {_value(child.value)}\n")

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self._children.items():
            family.add_metric(labels, child.value)
        yield family


class LoopGauge(LoopFamily[GaugeChild]):
    """A gauge."""

    _kind = "gauge"

    def _child(self) -> GaugeChild:
        return GaugeChild()

    def _lines(self, lines: list[str], labels: tuple[str, ...], child: GaugeChild) -> None:
        lines.append(f"{self.name}{labels[0]} {_value(child.value)}\n")

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self._children.items():
            family.add_metric(labels, child.value)
        yield family


class LoopHistogram(LoopFamily[HistogramChild]):
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
        self._les = (*(_value(b) for b in self._bounds), "+Inf")
        super().__init__(name, documentation, labelnames, namespace=namespace, registry=registry)

    _kind = "histogram"

    def _child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def _labels(self, values: tuple[str, ...]) -> tuple[str, ...]:
        pairs = list(zip(self.labelnames, values, strict=True))
        return (*(_written_labels([*pairs, ("le", le)]) for le in self._les), _written_labels(pairs))

    def _lines(self, lines: list[str], labels: tuple[str, ...], child: HistogramChild) -> None:
        name, plain = self.name, labels[-1]
        total = 0
        for bucket, count in zip(labels[:-1], child.counts, strict=True):
            total += count
            lines.append(f"{name}_bucket{bucket} {_value(total)}\n")
        lines.append(f"{name}_count{plain} {_value(total)}\n{name}_sum{plain} {_value(child.sum)}\n")

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self._children.items():
            cumulative = itertools.accumulate(child.counts)
            buckets = [(le, float(count)) for le, count in zip(self._les, cumulative, strict=True)]
            family.add_metric(labels, buckets, child.sum)
        yield family
