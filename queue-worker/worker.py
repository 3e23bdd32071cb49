"""One message's life: decode, invoke, decide whether to retry, post the callback.

A queued request ends in one of three ways: acked after its callback (or with none to post),
redelivered later for another attempt, or dead-lettered (undecodable, too old, or out of
attempts). A callback that fails is queued as a :class:`CallbackJob` and retried on its own.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from structlog.typing import FilteringBoundLogger

from runtime import Ack, Context, DeadLetter, Event, Outcome, Retry

from .backoff import exponential_delay, jitter
from .call_status import CallStatus
from .callback import CallbackClient, CallbackInfo, Delivery, final_state, post_callback
from .callback_guard import refusal
from .callback_job import CALLBACK, JOB_HEADER, CallbackJob
from .invoke import Invoker, Result
from .metrics import WorkerMetrics
from .policy import RetryLater, decide
from .queue_request import DecodeError, QueueRequest, decode
from .settings import WorkerSettings

#: Sent as ``User-Agent`` on invocations and callbacks.
VERSION = "0.1.0"
USER_AGENT = f"queue-worker/{VERSION}"
#: How much of the last response body a dead letter keeps.
BODY_EXCERPT_BYTES = 1024


@dataclass(frozen=True, slots=True)
class QueueWorker:
    """Handles each queued request and callback job; owns the two HTTP clients."""

    settings: WorkerSettings
    invoker: Invoker
    callbacks: CallbackClient
    metrics: WorkerMetrics
    rng: random.Random
    status: CallStatus

    async def handle(self, event: Event, context: Context) -> Outcome:
        """Route a message: a callback job, or a queued request."""
        if event.headers.get(JOB_HEADER) == CALLBACK:
            return await self._retry_callback(event, context)
        try:
            request = decode(event.data)
        except DecodeError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            context.log.error("Cannot decode message", reason=exc.reason, error=str(exc), bytes=len(event.data))
            return DeadLetter("undecodable", {"error": str(exc)})
        log = context.log.bind(callId=request.call_id, function=request.function)
        too_large = self._over_limits(request)
        if too_large is not None:
            log.error("Request over limits", problem=too_large)
            return DeadLetter("limits", {**_identity(request), "problem": too_large})
        if self.status.is_cancelled(request.call_id):
            return await self._cancelled(request, event, context, log)
        now = datetime.now(UTC)
        name = self._function_name(request)
        if event.attempt == 1:
            self.metrics.queue_wait.labels(context.settings.queue_name, name).observe(queued_for(request, event, now))
        age = (now - event.published_at).total_seconds()
        if self.settings.max_message_age_s and age > self.settings.max_message_age_s:
            log.warning("Too old to invoke", age=round(age, 3), maxAge=self.settings.max_message_age_s)
            await self.status.write(request.call_id, request.function, "dead-lettered", reason="expired")
            return DeadLetter("expired", {**_identity(request), "ageSeconds": round(age, 3)})
        return await self._attempt(request, name, event, context, log)

    async def _attempt(
        self, request: QueueRequest, name: str, event: Event, context: Context, log: FilteringBoundLogger
    ) -> Outcome:
        """One invocation of ``request`` (``name`` is its function as metrics label it)."""
        policy, problems = self.settings.retry.with_annotations(request.annotations)
        for problem in problems:
            log.warning("Invalid retry annotation", problem=problem)
        url = request.callback_url()
        why = refusal(self.settings.callback_allowlist, url) if url is not None else None
        if url is not None and why is not None:
            # Refused before invoking: the call would have nowhere allowed to report to.
            return await self._refuse(request, url, why, log)
        self.status.started(request.call_id, request.function, event.attempt)
        result = await self._invoke(request, name, context.settings.queue_name, log)
        decision = decide(
            policy,
            status=result.status,
            # Only an error's headers bear on the decision (X-OpenFaaS-Internal, Retry-After).
            headers=result.header_map() if result.status >= 400 else {},
            attempt=event.attempt,
            rng=self.rng,
            now=datetime.now(UTC),
        )
        if isinstance(decision, RetryLater):
            self.metrics.retries.labels(name, str(result.status)).inc()
            next_at = time.time() + decision.delay_s
            await self.status.write(
                request.call_id,
                request.function,
                "waiting",
                attempt=event.attempt,
                lastStatus=result.status,
                nextAttemptAt=next_at,
            )
            return Retry(decision.delay_s, reason=f"status {result.status}")
        if url is not None:
            info = CallbackInfo(request.call_id, request.function, event.attempt - 1, policy.max_retries, USER_AGENT)
            if not await self._callback(url, result, info, event, context, log):
                return await self._refuse(request, url, "resolves to a forbidden address", log)
        outcome = {"attempt": event.attempt, "status": result.status, "durationSeconds": round(result.duration_s, 6)}
        if decision.exhausted:
            log.warning("Retries exhausted", status=result.status, attempts=event.attempt)
            await self.status.write(request.call_id, request.function, "dead-lettered", reason="exhausted", **outcome)
            return DeadLetter("exhausted", {**_identity(request), **_last_result(result)})
        await self.status.write(request.call_id, request.function, final_state(result.status), **outcome)
        return Ack(reason=f"status {result.status}")

    async def _cancelled(
        self, request: QueueRequest, event: Event, context: Context, log: FilteringBoundLogger
    ) -> Outcome:
        """Not invoked: the call was cancelled. The callback says so, with status 0."""
        log.info("Cancelled, not invoked")
        info = CallbackInfo(request.call_id, request.function, event.attempt - 1, 0, USER_AGENT, state="cancelled")
        url = request.callback_url()
        if url is not None:
            await self._callback(url, Result(0, (), b"", 0.0), info, event, context, log)
        return Ack(reason="cancelled")

    async def _refuse(self, request: QueueRequest, url: str, why: str, log: FilteringBoundLogger) -> Outcome:
        """A callback destination that is not allowed: nothing is sent there; the request is kept."""
        log.warning("Callback refused", url=self._loggable(url), reason=why)
        self.metrics.callbacks.labels("refused").inc()
        await self.status.write(request.call_id, request.function, "dead-lettered", reason="callback_refused")
        return DeadLetter("callback_refused", {**_identity(request), "reason": why})

    def _over_limits(self, request: QueueRequest) -> str | None:
        """What makes a request too large to take on, checked before any work, or ``None``."""
        count = sum(len(values) for values in request.header.values())
        if count > self.settings.max_request_headers:
            return f"{count} header values, more than max_request_headers={self.settings.max_request_headers}"
        size = sum(len(name) + len(value) for name, values in request.header.items() for value in values)
        if size > self.settings.max_header_bytes:
            return f"{size} bytes of headers, more than max_header_bytes={self.settings.max_header_bytes}"
        limit = self.settings.max_request_size
        if limit and len(request.body) > limit:
            return f"a {len(request.body)}-byte body, more than max_request_size={limit}"
        return None

    async def _invoke(self, request: QueueRequest, name: str, queue: str, log: FilteringBoundLogger) -> Result:
        if self.settings.debug:
            # At info this would be a second line per call; "Invoked" below carries the same fields.
            log.debug("Invoke", bytes=len(request.body), url=self.invoker.url(request))
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

    async def _callback(
        self,
        url: str,
        result: Result,
        info: CallbackInfo,
        event: Event,
        context: Context,
        log: FilteringBoundLogger,
    ) -> bool:
        """Post the result; when that fails, queue it as a job that is retried on its own.

        Returns False only when the destination was refused (then nothing is retried).
        """
        delivery = await self._post(url, result, info, log)
        if delivery.ok or delivery.refused:
            return not delivery.refused
        job = CallbackJob(url, result, info)
        # One job per stored request, even if the request itself is redelivered after a crash.
        job_id = f"callback-{context.settings.stream}-{event.stream_seq}"
        await context.publish(context.settings.queue_name, job.encode(), {JOB_HEADER: CALLBACK, "Nats-Msg-Id": job_id})
        log.info("Callback queued for retry", retryIn=self.settings.callback_retry.min_wait_s)
        return True

    async def _retry_callback(self, event: Event, context: Context) -> Outcome:
        """Deliver a callback job: its first delivery only arms the back-off (the first post
        was made inline), later ones post again until attempts run out."""
        try:
            job = CallbackJob.decode(event.data)
        except DecodeError as exc:
            context.log.error("Cannot decode callback job", error=str(exc))
            return DeadLetter("undecodable", {"error": str(exc)})
        policy = self.settings.callback_retry
        log = context.log.bind(callId=job.info.call_id, function=job.info.function)
        if event.attempt > 1:
            delivery = await self._post(job.url, job.result, job.info, log)
            if delivery.ok:
                return Ack(reason="callback delivered")
            if delivery.refused:
                return DeadLetter("callback_refused", {"callId": job.info.call_id, "function": job.info.function})
        if event.attempt >= policy.attempts:
            log.error("Callback failed for good", attempts=event.attempt)
            return DeadLetter("callback", {"callId": job.info.call_id, "function": job.info.function})
        delay = exponential_delay(event.attempt, initial_s=policy.min_wait_s, max_s=policy.max_wait_s)
        return Retry(jitter(delay, policy.backoff, self.rng), reason="callback retry")

    async def _post(self, url: str, result: Result, info: CallbackInfo, log: FilteringBoundLogger) -> Delivery:
        """Post once; ``ok`` when the receiver took it (any status below 500)."""
        delivery = await post_callback(self.callbacks, url, result, info)
        self.metrics.callbacks.labels("ok" if delivery.ok else "refused" if delivery.refused else "failed").inc()
        shown = self._loggable(url)
        if delivery.refused:
            log.warning("Callback refused", url=shown, reason=delivery.error)
        elif delivery.status is None:
            log.warning("Callback failed", url=shown, error=delivery.error)
        elif not delivery.ok:
            log.warning("Callback failed", url=shown, status=delivery.status)
        else:
            log.info("Posted result", url=shown, status=delivery.status)
        return delivery

    def _loggable(self, url: str) -> str:
        """The URL without query, fragment or userinfo (where tokens hide) unless ``debug`` is set."""
        if self.settings.debug:
            return url
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))

    def _function_name(self, request: QueueRequest) -> str:
        """``name.namespace``, the form the gateway's metrics and autoscaling rules use."""
        name = request.function.strip("/")
        return name if "." in name else f"{name}.{self.settings.function_namespace}"


def queued_for(request: QueueRequest, event: Event, now: datetime) -> float:
    """Seconds since the gateway took the request (``X-Start-Time``, in ns), else since it was stored."""
    start = request.header_value("X-Start-Time")
    if start.isdigit():
        return max(0.0, now.timestamp() - int(start) / 1e9)
    return max(0.0, (now - event.published_at).total_seconds())


def _identity(request: QueueRequest) -> dict[str, Any]:
    return {"callId": request.call_id, "function": request.function}


def _last_result(result: Result) -> dict[str, Any]:
    excerpt = result.body[:BODY_EXCERPT_BYTES].decode("utf-8", "replace")
    return {"lastStatus": result.status, "lastBody": excerpt, "lastError": result.error}
