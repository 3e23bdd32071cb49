"""The pull loop: keep pull requests open for the free slots, run the handler for each message
as it arrives, keep the ack deadline alive while it runs, and settle by its outcome.

Every task this module starts is owned by :class:`Consumer` and is awaited or cancelled
before :meth:`Consumer.run` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import ack_subject
from .backoff import Backoff
from .contract import Ack, Context, DeadLetter, Event, Function, Outcome, Retry, Terminate
from .dead_letters import DeadLetters
from .metrics import RuntimeMetrics
from .numbers import ascii_int_or_none
from .pulls import GRACE_S, Pulls
from .settings import Settings
from .settle import Action, apply, plan

#: What a handler may return besides None (a tuple built once: a union is built at each use).
OUTCOMES = (Ack, Retry, Terminate, DeadLetter)
#: Redelivery delay after a handler raised: 1 s doubled per delivery up to a minute.
ERROR_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
#: Redelivery delay when a dead letter could not be stored.
DEAD_LETTER_RETRY_S = ERROR_BACKOFF.max_s
#: How many in-progress acks fit into one ack deadline; more than one absorbs a late tick.
HEARTBEATS_PER_ACK_WAIT = 3
#: Pause after a refused pull (consumer missing, too many waiting) before pulling again.
PULL_ERROR_PAUSE_S = 1.0
#: 409s that end a pull request in the normal course (a 408, its expiry, always does).
ROUTINE_CONFLICTS = frozenset({"Leadership Change"})


@dataclass(slots=True)
class InFlight:
    """A message whose handler is running."""

    msg: Msg
    started: float = field(default_factory=time.monotonic)
    settling: bool = False


class Consumer:
    """Consume one durable pull subscription until ``stopping`` is set, then drain."""

    def __init__(
        self,
        *,
        settings: Settings,
        function: Function,
        context: Context,
        client: Client,
        metrics: RuntimeMetrics,
        dead_letters: DeadLetters,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._function = function
        self._context = context
        self._log = context.log
        self._client = client
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._stopping = stopping
        self._inflight: dict[asyncio.Task[None], InFlight] = {}
        # Read when scraped rather than counted per message.
        metrics.inflight.set_function(lambda: len(self._inflight))
        #: Set when there is something to ask for, or stopping begins: what the pull loop waits for.
        self._wake = asyncio.Event()
        self._pulls = Pulls.for_slots(settings.max_inflight, settings.fetch_wait_s)
        self._inbox = client.new_inbox()
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{settings.stream}.{settings.durable}"
        #: When the server last sent anything for our requests, or we last asked.
        self._heard = time.monotonic()
        self._paused_until = 0.0

    async def run(self) -> None:
        """Consume until stopped; then let running calls finish within ``shutdown_timeout``."""
        subscription = await self._client.subscribe(f"{self._inbox}.*", cb=self._on_message)
        stop_waiter = asyncio.create_task(self._stopping.wait())
        stop_waiter.add_done_callback(lambda _: self._wake.set())
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._pull()
        finally:
            await asyncio.gather(self._close_pulls(subscription), self._drain())
            for task in (heartbeat, stop_waiter):
                task.cancel()
            await asyncio.gather(heartbeat, stop_waiter, return_exceptions=True)

    async def _pull(self) -> None:
        """Ask for messages whenever enough slots are free; notice requests the server lost."""
        expires_s = self._settings.fetch_wait_s
        while not self._stopping.is_set():
            # Cleared before looking, so a slot freed while asking still wakes the next sleep.
            self._wake.clear()
            now = time.monotonic()
            if self._pulls.outstanding and now - self._heard > expires_s + GRACE_S:
                # Every open request ends within expires_s, by message or status: these are gone
                # (a restarted server, a lost connection).
                self._log.info("Pull requests lost, asking again", outstanding=self._pulls.outstanding)
                self._pulls.lost()
            batch = self._pulls.wanted(len(self._inflight)) if now >= self._paused_until else 0
            if batch:
                await self._ask(batch, now)
            await self._sleep_until_woken(self._paused_until - now if self._paused_until > now else expires_s)
            # Let the other calls finishing in this same turn free their slots too.
            await asyncio.sleep(0)

    async def _sleep_until_woken(self, timeout_s: float) -> None:
        """Until :attr:`_wake` is set or ``timeout_s`` passes. A timer that sets the event, not
        ``asyncio.wait_for``, which starts a task each time: this runs for every pull."""
        alarm = asyncio.get_running_loop().call_later(timeout_s, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            alarm.cancel()

    async def _ask(self, batch: int, now: float) -> None:
        request_id = self._pulls.asked(batch, now)
        self._heard = now
        request = json.dumps({"batch": batch, "expires": int(self._settings.fetch_wait_s * 1e9)}).encode()
        try:
            await self._client.publish(self._next_subject, request, reply=f"{self._inbox}.{request_id}")
        except nats.errors.Error as exc:
            self._pulls.ended(request_id, batch)
            self._log.warning("Pull failed", error=str(exc) or type(exc).__name__)
            self._paused_until = now + PULL_ERROR_PAUSE_S

    async def _on_message(self, msg: Msg) -> None:
        """Every message on the pull inbox: a delivery, or a status about one of our requests."""
        self._heard = time.monotonic()
        if not msg.reply:
            self._on_status(msg)
            return
        self._pulls.delivered()
        if self._stopping.is_set():
            # Asked for before stopping, arrived after: straight back for another worker.
            with contextlib.suppress(nats.errors.Error):  # ack_wait brings it back all the same.
                await msg.nak()
            self._wake.set()
            return
        self._start(msg)

    def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status, description = headers.get("Status", ""), headers.get("Description", "")
        if status == "100":
            return  # a heartbeat; none are asked for
        undelivered = headers.get("Nats-Pending-Messages", "")
        self._pulls.ended(msg.subject.rpartition(".")[2], ascii_int_or_none(undelivered))
        if status != "408" and not (status == "409" and description in ROUTINE_CONFLICTS):
            # 409 Exceeded MaxWaiting, Consumer Deleted; 503 no consumer answered: pause, not spin.
            self._log.warning("Pull refused", status=status, description=description.strip())
            self._paused_until = time.monotonic() + PULL_ERROR_PAUSE_S
        self._wake.set()

    async def _close_pulls(self, subscription: Subscription) -> None:
        """Stop asking; hand back what still arrives until every open request has ended (an
        unsubscribed inbox would leave those messages to wait out ack_wait); then unsubscribe."""
        deadline = time.monotonic() + self._settings.fetch_wait_s + GRACE_S
        while True:
            self._wake.clear()
            remaining = deadline - time.monotonic()
            if not self._pulls.outstanding or not self._client.is_connected or remaining <= 0:
                break
            await self._sleep_until_woken(remaining)
        with contextlib.suppress(nats.errors.Error):  # The connection is going away anyway.
            await subscription.unsubscribe()

    def _start(self, msg: Msg) -> None:
        flight = InFlight(msg)
        task = asyncio.create_task(self._process(flight))
        self._inflight[task] = flight
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._inflight[task]
        if self._pulls.wanted(len(self._inflight)):
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
        except Exception as exc:
            context.log.exception("Handler failed")
            return self._handler_error(event, f"{type(exc).__name__}: {exc}"[:1000], "handler exception")
        if result is not None and not isinstance(result, OUTCOMES):
            context.log.error("Handler returned something that is not an outcome", type=type(result).__name__)
            return self._handler_error(event, f"returned {type(result).__name__}", "handler result")
        return result

    def _handler_error(self, event: Event, error: str, reason: str) -> Outcome:
        """Redeliver after a back-off; a dead letter once ``handler_error_attempts`` deliveries
        have failed, so no message is redelivered forever."""
        self._metrics.handler_errors.inc()
        if event.attempt >= self._settings.handler_error_attempts:
            return DeadLetter("handler_error", {"error": error, "deliveries": event.attempt})
        return Retry(ERROR_BACKOFF.delay(event.attempt), reason=reason)

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
                await self._settle(flight, Action("nak", DEAD_LETTER_RETRY_S, "dead letter not stored"), context)
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
