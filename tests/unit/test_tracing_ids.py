"""The ids of an attempt's span: derived, so each attempt links to the one before it. Pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from function.tracing import attempt_ids

call_ids = st.text(min_size=1, max_size=40)
traces = st.one_of(st.none(), st.integers(min_value=1, max_value=2**128 - 1))


def _parent(trace_id: int | None) -> Context:
    if trace_id is None:
        return Context()
    span = NonRecordingSpan(SpanContext(trace_id, 0xABC, True, TraceFlags(TraceFlags.SAMPLED)))
    return trace.set_span_in_context(span)


@given(call_id=call_ids, trace_id=traces, attempt=st.integers(min_value=2, max_value=1000))
def test_each_attempt_links_to_the_span_the_one_before_it_had(call_id: str, trace_id: int | None, attempt: int) -> None:
    parent = _parent(trace_id)
    (this_trace, _), [link] = attempt_ids(parent, call_id, attempt)
    (before_trace, before_span), _ = attempt_ids(parent, call_id, attempt - 1)

    assert (link.context.trace_id, link.context.span_id) == (before_trace, before_span)
    assert this_trace == before_trace == (trace_id or this_trace)


@given(call_id=call_ids, trace_id=traces)
def test_the_first_attempt_links_to_nothing_and_ids_are_valid(call_id: str, trace_id: int | None) -> None:
    (trace_id_made, span_id), links = attempt_ids(_parent(trace_id), call_id, 1)

    assert links == []
    assert 0 < trace_id_made < 2**128
    assert 0 < span_id < 2**64


@given(first=call_ids, second=call_ids)
def test_calls_without_a_trace_get_one_each(first: str, second: str) -> None:
    (one, _), _ = attempt_ids(Context(), first, 1)
    (two, _), _ = attempt_ids(Context(), second, 1)

    assert (one == two) == (first == second)
