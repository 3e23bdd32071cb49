"""Queue depth from JetStream's own bookkeeping, refreshed off the hot path.

A background task reads the stream's and the consumer's state every ``interval``; scrapes
read the last snapshot, so a slow or absent NATS never slows a scrape or a message. Every
replica reports the same stream-wide figures (dashboards and autoscaling rules average them).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from structlog.typing import FilteringBoundLogger

from .errors import describe
from .settings import Settings

#: ``function_name`` of the stream-wide pending figure, as the OpenFaaS worker labels it.
ALL_FUNCTIONS = "all-functions"
#: Consumers the server lists per request.
CONSUMERS_PAGE = 256
#: Longest a reading of the per-subject counts may take.
STREAM_INFO_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One reading of the stream and consumer state."""

    #: Messages stored and not yet finished: waiting, waiting to retry, or running.
    messages: int
    #: The stream's last sequence: every message it ever accepted.
    submitted: int
    #: Delivered and not yet acknowledged (running, or waiting for a delayed redelivery).
    ack_pending: int
    #: Messages delivered more than once and not yet acknowledged.
    redelivered: int
    #: Bytes stored, and the stream's limits (-1: none).
    bytes: int = 0
    max_messages: int = -1
    max_bytes: int = -1
    #: Seconds since the oldest stored message was stored (0 when none is).
    oldest_age_s: float = 0.0
    #: This queue's messages in the dead-letter stream.
    dead_letters: int = 0


class StreamStateCollector(Collector):
    """Exposes the last :class:`Snapshot` under ``namespace``; nothing until the first reading."""

    def __init__(
        self, namespace: str, queue_name: str, functions: Callable[[], Mapping[str, int]] | None = None
    ) -> None:
        self._namespace = namespace
        self._queue = queue_name
        #: Function mode: messages stored per function (``name.namespace``), read more often.
        self._functions = functions
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families from the last snapshot."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        ns, queue = self._namespace, self._queue
        pending = GaugeMetricFamily(
            f"{ns}_pending_messages",
            "Messages waiting to be processed (stored in the work queue and not yet finished).",
            labels=["queue_name", "function_name"],
        )
        pending.add_metric([queue, ALL_FUNCTIONS], snapshot.messages)
        for function, stored in (self._functions() if self._functions is not None else {}).items():
            pending.add_metric([queue, function], stored)
        yield pending
        submitted = CounterMetricFamily(
            f"{ns}_messages_submitted",
            "Messages ever accepted by the stream (its last sequence number).",
            labels=["queue_name"],
        )
        submitted.add_metric([queue], snapshot.submitted)
        yield submitted
        for name, help_text, value in (
            ("consumer_ack_pending", "Messages delivered and not yet acknowledged.", snapshot.ack_pending),
            (
                "consumer_redelivered",
                "Messages delivered more than once and not yet acknowledged.",
                snapshot.redelivered,
            ),
            ("stream_messages", "Messages stored in the work-queue stream.", snapshot.messages),
            ("stream_bytes", "Bytes stored in the work-queue stream.", snapshot.bytes),
            ("stream_max_messages", "The stream's message limit (-1: none).", snapshot.max_messages),
            ("stream_max_bytes", "The stream's byte limit (-1: none).", snapshot.max_bytes),
            (
                "oldest_message_age_seconds",
                "Age of the oldest request still stored (waiting, waiting to retry, or running).",
                snapshot.oldest_age_s,
            ),
            ("dead_letter_messages", "This queue's messages kept in the dead-letter stream.", snapshot.dead_letters),
        ):
            family = GaugeMetricFamily(f"{ns}_{name}", help_text, labels=["queue_name"])
            family.add_metric([queue], value)
            yield family


async def refresh(
    js: JetStreamContext,
    settings: Settings,
    collector: StreamStateCollector,
    log: FilteringBoundLogger,
) -> None:
    """Read the state every ``stream_metrics_interval`` until cancelled; failures are logged once."""
    failing = False
    while True:
        try:
            stream = await js.stream_info(settings.stream)
            if settings.function_mode:
                consumers = [c for c in await all_consumers(js, settings.stream) if _ours(c.name, settings.durable)]
            else:
                consumers = [await js.consumer_info(settings.stream, settings.durable)]
            oldest_age_s = await oldest_age(js, settings.stream, stream.state.first_seq, stream.state.messages)
            dead_letters = await dead_letter_count(js, settings.dead_letter_stream, settings.dead_letter_subject)
        except (nats.errors.Error, TimeoutError) as exc:
            if not failing:
                log.warning("Cannot read stream state", error=describe(exc))
            failing = True
        else:
            failing = False
            collector.snapshot = Snapshot(
                messages=stream.state.messages,
                submitted=stream.state.last_seq,
                ack_pending=sum(c.num_ack_pending or 0 for c in consumers),
                redelivered=sum(c.num_redelivered or 0 for c in consumers),
                bytes=stream.state.bytes,
                max_messages=stream.config.max_msgs if stream.config.max_msgs is not None else -1,
                max_bytes=stream.config.max_bytes if stream.config.max_bytes is not None else -1,
                oldest_age_s=oldest_age_s,
                dead_letters=dead_letters,
            )
        await asyncio.sleep(settings.stream_metrics_interval_s)


async def oldest_age(js: JetStreamContext, stream: str, first_seq: int, messages: int) -> float:
    """Seconds since the stream's first stored message was stored; 0 for an empty stream."""
    if not messages:
        return 0.0
    try:
        first = await js.get_msg(stream, seq=first_seq)
    except nats.js.errors.NotFoundError:  # taken between the two reads
        return 0.0
    if first.time is None:
        return 0.0
    stored = first.time if first.time.tzinfo is not None else first.time.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - stored).total_seconds())


async def dead_letter_count(js: JetStreamContext, stream: str, subject: str) -> int:
    """Messages on ``subject`` of the dead-letter ``stream`` (0 until the stream exists)."""
    try:
        info = await js.stream_info(stream, subjects_filter=subject)
    except nats.js.errors.NotFoundError:
        return 0
    return sum((info.state.subjects or {}).values())


async def all_consumers(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    """Every consumer of ``stream`` (the server answers 256 at a time)."""
    found: list[ConsumerInfo] = []
    while True:
        page = await js.consumers_info(stream, offset=len(found))
        found.extend(page)
        if len(page) < CONSUMERS_PAGE:
            return found


def _ours(consumer: str, durable: str) -> bool:
    return consumer == durable or consumer.startswith(durable + "_")


async def subject_counts(client: Client, stream: str) -> dict[str, int]:
    """Messages stored per subject in ``stream``, every page of them (JetStream's own
    bookkeeping: nothing is counted in the worker).

    nats-py's ``stream_info`` reads only the first page (100,000 subjects), so the request is
    made here.

    Raises:
        nats.js.errors.Error: JetStream refused; TimeoutError: it did not answer.
    """
    counts: dict[str, int] = {}
    while True:
        request = json.dumps({"subjects_filter": ">", "offset": len(counts)}).encode()
        reply = await client.request(f"$JS.API.STREAM.INFO.{stream}", request, timeout=STREAM_INFO_TIMEOUT_S)
        answer = json.loads(reply.data)
        if "error" in answer:
            nats.js.errors.APIError.from_error(answer["error"])
        page = (answer.get("state") or {}).get("subjects") or {}
        counts.update(page)
        if not page or len(counts) >= int(answer.get("total") or 0):
            return counts
