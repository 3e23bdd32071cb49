"""Publish queued requests in the gateway's exact format."""

from __future__ import annotations

import time
import uuid

from nats.aio.client import Client

from harness.worker import HANDLER
from runtime.loader import PACKAGE, import_package

import_package(HANDLER, PACKAGE)
from function.wire.gourl import GoURL, parse  # noqa: E402
from function.wire.queue_request import QueueRequest, encode  # noqa: E402

__all__ = ["GoURL", "QueueRequest", "encode", "gateway_request", "parse", "publish_request"]


def gateway_request(function: str, body: bytes = b"", header: dict[str, tuple[str, ...]] | None = None) -> QueueRequest:
    """A request with the headers the gateway adds to every asynchronous call: a new
    ``X-Call-Id`` and ``X-Start-Time`` (now, in ns)."""
    stamped = {"X-Call-Id": (str(uuid.uuid4()),), "X-Start-Time": (str(time.time_ns()),), **(header or {})}
    return QueueRequest(function=function, body=body, header=stamped)


async def publish_request(nc: Client, subject: str, request: QueueRequest) -> int:
    """Publish one request as the gateway would; returns its stream sequence."""
    ack = await nc.jetstream().publish(subject, encode(request))
    return ack.seq
