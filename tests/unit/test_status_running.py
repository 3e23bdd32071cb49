"""Which calls are recorded ``running``: driven through time as the store drives it, with one
wake-up at a time, at the moment the last sweep asked for."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from function.status.running import Began, Running

AFTER = 250  # whole milliseconds, so sums are exact


def simulate(calls: list[tuple[int, int]]) -> tuple[dict[str, int], int]:
    """Calls as (start, duration), started in this order; when each was recorded running, and
    how many times the store woke."""
    running = Running(after_s=AFTER)
    events = sorted(
        [(start, 0, f"c{i}") for i, (start, _) in enumerate(calls)]
        + [(start + duration, 1, f"c{i}") for i, (start, duration) in enumerate(calls)]
    )
    recorded: dict[str, int] = {}
    wake: float | None = None
    wakes = 0

    def sweep_until(now: float) -> None:
        nonlocal wake, wakes
        while wake is not None and wake <= now:
            at, wakes = wake, wakes + 1
            due, wake = running.due(at)
            for call in due:
                assert call.call_id not in recorded, "recorded running twice"
                recorded[call.call_id] = int(at)

    for at, ended, call_id in events:
        sweep_until(at)  # a timer due at the same moment runs first
        if not ended:
            running.began(call_id, "fn", 1, at)
            if wake is None:
                wake = at + AFTER
        else:
            running.ended(call_id)
    sweep_until(float("inf"))
    return recorded, wakes


calls_strategy = st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 1000)), max_size=60).map(
    lambda calls: sorted(calls, key=lambda call: call[0])
)


@given(calls_strategy)
def test_running_is_recorded_once_exactly_when_a_call_outlives_the_delay(calls: list[tuple[int, int]]) -> None:
    recorded, _ = simulate(calls)

    assert set(recorded) == {f"c{i}" for i, (_, duration) in enumerate(calls) if duration >= AFTER}
    for call_id, at in recorded.items():
        start = calls[int(call_id[1:])][0]
        assert at == start + AFTER, "recorded at the moment the call came due, not later"


@given(calls_strategy)
def test_the_store_wakes_no_more_often_than_calls_begin(calls: list[tuple[int, int]]) -> None:
    _, wakes = simulate(calls)

    assert wakes <= len({start for start, _ in calls})


def test_a_call_noted_twice_keeps_its_first_start_and_an_ended_one_is_forgotten() -> None:
    running = Running(after_s=1.0)
    running.began("a", "fn", 1, now=0.0)
    running.began("a", "fn", 2, now=0.5)
    running.began("b", "fn", 1, now=0.6)
    running.ended("b")

    assert running.due(1.0) == ([Began("a", "fn", 1)], None)
    assert len(running) == 0
