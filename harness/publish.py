"""Publish queued requests in the gateway's exact format."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from nats.aio.client import Client

from harness.worker import HANDLER
from runtime.loader import PACKAGE, import_package

import_package(HANDLER, PACKAGE)
from function.wire.gourl import GoURL, parse  # noqa: E402
from function.wire.queue_request import QueueRequest, encode  # noqa: E402

__all__ = ["GoURL", "QueueRequest", "encode", "gateway_request", "parse", "publish_request", "stamped"]


def gateway_request(function: str, body: bytes = b"", header: dict[str, tuple[str, ...]] | None = None) -> QueueRequest:
    """A request with the headers the gateway adds to every asynchronous call: a new
    ``X-Call-Id`` and ``X-Start-Time`` (now, in ns)."""
    headers = {"X-Call-Id": (str(uuid.uuid4()),), "X-Start-Time": (str(time.time_ns()),), **(header or {})}
    return QueueRequest(function=function, body=body, header=headers)


def stamped(function: str, body: bytes, header: dict[str, tuple[str, ...]]) -> Iterator[bytes]:
    """Encoded requests as :func:`gateway_request` makes them, each stamped when it is taken,
    without encoding the body again (a large one would cost the publisher more than the worker
    its message)."""
    call_id, start = "c" * 36, "9" * 19  # a UUID's and a time in ns's lengths, found once below
    placeholders = {"X-Call-Id": (call_id,), "X-Start-Time": (start,), **header}
    encoded = encode(QueueRequest(function=function, body=body, header=placeholders))
    head, _, rest = encoded.partition(call_id.encode())
    middle, found, tail = rest.partition(start.encode())
    if not found:
        raise ValueError("the encoded request does not hold the placeholders in order")
    while True:
        yield b"".join((head, str(uuid.uuid4()).encode(), middle, str(time.time_ns()).encode(), tail))


async def publish_request(nc: Client, subject: str, request: QueueRequest) -> int:
    """Publish one request as the gateway would; returns its stream sequence."""
    ack = await nc.jetstream().publish(subject, encode(request))
    return ack.seq
