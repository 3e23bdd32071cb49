"""Ending tasks at shutdown when a cancellation can be lost (runtime/tasks.py)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import tasks as runtime_tasks
from runtime.tasks import RECANCEL_S, cancel_and_wait

#: Far beyond what ending a task takes (a few RECANCEL_S), far below the test's own timeout.
BOUND_S = 5.0


def _wait_kinds() -> st.SearchStrategy[Callable[[], Awaitable[object]]]:
    """What a task may be waiting on when it is cancelled."""

    async def forever() -> None:
        await asyncio.Event().wait()

    async def nap() -> None:
        await asyncio.sleep(0.01)

    async def reply() -> object:
        # An answer that never comes, awaited as nats-py awaits a request's.
        return await asyncio.wait_for(asyncio.get_running_loop().create_future(), 10)

    return st.sampled_from([forever, nap, reply])


def _stubborn(lost: int, wait: Callable[[], Awaitable[object]], log: list[str]) -> Callable[[], Awaitable[None]]:
    """A task that runs until cancelled, losing its first ``lost`` cancellations."""

    async def run() -> None:
        remaining = lost
        while True:
            try:
                await wait()
            except asyncio.CancelledError:
                if remaining == 0:
                    log.append("ended")
                    raise
                remaining -= 1
                log.append("lost")

    return run


@settings(max_examples=50, deadline=None)
@given(
    lost=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=4),
    wait=_wait_kinds(),
    finished=st.integers(min_value=0, max_value=2),
)
async def test_every_task_ends_however_many_cancellations_it_loses(
    lost: list[int], wait: Callable[[], Awaitable[object]], finished: int
) -> None:
    logs: list[list[str]] = [[] for _ in lost]
    tasks = [asyncio.create_task(_stubborn(n, wait, log)()) for n, log in zip(lost, logs, strict=True)]
    done = [asyncio.create_task(asyncio.sleep(0)) for _ in range(finished)]  # over before the cancel
    await asyncio.sleep(0.02)

    # Cancelled again sooner than the runtime does, so that the examples run fast.
    with mock.patch.object(runtime_tasks, "RECANCEL_S", 0.005):
        async with asyncio.timeout(BOUND_S):
            await cancel_and_wait(*tasks, *done)

    assert all(task.done() for task in [*tasks, *done])
    assert all(task.cancelled() for task in tasks)
    for n, log in zip(lost, logs, strict=True):
        assert log == ["lost"] * n + ["ended"]


async def test_one_cancellation_lost_leaves_a_task_running_where_cancelling_again_ends_it() -> None:
    # The fault itself, as the runtime met it before: cancelled once and awaited, a task that
    # lost the cancellation would be waited for forever.
    log: list[str] = []
    task = asyncio.create_task(_stubborn(1, asyncio.Event().wait, log)())
    await asyncio.sleep(0)
    task.cancel()
    finished, _ = await asyncio.wait({task}, timeout=5 * RECANCEL_S)
    assert not finished
    assert log == ["lost"]

    async with asyncio.timeout(BOUND_S):
        await cancel_and_wait(task)
    assert task.cancelled()
    assert log == ["lost", "ended"]


async def test_wait_for_loses_a_cancellation_that_comes_with_its_answer_on_this_python() -> None:
    # Why a cancellation can be lost without anyone catching it: on 3.11, asyncio.wait_for
    # returns its future's result when the cancellation arrives in the same turn (gh-86296).
    answers: list[object] = []

    async def request(future: asyncio.Future[str]) -> None:
        answers.append(await asyncio.wait_for(future, 10))
        await asyncio.Event().wait()

    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(request(future))
    await asyncio.sleep(0)
    future.set_result("answer")
    task.cancel()
    await asyncio.sleep(5 * RECANCEL_S)

    lost = sys.version_info < (3, 12)
    assert task.done() is not lost
    assert answers == (["answer"] if lost else [])
    async with asyncio.timeout(BOUND_S):
        await cancel_and_wait(task)
    assert task.cancelled()


async def test_what_the_tasks_raised_is_not_raised_again() -> None:
    async def failing() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("while being cancelled")

    async def failed() -> None:
        raise ValueError("before the cancel")

    tasks = [asyncio.create_task(failing()), asyncio.create_task(failed())]
    await asyncio.sleep(0)
    await cancel_and_wait(*tasks)
    assert [type(task.exception()) for task in tasks] == [RuntimeError, ValueError]


async def test_a_spared_task_is_left_to_finish_what_it_does_when_cancelled() -> None:
    # As a call handing its message back on shutdown: cancelled again while it does, the
    # message would be left to wait out ack_wait.
    settling: set[asyncio.Future[None]] = set()
    log: list[str] = []

    async def call() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            settling.add(task)
            await asyncio.sleep(5 * RECANCEL_S)  # cut short if cancelled again
            log.append("settled")
            raise

    task = asyncio.create_task(call())
    await asyncio.sleep(0)
    async with asyncio.timeout(BOUND_S):
        await cancel_and_wait(task, spare=settling.__contains__)

    assert log == ["settled"]
    assert task.cancelled()
