from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from function.retry import parse_retry_after
from runtime.backoff import BACKOFF_MODES, exponential_delay, jitter

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("retry", "delay"), [(1, 10), (2, 20), (3, 40), (4, 80), (5, 120), (50, 120), (10_000, 120)])
def test_the_delay_doubles_from_the_initial_wait_up_to_the_cap(retry: int, delay: float) -> None:
    assert exponential_delay(retry, initial_s=10, max_s=120) == delay


def test_a_zero_initial_wait_retries_at_once() -> None:
    assert exponential_delay(3, initial_s=0, max_s=120) == 0


@given(
    retry=st.integers(1, 200),
    initial=st.floats(0, 100),
    cap=st.floats(0, 1000),
    mode=st.sampled_from(BACKOFF_MODES),
    seed=st.integers(0, 2**32),
)
def test_each_jitter_mode_stays_within_its_bounds(retry: int, initial: float, cap: float, mode: str, seed: int) -> None:
    base = exponential_delay(retry, initial_s=initial, max_s=cap)

    delay = jitter(base, mode, random.Random(seed))

    low = {"exponential": base, "full": 0.0, "equal": base / 2}[mode]
    assert low <= delay <= base <= cap


def test_jitter_spreads_a_burst() -> None:
    rng = random.Random(7)
    delays = {round(jitter(60, "full", rng), 3) for _ in range(50)}

    assert len(delays) > 40


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds
