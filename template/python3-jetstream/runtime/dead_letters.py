"""The dead-letter stream: where messages go that must not be retried and must not be lost.

A dead letter is a JSON envelope with the original message (base64, byte for byte), where it
came from, why it died, how often it was tried, and the handler's ``detail``. It is published
to ``<dead_letter_stream>.<queue_name>`` with a ``Nats-Msg-Id`` derived from the original's
stream sequence, so storing it twice (after a crash before the ack) keeps one copy. The
connector never consumes this stream; operators list and replay from it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

#: Header naming the reason on every dead letter, for filtering without decoding the body.
REASON_HEADER = "Dead-Letter-Reason"


def envelope(
    *,
    data: bytes,
    headers: Mapping[str, str],
    subject: str,
    stream: str,
    stream_seq: int,
    attempts: int,
    published_at: datetime,
    reason: str,
    detail: Mapping[str, Any],
    now: datetime,
) -> bytes:
    """The dead letter's body."""
    document = {
        "reason": reason,
        "subject": subject,
        "stream": stream,
        "streamSeq": stream_seq,
        "attempts": attempts,
        "publishedAt": published_at.isoformat(),
        "deadAt": now.isoformat(),
        "detail": dict(detail),
        "headers": dict(headers),
        "message": base64.b64encode(data).decode("ascii"),
    }
    return json.dumps(document, default=str, separators=(",", ":")).encode()


class DeadLetters:
    """Stores dead letters for one queue."""

    def __init__(self, js: JetStreamContext, *, stream: str, subject: str) -> None:
        self._js = js
        self._stream = stream
        self.subject = subject

    async def store(self, msg: Msg, reason: str, detail: Mapping[str, Any]) -> None:
        """Publish the dead letter and wait until the stream has it."""
        metadata = msg.metadata
        body = envelope(
            data=msg.data,
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
        headers = {"Nats-Msg-Id": f"{metadata.stream}-{metadata.sequence.stream}", REASON_HEADER: reason}
        await self._js.publish(self.subject, body, stream=self._stream, headers=headers)
