"""Traces end to end: a real OTLP/HTTP receiver decodes what the worker exports, and the call's
spans form one tree under the caller's trace, with the function and the callback receiver
getting child ``traceparent``s."""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from nats.aio.client import Client
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from function.tracing import trace_of
from harness.otlp import OtlpReceiver, ReceivedSpan
from harness.ports import free_port
from harness.publish import publish_request
from harness.servers import RecordingServer, wait_until
from tests.support import Queue, WorkerFactory, queued

pytestmark = pytest.mark.e2e
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
CONSUMER, PRODUCER, CLIENT = 5, 4, 3  # OTLP's SpanKind numbers


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    receiver = await OtlpReceiver().start()
    yield receiver
    await receiver.close()


def _tracing(otlp: OtlpReceiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "qw-test"}


def _parent_of(traceparent: str | None) -> tuple[str, str]:
    """(trace id, parent span id) of a ``traceparent``."""
    assert traceparent is not None
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


async def test_a_retried_call_with_a_callback_is_one_tree_under_the_callers_trace(
    otlp: OtlpReceiver, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    answers = itertools.chain([503], itertools.repeat(200))

    async def flaky(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=next(answers), text="ok")

    gateway.behaviours["flaky"] = flaky
    worker = start_worker(**_tracing(otlp))
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        queued = await client.post(
            f"http://127.0.0.1:{worker.port}/async-function/flaky",
            content=b"x",
            headers={"traceparent": f"00-{TRACE}-{CALLER}-01", "X-Callback-Url": receiver.url + "/done"},
        )
    [callback] = await receiver.wait_for(1)
    await wait_until(lambda: sum(s.kind == CLIENT for s in otlp.spans) == 3, 10, "three client spans exported")

    spans = otlp.spans
    assert {s.trace_id for s in spans} == {TRACE}
    assert {s.service for s in spans} == {"qw-test"}
    [send] = [s for s in spans if s.kind == PRODUCER]
    [queued_span] = [s for s in spans if s.name == "queued"]
    attempts = sorted((s for s in spans if s.kind == CONSUMER), key=lambda s: s.attributes["queue_worker.attempt"])

    def children(parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [s for s in spans if s.parent_id == parent.span_id]

    # The caller's span -> send -> queued and both attempts, as siblings.
    assert send.parent_id == CALLER
    assert queued.headers["traceparent"] == f"00-{TRACE}-{send.span_id}-01"
    assert queued_span.parent_id == send.span_id
    assert [a.parent_id for a in attempts] == [send.span_id, send.span_id]
    assert [a.attributes["queue_worker.attempt"] for a in attempts] == [1, 2]
    assert [a.attributes["queue_worker.outcome"] for a in attempts] == ["retry", "ack"]
    assert attempts[0].attributes["messaging.message.id"] == queued.headers["X-Call-Id"]
    # The second attempt links to the first: the retries read as one story.
    assert [a.links for a in attempts] == [(), ((TRACE, attempts[0].span_id),)]
    # Attempt 1: the failed invocation. Attempt 2: the invocation, then the callback.
    [failed] = children(attempts[0])
    invoked, called_back = sorted(children(attempts[1]), key=lambda s: "cb" in str(s.attributes["url.full"]))
    assert (failed.attributes["http.response.status_code"], failed.error) == (503, True)
    assert (invoked.attributes["http.response.status_code"], invoked.error) == (200, False)
    assert called_back.attributes["url.full"] == receiver.url + "/done"
    # The function and the receiver get traceparents naming those client spans.
    calls = gateway.calls_to("flaky")
    assert [_parent_of(c.header("traceparent")) for c in calls] == [(TRACE, failed.span_id), (TRACE, invoked.span_id)]
    assert _parent_of(callback.header("traceparent")) == (TRACE, called_back.span_id)
    # And the log lines carry the ids, so logs and traces link.
    invoked_lines = worker.events("Invoked")
    assert {line["trace_id"] for line in invoked_lines} == {TRACE}
    assert [line["span_id"] for line in invoked_lines] == [a.span_id for a in attempts]
    # Every span the collector took is counted exported, and none failed or was dropped (each
    # outcome has its series from the start, at 0).
    metrics = (await worker.get("/metrics", metrics=True)).text
    assert [_sample(metrics, outcome) for outcome in ("exported", "dropped", "failed")] == [len(spans), 0, 0]


async def test_the_front_door_starts_a_trace_when_the_caller_sent_none(
    otlp: OtlpReceiver, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker(**_tracing(otlp))
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        queued = await client.post(f"http://127.0.0.1:{worker.port}/async-function/echo", content=b"x")
    await wait_until(lambda: len(gateway.calls_to("echo")) == 1, 10, "the call")
    await wait_until(lambda: any(s.kind == CLIENT for s in otlp.spans), 10, "spans exported")

    trace_id, send_id = _parent_of(queued.headers.get("traceparent"))
    [send] = [s for s in otlp.spans if s.kind == PRODUCER]
    assert (send.trace_id, send.span_id, send.parent_id) == (trace_id, send_id, "")
    assert _parent_of(gateway.calls_to("echo")[0].header("traceparent"))[0] == trace_id


async def test_with_tracing_off_the_callers_traceparent_reaches_the_function_unchanged(
    gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker()
    await worker.wait_ready()
    traceparent = f"00-{TRACE}-{CALLER}-01"

    async with httpx.AsyncClient() as client:
        queued = await client.post(
            f"http://127.0.0.1:{worker.port}/async-function/echo", content=b"x", headers={"traceparent": traceparent}
        )
    await wait_until(lambda: len(gateway.calls_to("echo")) == 1, 10, "the call")

    assert "traceparent" not in queued.headers
    assert gateway.calls_to("echo")[0].header("traceparent") == traceparent
    # The worker logs the invocation once the function's answer is in, a moment after the call.
    await wait_until(lambda: bool(worker.events("Invoked")), 10, "the invocation logged")
    assert "trace_id" not in worker.events("Invoked")[0]


async def test_the_retries_of_a_failed_callback_join_the_calls_trace(
    otlp: OtlpReceiver, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    answers = itertools.chain([503], itertools.repeat(200))

    async def flaky_receiver(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=next(answers))

    receiver.default = flaky_receiver
    worker = start_worker(callback_initial_retry_wait="100ms", **_tracing(otlp))
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        await client.post(
            f"http://127.0.0.1:{worker.port}/async-function/echo",
            content=b"x",
            headers={"traceparent": f"00-{TRACE}-{CALLER}-01", "X-Callback-Url": receiver.url + "/done"},
        )
    first, second = await receiver.wait_for(2)
    await wait_until(lambda: any("queue_worker.callback_delivery" in s.attributes for s in otlp.spans), 10, "job span")
    await wait_until(lambda: sum(s.kind == CLIENT for s in otlp.spans) == 3, 10, "three client spans")

    [attempt] = [s for s in otlp.spans if "queue_worker.attempt" in s.attributes]
    [job] = [s for s in otlp.spans if "queue_worker.callback_delivery" in s.attributes]
    [repost] = [s for s in otlp.spans if s.parent_id == job.span_id]
    assert (job.trace_id, job.parent_id, job.kind) == (TRACE, attempt.span_id, CONSUMER)
    assert job.attributes["queue_worker.callback_delivery"] == 2
    assert _parent_of(second.header("traceparent")) == (TRACE, repost.span_id)
    assert _parent_of(first.header("traceparent"))[0] == TRACE


async def test_the_attempts_of_a_call_stored_without_a_trace_share_one_and_are_linked(
    nc: Client, queue: Queue, otlp: OtlpReceiver, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    # As the OpenFaaS gateway stores a call whose caller sent no traceparent; each call's first
    # attempt fails.
    seen: set[str] = set()

    async def flaky(request: web.Request, body: bytes) -> web.Response:
        call_id = request.headers["X-Call-Id"]
        first = call_id not in seen
        seen.add(call_id)
        return web.Response(status=503 if first else 200, text="ok")

    gateway.behaviours["flaky"] = flaky
    worker = start_worker(**_tracing(otlp))
    await worker.wait_ready()
    for call_id in ("untraced-1", "untraced-2"):
        await publish_request(nc, queue.subject, queued("flaky", call_id))
    await gateway.wait_for(4)
    await wait_until(lambda: sum(s.kind == CONSUMER for s in otlp.spans) == 4, 10, "four attempts exported")

    for call_id in ("untraced-1", "untraced-2"):
        attempts = sorted(
            (s for s in otlp.spans if s.kind == CONSUMER and s.attributes["messaging.message.id"] == call_id),
            key=lambda s: s.attributes["queue_worker.attempt"],
        )
        [trace_id] = {a.trace_id for a in attempts}
        assert [a.attributes["queue_worker.attempt"] for a in attempts] == [1, 2]
        assert attempts[1].links == ((trace_id, attempts[0].span_id),)
    # Two calls, two traces.
    assert len({s.trace_id for s in otlp.spans if s.kind == CONSUMER}) == 2


async def test_the_sampler_keeps_whole_calls_and_a_dropped_one_passes_its_traceparent_through(
    nc: Client, queue: Queue, otlp: OtlpReceiver, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    # Half the calls, chosen by their trace ids: those of the calls without a caller's trace are
    # derived from the call id, the others are the caller's.
    worker = start_worker(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.5", **_tracing(otlp))
    await worker.wait_ready()
    calls = {f"sampled-{i}": "" for i in range(30)}
    calls.update({f"traced-{i}": f"00-{os.urandom(16).hex()}-{CALLER}-01" for i in range(10)})
    for call_id, traceparent in calls.items():
        request = queued("echo", call_id)
        if traceparent:
            request.header["traceparent"] = (traceparent,)
        await publish_request(nc, queue.subject, request)
    await gateway.wait_for(len(calls))

    bound = TraceIdRatioBased.get_bound_for_rate(0.5)
    trace_ids = {
        call_id: int(_parent_of(tp)[0], 16) if tp else trace_of(Context(), call_id) for call_id, tp in calls.items()
    }
    kept = {call_id for call_id, trace_id in trace_ids.items() if trace_id & (2**64 - 1) < bound}
    assert 0 < len(kept) < len(calls)  # both kinds happen (fixed call ids: not a matter of luck)
    await wait_until(lambda: sum(s.kind == CLIENT for s in otlp.spans) == len(kept), 10, "the kept calls' spans")
    by_call = {call.header("X-Call-Id"): call for call in gateway.calls_to("echo")}
    for call_id, traceparent in calls.items():
        received = by_call[call_id].header("traceparent")
        if call_id not in kept:
            assert received == (traceparent or None)  # passed through as when tracing is off
            continue
        trace_id = f"{trace_ids[call_id]:032x}"
        spans = {s.name: s for s in otlp.spans if s.trace_id == trace_id}
        assert set(spans) == {"queued", f"process {queue.subject}", "POST"}
        assert _parent_of(received) == (trace_id, spans["POST"].span_id)
    await asyncio.sleep(0.3)  # three export intervals: nothing more arrives
    assert len(otlp.spans) == 3 * len(kept)


async def test_spans_reach_a_collector_over_mutual_tls_compressed_as_configured(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory, certificates: Path
) -> None:
    # A collector that takes only clients with a certificate from the test CA.
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certificates / "nats-ca.crt"))
    tls.load_cert_chain(certificates / "server.crt", certificates / "server.key")
    tls.verify_mode = ssl.CERT_REQUIRED
    collector = await OtlpReceiver(tls=tls).start()
    try:
        worker = start_worker(
            **_tracing(collector),
            OTEL_EXPORTER_OTLP_CERTIFICATE=str(certificates / "nats-ca.crt"),
            OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE=str(certificates / "client.crt"),
            OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY=str(certificates / "client.key"),
            OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
        )
        await worker.wait_ready()
        await publish_request(nc, queue.subject, queued("figlet", "over-tls"))
        await wait_until(lambda: any(s.kind == CONSUMER for s in collector.spans), 10, "the attempt exported")
    finally:
        await collector.close()

    assert collector.url.startswith("https://")
    assert {s.attributes.get("messaging.message.id") for s in collector.spans if s.kind == CONSUMER} == {"over-tls"}
    assert collector.encodings == {"gzip"}


@pytest.fixture
async def silent_collector() -> AsyncIterator[str]:
    """An endpoint that takes connections and never answers (a collector that hangs)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("down", ["refusing", "silent"])
async def test_a_collector_that_is_down_costs_the_shutdown_one_export_not_the_grace_period(
    down: str,
    silent_collector: str,
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    endpoint = silent_collector if down == "silent" else f"http://127.0.0.1:{free_port()}"  # nobody listens
    worker = start_worker(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_TRACES_SAMPLER="always_on",
        OTEL_BSP_SCHEDULE_DELAY="100",
        # Many small batches waiting at shutdown, each of which the client would try for 1 s.
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="8",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    await worker.wait_ready()
    for n in range(150):
        await publish_request(nc, queue.subject, queued("echo", f"down-{n}"))
    await wait_until(lambda: len(gateway.calls_to("echo")) == 150, 20, "the calls")
    # Counted as well as logged: the metric an alert reads.
    for _ in range(100):
        failed = _sample((await worker.get("/metrics", metrics=True)).text, "failed")
        if failed:
            break
        await asyncio.sleep(0.1)
    assert failed is not None
    assert failed > 0

    started = time.monotonic()
    assert await asyncio.to_thread(worker.terminate, 60) == 0
    took = time.monotonic() - started

    # Before, the export at shutdown tried each waiting batch for its timeout, until the export
    # timeout (30 s) ran out: past Kubernetes' default grace period.
    assert took < 10, f"exited {took:.1f}s after SIGTERM"
    errors = " ".join(line["error"] for line in worker.events("Trace spans not exported"))
    assert ("ConnectFailed" if down == "refusing" else "TransportTimeout") in errors
    [last] = worker.events("Trace spans not exported before shutdown")
    assert last["spans"] > 0


def _sample(exposition: str, outcome: str) -> float | None:
    """``queue_worker_trace_spans_total`` for ``outcome``, or ``None`` when it has no series."""
    for line in exposition.splitlines():
        if line.startswith("queue_worker_trace_spans_total{") and f'outcome="{outcome}"' in line:
            return float(line.split()[-1])
    return None
