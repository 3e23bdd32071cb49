"""One message's life: decode, invoke, decide whether to retry, post the callback."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from structlog.typing import FilteringBoundLogger

from runtime import Ack, Context, Event, Outcome, Retry, Terminate

from .callback import CallbackInfo, post_callback
from .invoke import Invoker, Result
from .metrics import WorkerMetrics
from .policy import Final, RetryLater, decide
from .queue_request import DecodeError, QueueRequest, decode
from .settings import WorkerSettings

#: Sent as ``User-Agent`` on invocations and callbacks.
VERSION = "0.1.0"
USER_AGENT = f"queue-worker/{VERSION}"


@dataclass(frozen=True, slots=True)
class QueueWorker:
    """Handles each queued request; owns the two HTTP clients."""

    settings: WorkerSettings
    invoker: Invoker
    callback_client: httpx.AsyncClient
    metrics: WorkerMetrics
    rng: random.Random

    async def handle(self, event: Event, context: Context) -> Outcome:
        """Invoke once and settle: ack when done, retry later, or terminate what cannot be read."""
        try:
            request = decode(event.data)
        except DecodeError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            context.log.error("Cannot decode message", reason=exc.reason, error=str(exc), bytes=len(event.data))
            return Terminate(reason=f"undecodable: {exc.reason}")
        log = context.log.bind(callId=request.call_id, function=request.function)
        policy, problems = self.settings.retry.with_annotations(request.annotations)
        for problem in problems:
            log.warning("Invalid retry annotation", problem=problem)

        result = await self._invoke(request, context.settings.queue_name, log)
        decision = decide(
            policy,
            status=result.status,
            headers=result.header_map(),
            attempt=event.attempt,
            rng=self.rng,
            now=datetime.now(UTC),
        )
        if isinstance(decision, RetryLater):
            self.metrics.retries.labels(self._function_name(request), str(result.status)).inc()
            return Retry(decision.delay_s, reason=f"status {result.status}")
        if decision == Final(exhausted=True):
            log.warning("Retries exhausted", status=result.status, attempts=event.attempt)
        await self._post_callback(request, result, retries=event.attempt - 1, max_retries=policy.max_retries, log=log)
        return Ack(reason=f"status {result.status}")

    async def _invoke(self, request: QueueRequest, queue: str, log: FilteringBoundLogger) -> Result:
        name = self._function_name(request)
        log.info("Invoke", bytes=len(request.body), url=self._loggable(self.invoker.url(request)))
        if self.settings.debug:
            log.debug("Request body", body=request.body.decode("utf-8", "replace"))
        inflight = self.metrics.inflight.labels(queue, name)
        inflight.inc()
        try:
            result = await self.invoker.invoke(request)
        finally:
            inflight.dec()
        code = str(result.status)
        self.metrics.invocations.labels(name, code).inc()
        self.metrics.duration.labels(name, code).observe(result.duration_s)
        fields = {"status": result.status, "duration": round(result.duration_s, 6), "bytes": len(result.body)}
        if result.error:
            log.warning("Invoked", error=result.error, **fields)
        else:
            log.info("Invoked", **fields)
        if self.settings.debug:
            log.debug("Response body", body=result.body.decode("utf-8", "replace"))
        return result

    async def _post_callback(
        self, request: QueueRequest, result: Result, *, retries: int, max_retries: int, log: FilteringBoundLogger
    ) -> None:
        url = request.callback_url()
        if url is None:
            return
        info = CallbackInfo(request.call_id, request.function, retries, max_retries, USER_AGENT)
        delivery = await post_callback(self.callback_client, url, result, info)
        self.metrics.callbacks.labels("ok" if delivery.ok else "failed").inc()
        shown = self._loggable(url)
        if delivery.status is None:
            log.warning("Callback failed", url=shown, error=delivery.error)
        else:
            log.info("Posted result", url=shown, status=delivery.status)

    def _loggable(self, url: str) -> str:
        """The URL without query, fragment or userinfo (where tokens hide) unless ``debug`` is set."""
        if self.settings.debug:
            return url
        parts = urlsplit(url)
        return (
            urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))
            if parts.port is None
            else urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port}", parts.path, "", ""))
        )

    def _function_name(self, request: QueueRequest) -> str:
        """``name.namespace``, the form the gateway's metrics and autoscaling rules use."""
        name = request.function.strip("/")
        return name if "." in name else f"{name}.{self.settings.function_namespace}"
