"""Publish queued requests in the gateway's exact format."""

from __future__ import annotations

from nats.aio.client import Client

from runtime.loader import PACKAGE, import_package
from harness.worker import HANDLER

import_package(HANDLER, PACKAGE)
from function.queue_request import QueueRequest, encode  # noqa: E402

__all__ = ["QueueRequest", "encode", "publish_request"]


async def publish_request(nc: Client, subject: str, request: QueueRequest) -> int:
    """Publish one request as the gateway would; returns its stream sequence."""
    ack = await nc.jetstream().publish(subject, encode(request))
    return ack.seq
