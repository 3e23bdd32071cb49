"""Helpers for tests that run real parts: names, requests, and reading the streams."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.js.api import RetentionPolicy, StreamConfig

from function.cli.dead_letters import StoredDeadLetter, read
from harness.publish import QueueRequest
from harness.worker import WorkerProcess

#: The default dead-letter stream, which every test's worker shares (a subject per queue).
DEAD_LETTER_STREAM = "faas-dead-letter"
#: Starts a worker bound to the test's queue: ``start_worker(handler_dir=None, **env)``.
WorkerFactory = Callable[..., WorkerProcess]
#: Runs the ``queue-worker`` command: ``cli(*args, env=None, stderr=PIPE)``.
RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Queue:
    """Names of a stream, subject and durable that no other test uses."""

    stream: str
    subject: str
    durable: str

    def env(self) -> dict[str, str]:
        return {"nats_stream": self.stream, "queue_name": self.subject, "nats_durable": self.durable}


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
    """Wait until every message was acked or terminated (a work queue then holds none).

    JetStream may not answer for a moment while a cluster elects a new leader; that is retried.
    """
    deadline = time.monotonic() + timeout_s
    left: int | str = "unknown"
    while time.monotonic() < deadline:
        try:
            left = await stream_messages(nc, queue)
        except nats.errors.Error:
            left = "unknown"
        if left == 0:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"stream {queue.stream} still holds {left} messages")


async def dead_letters(nc: Client, queue: Queue, attempts: int = 20) -> list[StoredDeadLetter]:
    """This queue's dead letters, oldest first (retried while JetStream does not answer)."""
    for _ in range(attempts - 1):
        try:
            return await read(nc.jetstream(), DEAD_LETTER_STREAM, f"{DEAD_LETTER_STREAM}.{queue.subject}")
        except nats.errors.Error:
            await asyncio.sleep(0.5)
    return await read(nc.jetstream(), DEAD_LETTER_STREAM, f"{DEAD_LETTER_STREAM}.{queue.subject}")
