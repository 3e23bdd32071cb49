"""Function mode's pure parts: fair shares, the adaptive limit, and lane names."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.fair import deal
from runtime.lanes import (
    OTHER_FUNCTIONS,
    PLAIN,
    READABLE_KEY,
    Lane,
    consumer_name,
    function_subject,
    key_of,
    pending_by_function,
)
from runtime.limiter import AdaptiveLimit
from runtime.pulls import Pulls

wants_lists = st.lists(st.integers(min_value=0, max_value=500), max_size=40)
deals = {
    "wants": wants_lists,
    "free": st.integers(min_value=0, max_value=2000),
    "start": st.integers(min_value=0, max_value=100),
    "quantum": st.integers(min_value=1, max_value=20),
}


@given(**deals)
def test_a_deal_gives_no_one_more_than_wanted_and_everything_that_is_wanted(
    wants: list[int], free: int, start: int, quantum: int
) -> None:
    grants, _ = deal(len(wants), wants.__getitem__, free, start, quantum)

    assert all(0 < g <= wants[i] for i, g in grants.items())
    assert sum(grants.values()) == min(free, sum(wants))


@given(**deals)
def test_a_deal_is_fair_to_within_one_quantum(wants: list[int], free: int, start: int, quantum: int) -> None:
    grants, _ = deal(len(wants), wants.__getitem__, free, start, quantum)

    # A function that got less than it wanted got at most one quantum less than any other: a
    # function with 50,000 waiting cannot crowd out one with 5.
    short = [grants.get(i, 0) for i, w in enumerate(wants) if grants.get(i, 0) < w]
    if short and grants:
        assert max(grants.values()) - min(short) <= quantum


@given(count=st.integers(min_value=1, max_value=30), quantum=st.integers(1, 10), rounds=st.integers(1, 20))
def test_the_turn_passes_on_from_deal_to_deal(count: int, quantum: int, rounds: int) -> None:
    # One quantum free at a time, every function always wanting: each is served in turn.
    served = [0] * count
    start = 0
    for _ in range(rounds * count):
        grants, start = deal(count, lambda _: 1000, quantum, start, quantum)
        for index, grant in grants.items():
            served[index] += grant

    assert served == [rounds * quantum] * count


def test_a_deal_asks_only_the_functions_it_reaches() -> None:
    asked: list[int] = []

    def want(index: int) -> int:
        asked.append(index)
        return 100

    grants, start = deal(1000, want, 12, 500, 12)

    assert (grants, start, asked) == ({500: 12}, 501, [500])


@dataclass
class Simulated:
    """A function that takes ``capacity`` calls at once and refuses more, driven by a full
    backlog through ``limit``: a discrete-time simulation with its own clock."""

    limit: AdaptiveLimit
    capacity: int
    call_s: float = 0.02
    now: float = 0.0

    def run(self, seconds: float) -> tuple[int, int]:
        """Run ``seconds`` more; returns (successes, refusals)."""
        successes, refusals, end = 0, 0, self.now + seconds
        running: list[float] = []
        while self.now < end:
            for _ in range(self.limit.limit - len(running)):
                if len(running) >= self.capacity:
                    refusals += 1
                    self.limit.overloaded(len(running) + 1, self.now)
                else:
                    running.append(self.now + self.call_s)
            self.now += self.call_s / 4
            done = [at for at in running if at <= self.now]
            for _ in done:
                self.limit.succeeded(len(running), self.now)
                successes += 1
            running = [at for at in running if at > self.now]
        return successes, refusals


@settings(deadline=None, max_examples=40)
@given(capacity=st.integers(min_value=1, max_value=60), maximum=st.integers(min_value=1, max_value=200))
def test_the_limit_settles_at_the_functions_capacity_with_few_refusals(capacity: int, maximum: int) -> None:
    limit = AdaptiveLimit(maximum)
    function = Simulated(limit, capacity)
    function.run(10)  # warm up
    successes, refusals = function.run(10)

    assert 1 <= limit.limit <= min(maximum, capacity + 1)
    best = min(maximum, capacity) * 10 / 0.02
    assert successes >= 0.9 * best
    assert refusals <= 0.05 * (successes + refusals)


@settings(deadline=None, max_examples=40)
@given(low=st.integers(1, 20), high=st.integers(21, 80))
def test_the_limit_follows_capacity_up_and_down_within_seconds(low: int, high: int) -> None:
    limit = AdaptiveLimit(100)
    function = Simulated(limit, low)
    function.run(5)
    function.capacity = high
    function.run(5)
    assert limit.limit >= 0.9 * high
    function.capacity = low
    function.run(5)
    assert limit.limit <= low + 1


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 300), st.floats(0, 1000)), max_size=300))
def test_the_limit_stays_between_one_and_the_maximum_whatever_happens(events: list[tuple[bool, int, float]]) -> None:
    limit = AdaptiveLimit(50)
    for overloaded, running, now in events:
        (limit.overloaded if overloaded else limit.succeeded)(running, now)
        assert 1 <= limit.limit <= 50


def test_successes_that_do_not_fill_the_limit_do_not_raise_it() -> None:
    limit = AdaptiveLimit(100, limit=10)
    for second in range(100):
        limit.succeeded(running=3, now=float(second))

    assert limit.limit == 10


@given(name=st.from_regex(READABLE_KEY, fullmatch=True))
def test_function_subjects_and_lane_keys_round_trip(name: str) -> None:
    subject = function_subject("faas-request", name, "openfaas-fn")

    assert subject is not None
    key = key_of("faas-request", subject)
    assert key == (name if "." in name else f"{name}.openfaas-fn")


@given(st.text(max_size=40))
def test_a_name_no_subject_can_hold_goes_on_the_plain_subject(name: str) -> None:
    subject = function_subject("q", name, "openfaas-fn")

    if subject is not None:
        tokens = subject.split(".")
        assert len(tokens) == 3
        assert all(t and not set(t) & set(" \t\r\n*>") for t in tokens)


@given(keys=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=30, unique=True))
def test_lane_consumers_have_valid_distinct_names(keys: list[str]) -> None:
    names = [consumer_name("faas-workers", key) for key in keys]

    assert len(set(names)) == len(names)
    assert all(n.startswith("faas-workers_") and len(n) <= 255 for n in names)
    assert all(not set(n) & set(" \t\r\n.*>/\\") for n in names)
    assert consumer_name("faas-workers", PLAIN) == "faas-workers"
    assert key_of("q", "q") == PLAIN
    assert key_of("q", "other") is None
    assert key_of("q", "q.") is None


def test_pending_series_are_capped_and_the_rest_added_up() -> None:
    counts = {f"q.f{i}.ns": i for i in range(1, 11)} | {"q": 7}

    assert pending_by_function("q", counts, known=["idle.ns", PLAIN]) == {
        **{f"f{i}.ns": i for i in range(1, 11)},
        "idle.ns": 0,
    }
    capped = pending_by_function("q", counts, known=[], limit=4)
    assert capped == {"f10.ns": 10, "f9.ns": 9, "f8.ns": 8, OTHER_FUNCTIONS: sum(range(1, 8))}


def test_a_lane_asks_for_what_is_stored_within_its_limit_and_a_quarter_more_held_ready() -> None:
    lane = Lane(0, "f.ns", "w_f_ns", "next", Pulls.for_payload(1.0), AdaptiveLimit(100, limit=8), ready=True)
    lane.stored = 20
    assert lane.wants(100) == 8 + 2
    lane.running = 5
    assert lane.wants(100) == 5
    lane.stored = 6
    assert lane.wants(100) == 1
    lane.dry = True
    lane.stored, lane.running = 20, 0
    assert lane.wants(100) == 1  # a probe for a redelivery, not ten idle requests
    lane.missing = True
    assert lane.wants(100) == 0
    unlimited = Lane(1, "g.ns", "w_g_ns", "next", Pulls.for_payload(1.0), None, ready=True, stored=500)
    assert unlimited.wants(100) == 100


def test_the_simulated_function_really_refuses_beyond_capacity() -> None:
    # The harness above must be able to fail: an unlimited worker is refused most of the time.
    class Deaf(AdaptiveLimit):
        def overloaded(self, running: int, now: float) -> None:
            pass

    _, refusals = Simulated(Deaf(100, limit=100), 8).run(2)
    assert refusals > 1000


def test_the_cap_a_lanes_messages_carry_bounds_its_limit() -> None:
    lane = Lane(0, "f.ns", "w_f_ns", "next", Pulls.for_payload(1.0), AdaptiveLimit(100, limit=8), ready=True)
    lane.stored = 50
    lane.ceiling = 3

    assert lane.cap(100) == 3
    assert lane.wants(100) == 3 + 1  # and one held ready
    lane.limit = None
    assert lane.cap(2) == 2
