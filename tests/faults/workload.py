"""A workload for fault tests: requests with unique call ids, a function that counts what it did,
and the report of one fault: published, invoked, dead-lettered, duplicated."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from nats.aio.client import Client
from nats.js.errors import NoStreamResponseError

from harness.publish import publish_request
from harness.servers import RecordingServer, wait_until
from tests.support import Queue, dead_letters, queued

#: Where each test process appends its fault reports; the session prints them at the end.
#: How long a publish answered "no responders" is tried again.
NO_RESPONDERS_FOR_S = 10.0
REPORT = Path(os.environ.get("FAULT_REPORT", Path(__file__).resolve().parents[2] / "build" / "fault-report.jsonl"))


@dataclass
class Work:
    """The function: takes ``delay_s``, answers 200 (or what ``refuse`` says), counts successes per call."""

    delay_s: float = 0.0
    limit: int | None = None
    successes: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    running: int = 0
    #: The most calls that were running at once.
    peak: int = 0
    #: Every call received, by call id (successes or not).
    received: Counter[str] = field(default_factory=Counter)

    async def __call__(self, request: web.Request, body: bytes) -> web.Response:
        call_id = request.headers["X-Call-Id"]
        self.received[call_id] += 1
        if self.limit is not None and self.running >= self.limit:
            self.refusals += 1
            return web.Response(status=429, text="too many", headers={"Retry-After": "0"})
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        self.successes[call_id] += 1
        return web.Response(text=f"done {call_id}")


@dataclass
class Workload:
    """``count`` requests to ``function`` on ``queue``, each with a callback to ``receiver``."""

    name: str
    count: int
    queue: Queue
    gateway: RecordingServer
    receiver: RecordingServer
    work: Work
    function: str = "work"
    prefix: str = "r"
    #: Function mode: published on the function's own subject (``<queue>.<name>.<namespace>``).
    function_mode: bool = False

    def __post_init__(self) -> None:
        self.gateway.behaviours[self.function] = self.work

    @property
    def call_ids(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(self.count)]

    async def publish(self, nc: Client, call_ids: list[str] | None = None) -> None:
        subject = f"{self.queue.subject}.{self.function}.openfaas-fn" if self.function_mode else self.queue.subject
        for call_id in call_ids or self.call_ids:
            request = queued(self.function, call_id, self.receiver.url + "/done")
            deadline = time.monotonic() + NO_RESPONDERS_FOR_S
            while True:
                try:
                    await publish_request(nc, subject, request)
                    break
                except NoStreamResponseError:
                    # "No responders": nothing was stored. A subject the stream took a moment ago
                    # reaches every server of a cluster a little later (function mode adds one).
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)

    def completed(self) -> set[str]:
        """Call ids whose successful result reached the callback receiver."""
        return {c.header("X-Call-Id") or "" for c in self.receiver.calls if c.header("X-Function-Status") == "200"}

    async def wait_done(self, timeout_s: float = 60.0) -> None:
        wanted = set(self.call_ids)
        await wait_until(lambda: wanted <= self.completed(), timeout_s, f"{self.name}: every request completed")

    def invocations(self) -> int:
        return len(self.gateway.calls_to(self.function))

    def duplicated(self) -> int:
        """Successful invocations beyond the first of each request."""
        return sum(n - 1 for n in self.work.successes.values() if n > 1)

    async def report(self, nc: Client, **extra: object) -> dict[str, object]:
        """Check the invariant, then record and return this fault's figures."""
        letters = await dead_letters(nc, self.queue)
        dead = {letter.detail.get("callId") for letter in letters}
        succeeded = set(self.work.successes) & set(self.call_ids)
        missing = set(self.call_ids) - succeeded - dead
        assert not missing, f"{self.name}: {len(missing)} requests neither invoked to success nor dead-lettered"
        record: dict[str, object] = {
            "fault": self.name,
            "published": self.count,
            "invoked": len(succeeded),
            "invocations": self.invocations(),
            "dead_lettered": len(dead & set(self.call_ids)),
            "duplicated": self.duplicated(),
            **extra,
        }
        append_report(record)
        return record


def append_report(record: dict[str, object]) -> None:
    """Add one fault's figures to the session's report."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a") as out:
        out.write(json.dumps(record) + "\n")
