"""Traces of each call through the worker, with OpenTelemetry.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set:
then the SDK exports over OTLP/HTTP, configured by the standard ``OTEL_*`` variables
(``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``, ...). While off,
nothing here runs on a message's path (not even the API's no-op spans), and ``traceparent``
passes through to the function unchanged, as it always did.

The spans of one call, under the caller's trace (or one the front door starts):

- ``send <queue>`` (producer): the front door storing the call;
- ``queued`` : from ``X-Start-Time`` to the first attempt;
- ``process <queue>`` (consumer): one per attempt, with the attempt and the decision;
  - ``POST`` (client): the invocation; the function receives its ``traceparent``;
  - ``POST`` (client): the callback; the receiver receives its ``traceparent``;
- ``process <queue>`` (consumer), with ``queue_worker.callback_delivery``: each later post of a
  callback that failed, a job of its own, under the attempt that queued it.

Every attempt's parent is the stored ``traceparent``, so the attempts of a call are siblings
in one trace, numbered by ``queue_worker.attempt``, and each one after the first links to the
one before: an attempt's span id is derived from the trace, the call id and the attempt
number, so the next attempt can name it without anything stored between them. A call stored
with no trace (the gateway's, without a caller's ``traceparent``) gets a trace id derived from
its call id, so its attempts still read as one trace, and are sampled alike. An attempt the sampler drops makes no span
beyond the sampler's decision, and its ``traceparent`` passes through: making spans, not
exporting them, is what tracing costs here (``make bench`` measures it).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context as TraceContext
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from runtime import ConfigError

from .version import VERSION

#: Headers that carry the trace; replaced, not forwarded, when a span of the worker's is current.
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_tracer: trace.Tracer | None = None
#: The trace id and span id the next span made should have (0: a random one), set only
#: around making an attempt's spans.
_chosen: ContextVar[tuple[int, int]] = ContextVar("chosen_ids", default=(0, 0))


def enabled() -> bool:
    """Whether spans are recorded (an exporter is configured)."""
    return _tracer is not None


def configure(environ: Mapping[str, str]) -> Callable[[], None] | None:
    """Set up the SDK when an OTLP endpoint is configured; returns its shutdown (which exports
    what is left), or ``None`` when tracing is off.

    Raises:
        ConfigError: an endpoint is set, but the image was built without the tracing extras.
    """
    global _tracer
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    except ImportError:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            endpoint,
            "tracing needs the image built with its extras (build_args: EXTRA_REQUIREMENTS: tracing)",
        ) from None
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the sampler comes
    # from OTEL_TRACES_SAMPLER; the exporter from OTEL_EXPORTER_OTLP_*.
    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or "queue-worker"})

    class ChosenIds(RandomIdGenerator):
        """Random ids, except where an attempt's are chosen (see :func:`attempt_ids`)."""

        def generate_trace_id(self) -> int:
            return _chosen.get()[0] or super().generate_trace_id()

        def generate_span_id(self) -> int:
            return _chosen.get()[1] or super().generate_span_id()

    provider = TracerProvider(resource=resource, id_generator=ChosenIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("queue-worker", VERSION)
    return provider.shutdown


def tracer() -> trace.Tracer:
    """The worker's tracer (only called while tracing is on)."""
    assert _tracer is not None
    return _tracer


def parent(headers: Mapping[str, Iterable[str]]) -> TraceContext:
    """The caller's trace context, from the stored request headers (any case)."""
    carrier = {k.lower(): next(iter(v), "") for k, v in headers.items() if k.lower() in TRACE_HEADERS}
    return propagate.extract(carrier)


def _derived(text: str, size: int) -> int:
    """A non-zero id of ``size`` bytes derived from ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "big") or 1


def attempt_ids(parent: TraceContext, call_id: str, attempt: int) -> tuple[tuple[int, int], list[Link]]:
    """The trace and span ids of an attempt's span, and its link to the attempt before. Pure.

    The trace is the parent's, else one derived from the call id; the span id is derived from
    the trace, the call and the attempt number, so attempt ``n`` can link to attempt ``n - 1``.
    """
    context = trace.get_current_span(parent).get_span_context()
    trace_id = context.trace_id if context.is_valid else _derived(f"call/{call_id}", 16)
    span_id = _derived(f"{trace_id:032x}/{call_id}/{attempt}", 8)
    if attempt <= 1:
        return (trace_id, span_id), []
    before = SpanContext(
        trace_id, _derived(f"{trace_id:032x}/{call_id}/{attempt - 1}", 8), True, TraceFlags(TraceFlags.SAMPLED)
    )
    return (trace_id, span_id), [Link(before, {"queue_worker.link": "previous attempt"})]


@contextlib.contextmanager
def chosen_ids(trace_id: int, span_id: int = 0) -> Iterator[None]:
    """Spans made within have these ids (0: a random one), where the SDK would pick them."""
    token = _chosen.set((trace_id, span_id))
    try:
        yield
    finally:
        _chosen.reset(token)


def injected(span: Span) -> list[tuple[str, str]]:
    """``traceparent`` (and ``tracestate``) naming ``span`` as the parent, for an outgoing request."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return list(carrier.items())


def with_trace(headers: Iterable[tuple[str, str]], span: Span | None) -> list[tuple[str, str]]:
    """``headers`` with their trace headers replaced by ``span``'s (unchanged without one)."""
    if span is None:
        return list(headers)
    return [(k, v) for k, v in headers if k.lower() not in TRACE_HEADERS] + injected(span)


#: What a span's ``with`` gives while tracing is off: nothing, at the cost of a method call.
NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def client_span(name: str, url: str, method: str) -> AbstractContextManager[Span | None]:
    """A client span for one HTTP request, the current span its parent; ``None`` while off or
    when the attempt is not sampled."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return NO_SPAN
    attributes: dict[str, Any] = {"http.request.method": method, "url.full": url}
    return _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def current_traceparent() -> str:
    """The ``traceparent`` of the current span if it is recorded, else ``""``."""
    if _tracer is None:
        return ""
    span = trace.get_current_span()
    return dict(injected(span)).get("traceparent", "") if span.is_recording() else ""


def job_span(name: str, traceparent: str, delivery: int) -> AbstractContextManager[Span | None]:
    """The span of a callback job's delivery, in the trace of the attempt that queued it;
    ``None`` when that attempt was not traced."""
    if _tracer is None or not traceparent:
        return NO_SPAN
    attributes: dict[str, Any] = {"messaging.system": "nats", "queue_worker.callback_delivery": delivery}
    context = propagate.extract({"traceparent": traceparent})
    return _tracer.start_as_current_span(name, context=context, kind=SpanKind.CONSUMER, attributes=attributes)


def record_status(span: Span | None, status: int, error: str = "") -> None:
    """The HTTP status on a client span; 5xx, or no answer, marks it an error."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500 or error:
        span.set_status(Status(StatusCode.ERROR, error or f"status {status}"))


def ids(span: Span) -> dict[str, str]:
    """``trace_id`` and ``span_id`` for log lines, so logs and traces link."""
    context = span.get_span_context()
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
