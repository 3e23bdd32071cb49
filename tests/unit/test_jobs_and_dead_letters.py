from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from function.callbacks.job import CallbackJob
from function.callbacks.post import CallbackInfo
from function.cli.dead_letters import StoredDeadLetter
from function.invoke import Invocation
from function.transport import Response
from function.wire.queue_request import DecodeError
from runtime import DeadLetter
from runtime.dead_letters import dead_letter_headers, fit
from runtime.settle import Action, plan


@given(
    body=st.binary(max_size=200),
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)), max_size=4),
    retries=st.integers(0, 100),
)
def test_a_callback_job_keeps_the_whole_result(
    body: bytes, status: int, headers: list[tuple[str, str]], retries: int
) -> None:
    job = CallbackJob(
        url="http://receiver/cb?x=1",
        invocation=Invocation(Response(status, tuple(headers), body), 0.25, ""),
        info=CallbackInfo("call-1", "figlet", retries, 99),
    )

    assert CallbackJob.decode(job.encode()) == job


@pytest.mark.parametrize("data", [b"", b"[]", b"{}", b'{"url":"u","status":"x"}', b"[" * 100_000])
def test_a_broken_callback_job_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        CallbackJob.decode(data)


def test_a_dead_letter_outcome_stores_then_acks() -> None:
    assert plan(DeadLetter("exhausted", {"lastStatus": 500})) == Action(
        "dead-letter", reason="exhausted", detail={"lastStatus": 500}
    )


def test_the_headers_say_where_it_came_from_and_why() -> None:
    published = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    headers = dead_letter_headers(
        headers={"X-Call-Id": "c"},
        subject="faas-request",
        stream="faas-request",
        stream_seq=42,
        attempts=3,
        published_at=published,
        reason="exhausted",
        detail={"lastStatus": 503, "lastBody": "line one\nline two"},
        now=published,
    )
    letter = StoredDeadLetter(7, headers, b"\x00\xffraw")

    assert headers["Nats-Msg-Id"] == "faas-request-42"
    assert all("\n" not in value for value in headers.values())
    assert (letter.reason, letter.attempts) == ("exhausted", 3)
    assert letter.detail == {"lastStatus": 503, "lastBody": "line one\nline two"}
    assert letter.original_headers == {"X-Call-Id": "c"}
    assert letter.summary()["publishedAt"] == "2026-11-28T01:00:00+00:00"
    assert not letter.truncated


@given(size=st.integers(0, 5000), limit=st.integers(2000, 6000))
def test_a_message_is_cut_only_when_it_would_not_fit(size: int, limit: int) -> None:
    headers = {"Dead-Letter-Reason": "undecodable", "Dead-Letter-Detail": "{}"}
    data = b"x" * size

    kept = fit(data, headers, limit)

    wire = len(kept) + len("NATS/1.0\r\n\r\n") + sum(len(f"{k}: {v}\r\n") for k, v in headers.items())
    assert wire <= limit or kept == b""
    assert (kept == data) == ("Dead-Letter-Truncated" not in headers)
    if kept != data:
        assert headers["Dead-Letter-Truncated"] == str(size)
