"""Dead letters as the operator sees them: read, choose, replay and purge.

Replaying publishes the original message, byte for byte and with its headers, to the subject it
came from, then deletes the dead letter, so each one is replayed once. A replayed request starts
its attempts afresh; a replayed callback job only posts the callback again. A letter whose
message was cut to fit the server's payload limit is listed but never replayed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runtime.dead_letters import ATTEMPTS, DEAD_AT, DETAIL, HEADERS, PUBLISHED_AT, REASON, SUBJECT, TRUNCATED

#: Headers not carried over on replay: a deduplication id would make the stream drop the replay.
NOT_REPLAYED = frozenset({"nats-msg-id"})


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """One dead letter and its place in the dead-letter stream."""

    seq: int
    headers: Mapping[str, str]
    message: bytes

    @property
    def reason(self) -> str:
        return self.headers.get(REASON, "")

    @property
    def attempts(self) -> int:
        return int(self.headers.get(ATTEMPTS, "0"))

    @property
    def detail(self) -> dict[str, Any]:
        """What the worker recorded: callId, function, lastStatus, lastBody, ..."""
        detail: dict[str, Any] = json.loads(self.headers.get(DETAIL, "{}"))
        return detail

    @property
    def original_headers(self) -> dict[str, str]:
        headers: dict[str, str] = json.loads(self.headers.get(HEADERS, "{}"))
        return headers

    @property
    def truncated(self) -> bool:
        return TRUNCATED in self.headers

    @property
    def dead_at(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.headers[DEAD_AT])
        except (KeyError, ValueError):
            return None

    def summary(self) -> dict[str, Any]:
        """Everything but the message itself, for ``--json``."""
        return {
            "seq": self.seq,
            "reason": self.reason,
            "subject": self.headers.get(SUBJECT),
            "attempts": self.attempts,
            "publishedAt": self.headers.get(PUBLISHED_AT),
            "deadAt": self.headers.get(DEAD_AT),
            "detail": self.detail,
            "headers": self.original_headers,
            "bytes": int(self.headers.get(TRUNCATED, len(self.message))),
            "truncated": self.truncated,
        }


@dataclass(frozen=True, slots=True)
class Choice:
    """Which dead letters a command acts on: every given filter must hold (none: all). Pure."""

    functions: Sequence[str] = ()
    call_ids: Sequence[str] = ()
    reasons: Sequence[str] = ()
    #: Dead for at least / at most this many seconds.
    older_than_s: float | None = None
    newer_than_s: float | None = None

    @property
    def everything(self) -> bool:
        return not (self.functions or self.call_ids or self.reasons) and self.older_than_s is self.newer_than_s is None

    def holds(self, letter: StoredDeadLetter, now: datetime) -> bool:
        detail = letter.detail
        if self.functions and detail.get("function") not in self.functions:
            return False
        if self.call_ids and detail.get("callId") not in self.call_ids:
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.older_than_s is None and self.newer_than_s is None:
            return True
        dead_at = letter.dead_at
        if dead_at is None:
            return False
        age = (now - dead_at).total_seconds()
        return (self.older_than_s is None or age >= self.older_than_s) and (
            self.newer_than_s is None or age <= self.newer_than_s
        )


async def read(js: JetStreamContext, stream: str, subject: str) -> list[StoredDeadLetter]:
    """Every dead letter on ``subject``, oldest first."""
    letters: list[StoredDeadLetter] = []
    seq = 1
    while True:
        try:
            raw = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return letters
        if raw.seq is None:
            return letters
        letters.append(StoredDeadLetter(raw.seq, dict(raw.headers or {}), raw.data or b""))
        seq = raw.seq + 1


async def replay(js: JetStreamContext, stream: str, letter: StoredDeadLetter) -> None:
    """Publish the original message where it came from, then delete the dead letter."""
    headers = {k: v for k, v in letter.original_headers.items() if k.lower() not in NOT_REPLAYED}
    await js.publish(letter.headers[SUBJECT], letter.message, headers=headers or None)
    await js.delete_msg(stream, letter.seq)
