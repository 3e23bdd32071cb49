"""Delay arithmetic for retries: exponential back-off, jitter, and ``Retry-After``. No I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: ``exponential``: no jitter; ``full``: 0-100% of the delay; ``equal``: 50-100% of it.
BACKOFF_MODES = ("exponential", "full", "equal")


def exponential_delay(retry: int, *, initial_s: float, max_s: float) -> float:
    """The un-jittered wait before retry number ``retry`` (1 for the first retry).

    ``initial_s`` doubles with each retry and is capped at ``max_s``.
    """
    if retry < 1:
        raise ValueError("retry counts from 1")
    # Past 2**64 the cap has long since won; bounding the exponent keeps floats finite.
    return min(max_s, initial_s * 2.0 ** min(retry - 1, 64))


def jitter(delay_s: float, mode: str, rng: random.Random) -> float:
    """Spread ``delay_s`` by ``mode`` so that retries of a burst do not arrive together."""
    if mode == "full":
        return rng.uniform(0.0, delay_s)
    if mode == "equal":
        return delay_s / 2 + rng.uniform(0.0, delay_s / 2)
    if mode == "exponential":
        return delay_s
    raise ValueError(f"unknown backoff mode {mode!r}")


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date).

    Returns:
        The wait in seconds (0 for a date in the past), or ``None`` when the value is invalid.
    """
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
