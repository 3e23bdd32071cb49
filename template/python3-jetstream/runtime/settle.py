"""Turn a handler's outcome into a JetStream acknowledgement.

:func:`plan` is pure and exhaustive; :func:`apply` is the only place that talks to the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from nats.aio.msg import Msg

from .contract import Ack, DeadLetter, Outcome, Retry, Terminate
from .dead_letters import DeadLetters

Verb = Literal["ack", "nak", "term", "dead-letter"]


@dataclass(frozen=True, slots=True)
class Action:
    """One acknowledgement to send: ``nak`` carries the redelivery delay in seconds;
    ``dead-letter`` stores the message with ``detail`` first, then acks it."""

    verb: Verb
    delay_s: float = 0.0
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


def plan(outcome: Outcome | None) -> Action:
    """Map an outcome (``None`` meaning success) to the acknowledgement that settles it."""
    match outcome:
        case None:
            return Action("ack", reason="ok")
        case Ack(reason=reason):
            return Action("ack", reason=reason)
        case Retry(delay_s=delay_s, reason=reason):
            return Action("nak", delay_s=max(0.0, delay_s), reason=reason)
        case Terminate(reason=reason):
            return Action("term", reason=reason)
        case DeadLetter(reason=reason, detail=detail):
            return Action("dead-letter", reason=reason, detail=detail)
        case _:
            assert_never(outcome)


async def apply(msg: Msg, action: Action, dead_letters: DeadLetters) -> None:
    """Send ``action`` for ``msg``; a nak with no delay asks for redelivery at once.

    A dead letter is acked only once the dead-letter stream has stored it, so a failure here
    (raised to the caller) leaves the message on the work queue.
    """
    if action.verb == "ack":
        await msg.ack()
    elif action.verb == "nak":
        await msg.nak(delay=action.delay_s or None)
    elif action.verb == "term":
        await msg.term()
    else:
        await dead_letters.store(msg, action.reason, action.detail)
        await msg.ack()
