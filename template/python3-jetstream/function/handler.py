"""A starter function: log each message and acknowledge it."""

from __future__ import annotations

from runtime import Ack, Context, Event, Retry

#: This function's name: it owns the durable consumer it creates, and a worker of any other
#: function pointed at that consumer is refused, so two functions never split one queue.
NAME = "my-function"


async def handle(event: Event, context: Context) -> Ack | Retry:
    """Handle one JetStream message.

    Return ``Ack()`` when done, ``Retry(delay_s=...)`` to have it delivered again later
    (nothing waits in memory meanwhile), or ``Terminate()`` to drop it for good.
    """
    if not event.data:
        return Retry(delay_s=5.0, reason="empty message")
    context.log.info("Received", bytes=len(event.data), subject=event.subject)
    return Ack()
