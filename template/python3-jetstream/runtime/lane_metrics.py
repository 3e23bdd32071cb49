"""Function mode's figures per function, read from the consumer's lanes when scraped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .lanes import PLAIN, Lane


class HasLanes(Protocol):
    """What is read: the consumer's lanes."""

    @property
    def lanes(self) -> list[Lane]: ...


class LaneCollector(Collector):
    """Each function's concurrency limit and calls in flight, and how many consumers are active."""

    def __init__(self, namespace: str, queue_name: str, consumer: HasLanes, maximum: int) -> None:
        self._namespace = namespace
        self._queue = queue_name
        self._consumer = consumer
        self._maximum = maximum

    def collect(self) -> Iterator[Metric]:
        """Yield the families; lanes forgotten since the last scrape are gone from them."""
        ns, queue, lanes = self._namespace, self._queue, self._consumer.lanes
        limit = GaugeMetricFamily(
            f"{ns}_function_concurrency_limit",
            "Calls a function may have in flight from this replica now (adaptive concurrency, else max_inflight).",
            labels=["queue_name", "function_name"],
        )
        inflight = GaugeMetricFamily(
            f"{ns}_function_inflight",
            "Messages of a function being handled by this replica now.",
            labels=["queue_name", "function_name"],
        )
        for lane in lanes:
            if lane.key == PLAIN:
                continue
            limit.add_metric([queue, lane.key], lane.cap(self._maximum))
            inflight.add_metric([queue, lane.key], lane.running)
        active = GaugeMetricFamily(
            f"{ns}_consumers_active",
            "Consumers this replica pulls from: the queue's, and one per function with work in function mode.",
            labels=["queue_name"],
        )
        active.add_metric([queue], sum(1 for lane in lanes if lane.ready))
        yield from (limit, inflight, active)
