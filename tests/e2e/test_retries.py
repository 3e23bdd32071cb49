"""Retries end to end: Retry-After, annotations, fairness, restarts, callbacks retried alone."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest
from aiohttp import web
from nats.aio.client import Client

from harness.publish import publish_request
from harness.servers import Behaviour, RecordingServer, answer, wait_until
from tests.support import Queue, WorkerFactory, queued, wait_for_empty

pytestmark = pytest.mark.e2e


def _once_per_call(status: int, headers: dict[str, str] | None = None) -> Behaviour:
    """A function that answers ``status`` to the first call of each call id, then 200."""
    seen: set[str] = set()

    async def behaviour(request: web.Request, body: bytes) -> web.Response:
        call_id = request.headers["X-Call-Id"]
        if call_id in seen:
            return web.Response(text=f"ok {call_id}")
        seen.add(call_id)
        return web.Response(status=status, headers=headers)

    return behaviour


async def test_retry_after_sets_the_next_delay(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["busy"] = _once_per_call(429, {"Retry-After": "1"})
    worker = start_worker(initial_retry_wait="50ms", max_retry_wait="100ms")
    await worker.wait_ready()

    await publish_request(nc, queue.subject, queued("busy", "ra-1", receiver.url + "/cb"))

    [callback] = await receiver.wait_for(1)
    first, second = gateway.calls_to("busy")
    # The back-off alone would wait 50 ms; Retry-After asked for 1 s, twenty times more.
    assert second.at - first.at >= 1.0
    assert worker.events("Redeliver later")[0]["delay"] == 1.0
    assert callback.header("X-Retry") == "1"


async def test_annotations_override_the_defaults_and_invalid_ones_fall_back(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["teapot"] = answer(418, "short and stout")
    worker = start_worker()
    await worker.wait_ready()

    # 418 is not in the worker's list; the annotation adds it and allows two attempts in all.
    await publish_request(nc, queue.subject, queued("teapot", "an-1", receiver.url + "/a", attempts="2", codes="418"))
    # An invalid value is ignored: the worker's own codes apply, so 418 is final at once.
    await publish_request(nc, queue.subject, queued("teapot", "an-2", receiver.url + "/b", codes="lots"))

    await receiver.wait_for(2)
    await wait_for_empty(nc, queue)
    by_path = {c.path_qs: c for c in receiver.calls}
    assert (by_path["/a"].header("X-Retry"), by_path["/a"].header("X-Retry-Max")) == ("1", "1")
    assert (by_path["/b"].header("X-Retry"), by_path["/b"].header("X-Retry-Max")) == ("0", "99")
    assert Counter(c.header("X-Call-Id") for c in gateway.calls) == {"an-1": 2, "an-2": 1}
    [warning] = worker.events("Invalid retry annotation")
    assert warning["callId"] == "an-2"
    assert "codes" in warning["problem"]


async def test_requests_in_back_off_hold_no_slot_so_fresh_ones_are_not_delayed(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["cold"] = _once_per_call(503)
    worker = start_worker(max_inflight="2", initial_retry_wait="2s", max_retry_wait="2s")
    await worker.wait_ready()
    for i in range(6):
        await publish_request(nc, queue.subject, queued("cold", f"cold-{i}", receiver.url + f"/cold/{i}"))
    await wait_until(lambda: len(gateway.calls_to("cold")) == 6, 10, "first attempts")

    for i in range(6):
        await publish_request(nc, queue.subject, queued("echo", f"fresh-{i}", receiver.url + f"/fresh/{i}"))

    await receiver.wait_for(12)
    fresh = [c.at for c in receiver.calls if c.path_qs.startswith("/fresh/")]
    retried = [c.at for c in gateway.calls_to("cold")[6:]]
    # Six requests wait 2 s each with only two slots, yet every fresh one finished before any retry.
    assert len(fresh) == 6
    assert len(retried) == 6
    assert max(fresh) < min(retried)


async def test_requests_waiting_to_retry_survive_a_killed_worker(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["cold"] = _once_per_call(503)
    first = start_worker(initial_retry_wait="1s", max_retry_wait="1s")
    await first.wait_ready()
    for i in range(5):
        await publish_request(nc, queue.subject, queued("cold", f"k-{i}", receiver.url + f"/cb/{i}"))
    await wait_until(lambda: len(first.events("Redeliver later")) == 5, 10, "all five waiting to retry")

    first.kill()
    second = start_worker(initial_retry_wait="1s", max_retry_wait="1s")
    await second.wait_ready()

    await receiver.wait_for(5)
    await wait_for_empty(nc, queue)
    assert all(c.header("X-Retry") == "1" and c.header("X-Function-Status") == "200" for c in receiver.calls)
    assert sorted(e["delivery"] for e in second.events("Invoked")) == [2] * 5


async def test_a_failing_callback_is_retried_alone_and_the_function_runs_once(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    answers = itertools.chain([500, 502], itertools.repeat(200))

    async def flaky_receiver(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=next(answers))

    receiver.default = flaky_receiver
    worker = start_worker(callback_initial_retry_wait="50ms", callback_max_retry_wait="200ms")
    await worker.wait_ready()

    await publish_request(nc, queue.subject, queued("echo", "cb-1", receiver.url + "/cb"))

    await receiver.wait_for(3)
    await wait_for_empty(nc, queue)
    await asyncio.sleep(0.3)  # a fourth post, were there one, would come within the back-off cap
    assert len(receiver.calls) == 3
    assert {c.body for c in receiver.calls} == {b"cb-1"}
    assert all(c.header("X-Call-Id") == "cb-1" for c in receiver.calls)
    assert len(gateway.calls) == 1
    assert [e["status"] for e in worker.events("Posted result")] == [200]


async def test_an_unreachable_gateway_counts_as_503_and_is_retried(
    nc: Client, queue: Queue, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker(gateway_url="http://127.0.0.1:1", max_retry_attempts="3")
    await worker.wait_ready()

    await publish_request(nc, queue.subject, queued("figlet", "down-1", receiver.url + "/cb"))

    [callback] = await receiver.wait_for(1)
    await wait_for_empty(nc, queue)
    assert (callback.header("X-Function-Status"), callback.header("X-Retry")) == ("503", "2")
    assert [e["status"] for e in worker.events("Invoked")] == [503, 503, 503]
    assert all("ConnectionRefusedError" in e["error"] for e in worker.events("Invoked"))
