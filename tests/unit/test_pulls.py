"""Pull-request bookkeeping: never more asked for than there are free slots, nothing counted twice."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.pulls import CONNECTION_BYTES, GRACE_S, MESSAGE_OVERHEAD, PULL_BYTES, Pulls, free_slots, refill_at


def test_the_first_request_asks_for_every_slot_and_later_ones_wait_for_an_eighth() -> None:
    pulls = Pulls.for_payload(expires_s=1.0)
    assert free_slots(100, 0, pulls.outstanding) == 100
    pulls.asked(100, now=0.0)
    for _ in range(100):
        pulls.delivered()

    assert [free_slots(100, running, pulls.outstanding) for running in (100, 88, 87, 0)] == [0, 0, 13, 100]


def test_one_slot_asks_again_as_soon_as_it_is_free() -> None:
    pulls = Pulls.for_payload(expires_s=1.0)
    pulls.asked(1, now=0.0)

    assert (free_slots(1, 0, pulls.outstanding), free_slots(1, 1, pulls.outstanding)) == (0, 0)
    pulls.delivered()
    assert (free_slots(1, 1, pulls.outstanding), free_slots(1, 0, pulls.outstanding)) == (0, 1)


def test_an_expired_request_returns_what_it_did_not_deliver() -> None:
    pulls = Pulls.for_payload(expires_s=1.0)
    first = pulls.asked(6, now=0.0)
    pulls.asked(4, now=0.0)
    pulls.delivered()
    pulls.delivered()

    pulls.ended(first, undelivered=4)

    assert pulls.outstanding == 4


def test_a_refused_request_returns_its_whole_batch() -> None:
    pulls = Pulls.for_payload(expires_s=1.0)
    pulls.asked(3, now=0.0)
    refused = pulls.asked(7, now=0.0)

    pulls.ended(refused, undelivered=None)
    pulls.ended(refused, undelivered=None)  # a repeated status changes nothing

    assert pulls.outstanding == 3


def test_a_fulfilled_request_is_forgotten_after_its_expiry() -> None:
    pulls = Pulls.for_payload(expires_s=1.0)
    done = pulls.asked(5, now=0.0)
    for _ in range(5):
        pulls.delivered()
    pulls.asked(5, now=1.0 + GRACE_S + 0.1)  # forgets the first on the way

    pulls.ended(done, undelivered=None)  # too late to count

    assert pulls.outstanding == 5


def test_lost_requests_are_counted_afresh() -> None:
    pulls = Pulls.for_payload(expires_s=1.0)
    pulls.asked(10, now=0.0)

    pulls.lost()

    assert (pulls.outstanding, free_slots(10, 0, pulls.outstanding)) == (0, 10)


@given(
    max_inflight=st.integers(min_value=1, max_value=300),
    steps=st.lists(st.sampled_from(["ask", "deliver", "finish", "expire", "refuse"]), max_size=200),
)
def test_asked_and_running_never_exceed_the_slots(max_inflight: int, steps: list[str]) -> None:
    pulls = Pulls.for_payload(expires_s=1.0)
    running = 0
    open_requests: list[tuple[str, int]] = []
    for step in steps:
        if step == "ask" and (batch := free_slots(max_inflight, running, pulls.outstanding)):
            open_requests.append((pulls.asked(batch, now=0.0), batch))
        elif step == "deliver" and pulls.outstanding:
            pulls.delivered()
            running += 1
        elif step == "finish" and running:
            running -= 1
        elif step in ("expire", "refuse") and open_requests:
            request_id, batch = open_requests.pop(0)
            pulls.ended(request_id, undelivered=min(batch, pulls.outstanding) if step == "expire" else None)

        assert pulls.outstanding >= 0
        assert pulls.outstanding + running <= max_inflight


@given(max_payload=st.integers(1024, 64 * 1024 * 1024), max_inflight=st.integers(1, 10_000))
def test_each_request_can_bring_the_largest_message_and_eight_of_them_fit_the_connection(
    max_payload: int, max_inflight: int
) -> None:
    pulls = Pulls.for_payload(expires_s=1.0, max_payload=max_payload)

    # A message of any size the server takes can come (a smaller max_bytes would strand it).
    assert pulls.max_bytes >= max_payload
    # At most max_inflight / refill_at requests deliver at once, each within max_bytes, and no
    # more messages than there are slots: at the default payload, within half of nats-server's
    # 64 MiB max_pending.
    requests = max_inflight // refill_at(max_inflight)
    assert requests <= CONNECTION_BYTES // PULL_BYTES == 8
    most = min(requests * pulls.max_bytes, max_inflight * (max_payload + MESSAGE_OVERHEAD))
    if max_payload <= 1024 * 1024:
        assert most <= 32 * 1024 * 1024 + 8 * MESSAGE_OVERHEAD


@given(
    max_payload=st.integers(1024, 64 * 1024 * 1024),
    max_inflight=st.integers(1, 10_000),
    data=st.data(),
)
def test_a_request_carries_max_bytes_only_where_the_connection_could_overflow_without_it(
    max_payload: int, max_inflight: int, data: st.DataObject
) -> None:
    pulls = Pulls.for_payload(expires_s=1.0, max_payload=max_payload, slots=max_inflight)
    largest = max_payload + MESSAGE_OVERHEAD
    # Requests open at once, as free_slots lets them be made: none smaller than refill_at unless
    # it is all that is free, no more messages than slots.
    batches: list[int] = []
    while (free := max_inflight - sum(batches)) and len(batches) < max_inflight // refill_at(max_inflight):
        batches.append(data.draw(st.integers(min(free, refill_at(max_inflight)), free)))
    bounds = [pulls.bound(batch) for batch in batches]

    # What the server may have to write at once: within the connection's budget, or within what
    # bounded requests may bring (one message of the largest size each, at least).
    most = sum(min(batch * largest, bound or batch * largest) for batch, bound in zip(batches, bounds, strict=True))
    assert most <= max(CONNECTION_BYTES, len(batches) * pulls.max_bytes)
    assert all(bound == 0 or bound >= largest for bound in bounds)
    # And a request is bounded only when it has to be: every bounded request ends with one more
    # message, a 409 Batch Completed.
    for batch, bound in zip(batches, bounds, strict=True):
        assert (bound != 0) == (batch * largest > pulls.max_bytes and max_inflight * largest > CONNECTION_BYTES)
