"""What a scrape of ``/metrics`` costs the event loop, in this process: the worker's metrics with
series for ``max_function_series`` (200) functions, written by prometheus_client's encoders and
by the runtime's (:mod:`runtime.exposition`), in the text format and in OpenMetrics.

Run alone: ``python -m bench.scrape``; the medians of seven, alternating, in milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from harness.worker import HANDLER
from runtime.exposition import Registry, render
from runtime.loader import PACKAGE, import_package
from runtime.metrics import RuntimeMetrics

import_package(HANDLER, PACKAGE)
from function.metrics import WorkerMetrics  # noqa: E402

FUNCTIONS = 200
OPENMETRICS = "application/openmetrics-text;version=1.0.0"


def registry() -> Registry:
    """The runtime's and the worker's metrics, each function with a call, a status and a wait."""
    registry = Registry()
    RuntimeMetrics.create("queue_worker", "faas-request", registry)
    metrics = WorkerMetrics.create(registry, "bench", "faas-request")
    for i in range(FUNCTIONS):
        function = f"fn-{i}.openfaas-fn"
        metrics.inflight.labels(metrics.queue, function).inc()
        metrics.invocations.labels(metrics.queue, function, "200").inc()
        metrics.duration.labels(metrics.queue, function, "200").observe(0.01)
        metrics.queue_wait.labels(metrics.queue, function).observe(0.5)
    return registry


def measure(rounds: int = 7) -> dict[str, float]:
    """Milliseconds per scrape, and the body's size and lines (the same either way)."""
    scraped = registry()
    ways: dict[str, Callable[[], bytes]] = {
        "library_text_ms": lambda: generate_latest(scraped),
        "ours_text_ms": lambda: render(scraped, "")[0],
        "library_openmetrics_ms": lambda: openmetrics_latest(scraped),
        "ours_openmetrics_ms": lambda: render(scraped, OPENMETRICS)[0],
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            started = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - started)
    body = render(scraped, "")[0]
    figures = {name: round(statistics.median(taken) * 1000, 1) for name, taken in times.items()}
    return {**figures, "bytes": len(body), "lines": body.count(b"\n")}


if __name__ == "__main__":
    print(measure())
