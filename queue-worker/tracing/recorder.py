"""A lean OpenTelemetry tracer: API spans recorded as plain data, handed at their end to
:mod:`.batches`, which exports them with the hand-written encoder of :mod:`.otlp`.

Why not the SDK's tracer: its spans cost 15-25 µs each to make and end here (locks, bounded
attribute maps, a processor chain), and its encoder 20-44 µs more per span; a traced attempt
has three or four spans. These spans are the API's (``trace.use_span``, propagation and log
correlation work unchanged) but hold only what is exported: a first attempt's three spans
cost 11-30 µs to make and end and 2-4 µs each to encode, against 94-139 µs and 25-47 µs with
the SDK's, depending on the machine's spell (``python -m bench.trace_cost`` measures both).

What stays the SDK's is what ``OTEL_*`` variables configure beyond batching (:mod:`.export`):
the sampler, the resource, and the OTLP/HTTP exporter's client.
"""

from __future__ import annotations

import contextlib
import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from . import otlp

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)


class Sampler(Protocol):
    """What the tracer asks of a sampler: the SDK's ``Sampler`` has this method."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
    ) -> Any: ...


class RecordedSpan(trace.Span):
    """A span being recorded; at its end, its data is handed to ``on_end`` once.

    Its ``SpanContext`` is made only when asked for: the worker reads a span's ids and flags
    from its data and ``sampled`` (for a child, a log line's ids, a ``traceparent``), and an
    API ``SpanContext`` validates its ids as it is made (1 µs, two in every kept attempt).
    """

    __slots__ = ("_context", "_on_end", "_trace_state", "data", "sampled")

    def __init__(
        self,
        data: otlp.SpanData,
        sampled: bool,
        trace_state: TraceState | None,
        on_end: Callable[[otlp.SpanData], None],
    ) -> None:
        self.data = data
        self.sampled = sampled
        self._trace_state = trace_state
        self._context: SpanContext | None = None
        self._on_end: Callable[[otlp.SpanData], None] | None = on_end

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            flags = _SAMPLED if self.sampled else _UNSAMPLED
            context = SpanContext(self.data.trace_id, self.data.span_id, False, flags, self._trace_state)
            self._context = context
        return context

    def is_recording(self) -> bool:
        return self._on_end is not None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._on_end is not None:
            self.data.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._on_end is not None:
            self.data.attributes.update(attributes)

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self._on_end is not None:
            event = otlp.Event(name, timestamp or time.time_ns(), dict(attributes or {}))
            self.data.events = [*self.data.events, event]

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._on_end is not None and context.is_valid:
            link = otlp.Link(context.trace_id, context.span_id, context.is_remote, dict(attributes or {}))
            self.data.links = [*self.data.links, link]

    def update_name(self, name: str) -> None:
        if self._on_end is not None:
            self.data.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._on_end is None:
            return
        code = status.status_code if isinstance(status, Status) else status
        if isinstance(status, Status):
            description = status.description
        if self.data.status_code == StatusCode.OK.value and code is not StatusCode.OK:
            return  # as the SDK: OK is final
        self.data.status_code = code.value
        self.data.status_message = (description or "") if code is StatusCode.ERROR else ""

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        details = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": stack,
            **(attributes or {}),
        }
        self.add_event("exception", details, timestamp)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Ends the span, used as its own ``with`` (not made current); an exception leaving the
        block is recorded, as ``trace.use_span`` records it."""
        if exc is not None and self._on_end is not None:
            self.record_exception(exc, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.end()

    def end(self, end_time: int | None = None) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            self.data.end_ns = end_time or time.time_ns()
            on_end(self.data)


class Tracer(trace.Tracer):
    """Makes :class:`RecordedSpan` s where ``sampler`` keeps a span, non-recording ones elsewhere;
    ``on_end`` takes each sampled span's data when it ends."""

    def __init__(self, sampler: Sampler, on_end: Callable[[otlp.SpanData], None]) -> None:
        self._sampler = sampler
        self._on_end = on_end

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else random.getrandbits(128) or 1
        sampling = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
        return self.started(name, parent, trace_id, sampling, kind, attributes, links, start_time)

    def started(
        self,
        name: str,
        parent: SpanContext,
        trace_id: int,
        sampling: Any,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        span_id: int = 0,
    ) -> trace.Span:
        """A span the sampler already decided on (its ``SamplingResult``), in ``trace_id``, with
        ``span_id`` (0: a random one)."""
        decision = sampling.decision
        span_id = span_id or random.getrandbits(64) or 1
        if not decision.is_recording():
            flags = _SAMPLED if decision.is_sampled() else _UNSAMPLED
            return NonRecordingSpan(SpanContext(trace_id, span_id, False, flags, sampling.trace_state))
        sampled = decision.is_sampled()
        data = _data(
            name,
            parent,
            trace_id,
            span_id,
            kind,
            start_time or time.time_ns(),
            _attributes(attributes, sampling),
            _state(sampling),
        )
        if links:
            data.links = [_link(link) for link in links if link.context.is_valid]
        # Recorded but not sampled (RECORD_ONLY): the span is live for this process, but, as
        # with the SDK's processors, never exported.
        return RecordedSpan(data, sampled, sampling.trace_state, self._on_end if sampled else _unexported)

    def over(self, name: str, parent: SpanContext, trace_id: int, sampling: Any, start_ns: int, end_ns: int) -> None:
        """A span the sampler already decided on that is over as it is made (the time a call
        waited): with no attribute to set and nothing to nest under it, it is handed on at
        once, without a span object, when sampled."""
        if sampling.decision.is_sampled():
            span_id = random.getrandbits(64) or 1
            data = _data(
                name,
                parent,
                trace_id,
                span_id,
                SpanKind.INTERNAL,
                start_ns,
                _attributes(None, sampling),
                _state(sampling),
            )
            data.end_ns = end_ns
            self._on_end(data)

    def child(self, name: str, parent: RecordedSpan, kind: SpanKind, attributes: dict[str, Any]) -> trace.Span:
        """A span under ``parent``, one of this tracer's recording spans, sampled as it is."""
        above = parent.data
        data = otlp.SpanData(
            name,
            above.trace_id,
            random.getrandbits(64) or 1,
            above.span_id,
            kind._value_ + 1,
            time.time_ns(),
            0,
            attributes,
            above.trace_state,
        )
        sampled = parent.sampled
        return RecordedSpan(data, sampled, parent._trace_state, self._on_end if sampled else _unexported)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]  # the API's decorator types it loosely
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit, record_exception, set_status_on_exception) as current:
            yield current


