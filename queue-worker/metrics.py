"""The queue-worker's metrics, beside the runtime's under the same ``queue_worker`` namespace."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Info

from runtime import DURATION_BUCKETS, LoopCounter, LoopGauge, LoopHistogram

NAMESPACE = "queue_worker"  # the runtime's too: handler.METRICS_NAMESPACE
#: How long requests wait in the queue: from an idle queue to a backlog of hours.
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """Counters by function (``name.namespace``, as the gateway labels it) and status code.

    Those updated for every message are the runtime's lock-free loop metrics; ``labels()`` on
    them is a dictionary lookup, so call sites need not keep the children.
    """

    inflight: LoopGauge
    invocations: LoopCounter
    duration: LoopHistogram
    retries: LoopCounter
    callbacks: LoopCounter
    rejected: Counter
    queue_wait: LoopHistogram
    status_failures: Counter
    #: The queue this process serves: every family carries it, so ``$queue`` filters every panel.
    queue: str = ""

    @classmethod
    def create(cls, registry: CollectorRegistry, version: str, queue: str = "") -> WorkerMetrics:
        """Register the metrics on ``registry``, with build info for ``version``."""
        common = {"namespace": NAMESPACE, "registry": registry}
        build = Info("build", "The queue-worker's version and runtime.", **common)  # type: ignore[arg-type]
        build.info({"version": version, "python": platform.python_version()})
        return cls(
            inflight=LoopGauge(
                "function_invocation_inflight",
                "Function invocations in flight.",
                ["queue_name", "function_name"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            invocations=LoopCounter(
                "function_invocations",
                "Function invocations by status code.",
                ["queue_name", "function_name", "code"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            duration=LoopHistogram(
                "function_invocation_duration_seconds",
                "Time a function took to answer.",
                ["queue_name", "function_name", "code"],
                buckets=DURATION_BUCKETS,
                namespace=NAMESPACE,
                registry=registry,
            ),
            retries=LoopCounter(
                "function_retries",
                "Invocations scheduled again, by status code.",
                ["queue_name", "function_name", "code"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            callbacks=LoopCounter(
                "callbacks",
                "Callbacks posted, by result.",
                ["queue_name", "result"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            rejected=Counter(
                "messages_rejected",
                "Messages that could not be decoded, by reason.",
                ["queue_name", "reason"],
                **common,  # type: ignore[arg-type]
            ),
            status_failures=Counter(
                "call_status_write_failures",
                "Call status writes the bucket did not store: refused, unconfirmed or disconnected.",
                ["queue_name", "reason"],
                **common,  # type: ignore[arg-type]
            ),
            queue_wait=LoopHistogram(
                "queue_wait_seconds",
                "Time from queueing (X-Start-Time, else the stream's timestamp) to the first attempt.",
                ["queue_name", "function_name"],
                buckets=WAIT_BUCKETS,
                namespace=NAMESPACE,
                registry=registry,
            ),
            queue=queue,
        )
