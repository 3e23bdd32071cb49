"""The connector's own metrics, named under ``metrics_namespace`` (``queue_worker`` in stack.yml)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from .loop_metrics import CounterChild, HistogramChild, LoopCounter, LoopHistogram

#: Buckets for how long a handler runs, from a fast function to ``upstream_timeout``.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True, slots=True)
class RuntimeMetrics:
    """The connector's metrics, already labelled with this process's queue.

    Those updated for every message are lock-free loop metrics (see :mod:`.loop_metrics`); the
    in-flight gauge is read when scraped.
    """

    processed: CounterChild
    settled: dict[str, CounterChild]
    handler_errors: Counter
    inflight: Gauge
    handler_duration: HistogramChild
    reconnects: Counter
    dead_letters: Counter
    max_inflight: Gauge

    @classmethod
    def create(cls, namespace: str, queue_name: str, registry: CollectorRegistry) -> RuntimeMetrics:
        """Register the metrics on ``registry``; all but ``dead_letters`` come bound to ``queue_name``."""
        common = {"namespace": namespace, "registry": registry}
        settled = LoopCounter(
            "messages_settled",
            "Acknowledgements sent, by verb: ack, nak (redeliver later), term or dead-letter.",
            ["queue_name", "action"],
            namespace=namespace,
            registry=registry,
        )
        return cls(
            processed=LoopCounter(
                "messages_processed",
                "Messages settled for good (acked, terminated or dead-lettered).",
                ["queue_name"],
                namespace=namespace,
                registry=registry,
            ).labels(queue_name),
            settled={verb: settled.labels(queue_name, verb) for verb in ("ack", "nak", "term", "dead-letter")},
            handler_errors=Counter(
                "handler_errors",
                "Handler calls that raised instead of returning an outcome.",
                ["queue_name"],
                **common,  # type: ignore[arg-type]
            ).labels(queue_name),
            inflight=Gauge(
                "handler_inflight",
                "Messages being handled now, from delivery to acknowledgement.",
                ["queue_name"],
                **common,  # type: ignore[arg-type]
            ).labels(queue_name),
            handler_duration=LoopHistogram(
                "handler_duration_seconds",
                "Time from delivery to settlement of one message.",
                ["queue_name"],
                buckets=DURATION_BUCKETS,
                namespace=namespace,
                registry=registry,
            ).labels(queue_name),
            reconnects=Counter(
                "nats_reconnect",
                "Times the NATS client has reconnected.",
                ["queue_name"],
                **common,  # type: ignore[arg-type]
            ).labels(queue_name),
            dead_letters=Counter(
                "dead_letters",
                "Messages moved to the dead-letter stream, by reason.",
                ["queue_name", "reason"],
                **common,  # type: ignore[arg-type]
            ),
            max_inflight=Gauge(
                "max_inflight",
                "Messages one replica handles at once at most (max_inflight): saturation's denominator.",
                ["queue_name"],
                **common,  # type: ignore[arg-type]
            ),
        )
