"""When to retry an invocation and how long to wait: pure decisions, no I/O.

The worker's defaults come from the environment; a function overrides them with annotations
(``com.openfaas.retry.attempts``, ``.codes``, ``.min_wait``, ``.max_wait``) that the gateway
copies into the message. An invalid annotation is reported and the default used.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from runtime import parse_duration
from runtime.backoff import Backoff
from runtime.numbers import ascii_int, ascii_int_or_none

#: Annotation prefix the OpenFaaS Pro worker reads; kept so functions carry over.
ANNOTATION_PREFIX = "com.openfaas.retry."
#: Statuses whose ``Retry-After`` header sets the next delay.
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: The longest ``Retry-After`` honoured; JetStream's delays are int64 nanoseconds, ~292 years.
MAX_RETRY_AFTER_S = 24 * 3600.0
#: Header with which OpenFaaS components mark an error as theirs, not the function's.
INTERNAL_HEADER = "x-openfaas-internal"
#: Statuses that may say a function is full (see :func:`overloaded`).
OVERLOAD_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one function's failures are retried."""

    #: Attempts in all, the first included.
    attempts: int
    codes: frozenset[int]
    min_wait_s: float
    max_wait_s: float
    backoff: str = "exponential"

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt, as sent in ``X-Retry-Max``."""
        return self.attempts - 1

    def delay(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (1 for the first), jittered by ``backoff``."""
        return Backoff(self.min_wait_s, self.max_wait_s, self.backoff).delay(retry, rng)

    def with_annotations(self, annotations: Mapping[str, str]) -> tuple[RetryPolicy, list[str]]:
        """Apply a function's retry annotations.

        Returns:
            The policy to use and one message per annotation that was invalid and ignored.
        """
        if not annotations:
            return self, []
        overrides: dict[str, Any] = {}
        problems: list[str] = []
        readers: dict[str, tuple[str, Callable[[str], Any]]] = {
            "attempts": ("attempts", _attempts),
            "codes": ("codes", _codes),
            "min_wait": ("min_wait_s", _wait),
            "max_wait": ("max_wait_s", _wait),
        }
        for suffix, (attribute, read) in readers.items():
            raw = annotations.get(ANNOTATION_PREFIX + suffix)
            if raw is None:
                continue
            try:
                overrides[attribute] = read(raw)
            except ValueError:
                problems.append(f"{ANNOTATION_PREFIX}{suffix}={raw!r} is invalid; using the default")
        return replace(self, **overrides), problems


def _attempts(raw: str) -> int:
    value = ascii_int(raw.strip())
    if value < 1:
        raise ValueError(raw)
    return value


def _codes(raw: str) -> frozenset[int]:
    return parse_codes(raw)


def _wait(raw: str) -> float:
    seconds = parse_duration(raw.strip())
    if seconds < 0:
        raise ValueError(raw)
    return seconds


def parse_codes(raw: str) -> frozenset[int]:
    """Parse ``"408,429,500"`` into status codes.

    Raises:
        ValueError: a part is not a status code from 100 to 599, or there is none.
    """
    codes = frozenset(ascii_int(part.strip(), max_digits=3) for part in raw.split(",") if part.strip())
    if not codes or any(not 100 <= code <= 599 for code in codes):
        raise ValueError(raw)
    return codes


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Invoke again after ``delay_s``."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Final:
    """No more attempts; ``exhausted`` when the status was retryable but attempts ran out."""

    exhausted: bool = False


def is_retryable(status: int, headers: Mapping[str, str], codes: frozenset[int]) -> bool:
    """A listed status, or any error that an OpenFaaS component marked as its own."""
    return status in codes or (status >= 400 and INTERNAL_HEADER in headers)


def overloaded(status: int, headers: Mapping[str, str]) -> bool:
    """The function had no room for the call: a 429 from it, or the gateway's 503 marked
    internal (no endpoints: scaled to zero, or none ready). Pure; ``headers`` lower-cased."""
    return status == 429 or (status == 503 and INTERNAL_HEADER in headers)


def decide(
    policy: RetryPolicy,
    *,
    status: int,
    headers: Mapping[str, str],
    attempt: int,
    rng: random.Random,
    now: datetime,
) -> RetryLater | Final:
    """Decide what follows attempt number ``attempt`` (1-based) that ended with ``status``.

    ``headers`` are the response headers with lower-case names.
    """
    if not is_retryable(status, headers, policy.codes):
        return Final()
    if attempt >= policy.attempts:
        return Final(exhausted=True)
    if status in RETRY_AFTER_STATUSES and "retry-after" in headers:
        asked = parse_retry_after(headers["retry-after"], now)
        if asked is not None:
            return RetryLater(min(max(asked, policy.min_wait_s), MAX_RETRY_AFTER_S))
    return RetryLater(policy.delay(attempt, rng))


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date).

    Returns:
        The wait in seconds (0 for a date in the past), or ``None`` when the value is invalid.
    """
    text = value.strip()
    seconds = ascii_int_or_none(text)
    if seconds is not None:
        return float(seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
