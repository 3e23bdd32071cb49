"""A call's state, derived from what became of its message. Pure: no I/O.

``queued`` is written by the front door when it stores the call, ``running`` by the store
itself for a call that takes a while; every other state follows from the handler's outcome by
:func:`record_for`, the one place that says which.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, NamedTuple, assert_never

from runtime import Ack, DeadLetter, Outcome, Retry, Terminate


class CallState(StrEnum):
    """What GET ``/async-function/<call-id>`` and the callback's ``X-Call-Status`` report."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD_LETTERED = "dead-lettered"
    CANCELLED = "cancelled"


#: States after which nothing more happens to a call.
FINAL = frozenset({CallState.SUCCEEDED, CallState.FAILED, CallState.DEAD_LETTERED, CallState.CANCELLED})


def state_of_status(status: int) -> CallState:
    """The final state of a call the function answered: ``succeeded`` for 2xx and 3xx."""
    return CallState.SUCCEEDED if 200 <= status < 400 else CallState.FAILED


class Facts(NamedTuple):
    """What the worker learnt about a call while handling one delivery of it."""

    call_id: str
    function: str
    attempt: int
    #: The function's status, when it was invoked on this delivery.
    status: int | None = None
    duration_s: float | None = None
    #: Ended by a cancel: not invoked on this delivery, or (with ``status``) not retried after it.
    cancelled: bool = False
    #: The message's sequence in its stream, kept while the call waits so a cancel can withdraw it.
    seq: int = 0


#: A tuple, as ``Ack | Terminate`` would build a union on every call.
_SETTLED = (Ack, Terminate)


class Record(NamedTuple):
    """One status value to write."""

    call_id: str
    function: str
    state: CallState
    fields: dict[str, Any]


def record_for(outcome: Outcome, facts: Facts, *, now: float | None = None) -> Record:
    """The state a call is in once ``outcome`` settles its delivery, with what it carries."""
    # isinstance, not match: this runs for every message, and class patterns cost more.
    fields: dict[str, Any]
    if isinstance(outcome, Retry):
        fields = {"attempt": facts.attempt, "nextAttemptAt": (now or time.time()) + outcome.delay_s}
        if facts.seq:
            fields["seq"] = facts.seq
        if facts.status is not None:
            fields["lastStatus"] = facts.status
        return Record(facts.call_id, facts.function, CallState.WAITING, fields)
    fields = {}
    if facts.status is not None:
        fields = {"attempt": facts.attempt, "status": facts.status}
        if facts.duration_s is not None:
            # To the microsecond: int() is a fifth of round()'s 0.5 us, and this runs per message.
            fields["durationSeconds"] = int(facts.duration_s * 1e6 + 0.5) / 1e6
    if isinstance(outcome, DeadLetter):
        return Record(facts.call_id, facts.function, CallState.DEAD_LETTERED, {"reason": outcome.reason, **fields})
    if isinstance(outcome, _SETTLED):
        if facts.cancelled:
            state = CallState.CANCELLED
            # Attempts made: this delivery's only if it ran before the cancel was seen.
            fields["attempts"] = facts.attempt if facts.status is not None else facts.attempt - 1
        elif facts.status is not None:
            state = state_of_status(facts.status)
        else:
            state = CallState.FAILED
        return Record(facts.call_id, facts.function, state, fields)
    assert_never(outcome)
