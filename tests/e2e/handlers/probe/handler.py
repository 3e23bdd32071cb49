"""A test function for the generic runtime: its payload says what to do."""

from __future__ import annotations

import asyncio

from runtime import Ack, Context, Event, Outcome, Terminate


async def handle(event: Event, context: Context) -> Outcome | None:
    text = event.data.decode()
    context.log.info("Received", data=text, attempt=event.attempt)
    if text == "boom" and event.attempt == 1:
        raise RuntimeError("boom on first delivery")
    if text == "always boom":
        raise RuntimeError("boom on every delivery")
    if text == "wrong type":
        return "not an outcome"  # type: ignore[return-value]
    if text.startswith("sleep:"):
        await asyncio.sleep(float(text.removeprefix("sleep:")))
    if text == "lose a cancellation":
        await _lose_a_cancellation(context)
    if text == "term":
        return Terminate(reason="asked to")
    if text == "none":
        return None
    if text == "overflow":
        # One byte under the payload limit, plus headers: the server answers -ERR and closes.
        await context.publish(event.subject, b"x" * (1024 * 1024 - 1), {"X-Padding": "p" * 100})
    return Ack()


async def on_connect(context: Context) -> None:
    if context.environ.get("probe_on_connect") == "lose a cancellation":
        context.log.info("Waiting in on_connect")
        await _lose_a_cancellation(context)


async def _lose_a_cancellation(context: Context) -> None:
    """Wait until cancelled twice, going on after the first cancellation as ``asyncio.wait_for``
    does on Python 3.11 when its answer comes in the same turn (nats-py's requests wait so)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        context.log.info("Cancellation lost")
    await asyncio.Event().wait()
