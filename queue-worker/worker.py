"""One message's life: decode, invoke, decide whether to retry, post the callback.

A queued request ends in one of three ways: acked after its callback (or with none to post),
redelivered later for another attempt, or dead-lettered (undecodable, not allowed, too large,
too old, or out of attempts). Every route returns a :class:`Decided`: the outcome and the facts
that the call's status is derived from, written once, in :meth:`QueueWorker.handle`. A callback
that fails is queued as a :class:`CallbackJob` and retried on its own.
"""

from __future__ import annotations

import random
from collections.abc import Container
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import nats.js.errors
from nats.js.errors import NotFoundError
from opentelemetry.trace import Span
from structlog.typing import FilteringBoundLogger

from runtime import Ack, Context, DeadLetter, Event, Outcome, Retry
from runtime.numbers import ascii_int_or_none

from . import tracing
from .callbacks.guard import Destination, Undeliverable, check
from .callbacks.job import CALLBACK, JOB_HEADER, CallbackJob
from .callbacks.post import CallbackInfo, Posted, post_callback
from .callbacks.results import ResultStore
from .invoke import Invocation, Invoker
from .metrics import FunctionLabels, WorkerMetrics
from .retry import OVERLOAD_STATUSES, Final, RetryLater, decide, overloaded
from .settings import WorkerSettings
from .status.state import CallState, Facts, Record, record_for
from .status.store import StatusWriter
from .transport import Response, Transport
from .wire.queue_request import INVALID_REQUEST, DecodeError, QueueRequest, decode

#: Why a message becomes a dead letter (its ``reason`` header and metric label), and what to do.
DEAD_LETTER_REASONS = {
    "undecodable": "not a QueueRequest (bad JSON or base64); fix the publisher",
    "invalid_request": "a function name or path that would leave /function/<name>; fix the caller",
    "limits": "more headers than max_request_headers or max_header_bytes allow",
    "expired": "queued longer than max_message_age before it could run",
    "exhausted": "failed max_retry_attempts times; fix the function, then replay",
    "callback_refused": "a callback URL that callback_allowlist or the address rules refuse",
    "callback": "the callback receiver failed callback_retry_attempts times; replay posts it again",
    "handler_error": "the worker itself failed handler_error_attempts times on it (a bug: report it)",
}
#: How much of the last response body a dead letter keeps.
BODY_EXCERPT_BYTES = 1024
#: Room a callback job needs besides its JSON (headers, framing) within NATS's max payload.
JOB_ROOM = 1024
#: ``X-Start-Time`` is in nanoseconds: 19 digits until the year 2286.
START_TIME_DIGITS = 19


class Decided(NamedTuple):
    """What to do with the message, and what the call's status is derived from (``None``
    where no call is known: an undecodable message)."""

    outcome: Outcome
    facts: Facts | None


