from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from function.retry import Final, RetryLater, RetryPolicy, decide

POLICY = RetryPolicy(attempts=4, codes=frozenset({429, 500, 502, 503, 504}), min_wait_s=1.0, max_wait_s=8.0)
NOW = datetime(2026, 11, 28, tzinfo=UTC)


def _decide(status: int, attempt: int, headers: dict[str, str] | None = None, policy: RetryPolicy = POLICY) -> object:
    return decide(policy, status=status, headers=headers or {}, attempt=attempt, rng=random.Random(1), now=NOW)


@pytest.mark.parametrize(
    ("status", "attempt", "headers", "expected"),
    [
        (200, 1, {}, Final()),
        (202, 3, {}, Final()),
        (404, 1, {}, Final()),
        (400, 1, {}, Final()),
        (503, 1, {}, RetryLater(1.0)),
        (503, 2, {}, RetryLater(2.0)),
        (500, 3, {}, RetryLater(4.0)),
        (503, 4, {}, Final(exhausted=True)),
        (404, 1, {"x-openfaas-internal": "proxy"}, RetryLater(1.0)),
        (200, 1, {"x-openfaas-internal": "proxy"}, Final()),
        (429, 1, {"retry-after": "5"}, RetryLater(5.0)),
        (503, 2, {"retry-after": "0"}, RetryLater(1.0)),
        (429, 1, {"retry-after": "whenever"}, RetryLater(1.0)),
        (500, 1, {"retry-after": "5"}, RetryLater(1.0)),
    ],
)
def test_decisions(status: int, attempt: int, headers: dict[str, str], expected: object) -> None:
    assert _decide(status, attempt, headers) == expected


def test_annotations_override_the_defaults() -> None:
    policy, problems = POLICY.with_annotations(
        {
            "com.openfaas.retry.attempts": "2",
            "com.openfaas.retry.codes": "418",
            "com.openfaas.retry.min_wait": "3s",
            "com.openfaas.retry.max_wait": "1m",
        }
    )

    assert problems == []
    assert policy == RetryPolicy(attempts=2, codes=frozenset({418}), min_wait_s=3.0, max_wait_s=60.0)
    assert _decide(418, 1, policy=policy) == RetryLater(3.0)
    assert _decide(503, 1, policy=policy) == Final()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("attempts", "many"),
        ("attempts", "0"),
        ("codes", "abc"),
        ("codes", "99"),
        ("codes", ""),
        ("min_wait", "10"),
        ("max_wait", "-1s"),
    ],
)
def test_an_invalid_annotation_falls_back_to_the_default(key: str, value: str) -> None:
    policy, problems = POLICY.with_annotations({f"com.openfaas.retry.{key}": value})

    assert policy == POLICY
    assert len(problems) == 1
    assert key in problems[0]


def test_retry_max_counts_retries_not_attempts() -> None:
    assert POLICY.max_retries == 3
