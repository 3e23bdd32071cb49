"""The connector's own metrics, named under ``metrics_namespace`` (``queue_worker`` in stack.yml)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Buckets for how long a handler runs, from a fast function to ``upstream_timeout``.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True, slots=True)
class RuntimeMetrics:
    """Counters and gauges the connector updates while it consumes."""

    processed: Counter
    settled: Counter
    handler_errors: Counter
    inflight: Gauge
    handler_duration: Histogram
    reconnects: Counter
    dead_letters: Counter

    @classmethod
    def create(cls, namespace: str, registry: CollectorRegistry) -> RuntimeMetrics:
        """Register the metrics on ``registry``."""
        return cls(
            processed=Counter(
                "messages_processed",
                "Messages settled for good (acked or terminated).",
                ["queue_name"],
                namespace=namespace,
                registry=registry,
            ),
            settled=Counter(
                "messages_settled",
                "Acknowledgements sent, by verb: ack, nak (redeliver later) or term.",
                ["queue_name", "action"],
                namespace=namespace,
                registry=registry,
            ),
            handler_errors=Counter(
                "handler_errors",
                "Handler calls that raised instead of returning an outcome.",
                ["queue_name"],
                namespace=namespace,
                registry=registry,
            ),
            inflight=Gauge(
                "handler_inflight",
                "Handler calls running now.",
                ["queue_name"],
                namespace=namespace,
                registry=registry,
            ),
            handler_duration=Histogram(
                "handler_duration_seconds",
                "Time from delivery to settlement of one message.",
                ["queue_name"],
                namespace=namespace,
                registry=registry,
                buckets=DURATION_BUCKETS,
            ),
            reconnects=Counter(
                "nats_reconnect",
                "Times the NATS client has reconnected.",
                namespace=namespace,
                registry=registry,
            ),
            dead_letters=Counter(
                "dead_letters",
                "Messages moved to the dead-letter stream, by reason.",
                ["queue_name", "reason"],
                namespace=namespace,
                registry=registry,
            ),
        )
