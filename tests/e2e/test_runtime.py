"""The generic runtime with a test function: settlement, failures, ack deadlines, shutdown."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from harness.natsd import NatsServer
from harness.publish import publish_request
from harness.servers import RecordingServer, wait_until
from harness.worker import HANDLER, TEMPLATE, WorkerProcess
from tests.support import Queue, WorkerFactory, create_stream, queued, stream_messages, wait_for_empty

pytestmark = pytest.mark.e2e
PROBE = Path(__file__).parent / "handlers" / "probe"


def _received(worker: object, data: str) -> list[dict[str, object]]:
    return [e for e in worker.events("Received") if e.get("data") == data]  # type: ignore[attr-defined]


async def test_a_handler_exception_never_stops_the_others_and_the_message_comes_back(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    await create_stream(nc, queue)
    for data in [b"a", b"boom", b"wrong type", b"b", b"term", b"none", b"c"]:
        await nc.jetstream().publish(queue.subject, data)

    worker = start_worker(PROBE)
    await worker.wait_ready()

    # The good ones complete at once; "boom" fails once, then succeeds on its second delivery.
    await wait_until(lambda: all(_received(worker, d) for d in ["a", "b", "c", "term", "none"]), 10, "good messages")
    await wait_until(lambda: any(e["attempt"] == 2 for e in _received(worker, "boom")), 10, "boom redelivered")
    failures = worker.events("Handler failed")
    assert [f["delivery"] for f in failures] == [1]
    assert "RuntimeError: boom on first delivery" in failures[0]["exception"]
    assert worker.events("Handler returned something that is not an outcome")
    assert worker.events("Terminated")[0]["reason"] == "asked to"
    # "wrong type" keeps coming back (it is a bug in the handler), everything else is settled.
    await wait_until(lambda: len(_received(worker, "wrong type")) >= 2, 10, "wrong type redelivered")
    assert (await worker.get("/_/ready")).status_code == 200


async def test_a_call_three_times_longer_than_ack_wait_runs_once(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    worker = start_worker(PROBE, ack_wait="1s")
    await worker.wait_ready()

    await nc.jetstream().publish(queue.subject, b"sleep:3")
    await nc.jetstream().publish(queue.subject, b"after")

    await wait_until(lambda: bool(_received(worker, "after")), 10, "second message")
    await wait_for_empty(nc, queue, timeout_s=10)
    assert len(_received(worker, "sleep:3")) == 1


async def test_one_slot_asks_for_the_next_message_as_soon_as_it_is_free(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    worker = start_worker(PROBE, max_inflight="1")  # fetch_wait is 250 ms in tests
    await worker.wait_ready()
    for n in range(50):
        await nc.jetstream().publish(queue.subject, f"m{n}".encode())
    started = time.monotonic()

    await wait_until(lambda: len(worker.events("Received")) >= 50, 30, "fifty messages, one at a time")

    # About 0.5 s; waiting out a pull's expiry between messages would take 50 x 250 ms.
    assert time.monotonic() - started < 5


async def test_a_deleted_consumer_is_reported_and_its_return_picked_up(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    worker = start_worker(PROBE)  # fetch_wait is 250 ms in tests
    await worker.wait_ready()
    js = nc.jetstream()
    config = (await js.consumer_info(queue.stream, queue.durable)).config

    await js.delete_consumer(queue.stream, queue.durable)
    await wait_until(lambda: bool(worker.events("Pull refused")), 10, "refused pulls reported")
    await asyncio.sleep(3)
    refused = len(worker.events("Pull refused"))
    await js.add_consumer(queue.stream, config)
    await js.publish(queue.subject, b"after")

    await wait_until(lambda: bool(_received(worker, "after")), 10, "a message once the consumer is back")
    # Paused a second after each refusal (about four in those seconds), not asking in a tight loop.
    assert refused <= 20, refused
    assert {e["status"] for e in worker.events("Pull refused")} <= {"409", "503"}


async def test_sigterm_lets_the_running_call_finish_and_exits_zero(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    worker = start_worker(PROBE, max_inflight="1")
    await worker.wait_ready()
    await nc.jetstream().publish(queue.subject, b"sleep:1")
    await nc.jetstream().publish(queue.subject, b"waiting")
    await wait_until(lambda: bool(_received(worker, "sleep:1")), 10, "slow call started")

    assert worker.terminate(timeout_s=15) == 0

    assert not _received(worker, "waiting")
    drained = worker.events("In-flight calls drained")
    assert drained
    assert drained[0]["finished"] == 1
    assert drained[0]["returned"] == 0
    # The finished call was acked; the unstarted one is still there for the next worker.
    assert await stream_messages(nc, queue) == 1


async def test_sigterm_stops_the_worker_even_when_a_task_loses_its_cancellation(start_worker: WorkerFactory) -> None:
    # The function's on_connect, cancelled at SIGTERM, goes on as if it never was: the runtime
    # must cancel it again, not wait for it forever (a function-mode worker once hung so, its
    # discovery task cancelled just as a stream-info answer came).
    worker = start_worker(PROBE, probe_on_connect="lose a cancellation")
    await wait_until(lambda: bool(worker.events("Waiting in on_connect")), 10, "on_connect to start")

    assert worker.terminate(timeout_s=15) == 0

    assert worker.events("Cancellation lost")
    assert worker.events("Stopped")


async def test_a_call_that_loses_its_cancellation_is_cut_short_all_the_same_and_handed_back(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    worker = start_worker(PROBE, shutdown_timeout="1s")
    await worker.wait_ready()
    await nc.jetstream().publish(queue.subject, b"lose a cancellation")
    await wait_until(lambda: bool(_received(worker, "lose a cancellation")), 10, "the call to start")

    assert worker.terminate(timeout_s=15) == 0

    assert worker.events("Cancellation lost")
    drained = worker.events("In-flight calls drained")
    assert drained
    assert drained[0]["returned"] == 1
    assert await stream_messages(nc, queue) == 1  # handed back for the next worker


async def test_a_connection_closed_for_good_ends_the_process_so_it_is_restarted(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    worker = start_worker(PROBE)
    await worker.wait_ready()

    await nc.jetstream().publish(queue.subject, b"overflow")

    assert await asyncio.to_thread(worker.process.wait, 15) == 1  # type: ignore[union-attr]
    assert worker.events("NATS connection closed for good")


@pytest.mark.parametrize(
    ("environ", "variable", "accepted"),
    [
        ({"max_inflight": "-1"}, "max_inflight", "whole number from 1"),
        ({"ack_wait": "60"}, "ack_wait", "Go duration"),
        ({"backoff": "sometimes"}, "backoff", "one of exponential, full, equal"),
        ({"upstream_timeout": "forever"}, "upstream_timeout", "Go duration"),
        ({"max_retry_wait": "5s"}, "max_retry_wait", "at least initial_retry_wait (10s)"),
        ({"callback_max_retry_wait": "1s", "callback_initial_retry_wait": "2s"}, "callback_max_retry_wait", "(2s)"),
        ({"callback_allowlist": "https://"}, "callback_allowlist", "http(s) URL prefixes"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_BSP_MAX_QUEUE_SIZE": "0"},
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "at least 1",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:1", "OTEL_EXPORTER_OTLP_CERTIFICATE": "/no/such/ca.crt"},
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "No such file",
        ),
    ],
)
@pytest.mark.parametrize("encoding", ["console", "json"])
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(
    environ: dict[str, str], variable: str, accepted: str, encoding: str
) -> None:
    # Runtime settings and the queue-worker's own are both checked before anything starts, and
    # both are reported the same way: one line, in the log's own encoding, and exit status 78.
    result = subprocess.run(
        [sys.executable, str(TEMPLATE / "index.py")],
        env={
            **environ,
            "log_encoding": encoding,
            "handler_dir": str(HANDLER),
            "nats_url": "nats://127.0.0.1:1",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 78
    [line] = [line for line in result.stderr.splitlines() if "Invalid configuration" in line]
    if encoding == "json":
        assert json.loads(line)["variable"] == variable
    assert variable in line
    assert accepted in line
    assert "Starting" not in result.stderr


async def test_nats_without_jetstream_is_said_in_one_line_naming_the_server(start_worker: WorkerFactory) -> None:
    plain = NatsServer(jetstream=False).start()
    try:
        worker = start_worker(nats_url=plain.url)
        await wait_until(lambda: bool(worker.events("JetStream is not enabled")), 20, "the JetStream line")
        await asyncio.sleep(5)  # two more attempts at least, each quiet

        [line] = worker.events("JetStream is not enabled")
        assert line["server"] == f"127.0.0.1:{plain.port}"
        assert "config.jetstream.enabled=true" in line["fix"]
        assert worker.events("JetStream not ready") == []
        assert (await worker.get("/_/ready")).status_code == 503
    finally:
        plain.close()


async def test_start_up_says_what_it_serves_before_it_connects(start_worker: WorkerFactory) -> None:
    worker = start_worker()
    await worker.wait_ready()

    order = [e["msg"] for e in worker.events() if e["msg"] in ("Serving", "Connecting to NATS", "Subscribed")]
    [serving] = worker.events("Serving")
    assert order == ["Serving", "Connecting to NATS", "Subscribed"]
    assert (serving["port"], serving["metricsPort"]) == (worker.port, worker.metrics_port)


STARTER = TEMPLATE / "function"


async def test_a_starter_function_with_the_templates_defaults_takes_nothing_from_the_queue_worker(
    natsd: NatsServer,
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    worker = start_worker()
    await worker.wait_ready()
    # As `faas-cli new --lang python3-jetstream` makes it: no environment at all, and one told
    # only to listen to the queue-worker's subject.
    bare = WorkerProcess({"nats_url": natsd.url}, handler_dir=STARTER).start()
    same_subject = WorkerProcess(
        {"nats_url": natsd.url, "queue_name": queue.subject, "nats_stream": queue.stream}, handler_dir=STARTER
    ).start()
    # And one given the queue-worker's whole topology on purpose, consumer included.
    same_consumer = WorkerProcess({"nats_url": natsd.url, **queue.env()}, handler_dir=STARTER).start()
    starters = (bare, same_subject, same_consumer)
    try:
        statuses = [await asyncio.to_thread(p.process.wait, 30) for p in starters]  # type: ignore[union-attr]
        for i in range(20):
            await publish_request(nc, queue.subject, queued("echo", f"mine-{i}", receiver.url + "/cb"))
        await receiver.wait_for(20)
        await wait_for_empty(nc, queue)

        assert statuses == [78, 78, 78]
        [no_queue] = bare.events("Invalid configuration")
        [taken] = same_subject.events("Invalid configuration")
        [owned] = same_consumer.events("Invalid configuration")
        assert no_queue["variable"] == "queue_name"
        assert taken["variable"] == "nats_durable"
        assert "consumed by another durable consumer" in taken["error"]
        assert owned["variable"] == "nats_durable"
        assert "belongs to the function 'queue-worker'" in owned["error"]
        assert "this one is 'my-function'" in owned["error"]
        assert len(gateway.calls_to("echo")) == 20
        assert all(p.events("Received") == [] for p in starters)
    finally:
        for p in starters:
            p.close()


async def test_a_consumer_made_by_hand_is_claimed_and_then_refused_to_other_functions(
    natsd: NatsServer, nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    await create_stream(nc, queue)
    await nc.jetstream().add_consumer(
        queue.stream, ConsumerConfig(durable_name=queue.durable, ack_policy=AckPolicy.EXPLICIT, max_deliver=-1)
    )
    starter = start_worker(STARTER)
    await starter.wait_ready()
    info = await nc.jetstream().consumer_info(queue.stream, queue.durable)
    assert (info.config.metadata or {}).get("owner") == "my-function"
    assert starter.events("Claimed consumer")

    worker = start_worker()
    assert await asyncio.to_thread(worker.process.wait, 30) == 78  # type: ignore[union-attr]
    [refused] = worker.events("Invalid configuration")
    assert "belongs to the function 'my-function'" in refused["error"]
    # Claiming changed nothing else of the consumer an operator made.
    assert (info.config.ack_policy, info.config.max_deliver) == (AckPolicy.EXPLICIT, -1)
