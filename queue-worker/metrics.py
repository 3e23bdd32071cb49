"""The queue-worker's metrics, beside the runtime's under the same ``queue_worker`` namespace."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime import DURATION_BUCKETS

NAMESPACE = "queue_worker"


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """Counters by function (``name.namespace``, as the gateway labels it) and status code."""

    inflight: Gauge
    invocations: Counter
    duration: Histogram
    retries: Counter
    callbacks: Counter
    rejected: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        """Register the metrics on ``registry``."""
        common = {"namespace": NAMESPACE, "registry": registry}
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
        )
