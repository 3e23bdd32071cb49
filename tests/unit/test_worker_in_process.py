"""QueueWorker's routes in process: a MockTransport for the gateway and the receivers, an
in-memory status store, no NATS. Each route checks the outcome, the calls made, the callback
and the one status record written."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from prometheus_client import CollectorRegistry

from function import tracing
from function.callbacks.results import ResultStore
from function.invoke import Invoker
from function.metrics import OTHER_FUNCTIONS, FunctionLabels, WorkerMetrics
from function.settings import WorkerSettings
from function.status.state import FINAL, CallState, Record
from function.tracing.export import ratio_answers
from function.tracing.otlp import SpanData
from function.tracing.recorder import Tracer
from function.transport import ConnectFailed, MockTransport, Request, Response
from function.wire.queue_request import QueueRequest, encode
from function.worker import QueueWorker
from runtime import Ack, Context, DeadLetter, Event, Outcome, Retry, Settings

GATEWAY = "http://gateway.test:8080"
RECEIVER = "http://receiver.test/cb"


@dataclass
class MemoryStatus:
    """A status store that keeps what it is given."""

    records: list[Record] = field(default_factory=list)
    started_calls: list[str] = field(default_factory=list)
    enabled: bool = True

    def started(self, call_id: str, function: str, attempt: int) -> None:
        self.started_calls.append(call_id)

    async def write(self, record: Record) -> None:
        self.records.append(record)

    async def close(self) -> None:
        pass


@dataclass
class Rig:
    worker: QueueWorker
    gateway: MockTransport
    receiver: MockTransport
    status: MemoryStatus
    context: Context

    async def deliver(self, request: QueueRequest | bytes, attempt: int = 1) -> Outcome:
        data = request if isinstance(request, bytes) else encode(request)
        event = Event(data, {}, "faas-request", 7, attempt, datetime.now(UTC))
        return await self.worker.handle(event, self.context)


def rig(
    answer: Callable[[Request], Response],
    *,
    environ: dict[str, str] | None = None,
    cancelled: Container[str] = frozenset(),
    receiver_answer: Callable[[Request], Response] = lambda _: Response(200),
) -> Rig:
    env = {"gateway_url": GATEWAY, "initial_retry_wait": "1s", "max_retry_attempts": "3", **(environ or {})}
    gateway, receiver, status = MockTransport(answer), MockTransport(receiver_answer), MemoryStatus()
    worker = QueueWorker(
        settings=WorkerSettings.from_env(env),
        invoker=Invoker(transport=gateway, gateway_url=GATEWAY),
        callbacks=receiver,
        metrics=WorkerMetrics.create(CollectorRegistry(), "test"),
        rng=random.Random(1),
        status=status,
        cancellations=cancelled,
        results=ResultStore("unused"),
        labels=FunctionLabels(100, "openfaas-fn"),
    )
    context = Context(Settings.from_env({"queue_name": "faas-request"}), structlog.get_logger(), CollectorRegistry())
    return Rig(worker, gateway, receiver, status, context)


def request(call_id: str = "call-1", callback: bool = True, **fields: object) -> QueueRequest:
    header = {"X-Call-Id": (call_id,), "X-Callback-Url": (RECEIVER,)} if callback else {"X-Call-Id": (call_id,)}
    return QueueRequest(function="figlet", body=b"hi", header=header, **fields)  # type: ignore[arg-type]


async def test_success_invokes_once_posts_the_result_and_records_succeeded() -> None:
    r = rig(lambda _: Response(200, (("Content-Type", "text/plain"),), b"HI"))

    outcome = await r.deliver(request())

    assert outcome == Ack(reason="status 200")
    [call] = r.gateway.requests
    assert (call.method, call.url, call.body) == ("POST", f"{GATEWAY}/function/figlet/", b"hi")
    [posted] = r.receiver.requests
    headers = dict(posted.headers)
    assert (posted.url, posted.body, headers["X-Call-Status"], headers["X-Function-Status"]) == (
        RECEIVER,
        b"HI",
        "succeeded",
        "200",
    )
    [record] = r.status.records
    assert (record.state, record.fields["status"], record.fields["attempt"]) == (CallState.SUCCEEDED, 200, 1)


async def test_a_retried_status_waits_without_a_callback() -> None:
    r = rig(lambda _: Response(503))

    outcome = await r.deliver(request())

    assert isinstance(outcome, Retry)
    assert outcome.delay_s == 1.0
    assert r.receiver.requests == []
    [record] = r.status.records
    assert (record.state, record.fields["lastStatus"]) == (CallState.WAITING, 503)


async def test_a_gateway_that_cannot_be_reached_is_a_503_attempt() -> None:
    def refuse(_: Request) -> Response:
        raise ConnectFailed("cannot connect")

    r = rig(refuse)

    outcome = await r.deliver(request())

    assert isinstance(outcome, Retry)
    assert r.status.records[0].fields["lastStatus"] == 503


async def test_the_last_attempt_posts_the_failure_and_dead_letters() -> None:
    r = rig(lambda _: Response(500, (), b"boom"))

    outcome = await r.deliver(request(), attempt=3)

    assert isinstance(outcome, DeadLetter)
    assert (outcome.reason, outcome.detail["lastStatus"], outcome.detail["lastBody"]) == ("exhausted", 500, "boom")
    [posted] = r.receiver.requests
    assert (dict(posted.headers)["X-Function-Status"], dict(posted.headers)["X-Retry"]) == ("500", "2")
    [record] = r.status.records
    assert (record.state, record.fields["reason"]) == (CallState.DEAD_LETTERED, "exhausted")


@pytest.mark.parametrize(
    "callback",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://100.100.100.200/latest/meta-data",
        "http://metadata.google.internal/computeMetadata/v1/",
        "ftp://receiver.test/x",
        "http://receiver.test:99999/x",
        "http://[receiver.test]/x",
    ],
)
async def test_a_refused_callback_is_dead_lettered_before_invoking(callback: str) -> None:
    r = rig(lambda _: Response(200))
    refused = QueueRequest(function="figlet", header={"X-Call-Id": ("c",), "X-Callback-Url": (callback,)})

    outcome = await r.deliver(refused)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "callback_refused"
    assert (r.gateway.requests, r.receiver.requests) == ([], [])
    assert r.status.records[0].state == CallState.DEAD_LETTERED


async def test_a_cancelled_call_is_not_invoked_and_its_callback_says_so() -> None:
    r = rig(lambda _: Response(200), cancelled=frozenset({"call-1"}))

    outcome = await r.deliver(request())

    assert outcome == Ack(reason="cancelled")
    assert r.gateway.requests == []
    [posted] = r.receiver.requests
    assert (dict(posted.headers)["X-Call-Status"], dict(posted.headers)["X-Function-Status"]) == ("cancelled", "0")
    assert [record.state for record in r.status.records] == [CallState.CANCELLED]
    assert r.status.records[0].fields == {"attempts": 0}


async def test_a_cancelled_call_waiting_for_its_third_attempt_says_how_many_were_made() -> None:
    r = rig(lambda _: Response(200), cancelled=frozenset({"call-1"}), environ={"max_retry_attempts": "5"})

    await r.deliver(request(), attempt=3)

    [posted] = r.receiver.requests
    headers = dict(posted.headers)
    assert (headers["X-Retry"], headers["X-Retry-Max"]) == ("1", "4")
    assert r.status.records[0].fields == {"attempts": 2}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "undecodable"),
        (b"[" * 100_000, "undecodable"),
        (b'{"Function":"../system/functions"}', "invalid_request"),
        (b'{"Function":"f","Path":"/%2e%2e/%2e%2e/system/functions"}', "invalid_request"),
    ],
)
async def test_what_cannot_be_decoded_or_is_not_allowed_is_dead_lettered_unsent(data: bytes, reason: str) -> None:
    r = rig(lambda _: Response(200))

    outcome = await r.deliver(data)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == reason
    assert r.gateway.requests == []


async def test_a_request_over_the_header_limit_is_dead_lettered_and_its_status_says_so() -> None:
    r = rig(lambda _: Response(200), environ={"max_request_headers": "3"})
    many = QueueRequest(function="f", header={"X-Call-Id": ("c",), "X-A": ("1", "2", "3")})

    outcome = await r.deliver(many)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "limits"
    assert [(rec.state, rec.fields["reason"]) for rec in r.status.records] == [(CallState.DEAD_LETTERED, "limits")]


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from([200, 201, 302, 400, 404, 408, 429, 500, 502, 503, 504]),
    attempt=st.integers(1, 4),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["Retry-After", "X-OpenFaaS-Internal", "Content-Type"]),
            st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
        ),
        max_size=3,
    ),
    callback=st.booleans(),
)
async def test_every_answer_ends_in_an_outcome_and_a_status_that_agrees(
    status: int, attempt: int, headers: list[tuple[str, str]], callback: bool
) -> None:
    r = rig(lambda _: Response(status, tuple(headers), b"x"))

    outcome = await r.deliver(request(callback=callback), attempt=attempt)

    [record] = r.status.records
    match outcome:
        case Retry():
            assert record.state == CallState.WAITING
            assert r.receiver.requests == []
        case Ack():
            assert record.state in FINAL
            assert len(r.receiver.requests) == int(callback)
        case DeadLetter(reason="exhausted"):
            assert record.state == CallState.DEAD_LETTERED
            # Past the attempts (a dead letter that could not be stored): never invoked again.
            expected = 0 if attempt > 3 else 1
            assert (len(r.gateway.requests), len(r.receiver.requests)) == (expected, expected * int(callback))
        case _:
            pytest.fail(f"unexpected {outcome!r}")
    assert json.dumps(record.fields)  # what the store encodes


@settings(max_examples=200, deadline=None)
@given(status=st.sampled_from([200, 302, 400, 404, 429, 500, 503]), attempt=st.integers(1, 3), callback=st.booleans())
async def test_a_cancel_during_an_attempt_lets_it_finish_and_stops_whatever_would_follow(
    status: int, attempt: int, callback: bool
) -> None:
    cancelled: set[str] = set()

    def answer(_: Request) -> Response:
        cancelled.add("call-1")  # the DELETE arrives while the function runs
        return Response(status, (), b"last")

    r = rig(answer, cancelled=cancelled)
    retried = status in r.worker.settings.retry.codes and attempt < 3

    outcome = await r.deliver(request(callback=callback), attempt=attempt)

    [record] = r.status.records
    assert len(r.gateway.requests) == 1
    assert not isinstance(outcome, Retry)
    # What would have been retried is cancelled; a final result stands as it is.
    expected = CallState.CANCELLED if retried else (CallState.SUCCEEDED if status < 400 else None)
    if expected is not None:
        assert record.state == expected
    else:
        assert record.state in (CallState.FAILED, CallState.DEAD_LETTERED)
    assert record.fields["status"] == status
    if callback:
        [posted] = r.receiver.requests
        headers = dict(posted.headers)
        assert headers["X-Function-Status"] == str(status)
        assert posted.body == b"last"
        assert headers["X-Call-Status"] == (record.state if record.state != CallState.DEAD_LETTERED else "failed")


@given(
    calls=st.lists(
        st.tuples(st.from_regex(r"[a-z]{1,3}(\.ns[12])?", fullmatch=True), st.sampled_from([200, 404, 500])),
        max_size=300,
    ),
    limit=st.integers(1, 20),
)
def test_function_labels_are_bounded_stable_and_never_spent_on_unknown_functions(
    calls: list[tuple[str, int]], limit: int
) -> None:
    labels = FunctionLabels(limit, "openfaas-fn")
    given_out: dict[str, str] = {}
    for function, status in calls:
        label = labels(function) if status == 404 else labels.admit(function)
        if label != OTHER_FUNCTIONS:
            # Once a function has its own label it keeps it, in the gateway's name.namespace form.
            assert given_out.setdefault(function, label) == label
            assert label == (function if "." in function else f"{function}.openfaas-fn")
    answered = {f for f, status in calls if status != 404}
    assert len(given_out) <= limit
    assert set(given_out) <= answered
    # Until the cap is reached, every function the gateway knows gets its own label.
    if len(answered) <= limit:
        assert set(given_out) == answered
    else:
        assert len(given_out) == limit


@settings(max_examples=60, deadline=None)
@given(
    status=st.sampled_from([200, 202, 404, 429, 500, 502, 503, 504]),
    internal=st.booleans(),
    attempt=st.integers(min_value=1, max_value=3),
    codes=st.sampled_from(["429,503", "500", ""]),
)
async def test_an_outcome_says_overloaded_exactly_when_the_function_had_no_room(
    status: int, internal: bool, attempt: int, codes: str
) -> None:
    # Whatever comes of the answer (a retry, a last failure, an ack), function mode's limit
    # hears of a 429 and of the gateway's own 503 (no endpoints), and of nothing else.
    headers = (("X-OpenFaaS-Internal", "gateway"),) if internal else ()
    r = rig(lambda _: Response(status, headers), environ={"retry_http_codes": codes or "418"})

    outcome = await r.deliver(request(callback=False), attempt=attempt)

    assert outcome.overloaded == (status == 429 or (status == 503 and internal))


@contextmanager
def _every_attempt_traced() -> Iterator[list[SpanData]]:
    """Tracing on in this process, keeping every attempt; the spans ended, as they end."""
    sampler = TraceIdRatioBased(1.0)
    ended: list[SpanData] = []
    saved = tracing._tracer, tracing._sampler, tracing._answers, tracing._w3c_only
    tracing._tracer, tracing._sampler, tracing._w3c_only = Tracer(sampler, ended.append), sampler, True
    tracing._answers = ratio_answers(sampler)
    try:
        yield ended
    finally:
        tracing._tracer, tracing._sampler, tracing._answers, tracing._w3c_only = saved


#: Headers that differ from one run to the next whatever the tracing: its own, and a duration.
_VARYING = tracing.TRACE_HEADERS | {"x-duration-seconds"}


#: Status fields that are times, which differ from one run to the next.
_TIMES = {"durationSeconds", "nextAttemptAt"}


def _untraced(requests: list[Request]) -> list[tuple[object, ...]]:
    return [(r.method, r.url, [h for h in r.headers if h[0].lower() not in _VARYING], r.body) for r in requests]


@settings(max_examples=150, deadline=None)
@given(
    path=st.sampled_from(["", "/", "/a/b", "/%zz", "/50%", "/%41", "/caf\u00e9", "/a b", "/x?y=1"]),
    method=st.sampled_from(["POST", "GET", "PUT"]),
    header=st.sampled_from(["ok", "line\r\nbreak", "nul\x00"]),
    traceparent=st.sampled_from(
        ["", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-0af76519-b7ad-00", "garbage"]
    ),
    status=st.sampled_from([200, 400, 500, 503]),
    callback=st.booleans(),
    attempt=st.integers(1, 4),
)
async def test_tracing_changes_nothing_the_worker_decides_sends_or_records(
    path: str, method: str, header: str, traceparent: str, status: int, callback: bool, attempt: int
) -> None:
    # Whatever the stored request, an attempt that is traced ends as one that is not: the same
    # outcome, the same calls (but for their trace headers), the same status record.
    stored = request(callback=callback, path=path, method=method)
    extra = {"X-Extra": (header,)}
    if traceparent:  # the caller's trace, or what a caller sent as one
        extra["Traceparent"] = (traceparent,)
    stored = replace(stored, header={**stored.header, **extra})
    seen = []
    for traced in (False, True):
        r = rig(lambda _: Response(status, (), b"x"))
        if traced:
            with _every_attempt_traced() as spans:
                outcome = await r.deliver(stored, attempt=attempt)
            assert spans  # traced indeed
        else:
            outcome = await r.deliver(stored, attempt=attempt)
        records = [(rec.state, {k: v for k, v in rec.fields.items() if k not in _TIMES}) for rec in r.status.records]
        seen.append((outcome, _untraced(r.gateway.requests), _untraced(r.receiver.requests), records))

    assert seen[0] == seen[1]