def _data(
    name: str,
    parent: SpanContext,
    trace_id: int,
    span_id: int,
    kind: SpanKind,
    start_ns: int,
    attributes: dict[str, Any],
    trace_state: str,
) -> otlp.SpanData:
    """A span's data as it starts (no links yet)."""
    valid = parent.is_valid
    return otlp.SpanData(
        name,
        trace_id,
        span_id,
        parent.span_id if valid else 0,
        # OTLP numbers kinds from 1 (0 is "unspecified"); ``_value_`` is a plain attribute, where
        # ``value``, or hashing the member for a lookup, runs Python code (0.2 µs).
        kind._value_ + 1,
        start_ns,
        0,
        attributes,
        trace_state,
        valid and parent.is_remote,
    )


def _attributes(attributes: Attributes, sampling: Any) -> dict[str, Any]:
    """A span's attributes and those its sampler added, in a map of the span's own."""
    extra = sampling.attributes
    return {**attributes, **extra} if extra and attributes else dict(extra or attributes or {})


def _state(sampling: Any) -> str:
    """The trace state the sampler gave a span, as OTLP writes it."""
    return ",".join(f"{k}={v}" for k, v in sampling.trace_state.items()) if sampling.trace_state else ""


def _unexported(data: otlp.SpanData) -> None:
    """Where a span recorded but not sampled ends."""


def _link(link: Link) -> otlp.Link:
    context = link.context
    return otlp.Link(context.trace_id, context.span_id, context.is_remote, dict(link.attributes or {}))
