"""The queue-worker's metrics, beside the runtime's under the same ``queue_worker`` namespace."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from runtime import DURATION_BUCKETS

NAMESPACE = "queue_worker"
M = TypeVar("M", Counter, Gauge, Histogram)
#: How long requests wait in the queue: from an idle queue to a backlog of hours.
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """Counters by function (``name.namespace``, as the gateway labels it) and status code."""

    inflight: Gauge
    invocations: Counter
    duration: Histogram
    retries: Counter
    callbacks: Counter
    rejected: Counter
    queue_wait: Histogram
    _children: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)

    def of(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, kept for reuse: the label sets repeat with every message."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    @classmethod
    def create(cls, registry: CollectorRegistry, version: str) -> WorkerMetrics:
        """Register the metrics on ``registry``, with build info for ``version``."""
        common = {"namespace": NAMESPACE, "registry": registry}
        build = Info("build", "The queue-worker's version and runtime.", **common)  # type: ignore[arg-type]
        build.info({"version": version, "python": platform.python_version()})
        return cls(
            inflight=Gauge(
                "function_invocation_inflight",
                "Function invocations in flight.",
                ["queue_name", "function_name"],
                **common,  # type: ignore[arg-type]
            ),
            invocations=Counter(
                "function_invocations",
                "Function invocations by status code.",
                ["function_name", "code"],
                **common,  # type: ignore[arg-type]
            ),
            duration=Histogram(
                "function_invocation_duration_seconds",
                "Time a function took to answer.",
                ["function_name", "code"],
                buckets=DURATION_BUCKETS,
                **common,  # type: ignore[arg-type]
            ),
            retries=Counter(
                "function_retries",
                "Invocations scheduled again, by status code.",
                ["function_name", "code"],
                **common,  # type: ignore[arg-type]
            ),
            callbacks=Counter("callbacks", "Callbacks posted, by result.", ["result"], **common),  # type: ignore[arg-type]
            rejected=Counter(
                "messages_rejected",
                "Messages that could not be decoded, by reason.",
                ["reason"],
                **common,  # type: ignore[arg-type]
            ),
            queue_wait=Histogram(
                "queue_wait_seconds",
                "Time from queueing (X-Start-Time, else the stream's timestamp) to the first attempt.",
                ["queue_name", "function_name"],
                buckets=WAIT_BUCKETS,
                **common,  # type: ignore[arg-type]
            ),
        )
