"""Where tracing's cost goes: CPU per attempt and per span, timed in this process, for the
worker's lean tracer (``function.tracing``) beside the OpenTelemetry SDK's.

- an attempt the sampler drops: the worker asks the sampler first and makes nothing else (a
  ``traceidratio`` sampler's answer is read from the trace id, without asking it);
- an attempt it keeps: the ``queued`` span, the ``process`` span and the invocation's client
  span, with the attributes the worker sets, started and ended; once with the worker's tracer,
  once with the SDK's (as the worker made them before);
- encoding one finished span for OTLP/HTTP (protobuf): the worker's encoder and the SDK's,
  which the exporter's thread runs while holding the GIL, so it comes off the event loop's time.

Run by ``make bench`` beside the throughput figures with tracing on, or alone:
``python -m bench.trace_cost``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from harness.worker import HANDLER
from runtime.loader import PACKAGE, import_package

import_package(HANDLER, PACKAGE)
from function import tracing  # noqa: E402
from function.tracing import otlp  # noqa: E402
from function.tracing.export import ratio_answers  # noqa: E402
from function.tracing.recorder import Tracer  # noqa: E402

ROUNDS = 5_000
#: The attributes the worker puts on an attempt's span and on a client span.
PROCESS_ATTRIBUTES: dict[str, Any] = {
    "messaging.system": "nats",
    "messaging.operation.type": "process",
    "messaging.destination.name": "faas-request",
    "messaging.message.id": "0d2cd4e6-3a1c-4b6f-9f0e-5b4f0e1a2b3c",
    "faas.invoked_name": "figlet",
    "queue_worker.attempt": 1,
}
CLIENT_ATTRIBUTES: dict[str, Any] = {"http.request.method": "POST", "url.full": "http://gateway:8080/function/figlet"}
CALL_ID = "0d2cd4e6-3a1c-4b6f-9f0e-5b4f0e1a2b3c"
NAME = "process faas-request"


def _spans(tracer: trace.Tracer, parent: Context) -> None:
    """The worker's spans of one first attempt, made with ``tracer``."""
    now = time.time_ns()
    tracer.start_span("queued", context=parent, start_time=now - 1_000_000).end(now)
    span = tracer.start_span(NAME, context=parent, kind=SpanKind.CONSUMER, attributes=PROCESS_ATTRIBUTES)
    with trace.use_span(span, end_on_exit=True):
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=CLIENT_ATTRIBUTES) as client:
            client.set_attribute("http.response.status_code", 200)
        span.set_attribute("queue_worker.outcome", "ack")


def _ours(sampler: Sampler, kept: list[Any]) -> Callable[[], None]:
    tracing._tracer = Tracer(sampler, kept.append)
    tracing._sampler = sampler
    tracing._answers = ratio_answers(sampler)

    def attempt() -> None:
        decided = tracing.sampled(NAME, "", "", CALL_ID)
        if decided is None:
            return
        now = time.time_ns()
        span = tracing.start_attempt(NAME, decided, CALL_ID, 1, PROCESS_ATTRIBUTES, (now - 10**6, now))
        with span:  # as the worker: its own ``with``, handed to the client span, not made current
            with tracing.client_span("POST", CLIENT_ATTRIBUTES["url.full"], "POST", span) as client:
                tracing.record_status(client, 200)
            span.set_attribute("queue_worker.outcome", "ack")

    return attempt


def _sdk(kept: list[Any]) -> Callable[[], None]:
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(_Keep(kept))
    tracer = provider.get_tracer("bench")
    return lambda: _spans(tracer, Context())


class _Keep:
    def __init__(self, kept: list[Any]) -> None:
        self.on_end = kept.append

    def on_start(self, span: Any, parent_context: Any = None) -> None: ...

    def _on_ending(self, span: Any) -> None: ...

    def shutdown(self) -> None: ...

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


def _timed(attempt: Callable[[], None], kept: list[Any]) -> float:
    for _ in range(500):  # warm
        attempt()
    kept.clear()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        attempt()
    return round((time.perf_counter() - started) / ROUNDS * 1e6, 1)


def measure() -> dict[str, float]:
    """Microseconds per attempt (dropped, kept with three spans) and per encoded span."""
    saved = tracing._tracer, tracing._sampler, tracing._answers
    ours: list[otlp.SpanData] = []
    sdk: list[ReadableSpan] = []
    try:
        figures = {
            "dropped_attempt_us": _timed(_ours(TraceIdRatioBased(0.0), ours), ours),
            "dropped_attempt_other_samplers_us": _timed(_ours(ALWAYS_OFF, ours), ours),
            # As ``make bench`` samples: a ratio sampler, whose answer the worker reads itself.
            "kept_attempt_three_spans_us": _timed(_ours(TraceIdRatioBased(1.0), ours), ours),
            "kept_attempt_other_samplers_us": _timed(_ours(ALWAYS_ON, ours), ours),
            "sdk_kept_attempt_three_spans_us": _timed(_sdk(sdk), sdk),
        }
    finally:
        tracing._tracer, tracing._sampler, tracing._answers = saved
    encoder = otlp.Encoder({"service.name": "queue-worker"}, "queue-worker", "bench")
    started = time.perf_counter()
    for index in range(0, len(ours), 512):  # the batch processor's default batch
        encoder.encode(ours[index : index + 512])
    figures["encode_per_span_us"] = round((time.perf_counter() - started) / len(ours) * 1e6, 1)
    started = time.perf_counter()
    for index in range(0, len(sdk), 512):
        encode_spans(sdk[index : index + 512]).SerializeToString()
    figures["sdk_encode_per_span_us"] = round((time.perf_counter() - started) / len(sdk) * 1e6, 1)
    return figures


if __name__ == "__main__":
    print(measure())
