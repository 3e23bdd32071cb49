"""Cancel, end to end: what a DELETE can stop in each state, and that GET, the callback and the
stream agree (the semantics are in front_door.py's docstring and the README)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from harness.servers import RecordingServer, answer, wait_until
from harness.worker import WorkerProcess
from tests.support import Queue, WorkerFactory, wait_for_empty

pytestmark = pytest.mark.e2e


def _url(worker: WorkerProcess, path: str) -> str:
    return f"http://127.0.0.1:{worker.port}{path}"


class States:
    """Every status value written for a call, in order (not just the latest, which GET shows)."""

    def __init__(self) -> None:
        self.by_call: dict[str, list[str]] = {}

    async def record(self, msg: Msg) -> None:
        status = json.loads(msg.data)
        self.by_call.setdefault(status["callId"], []).append(status["state"])


@pytest.fixture
async def states(nc: Client) -> AsyncIterator[tuple[States, str]]:
    bucket = f"calls-{uuid.uuid4().hex[:8]}"
    seen = States()
    watch = await nc.subscribe(f"$KV.{bucket}.>", cb=seen.record)
    yield seen, bucket
    await watch.unsubscribe()


async def _queue(client: httpx.AsyncClient, worker: WorkerProcess, function: str, receiver: RecordingServer) -> str:
    answer = await client.post(
        _url(worker, f"/async-function/{function}"), content=b"x", headers={"X-Callback-Url": receiver.url + "/cb"}
    )
    assert answer.status_code == 202
    return answer.headers["X-Call-Id"]


async def test_a_call_waiting_for_a_retry_is_cancelled_and_called_back_at_once(
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
    states: tuple[States, str],
) -> None:
    seen, bucket = states
    gateway.behaviours["down"] = answer(503)
    # The next attempt is 30 s away: a callback within 6 s can only come from the cancel.
    worker = start_worker(initial_retry_wait="30s", max_retry_wait="30s", call_status_bucket=bucket)
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        call_id = await _queue(client, worker, "down", receiver)
        await wait_until(lambda: seen.by_call.get(call_id, [""])[-1] == "waiting", 10, "waiting for a retry")
        started = time.monotonic()
        cancelled = await client.delete(_url(worker, f"/async-function/{call_id}"))
        [callback] = await receiver.wait_for(1, timeout_s=6)
        took = time.monotonic() - started
        status = (await client.get(_url(worker, f"/async-function/{call_id}"))).json()
        again = await client.delete(_url(worker, f"/async-function/{call_id}"))

    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert took < 6
    headers = {k: callback.header(k) for k in ("X-Call-Status", "X-Function-Status", "X-Retry", "X-Retry-Max")}
    assert headers == {"X-Call-Status": "cancelled", "X-Function-Status": "0", "X-Retry": "0", "X-Retry-Max": "99"}
    assert (status["state"], status["attempts"]) == ("cancelled", 1)
    assert "cancelRequested" not in status
    assert again.status_code == 409
    # Taken out of the stream: nothing is left for a worker, and the function ran once.
    await wait_for_empty(nc, queue)
    assert len(gateway.calls_to("down")) == 1
    assert seen.by_call[call_id] == ["queued", "waiting", "cancelled"]


async def test_a_running_call_finishes_and_its_final_result_stands(
    gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory, states: tuple[States, str]
) -> None:
    seen, bucket = states

    gateway.behaviours["slow"] = answer(200, "done", after_s=1.5)
    worker = start_worker(call_status_bucket=bucket)
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        call_id = await _queue(client, worker, "slow", receiver)
        await wait_until(lambda: len(gateway.calls_to("slow")) == 1, 10, "the call to start")
        cancelled = await client.delete(_url(worker, f"/async-function/{call_id}"))
        during = (await client.get(_url(worker, f"/async-function/{call_id}"))).json()
        [callback] = await receiver.wait_for(1)
        after = (await client.get(_url(worker, f"/async-function/{call_id}"))).json()

    assert cancelled.status_code == 202
    assert cancelled.json()["cancelRequested"] is True
    assert (during["state"] in ("queued", "running"), during["cancelRequested"]) == (True, True)
    assert (callback.header("X-Call-Status"), callback.body) == ("succeeded", b"done")
    assert after["state"] == "succeeded"
    assert "cancelRequested" not in after
    # Never said cancelled, then something else.
    assert "cancelled" not in seen.by_call[call_id]


async def test_a_running_call_that_would_be_retried_is_cancelled_with_its_last_result(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["flaky"] = answer(503, "overloaded", after_s=1.0)
    worker = start_worker()
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        call_id = await _queue(client, worker, "flaky", receiver)
        await wait_until(lambda: len(gateway.calls_to("flaky")) == 1, 10, "the call to start")
        cancelled = await client.delete(_url(worker, f"/async-function/{call_id}"))
        [callback] = await receiver.wait_for(1)
        status = (await client.get(_url(worker, f"/async-function/{call_id}"))).json()

    assert cancelled.status_code == 202
    assert (callback.header("X-Call-Status"), callback.header("X-Function-Status")) == ("cancelled", "503")
    assert callback.body == b"overloaded"
    assert (status["state"], status["status"], status["attempts"]) == ("cancelled", 503, 1)
    await wait_for_empty(nc, queue)
    # The retry it would have had (50 ms later) never happens.
    await asyncio.sleep(0.5)
    assert len(gateway.calls_to("flaky")) == 1


async def test_a_queued_call_is_never_invoked(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["slow"] = answer(200, "done", after_s=1.0)
    worker = start_worker(max_inflight="1")
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        first = await _queue(client, worker, "slow", receiver)
        await wait_until(lambda: len(gateway.calls_to("slow")) == 1, 10, "the first call to start")
        second = await _queue(client, worker, "figlet", receiver)
        cancelled = await client.delete(_url(worker, f"/async-function/{second}"))
        callbacks = await receiver.wait_for(2)
        status = (await client.get(_url(worker, f"/async-function/{second}"))).json()

    assert cancelled.status_code == 202
    assert (cancelled.json()["state"], cancelled.json()["cancelRequested"]) == ("queued", True)
    by_call = {c.header("X-Call-Id"): c for c in callbacks}
    assert by_call[first].header("X-Call-Status") == "succeeded"
    assert (by_call[second].header("X-Call-Status"), by_call[second].header("X-Function-Status")) == ("cancelled", "0")
    assert (status["state"], status["attempts"]) == ("cancelled", 0)
    assert gateway.calls_to("figlet") == []
    await wait_for_empty(nc, queue)
