"""Real parts for end-to-end tests: one nats-server per test process, fresh names per test,
loopback HTTP servers for the gateway and callback receiver, and worker processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import RetentionPolicy, StreamConfig

from function.dead_letters import StoredDeadLetter, read
from harness.natsd import NatsServer
from harness.publish import QueueRequest
from harness.servers import RecordingServer
from harness.worker import WorkerProcess

#: The default dead-letter stream, which every test's worker shares (a subject per queue).
DEAD_LETTER_STREAM = "faas-dead-letter"


@pytest.fixture(scope="session")
def natsd() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.close()


def queued(
    function: str, call_id: str, callback: str | None = None, *, body: bytes | None = None, **retry: str
) -> QueueRequest:
    """A request as the gateway stores it; ``retry`` holds ``com.openfaas.retry.*`` annotations."""
    header = {"X-Call-Id": (call_id,), "Content-Type": ("text/plain",)}
    if callback is not None:
        header["X-Callback-Url"] = (callback,)
    annotations = {f"com.openfaas.retry.{key}": value for key, value in retry.items()}
    return QueueRequest(
        function=function, body=call_id.encode() if body is None else body, header=header, annotations=annotations
    )


@dataclass(frozen=True)
class Queue:
    """Names of a stream, subject and durable that no other test uses."""

    stream: str
    subject: str
    durable: str

    def env(self) -> dict[str, str]:
        return {"nats_stream": self.stream, "queue_name": self.subject, "nats_durable": self.durable}


@pytest.fixture
def queue() -> Queue:
    tag = uuid.uuid4().hex[:10]
    return Queue(stream=f"q-{tag}", subject=f"q-{tag}", durable=f"w-{tag}")


@pytest.fixture
async def nc(natsd: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(natsd.url)
    yield client
    await client.drain()


@pytest.fixture
async def gateway() -> AsyncIterator[RecordingServer]:
    server = await RecordingServer().start()
    yield server
    await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[RecordingServer]:
    server = await RecordingServer().start()
    yield server
    await server.close()


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(natsd: NatsServer, queue: Queue, gateway: RecordingServer) -> Iterator[WorkerFactory]:
    """Start a worker bound to this test's queue; every worker started is stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(handler_dir: Path | None = None, **env: str) -> WorkerProcess:
        settings = {
            "nats_url": natsd.url,
            "gateway_url": gateway.url,
            "ack_wait": "5s",
            "fetch_wait": "250ms",
            "initial_retry_wait": "50ms",
            "max_retry_wait": "400ms",
            **queue.env(),
            **env,
        }
        worker = WorkerProcess(settings) if handler_dir is None else WorkerProcess(settings, handler_dir=handler_dir)
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.close()


async def create_stream(nc: Client, queue: Queue) -> None:
    """Create the work-queue stream ahead of the worker, so messages can be published first."""
    await nc.jetstream().add_stream(
        StreamConfig(name=queue.stream, subjects=[queue.subject], retention=RetentionPolicy.WORK_QUEUE)
    )


async def stream_messages(nc: Client, queue: Queue) -> int:
    """How many messages the stream still holds."""
    info = await nc.jetstream().stream_info(queue.stream)
    return info.state.messages


async def wait_for_empty(nc: Client, queue: Queue, timeout_s: float = 10.0) -> None:
    """Wait until every message was acked or terminated (a work queue then holds none)."""
    deadline = time.monotonic() + timeout_s
    while (left := await stream_messages(nc, queue)) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {queue.stream} still holds {left} messages")
        await asyncio.sleep(0.02)


async def dead_letters(nc: Client, queue: Queue) -> list[StoredDeadLetter]:
    """This queue's dead letters, oldest first."""
    return await read(nc.jetstream(), DEAD_LETTER_STREAM, f"{DEAD_LETTER_STREAM}.{queue.subject}")
