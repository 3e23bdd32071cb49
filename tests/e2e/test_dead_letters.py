"""Dead letters: what cannot be done is kept, with why, and can be replayed."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from nats.aio.client import Client

from harness.natsd import NatsServer
from harness.publish import QueueRequest, encode, publish_request
from harness.servers import RecordingServer, wait_until
from tests.support import Queue, RunCli, WorkerFactory, create_stream, dead_letters, wait_for_empty

pytestmark = pytest.mark.e2e


async def test_exhausted_undecodable_and_expired_messages_are_kept_and_replay_brings_them_back(
    natsd: NatsServer,
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
    cli: RunCli,
) -> None:
    healthy = False

    async def unstable(request: web.Request, body: bytes) -> web.Response:
        return web.Response(text="fine") if healthy else web.Response(status=500, text="database down")

    gateway.behaviours["unstable"] = unstable
    await create_stream(nc, queue)
    old = QueueRequest(function="echo", body=b"stale", header={"X-Call-Id": ("old-1",)})
    await publish_request(nc, queue.subject, old)
    await asyncio.sleep(1.2)  # older than max_message_age before any worker sees it

    worker = start_worker(max_message_age="1s", max_retry_attempts="2")
    await worker.wait_ready()
    await nc.jetstream().publish(queue.subject, b"{not json")
    failing = QueueRequest(
        function="unstable",
        body=b"payload",
        header={"X-Call-Id": ("ex-1",), "X-Callback-Url": (receiver.url + "/cb",)},
    )
    await publish_request(nc, queue.subject, failing)

    await wait_until(lambda: len(worker.events("Dead-lettered")) == 3, 10, "three dead letters")
    await wait_for_empty(nc, queue)
    letters = {letter.reason: letter for letter in await dead_letters(nc, queue)}
    assert set(letters) == {"expired", "undecodable", "exhausted"}
    exhausted = letters["exhausted"]
    assert exhausted.attempts == 2
    assert exhausted.detail == {
        "callId": "ex-1",
        "function": "unstable",
        "lastStatus": 500,
        "lastBody": "database down",
        "lastError": "",
    }
    assert exhausted.message == encode(failing)
    assert letters["expired"].detail["callId"] == "old-1"
    assert letters["undecodable"].message == b"{not json"
    # The last failure was posted to the callback as well.
    [callback] = receiver.calls
    assert (callback.header("X-Function-Status"), callback.header("X-Retry")) == ("500", "1")

    # When the function is healthy again, replaying every dead letter finishes what can be finished.
    healthy = True
    replayed = await asyncio.to_thread(cli, "dead-letters", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr

    await receiver.wait_for(2)
    await wait_until(lambda: len(worker.events("Dead-lettered")) == 4, 10, "undecodable dead again")
    await wait_for_empty(nc, queue)
    assert receiver.calls[1].header("X-Function-Status") == "200"
    assert [c.body for c in gateway.calls_to("echo")] == [b"stale"]
    assert [letter.reason for letter in await dead_letters(nc, queue)] == ["undecodable"]
