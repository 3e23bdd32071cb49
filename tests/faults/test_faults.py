"""Nothing lost under faults: every accepted request is invoked to success or dead-lettered.

Each test injects one fault into a running system of real parts, then checks the invariant and
records its figures (published, invoked, dead-lettered, duplicated) for the session's report.
Duplicates are allowed only where at-least-once delivery allows them: a crash before the ack.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client

from harness.natsd import NatsCluster, NatsServer
from harness.publish import encode, publish_request
from harness.servers import RecordingServer, wait_until
from harness.worker import WorkerProcess
from tests.faults.workload import Work, Workload
from tests.support import Queue, WorkerFactory, dead_letters, queued, wait_for_empty

pytestmark = pytest.mark.e2e
Connect = Callable[..., Awaitable[Client]]


def _invoked_by(worker: WorkerProcess) -> list[str]:
    return [e["callId"] for e in worker.events("Invoked") if e.get("status") == 200]


#: Each fault that matters to consumption runs in both scaling modes.
MODES = pytest.mark.parametrize("mode", ["static", "function"])


@MODES
async def test_sigkill_mid_run_then_restart_completes_everything(
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
    mode: str,
) -> None:
    load = Workload(
        f"SIGKILL mid-run ({mode})", 300, queue, gateway, receiver, Work(delay_s=0.05), function_mode=mode == "function"
    )
    first = start_worker(max_inflight="30", ack_wait="2s", scaling_mode=mode)
    await first.wait_ready()
    await load.publish(nc)
    await wait_until(lambda: load.invocations() >= 100, 30, "a third invoked")

    first.kill()
    killed_at = time.monotonic()
    second = start_worker(max_inflight="30", ack_wait="2s", scaling_mode=mode)
    await load.wait_done()

    await wait_for_empty(nc, queue)
    record = await load.report(nc)
    assert record["invoked"] == 300
    # Only calls in flight at the kill (at most max_inflight, and their acks) can run twice,
    duplicated = {call for call, n in load.work.successes.items() if n > 1}
    assert len(duplicated) <= 30 + 30
    # and they come back once ack_wait has passed, not later (5x margin for a loaded machine).
    redelivered = [c.at for c in gateway.calls_to("work") if c.header("X-Call-Id") in duplicated]
    assert all(at - killed_at < 2 * 5 for at in redelivered)
    assert second.events("Subscribed")


async def test_sigterm_mid_run_finishes_running_calls_and_starts_nothing_new(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    load = Workload("SIGTERM mid-run", 100, queue, gateway, receiver, Work(delay_s=0.3))
    first = start_worker(max_inflight="10", shutdown_timeout="5s")
    await first.wait_ready()
    await load.publish(nc)
    await wait_until(lambda: load.invocations() >= 30, 30, "thirty invoked")

    signalled = time.monotonic()
    # In a thread: this loop serves the function the running calls are waiting for.
    assert await asyncio.to_thread(first.terminate, 15) == 0
    assert time.monotonic() - signalled < 5 + 2  # within shutdown_timeout, plus process exit

    # Every call the first worker started, it finished; it started nothing after SIGTERM. Timed
    # from when the worker took the signal (its Stopping line; the test's own moment of sending
    # it can precede a call the worker starts just before taking it): no call reached the
    # gateway more than 50 ms later, where one started in a slot that the drain freed would
    # come about 300 ms later (the calls take 0.3 s).
    [stopping] = first.events("Stopping")
    took_signal = stopping["ts"] - (time.time() - time.monotonic())  # on the gateway's clock
    started = [call.header("X-Call-Id") for call in gateway.calls_to("work")]
    assert max(call.at for call in gateway.calls_to("work")) < took_signal + 0.05
    assert Counter(_invoked_by(first)) == Counter(started)

    second = start_worker(max_inflight="10")
    await second.wait_ready()
    await load.wait_done()
    await wait_for_empty(nc, queue)
    record = await load.report(nc)
    assert record["duplicated"] == 0
    assert record["invoked"] == 100


async def test_nats_restarted_mid_run_the_worker_reconnects_and_completes(
    connect: Connect,
    private_natsd: NatsServer,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    nc = await connect(private_natsd.url)
    load = Workload("nats-server restarted", 200, queue, gateway, receiver, Work(delay_s=0.02))
    worker = start_worker(nats_url=private_natsd.url, max_inflight="20", ack_wait="2s")
    await worker.wait_ready()
    await load.publish(nc)
    await wait_until(lambda: load.invocations() >= 50, 30, "fifty invoked")

    private_natsd.stop()
    await asyncio.sleep(1.0)
    private_natsd.start()

    await load.wait_done()
    await wait_for_empty(nc, queue, timeout_s=30)
    metrics = (await worker.get("/metrics", metrics=True)).text
    reconnects = next(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("queue_worker_nats_reconnect_total")
    )
    assert reconnects >= 1
    record = await load.report(nc, reconnects=int(reconnects))
    assert record["invoked"] == 200


@MODES
async def test_a_three_node_cluster_losing_a_node_loses_nothing(
    connect: Connect,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
    mode: str,
) -> None:
    cluster = await asyncio.to_thread(NatsCluster().start)
    try:
        nc = await connect(cluster.urls.split(","))
        worker = start_worker(
            nats_url=cluster.urls, nats_stream_replicas="3", max_inflight="20", ack_wait="2s", scaling_mode=mode
        )
        await worker.wait_ready(timeout_s=60)
        info = await nc.jetstream().stream_info(queue.stream)
        assert info.config.num_replicas == 3
        # A new R3 stream answers publishes once its group has a leader and every replica caught
        # up; until then the server says "no responders", as it does to any publisher.
        for _ in range(100):
            cluster_info = info.cluster
            if cluster_info and cluster_info.leader and all(r.current for r in cluster_info.replicas or ()):
                break
            await asyncio.sleep(0.1)
            info = await nc.jetstream().stream_info(queue.stream)
        load = Workload(
            f"cluster leader killed (R3, {mode})",
            200,
            queue,
            gateway,
            receiver,
            Work(delay_s=0.02),
            function_mode=mode == "function",
        )
        await load.publish(nc)
        await wait_until(lambda: load.invocations() >= 50, 30, "fifty invoked")

        # Kill the node that leads the stream: the hardest one to lose.
        leader = (await nc.jetstream().stream_info(queue.stream)).cluster.leader  # type: ignore[union-attr]
        victim = next(s for i, s in enumerate(cluster.servers) if f"n{i}" == leader)
        victim.kill()

        await load.wait_done(timeout_s=90)
        await wait_for_empty(nc, queue, timeout_s=30)
        record = await load.report(nc, killed=leader)
        assert record["invoked"] == 200
    finally:
        await asyncio.to_thread(cluster.close)


async def test_three_workers_share_the_work_and_invoke_nothing_twice(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    load = Workload("three workers, one consumer", 300, queue, gateway, receiver, Work(delay_s=0.05))
    workers = [start_worker(max_inflight="10") for _ in range(3)]
    for worker in workers:
        await worker.wait_ready()

    await load.publish(nc)
    await load.wait_done()

    await wait_for_empty(nc, queue)
    shares = [len(_invoked_by(worker)) for worker in workers]
    record = await load.report(nc, shares="/".join(map(str, shares)))
    assert record["duplicated"] == 0
    assert sum(shares) == 300
    assert min(shares) >= 300 // 10  # each took a real share, not a token one


async def test_a_call_three_times_longer_than_ack_wait_is_invoked_once(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    load = Workload("call 3x longer than ack_wait", 5, queue, gateway, receiver, Work(delay_s=3.0))
    worker = start_worker(ack_wait="1s", max_inflight="5", upstream_timeout="10s")
    await worker.wait_ready()

    await load.publish(nc)
    await load.wait_done(timeout_s=30)

    await wait_for_empty(nc, queue)
    record = await load.report(nc)
    assert record["invocations"] == 5
    assert record["duplicated"] == 0


async def test_an_unreachable_gateway_for_a_few_seconds_delays_but_loses_nothing(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    load = Workload("gateway unreachable 2s", 50, queue, gateway, receiver, Work())
    worker = start_worker(initial_retry_wait="200ms", max_retry_wait="1s")
    await worker.wait_ready()
    await gateway.close()

    await load.publish(nc)
    await wait_until(lambda: len(worker.events("Redeliver later")) >= 50, 30, "every request failed once")
    await asyncio.sleep(2.0)
    await gateway.start()

    await load.wait_done()
    await wait_for_empty(nc, queue)
    failed = [e for e in worker.events("Invoked") if e["status"] == 503]
    record = await load.report(nc, failed_attempts=len(failed))
    assert record["invoked"] == 50
    assert record["dead_lettered"] == 0


async def test_a_callback_receiver_down_for_a_while_gets_every_result_later_without_reinvoking(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    load = Workload("callback receiver down 2s", 30, queue, gateway, receiver, Work())
    worker = start_worker(
        callback_initial_retry_wait="200ms", callback_max_retry_wait="1s", callback_retry_attempts="50"
    )
    await worker.wait_ready()
    await receiver.close()

    await load.publish(nc)
    await wait_until(lambda: len(worker.events("Callback queued for retry")) == 30, 30, "every callback failed once")
    await asyncio.sleep(2.0)
    await receiver.start()

    await load.wait_done()
    await wait_for_empty(nc, queue)
    record = await load.report(nc, callbacks=len(receiver.calls))
    assert record["invocations"] == 30  # the functions ran once each, whatever the callbacks did
    assert len(receiver.calls) == 30


async def test_poison_between_good_messages_is_dead_lettered_and_delays_nothing(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker()
    await worker.wait_ready()
    limit = nc.max_payload
    framing = len(encode(queued("work", "big-1", receiver.url + "/done", body=b"")))
    # A valid request as large as NATS takes (base64 makes the body 4/3 larger), and an undecodable one.
    big = encode(queued("work", "big-1", receiver.url + "/done", body=b"x" * ((limit - framing - 64) * 3 // 4)))
    poison: list[tuple[bytes, str]] = [
        (b"not json at all", "json"),
        (b'{"Function":"work","Body":"@@not base64@@"}', "base64"),
        (b'{"Function":"","Body":"aGk="}', "function"),
        (b'{"Body":"aGk="}', "function"),
        (b'[{"Function":"work"}]', "type"),
        (b'{"Function":"work","CallbackUrl":"http://host:port/x"}', "callback_url"),
        (b"{" + b"x" * (limit - 64), "json"),
    ]
    load = Workload("poison between good messages", len(poison) * 3, queue, gateway, receiver, Work())
    js = nc.jetstream()
    started = time.monotonic()
    for call_id, (data, _) in zip(load.call_ids, poison * 3, strict=True):
        await publish_request(nc, queue.subject, queued("work", call_id, receiver.url + "/done"))
        await js.publish(queue.subject, data)
    await js.publish(queue.subject, big)

    await load.wait_done(timeout_s=30)
    good_done = time.monotonic() - started
    await wait_until(lambda: "big-1" in load.completed(), 20, "the request at the size limit")
    await wait_for_empty(nc, queue)
    letters = await dead_letters(nc, queue)
    record = await load.report(nc, poison=len(letters), seconds_for_good=round(good_done, 3))
    assert record["invoked"] == len(poison) * 3
    assert [letter.reason for letter in letters] == ["undecodable"] * len(poison) * 3
    # Each letter keeps the poison byte for byte, except the one that filled the payload limit.
    assert sorted(letter.message for letter in letters if not letter.truncated) == sorted(d for d, _ in poison[:-1] * 3)
    assert sum(letter.truncated for letter in letters) == 3
    expected = Counter(reason for _, reason in poison * 3)
    assert Counter(e["reason"] for e in worker.events("Cannot decode message")) == expected
    assert len(big) > limit * 0.9
    assert good_done < 10  # each good request is answered at once: poison must not hold them up
    assert (await worker.get("/_/ready")).status_code == 200


async def test_a_function_answering_429_under_load_loses_nothing(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    load = Workload("429 under load", 200, queue, gateway, receiver, Work(delay_s=0.05, limit=5))
    worker = start_worker(max_inflight="30", initial_retry_wait="100ms", max_retry_wait="1s", backoff="full")
    await worker.wait_ready()

    await load.publish(nc)
    await load.wait_done(timeout_s=90)

    await wait_for_empty(nc, queue)
    record = await load.report(nc, refused_429=load.work.refusals)
    assert load.work.refusals > 0
    assert record["invoked"] == 200
    assert record["dead_lettered"] == 0
    assert record["duplicated"] == 0
