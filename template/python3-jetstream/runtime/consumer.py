"""The pull loop: keep pull requests open for the free slots, run the handler for each message
as it arrives, keep the ack deadline alive while it runs, and settle by its outcome.

Never more than ``max_inflight`` handlers run, whatever the server sends: a message beyond
that is held, its lease kept alive, until a slot frees (handing it back would cost it a
delivery, which the queue-worker counts as an attempt). Pull requests are not stacked on a link
that has not proven alive: when the server goes silent, nothing more is asked until a PING
round trip succeeds and every request it may still hold has expired, so a healed partition or a
thawed server does not answer a pile of stale requests at once. A consumer or stream deleted
under the worker is recreated.

In function mode (see :mod:`.lanes`) the worker pulls from a consumer per function: the stream's
per-subject counts say which functions have work, their consumers are made on demand, free
slots are shared between them fairly (:mod:`.fair`) and, with ``limiter_enabled``, each
function's share is capped by its adaptive concurrency limit (:mod:`.limiter`).

Every task this module starts is owned by :class:`Consumer` and is awaited or cancelled
before :meth:`Consumer.run` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
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
from .fair import deal
from .lanes import MAX_INFLIGHT_HEADER, PLAIN, Lane, consumer_name, key_of, pending_by_function
from .limiter import AdaptiveLimit
from .metrics import RuntimeMetrics
from .numbers import ascii_int_or_none
from .pulls import GRACE_S, Pulls, free_slots, refill_at
from .settings import Settings
from .settle import Action, apply, plan
from .tasks import cancel_and_wait

#: What a handler may return besides None (a tuple built once: a union is built at each use).
OUTCOMES = (Ack, Retry, Terminate, DeadLetter)
#: Redelivery delay after a handler raised, or a dead letter could not be stored: 1 s doubled
#: per delivery up to a minute.
ERROR_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
#: How many in-progress acks fit into one ack deadline; more than one absorbs a late tick.
HEARTBEATS_PER_ACK_WAIT = 3
#: Pause after a refused pull (consumer missing, too many waiting) before pulling again.
PULL_ERROR_PAUSE_S = 1.0
#: The 409 that ends a request with ``max_bytes`` once all of its batch was delivered (a request
#: without it ends silently, and is forgotten once it expires).
BATCH_COMPLETED = "Batch Completed"
#: 409s that end a pull request in the normal course (a 408, its expiry, always does).
ROUTINE_CONFLICTS = frozenset({"Leadership Change", "Message Size Exceeds MaxBytes", BATCH_COMPLETED})
#: 409s that say the server has too many requests waiting: pause, the consumer is there.
CROWDED_CONFLICTS = ("Exceeded MaxWaiting", "Exceeded MaxRequestBatch", "Exceeded MaxRequestExpires")
#: Longest a PING round trip may take to prove a silent link alive.
PROOF_TIMEOUT_S = 2
#: Function mode: how often the stream's per-subject counts are read (a function's first message
#: waits for the next reading; later ones find its pull requests waiting).
DISCOVERY_INTERVAL_S = 0.25
#: Function mode: per-function consumers made at once (each is one JetStream API request).
CREATE_AT_ONCE = 64


@dataclass(slots=True)
class InFlight:
    """A message whose handler is running."""

    msg: Msg
    delivery: ack_subject.Delivery
    lane: Lane
    started: float = field(default_factory=time.monotonic)
    settling: bool = False
    #: The server's delivery count, once read from the ack subject.
    attempt: int = 1


#: Reads the stream's stored messages per subject (function mode's discovery).
ReadCounts = Callable[[], Awaitable[Mapping[str, int]]]
#: Makes (or finds) the consumer of one function's lane.
EnsureLane = Callable[[str, str], Awaitable[None]]


class Consumer:
    """Consume the queue's durable pull consumer (or, in function mode, a consumer per function)
    until ``stopping`` is set, then drain."""

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
        read_counts: ReadCounts | None = None,
        ensure_lane: EnsureLane | None = None,
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
        #: Delivered while every slot, or every slot its function may use, was busy: started as
        #: slots free, never more at once. By lane number, in the order the lanes began holding.
        self._held: dict[int, deque[InFlight]] = {}
        self._held_count = 0
        self._state = state or ConnectionState()
        self._rebind = rebind
        self._read_counts = read_counts
        self._ensure_lane = ensure_lane
        #: Since when the server has not answered our pull requests (``None``: it does).
        self._silent_since: float | None = None
        #: A lane's consumer (or the stream) was reported missing and must be recreated.
        self._missing = False
        # Read when scraped rather than counted per message.
        metrics.inflight.set_function(lambda: len(self._inflight))
        #: Set when there is something to ask for, or stopping begins: what the pull loop waits for.
        self._wake = asyncio.Event()
        self._function_mode = settings.function_mode and read_counts is not None and ensure_lane is not None
        self._inbox = client.new_inbox()
        self._lanes: dict[int, Lane] = {}
        self._by_consumer: dict[str, Lane] = {}
        self._by_key: dict[str, Lane] = {}
        self._numbers = 0
        #: Messages asked for and not yet delivered, over every lane.
        self._outstanding = 0
        #: Function mode: the lanes with messages stored, in turn order, and whose turn is next.
        self._order: list[Lane] = []
        self._cursor = 0
        #: The stored messages per subject at the last reading (function mode).
        self.counts: Mapping[str, int] = {}
        self._add_lane(PLAIN, ready=True, unlimited=not self._function_mode)
        #: When the server last sent anything for our requests, or we last asked.
        self._heard = time.monotonic()
        self._paused_until = 0.0

    @property
    def lanes(self) -> list[Lane]:
        """Every lane now: the plain subject's first."""
        return list(self._lanes.values())

    def pending_by_function(self) -> dict[str, int]:
        """Function mode: messages stored per function (``name.namespace``) at the last reading."""
        if not self._function_mode:
            return {}
        return pending_by_function(self._settings.queue_name, self.counts, self._by_key)

    def _add_lane(self, key: str, *, ready: bool = False, unlimited: bool = False) -> Lane:
        settings = self._settings
        name = consumer_name(settings.durable, key)
        limit = AdaptiveLimit(settings.max_inflight) if settings.limiter_enabled and key != PLAIN else None
        lane = Lane(
            number=self._numbers,
            key=key,
            consumer=name,
            next_subject=f"$JS.API.CONSUMER.MSG.NEXT.{settings.stream}.{name}",
            pulls=Pulls.for_payload(settings.fetch_wait_s, self._client.max_payload, settings.max_inflight),
            limit=limit,
            ready=ready,
            unlimited=unlimited,
        )
        self._numbers += 1
        self._lanes[lane.number] = self._by_consumer[name] = self._by_key[key] = lane
        return lane

    def _drop_lane(self, lane: Lane) -> None:
        del self._lanes[lane.number], self._by_consumer[lane.consumer], self._by_key[lane.key]

    async def run(self) -> None:
        """Consume until stopped; then let running calls finish within ``shutdown_timeout``."""
        subscription = await self._client.subscribe(f"{self._inbox}.*.*", cb=self._on_message)
        stop_waiter = asyncio.create_task(self._stopping.wait())
        stop_waiter.add_done_callback(lambda _: self._wake.set())
        helpers = [stop_waiter, asyncio.create_task(self._heartbeat(), name="heartbeat")]
        if self._function_mode:
            helpers.append(asyncio.create_task(self._discover(), name="discovery"))
        for helper in helpers:
            helper.add_done_callback(self._helper_done)
        try:
            await self._pull()
        finally:
            await asyncio.gather(self._close_pulls(subscription), self._drain())
            await cancel_and_wait(*helpers)

    def _helper_done(self, task: asyncio.Task[object]) -> None:
        """A helper that ends on its own has failed (a bug): stop, so the orchestrator starts a
        fresh worker, rather than go on without heartbeats or discovery."""
        error = None if task.cancelled() else task.exception()
        if error is None or self._stopping.is_set():
            return
        self._log.error("Consumer task failed; stopping", task=task.get_name(), error=describe(error))
        self._stopping.set()

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
            if self._silent_since is None and self._outstanding and now - self._heard > expires_s + GRACE_S:
                # Every open request ends within expires_s, by message or status: the server is
                # not answering (a partition, a frozen or restarted server).
                self._silent_since = now
                self._state.consuming = False
                self._log.warning("Pull requests unanswered, proving the link", outstanding=self._outstanding)
            if self._silent_since is not None:
                await self._prove_link()
                continue
            if now >= self._paused_until and self._client.is_connected:
                await self._ask_lanes(now)
            await self._sleep_until_woken(self._paused_until - now if self._paused_until > now else expires_s)
            # Let the other calls finishing in this same turn free their slots too.
            await asyncio.sleep(0)

    def _busy(self) -> int:
        return len(self._inflight) + self._held_count

    def _free(self) -> int:
        return free_slots(self._settings.max_inflight, self._busy(), self._outstanding)

    async def _ask_lanes(self, now: float) -> None:
        free = self._free()
        if not free:
            return
        maximum = self._settings.max_inflight
        if not self._function_mode:
            lane = self._lanes[0]
            batch = min(free, lane.wants(maximum))
            if batch:
                await self._ask(lane, batch, now)
            return
        order = self._order
        grants, self._cursor = deal(
            len(order), lambda i: order[i].wants(maximum), free, self._cursor, refill_at(maximum)
        )
        for index, batch in grants.items():
            await self._ask(order[index], batch, now)

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
        for lane in self._lanes.values():
            self._lost(lane)
        self._silent_since = None
        self._state.consuming = True
        self._log.info("Pull requests answered again", silentFor=round(silent_for, 1))

    def _lost(self, lane: Lane) -> None:
        self._outstanding -= lane.pulls.outstanding
        lane.pulls.lost()

    async def _recreate(self) -> None:
        """Recreate what is missing (consumers, stream, dead-letter stream), once a second at most."""
        self._state.consuming = False
        missing = [lane for lane in self._lanes.values() if lane.missing]
        try:
            if self._rebind is not None:
                await self._rebind()
            if self._ensure_lane is not None:
                for lane in missing:
                    if lane.key != PLAIN:
                        await self._ensure_lane(lane.key, lane.consumer)
        except (TimeoutError, nats.errors.Error) as exc:
            self._log.warning("Cannot recreate the consumer yet", error=describe(exc))
            await self._pause(PULL_ERROR_PAUSE_S)
            return
        for lane in missing:
            lane.missing = False
            self._lost(lane)
        self._missing = False
        self._state.consuming = True
        self._paused_until = 0.0

    async def _discover(self) -> None:
        """Function mode: read which functions have messages stored, make the consumers of new
        ones and forget the lanes idle for half ``consumer_inactive_threshold`` (the server
        deletes their consumers after all of it)."""
        assert self._read_counts is not None
        failing = False
        while True:
            try:
                counts = await self._read_counts()
            except (TimeoutError, nats.errors.Error) as exc:
                if not failing:
                    self._log.warning("Cannot read the stream's counts per function", error=describe(exc))
                failing = True
                await asyncio.sleep(PULL_ERROR_PAUSE_S)
                continue
            failing = False
            self.counts = counts
            self._update_lanes(counts, time.monotonic())
            await self._make_consumers()
            self._wake.set()
            await asyncio.sleep(DISCOVERY_INTERVAL_S)

    def _update_lanes(self, counts: Mapping[str, int], now: float) -> None:
        queue_name = self._settings.queue_name
        seen = set()
        for subject, stored in counts.items():
            key = key_of(queue_name, subject)
            if key is None or not stored:
                continue
            lane = self._by_key.get(key) or self._add_lane(key)
            if stored > lane.stored:
                lane.dry = False  # something new came
            lane.stored = stored
            seen.add(key)
        forget_after = self._settings.consumer_inactive_threshold_s / 2
        for lane in list(self._lanes.values()):
            if lane.key not in seen:
                lane.stored = 0
            if lane.stored or lane.running or lane.held or lane.pulls.outstanding:
                lane.idle_since = None
            elif lane.idle_since is None:
                lane.idle_since = now
            elif now - lane.idle_since > forget_after and lane.key != PLAIN:
                self._drop_lane(lane)
        # After this reading's counts are all in: a function whose messages are gone loses its turn.
        self._order = [lane for lane in self._lanes.values() if lane.stored]

    async def _make_consumers(self) -> None:
        assert self._ensure_lane is not None
        unmade = [lane for lane in self._lanes.values() if not lane.ready]
        for start in range(0, len(unmade), CREATE_AT_ONCE):
            chunk = unmade[start : start + CREATE_AT_ONCE]
            results = await asyncio.gather(
                *(self._ensure_lane(lane.key, lane.consumer) for lane in chunk), return_exceptions=True
            )
            failed: list[tuple[str, BaseException]] = []
            for lane, result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, TimeoutError | nats.errors.Error):
                        raise result
                    failed.append((lane.key, result))
                else:
                    lane.ready = True
            if failed:
                key, error = failed[0]
                self._log.warning(
                    "Cannot make functions' consumers yet", count=len(failed), first=key, error=describe(error)
                )
            self._wake.set()  # the ones made can be pulled from now

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

    async def _ask(self, lane: Lane, batch: int, now: float) -> None:
        request_id = lane.pulls.asked(batch, now)
        self._outstanding += batch
        self._heard = now
        expires = int(self._settings.fetch_wait_s * 1e9)
        asked: dict[str, int] = {"batch": batch, "expires": expires}
        if max_bytes := lane.pulls.bound(batch):
            asked["max_bytes"] = max_bytes
        request = json.dumps(asked).encode()
        try:
            await self._client.publish(lane.next_subject, request, reply=f"{self._inbox}.{lane.number}.{request_id}")
        except nats.errors.Error as exc:
            self._ended(lane, request_id, batch)
            self._log.warning("Pull failed", error=describe(exc))
            self._paused_until = now + PULL_ERROR_PAUSE_S

    def _ended(self, lane: Lane, request_id: str, undelivered: int | None) -> int:
        before = lane.pulls.outstanding
        batch = lane.pulls.ended(request_id, undelivered)
        self._outstanding -= before - lane.pulls.outstanding
        return batch

    async def _on_message(self, msg: Msg) -> None:
        """Every message on the pull inbox: a delivery, or a status about one of our requests."""
        self._heard = time.monotonic()
        if not msg.reply:
            self._on_status(msg)
            return
        try:
            delivery = ack_subject.parse(msg.reply)
        except ack_subject.NotJetStream as exc:
            # Nothing to acknowledge it with; a pull subscription never delivers one.
            self._log.error("Not a JetStream message", subject=msg.subject, error=str(exc))
            return
        lane = self._by_consumer.get(delivery.consumer)
        if lane is None or self._stopping.is_set():
            # Asked for before stopping (or before its lane was forgotten), arrived after:
            # straight back for another worker.
            with contextlib.suppress(nats.errors.Error):  # ack_wait brings it back all the same.
                await msg.nak()
            self._wake.set()
            return
        if lane.pulls.outstanding:
            lane.pulls.delivered()
            self._outstanding -= 1
        lane.dry = False
        if self._function_mode and msg.headers and lane.key != PLAIN:
            ceiling = ascii_int_or_none(msg.headers.get(MAX_INFLIGHT_HEADER, ""), max_digits=6)
            lane.ceiling = ceiling if ceiling else lane.ceiling
        flight = InFlight(msg, delivery, lane)
        maximum = self._settings.max_inflight
        if len(self._inflight) >= maximum or lane.running >= lane.cap(maximum):
            if not self._held_count and len(self._inflight) >= maximum:
                self._log.warning("More delivered than max_inflight; holding the rest", maxInflight=len(self._inflight))
            lane.held += 1
            self._held_count += 1
            self._held.setdefault(lane.number, deque()).append(flight)
            return
        self._start(flight)

    def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status, description = headers.get("Status", ""), headers.get("Description", "")
        if status == "100":
            return  # a heartbeat; none are asked for
        undelivered = ascii_int_or_none(headers.get("Nats-Pending-Messages", ""))
        if undelivered is None and description == BATCH_COMPLETED:
            undelivered = 0
        _, _, tail = msg.subject.rpartition(self._inbox + ".")
        number, _, request_id = tail.partition(".")
        lane = self._lanes.get(int(number)) if number.isdigit() else None
        if lane is None:
            return  # about a lane forgotten since
        batch = self._ended(lane, request_id, undelivered)
        if status == "408" and batch and undelivered is not None and undelivered >= batch:
            lane.dry = True
        if status != "408" and not (status == "409" and description in ROUTINE_CONFLICTS):
            # 409 Exceeded MaxWaiting: pause, not spin. 409 Consumer Deleted, 404, 503 (no
            # consumer answered): the consumer or its stream is gone; recreate it.
            self._log.warning("Pull refused", status=status, description=description.strip(), consumer=lane.consumer)
            self._paused_until = time.monotonic() + PULL_ERROR_PAUSE_S
            if not description.startswith(CROWDED_CONFLICTS):
                lane.missing = self._missing = True
        self._wake.set()

    async def _close_pulls(self, subscription: Subscription) -> None:
        """Stop asking; hand back what still arrives until every open request has ended (an
        unsubscribed inbox would leave those messages to wait out ack_wait); then unsubscribe."""
        deadline = time.monotonic() + self._settings.fetch_wait_s + GRACE_S
        while True:
            self._wake.clear()
            remaining = deadline - time.monotonic()
            if self._outstanding <= 0 or not self._client.is_connected or remaining <= 0:
                break
            await self._sleep_until_woken(remaining)
        with contextlib.suppress(nats.errors.Error):  # The connection is going away anyway.
            await subscription.unsubscribe()

    def _start(self, flight: InFlight) -> None:
        flight.lane.running += 1
        task = asyncio.create_task(self._process(flight))
        self._inflight[task] = flight
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        flight = self._inflight.pop(task)
        flight.lane.running -= 1
        held = self._next_held(flight.lane) if self._held_count and not self._stopping.is_set() else None
        if held is not None:
            held.started = time.monotonic()
            self._start(held)
        elif self._free():
            self._wake.set()

    def _next_held(self, finished: Lane) -> InFlight | None:
        """A held message that may start now: the finished call's function's first, else the
        first of any function below its limit."""
        maximum = self._settings.max_inflight
        if len(self._inflight) >= maximum:
            return None
        first = [finished.number] if finished.number in self._held else []
        for number in itertools.chain(first, self._held):
            lane = self._lanes[number]
            if lane.running < lane.cap(maximum):
                queue = self._held[number]
                flight = queue.popleft()
                if not queue:
                    del self._held[number]
                lane.held -= 1
                self._held_count -= 1
                return flight
        return None

    async def _process(self, flight: InFlight) -> None:
        msg, delivery = flight.msg, flight.delivery
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
        # The handler is awaited here, not in a coroutine of its own: every coroutine between a
        # message's task and the socket is a frame that each call in flight keeps.
        try:
            result: object = await self._function.handle(event, context)
        except asyncio.CancelledError:
            # Shutdown cut the call short: hand the message back for another worker at once.
            await self._settle(flight, Action("nak", reason="shutdown"), context)
            raise
        except Exception as exc:
            context.log.exception("Handler failed")
            result = self._handler_error(event, describe(exc)[:1000], "handler exception")
        outcome = self._checked(result, event, context)
        if flight.lane.limit is not None:
            _adapt(flight.lane, outcome)
        await self._settle(flight, plan(outcome), context)
        self._metrics.handler_duration.observe(time.monotonic() - flight.started)

    def _checked(self, result: object, event: Event, context: Context) -> Outcome | None:
        """The handler's result, if it is an outcome (or None); else a handler error."""
        # Typed loosely on purpose: a handler may return anything.
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
        self._observe(action, flight.lane, context)

    def _observe(self, action: Action, lane: Lane, context: Context) -> None:
        self._metrics.settled[action.verb].inc()
        if action.verb != "nak":
            self._metrics.processed.inc()
            # Gone from the stream: until the next reading of the counts, it is not asked for again.
            lane.stored = max(0, lane.stored - 1)
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
            held = [f.msg for queue in self._held.values() for f in queue]
            for msg in [*leases, *held]:
                # A lost connection also loses the lease; redelivery covers it.
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()

    async def _drain(self) -> None:
        held = [flight for queue in self._held.values() for flight in queue]
        self._held, self._held_count = {}, 0
        for flight in held:  # never started: straight back for another worker
            flight.lane.held -= 1
            with contextlib.suppress(nats.errors.Error):
                await flight.msg.nak()
        if not self._inflight:
            return
        timeout = self._settings.shutdown_timeout_s
        self._log.info("Waiting for in-flight calls", count=len(self._inflight), timeout=timeout)
        done, cut_short = await asyncio.wait(set(self._inflight), timeout=timeout)
        # Never cancelled while it settles: that is what it does when cancelled.
        await cancel_and_wait(*cut_short, spare=lambda task: self._inflight[task].settling)
        self._log.info("In-flight calls drained", finished=len(done), returned=len(cut_short))


def _adapt(lane: Lane, outcome: Outcome | None) -> None:
    """Tell the lane's limit how its function answered: overloaded, or done (``None`` is an
    ack); a retry or a dead letter for another reason says nothing about its capacity. The
    call itself still counts as running: that was the level the function was at."""
    assert lane.limit is not None
    if outcome is not None and outcome.overloaded:
        lane.limit.overloaded(lane.running, time.monotonic())
    elif outcome is None or isinstance(outcome, Ack):
        lane.limit.succeeded(lane.running, time.monotonic())
