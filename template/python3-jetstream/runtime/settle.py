"""Turn a handler's outcome into a JetStream acknowledgement.

:func:`plan` is pure and exhaustive; :func:`apply` is the only place that talks to the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, assert_never

from nats.aio.msg import Msg

from .contract import Ack, Outcome, Retry, Terminate

Verb = Literal["ack", "nak", "term"]


@dataclass(frozen=True, slots=True)
class Action:
    """One acknowledgement to send: ``nak`` carries the redelivery delay in seconds."""

    verb: Verb
    delay_s: float = 0.0
    reason: str = ""


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
        case _:
            assert_never(outcome)


async def apply(msg: Msg, action: Action) -> None:
    """Send ``action`` for ``msg``; a nak with no delay asks for redelivery at once."""
    if action.verb == "ack":
        await msg.ack()
    elif action.verb == "nak":
        await msg.nak(delay=action.delay_s or None)
    else:
        await msg.term()
