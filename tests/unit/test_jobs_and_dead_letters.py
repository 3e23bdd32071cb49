from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from function.callback import CallbackInfo
from function.callback_job import CallbackJob
from function.invoke import Result
from function.queue_request import DecodeError
from runtime import DeadLetter
from runtime.dead_letters import envelope
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
        result=Result(status, tuple(headers), body, 0.25, ""),
        info=CallbackInfo("call-1", "figlet", retries, 99, "queue-worker/x"),
    )

    assert CallbackJob.decode(job.encode()) == job


@pytest.mark.parametrize("data", [b"", b"[]", b"{}", b'{"url":"u","status":"x"}'])
def test_a_broken_callback_job_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        CallbackJob.decode(data)


def test_a_dead_letter_outcome_stores_then_acks() -> None:
    assert plan(DeadLetter("exhausted", {"lastStatus": 500})) == Action(
        "dead-letter", reason="exhausted", detail={"lastStatus": 500}
    )


def test_the_envelope_keeps_the_original_bytes_and_why() -> None:
    published = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    body = envelope(
        data=b"\x00\xffraw",
        headers={"X-Call-Id": "c"},
        subject="faas-request",
        stream="faas-request",
        stream_seq=42,
        attempts=3,
        published_at=published,
        reason="exhausted",
        detail={"lastStatus": 503},
        now=published,
    )

    document = json.loads(body)
    assert base64.b64decode(document["message"]) == b"\x00\xffraw"
    assert document["reason"] == "exhausted"
    assert document["attempts"] == 3
    assert document["streamSeq"] == 42
    assert document["subject"] == "faas-request"
    assert document["detail"] == {"lastStatus": 503}
    assert document["headers"] == {"X-Call-Id": "c"}
    assert document["publishedAt"] == "2026-11-28T01:00:00+00:00"
