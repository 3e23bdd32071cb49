"""Stalls, full stores and operators' mistakes, injected for real: a partition (a network
namespace and a blackholed veth pair), a frozen server (SIGSTOP), a gateway that drops
connections, stream limits that refuse writes, a callback receiver that is down, deleted and
pre-made consumers. Each counts, per call id, invocations, callbacks, dead letters and the most
calls in flight at once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from harness.natsd import NatsServer
from harness.netns import PartitionedNats
from harness.ports import free_port
from harness.publish import publish_request
from harness.servers import RecordingServer, wait_until
from harness.worker import WorkerProcess
from tests.faults.workload import Work, Workload, append_report
from tests.support import Queue, WorkerFactory, dead_letters, queued, wait_for_empty

pytestmark = pytest.mark.e2e
Connect = Callable[..., Awaitable[Client]]
#: What a stalled worker runs at once in these tests.
MAX_INFLIGHT = 20
#: A dead link must be noticed within this; the worker's own bound is (2 + 1) x 2 s pings.
NOTICE_WITHIN_S = 15.0


async def _watch_readiness(worker: WorkerProcess, until: asyncio.Event) -> list[tuple[float, bool]]:
    """(when, ready) each time readiness changes, polled every 0.2 s until ``until`` is set."""
    changes: list[tuple[float, bool]] = []
    while not until.is_set():
        try:
            ready = (await worker.get("/_/ready")).status_code == 200
        except Exception:  # the probe itself timing out counts as not ready
            ready = False
        if not changes or changes[-1][1] != ready:
            changes.append((time.monotonic(), ready))
        await asyncio.sleep(0.2)
    return changes


async def _stall(
    name: str,
    stall: Callable[[], None],
    resume: Callable[[], None],
    stall_s: float,
    nats_url: str,
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    load = Workload(name, 400, queue, gateway, receiver, Work(delay_s=0.2))
    worker = start_worker(nats_url=nats_url, max_inflight=str(MAX_INFLIGHT), ack_wait="30s")
    await worker.wait_ready()
    await load.publish(nc)
    await wait_until(lambda: load.invocations() >= 40, 30, "forty invoked")

    done = asyncio.Event()
    watcher = asyncio.create_task(_watch_readiness(worker, done))
    stall()
    stalled_at = time.monotonic()
    await asyncio.sleep(stall_s)
    resume()
    resumed_at = time.monotonic()
    await load.wait_done(timeout_s=120)
    await asyncio.sleep(1)
    done.set()
    changes = await watcher

    await wait_for_empty(nc, queue)
    not_ready = next((at for at, ready in changes if not ready and at >= stalled_at), None)
    ready_again = next((at for at, ready in changes if ready and at >= resumed_at), None)
    record = await load.report(
        nc,
        peak_inflight=load.work.peak,
        noticed_s=None if not_ready is None else round(not_ready - stalled_at, 1),
        recovered_s=None if ready_again is None else round(ready_again - resumed_at, 1),
    )
    # Never more than max_inflight at once, whatever the server sent when it came back.
    assert load.work.peak <= MAX_INFLIGHT, record
    assert not_ready is not None, changes
    assert not_ready - stalled_at < NOTICE_WITHIN_S, changes
    assert ready_again is not None, changes
    assert ready_again - resumed_at < NOTICE_WITHIN_S, changes
    assert record["invoked"] == 400


async def test_a_frozen_server_never_makes_more_than_max_inflight_run(
    private_natsd: NatsServer,
    connect: Connect,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    nc = await connect(private_natsd.url)
    assert private_natsd.process is not None
    pid = private_natsd.process.pid
    await _stall(
        "nats-server frozen 20s (SIGSTOP)",
        lambda: os.kill(pid, signal.SIGSTOP),
        lambda: os.kill(pid, signal.SIGCONT),
        20,
        private_natsd.url,
        nc,
        queue,
        gateway,
        receiver,
        start_worker,
    )


async def test_a_partition_never_makes_more_than_max_inflight_run_and_heals_by_itself(
    connect: Connect, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    partitioned = PartitionedNats().start()
    try:
        # The test's own client notices the dead link as the worker does, and reconnects after
        # the heal rather than wait out TCP's retransmission back-off.
        nc = await connect(partitioned.url, ping_interval=1, max_outstanding_pings=2)
        await _stall(
            "partition 30s (netns, blackhole)",
            partitioned.cut,
            partitioned.heal,
            30,
            partitioned.url,
            nc,
            queue,
            gateway,
            receiver,
            start_worker,
        )
    finally:
        partitioned.close()


async def test_a_gateway_that_drops_a_taken_request_costs_a_visible_attempt_never_a_hidden_one(
    nc: Client, queue: Queue, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    received: Counter[str] = Counter()

    async def take_every_second_request_and_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Keep-alive: the first request on a connection is answered, the second is read in full
        # (the function may have run) and the connection closed without an answer.
        try:
            for turn in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                call_id = head.lower().split(b"x-call-id: ")[1].split(b"\r\n")[0].decode()
                received[call_id] += 1
                if turn == 0:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(take_every_second_request_and_hang_up, "127.0.0.1", port)
    try:
        worker = start_worker(gateway_url=f"http://127.0.0.1:{port}", max_inflight="1")
        await worker.wait_ready()
        ids = [f"drop-{i}" for i in range(20)]
        for call_id in ids:
            await publish_request(nc, queue.subject, queued("f", call_id, receiver.url + "/cb"))
        await receiver.wait_for(20)
        await wait_for_empty(nc, queue)
    finally:
        server.close()
        await server.wait_closed()

    attempts = Counter(e["callId"] for e in worker.events("Invoked"))
    append_report(
        {
            "fault": "gateway drops taken requests",
            "published": len(ids),
            "invoked": len(receiver.calls),
            "invocations": sum(received.values()),
            "dead_lettered": 0,
            "duplicated": 0,
            "hidden_invocations": sum((received - attempts).values()),
        }
    )
    # Every request the gateway took was an attempt the worker knows of, and retried by policy.
    assert received == attempts
    assert sum(received.values()) > len(ids)  # the fault did happen
    retries = {call.header("X-Call-Id"): int(call.header("X-Retry") or "-1") for call in receiver.calls}
    assert retries == {call_id: received[call_id] - 1 for call_id in ids}
    assert all(call.header("X-Function-Status") == "200" for call in receiver.calls)


async def test_a_decided_request_whose_dead_letter_cannot_be_stored_is_never_invoked_again(
    private_natsd: NatsServer,
    connect: Connect,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    nc = await connect(private_natsd.url)
    js = nc.jetstream()
    # A dead-letter stream with room for one letter, and a status bucket with no room left:
    # the store refuses the rest ("maximum messages exceeded"), as a full disk would.
    await js.add_stream(
        StreamConfig(
            name="faas-dead-letter",
            subjects=["faas-dead-letter.>"],
            retention=RetentionPolicy.LIMITS,
            max_msgs=1,
            discard=DiscardPolicy.NEW,
        )
    )
    calls = await js.create_key_value(KeyValueConfig(bucket="queue-worker-calls", max_bytes=400, ttl=3600))
    await calls.put("filler", b"x" * 300)
    load = Workload("dead-letter store full", 3, queue, gateway, receiver, Work())
    gateway.behaviours["work"] = _always(500)
    worker = start_worker(nats_url=private_natsd.url, max_retry_attempts="2")
    await worker.wait_ready()
    # The worker makes its bucket drop the oldest value when full; made to refuse again, as a
    # full store does, every status write is refused.
    bucket = (await js.stream_info("KV_queue-worker-calls")).config
    await js.update_stream(replace(bucket, discard=DiscardPolicy.NEW))
    await load.publish(nc)

    await wait_until(lambda: len(worker.events("Dead letter not stored")) >= 3, 30, "refused dead letters")
    await js.update_stream(
        StreamConfig(name="faas-dead-letter", subjects=["faas-dead-letter.>"], retention=RetentionPolicy.LIMITS)
    )
    # Each refusal doubles the next try's delay up to a minute (a loaded machine refuses more
    # times before the update): twice that, so a slow run is not a failure.
    await wait_for_empty(nc, queue, timeout_s=120)

    invocations = Counter(call.header("X-Call-Id") for call in gateway.calls_to("work"))
    callbacks = Counter(call.header("X-Call-Id") for call in receiver.calls)
    letters = await dead_letters(nc, queue)
    metrics = (await worker.get("/metrics", metrics=True)).text
    await load.report(nc, status_writes_refused=metrics.count('reason="refused"'))
    assert invocations == dict.fromkeys(load.call_ids, 2)  # attempts, and not one more
    assert callbacks == dict.fromkeys(load.call_ids, 1)
    assert sorted(letter.detail["callId"] for letter in letters) == load.call_ids
    refused = [
        line
        for line in metrics.splitlines()
        if line.startswith("queue_worker_call_status_write_failures_total{") and 'reason="refused"' in line
    ]
    assert refused
    assert float(refused[0].split()[-1]) >= 1
    assert worker.events("Call status not stored")


def _always(status: int) -> Callable[[web.Request, bytes], Awaitable[web.Response]]:
    async def answer(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=status, text=f"always {status}")

    return answer


async def test_a_result_too_large_for_a_job_reaches_a_receiver_that_was_down_without_reinvoking(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    big = os.urandom(3 * 1024 * 1024 // 2)  # 1.5 MiB: its job would be 2 MiB of base64, past max payload
    refusals = iter([503, 503])

    async def large(request: web.Request, body: bytes) -> web.Response:
        return web.Response(body=big)

    async def down_then_up(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=next(refusals, 200))

    gateway.behaviours["large"] = large
    receiver.default = down_then_up
    worker = start_worker(callback_initial_retry_wait="100ms", callback_results_bucket=f"results-{queue.stream}")
    await worker.wait_ready()

    await publish_request(nc, queue.subject, queued("large", "big-1", receiver.url + "/cb"))
    await receiver.wait_for(3, timeout_s=30)
    await wait_for_empty(nc, queue)
    store = await nc.jetstream().object_store(f"results-{queue.stream}")

    append_report(
        {
            "fault": "1.5 MiB result, receiver down",
            "published": 1,
            "invoked": 1,
            "invocations": len(gateway.calls_to("large")),
            "dead_lettered": 0,
            "duplicated": 0,
            "callbacks": len(receiver.calls),
        }
    )
    assert len(gateway.calls_to("large")) == 1
    assert [call.body == big for call in receiver.calls] == [True, True, True]
    assert receiver.calls[-1].header("X-Call-Id") == "big-1"
    with pytest.raises(NotFoundError):  # deleted once delivered
        await store.get("callback-" + queue.stream + "-1")


async def test_a_consumer_and_stream_deleted_while_running_are_recreated(
    private_natsd: NatsServer,
    connect: Connect,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    nc = await connect(private_natsd.url)
    load = Workload("consumer and streams deleted", 30, queue, gateway, receiver, Work())
    worker = start_worker(nats_url=private_natsd.url)
    await worker.wait_ready()
    js = nc.jetstream()

    await load.publish(nc, load.call_ids[:10])
    await wait_until(lambda: len(load.completed()) == 10, 20, "first ten")
    await js.delete_consumer(queue.stream, queue.durable)
    await wait_until(lambda: len(worker.events("Created consumer")) == 2, 20, "consumer recreated")
    await load.publish(nc, load.call_ids[10:20])
    await wait_until(lambda: len(load.completed()) == 20, 20, "second ten")
    await js.delete_stream(queue.stream)
    await js.delete_stream("faas-dead-letter")
    await wait_until(lambda: len(worker.events("Created consumer")) == 3, 20, "stream and consumer recreated")
    await load.publish(nc, load.call_ids[20:])
    await load.wait_done()
    await wait_for_empty(nc, queue)
    await load.report(nc)

    assert len(worker.events("Created stream")) >= 3  # work queue twice, dead letters twice
    assert (await worker.get("/_/ready")).status_code == 200


async def test_a_pre_made_consumer_that_would_strand_retries_stops_start_up_with_one_line(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=queue.stream, subjects=[queue.subject], retention=RetentionPolicy.WORK_QUEUE))
    await js.add_consumer(queue.stream, durable_name=queue.durable, ack_policy="explicit", max_deliver=3)

    worker = start_worker(max_retry_attempts="6", callback_retry_attempts="2", handler_error_attempts="2")
    assert worker.process is not None
    status = await asyncio.to_thread(worker.process.wait, 30)

    [line] = worker.events("Invalid configuration")
    assert status == 78
    assert line["variable"] == "nats_durable"
    assert "max_deliver=3" in line["error"]
    assert "6 deliveries (max_retry_attempts)" in line["error"]
