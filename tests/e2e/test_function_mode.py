"""Function mode end to end: the front door stores each call on its function's subject, a
consumer per function is made on demand and deleted when idle, free slots are shared fairly,
each function's concurrency adapts to its 429s, and pending messages are exported per function."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from harness.publish import publish_request
from harness.servers import RecordingServer, wait_until
from harness.worker import WorkerProcess
from tests.faults.workload import Work
from tests.support import Queue, WorkerFactory, queued, wait_for_empty

pytestmark = pytest.mark.e2e

FUNCTION_MODE = {"scaling_mode": "function", "consumer_inactive_threshold": "2s"}


def _subject(queue: Queue, function: str) -> str:
    return f"{queue.subject}.{function}.openfaas-fn"


async def _consumers(nc: Client, queue: Queue) -> set[str]:
    return {info.name for info in await nc.jetstream().consumers_info(queue.stream)}


def _gauge(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0].split("{")[1] == wanted:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_calls_go_through_each_functions_own_subject_and_consumer_to_their_callbacks(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker(**FUNCTION_MODE)
    await worker.wait_ready()
    stored: list[str] = []

    async def seen(msg: Msg) -> None:
        stored.append(msg.subject)

    await nc.subscribe(f"{queue.subject}.>", cb=seen)

    async with httpx.AsyncClient() as client:
        for function in ("alpha", "beta.openfaas-fn", "alpha"):
            answer = await client.post(
                f"http://127.0.0.1:{worker.port}/async-function/{function}",
                content=b"hi",
                headers={"X-Callback-Url": receiver.url + "/done"},
            )
            assert answer.status_code == 202
    # The gateway's format (the plain subject) is served as well.
    await publish_request(nc, queue.subject, queued("gamma", "plain-1", receiver.url + "/done"))

    await receiver.wait_for(4)
    assert sorted(stored) == sorted([_subject(queue, "alpha")] * 2 + [_subject(queue, "beta")])
    assert len(gateway.calls_to("alpha")) == 2
    assert len(gateway.calls_to("beta.openfaas-fn")) == 1
    assert len(gateway.calls_to("gamma")) == 1
    assert {f"{queue.durable}_alpha_openfaas-fn", f"{queue.durable}_beta_openfaas-fn", queue.durable} <= (
        await _consumers(nc, queue)
    )
    await wait_for_empty(nc, queue)


async def test_an_idle_functions_consumer_is_deleted_and_made_again_when_work_comes(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker(**FUNCTION_MODE)
    await worker.wait_ready()
    name = f"{queue.durable}_idle_openfaas-fn"
    await publish_request(nc, _subject(queue, "idle"), queued("idle", "first"))
    await gateway.wait_for(1)
    assert name in await _consumers(nc, queue)

    # consumer_inactive_threshold is 2s: gone within a few of it (5x margin), the queue's own stays.
    deadline = time.monotonic() + 10
    while name in await _consumers(nc, queue):
        assert time.monotonic() < deadline, "idle consumer never deleted"
        await asyncio.sleep(0.2)
    assert queue.durable in await _consumers(nc, queue)

    await publish_request(nc, _subject(queue, "idle"), queued("idle", "second"))
    await gateway.wait_for(2)
    assert [c.header("X-Call-Id") for c in gateway.calls_to("idle")] == ["first", "second"]


async def test_concurrency_adapts_to_what_the_function_can_take(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    full = Work(delay_s=0.05, limit=4)
    gateway.behaviours["narrow"] = full
    worker = start_worker(max_inflight="40", **FUNCTION_MODE)
    await worker.wait_ready()
    for i in range(300):
        await publish_request(nc, _subject(queue, "narrow"), queued("narrow", f"n-{i}"))

    await wait_until(lambda: len(full.successes) == 300, 60, "every call succeeded")
    # Without a limit, 36 of every 40 calls would be refused; with it, a few probes are.
    assert full.refusals < 300 * 0.2, full.refusals
    metrics = (await worker.get("/metrics", metrics=True)).text
    limit = _gauge(
        metrics, "queue_worker_function_concurrency_limit", queue_name=queue.subject, function_name="narrow.openfaas-fn"
    )
    assert limit is not None
    assert 1 <= limit <= 8
    # The dashboard's "Concurrency per function" panel reads these two families.
    labels = {"queue_name": queue.subject, "function_name": "narrow.openfaas-fn"}
    assert _gauge(metrics, "queue_worker_function_inflight", **labels) == 0


async def test_pending_messages_are_exported_per_function_from_the_streams_counts(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request, body: bytes) -> web.Response:
        await release.wait()
        return web.Response(text="ok")

    gateway.behaviours["slow"] = held
    worker = start_worker(max_inflight="2", stream_metrics_interval="200ms", **FUNCTION_MODE)
    await worker.wait_ready()
    for i in range(7):
        await publish_request(nc, _subject(queue, "slow"), queued("slow", f"s-{i}"))
    await publish_request(nc, _subject(queue, "quick"), queued("quick", "q-0"))
    await gateway.wait_for(3)

    async def pending(function: str) -> float | None:
        text = (await worker.get("/metrics", metrics=True)).text
        return _gauge(text, "queue_worker_pending_messages", queue_name=queue.subject, function_name=function)

    await wait_until_async(lambda: pending("slow.openfaas-fn"), 7, 10)
    await wait_until_async(lambda: pending("all-functions"), 7, 10)
    # The function that is done shows 0 while its lane is kept, rather than vanishing (its
    # count is read every 250 ms, apart from the stream-wide figure).
    await wait_until_async(lambda: pending("quick.openfaas-fn"), 0, 10)
    release.set()
    await wait_until_async(lambda: pending("slow.openfaas-fn"), 0, 10)


async def wait_until_async(read: object, wanted: float, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        seen = await read()  # type: ignore[operator]
        if seen == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"wanted {wanted}, last saw {seen}")


async def test_replicas_share_each_functions_consumer_and_invoke_nothing_twice(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    # 200 calls of 50 ms at 5 at once take 2 s, against a 250 ms wait for the second replica
    # to see the function's work: both get a share.
    work = Work(delay_s=0.05)
    gateway.behaviours["shared"] = work
    workers = [start_worker(max_inflight="5", **FUNCTION_MODE) for _ in range(2)]
    for worker in workers:
        await worker.wait_ready()
    for i in range(200):
        await publish_request(nc, _subject(queue, "shared"), queued("shared", f"x-{i}"))

    await wait_until(lambda: len(work.successes) == 200, 30, "every call")
    await wait_for_empty(nc, queue)
    assert all(n == 1 for n in work.successes.values())
    assert all(_invoked(worker) for worker in workers), "one replica did all the work"


def _invoked(worker: WorkerProcess) -> int:
    return len(worker.events("Invoked"))


async def test_switching_modes_narrows_and_widens_the_queues_consumer(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    static = start_worker()
    await static.wait_ready()
    assert await _filter(nc, queue) in (None, "")
    assert static.terminate() == 0

    function = start_worker(**FUNCTION_MODE)
    await function.wait_ready()
    assert await _filter(nc, queue) == queue.subject
    await publish_request(nc, _subject(queue, "f"), queued("f", "in-function-mode"))
    await gateway.wait_for(1)
    assert function.terminate() == 0

    # Back to static: it waits for the per-function consumer to go (2s), then takes every subject.
    await publish_request(nc, _subject(queue, "f"), queued("f", "left-for-static"))
    again = start_worker()
    await again.wait_ready(timeout_s=30)
    await gateway.wait_for(2)
    assert await _filter(nc, queue) in (None, "")
    assert [c.header("X-Call-Id") for c in gateway.calls_to("f")] == ["in-function-mode", "left-for-static"]


async def _filter(nc: Client, queue: Queue) -> str | None:
    config: ConsumerConfig = (await nc.jetstream().consumer_info(queue.stream, queue.durable)).config
    return config.filter_subject


async def test_a_functions_annotation_caps_its_calls_at_once(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    work = Work(delay_s=0.05)
    gateway.behaviours["capped"] = work
    gateway.annotations["capped"] = {"com.openfaas.queue.max_inflight": "2"}
    worker = start_worker(max_inflight="20", **FUNCTION_MODE)
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        for _ in range(30):
            answer = await client.post(f"http://127.0.0.1:{worker.port}/async-function/capped", content=b"x")
            assert answer.status_code == 202
    await wait_until(lambda: len(work.successes) == 30, 30, "every capped call")

    # 20 slots and an adaptive limit that never saw a 429: the annotation alone held it to 2.
    assert work.peak == 2
    metrics = (await worker.get("/metrics", metrics=True)).text
    labels = {"queue_name": queue.subject, "function_name": "capped.openfaas-fn"}
    assert _gauge(metrics, "queue_worker_function_concurrency_limit", **labels) == 2


@pytest.mark.parametrize("plain", [False, True], ids=["a cold function", "the plain subject"])
async def test_calls_are_served_beside_a_hot_backlog(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory, plain: bool
) -> None:
    hot = Work(delay_s=0.05)
    gateway.behaviours["hot"] = hot
    worker = start_worker(max_inflight="10", **FUNCTION_MODE)
    await worker.wait_ready()
    for i in range(600):
        await publish_request(nc, _subject(queue, "hot"), queued("hot", f"h-{i}"))
    await wait_until(lambda: len(hot.successes) >= 20, 20, "the hot backlog started")
    # A cold function's subject, or the plain one (the gateway's format): one more turn of the
    # round robin either way.
    for i in range(5):
        await publish_request(nc, queue.subject if plain else _subject(queue, "cold"), queued("cold", f"c-{i}"))

    await wait_until(lambda: len(gateway.calls_to("cold")) == 5, 20, "every cold call")
    # 600 calls of 50 ms at 10 at once take 3 s; the cold ones did not wait for them (FIFO would).
    assert len(hot.successes) < 600 - 100
