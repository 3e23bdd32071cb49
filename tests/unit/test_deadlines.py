"""Request deadlines on a real event loop: each request that outlives the timeout, and only
those, ends as a timeout; a cancellation from elsewhere stays a cancellation. Durations are
a fifth of the timeout or five times it, so the loop's timing never decides."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from function.transport.deadlines import Deadlines

TIMEOUT_S = 0.1
#: (when it starts, whether it outlives the timeout, whether it is cancelled from elsewhere).
Request = tuple[float, bool, bool]


async def _request(deadlines: Deadlines, slow: bool) -> str:
    deadline = deadlines.start()
    try:
        await asyncio.sleep(TIMEOUT_S * 5 if slow else TIMEOUT_S / 5)
        return "answered"
    except asyncio.CancelledError:
        if deadlines.end(deadline):
            return "timed out"
        raise
    finally:
        deadlines.end(deadline)


async def _run(requests: list[Request]) -> list[str]:
    deadlines = Deadlines(TIMEOUT_S)

    async def one(start: float, slow: bool, cancelled: bool) -> str:
        await asyncio.sleep(start)
        task = asyncio.create_task(_request(deadlines, slow))
        if cancelled:  # well before its deadline
            asyncio.get_running_loop().call_later(TIMEOUT_S / 10, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    try:
        return await asyncio.gather(*(one(*request) for request in requests))
    finally:
        deadlines.close()


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, TIMEOUT_S / 50, TIMEOUT_S / 20]), st.booleans(), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_only_requests_that_outlive_the_timeout_time_out(requests: list[Request]) -> None:
    outcomes = asyncio.run(_run(requests))

    expected = ["cancelled" if cancelled else "timed out" if slow else "answered" for _, slow, cancelled in requests]
    assert outcomes == expected


def test_a_task_timed_out_once_can_be_cancelled_later_as_usual() -> None:
    async def run() -> bool:
        deadlines = Deadlines(TIMEOUT_S)
        assert await _request(deadlines, slow=True) == "timed out"
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling() == 0  # the deadline's cancellation was taken back

    assert asyncio.run(run())
