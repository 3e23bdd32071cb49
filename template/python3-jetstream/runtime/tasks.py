"""Ending tasks for certain: cancelled again until they are over.

One cancellation can be lost. On Python 3.11, ``asyncio.wait_for`` returns its future's result
when the cancellation arrives in the same turn of the loop as that result (CPython gh-86296,
fixed in 3.12), and nats-py waits for every request's answer that way; a library or a function
can also catch ``CancelledError`` and carry on. A task cancelled once and then awaited can then
keep the process from ever stopping: a function-mode worker did, after SIGTERM, its discovery
task cancelled just as a stream-info answer came. So the runtime ends the tasks it owns with
:func:`cancel_and_wait`, which cancels again whatever is still running, except a task it is told
to spare while it finishes what it does on cancellation (a call handing its message back):
cancelling that one again would cut it short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound="asyncio.Future[Any]")

#: How long a cancelled task may run on before it is cancelled again: one that took the
#: cancellation is over within a turn or two of the loop.
RECANCEL_S = 0.1


async def cancel_and_wait(*tasks: F, spare: Callable[[F], bool] | None = None) -> None:
    """Cancel ``tasks`` and wait until every one is over, cancelling again each one that runs
    on, but none while ``spare`` is true of it; what they raised or returned is dropped."""
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            if spare is None or not spare(task):
                task.cancel()
        _, running = await asyncio.wait(running, timeout=RECANCEL_S)
    await asyncio.gather(*tasks, return_exceptions=True)  # each one's exception retrieved
