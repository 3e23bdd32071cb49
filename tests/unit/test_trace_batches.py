"""Trace export batching, on an event loop, with a send that records what it is given."""

from __future__ import annotations

import asyncio
import threading

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from function.tracing.batches import Batches, BatchSettings
from function.tracing.otlp import Encoder, SpanData
from runtime import ConfigError

LOG = structlog.get_logger()


def _span(index: int) -> SpanData:
    return SpanData(f"s{index}", 1, index + 1, 0, 1, index, index, {})


class Sent:
    def __init__(self, accept: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.accept = accept

    def __call__(self, data: bytes) -> str:
        self.threads.add(threading.get_ident())
        request = ExportTraceServiceRequest.FromString(data)
        self.batches.append([span.name for r in request.resource_spans for s in r.scope_spans for span in s.spans])
        return "" if self.accept else "status 503"


class Counted(dict[str, int]):
    """What the batches said became of their spans, by outcome."""

    def __call__(self, outcome: str, spans: int) -> None:
        self[outcome] = self.get(outcome, 0) + spans


def _batches(sent: Sent, counted: Counted | None = None, **settings: int) -> Batches:
    return Batches(Encoder({"service.name": "t"}, "qw", "1"), sent, BatchSettings(**settings), LOG, count=counted)


@settings(max_examples=30, deadline=None)
@given(count=st.integers(min_value=0, max_value=60), batch=st.integers(min_value=1, max_value=16))
def test_every_span_is_sent_once_in_order_in_batches_no_larger_than_the_setting(count: int, batch: int) -> None:
    sent = Sent()

    async def run() -> None:
        batches = _batches(sent, batch_size=batch, queue_size=1000, schedule_delay_ms=10)
        batches.start()
        for index in range(count):
            batches.ended(_span(index))
            if index % 7 == 0:
                await asyncio.sleep(0)
        await batches.close()

    asyncio.run(run())

    assert [name for names in sent.batches for name in names] == [f"s{i}" for i in range(count)]
    assert all(0 < len(names) <= batch for names in sent.batches)
    assert threading.get_ident() not in sent.threads  # the blocking send never runs on the loop


@settings(max_examples=40, deadline=None)
@given(
    ended=st.integers(min_value=0, max_value=60),
    batch=st.integers(min_value=1, max_value=8),
    queue=st.integers(min_value=8, max_value=32),
    answers=st.lists(st.sampled_from(["taken", "refused", "raises"]), min_size=1, max_size=8),
)
def test_every_span_ended_is_counted_once_as_exported_dropped_or_failed(
    ended: int, batch: int, queue: int, answers: list[str]
) -> None:
    """Whatever the collector answers and however full the queue gets, the counts add up to the
    spans ended, and ``exported`` is what the collector took."""
    counted = Counted()
    taken = 0
    calls = 0

    def send(data: bytes) -> str:
        nonlocal taken, calls
        answer = answers[calls % len(answers)]
        calls += 1
        if answer == "raises":
            raise ConnectionError("collector gone")
        if answer == "refused":
            return "status 503"
        taken += sum(
            len(s.spans) for r in ExportTraceServiceRequest.FromString(data).resource_spans for s in r.scope_spans
        )
        return ""

    async def run() -> None:
        batches = Batches(
            Encoder({}, "qw", "1"), send, BatchSettings(batch_size=batch, queue_size=queue, schedule_delay_ms=5),
            LOG, count=counted,
        )  # fmt: skip
        batches.start()
        for index in range(ended):
            batches.ended(_span(index))
            if index % 5 == 0:
                await asyncio.sleep(0.001)
        await batches.close()

    asyncio.run(run())

    assert sum(counted.values()) == ended
    assert counted.get("exported", 0) == taken


def test_a_full_batch_goes_out_before_the_delay() -> None:
    sent = Sent()

    async def run() -> None:
        batches = _batches(sent, batch_size=5, schedule_delay_ms=60_000)
        batches.start()
        for index in range(5):
            batches.ended(_span(index))
        for _ in range(200):
            if sent.batches:
                break
            await asyncio.sleep(0.01)
        assert sent.batches == [[f"s{i}" for i in range(5)]]
        await batches.close()

    asyncio.run(run())


def test_a_partial_batch_waits_for_the_delay() -> None:
    sent = Sent()

    async def run() -> None:
        batches = _batches(sent, batch_size=100, schedule_delay_ms=50)
        batches.start()
        batches.ended(_span(0))
        await asyncio.sleep(0.01)
        assert sent.batches == []  # 5x inside the delay
        for _ in range(200):
            if sent.batches:
                break
            await asyncio.sleep(0.01)
        assert sent.batches == [["s0"]]
        await batches.close()

    asyncio.run(run())


def test_beyond_the_queue_spans_are_dropped_and_counted_not_kept() -> None:
    sent = Sent()

    async def run() -> int:
        batches = _batches(sent, batch_size=4, queue_size=4, schedule_delay_ms=60_000)
        for index in range(10):  # not started: nothing leaves until close
            batches.ended(_span(index))
        dropped = batches.dropped
        await batches.close()
        return dropped

    assert asyncio.run(run()) == 6
    assert sent.batches == [["s0", "s1", "s2", "s3"]]


def test_refused_exports_are_counted() -> None:
    sent, counted = Sent(accept=False), Counted()

    async def run() -> None:
        batches = _batches(sent, counted, batch_size=2)
        for index in range(3):
            batches.ended(_span(index))
        await batches.close()

    asyncio.run(run())
    assert counted["failed"] == 3


def test_an_export_that_raises_is_counted_and_the_next_batch_still_goes_out() -> None:
    sent = Sent()
    calls = 0

    def flaky(data: bytes) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("collector gone")
        return sent(data)

    counted = Counted()

    async def run() -> None:
        settings = BatchSettings(batch_size=2, schedule_delay_ms=60_000)
        batches = Batches(Encoder({}, "qw", "1"), flaky, settings, LOG, count=counted)
        batches.start()
        for index in range(4):
            batches.ended(_span(index))
        for _ in range(500):  # both batches go out while running, the first one failing
            if sent.batches:
                break
            await asyncio.sleep(0.01)
        await batches.close()

    asyncio.run(run())
    assert counted["failed"] == 2
    assert sent.batches == [["s2", "s3"]]


@settings(max_examples=30, deadline=None)
@given(waiting=st.integers(min_value=1, max_value=40), batch=st.integers(min_value=1, max_value=8))
def test_at_shutdown_the_first_failed_export_ends_it_and_nothing_is_retried(waiting: int, batch: int) -> None:
    """A collector that is down costs one export at shutdown, however much is waiting, and the
    client is told to stop retrying before it is asked."""
    order: list[str] = []
    counted = Counted()

    def down(data: bytes) -> str:
        order.append("send")
        return "ConnectFailed: connection refused"

    async def run() -> None:
        stop = lambda: order.append("stop retries")  # noqa: E731
        batches = Batches(Encoder({}, "qw", "1"), down, BatchSettings(batch_size=batch), LOG, stop, counted)
        for index in range(waiting):  # not started: all of it waits for shutdown
            batches.ended(_span(index))
        await batches.close()

    asyncio.run(run())
    assert counted["failed"] == waiting
    assert order == ["stop retries", "send"]


def test_a_span_that_cannot_be_encoded_is_counted_and_lost_alone() -> None:
    sent, counted = Sent(), Counted()

    async def run() -> None:
        batches = _batches(sent, counted, batch_size=2)
        batches.ended(_span(0))
        batches.ended(SpanData("bad", 1, 1, 0, 1, 0, 0, {"x": object()}))
        batches.ended(_span(1))
        await batches.close()

    asyncio.run(run())
    assert counted["failed"] == 1
    # Spans are encoded as their batch goes out: the bad one leaves a gap in its batch.
    assert sent.batches == [["s0"], ["s1"]]


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_BSP_SCHEDULE_DELAY": "soon"}, "OTEL_BSP_SCHEDULE_DELAY"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-3"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100", "OTEL_BSP_MAX_QUEUE_SIZE": "10"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_EXPORT_TIMEOUT": "1.5"}, "OTEL_BSP_EXPORT_TIMEOUT"),
    ],
)
def test_a_bad_batching_setting_names_its_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        BatchSettings.from_environment(environ)

    assert raised.value.variable == variable
    assert "\n" not in str(raised.value)


def test_unset_batching_settings_are_the_sdks_defaults() -> None:
    assert BatchSettings.from_environment({}) == BatchSettings(5000, 2048, 512, 30000)
