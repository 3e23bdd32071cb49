"""The queue-worker's metrics, beside the runtime's under the same ``queue_worker`` namespace."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Info

from runtime import DURATION_BUCKETS, LoopCounter, LoopGauge, LoopHistogram

NAMESPACE = "queue_worker"  # the runtime's too: handler.METRICS_NAMESPACE
#: How long requests wait in the queue: from an idle queue to a backlog of hours.
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)


#: The ``function_name`` of every function past the cap (no function can be called this).
OTHER_FUNCTIONS = "(other)"
#: Functions with series of their own by default: their scrape takes about 50 ms (bench/).
MAX_FUNCTION_SERIES = 200


@dataclass(slots=True)
class FunctionLabels:
    """The ``function_name`` label of each call, ``name.namespace`` as the gateway labels it,
    for at most ``limit`` functions; the rest share :data:`OTHER_FUNCTIONS`. Pure.

    Callers choose function names, so without a cap every name sent would add series for ever
    (10,000 names made a 43 MB, 2 s scrape). A function earns its own label only once the
    gateway has answered a call to it with something other than 404 (:meth:`admit`), so names of
    functions that do not exist never use up the cap.
    """

    limit: int
    namespace: str
    _known: dict[str, str] = field(default_factory=dict)

    def __call__(self, function: str) -> str:
        """The label for ``function``: its own if admitted, else :data:`OTHER_FUNCTIONS`."""
        return self._known.get(function, OTHER_FUNCTIONS)

    def admit(self, function: str) -> str:
        """Give ``function`` a label of its own if the cap allows; returns its label."""
        label = self._known.get(function)
        if label is None:
            if len(self._known) >= self.limit:
                return OTHER_FUNCTIONS
            label = self._known[function] = function if "." in function else f"{function}.{self.namespace}"
        return label


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
    trace_spans: Counter
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
            trace_spans=Counter(
                "trace_spans",
                "Trace spans by what became of them: exported, dropped (the export queue was full) or failed.",
                ["queue_name", "outcome"],
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