@dataclass(frozen=True, slots=True)
class QueueWorker:
    """Handles each queued request and callback job; owns its transports and status store."""

    settings: WorkerSettings
    invoker: Invoker
    callbacks: Transport
    metrics: WorkerMetrics
    rng: random.Random
    status: StatusWriter
    #: Call ids cancelled (followed live from a key-value bucket by the handler).
    cancellations: Container[str]
    results: ResultStore
    #: The ``function_name`` of each call's metrics, within the cap on per-function series.
    labels: FunctionLabels

    async def handle(self, event: Event, context: Context) -> Outcome:
        """Route a message: a callback job, or a queued request."""
        if event.headers.get(JOB_HEADER) == CALLBACK:
            return await self._retry_callback(event, context)
        decided = await self._request(event, context)
        if decided.facts is not None and self.status.enabled:
            await self.status.write(record_for(decided.outcome, decided.facts))
        return decided.outcome

    async def close(self) -> None:
        """Finish status writes under way and close every connection."""
        await self.status.close()
        self.invoker.transport.close()
        self.callbacks.close()

    async def _request(self, event: Event, context: Context) -> Decided:
        try:
            request = decode(event.data)
        except DecodeError as exc:
            self.metrics.rejected.labels(self.metrics.queue, exc.reason).inc()
            context.log.error("Cannot decode message", reason=exc.reason, error=str(exc), bytes=len(event.data))
            reason = "invalid_request" if exc.reason == INVALID_REQUEST else "undecodable"
            return Decided(DeadLetter(reason, {"error": str(exc)}), None)
        log = context.log.bind(callId=request.call_id, function=request.function)
        facts = Facts(request.call_id, request.function, event.attempt, seq=event.stream_seq)
        too_large = self.settings.limits.problem(request.header, len(request.body))
        if too_large is not None:
            log.error("Request over limits", problem=too_large)
            return Decided(DeadLetter("limits", {**_identity(request), "problem": too_large}), facts)
        if request.call_id in self.cancellations:
            return await self._cancelled(request, facts, context, log)
        now = datetime.now(UTC)
        age = (now - event.published_at).total_seconds()
        with self._attempt_span(request, event, now) as span:
            if span is not None:
                log = log.bind(**tracing.ids(span))
            if self.settings.max_message_age_s and age > self.settings.max_message_age_s:
                log.warning("Too old to invoke", age=round(age, 3), maxAge=self.settings.max_message_age_s)
                decided = Decided(DeadLetter("expired", {**_identity(request), "ageSeconds": round(age, 3)}), facts)
            else:
                decided = await self._attempt(request, facts, event, context, log, span)
            if span is not None:
                span.set_attribute("queue_worker.outcome", type(decided.outcome).__name__.lower())
        if event.attempt == 1:
            # Observed after the attempt, under the label the gateway's answer earned the function.
            wait = queued_for(request, event, now)
            self.metrics.queue_wait.labels(self.metrics.queue, self.labels(request.function)).observe(wait)
        return decided

    def _attempt_span(self, request: QueueRequest, event: Event, now: datetime) -> AbstractContextManager[Span | None]:
        """The span of this attempt (and, on the first, of the time queued), under the stored
        trace context; ``None`` while tracing is off or when the sampler drops the attempt, whose
        ``traceparent`` then passes through as when off."""
        if not tracing.enabled():
            return tracing.NO_SPAN
        name = f"process {event.subject}"
        traceparent = request.header_value("traceparent")
        # A trace state means nothing without a parent: not looked up for most calls, which have none.
        tracestate = request.header_value("tracestate") if traceparent else ""
        kept = tracing.sampled(name, traceparent, tracestate, request.call_id)
        if kept is None:
            return tracing.NO_SPAN
        queued = None
        if event.attempt == 1:
            end_ns = int(now.timestamp() * 1e9)
            queued = (end_ns - int(queued_for(request, event, now) * 1e9), end_ns)
        attributes = {
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": event.subject,
            "messaging.message.id": request.call_id,
            "faas.invoked_name": request.function,
            "queue_worker.attempt": event.attempt,
        }
        # Its own ``with``, not made current: the spans under it are given it as their parent.
        return tracing.start_attempt(name, kept, request.call_id, event.attempt, attributes, queued)

    async def _attempt(
        self,
        request: QueueRequest,
        facts: Facts,
        event: Event,
        context: Context,
        log: FilteringBoundLogger,
        span: Span | None,
    ) -> Decided:
        """One invocation of ``request``, and what follows from its answer; ``span`` is the
        attempt's when it is traced (the invocation and the callback get spans under it)."""
        policy, problems = self.settings.retry.with_annotations(request.annotations)
        for problem in problems:
            log.warning("Invalid retry annotation", problem=problem)
        if event.attempt > policy.attempts:
            # Decided on an earlier delivery whose dead letter could not be stored: never invoked
            # (or called back) again.
            log.warning("Attempts used up on an earlier delivery", attempts=policy.attempts, delivery=event.attempt)
            return Decided(DeadLetter("exhausted", {**_identity(request), "deliveries": event.attempt}), facts)
        destination = None
        url = request.callback_url()
        if url is not None:
            try:
                destination = check(self.settings.callback_allowlist, url)
            except Undeliverable as exc:
                # Refused before invoking: the call would have nowhere allowed to report to.
                return self._refuse(request, facts, url, str(exc), log)
        self.status.started(request.call_id, request.function, event.attempt)
        invocation = await self._invoke(request, log, span)
        status = invocation.response.status
        facts = Facts(
            request.call_id, request.function, event.attempt, status, invocation.duration_s, seq=event.stream_seq
        )
        decision = decide(
            policy,
            status=status,
            # Only an error's headers bear on the decision (X-OpenFaaS-Internal, Retry-After).
            headers=invocation.response.header_map() if status >= 400 else {},
            attempt=event.attempt,
            rng=self.rng,
            now=datetime.now(UTC),
        )
        # Function mode lowers the function's concurrency limit on this (see runtime/limiter.py).
        overload = overloaded(status, invocation.response.header_map() if status in OVERLOAD_STATUSES else {})
        if isinstance(decision, RetryLater):
            if request.call_id not in self.cancellations:
                name = self.labels(request.function)
                self.metrics.retries.labels(self.metrics.queue, name, str(status)).inc()
                return Decided(Retry(decision.delay_s, reason=f"status {status}", overloaded=overload), facts)
            # Cancelled while this attempt ran: it stands as the last one, and nothing follows.
            log.info("Cancelled, not retried", status=status)
            facts = facts._replace(cancelled=True)
        info = CallbackInfo(
            request.call_id,
            request.function,
            event.attempt - 1,
            policy.max_retries,
            state=CallState.CANCELLED if facts.cancelled else None,
        )
        if destination is not None and not await self._callback(
            destination, invocation, info, event.stream_seq, context, log, span
        ):
            return self._refuse(request, facts, url or "", "resolves to a forbidden address", log)
        if isinstance(decision, Final) and decision.exhausted:
            log.warning("Retries exhausted", status=status, attempts=event.attempt)
            detail = {**_identity(request), **_last_result(invocation)}
            return Decided(DeadLetter("exhausted", detail, overloaded=overload), facts)
        return Decided(Ack(reason="cancelled" if facts.cancelled else f"status {status}", overloaded=overload), facts)

    async def _cancelled(
        self, request: QueueRequest, facts: Facts, context: Context, log: FilteringBoundLogger
    ) -> Decided:
        """Not invoked (``facts.attempt`` would have been the next attempt): the call was
        cancelled. The callback says so, with status 0 and the retries made before."""
        log.info("Cancelled, not invoked")
        url = request.callback_url()
        if url is not None:
            policy, _ = self.settings.retry.with_annotations(request.annotations)
            retries = max(0, facts.attempt - 2)  # attempts made, minus the first
            info = CallbackInfo(request.call_id, request.function, retries, policy.max_retries, CallState.CANCELLED)
            try:
                destination = check(self.settings.callback_allowlist, url)
            except Undeliverable as exc:
                log.warning("Callback refused", url=self._loggable(url), reason=str(exc))
            else:
                await self._callback(destination, Invocation(Response(0), 0.0), info, facts.seq, context, log)
        return Decided(Ack(reason="cancelled"), facts._replace(cancelled=True))

    async def withdraw(self, call_id: str, seq: int, attempts: int, context: Context) -> Record | None:
        """Cancel now a call whose message waits in the stream for its next attempt: take the
        message out (so no worker gets it), post its callback and record ``cancelled``.

        Returns:
            The record written; ``None`` when the message is not there any more (a worker has
            taken it, or another replica withdrew it), and the worker that has it will see the
            cancel instead.
        """
        js = context.nats().jetstream()
        stream = context.settings.stream
        try:
            stored = await js.get_msg(stream, seq)
            request = decode(stored.data or b"")
        except (NotFoundError, DecodeError):
            return None
        if request.call_id != call_id:
            return None
        try:
            # Exactly one of any racing replicas gets to delete it.
            await js.delete_msg(stream, seq)
        except nats.js.errors.Error:
            return None
        log = context.log.bind(callId=call_id, function=request.function, streamSeq=seq)
        facts = Facts(call_id, request.function, attempts + 1, seq=seq)
        decided = await self._cancelled(request, facts, context, log)
        assert decided.facts is not None
        record = record_for(decided.outcome, decided.facts)
        await self.status.write(record)
        return record

    def _refuse(self, request: QueueRequest, facts: Facts, url: str, why: str, log: FilteringBoundLogger) -> Decided:
        """A callback destination that is not allowed: nothing is sent there; the request is kept."""
        log.warning("Callback refused", url=self._loggable(url), reason=why)
        self.metrics.callbacks.labels(self.metrics.queue, "refused").inc()
        return Decided(DeadLetter("callback_refused", {**_identity(request), "reason": why}), facts)

    async def _invoke(self, request: QueueRequest, log: FilteringBoundLogger, attempt_span: Span | None) -> Invocation:
        if self.settings.debug:
            # At info this would be a second line per call; "Invoked" below carries the same fields.
            log.debug("Invoke", bytes=len(request.body), target=request.invoke_path())
            log.debug("Request body", body=request.body.decode("utf-8", "replace"))
        queue = self.metrics.queue
        inflight = self.metrics.inflight.labels(queue, self.labels(request.function))
        inflight.inc()
        try:
            url = None
            invocation_span: AbstractContextManager[Span | None] = tracing.NO_SPAN
            if attempt_span is not None:  # the URL is made here only for a traced attempt: most are not
                url, shown = self.invoker.shown_url(request)
                invocation_span = tracing.client_span(request.method, shown, request.method, attempt_span)
            with invocation_span as span:
                invocation = await self.invoker.invoke(request, span, url)
                tracing.record_status(span, invocation.response.status, invocation.error)
        finally:
            inflight.dec()
        response = invocation.response
        code = str(response.status)
        # A function the gateway does not know never takes a series of its own.
        name = self.labels(request.function) if response.status == 404 else self.labels.admit(request.function)
        self.metrics.invocations.labels(queue, name, code).inc()
        self.metrics.duration.labels(queue, name, code).observe(invocation.duration_s)
        body = response.body
        fields = {"status": response.status, "duration": round(invocation.duration_s, 6), "bytes": len(body)}
        if invocation.error:
            log.warning("Invoked", error=invocation.error, **fields)
        else:
            log.info("Invoked", **fields)
        if self.settings.debug:
            log.debug("Response body", body=body.decode("utf-8", "replace"))
        return invocation

    async def _callback(
        self,
        destination: Destination,
        invocation: Invocation,
        info: CallbackInfo,
        seq: int,
        context: Context,
        log: FilteringBoundLogger,
        attempt_span: Span | None = None,
    ) -> bool:
        """Post the result; when that fails, queue it as a job that is retried on its own (in
        the trace of ``attempt_span``, the attempt's span when it is traced).

        Returns False only when the destination was refused (then nothing is retried).
        """
        posted = await self._post(destination, invocation, info, log, attempt_span)
        if posted.ok or posted.refused:
            return not posted.refused
        job = CallbackJob(destination.url, invocation, info, traceparent=tracing.traceparent_of(attempt_span))
        # One job per stored request, even if the request itself is redelivered after a crash.
        job_id = f"callback-{context.settings.stream}-{seq}"
        data = job.encode()
        client = context.nats()
        if len(data) > client.max_payload - JOB_ROOM:
            # Too large to travel in the job: the body waits in the object store.
            await self.results.put(client, job_id, invocation.response.body)
            data = replace(job, body_ref=job_id).encode()
        await context.publish(context.settings.queue_name, data, {JOB_HEADER: CALLBACK, "Nats-Msg-Id": job_id})
        log.info("Callback queued for retry", retryIn=self.settings.callback_retry.min_wait_s)
        return True

    async def _retry_callback(self, event: Event, context: Context) -> Outcome:
        """Deliver a callback job: its first delivery only arms the back-off (the first post
        was made inline), later ones post again until attempts run out."""
        try:
            job = CallbackJob.decode(event.data)
            destination = Destination.parse(job.url)
        except (DecodeError, Undeliverable) as exc:
            context.log.error("Cannot decode callback job", error=str(exc))
            return DeadLetter("undecodable", {"error": str(exc)})
        policy = self.settings.callback_retry
        identity = {"callId": job.info.call_id, "function": job.info.function}
        log = context.log.bind(**identity)
        if event.attempt > 1:
            invocation = job.invocation
            if job.body_ref:
                body = await self.results.get(context.nats(), job.body_ref)
                invocation = invocation._replace(response=replace(invocation.response, body=body))
            with tracing.job_span(f"process {event.subject}", job.traceparent, event.attempt) as span:
                posted = await self._post(destination, invocation, job.info, log, span)
            if posted.ok or posted.refused:
                if job.body_ref:
                    await self.results.delete(context.nats(), job.body_ref)
                if posted.ok:
                    return Ack(reason="callback delivered")
                return DeadLetter("callback_refused", identity)
        if event.attempt >= policy.attempts:
            log.error("Callback failed for good", attempts=event.attempt)
            return DeadLetter("callback", identity)
        return Retry(policy.delay(event.attempt, self.rng), reason="callback retry")

    async def _post(
        self,
        destination: Destination,
        invocation: Invocation,
        info: CallbackInfo,
        log: FilteringBoundLogger,
        parent: Span | None,
    ) -> Posted:
        """Post once (in a client span under ``parent``, when traced); ``ok`` when the receiver
        took it (any status below 500)."""
        with tracing.client_span("POST", destination.loggable, "POST", parent) as span:
            posted = await post_callback(self.callbacks, destination, invocation, info, span)
            tracing.record_status(span, posted.status or 0, posted.error)
        result = "ok" if posted.ok else "refused" if posted.refused else "failed"
        self.metrics.callbacks.labels(self.metrics.queue, result).inc()
        shown = destination.url if self.settings.debug else destination.loggable
        if posted.refused:
            log.warning("Callback refused", url=shown, reason=posted.error)
        elif posted.status is None:
            log.warning("Callback failed", url=shown, error=posted.error)
        elif not posted.ok:
            log.warning("Callback failed", url=shown, status=posted.status)
        else:
            log.info("Posted result", url=shown, status=posted.status)
        return posted

    def _loggable(self, url: str) -> str:
        """The URL without query, fragment or userinfo (where tokens hide) unless ``debug`` is set."""
        if self.settings.debug:
            return url
        try:
            return Destination.parse(url).loggable
        except Undeliverable:
            return "(not a URL that can be shown safely)"


def queued_for(request: QueueRequest, event: Event, now: datetime) -> float:
    """Seconds since the gateway took the request (``X-Start-Time``, in ns), else since it was stored."""
    start = ascii_int_or_none(request.header_value("X-Start-Time"), max_digits=START_TIME_DIGITS)
    if start is not None:
        return max(0.0, now.timestamp() - start / 1e9)
    return max(0.0, (now - event.published_at).total_seconds())


def _identity(request: QueueRequest) -> dict[str, Any]:
    return {"callId": request.call_id, "function": request.function}


def _last_result(invocation: Invocation) -> dict[str, Any]:
    excerpt = invocation.response.body[:BODY_EXCERPT_BYTES].decode("utf-8", "replace")
    return {"lastStatus": invocation.status, "lastBody": excerpt, "lastError": invocation.error}
