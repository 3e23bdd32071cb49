"""The pull loop: keep pull requests open for the free slots, run the handler for each message
as it arrives, keep the ack deadline alive while it runs, and settle by its outcome.

Never more than ``max_inflight`` handlers run, whatever the server sends: a message beyond
that is held, its lease kept alive, until a slot frees (handing it back would cost it a
delivery, which the queue-worker counts as an attempt). Pull requests are not stacked on a link
that has not proven alive: when the server goes silent, nothing more is asked until a PING
round trip succeeds and every request it may still hold has expired, so a healed partition or a
thawed server does not answer a pile of stale requests at once. A consumer or stream deleted
under the worker is recreated.

Every task this module starts is owned by :class:`Consumer` and is awaited or cancelled
before :meth:`Consumer.run` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import ack_subject
from .backoff import Backoff
from .connection import ConnectionState
from .contract import Ack, Context, DeadLetter, Event, Function, Outcome, Retry, Terminate
from .dead_letters import DeadLetters
from .errors import describe
from .metrics import RuntimeMetrics
from .numbers import ascii_int_or_none
from .pulls import GRACE_S, Pulls
from .settings import Settings
from .settle import Action, apply, plan

#: What a handler may return besides None (a tuple built once: a union is built at each use).
OUTCOMES = (Ack, Retry, Terminate, DeadLetter)
#: Redelivery delay after a handler raised, or a dead letter could not be stored: 1 s doubled
#: per delivery up to a minute.
ERROR_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
#: How many in-progress acks fit into one ack deadline; more than one absorbs a late tick.
HEARTBEATS_PER_ACK_WAIT = 3
#: Pause after a refused pull (consumer missing, too many waiting) before pulling again.
PULL_ERROR_PAUSE_S = 1.0
#: The 409 that ends a request with ``max_bytes`` once all of its batch was delivered.
BATCH_COMPLETED = "Batch Completed"
#: 409s that end a pull request in the normal course (a 408, its expiry, always does).
ROUTINE_CONFLICTS = frozenset({"Leadership Change", "Message Size Exceeds MaxBytes", BATCH_COMPLETED})
#: 409s that say the server has too many requests waiting: pause, the consumer is there.
CROWDED_CONFLICTS = ("Exceeded MaxWaiting", "Exceeded MaxRequestBatch", "Exceeded MaxRequestExpires")
#: Longest a PING round trip may take to prove a silent link alive.
PROOF_TIMEOUT_S = 2


@dataclass(slots=True)
class InFlight:
    """A message whose handler is running."""

    msg: Msg
    started: float = field(default_factory=time.monotonic)
    settling: bool = False
    #: The server's delivery count, once read from the ack subject.
    attempt: int = 1


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
        state: ConnectionState | None = None,
        rebind: Callable[[], Awaitable[None]] | None = None,
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
        #: Delivered while every slot was busy: started as slots free, never more at once.
        self._held: deque[Msg] = deque()
        self._state = state or ConnectionState()
        self._rebind = rebind
        #: Since when the server has not answered our pull requests (``None``: it does).
        self._silent_since: float | None = None
        #: The consumer (or its stream) was reported missing and must be recreated.
        self._missing = False
        # Read when scraped rather than counted per message.
        metrics.inflight.set_function(lambda: len(self._inflight))
        #: Set when there is something to ask for, or stopping begins: what the pull loop waits for.
        self._wake = asyncio.Event()
        self._pulls = Pulls.for_slots(settings.max_inflight, settings.fetch_wait_s, client.max_payload)
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
            if self._missing:
                await self._recreate()
                continue
            if self._silent_since is None and self._pulls.outstanding and now - self._heard > expires_s + GRACE_S:
                # Every open request ends within expires_s, by message or status: the server is
                # not answering (a partition, a frozen or restarted server).
                self._silent_since = now
                self._state.consuming = False
                self._log.warning("Pull requests unanswered, proving the link", outstanding=self._pulls.outstanding)
            if self._silent_since is not None:
                await self._prove_link()
                continue
            ready = now >= self._paused_until and self._client.is_connected
            batch = self._pulls.wanted(self._busy()) if ready else 0
            if batch:
                await self._ask(batch, now)
            await self._sleep_until_woken(self._paused_until - now if self._paused_until > now else expires_s)
            # Let the other calls finishing in this same turn free their slots too.
            await asyncio.sleep(0)

    def _busy(self) -> int:
        return len(self._inflight) + len(self._held)

    async def _prove_link(self) -> None:
        """Ask nothing until a PING round trip succeeds; then let every request the server may
        still hold expire (they reached it before the PONG did) before counting them lost."""
        try:
            await self._client.flush(timeout=PROOF_TIMEOUT_S)
        except (TimeoutError, nats.errors.Error):
            await self._pause(PULL_ERROR_PAUSE_S)
            return
        await self._pause(self._settings.fetch_wait_s + GRACE_S)
        if self._stopping.is_set():
            return
        silent_for = time.monotonic() - (self._silent_since or 0.0)
        self._pulls.lost()
        self._silent_since = None
        self._state.consuming = True
        self._log.info("Pull requests answered again", silentFor=round(silent_for, 1))

    async def _recreate(self) -> None:
        """Recreate what is missing (consumer, stream, dead-letter stream), once a second at most."""
        self._state.consuming = False
        try:
            if self._rebind is not None:
                await self._rebind()
        except (TimeoutError, nats.errors.Error) as exc:
            self._log.warning("Cannot recreate the consumer yet", error=describe(exc))
            await self._pause(PULL_ERROR_PAUSE_S)
            return
        self._missing = False
        self._pulls.lost()
        self._state.consuming = True
        self._paused_until = 0.0

    async def _sleep_until_woken(self, timeout_s: float) -> None:
        """Until :attr:`_wake` is set or ``timeout_s`` passes. A timer that sets the event, not
        ``asyncio.wait_for``, which starts a task each time: this runs for every pull."""
        alarm = asyncio.get_running_loop().call_later(timeout_s, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            alarm.cancel()

    async def _pause(self, seconds: float) -> None:
        """Until ``seconds`` pass or stopping begins (off the hot path: a task is fine here)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _ask(self, batch: int, now: float) -> None:
        request_id = self._pulls.asked(batch, now)
        self._heard = now
        expires = int(self._settings.fetch_wait_s * 1e9)
        request = json.dumps({"batch": batch, "expires": expires, "max_bytes": self._pulls.max_bytes}).encode()
        try:
            await self._client.publish(self._next_subject, request, reply=f"{self._inbox}.{request_id}")
        except nats.errors.Error as exc:
            self._pulls.ended(request_id, batch)
            self._log.warning("Pull failed", error=describe(exc))
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
        if len(self._inflight) >= self._settings.max_inflight:
            if not self._held:
                self._log.warning("More delivered than max_inflight; holding the rest", maxInflight=len(self._inflight))
            self._held.append(msg)
            return
        self._start(msg)

    def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status, description = headers.get("Status", ""), headers.get("Description", "")
        if status == "100":
            return  # a heartbeat; none are asked for
        undelivered = ascii_int_or_none(headers.get("Nats-Pending-Messages", ""))
        if undelivered is None and description == BATCH_COMPLETED:
            undelivered = 0
        self._pulls.ended(msg.subject.rpartition(".")[2], undelivered)
        if status != "408" and not (status == "409" and description in ROUTINE_CONFLICTS):
            # 409 Exceeded MaxWaiting: pause, not spin. 409 Consumer Deleted, 404, 503 (no
            # consumer answered): the consumer or its stream is gone; recreate it.
            self._log.warning("Pull refused", status=status, description=description.strip())
            self._paused_until = time.monotonic() + PULL_ERROR_PAUSE_S
            if not description.startswith(CROWDED_CONFLICTS):
                self._missing = True
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
        if self._held and not self._stopping.is_set():
            self._start(self._held.popleft())
        elif self._pulls.wanted(self._busy()):
            self._wake.set()

    async def _process(self, flight: InFlight) -> None:
        msg = flight.msg
        try:
            delivery = ack_subject.parse(msg.reply)
        except ack_subject.NotJetStream as exc:
            # Nothing to acknowledge it with; a pull subscription never delivers one.
            self._log.error("Not a JetStream message", subject=msg.subject, error=str(exc))
            return
        flight.attempt = delivery.attempt
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
            return self._handler_error(event, describe(exc)[:1000], "handler exception")
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
            error = describe(exc)
            if action.verb == "dead-letter":
                # Not stored, so not removed: try again later rather than lose it (and make sure
                # the dead-letter stream is there).
                context.log.error("Dead letter not stored", reason=action.reason, error=error)
                self._missing = self._missing or "no responders" in error.lower()
                delay = ERROR_BACKOFF.delay(flight.attempt)
                await self._settle(flight, Action("nak", delay, "dead letter not stored"), context)
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
            leases = [f.msg for f in self._inflight.values() if not f.settling and now - f.started >= interval]
            for msg in [*leases, *self._held]:
                # A lost connection also loses the lease; redelivery covers it.
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()

    async def _drain(self) -> None:
        held, self._held = list(self._held), deque()
        for msg in held:  # never started: straight back for another worker
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()
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
