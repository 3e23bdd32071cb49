"""A test function whose ``on_connect`` loses the first cancellation it is sent, as
``asyncio.wait_for`` does on Python 3.11 when its answer arrives in the same turn of the loop
(nats-py's requests wait that way), and as any library or function can."""

from __future__ import annotations

import asyncio

from runtime import Ack, Context, Event, Outcome


async def handle(event: Event, context: Context) -> Outcome | None:
    return Ack()


async def on_connect(context: Context) -> None:
    context.log.info("Waiting in on_connect")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        context.log.info("Cancellation lost")
    await asyncio.Event().wait()  # until cancelled again
