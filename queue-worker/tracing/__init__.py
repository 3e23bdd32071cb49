"""Traces of each call through the worker, with OpenTelemetry.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set:
then spans are exported over OTLP/HTTP, configured by the standard ``OTEL_*`` variables
(``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``,
...). While off, nothing here runs on a message's path (not even the API's no-op spans), and
``traceparent`` passes through to the function unchanged, as it always did.

The spans of one call, under the caller's trace (or one the front door starts):

- ``send <queue>`` (producer): the front door storing the call;
- ``queued`` : from ``X-Start-Time`` to the first attempt;
- ``process <queue>`` (consumer): one per attempt, with the attempt and the decision;
  - ``POST`` (client, named by the call's method): the invocation; the function receives its
    ``traceparent``;
  - ``POST`` (client): the callback; the receiver receives its ``traceparent``;
- ``process <queue>`` (consumer), with ``queue_worker.callback_delivery``: each later post of a
  callback that failed, a job of its own, under the attempt that queued it.

Every attempt's parent is the stored ``traceparent``, so the attempts of a call are siblings
in one trace, numbered by ``queue_worker.attempt``, and each one after the first links to the
one before: an attempt's span id is derived from the trace, the call id and the attempt
number, so the next attempt can name it without anything stored between them. A call stored
with no trace (the gateway's, without a caller's ``traceparent``) gets a trace id derived from
its call id, so its attempts still read as one trace, and are sampled alike.

The sampler decides first, from the trace id alone: an attempt it drops costs that decision
and makes nothing, and its ``traceparent`` passes through. A ratio sampler's answer is read
from the trace id (:class:`RatioAnswers`): ``traceidratio``'s always, and
``parentbased_traceidratio``'s for a call with no parent, as most are; under a caller's trace,
a parent-based sampler drops what the caller did not sample, read from its ``traceparent``
(:func:`w3c_parent`) without extracting a context, and the parent of one it keeps is built
from what was read (:func:`w3c_context`). Any other answer is asked for, at about four times the
cost. (For a root attempt it keeps, the whole answer is known without asking it too.) The spans
of a kept attempt inherit its decision. They are :mod:`.recorder`'s, encoded by :mod:`.otlp` when their
batch goes out (:mod:`.batches`): the SDK's cost more than the rest of a message (``make
bench`` measures both). No span is made current: the worker hands the attempt's span to the
invocation and the callback, which put theirs under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from opentelemetry import propagate, trace
from opentelemetry.context import Context as TraceContext
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from structlog.typing import FilteringBoundLogger

from runtime import ConfigError

from ..version import VERSION
from .recorder import RecordedSpan, Sampler, Tracer

#: Headers that carry the trace; replaced, not forwarded, when a span of the worker's is current.
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_tracer: Tracer | None = None
_sampler: Sampler | None = None


class RatioAnswers(NamedTuple):
    """What the sampler answers without being asked, which would cost a ``SamplingResult``
    (2 µs) per attempt. A ratio sampler drops the trace ids whose low 64 bits reach its bound."""

    #: A plain ``traceidratio``'s bound, whatever the parent.
    drops_from: int | None = None
    #: The bound for an attempt with no parent: also ``parentbased_traceidratio``'s (the one the
    #: README suggests), whose root sampler it is; most calls, the gateway's, have no parent.
    root_drops_from: int | None = None
    #: The answer for an attempt with no parent that it keeps (no parent's trace state to carry).
    kept_root: Any = None
    #: A parent-based sampler that drops what its remote parent did not sample (the default).
    drops_unsampled_parents: bool = False


_answers = RatioAnswers()
_LOW_64_BITS = (1 << 64) - 1
_SAMPLED_FLAG = 0x01
#: Whether the propagators (``OTEL_PROPAGATORS``) are W3C trace context alone, or with baggage
#: (which the worker never holds): then outgoing trace headers are formatted here, in a third of
#: the time the global propagator takes (0.8 against 2.4 µs), and a stored ``traceparent`` is
#: read by :func:`w3c_parent` until the attempt is known to be kept.
_w3c_only = False
_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})
#: The context of a request stored without trace headers.
_NO_PARENT = TraceContext()


def enabled() -> bool:
    """Whether spans are recorded (an exporter is configured)."""
    return _tracer is not None


def configure(
    environ: Mapping[str, str], log: FilteringBoundLogger, count: Callable[[str, int], None] | None = None
) -> Callable[[], Awaitable[None]] | None:
    """Set up tracing when an OTLP endpoint is configured, and start its export task; returns
    its shutdown (which exports what is left), or ``None`` when tracing is off. Called on the
    event loop; ``count`` is told how many spans were ``exported``, ``dropped`` or ``failed``.

    Raises:
        ConfigError: an endpoint is set, but the image was built without the tracing extras;
            or an ``OTEL_BSP_*`` setting is invalid.
    """
    global _tracer, _sampler, _answers, _w3c_only
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    try:
        from .export import Configured
    except ImportError:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            endpoint,
            "tracing needs the image built with its extras (build_args: EXTRA_REQUIREMENTS: tracing)",
        ) from None
    configured = Configured.from_environment(environ, VERSION, log, count)
    configured.batches.start()
    _sampler = configured.sampler
    _answers = configured.answers
    _w3c_only = w3c_only(propagate.get_global_textmap().fields)
    _tracer = Tracer(configured.sampler, configured.batches.ended)

    async def shutdown() -> None:
        global _tracer, _sampler, _answers
        _tracer = _sampler = None
        _answers = RatioAnswers()
        await configured.close()

    return shutdown


def tracer() -> trace.Tracer:
    """The worker's tracer (only called while tracing is on)."""
    assert _tracer is not None
    return _tracer


