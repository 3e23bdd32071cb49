"""Ended spans, exported in batches by one task on the event loop.

Why not the SDK's ``BatchSpanProcessor``: it runs a thread of its own that encodes while holding
the GIL, logs its failures through the standard library's logger, and reads its ``OTEL_BSP_*``
settings leniently (a bad value is logged and replaced by the default). Here each span is encoded
on the loop when its batch goes out (:mod:`.otlp`, 2-3 µs a span, a batch of 512 in about a
millisecond), not as it ends: run on a message's path, encoding added its cost to every traced
call's latency, and in a loop over a batch the encoder's code and caches stay warm. Only the
blocking HTTP request of the SDK's client runs in a thread; failures are counted and logged in
the worker's own log; the task is awaited at shutdown; and a bad setting stops start-up.

The batching follows the SDK's ``OTEL_BSP_*`` variables: a batch goes out every
``OTEL_BSP_SCHEDULE_DELAY`` ms, or as soon as ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` spans are
waiting; beyond ``OTEL_BSP_MAX_QUEUE_SIZE`` waiting spans new ones are dropped and counted;
at shutdown what is left goes out within ``OTEL_BSP_EXPORT_TIMEOUT`` ms.

At shutdown a failed export is not tried again, and the first one that fails ends the export:
with a collector that is down, the SDK's client retried each batch with back-off for its
timeout, so the worker took 31-32 s to exit after SIGTERM, past Kubernetes' default grace
period of 30 s, which would have killed it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from runtime import ConfigError, cancel_and_wait, describe

from .otlp import Encoder, SpanData

#: What becomes of a span, as ``count`` is told.
OUTCOMES = ("exported", "dropped", "failed")
#: (variable, default, smallest) of each batching setting, as the SDK names and defaults them.
_SETTINGS = {
    "schedule_delay_ms": ("OTEL_BSP_SCHEDULE_DELAY", 5000, 1),
    "queue_size": ("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1),
    "batch_size": ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1),
    "export_timeout_ms": ("OTEL_BSP_EXPORT_TIMEOUT", 30000, 1),
}


@dataclass(frozen=True)
class BatchSettings:
    schedule_delay_ms: int = 5000
    queue_size: int = 2048
    batch_size: int = 512
    export_timeout_ms: int = 30000

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> BatchSettings:
        """Raises:
        ConfigError: a setting is not a whole number at least 1, or the batch exceeds the queue.
        """
        values: dict[str, int] = {}
        for field_name, (variable, default, smallest) in _SETTINGS.items():
            text = environ.get(variable, "").strip()
            try:
                values[field_name] = int(text) if text else default
            except ValueError:
                raise ConfigError(variable, text, "expected a whole number") from None
            if values[field_name] < smallest:
                raise ConfigError(variable, text, f"must be at least {smallest}")
        if values["batch_size"] > values["queue_size"]:
            raise ConfigError(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                str(values["batch_size"]),
                "must not exceed OTEL_BSP_MAX_QUEUE_SIZE",
            )
        return cls(**values)


class Batches:
    """Spans waiting for export, and the task that sends them.

    ``send`` posts one encoded request and returns why it was not taken (``""`` when it was);
    it blocks, and is run in a thread. ``stop_retries``, called as shutdown begins, makes a
    ``send`` under way or to come try only once. ``count`` is told how many spans were
    ``exported``, ``dropped`` or ``failed``, a batch at a time. :meth:`ended` is called on the
    event loop's thread.
    """

    def __init__(
        self,
        encoder: Encoder,
        send: Callable[[bytes], str],
        settings: BatchSettings,
        log: FilteringBoundLogger,
        stop_retries: Callable[[], None] | None = None,
        count: Callable[[str, int], None] | None = None,
    ) -> None:
        self._encoder = encoder
        self._send = send
        self._settings = settings
        self._log = log
        self._stop_retries = stop_retries
        self._count = count if count is not None else (lambda outcome, spans: None)
        for outcome in OUTCOMES:  # each at 0 from the start, so the first failure is an increase
            self._count(outcome, 0)
        #: Spans ended, waiting for export.
        self._waiting: list[SpanData] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: Spans dropped since the last export said so (counted then, with a warning).
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="trace export")

    def ended(self, span: SpanData) -> None:
        """Queue an ended span (dropped, and counted, while the queue is full)."""
        if len(self._waiting) >= self._settings.queue_size:
            self.dropped += 1
            return
        self._waiting.append(span)
        if len(self._waiting) >= self._settings.batch_size:
            self._full.set()

    async def _run(self) -> None:
        delay_s = self._settings.schedule_delay_ms / 1000
        while not self._closing:
            # Not wait_for: on Python 3.11 it can swallow a cancellation that meets a set event.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._full.wait()
            self._full.clear()
            await self._export_waiting()

    async def _export_waiting(self) -> None:
        dropped, self.dropped = self.dropped, 0
        if dropped:
            self._count("dropped", dropped)
            self._log.warning("Trace spans dropped: the export queue was full", spans=dropped)
        while self._waiting:
            batch = self._waiting[: self._settings.batch_size]
            del self._waiting[: len(batch)]
            encoded: list[bytes] = []
            unencodable = ""
            for span in batch:
                try:
                    encoded.append(self._encoder.span(span))
                except Exception as exc:  # a span the worker cannot export never stops the others
                    unencodable = describe(exc)
            if unencodable:
                self._lost(len(batch) - len(encoded))
                self._log.warning("Trace spans not exported", spans=len(batch) - len(encoded), error=unencodable)
            if not encoded:
                continue
            try:
                problem = await asyncio.to_thread(self._send, self._encoder.request(encoded))
            except Exception as exc:  # a failed export never stops the ones after it
                problem = describe(exc)
            if not problem:
                self._count("exported", len(encoded))
            else:
                self._lost(len(encoded))
                self._log.warning("Trace spans not exported", spans=len(encoded), error=problem)
                if self._closing and self._waiting:  # shutting down: no more waiting on it
                    self._lost(len(self._waiting))
                    self._log.warning(
                        "Trace spans not exported before shutdown", spans=len(self._waiting), error=problem
                    )
                    self._waiting.clear()

    def _lost(self, spans: int) -> None:
        self._count("failed", spans)

    async def close(self) -> None:
        """Export what is left, within the export timeout and with no retries, and stop the task."""
        self._closing = True
        if self._stop_retries is not None:
            self._stop_retries()
        self._full.set()
        try:
            async with asyncio.timeout(self._settings.export_timeout_ms / 1000):
                if self._task is not None:
                    await self._task
                await self._export_waiting()
        except TimeoutError:
            self._lost(len(self._waiting))
            self._log.warning("Trace spans not exported before shutdown", spans=len(self._waiting))
        finally:
            if self._task is not None:
                await cancel_and_wait(self._task)
