"""Pull-request bookkeeping: never more asked for than there are free slots, nor more bytes than
the connection takes, and nothing counted twice."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.pulls import BYTES_IN_FLIGHT, GRACE_S, PULL_BYTES, Pulls


def test_the_first_request_asks_for_every_slot_and_later_ones_wait_for_an_eighth() -> None:
    pulls = Pulls.for_slots(100, expires_s=1.0)
    assert pulls.wanted(running=0) == 100
    first = pulls.asked(100, now=0.0)
    for _ in range(100):
        pulls.delivered(first)

    assert [pulls.wanted(running) for running in (100, 89, 88, 0)] == [0, 0, 12, 100]


def test_one_slot_asks_again_as_soon_as_it_is_free() -> None:
    pulls = Pulls.for_slots(1, expires_s=1.0)
    request = pulls.asked(1, now=0.0)

    assert (pulls.wanted(running=0), pulls.wanted(running=1)) == (0, 0)
    pulls.delivered(request)
    assert (pulls.wanted(running=1), pulls.wanted(running=0)) == (0, 1)


def test_an_ended_request_returns_what_it_did_not_deliver() -> None:
    pulls = Pulls.for_slots(10, expires_s=1.0)
    first = pulls.asked(6, now=0.0)
    pulls.asked(4, now=0.0)
    pulls.delivered(first)
    pulls.delivered(first)

    pulls.ended(first)
    pulls.ended(first)  # a repeated status changes nothing

    assert pulls.outstanding == 4


def test_a_request_whose_status_is_lost_is_given_up_after_its_expiry() -> None:
    pulls = Pulls.for_slots(10, expires_s=1.0)
    silent = pulls.asked(5, now=0.0)
    pulls.asked(5, now=1.0 + GRACE_S + 0.1)  # gives up the first on the way

    pulls.ended(silent)  # too late to count
    pulls.delivered(silent)

    assert pulls.outstanding == 5


def test_lost_requests_are_counted_afresh() -> None:
    pulls = Pulls.for_slots(10, expires_s=1.0)
    pulls.asked(10, now=0.0)

    pulls.lost()

    assert (pulls.outstanding, pulls.wanted(running=0)) == (0, 10)


@given(max_payload=st.integers(1024, 64 * 1024 * 1024))
def test_each_request_can_bring_the_largest_message_and_all_of_them_fit_the_connection(max_payload: int) -> None:
    pulls = Pulls.for_slots(1000, expires_s=1.0, max_payload=max_payload)

    assert pulls.max_bytes >= max(PULL_BYTES, max_payload)
    # One request is always allowed (a message must be able to come); beyond it, the budget holds.
    assert pulls.max_open == 1 or pulls.max_open * pulls.max_bytes <= BYTES_IN_FLIGHT


@given(
    max_inflight=st.integers(min_value=1, max_value=300),
    max_open=st.integers(min_value=1, max_value=8),
    steps=st.lists(st.sampled_from(["ask", "deliver", "finish", "end", "expire"]), max_size=200),
)
def test_asked_and_running_never_exceed_the_slots_nor_the_open_requests(
    max_inflight: int, max_open: int, steps: list[str]
) -> None:
    pulls = Pulls(max_inflight, 1.0, refill_at=max(1, max_inflight // 8), max_open=max_open)
    running, now = 0, 0.0
    unsent: dict[str, int] = {}  # what each request may still deliver, as the server sees it
    for step in steps:
        if step == "ask" and (batch := pulls.wanted(running)):
            unsent[pulls.asked(batch, now=now)] = batch
        elif step == "deliver" and (pending := [r for r, n in unsent.items() if n]):
            unsent[pending[0]] -= 1
            pulls.delivered(pending[0])
            running += 1
        elif step == "finish" and running:
            running -= 1
        elif step == "end" and unsent:
            request_id = next(iter(unsent))
            del unsent[request_id]
            pulls.ended(request_id)
        elif step == "expire":
            now += 1.0 + GRACE_S + 0.1
            unsent.clear()  # the server has forgotten them all; their statuses were lost

        assert pulls.outstanding >= 0
        assert pulls.outstanding + running <= max_inflight
        assert len(pulls._open) <= max_open
