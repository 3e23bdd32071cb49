"""The dead-letter stream: where messages go that must not be retried and must not be lost.

A dead letter is the original message, byte for byte, as the payload; where it came from, why
it died, how often it was tried and the handler's ``detail`` travel in ``Dead-Letter-*``
headers, so the letter is hardly larger than the message and ``nats stream view`` shows both.
It is published to ``<dead_letter_stream>.<queue_name>`` with a ``Nats-Msg-Id`` derived from the
original's stream sequence, so storing it twice (after a crash before the ack) keeps one copy.
The connector never consumes this stream; operators list and replay from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

REASON = "Dead-Letter-Reason"
SUBJECT = "Dead-Letter-Subject"
STREAM = "Dead-Letter-Stream"
SEQUENCE = "Dead-Letter-Sequence"
ATTEMPTS = "Dead-Letter-Attempts"
PUBLISHED_AT = "Dead-Letter-Published-At"
DEAD_AT = "Dead-Letter-Dead-At"
#: The handler's detail, as compact JSON.
DETAIL = "Dead-Letter-Detail"
#: The original message's own headers, as compact JSON.
HEADERS = "Dead-Letter-Headers"
#: Set (to the original size) only when the message had to be cut to fit ``max_payload``.
TRUNCATED = "Dead-Letter-Truncated"


def dead_letter_headers(
    *,
    headers: Mapping[str, str],
    subject: str,
    stream: str,
    stream_seq: int,
    attempts: int,
    published_at: datetime,
    reason: str,
    detail: Mapping[str, Any],
    now: datetime,
) -> dict[str, str]:
    """The headers that say where a dead letter came from and why it died."""
    return {
        "Nats-Msg-Id": f"{stream}-{stream_seq}",
        REASON: reason,
        SUBJECT: subject,
        STREAM: stream,
        SEQUENCE: str(stream_seq),
        ATTEMPTS: str(attempts),
        PUBLISHED_AT: published_at.isoformat(),
        DEAD_AT: now.isoformat(),
        DETAIL: json.dumps(dict(detail), default=str, separators=(",", ":")),
        HEADERS: json.dumps(dict(headers), separators=(",", ":")),
    }


def fit(data: bytes, headers: dict[str, str], max_payload: int) -> bytes:
    """Cut ``data`` (marking ``headers``) only if payload and headers would exceed ``max_payload``.

    The server closes a connection that publishes more than ``max_payload`` (headers included),
    and nats-py does not reconnect after that, so a dead letter must never be too large.
    """
    header_bytes = len("NATS/1.0\r\n\r\n") + sum(len(f"{k}: {v}\r\n".encode()) for k, v in headers.items())
    room = max_payload - header_bytes - len(f"{TRUNCATED}: {len(data)}\r\n")
    if len(data) + header_bytes <= max_payload:
        return data
    headers[TRUNCATED] = str(len(data))
    return data[: max(0, room)]


class DeadLetters:
    """Stores dead letters for one queue."""

    def __init__(self, js: JetStreamContext, *, subject: str, max_payload: int) -> None:
        self._js = js
        self._max_payload = max_payload
        self.subject = subject

    async def store(self, msg: Msg, reason: str, detail: Mapping[str, Any]) -> None:
        """Publish the dead letter and wait until the stream has it."""
        metadata = msg.metadata
        headers = dead_letter_headers(
            headers=msg.headers or {},
            subject=msg.subject,
            stream=metadata.stream,
            stream_seq=metadata.sequence.stream,
            attempts=metadata.num_delivered,
            published_at=metadata.timestamp,
            reason=reason,
            detail=detail,
            now=datetime.now(UTC),
        )
        data = fit(msg.data, headers, self._max_payload)
        # No stream= here: it would add a header that fit() did not count; the subject routes it.
        await self._js.publish(self.subject, data, headers=headers)
