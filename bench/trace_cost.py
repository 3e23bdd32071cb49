"""Where tracing's cost goes: the OpenTelemetry SDK's own CPU per span, timed in this process.

- an attempt the sampler drops: the decision and a non-recording span;
- an attempt it keeps: the ``process`` span and the invocation's client span, with the
  attributes the worker sets, started and ended (as the worker does, four spans with the
  ``queued`` one and the callback's);
- encoding one finished span for OTLP/HTTP (protobuf), which the exporter's thread does while
  holding the GIL, so it comes off the event loop's time.

Run by ``make bench`` beside the throughput figures with tracing on, or alone:
``python -m bench.trace_cost``.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import SpanKind

ROUNDS = 5_000
#: The attributes the worker puts on an attempt's span and on a client span.
PROCESS_ATTRIBUTES: dict[str, Any] = {
    "messaging.system": "nats",
    "messaging.operation.type": "process",
    "messaging.destination.name": "faas-request.figlet.openfaas-fn",
    "messaging.message.id": "0d2cd4e6-3a1c-4b6f-9f0e-5b4f0e1a2b3c",
    "faas.invoked_name": "figlet",
    "queue_worker.attempt": 1,
}
CLIENT_ATTRIBUTES: dict[str, Any] = {"http.request.method": "POST", "url.full": "http://gateway:8080/function/figlet/"}


def _attempt(tracer: trace.Tracer, parent: Context, kept: list[ReadableSpan]) -> None:
    span = tracer.start_span("process faas-request", context=parent, kind=SpanKind.CONSUMER)
    if not span.is_recording():
        return
    span.set_attributes(PROCESS_ATTRIBUTES)
    with trace.use_span(span, end_on_exit=True):
        client = tracer.start_span("POST", kind=SpanKind.CLIENT, attributes=CLIENT_ATTRIBUTES)
        client.set_attribute("http.response.status_code", 200)
        client.end()
        span.set_attribute("queue_worker.outcome", "ack")
    kept.extend((span, client))  # type: ignore[list-item]  # SDK spans are readable


def measure() -> dict[str, float]:
    """Microseconds: a dropped attempt, a kept one (two spans), and encoding one span."""
    parent = Context()
    figures: dict[str, float] = {}
    kept: list[ReadableSpan] = []
    for label, sampler in (("dropped_attempt_us", ALWAYS_OFF), ("kept_attempt_two_spans_us", ALWAYS_ON)):
        tracer = TracerProvider(sampler=sampler).get_tracer("bench")
        for _ in range(500):  # warm
            _attempt(tracer, parent, [])
        started = time.perf_counter()
        for _ in range(ROUNDS):
            _attempt(tracer, parent, kept)
        figures[label] = round((time.perf_counter() - started) / ROUNDS * 1e6, 1)
    started = time.perf_counter()
    for index in range(0, len(kept), 512):  # the batch processor's default batch
        encode_spans(kept[index : index + 512]).SerializeToString()
    figures["encode_per_span_us"] = round((time.perf_counter() - started) / len(kept) * 1e6, 1)
    return figures


if __name__ == "__main__":
    print(measure())
