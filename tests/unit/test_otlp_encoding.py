"""The hand-written OTLP encoder against the SDK's: for any span, the two export requests decode
(with opentelemetry-proto) to the same message. Then the lean tracer's spans, as the API uses them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, SamplingResult, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from function.tracing import otlp
from function.tracing.recorder import RecordedSpan, Tracer

ids128 = st.integers(min_value=1, max_value=2**128 - 1)
ids64 = st.integers(min_value=1, max_value=2**64 - 1)
keys = st.text(min_size=1, max_size=12)
scalars = st.one_of(
    st.text(max_size=30),
    # 120 bytes to 18 KB of UTF-8: lengths of one, two and three varint bytes, in every field
    # that holds this value (the value, the attribute, the span, the scope).
    st.integers(60, 9000).map(lambda n: "é" * n),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
values = st.one_of(scalars, st.lists(st.text(max_size=8), max_size=3), st.lists(st.integers(0, 2**40), max_size=3))
attributes = st.dictionaries(keys, values, max_size=6)
times = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def spans(draw: st.DrawFn) -> tuple[otlp.SpanData, ReadableSpan]:
    trace_id, span_id = draw(ids128), draw(ids64)
    parent_id = draw(st.one_of(st.just(0), ids64))
    remote = draw(st.booleans()) and parent_id != 0
    kind = draw(st.sampled_from(list(SpanKind)))
    start, end = draw(times), draw(times)
    attrs = draw(attributes)
    state = draw(st.sampled_from([(), (("vendor", "x1"),), (("a", "1"), ("b", "2"))]))
    links = draw(st.lists(st.tuples(ids128, ids64, st.booleans(), attributes), max_size=2))
    events = draw(st.lists(st.tuples(st.text(max_size=10), times, attributes), max_size=2))
    code = draw(st.sampled_from(list(StatusCode)))
    message = draw(st.text(max_size=20)) if code is StatusCode.ERROR else ""
    name = draw(st.text(max_size=20))

    ours = otlp.SpanData(
        name=name,
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        kind=kind.value + 1,
        start_ns=start,
        end_ns=end,
        attributes=dict(attrs),
        trace_state=",".join(f"{k}={v}" for k, v in state),
        remote_parent=remote,
        links=[otlp.Link(t, s, r, a) for t, s, r, a in links],
        events=[otlp.Event(n, at, a) for n, at, a in events],
        status_code=code.value,
        status_message=message,
    )
    sdk = ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, False, TraceFlags(1), TraceState(list(state))),
        parent=SpanContext(trace_id, parent_id, remote) if parent_id else None,
        attributes=attrs,
        events=[Event(n, a, at) for n, at, a in events],
        links=[Link(SpanContext(t, s, r), a) for t, s, r, a in links],
        kind=kind,
        status=Status(code, message or None),
        start_time=start,
        end_time=end,
        resource=Resource({"service.name": "qw", "k8s.pod.name": "pod-1"}),
        instrumentation_scope=InstrumentationScope("queue-worker", "1.2.3"),
    )
    return ours, sdk


def _decoded(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


@settings(max_examples=300)
@given(batch=st.lists(spans(), min_size=1, max_size=4))
def test_any_batch_decodes_to_what_the_sdks_encoder_writes(batch: list[tuple[otlp.SpanData, ReadableSpan]]) -> None:
    encoder = otlp.Encoder({"service.name": "qw", "k8s.pod.name": "pod-1"}, "queue-worker", "1.2.3")

    ours = _decoded(encoder.encode(span for span, _ in batch))
    again = _decoded(encoder.encode(span for span, _ in batch))  # from the caches
    theirs = _decoded(encode_spans([sdk for _, sdk in batch]).SerializeToString())

    assert ours == theirs
    assert again == theirs


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_a_varint_is_written_as_protobuf_writes_it(value: int) -> None:
    # A negative number is written as its 64-bit two's complement, as protobuf writes an int64.
    assert otlp.varint(value) == _VarintBytes(value % 2**64)


def test_an_unsupported_attribute_is_an_error_not_a_wrong_export() -> None:
    encoder = otlp.Encoder({}, "queue-worker", "1")
    span = otlp.SpanData("x", 1, 1, 0, 1, 0, 0, {"bad": object()})

    with pytest.raises(TypeError, match="object"):
        encoder.encode([span])


def _tracer(sampler: Any) -> tuple[Tracer, list[otlp.SpanData]]:
    ended: list[otlp.SpanData] = []
    return Tracer(sampler, ended.append), ended


def test_a_kept_span_records_what_the_api_sets_and_ends_once() -> None:
    tracer, ended = _tracer(ALWAYS_ON)
    with tracer.start_as_current_span("outer", kind=SpanKind.CONSUMER, attributes={"a": 1}) as outer:
        outer.set_attribute("b", "two")
        with tracer.start_as_current_span("inner", kind=SpanKind.CLIENT) as inner:
            assert trace.get_current_span() is inner
            inner.set_status(Status(StatusCode.ERROR, "status 502"))
        outer.end()  # ended early: use_span's end afterwards is a no-op
        outer.set_attribute("late", True)

    inner_data, outer_data = ended
    assert [s.name for s in (inner_data, outer_data)] == ["inner", "outer"]
    assert outer_data.attributes == {"a": 1, "b": "two"}
    assert (outer_data.kind, inner_data.kind) == (5, 3)  # OTLP's CONSUMER, CLIENT
    assert inner_data.parent_id == outer_data.span_id
    assert inner_data.trace_id == outer_data.trace_id
    assert (inner_data.status_code, inner_data.status_message) == (2, "status 502")
    assert 0 < outer_data.start_ns <= outer_data.end_ns


@pytest.mark.parametrize("current", [True, False])
def test_an_exception_in_a_span_is_recorded_as_an_event_and_an_error(current: bool) -> None:
    # Made current (use_span records it), or a span used as its own ``with`` (it records it).
    tracer, ended = _tracer(ALWAYS_ON)
    try:
        with tracer.start_as_current_span("boom") if current else tracer.start_span("boom"):
            raise ValueError("no")
    except ValueError:
        pass

    [span] = ended
    assert (span.status_code, span.status_message) == (2, "ValueError: no")
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"


@given(trace_id=ids128)
def test_a_dropped_span_records_nothing_but_carries_the_trace(trace_id: int) -> None:
    tracer, ended = _tracer(ALWAYS_OFF)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(trace_id, 7, True, TraceFlags(0))))

    span = tracer.start_span("dropped", context=parent)
    span.set_attribute("x", 1)
    span.end()

    assert not span.is_recording()
    assert ended == []
    assert span.get_span_context().trace_id == trace_id
    assert not span.get_span_context().trace_flags.sampled


class _RecordOnly:
    """A sampler that records every span and samples none (the SDK's RECORD_ONLY)."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)


def test_a_span_recorded_but_not_sampled_is_live_here_and_never_exported() -> None:
    tracer, ended = _tracer(_RecordOnly())

    with tracer.start_as_current_span("local") as span:
        span.set_attribute("x", 1)
        assert span.is_recording()
        assert not span.get_span_context().trace_flags.sampled

    assert ended == []


@given(
    trace_id=ids128,
    sampled=st.booleans(),
    state=st.dictionaries(st.sampled_from(["vendor", "other"]), st.sampled_from(["a", "b1"]), max_size=2),
)
def test_a_child_is_in_its_parents_trace_and_exported_exactly_when_it_is(
    trace_id: int, sampled: bool, state: dict[str, str]
) -> None:
    # The worker's client spans: handed their attempt's span rather than reading the current
    # one, and sampled as it was, without asking the sampler (ALWAYS_OFF here would drop them).
    tracer, ended = _tracer(ALWAYS_OFF)
    decision = Decision.RECORD_AND_SAMPLE if sampled else Decision.RECORD_ONLY
    result = SamplingResult(decision, trace_state=TraceState(list(state.items())))
    parent = tracer.started("attempt", trace.INVALID_SPAN_CONTEXT, trace_id, result, SpanKind.CONSUMER)
    assert isinstance(parent, RecordedSpan)

    with tracer.child("POST", parent, SpanKind.CLIENT, {"http.request.method": "POST"}) as child:
        child.set_attribute("http.response.status_code", 200)
        assert trace.get_current_span() is not child  # not made current
    parent.end()

    parent_context, child_context = parent.get_span_context(), child.get_span_context()
    assert child_context.trace_id == trace_id
    assert child_context.span_id != parent_context.span_id
    assert child_context.trace_flags == parent_context.trace_flags
    assert child_context.trace_state == parent_context.trace_state
    if not sampled:
        assert ended == []
        return
    child_data, parent_data = ended
    assert child_data.parent_id == parent_data.span_id
    assert child_data.trace_state == parent_data.trace_state
    assert child_data.attributes == {"http.request.method": "POST", "http.response.status_code": 200}
    assert child_data.kind == 3  # OTLP's CLIENT


@given(trace_id=ids128, parent_id=st.one_of(st.none(), ids64), sampled=st.booleans(), start=st.integers(1, 2**62))
def test_a_span_over_as_it_is_made_is_exported_as_one_that_started_and_ended(
    trace_id: int, parent_id: int | None, sampled: bool, start: int
) -> None:
    # The time a call waited: handed on as data, as ``started(...).end(...)`` would export it.
    result = SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.RECORD_ONLY)
    parent = SpanContext(trace_id, parent_id, True) if parent_id is not None else trace.INVALID_SPAN_CONTEXT
    tracer, over = _tracer(ALWAYS_OFF)
    reference, spans = _tracer(ALWAYS_OFF)

    tracer.over("queued", parent, trace_id, result, start, start + 5)
    reference.started("queued", parent, trace_id, result, start_time=start).end(start + 5)

    assert len(over) == len(spans) == (1 if sampled else 0)
    for made, expected in zip(over, spans, strict=True):
        assert replace(made, span_id=expected.span_id) == expected
        assert made.span_id != 0


@given(trace_ids=st.lists(ids128, min_size=200, max_size=200, unique=True))
def test_the_ratio_sampler_keeps_about_its_share(trace_ids: list[int]) -> None:
    tracer, ended = _tracer(TraceIdRatioBased(0.5))
    for trace_id in trace_ids:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(trace_id, 7, True)))
        tracer.start_span("s", context=parent).end()

    kept = {span.trace_id for span in ended}
    assert kept == {t for t in trace_ids if t & (2**64 - 1) < TraceIdRatioBased.get_bound_for_rate(0.5)}


def test_a_root_span_gets_a_valid_random_trace() -> None:
    tracer, ended = _tracer(ALWAYS_ON)
    for _ in range(50):
        tracer.start_span("root", context=Context()).end()

    assert len({span.trace_id for span in ended}) == 50
    assert all(span.parent_id == 0 for span in ended)
