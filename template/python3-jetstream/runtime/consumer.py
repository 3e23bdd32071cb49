"""The pull loop: fetch only as many messages as there are free slots, run the handler for
each, keep the ack deadline alive while it runs, and settle by its outcome.

Every task this module starts is owned by :class:`Consumer` and is awaited or cancelled
before :meth:`Consumer.run` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from . import ack_subject
from .contract import Ack, Context, DeadLetter, Event, Function, Outcome, Retry, Terminate
from .dead_letters import DeadLetters
from .metrics import RuntimeMetrics
from .settings import Settings
from .settle import Action, apply, plan

#: What a handler may return besides None (a tuple built once: a union is built at each use).
OUTCOMES = (Ack, Retry, Terminate, DeadLetter)
#: Redelivery delay after a handler raised, doubled per delivery up to the cap.
ERROR_RETRY_INITIAL_S = 1.0
ERROR_RETRY_MAX_S = 60.0
#: How many in-progress acks fit into one ack deadline; more than one absorbs a late tick.
HEARTBEATS_PER_ACK_WAIT = 3
#: Pause after a failed fetch (connection lost, consumer missing) before pulling again.
FETCH_ERROR_PAUSE_S = 1.0


@dataclass(slots=True)
class InFlight:
    """A message whose handler is running."""

    msg: Msg
    started: float = field(default_factory=time.monotonic)
    settling: bool = False


def error_delay(attempt: int) -> float:
    """Delay before redelivering a message whose handler raised on delivery ``attempt``."""
    return min(ERROR_RETRY_MAX_S, ERROR_RETRY_INITIAL_S * 2.0 ** min(attempt - 1, 32))


class Consumer:
    """Consume one durable pull subscription until ``stopping`` is set, then drain."""

    def __init__(
        self,
        *,
        settings: Settings,
        function: Function,
        context: Context,
        subscription: JetStreamContext.PullSubscription,
        metrics: RuntimeMetrics,
        dead_letters: DeadLetters,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._function = function
        self._context = context
        self._log = context.log
        self._subscription = subscription
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._stopping = stopping
        self._inflight: dict[asyncio.Task[None], InFlight] = {}
        # Read when scraped rather than counted per message.
        metrics.inflight.set_function(lambda: len(self._inflight))
        #: Set when a slot frees up or stopping begins: what a full consumer waits for.
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Consume until stopped; then let running calls finish within ``shutdown_timeout``."""
        stop_waiter = asyncio.create_task(self._stopping.wait())
        stop_waiter.add_done_callback(lambda _: self._wake.set())
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._consume()
        finally:
            await self._drain()
            for task in (heartbeat, stop_waiter):
                task.cancel()
            await asyncio.gather(heartbeat, stop_waiter, return_exceptions=True)
            with contextlib.suppress(nats.errors.Error):  # The connection is going away anyway.
                await self._subscription.unsubscribe()

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            free = self._settings.max_inflight - len(self._inflight)
            if free <= 0:
                # One event, not asyncio.wait over every task: that costs O(max_inflight) per wake-up.
                self._wake.clear()
                await self._wake.wait()
                # Let the other calls finishing in this same turn free their slots too, so the
                # next pull asks for several messages rather than one.
                await asyncio.sleep(0)
                continue
            messages = await self._fetch(free)
            if self._stopping.is_set():
                await self._return_unstarted(messages)
                return
            for msg in messages:
                self._start(msg)

    async def _fetch(self, batch: int) -> list[Msg]:
        try:
            return await self._subscription.fetch(batch=batch, timeout=self._settings.fetch_wait_s)
        except (TimeoutError, nats.errors.TimeoutError):
            # An idle pull ends in a timeout; nats-py raises either class.
            return []
        except nats.errors.Error as exc:
            self._log.warning("Fetch failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FETCH_ERROR_PAUSE_S)
            return []

    def _start(self, msg: Msg) -> None:
        flight = InFlight(msg)
        task = asyncio.create_task(self._process(flight))
        self._inflight[task] = flight
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._inflight[task]
        self._wake.set()

    async def _process(self, flight: InFlight) -> None:
        msg = flight.msg
        try:
            delivery = ack_subject.parse(msg.reply)
        except ack_subject.NotJetStream as exc:
            # Nothing to acknowledge it with; a pull subscription never delivers one.
            self._log.error("Not a JetStream message", subject=msg.subject, error=str(exc))
            return
        event = Event(
            data=msg.data,
            headers=msg.headers or {},
            subject=msg.subject,
            stream_seq=delivery.stream_seq,
            attempt=delivery.attempt,
            published_at=datetime.fromtimestamp(delivery.timestamp_ns / 1e9, UTC),
        )
        context = self._context.bind(delivery=event.attempt, streamSeq=event.stream_seq)
        try:
            outcome = await self._call(event, context)
        except asyncio.CancelledError:
            # Shutdown cut the call short: hand the message back for another worker at once.
            await self._settle(flight, Action("nak", reason="shutdown"), context)
            raise
        await self._settle(flight, plan(outcome), context)
        self._metrics.handler_duration.observe(time.monotonic() - flight.started)

    async def _call(self, event: Event, context: Context) -> Outcome | None:
        try:
            # Typed loosely on purpose: a handler may return anything, and that is checked below.
            result: object = await self._function.handle(event, context)
        except Exception:
            context.log.exception("Handler failed")
            self._metrics.handler_errors.inc()
            return Retry(error_delay(event.attempt), reason="handler exception")
        if result is not None and not isinstance(result, OUTCOMES):
            context.log.error("Handler returned something that is not an outcome", type=type(result).__name__)
            self._metrics.handler_errors.inc()
            return Retry(error_delay(event.attempt), reason="handler result")
        return result

    async def _settle(self, flight: InFlight, action: Action, context: Context) -> None:
        # From here on the drain leaves this task alone: cancelling it now could lose the
        # acknowledgement half-sent (cheaper than asyncio.shield, which costs a task a message).
        flight.settling = True
        try:
            await apply(flight.msg, action, self._dead_letters)
        except (TimeoutError, nats.errors.Error) as exc:
            error = str(exc) or type(exc).__name__
            if action.verb == "dead-letter":
                # Not stored, so not removed: try again later rather than lose it.
                context.log.error("Dead letter not stored", reason=action.reason, error=error)
                await self._settle(flight, Action("nak", ERROR_RETRY_MAX_S, "dead letter not stored"), context)
            else:
                # The server redelivers after ack_wait, so nothing is lost, only delayed.
                context.log.warning("Settle failed", action=action.verb, error=error)
            return
        self._observe(action, context)

    def _observe(self, action: Action, context: Context) -> None:
        self._metrics.settled[action.verb].inc()
        if action.verb != "nak":
            self._metrics.processed.inc()
        if action.verb == "nak" and action.reason != "shutdown":
            context.log.info("Redeliver later", reason=action.reason, delay=round(action.delay_s, 3))
        elif action.verb == "term":
            context.log.warning("Terminated", reason=action.reason)
        elif action.verb == "dead-letter":
            self._metrics.dead_letters.labels(self._settings.queue_name, action.reason).inc()
            context.log.warning("Dead-lettered", reason=action.reason, subject=self._dead_letters.subject)

    async def _heartbeat(self) -> None:
        interval = self._settings.ack_wait_s / HEARTBEATS_PER_ACK_WAIT
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for flight in list(self._inflight.values()):
                if flight.settling or now - flight.started < interval:
                    continue
                # A lost connection also loses the lease; redelivery covers it.
                with contextlib.suppress(nats.errors.Error):
                    await flight.msg.in_progress()

    async def _return_unstarted(self, messages: list[Msg]) -> None:
        for msg in messages:
            with contextlib.suppress(nats.errors.Error):  # ack_wait brings it back all the same.
                await msg.nak()
        if messages:
            self._log.info("Returned unstarted messages", count=len(messages))

    async def _drain(self) -> None:
        if not self._inflight:
            return
        timeout = self._settings.shutdown_timeout_s
        self._log.info("Waiting for in-flight calls", count=len(self._inflight), timeout=timeout)
        done, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        for task in pending:
            if not self._inflight[task].settling:
                task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._log.info("In-flight calls drained", finished=len(done), returned=len(pending))
