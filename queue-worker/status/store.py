"""What happened to a call: its status, kept by call id in a JetStream key-value bucket.

Every state change is one small JSON value under the call's key: ``queued`` (by the front door),
``running``, ``waiting`` (for a retry, with the attempt and when the next one is due),
``succeeded`` or ``failed`` (with the status and duration), ``dead-lettered`` and ``cancelled``.
Workers write with plain publishes to the bucket's subject, so no message waits for a round
trip; values expire with the bucket's TTL. ``running`` is written only for a call still running
after a while (:mod:`.running` says which). Cancellations are kept apart, in :mod:`.cancellations`.

Every key costs nats-server memory for as long as it is kept, not only disk (its subject
index): 473 bytes a key on nats-server 2.15 with a file store, 801 with a memory store
(``python -m bench.status_memory``). Kept for a day, call status alone would grow the server by
about 4 GB at 100 calls a second, so a bucket also keeps at most ``max_calls`` values, dropping
the oldest to take a new one (:func:`bucket_limits`); the server's memory then levels off (85 MB
over an empty server for 100,000 kept, after 300,000 writes).

A write is made for every message, so its cost is watched: values are encoded with orjson (0.4 us
against 3.2 us for ``json``'s encoder), and the calls that may become ``running`` wait in one
:class:`~.running.Running` swept by a single timer, not a timer each. In process, a call's
``record_for``, ``started`` and ``write`` on a live connection cost 5.8 us, against 12.9 us with
a timer each and ``json`` (medians of seven rounds of 20,000 calls, one run); nats-py's
``publish`` is 2-3 us of it. ``make bench`` measures what is left: the worker with call status
against the worker without, side by side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from structlog.typing import FilteringBoundLogger

from runtime import describe

from .running import RUNNING_AFTER_S, Began, Running
from .state import CallState, Record

#: For what orjson refuses (a lone surrogate, kept from bytes that were not UTF-8): ``json`` escapes it.
_COMPACT = json.JSONEncoder(separators=(",", ":"))
#: How long the bucket may take to confirm a write before it counts as failed.
CONFIRM_TIMEOUT_S = 5.0
#: While writes succeed, one is confirmed this often; after a failure, every one is, until a
#: write is confirmed again. A full store is noticed within this, at no cost per message.
PROBE_INTERVAL_S = 0.1


def key(call_id: str) -> str:
    """A bucket key for any call id (keys allow only ``[-/_=.a-zA-Z0-9]``, and a dot splits tokens)."""
    return base64.urlsafe_b64encode(call_id.encode("utf-8", "surrogateescape")).decode().rstrip("=")


def encode(call_id: str, function: str, state: CallState, fields: Mapping[str, Any]) -> bytes:
    """A status value: the state, when it was written, and whatever the state carries."""
    value = {"callId": call_id, "function": function, "state": state, "updatedAt": time.time(), **fields}
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _COMPACT.encode(value).encode()


class StatusWriter(Protocol):
    """What the worker needs of a status store (tests keep the records in memory)."""

    @property
    def enabled(self) -> bool:
        """Whether status is kept at all."""
        ...

    def started(self, call_id: str, function: str, attempt: int) -> None:
        """A call began; it may be recorded as ``running`` if it takes a while."""
        ...

    async def write(self, record: Record) -> None:
        """Record a state."""
        ...

    async def close(self) -> None:
        """Finish what is being written."""
        ...


@dataclass
class CallStatus:
    """One queue's call status; a no-op when ``ttl_s`` is 0 (switched off).

    Writes are not waited for, but they are checked: the bucket's stream answers a write on a
    reply subject of this store's, and a refusal (a full store, say) or no answer within
    :data:`CONFIRM_TIMEOUT_S` is logged and counted with ``on_failure``. An answer costs the
    server and this process a message each, so while writes succeed one in every
    :data:`PROBE_INTERVAL_S` is confirmed; once one fails, every write is, so each one lost is
    logged and counted, until the store takes them again.
    """

    bucket: str
    ttl_s: float
    replicas: int = 1
    #: Most calls whose status is kept; the oldest is dropped to take a new one.
    max_calls: int = -1
    log: FilteringBoundLogger | None = None
    #: Called with the reason of each write that was not stored (refused, unconfirmed, disconnected).
    on_failure: Callable[[str], None] | None = None
    #: How long a call runs before its status says ``running``.
    running_after_s: float = RUNNING_AFTER_S
    _client: Client | None = None
    _inbox: str = ""
    _acks: Subscription | None = None
    #: Writes sent and not yet confirmed, by reply token, oldest first: (call id, state, when sent).
    _unconfirmed: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    _sent: int = 0
    #: Confirm every write (the last confirmed one failed), else only one per probe interval.
    _confirm_all: bool = False
    _next_probe: float = 0.0
    #: Calls that may become ``running``, and the one timer that looks for those that did.
    _began: Running = field(init=False)
    _sweep_at: asyncio.TimerHandle | None = None
    #: Calls to record ``running``, oldest first, and the one task that sends them in order (a
    #: call that ends first is taken out, so ``running`` never follows its outcome).
    _running: dict[str, Began] = field(default_factory=dict)
    _sender: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._began = Running(self.running_after_s)

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    async def connect(self, client: Client) -> None:
        """Create the bucket if missing."""
        if not self.enabled:
            return
        self._client = client
        await ensure_bucket(client, self.bucket, self.ttl_s, self.replicas, self.max_calls, self.log)
        if self._acks is None:  # run again after a refusal (the runtime retries on_connect)
            self._inbox = client.new_inbox()
            self._acks = await client.subscribe(f"{self._inbox}.*", cb=self._on_ack)

    def started(self, call_id: str, function: str, attempt: int) -> None:
        """Record ``running`` if the call runs a while, unless :meth:`write` records what came
        of it first."""
        if self.enabled and call_id:
            self._began.began(call_id, function, attempt, time.monotonic())
            if self._sweep_at is None:
                self._sweep_at = asyncio.get_running_loop().call_later(self._began.after_s, self._sweep_running)

    def _sweep_running(self) -> None:
        now = time.monotonic()
        due, next_at = self._began.due(now)
        if next_at is None:
            self._sweep_at = None
        else:
            self._sweep_at = asyncio.get_running_loop().call_later(next_at - now, self._sweep_running)
        if due:
            self._running.update((call.call_id, call) for call in due)
            if self._sender is None:
                self._sender = asyncio.create_task(self._send_running())

    async def _send_running(self) -> None:
        try:
            while self._running:
                call = self._running.pop(next(iter(self._running)))
                value = encode(call.call_id, call.function, CallState.RUNNING, {"attempt": call.attempt})
                await self._publish(call.call_id, value)
        finally:
            self._sender = None

    async def write(self, record: Record) -> None:
        """Record a state without waiting for the server (order is kept per connection)."""
        if self.enabled and record.call_id:
            self._began.ended(record.call_id)
            if self._running:
                self._running.pop(record.call_id, None)
            value = encode(record.call_id, record.function, record.state, record.fields)
            await self._publish(record.call_id, value, confirm=record.state)

    async def _publish(self, call_id: str, value: bytes, confirm: str = "") -> None:
        """Publish a value; with ``confirm`` (the state written), watch for the stream's answer."""
        client = self._client
        if client is None or not client.is_connected:
            if confirm:
                self._failed(call_id, confirm, "disconnected", "not connected to NATS")
            return
        reply = ""
        now = time.monotonic() if confirm else 0.0
        if confirm and (self._confirm_all or now >= self._next_probe):
            self._next_probe = now + PROBE_INTERVAL_S
            self._expire_unconfirmed(now)
            self._sent += 1
            token = str(self._sent)
            self._unconfirmed[token] = (call_id, confirm, now)
            reply = f"{self._inbox}.{token}"
        await client.publish(f"$KV.{self.bucket}.{key(call_id)}", value, reply=reply)

    async def _on_ack(self, msg: Msg) -> None:
        sent = self._unconfirmed.pop(msg.subject.rpartition(".")[2], None)
        if sent is None:
            return
        if b'"error"' not in msg.data:
            self._confirm_all = False
            return
        try:
            error = str(json.loads(msg.data)["error"].get("description", msg.data))
        except (ValueError, KeyError, AttributeError, TypeError):
            error = msg.data.decode("utf-8", "replace")
        self._failed(sent[0], sent[1], "refused", error)

    def _expire_unconfirmed(self, now: float) -> None:
        """Count as failed the writes the stream has not confirmed in time (oldest first)."""
        while self._unconfirmed:
            token, (call_id, state, sent_at) = next(iter(self._unconfirmed.items()))
            if now - sent_at < CONFIRM_TIMEOUT_S:
                return
            del self._unconfirmed[token]
            self._failed(call_id, state, "unconfirmed", f"not confirmed within {CONFIRM_TIMEOUT_S:g}s")

    def _failed(self, call_id: str, state: str, reason: str, error: str) -> None:
        self._confirm_all = True
        if self.on_failure is not None:
            self.on_failure(reason)
        if self.log is not None:
            self.log.warning("Call status not stored", callId=call_id, state=state, error=error)

    async def create(self, client: Client, call_id: str, function: str, **fields: Any) -> bool:
        """Record ``queued`` unless the call is known already; returns whether it was new."""
        if not self.enabled:
            return True
        kv = await client.jetstream().key_value(self.bucket)
        try:
            await kv.create(key(call_id), encode(call_id, function, CallState.QUEUED, fields))
        except KeyWrongLastSequenceError:
            return False
        return True

    async def read(self, client: Client, call_id: str) -> Mapping[str, Any] | None:
        """The call's last recorded status, or ``None`` when none is kept."""
        kv = await client.jetstream().key_value(self.bucket)
        try:
            entry = await kv.get(key(call_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        status: dict[str, Any] = json.loads(entry.value)
        return status

    async def close(self) -> None:
        if self._sweep_at is not None:
            self._sweep_at.cancel()
            self._sweep_at = None
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        if self._acks is not None:
            with contextlib.suppress(nats.errors.Error):  # the connection may be gone already
                await self._acks.unsubscribe()


def bucket_limits(config: StreamConfig, ttl_s: float, max_calls: int) -> dict[str, Any]:
    """What to change in a bucket's stream for its values to live ``ttl_s`` and at most
    ``max_calls`` (-1: no cap) of them to be kept, the oldest dropped to take a new one; empty
    when it is so already.

    nats-py makes a bucket with no cap and refusing writes when full (``discard: new``): for a
    status, losing the oldest is better than refusing the newest. The duplicate window may not
    outlast the values (the server refuses such a stream), so a shorter TTL shortens it.
    """
    changes: dict[str, Any] = {}
    if _ns(config.max_age) != _ns(ttl_s):
        changes["max_age"] = ttl_s
    if (config.max_msgs if config.max_msgs is not None else -1) != max_calls:
        changes["max_msgs"] = max_calls
    if config.discard != DiscardPolicy.OLD:
        changes["discard"] = DiscardPolicy.OLD
    if _ns(config.duplicate_window) > _ns(ttl_s):
        changes["duplicate_window"] = ttl_s
    return changes


def _ns(seconds: float | None) -> int:
    """Seconds as the server keeps them (nanoseconds), so a float's round trip is no change."""
    return round((seconds or 0.0) * 1e9)


async def ensure_bucket(
    client: Client,
    bucket: str,
    ttl_s: float,
    replicas: int,
    max_calls: int = -1,
    log: FilteringBoundLogger | None = None,
) -> None:
    """Create a key-value bucket, or bring an existing one (made by an earlier version, or with
    other settings) to the limits of :func:`bucket_limits`.

    A bucket whose limits cannot be changed (the worker's NATS user may not update streams)
    is used as it is, with a warning: call status is not worth stopping the queue for.
    """
    js = client.jetstream()
    stream = f"KV_{bucket}"
    try:
        config = (await js.stream_info(stream)).config
    except NotFoundError:
        made = KeyValueConfig(bucket=bucket, ttl=ttl_s, storage=StorageType.FILE, replicas=replicas)
        refused: APIError | None = None
        try:
            await js.create_key_value(made)
        except APIError as exc:  # perhaps another worker made it first, and changed its limits
            refused = exc
        try:
            config = (await js.stream_info(stream)).config
        except NotFoundError:
            if refused is None:
                raise
            # Kept as the server's error (the runtime retries those), naming what was refused.
            refused.description = f"key-value bucket {bucket}: {refused.description}"
            raise refused from None
    changes = bucket_limits(config, ttl_s, max_calls)
    if not changes:
        return
    try:
        await js.update_stream(replace(config, **changes))
    except nats.errors.Error as exc:  # refused, or denied (then no answer comes: a timeout)
        if log is not None:
            error = describe(exc)
            log.warning("Key-value bucket limits not changed", bucket=bucket, error=error, wanted=_shown(changes))
        return
    if log is not None:
        log.info("Key-value bucket limits changed", bucket=bucket, changes=_shown(changes))


def _shown(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {name: getattr(value, "value", value) for name, value in changes.items()}