def parent(traceparent: str, tracestate: str = "") -> TraceContext:
    """The caller's trace context, from the stored request's ``traceparent`` and ``tracestate``,
    as the propagators extract it (built from the header read by hand while they are W3C's)."""
    if not traceparent:
        return _NO_PARENT
    if _w3c_only:
        found = w3c_parent(traceparent)
        return _NO_PARENT if found is None else w3c_context(found, tracestate)
    return propagate.extract(
        {"traceparent": traceparent, "tracestate": tracestate} if tracestate else {"traceparent": traceparent}
    )


def w3c_only(fields: Iterable[str]) -> bool:
    """Whether propagators writing ``fields`` are W3C trace context's, alone or with baggage
    (``OTEL_PROPAGATORS=tracecontext,baggage``, the default). Pure."""
    written = set(fields)
    return "traceparent" in written and written <= _W3C_FIELDS


def w3c_parent(traceparent: str) -> tuple[int, int, int] | None:
    """The trace id, span id and flags of a ``traceparent``, or ``None`` where the W3C
    propagator would find no parent in it (its checks, in its order). Pure.

    Read by hand because the propagator builds a context to read them from, and most attempts
    under a caller's trace are dropped on these alone: 2-4 µs such an attempt, against 11-17 µs
    extracting the context first (timed in one process, by hand, on a busy machine). A property
    test holds it to the propagator.
    """
    if len(traceparent) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.search(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN or (version == "00" and rest) or version == "ff":
        return None
    return int(trace_id, 16), int(span_id, 16), int(flags, 16)


def w3c_context(found: tuple[int, int, int], tracestate: str) -> TraceContext:
    """The context the W3C propagator extracts from a ``traceparent`` that :func:`w3c_parent`
    read as ``found``, with ``tracestate``. Pure, but for the current context it extends, as the
    propagator's does (the worker attaches none).

    Built here as the propagator builds it, without matching the header a second time: an
    attempt kept under a caller's trace took 12 µs to extract its parent (19 with a trace
    state) and takes 3 (8) to build it (timed in one process, by hand, on a slow spell). A
    property test holds it to the propagator.
    """
    trace_id, span_id, flags = found
    state = TraceState.from_header([tracestate]) if tracestate else None
    remote = SpanContext(trace_id, span_id, True, TraceFlags(flags), state)
    return trace.set_span_in_context(NonRecordingSpan(remote))


#: The W3C trace context's ``traceparent``, as the API's propagator matches it.
_TRACEPARENT = re.compile(r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$")
_TRACEPARENT_MAX = 512
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def _derived(text: str, size: int) -> int:
    """A non-zero id of ``size`` bytes derived from ``text``: its BLAKE2b digest of that size."""
    # From a copy of an empty hasher: a quarter less than making one, with its keyword
    # arguments, for each id (0.58 against 0.78 µs); every attempt derives one, traced or not.
    hasher = _HASHERS[size].copy()
    hasher.update(text.encode())
    return int.from_bytes(hasher.digest(), "big") or 1


_HASHERS = {size: hashlib.blake2b(digest_size=size) for size in (8, 16)}
#: What a call's trace is derived from, with ``call/`` already read.
_CALL_HASHER = hashlib.blake2b(b"call/", digest_size=16)


def _call_digest(call_id: str) -> bytes:
    """The digest a call's trace id is made from: :func:`_derived`'s of ``call/<call id>``."""
    hasher = _CALL_HASHER.copy()
    hasher.update(call_id.encode())
    return hasher.digest()


#: The low 64 bits of a 16-byte id, which a ratio sampler reads.
_LOW_HALF = struct.Struct(">8xQ")


def trace_of(parent: TraceContext, call_id: str) -> int:
    """The trace of a call's attempts: the parent's, else one derived from the call id, else
    (no call id to derive it from) 0, for a random one. Pure."""
    if parent is not _NO_PARENT:
        context = trace.get_current_span(parent).get_span_context()
        if context.is_valid:
            return context.trace_id
    return (int.from_bytes(_call_digest(call_id), "big") or 1) if call_id else 0


def attempt_ids(trace_id: int, call_id: str, attempt: int) -> tuple[int, list[Link]]:
    """The span id of an attempt's span in ``trace_id``, and its link to the attempt before. Pure.

    The span id is derived from the trace, the call and the attempt number, so attempt ``n``
    can link to attempt ``n - 1``. Without a call id there is nothing to derive it from: 0 (a
    random id) and no link.
    """
    if not call_id:
        return 0, []
    span_id = _derived(f"{trace_id:032x}/{call_id}/{attempt}", 8)
    if attempt <= 1:
        return span_id, []
    before = SpanContext(
        trace_id, _derived(f"{trace_id:032x}/{call_id}/{attempt - 1}", 8), True, TraceFlags(TraceFlags.SAMPLED)
    )
    return span_id, [Link(before, {"queue_worker.link": "previous attempt"})]


class Kept(NamedTuple):
    """An attempt the sampler keeps: its parent context, trace and the sampler's answer."""

    context: TraceContext
    trace_id: int
    sampling: Any


def sampled(name: str, traceparent: str, tracestate: str, call_id: str) -> Kept | None:
    """What the span of an attempt the sampler keeps is made from; ``None`` when tracing is off
    or the sampler drops the attempt. Asked before anything else is made for the attempt."""
    if _sampler is None:
        return None
    answers = _answers
    context = _NO_PARENT
    if traceparent and _w3c_only:
        found = w3c_parent(traceparent)
        if found is not None:  # else no parent, as the propagator would find: decided as with none
            if _drops_parent(answers, *found):
                return None
            context = w3c_context(found, tracestate)
    elif traceparent:
        context = parent(traceparent, tracestate)
    if context is _NO_PARENT and call_id and answers.root_drops_from is not None:
        return _without_parent(answers.root_drops_from, answers.kept_root, call_id)
    return _asked(_sampler, answers, name, context, call_id)


def _drops_parent(answers: RatioAnswers, trace_id: int, _span_id: int, flags: int) -> bool:
    """Whether the sampler drops an attempt under this parent, known without asking it."""
    if answers.drops_from is not None and trace_id & _LOW_64_BITS >= answers.drops_from:
        return True  # a plain ratio reads the parent's trace id
    return answers.drops_unsampled_parents and not flags & _SAMPLED_FLAG  # the caller did not sample


def _without_parent(bound: int, kept_root: Any, call_id: str) -> Kept | None:
    """Most calls, the gateway's: no parent, and a ratio sampler, whose answer is read from the
    low half of the trace id that :func:`trace_of` derives. Read from the digest before that id
    is made, it costs a dropped attempt 0.9 µs against 1.8 (in one process)."""
    digest = _call_digest(call_id)
    if _LOW_HALF.unpack(digest)[0] >= bound:
        return None
    trace_id = int.from_bytes(digest, "big") or 1
    if trace_id & _LOW_64_BITS >= bound:  # the all-zero digest, whose id is 1
        return None
    return Kept(_NO_PARENT, trace_id, kept_root)


def _asked(sampler: Sampler, answers: RatioAnswers, name: str, context: TraceContext, call_id: str) -> Kept | None:
    """The sampler's answer, asked unless a plain ratio's is known."""
    trace_id = trace_of(context, call_id) or random.getrandbits(128) or 1
    if answers.drops_from is not None:
        if trace_id & _LOW_64_BITS >= answers.drops_from:
            return None
        if context is _NO_PARENT:  # no parent's trace state to carry: the answer is known
            return Kept(context, trace_id, answers.kept_root)
    sampling = sampler.should_sample(context, trace_id, name, SpanKind.CONSUMER)
    return Kept(context, trace_id, sampling) if sampling.decision.is_recording() else None


def start_attempt(
    name: str,
    kept: Kept,
    call_id: str,
    attempt: int,
    attributes: Mapping[str, Any],
    queued: tuple[int, int] | None,
) -> Span:
    """The span of one attempt that :func:`sampled` kept, started (and, with ``queued``'s start
    and end in ns, the span of the time queued, ended)."""
    assert _tracer is not None
    parent_span = (
        trace.INVALID_SPAN_CONTEXT
        if kept.context is _NO_PARENT
        else trace.get_current_span(kept.context).get_span_context()
    )
    span_id, links = attempt_ids(kept.trace_id, call_id, attempt)
    if queued is not None:  # in the attempts' trace, whatever the parent
        _tracer.over("queued", parent_span, kept.trace_id, kept.sampling, *queued)
    return _tracer.started(
        name, parent_span, kept.trace_id, kept.sampling, SpanKind.CONSUMER, attributes, links, span_id=span_id
    )


def injected(span: Span) -> list[tuple[str, str]]:
    """``traceparent`` (and ``tracestate``) naming ``span`` as the parent, for an outgoing request."""
    if _w3c_only:
        if isinstance(span, RecordedSpan) and not span.data.trace_state:  # no SpanContext to make
            return [("traceparent", _traceparent(span.data.trace_id, span.data.span_id, int(span.sampled)))]
        return w3c_headers(span.get_span_context())
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return list(carrier.items())


def w3c_headers(context: SpanContext) -> list[tuple[str, str]]:
    """``traceparent`` (and ``tracestate``) for ``context``, as the W3C propagator writes them. Pure."""
    if context == trace.INVALID_SPAN_CONTEXT:
        return []
    headers = [("traceparent", _traceparent(context.trace_id, context.span_id, context.trace_flags))]
    if context.trace_state:
        headers.append(("tracestate", context.trace_state.to_header()))
    return headers


def _traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def with_trace(headers: Iterable[tuple[str, str]], span: Span | None) -> list[tuple[str, str]]:
    """``headers`` with their trace headers replaced by ``span``'s (unchanged without one)."""
    if span is None:
        return list(headers)
    return [(k, v) for k, v in headers if k.lower() not in TRACE_HEADERS] + injected(span)


#: What a span's ``with`` gives while tracing is off: nothing, at the cost of a method call.
NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def client_span(name: str, url: str, method: str, parent: Span | None) -> AbstractContextManager[Span | None]:
    """A client span for one HTTP request under ``parent`` (the attempt's span); ``None`` while
    off or when the attempt is not traced. It inherits the attempt's sampling, as the SDK's
    parent-based samplers decide, without asking the sampler again. Like the attempt's span, it
    is not made current: the worker hands each span to what runs under it, which saves
    attaching and detaching a context; the span is its own ``with``."""
    if not isinstance(parent, RecordedSpan) or _tracer is None or not parent.is_recording():
        return NO_SPAN
    attributes: dict[str, Any] = {"http.request.method": method, "url.full": url}
    return _tracer.child(name, parent, SpanKind.CLIENT, attributes)


def traceparent_of(span: Span | None) -> str:
    """The ``traceparent`` naming ``span`` as the parent if it is recorded, else ``""``."""
    if span is None or not span.is_recording():
        return ""
    return dict(injected(span)).get("traceparent", "")


def job_span(name: str, traceparent: str, delivery: int) -> AbstractContextManager[Span | None]:
    """The span of a callback job's delivery, in the trace of the attempt that queued it (its
    own ``with``, not made current); ``None`` when that attempt was not traced."""
    if _tracer is None or not traceparent:
        return NO_SPAN
    attributes: dict[str, Any] = {"messaging.system": "nats", "queue_worker.callback_delivery": delivery}
    return _tracer.start_span(name, context=parent(traceparent), kind=SpanKind.CONSUMER, attributes=attributes)


def record_status(span: Span | None, status: int, error: str = "") -> None:
    """The HTTP status on a client span; 5xx, or no answer, marks it an error."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500 or error:
        span.set_status(Status(StatusCode.ERROR, error or f"status {status}"))


def ids(span: Span) -> dict[str, str]:
    """``trace_id`` and ``span_id`` for log lines, so logs and traces link."""
    if isinstance(span, RecordedSpan):  # read from its data, without making its SpanContext
        trace_id, span_id = span.data.trace_id, span.data.span_id
    else:
        context = span.get_span_context()
        trace_id, span_id = context.trace_id, context.span_id
    return {"trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}"}
