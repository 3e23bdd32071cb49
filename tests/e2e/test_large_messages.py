"""Large requests at high concurrency: pulls are bounded by bytes, so the server never cuts the
worker off as a slow consumer and nothing is delivered twice; and small ones one at a time, where
a request cannot bring more than the bound allows, so it carries none and ends without the 409
Batch Completed the server sends after every request with ``max_bytes``."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from harness.natsd import NatsServer
from harness.publish import QueueRequest, publish_request
from harness.servers import RecordingServer, wait_until
from tests.support import Queue, WorkerFactory, create_stream, wait_for_empty

pytestmark = pytest.mark.e2e


@pytest.fixture
def roomy_natsd(tmp_path: Path) -> Iterator[NatsServer]:
    """A server that takes messages of up to 8 MiB (the default is 1 MiB)."""
    config = tmp_path / "nats.conf"
    config.write_text("max_payload: 8MB\n")
    server = NatsServer(extra_args=("-c", str(config))).start()
    yield server
    server.close()


@pytest.mark.parametrize(
    ("body_bytes", "count", "inflight"), [(1024 * 1024, 100, 100), (5 * 1024 * 1024, 12, 12), (100, 50, 1)]
)
async def test_large_bodies_at_full_concurrency_are_each_delivered_once(
    roomy_natsd: NatsServer,
    connect: Callable[..., Awaitable[Client]],
    queue: Queue,
    gateway: RecordingServer,
    start_worker: WorkerFactory,
    body_bytes: int,
    count: int,
    inflight: int,
) -> None:
    nc = await connect(roomy_natsd.url)
    await create_stream(nc, queue)
    body = os.urandom(body_bytes)
    for i in range(count):
        await publish_request(
            nc, queue.subject, QueueRequest(function="echo", body=body, header={"X-Call-Id": (str(i),)})
        )
    # ack_wait far longer than the run: a message delivered twice could only come from a cut connection.
    worker = start_worker(nats_url=roomy_natsd.url, max_inflight=str(inflight), ack_wait="60s")
    await worker.wait_ready()

    await wait_until(lambda: len(gateway.calls_to("echo")) >= count, 60, f"{count} invocations")
    await wait_for_empty(nc, queue)

    info = await nc.jetstream().consumer_info(queue.stream, queue.durable)
    assert info.delivered.consumer_seq == count  # every message delivered exactly once
    assert len(gateway.calls_to("echo")) == count
    assert all(len(call.body) == body_bytes for call in gateway.calls_to("echo"))
    assert "Slow Consumer" not in (roomy_natsd.store / "server.log").read_text(errors="replace")
    assert worker.events("Reconnected to NATS") == []
    # Requests that end by bytes or by completing their batch are routine, never a refusal.
    assert worker.events("Pull refused") == []


async def test_one_slot_asks_without_max_bytes_and_hears_no_status_per_request(
    natsd: NatsServer,
    connect: Callable[..., Awaitable[Client]],
    queue: Queue,
    gateway: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    nc = await connect(natsd.url)
    await create_stream(nc, queue)
    pulls: dict[str, dict[str, int]] = {}
    statuses: list[tuple[str, str]] = []

    async def spy(msg: Msg) -> None:
        if msg.subject.startswith("$JS.API.CONSUMER.MSG.NEXT."):
            pulls[msg.reply] = json.loads(msg.data)
        elif msg.headers and "Status" in msg.headers:
            statuses.append((msg.subject, f"{msg.headers['Status']} {msg.headers.get('Description', '')}"))

    # The worker's pull requests (each with its own reply subject), and every status sent to an inbox.
    await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{queue.stream}.{queue.durable}", cb=spy)
    await nc.subscribe("_INBOX.>", cb=spy)
    worker = start_worker(max_inflight="1", fetch_wait="30s")
    await worker.wait_ready()
    for i in range(20):
        await publish_request(
            nc, queue.subject, QueueRequest(function="echo", body=b"x", header={"X-Call-Id": (str(i),)})
        )

    await wait_until(lambda: len(gateway.calls_to("echo")) >= 20, 30, "20 invocations")
    await wait_for_empty(nc, queue)

    assert len(pulls) >= 20
    assert all(pull["batch"] == 1 and "max_bytes" not in pull for pull in pulls.values())
    # Requests expire after fetch_wait (30 s), so none of the worker's ends with a status here.
    assert [status for status in statuses if status[0] in pulls] == []
