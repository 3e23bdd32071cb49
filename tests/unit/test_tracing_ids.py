"""The ids of an attempt's span: derived, so each attempt links to the one before it; and the
sampler's decision, taken from them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from function import tracing
from function.tracing import attempt_ids, trace_of
from function.tracing.export import ratio_answers
from function.tracing.recorder import Tracer

call_ids = st.text(min_size=1, max_size=40)
traces = st.integers(min_value=1, max_value=2**128 - 1)


def _parent(trace_id: int | None) -> Context:
    if trace_id is None:
        return Context()
    span = NonRecordingSpan(SpanContext(trace_id, 0xABC, True, TraceFlags(TraceFlags.SAMPLED)))
    return trace.set_span_in_context(span)


@given(call_id=call_ids, trace_id=traces, attempt=st.integers(min_value=2, max_value=1000))
def test_each_attempt_links_to_the_span_the_one_before_it_had(call_id: str, trace_id: int, attempt: int) -> None:
    _, [link] = attempt_ids(trace_id, call_id, attempt)
    before, _ = attempt_ids(trace_id, call_id, attempt - 1)

    assert (link.context.trace_id, link.context.span_id) == (trace_id, before)


@given(call_id=call_ids, trace_id=traces, attempts=st.sets(st.integers(min_value=1, max_value=1000), min_size=2))
def test_the_attempts_of_a_call_have_distinct_valid_span_ids(call_id: str, trace_id: int, attempts: set[int]) -> None:
    span_ids = {attempt_ids(trace_id, call_id, attempt)[0] for attempt in attempts}

    assert len(span_ids) == len(attempts)
    assert all(0 < span_id < 2**64 for span_id in span_ids)
    assert attempt_ids(trace_id, call_id, 1)[1] == []


@given(call_id=st.text(max_size=40), trace_id=st.one_of(st.none(), traces))
def test_the_trace_is_the_callers_else_derived_from_the_call_id_else_random(call_id: str, trace_id: int | None) -> None:
    made = trace_of(_parent(trace_id), call_id)

    if trace_id is not None:
        assert made == trace_id
    elif call_id:
        assert 0 < made < 2**128
        assert made == trace_of(Context(), call_id)
    else:
        assert made == 0  # no call id: unrelated calls must not share a derived trace


@given(first=call_ids, second=call_ids)
def test_calls_without_a_trace_get_one_each(first: str, second: str) -> None:
    assert (trace_of(Context(), first) == trace_of(Context(), second)) == (first == second)


@given(trace_id=traces, attempt=st.integers(min_value=1, max_value=1000))
def test_without_a_call_id_span_ids_are_random_and_unlinked(trace_id: int, attempt: int) -> None:
    assert attempt_ids(trace_id, "", attempt) == (0, [])


#: Samplers by rate: those answered without asking (a ratio, a parent-based ratio) and one that
#: is asked for a root but drops what a caller did not sample.
_SAMPLERS: list[Callable[[float], Sampler]] = [
    TraceIdRatioBased,
    ParentBasedTraceIdRatio,
    lambda rate: ParentBased(ALWAYS_ON if rate >= 0.5 else ALWAYS_OFF),
]


@settings(max_examples=400)
@given(
    rate=st.floats(min_value=0.0, max_value=1.0),
    kind=st.sampled_from(_SAMPLERS),
    call_id=call_ids,
    trace_id=traces,
    flags=st.sampled_from(["00", "01", "03", "fe"]),
    traced=st.sampled_from(["", "valid", "malformed", "spaced", "version ff", "zero span"]),
    tracestate=st.sampled_from(["", "congo=t61rcWkgMzE", "a=1,b=2", "not a state!"]),
    w3c=st.booleans(),
)
def test_a_samplers_answer_read_without_asking_it_is_the_samplers_own(
    rate: float,
    kind: Callable[[float], Sampler],
    call_id: str,
    trace_id: int,
    flags: str,
    traced: str,
    tracestate: str,
    w3c: bool,
) -> None:
    sampler = kind(rate)
    traceparent = {
        "": "",
        "valid": f"00-{trace_id:032x}-{0xABC:016x}-{flags}",
        "malformed": f"00-{trace_id:032x}-{flags}",
        "spaced": f" \t01-{trace_id:032x}-{0xABC:016x}-{flags}-later",
        "version ff": f"ff-{trace_id:032x}-{0xABC:016x}-{flags}",
        "zero span": f"00-{trace_id:032x}-{0:016x}-{flags}",
    }[traced]
    saved = tracing._sampler, tracing._answers, tracing._w3c_only
    # With W3C propagators (the default), a stored traceparent is read by hand; else extracted.
    tracing._sampler, tracing._answers, tracing._w3c_only = sampler, ratio_answers(sampler), w3c
    try:
        kept = tracing.sampled("process q", traceparent, tracestate, call_id)
    finally:
        tracing._sampler, tracing._answers, tracing._w3c_only = saved

    parent = _extracted(traceparent, tracestate)
    expected = sampler.should_sample(parent, trace_of(parent, call_id), "process q")
    assert (kept is not None) == expected.decision.is_sampled()
    if kept is not None:  # the whole answer, whether the sampler was asked or not
        assert kept.trace_id == (trace_of(parent, call_id) or kept.trace_id)  # (no call id: random)
        assert (kept.sampling.decision, kept.sampling.trace_state) == (expected.decision, expected.trace_state)
        assert dict(kept.sampling.attributes) == dict(expected.attributes)


@given(
    trace_id=st.integers(min_value=0, max_value=2**128 - 1),
    span_id=st.integers(min_value=0, max_value=2**64 - 1),
    flags=st.integers(min_value=0, max_value=255),
    state=st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9_\-*/]{0,10}", fullmatch=True),
            st.from_regex(r"[!-+\--<>-~]{1,10}", fullmatch=True),
        ),
        max_size=3,
        unique_by=lambda kv: kv[0],
    ),
)
def test_trace_headers_written_directly_are_the_w3c_propagators_own(
    trace_id: int, span_id: int, flags: int, state: list[tuple[str, str]]
) -> None:
    context = SpanContext(trace_id, span_id, False, TraceFlags(flags), TraceState(state))
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(NonRecordingSpan(context)))

    assert tracing.w3c_headers(context) == list(carrier.items())


@given(
    trace_id=traces,
    span_id=st.integers(min_value=1, max_value=2**64 - 1),
    sampled=st.booleans(),
    state=st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), st.from_regex(r"[a-z0-9]{1,5}", fullmatch=True)
        ),
        max_size=2,
        unique_by=lambda kv: kv[0],
    ),
)
def test_a_recorded_spans_ids_and_headers_are_those_of_its_span_context(
    trace_id: int, span_id: int, sampled: bool, state: list[tuple[str, str]]
) -> None:
    # The worker reads a kept span's ids from its data, without making its SpanContext.
    decision = Decision.RECORD_AND_SAMPLE if sampled else Decision.RECORD_ONLY
    answer = SamplingResult(decision, None, TraceState(state))
    span = Tracer(ALWAYS_ON, lambda _: None).started("process", INVALID_SPAN_CONTEXT, trace_id, answer, span_id=span_id)
    before, tracing._w3c_only = tracing._w3c_only, True
    try:
        headers, ids = tracing.injected(span), tracing.ids(span)
    finally:
        tracing._w3c_only = before
    context = span.get_span_context()
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(NonRecordingSpan(context)))

    assert (context.trace_id, context.span_id, context.trace_flags.sampled) == (trace_id, span_id, sampled)
    assert headers == list(carrier.items())
    assert ids == {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


@given(text=st.text(max_size=60), size=st.sampled_from([8, 16]))
def test_a_derived_id_is_the_blake2b_digest_of_its_text(text: str, size: int) -> None:
    # Fixed across versions: during a rolling upgrade, an attempt handled by a newer worker
    # still links to the span id an older one derived for the attempt before it.
    expected = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "big") or 1

    assert tracing._derived(text, size) == expected


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
def test_a_parent_based_ratio_sampler_is_answered_for_calls_with_no_parent_as_its_root_would_be(rate: float) -> None:
    # Read from the SDK's ParentBased: were it to stop holding its root sampler where it does,
    # every attempt would ask the sampler again (right, but at four times the cost).
    answers = ratio_answers(ParentBasedTraceIdRatio(rate))

    assert (answers.drops_from, answers.root_drops_from) == (None, TraceIdRatioBased(rate).bound)
    assert answers.drops_unsampled_parents
    assert ratio_answers(ALWAYS_ON) == tracing.RatioAnswers()
    assert not ratio_answers(ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON)).drops_unsampled_parents


_HEX = "0123456789abcdef"


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text(_HEX, min_size=size, max_size=size)


#: Stored ``traceparent`` values: any text, and headers built from valid and invalid parts.
traceparents = st.one_of(
    st.text(max_size=70),
    st.builds(
        lambda version, trace_id, span_id, flags, rest, pad: f"{pad}{version}-{trace_id}-{span_id}-{flags}{rest}{pad}",
        st.sampled_from(["00", "01", "ff", "0g", "0"]),
        st.one_of(_hex(32), st.sampled_from(["0" * 32, "0AF7651916CD43DD8448EB211C80319C", "0" * 31])),
        st.one_of(_hex(16), st.sampled_from(["0" * 16, "abc"])),
        st.one_of(_hex(2), st.just("1")),
        st.sampled_from(["", "-", "-x", "-00", " "]),
        st.sampled_from(["", " ", "\t", "\n"]),
    ),
    st.just("00-" + "1" * 32 + "-" + "2" * 16 + "-01" + "x" * 500),
)


@settings(max_examples=600)
@given(traceparents)
def test_a_traceparent_read_by_hand_is_read_as_the_w3c_propagator_reads_it(traceparent: str) -> None:
    context = trace.get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    ).get_span_context()

    expected = (context.trace_id, context.span_id, context.trace_flags) if context.is_valid else None
    assert tracing.w3c_parent(traceparent) == expected


@example(
    traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    tracestate="congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
)
@settings(max_examples=300)
@given(
    traceparent=st.one_of(
        st.builds(
            "00-{:032x}-{:016x}-{:02x}".format,
            st.integers(1, 2**128 - 1),
            st.integers(1, 2**64 - 1),
            st.integers(0, 255),
        ),
        traceparents,
    ),
    tracestate=st.one_of(
        st.text(max_size=40),
        st.lists(
            st.tuples(
                st.from_regex(r"[a-z][a-z0-9_*/-]{0,8}", fullmatch=True),
                # Valid values mostly; now and then one the propagator refuses (the whole header).
                st.text("abc!~1", min_size=1, max_size=6) | st.sampled_from(["ok", "", "a=b", "x,y", "a "]),
            ),
            max_size=4,
        ).map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)),
    ),
)
def test_a_parent_read_by_hand_is_the_one_the_propagator_extracts(traceparent: str, tracestate: str) -> None:
    extracted = _extracted(traceparent, tracestate)
    saved = tracing._w3c_only
    tracing._w3c_only = True  # the default propagators: the stored headers are read by hand
    try:
        built = tracing.parent(traceparent, tracestate)
    finally:
        tracing._w3c_only = saved

    assert built.keys() == extracted.keys()
    expected = trace.get_current_span(extracted).get_span_context()
    context = trace.get_current_span(built).get_span_context()
    assert (context, context.is_remote, dict(context.trace_state)) == (
        expected,
        expected.is_remote,
        dict(expected.trace_state),
    )


def _extracted(traceparent: str, tracestate: str) -> Context:
    """The context the W3C propagator extracts from stored trace headers."""
    if not traceparent:
        return Context()
    carrier = {"traceparent": traceparent, "tracestate": tracestate} if tracestate else {"traceparent": traceparent}
    return TraceContextTextMapPropagator().extract(carrier)


@pytest.mark.parametrize(
    ("propagators", "w3c"),
    [
        ("tracecontext,baggage", True),
        ("tracecontext", True),
        ("baggage", False),
        ("b3", False),
        ("tracecontext,b3", False),
    ],
)
def test_a_stored_traceparent_is_read_by_hand_only_when_the_propagators_read_it_as_w3c(
    propagators: str, w3c: bool
) -> None:
    # The propagators OTEL_PROPAGATORS would make; b3's are made up, with b3's header.
    made = {"tracecontext": TraceContextTextMapPropagator(), "baggage": W3CBaggagePropagator()}
    parts = [made.get(name) or _FieldsOnly({"b3"}) for name in propagators.split(",")]

    assert tracing.w3c_only(CompositePropagator(parts).fields) is w3c


class _FieldsOnly(TextMapPropagator):
    def __init__(self, fields: set[str]) -> None:
        self._fields = fields

    def extract(self, carrier: object, context: Context | None = None, getter: object = None) -> Context:
        raise NotImplementedError

    def inject(self, carrier: object, context: Context | None = None, setter: object = None) -> None:
        raise NotImplementedError

    @property
    def fields(self) -> set[str]:
        return self._fields


@given(call_id=call_ids)
def test_a_call_with_no_trace_gets_the_id_earlier_versions_derived(call_id: str) -> None:
    # During a rolling upgrade, an older worker's attempts and a newer one's share the trace.
    assert trace_of(Context(), call_id) == tracing._derived(f"call/{call_id}", 16)
