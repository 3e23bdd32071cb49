"""Publish queued requests in the gateway's exact format."""

from __future__ import annotations

from nats.aio.client import Client

from harness.worker import HANDLER
from runtime.loader import PACKAGE, import_package

import_package(HANDLER, PACKAGE)
from function.wire.gourl import GoURL, parse  # noqa: E402
from function.wire.queue_request import QueueRequest, encode  # noqa: E402

__all__ = ["GoURL", "QueueRequest", "encode", "parse", "publish_request"]


async def publish_request(nc: Client, subject: str, request: QueueRequest) -> int:
    """Publish one request as the gateway would; returns its stream sequence."""
    ack = await nc.jetstream().publish(subject, encode(request))
    return ack.seq
