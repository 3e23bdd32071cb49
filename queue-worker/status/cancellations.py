"""Cancelled calls: a key-value bucket that every worker follows live, so asking whether a call
was cancelled costs a dictionary lookup, not a request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NoKeysError
from structlog.typing import FilteringBoundLogger

from .store import ensure_bucket, key


@dataclass
class Cancellations:
    """The calls cancelled in the last ``ttl_s`` (the bucket forgets them then, and so does this);
    a no-op when ``ttl_s`` is 0 (call status switched off)."""

    bucket: str
    ttl_s: float
    replicas: int = 1
    #: Most cancellations kept (the oldest is dropped to take a new one).
    max_calls: int = -1
    log: FilteringBoundLogger | None = None
    #: Bucket key to when it is forgotten (monotonic clock).
    _expiry: dict[str, float] = field(default_factory=dict)
    _subscription: Subscription | None = None

    async def connect(self, client: Client) -> None:
        """Create the bucket if missing, load what it holds, and follow what is added."""
        if self.ttl_s <= 0:
            return
        await ensure_bucket(client, self.bucket, self.ttl_s, self.replicas, self.max_calls, self.log)
        if self._subscription is None:  # run again after a refusal (the runtime retries on_connect)
            self._subscription = await client.subscribe(f"$KV.{self.bucket}.>", cb=self._on_cancel)
        try:
            for existing in await (await client.jetstream().key_value(self.bucket)).keys():
                self._remember(existing)
        except NoKeysError:
            pass

    async def _on_cancel(self, msg: Msg) -> None:
        self._remember(msg.subject.rsplit(".", 1)[1])

    def _remember(self, cancelled: str) -> None:
        """Follow the bucket, which keeps at most ``max_calls``: the oldest is forgotten first."""
        self._expiry[cancelled] = time.monotonic() + self.ttl_s
        if 0 < self.max_calls < len(self._expiry):
            del self._expiry[next(iter(self._expiry))]

    def __contains__(self, call_id: object) -> bool:
        """Whether the call was cancelled."""
        if not isinstance(call_id, str) or not call_id or not self._expiry:
            return False
        expiry = self._expiry.get(key(call_id))
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self._expiry[key(call_id)]
            return False
        return True

    async def cancel(self, client: Client, call_id: str) -> None:
        """Cancel the call for every worker; returns once the bucket has it."""
        await (await client.jetstream().key_value(self.bucket)).put(key(call_id), b"")

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
